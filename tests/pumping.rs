//! The SMS-pumping simulation (examples/pumping_sim.rs) as a deterministic test on the injected clock, through
//! the real pipeline: a short scenario of honest traffic in 8 countries with attackers hidden in it.

// The example is its own crate root too, where `pub` is right.
#[allow(unreachable_pub)]
#[path = "../examples/pumping_sim.rs"]
mod sim;

/// The shipped rule (gateway.yaml).
const EXCESS: &str = "[{ name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 30, min_conversion: 0.2, \
                      max_excess: 10, block_for: 3h }]";

fn attack<'a>(o: &'a sim::Outcome, name: &str) -> &'a sim::AttackOutcome {
    o.attacks.iter().find(|a| a.name == name).unwrap()
}

/// The pooled rule lets an attack at 2.5x a busy prefix's honest rate through whole (issue 23 #1); judging
/// the excess over the prefix's baseline cuts it, and the partly verifying attackers leak less.
#[tokio::test]
async fn the_excess_over_a_baseline_cuts_attacks_the_pooled_rule_lets_through() {
    let scenario =
        sim::Scenario { warmup_hours: 2, attack_hours: 1, honest_per_second: 2.0, seed: 3, ..Default::default() };
    let pooled = sim::run(&scenario, sim::OLD_RULE).await;
    let excess = sim::run(&scenario, EXCESS).await;
    let busy = attack(&pooled, "busy-2.5x");
    assert_eq!(busy.sent, busy.attempts, "{pooled:#?}");
    // Judged against the prefix's usual volume, the attacker that verifies a quarter of its numbers is cut
    // within the hour too (it went through whole before).
    for name in ["busy-2.5x", "5x", "partial-25"] {
        let a = attack(&excess, name);
        assert!(a.sent * 4 < a.attempts, "{name}: {a:?}");
    }
    for name in ["busy-2.5x", "5x", "spread"] {
        assert!(attack(&excess, name).sent < attack(&pooled, name).sent, "{name}: {excess:#?}");
    }
    // Two hours of history at 2 users a second leave small prefixes' baselines thin, and the margin for a
    // thin baseline (the key's country's rate may not be its own) lets the attacker verifying half its
    // numbers through this hour: the day-long simulation cuts it (BENCHMARKS.md).
    assert_eq!(attack(&excess, "partial-50").sent, attack(&excess, "partial-50").attempts);
    // Issue 23, collateral: the goal is no honest refusal outside attacked ranges. The day-long simulation
    // meets it (0 of 1.14M, both seeds); this short one does not: one honest prefix (+639516, 46 sends)
    // trips on its thin baseline. Held here to what it is, so a regression shows.
    assert!(excess.honest_outside > 10_000);
    assert!(excess.honest_outside_refused <= 50, "{:?}", excess.refused_outside_by_prefix);
    // Users who verified a code before pass the blocks of their range (two sends between verifications).
    let (with_history, refused) =
        excess.attacks.iter().fold((0, 0), |(n, r), a| (n + a.verified_inside, r + a.verified_inside_refused));
    assert!(with_history > 100 && refused * 5 < with_history, "{refused} of {with_history} refused");
}

/// The same scenario twice gives the same numbers: the simulation is deterministic.
#[tokio::test]
async fn the_simulation_is_deterministic() {
    let scenario =
        sim::Scenario { warmup_hours: 1, attack_hours: 1, honest_per_second: 0.5, seed: 5, ..Default::default() };
    let (a, b) = (sim::run(&scenario, EXCESS).await, sim::run(&scenario, EXCESS).await);
    assert_eq!(a, b);
}
