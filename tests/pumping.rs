//! The SMS-pumping simulation (examples/pumping_sim.rs) as a deterministic test on the injected clock:
//! honest traffic mixed with an attack on one range, through the real pipeline. Checks the targets: the
//! attack is cut after at most `min_sends` plus the attack sends still inside their conversion window, and
//! no honest prefix is blocked where its conversion rate is safely above `min_conversion` for `min_sends`.

#[path = "../examples/pumping_sim.rs"]
mod sim;

/// Whether a key converting at `rate` is safely above `min_conversion` when judged on `min_sends` sends: four
/// standard deviations of the share measured on that many sends (the rule judges a sliding window again at
/// every send, so one or two deviations would be crossed by chance).
fn safely_above(rate: f64, min_sends: u32, min_conversion: f64) -> bool {
    min_conversion <= rate - 4.0 * (rate * (1.0 - rate) / f64::from(min_sends)).sqrt()
}

#[tokio::test]
async fn the_attack_is_cut_within_the_bound_and_honest_prefixes_safely_above_the_threshold_are_never_blocked() {
    let scenario = sim::Scenario { hours: 2, attack_from_minute: 30, attack_every: 2, seed: 11 };
    let mut judged_safe = 0;
    for (min_sends, min_conversion) in [(10, 0.2), (30, 0.2), (30, 0.5), (100, 0.1)] {
        let o = sim::run(&scenario, sim::Rule { min_sends, min_conversion }).await;
        let cell = format!("min_sends {min_sends}, min_conversion {min_conversion}: {o:?}");
        let before = o.attack_before_trip.unwrap_or_else(|| panic!("the attack is never cut: {cell}"));
        let bound = o.bound_at_trip.unwrap();
        assert!(before <= bound, "{cell}");
        // At one send every 2 s, the conversion window (10 min) holds 300 of them: the bound is that plus
        // min_sends, and the cut comes no earlier than min_sends judged sends.
        assert!(bound <= u64::from(min_sends) + 301 && before >= u64::from(min_sends), "{cell}");
        assert!(o.attack_sent * 2 < o.attack_attempts, "most of the attack is refused: {cell}");
        if safely_above(0.85, min_sends, min_conversion) {
            judged_safe += 1;
            assert_eq!((o.good_prefixes_blocked, o.good_refused), (0, 0), "{cell}");
        }
        if safely_above(0.35, min_sends, min_conversion) {
            judged_safe += 1;
            assert_eq!((o.poor_prefixes_blocked, o.poor_refused), (0, 0), "{cell}");
        }
    }
    assert!(judged_safe >= 4, "the cells exercise the honest-traffic target");
}

/// The same scenario twice gives the same numbers: the simulation is deterministic.
#[tokio::test]
async fn the_simulation_is_deterministic() {
    let scenario = sim::Scenario { hours: 1, attack_from_minute: 10, attack_every: 3, seed: 5 };
    let rule = sim::Rule { min_sends: 20, min_conversion: 0.3 };
    let (a, b) = (sim::run(&scenario, rule).await, sim::run(&scenario, rule).await);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
