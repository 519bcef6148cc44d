//! SMS pumping against the adaptive protection, through the real pipeline (a dry-run tenant: every stage
//! but the network) on the injected clock. Honest traffic, one send a second over 110 number prefixes, where
//! users verify 85 % of codes (35 % on 10 "poor" prefixes: a route that delivers badly, users who give up),
//! 5 s to 2 min after the send; from the first hour on, an attack on one range (`+861701…`) at one send
//! every 2 s, never verified. For each `min_sends` and `min_conversion` of a `{ phone_prefix: 6 }` rule
//! (window 1h, block_for 1h, conversion.window 10m) it prints the attack SMS sent before the rule tripped
//! (and the bound `min_sends` + the attack sends still inside their conversion window then), all attack
//! SMS over the run, and the honest sends refused, as the mean of runs with 5 seeds.
//!
//! Run: `cargo run --release --example pumping_sim` (BENCHMARKS.md has the table). `tests/pumping.rs` runs a
//! shorter scenario and checks the targets.

// Also compiled into tests/pumping.rs, which uses `run` and not `main`.
#![allow(dead_code)]

use smsgate::clock::{ManualClock, SharedClock};
use smsgate::config::Config;
use smsgate::ingress::{PhoneInput, SendRequest};
use smsgate::phone::Phone;
use smsgate::pipeline::{Services, Trail};
use smsgate::policy::Limiter;
use smsgate::tencent::TencentClient;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::time::Duration;

pub struct Scenario {
    pub hours: u64,
    /// Minute the attack starts.
    pub attack_from_minute: u64,
    /// Seconds between attack sends.
    pub attack_every: u64,
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario { hours: 4, attack_from_minute: 60, attack_every: 2, seed: 7 }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub min_sends: u32,
    pub min_conversion: f64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub attack_attempts: u64,
    pub attack_sent: u64,
    /// Attack SMS sent before the first refusal.
    pub attack_before_trip: Option<u64>,
    /// `min_sends` plus the attack sends still inside their conversion window when it tripped.
    pub bound_at_trip: Option<u64>,
    pub trip_minute: Option<f64>,
    pub honest_sent: u64,
    pub honest_refused: u64,
    /// Refusals of the 100 prefixes whose users verify 85 %, and of the 10 at 35 %.
    pub good_refused: u64,
    pub poor_refused: u64,
    pub good_prefixes_blocked: usize,
    pub poor_prefixes_blocked: usize,
}

const CONVERSION_WINDOW: u64 = 600;
const HONEST_CONVERTS: f64 = 0.85;
const POOR_CONVERTS: f64 = 0.35;

fn config(rule: Rule) -> Config {
    let yaml = format!(
        r#"
tenants:
  sim:
    tokens: ["simulation-token-0001"]
    dedupe_window: 0s
    tencent:
      accessKeyId: AKIDsim
      accessKeySecret: sim-secret
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{{ usageType: Generic, templateCode: "1113" }}]
      dry_run: true
    conversion: {{ window: {CONVERSION_WINDOW}s }}
    protection:
      - {{ name: prefix, key: {{ phone_prefix: 6 }}, window: 1h, min_sends: {}, min_conversion: {}, block_for: 1h }}
"#,
        rule.min_sends, rule.min_conversion
    );
    Config::from_yaml(&yaml, Path::new("sim.yaml"), &std::collections::HashMap::<String, String>::new())
        .expect("the simulation's config compiles")
}

/// A number of honest prefix `p` (0..110): `+8613ab…` for the 100 good ones, `+86159b…` for the 10 poor ones.
fn honest_number(rng: &mut fastrand::Rng, p: u32) -> String {
    let digits = rng.u32(0..10_000_000);
    if p < 100 {
        format!("+8613{}{}{digits:07}", p / 10, p % 10)
    } else {
        format!("+86159{}{digits:07}", p - 100)
    }
}

pub async fn run(scenario: &Scenario, rule: Rule) -> Outcome {
    let config = config(rule);
    let tenant = config.tenant("sim").expect("tenant").clone();
    let clock = ManualClock::new(1_704_164_645);
    let shared: SharedClock = clock.clone();
    let services: std::sync::Arc<Services> = Services::new(
        Limiter::from_backend(&config.limits_backend, shared.clone()).expect("memory"),
        TencentClient::new(shared.clone(), Default::default()),
        shared,
    );
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    let mut out = Outcome::default();
    // (second due, number) of verifications to come.
    let mut due: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    // Seconds of the attack sends accepted, for the count inside the conversion window.
    let mut attack_times: VecDeque<u64> = VecDeque::new();
    let (mut good_blocked, mut poor_blocked) = (HashSet::new(), HashSet::new());
    for second in 0..scenario.hours * 3600 {
        clock.advance(Duration::from_secs(1));
        if let Some(numbers) = due.remove(&second) {
            for number in numbers {
                let phone = Phone::from_e164(&number).expect("valid");
                services.feedback.verify(&tenant, &phone, None, &services.limiter).await;
            }
        }
        // One honest send a second.
        let prefix = rng.u32(0..110);
        let number = honest_number(&mut rng, prefix);
        let poor = prefix >= 100;
        match send(&services, &tenant, &number, second).await {
            Ok(()) => {
                out.honest_sent += 1;
                let converts = if poor { POOR_CONVERTS } else { HONEST_CONVERTS };
                if rng.f64() < converts {
                    due.entry(second + rng.u64(5..=120)).or_default().push(number);
                }
            }
            Err(()) => {
                out.honest_refused += 1;
                if poor {
                    out.poor_refused += 1;
                    poor_blocked.insert(prefix);
                } else {
                    out.good_refused += 1;
                    good_blocked.insert(prefix);
                }
            }
        }
        if second >= scenario.attack_from_minute * 60 && second % scenario.attack_every == 0 {
            out.attack_attempts += 1;
            let number = format!("+861701{:07}", rng.u32(0..10_000_000));
            match send(&services, &tenant, &number, second).await {
                Ok(()) => {
                    out.attack_sent += 1;
                    attack_times.push_back(second);
                }
                Err(()) if out.attack_before_trip.is_none() => {
                    out.attack_before_trip = Some(out.attack_sent);
                    let pending = attack_times.iter().filter(|&&t| t + CONVERSION_WINDOW > second).count() as u64;
                    out.bound_at_trip = Some(u64::from(rule.min_sends) + pending);
                    out.trip_minute = Some(second as f64 / 60.0);
                }
                Err(()) => {}
            }
        }
    }
    out.good_prefixes_blocked = good_blocked.len();
    out.poor_prefixes_blocked = poor_blocked.len();
    out
}

/// One send through the pipeline: Ok when accepted (dry run), Err on `suspected_pumping`.
async fn send(
    services: &std::sync::Arc<Services>,
    tenant: &std::sync::Arc<smsgate::config::Tenant>,
    number: &str,
    second: u64,
) -> Result<(), ()> {
    let request = SendRequest {
        phone: PhoneInput::Native(number.to_owned()),
        usage: "SignIn".into(),
        params: vec![format!("{:06}", second % 1_000_000)],
        code: Some(format!("{:06}", second % 1_000_000)),
        ip: None,
        locale: None,
        idempotency_key: None,
    };
    let mut trail = Trail::default();
    match services.send(tenant, request, &mut trail).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == "suspected_pumping" => Err(()),
        Err(e) => panic!("unexpected refusal {}: {e}", e.code()),
    }
}

/// Seeds each cell of the table runs with (the table shows the mean of the runs).
const SEEDS: u64 = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let base = Scenario::default();
    println!(
        "{} h per run, mean of {SEEDS} seeds; honest: 1 send/s over 110 prefixes (100 verify {:.0} %, 10 verify {:.0} %); \
         attack: 1 send/{} s on +861701 from minute {}, never verified",
        base.hours,
        HONEST_CONVERTS * 100.0,
        POOR_CONVERTS * 100.0,
        base.attack_every,
        base.attack_from_minute
    );
    println!("rule: {{ phone_prefix: 6 }}, window 1h, block_for 1h; conversion.window 10m\n");
    println!(
        "| min_sends | min_conversion | attack SMS before the first trip (bound) | first trip after the attack began | \
         attack SMS sent of attempted | honest sends refused (85 % / 35 % prefixes) | prefixes blocked (85 % / 35 %) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for min_sends in [10, 30, 100] {
        for min_conversion in [0.1, 0.2, 0.5] {
            let mut sum = [0.0f64; 9];
            for seed in 1..=SEEDS {
                let scenario = Scenario { seed, ..Scenario::default() };
                let o = runtime.block_on(run(&scenario, Rule { min_sends, min_conversion }));
                let trip = o.trip_minute.map_or(f64::NAN, |m| m - scenario.attack_from_minute as f64);
                let cells = [
                    o.attack_before_trip.map_or(f64::NAN, |n| n as f64),
                    o.bound_at_trip.map_or(f64::NAN, |n| n as f64),
                    trip,
                    o.attack_sent as f64,
                    o.attack_attempts as f64,
                    o.good_refused as f64,
                    o.poor_refused as f64,
                    o.good_prefixes_blocked as f64,
                    o.poor_prefixes_blocked as f64,
                ];
                for (s, c) in sum.iter_mut().zip(cells) {
                    *s += c / SEEDS as f64;
                }
            }
            let [before, bound, trip, sent, attempted, good, poor, good_keys, poor_keys] = sum;
            println!(
                "| {min_sends} | {min_conversion} | {before:.0} ({bound:.0}) | {trip:.1} min | {sent:.0} of {attempted:.0} | \
                 {:.0} ({good:.0} / {poor:.0}) | {good_keys:.1} / {poor_keys:.1} |",
                good + poor
            );
        }
    }
}
