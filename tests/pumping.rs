//! The SMS-pumping simulation (examples/pumping_sim.rs) as a deterministic test on the injected clock.

#[path = "../examples/pumping_sim.rs"]
mod sim;

/// The same scenario twice gives the same numbers: the simulation is deterministic.
#[tokio::test]
async fn the_simulation_is_deterministic() {
    let scenario = sim::Scenario { warmup_hours: 1, attack_hours: 1, honest_per_second: 1.0, seed: 5 };
    let (a, b) = (sim::run(&scenario, sim::OLD_RULE).await, sim::run(&scenario, sim::OLD_RULE).await);
    assert_eq!(a, b);
}
