//! The SMS-pumping simulation (examples/pumping_sim.rs) as a deterministic test on the injected clock, through
//! the real pipeline: a short scenario of honest traffic in 8 countries with attackers hidden in it.

// The example is its own crate root too, where `pub` is right.
#[allow(unreachable_pub)]
#[path = "../examples/pumping_sim.rs"]
mod sim;

const EXCESS: &str = "[{ name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 30, min_conversion: 0.2, \
                      max_excess: 20, block_for: 1h }]";

fn attack<'a>(o: &'a sim::Outcome, name: &str) -> &'a sim::AttackOutcome {
    o.attacks.iter().find(|a| a.name == name).unwrap()
}

/// The pooled rule lets an attack at 2.5x a busy prefix's honest rate through whole (issue 23 #1); judging
/// the excess over the prefix's baseline cuts it, and the partly verifying attackers leak less.
#[tokio::test]
async fn the_excess_over_a_baseline_cuts_attacks_the_pooled_rule_lets_through() {
    let scenario = sim::Scenario { warmup_hours: 2, attack_hours: 1, honest_per_second: 2.0, seed: 3 };
    let pooled = sim::run(&scenario, sim::OLD_RULE).await;
    let excess = sim::run(&scenario, EXCESS).await;
    let busy = attack(&pooled, "busy-2.5x");
    assert_eq!(busy.sent, busy.attempts, "{pooled:#?}");
    for name in ["busy-2.5x", "5x"] {
        let a = attack(&excess, name);
        assert!(a.sent * 4 < a.attempts, "{name}: {a:?}");
    }
    for name in ["busy-2.5x", "5x", "partial-25", "partial-50"] {
        assert!(attack(&excess, name).sent < attack(&pooled, name).sent, "{name}: {excess:#?}");
    }
}

/// The same scenario twice gives the same numbers: the simulation is deterministic.
#[tokio::test]
async fn the_simulation_is_deterministic() {
    let scenario = sim::Scenario { warmup_hours: 1, attack_hours: 1, honest_per_second: 0.5, seed: 5 };
    let (a, b) = (sim::run(&scenario, EXCESS).await, sim::run(&scenario, EXCESS).await);
    assert_eq!(a, b);
}
