//! SMS pumping hidden in honest traffic, against the adaptive protection, through the real pipeline (a
//! dry-run tenant: every stage but the network) on the injected clock, windows in real time.
//!
//! Honest traffic: `honest_per_second` users over 184 six-digit prefixes in 8 countries (calling codes of one region each: the
//! parser's fast path), Zipf-weighted
//! (s = 1), half of them returning users of their prefix; 70 to 90 % of them verify (per prefix), 1 to 10 s
//! after the send, 5 % of those only after 10 to 20 minutes (late: past the conversion window), and 15 %
//! ask again 30 to 60 s after their first code and verify the second. After a warm-up (the protection
//! learns each range's normal traffic), seven attackers run at once for a day, each on its own range
//! with honest users inside it, never verifying unless stated:
//!
//! - `5x`: five times the honest rate of a mid prefix;
//! - `spread`: one send a second over ten six-digit prefixes of one country;
//! - `low-slow`: 29 sends an hour (just under `min_sends: 30`) on one prefix;
//! - `partial-25` and `partial-50`: five times a prefix's honest rate, verifying 25 % and 50 % of its numbers;
//! - `busy-2.5x`: two and a half times a busy prefix's honest rate;
//! - `repeat`: five times a prefix's honest rate; refused, it probes every 5 minutes and comes back at full
//!   rate when a probe passes.
//!
//! And an honest surge (a campaign): one prefix's honest traffic triples for two hours of the attack day,
//! which must not trip it.
//!
//! For each configuration (a `protection:` block: the old rule and the shipped one, or `SIM_PROTECTION`,
//! several separated by `;;`) it prints, per attacker, the attack SMS sent (leaked) in the day, the share of
//! honest sends refused inside its range(s) and, of those to numbers that had verified a code before, the
//! share refused; and over all, the honest sends refused outside attacked ranges (by prefix when any), and
//! those of the surge.
//! Every random draw of the honest traffic is made whatever the answers, and each attacker draws from its
//! own stream, so every configuration meets the same honest traffic. `SIM_HOURLY=1` prints each attacker's
//! leak by hour. `SIM_CHALLENGE=0.9`: a refused honest user passes the caller's challenge (a CAPTCHA) with
//! that probability and is sent again with `vouched`; `SIM_ATTACKER_CHALLENGE` the same for the attackers. Run: `cargo run --release --example pumping_sim` (the table is in BENCHMARKS.md).
//! `tests/pumping.rs` runs a shorter scenario and checks the goals.

// Also compiled into tests/pumping.rs, which uses `run` and not `main`.
#![allow(dead_code)]

use smsgate::clock::{ManualClock, SharedClock};
use smsgate::config::Config;
use smsgate::phone::Phone;
use smsgate::pipeline::{Services, Trail};
use smsgate::policy::Limiter;
use smsgate::providers::Providers;
use smsgate::sms::{PhoneInput, SendRequest};
use smsgate::Runtime;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Hours of honest traffic alone before the attacks.
    pub warmup_hours: u64,
    /// Hours the attacks run (the leak is counted over them).
    pub attack_hours: u64,
    pub honest_per_second: f64,
    pub seed: u64,
    /// The share of refused honest users who pass the caller's own challenge (a CAPTCHA) and are sent again
    /// with `vouched` (0: the caller has no challenge).
    pub challenge: f64,
    /// The same for an attacker's refused sends (1: it solves every challenge).
    pub attacker_challenge: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            warmup_hours: 6,
            attack_hours: 24,
            honest_per_second: 10.0,
            seed: 1,
            challenge: 0.0,
            attacker_challenge: 0.0,
        }
    }
}

/// The shipped rule of the release the issue measured (`tenants.<t>.protection`, YAML flow list).
pub const OLD_RULE: &str =
    "[{ name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 30, min_conversion: 0.2, block_for: 1h }]";

/// The shipped rule (gateway.yaml): the old rule with `max_excess: 10` and `block_for: 3h`.
pub const EXCESS_RULE: &str =
    "[{ name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 30, min_conversion: 0.2, \
                               max_excess: 10, block_for: 3h }]";

/// What one attacker did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AttackOutcome {
    pub name: &'static str,
    pub attempts: u64,
    /// Attack SMS that went out.
    pub sent: u64,
    /// Honest sends to its range(s) during the attack, and those refused.
    pub honest_inside: u64,
    pub honest_inside_refused: u64,
    /// Of those, sends to numbers that had verified a code before, and those refused.
    pub verified_inside: u64,
    pub verified_inside_refused: u64,
    /// Attack SMS sent in each hour of the attack.
    pub sent_by_hour: Vec<u64>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub attacks: Vec<AttackOutcome>,
    /// Honest sends outside every attacked range (warm-up included), and those refused.
    pub honest_outside: u64,
    pub honest_outside_refused: u64,
    pub honest_verified_sends: u64,
    /// Honest sends to the surge prefix from its surge to an hour after (outside attacked ranges), and those
    /// refused.
    pub surge: u64,
    pub surge_refused: u64,
    /// Honest refusals outside attacked ranges by prefix (its first six digits), most first.
    pub refused_outside_by_prefix: Vec<(String, u64)>,
}

const CONVERSION_WINDOW: &str = "10m";

fn config(protection: &str) -> Config {
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
    conversion: {{ window: {CONVERSION_WINDOW} }}
    protection: {protection}
"#
    );
    Config::from_yaml(&yaml, Path::new("sim.yaml"), &HashMap::<String, String>::new())
        .expect("the simulation's config compiles")
}

/// Mobile number shapes, `#` a random digit: the first 6 digits (without `+`) make the prefix.
const SHAPES: [&str; 8] = [
    "+8613#########",  // CN
    "+33 6########",   // FR
    "+49 17########",  // DE
    "+91 9#########",  // IN
    "+55 ##9########", // BR
    "+62 81#########", // ID
    "+234 ##########", // NG
    "+63 9#########",  // PH
];
const PREFIXES_PER_COUNTRY: usize = 23;
/// The prefix (rank) whose honest traffic triples for `SURGE_LENGTH` s from `SURGE_FROM` s into the attacks.
const SURGE: usize = 10;
const SURGE_FROM: u64 = 8 * 3600;
const SURGE_LENGTH: u64 = 2 * 3600;

struct Prefix {
    /// The number with its prefix digits filled and the rest `#`.
    shape: String,
    /// Honest sends per second.
    rate: f64,
    /// Share of honest users who verify.
    verify: f64,
    /// Numbers of users seen before (returning users come from here).
    users: Vec<String>,
}

fn fill(rng: &mut fastrand::Rng, shape: &str) -> String {
    shape.chars().filter(|c| *c != ' ').map(|c| if c == '#' { char::from(b'0' + rng.u8(0..10)) } else { c }).collect()
}

/// A shape with the first six digits drawn so that most numbers of the prefix are valid mobiles.
fn prefix_shape(rng: &mut fastrand::Rng, shape: &str, taken: &mut Vec<String>) -> String {
    let compact: String = shape.chars().filter(|c| *c != ' ').collect();
    loop {
        let mut digits = 0;
        let candidate: String = compact
            .chars()
            .map(|c| match c {
                '#' if digits < 6 => {
                    digits += 1;
                    char::from(b'0' + rng.u8(0..10))
                }
                c if c.is_ascii_digit() => {
                    digits += 1;
                    c
                }
                c => c,
            })
            .collect();
        let head: String = candidate.chars().skip(1).take(6).collect();
        if taken.contains(&head) {
            continue;
        }
        let valid = (0..20).filter(|_| number_ok(&fill(rng, &candidate))).count();
        if valid >= 18 {
            taken.push(head);
            return candidate;
        }
    }
}

fn number_ok(e164: &str) -> bool {
    Phone::from_e164(e164).is_ok_and(|p| {
        matches!(p.number_type().as_str(), "mobile" | "fixed_line_or_mobile") && p.e164().len() == e164.len()
    })
}

/// A valid number of the prefix.
fn number_of(rng: &mut fastrand::Rng, shape: &str) -> String {
    loop {
        let number = fill(rng, shape);
        if number_ok(&number) {
            return number;
        }
    }
}

/// What an honest user does after a code is sent: asks again at that second (then verifies the second
/// code), or verifies (or not) after `delay` seconds.
#[derive(Clone, Copy)]
struct Behaviour {
    asks_again: Option<u64>,
    verifies: bool,
    delay: u64,
}

impl Behaviour {
    /// An honest user of a prefix whose users verify with probability `verify`, arriving at `second`: 15 %
    /// ask again 30 to 60 s later; 5 % of those who verify do it 10 to 20 minutes late, the others 1 to 10 s
    /// after the send.
    fn draw(rng: &mut fastrand::Rng, verify: f64, second: u64) -> Behaviour {
        let asks_again = (rng.f64() < 0.15).then(|| second + rng.u64(30..=60));
        let verifies = rng.f64() < verify;
        let delay = if rng.f64() < 0.05 { rng.u64(600..=1200) } else { rng.u64(1..=10) };
        Behaviour { asks_again, verifies, delay }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Steady,
    /// Refused: probe every 5 minutes, resume when one passes.
    Repeat,
}

struct Attacker {
    name: &'static str,
    /// Indexes into the prefixes.
    ranges: Vec<usize>,
    rate: f64,
    verify: f64,
    kind: Kind,
    credit: f64,
    /// Repeat attacker: refused, next probe at this second.
    paused_until: Option<u64>,
    out: AttackOutcome,
    /// The attacker's own randomness: what it does never shifts the honest traffic.
    rng: fastrand::Rng,
    /// Its challenge outcomes, apart: solving challenges or not changes nothing else it does.
    challenge_rng: fastrand::Rng,
}

pub async fn run(scenario: &Scenario, protection: &str) -> Outcome {
    let runtime = Runtime::build(config(protection)).expect("the simulation's runtime builds");
    let config = runtime.config();
    let tenant = runtime.tenant("sim").expect("tenant").clone();
    let clock = ManualClock::new(1_704_164_645);
    let shared: SharedClock = clock.clone();
    let services: std::sync::Arc<Services> = Services::new(
        Limiter::from_backend(&config.limits_backend, shared.clone()).expect("memory"),
        Providers::new(shared.clone(), Default::default()),
        shared,
    );
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    // The prefix universe: ranks interleave the countries; Zipf weights by rank.
    let mut taken = Vec::new();
    let mut prefixes: Vec<Prefix> = Vec::new();
    for _ in 0..PREFIXES_PER_COUNTRY {
        for shape in SHAPES {
            let shape = prefix_shape(&mut rng, shape, &mut taken);
            prefixes.push(Prefix { shape, rate: 0.0, verify: 0.70 + 0.2 * rng.f64(), users: Vec::new() });
        }
    }
    let harmonic: f64 = (1..=prefixes.len()).map(|r| 1.0 / r as f64).sum();
    for (rank, p) in prefixes.iter_mut().enumerate() {
        p.rate = scenario.honest_per_second / (harmonic * (rank + 1) as f64);
    }
    // Cumulative weights for drawing an honest user's prefix.
    let mut cumulative = Vec::with_capacity(prefixes.len());
    let mut total = 0.0;
    for p in &prefixes {
        total += p.rate;
        cumulative.push(total);
    }
    // Ranks of the attacked prefixes (index = rank; rank r's country is r % 8).
    let five_x = 20;
    // Ten prefixes of one country (every 8th rank is the same country).
    let spread: Vec<usize> = (0..10).map(|i| 45 + 8 * i).collect();
    let attackers = vec![
        attacker("5x", vec![five_x], 5.0 * prefixes[five_x].rate, 0.0, Kind::Steady),
        attacker("spread", spread, 1.0, 0.0, Kind::Steady),
        attacker("low-slow", vec![100], 29.0 / 3600.0, 0.0, Kind::Steady),
        attacker("partial-25", vec![26], 5.0 * prefixes[26].rate, 0.25, Kind::Steady),
        attacker("partial-50", vec![35], 5.0 * prefixes[35].rate, 0.5, Kind::Steady),
        attacker("busy-2.5x", vec![3], 2.5 * prefixes[3].rate, 0.0, Kind::Steady),
        attacker("repeat", vec![13], 5.0 * prefixes[13].rate, 0.0, Kind::Repeat),
    ];
    let mut attackers = attackers;
    for (i, a) in attackers.iter_mut().enumerate() {
        a.rng = fastrand::Rng::with_seed(scenario.seed.wrapping_mul(1000).wrapping_add(i as u64 + 1));
        a.challenge_rng = fastrand::Rng::with_seed(scenario.seed.wrapping_mul(3000).wrapping_add(i as u64 + 1));
    }
    // Numbers that verified a code (a verification that found its send), and refusals outside by prefix.
    let mut verified: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut refused_outside: HashMap<usize, u64> = HashMap::new();
    let attacked: HashMap<usize, usize> =
        attackers.iter().enumerate().flat_map(|(a, att)| att.ranges.iter().map(move |&r| (r, a))).collect();
    let mut out = Outcome::default();
    // (second due, number) of verifications to come; (second due, prefix, number, its verification) of
    // honest retries.
    let mut due: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut retries: BTreeMap<u64, Vec<(usize, String, Behaviour)>> = BTreeMap::new();
    let attack_from = scenario.warmup_hours * 3600;
    let end = attack_from + scenario.attack_hours * 3600;
    let mut honest_credit = 0.0;
    let (mut surge_credit, mut surge_rng) = (0.0, fastrand::Rng::with_seed(scenario.seed.wrapping_mul(7919)));
    let mut challenge_rng = fastrand::Rng::with_seed(scenario.seed.wrapping_mul(104_729));
    for second in 0..end {
        clock.advance(Duration::from_secs(1));
        if let Some(numbers) = due.remove(&second) {
            for number in numbers {
                let phone = Phone::from_e164(&number).expect("valid");
                let found =
                    services.feedback.verify(tenant.spec(), &tenant.providers, &phone, None, &services.limiter).await;
                if found.found > 0 {
                    verified.insert(number);
                }
            }
        }
        let attacking = second >= attack_from;
        // Honest users: new arrivals and retries.
        honest_credit += scenario.honest_per_second;
        let mut arrivals: Vec<(usize, String, Behaviour)> = Vec::new();
        while honest_credit >= 1.0 {
            honest_credit -= 1.0;
            let x = rng.f64() * total;
            let p = cumulative.partition_point(|&c| c < x).min(prefixes.len() - 1);
            let prefix = &mut prefixes[p];
            let number = if !prefix.users.is_empty() && rng.bool() {
                prefix.users[rng.usize(0..prefix.users.len())].clone()
            } else {
                let n = number_of(&mut rng, &prefix.shape);
                if prefix.users.len() < 512 {
                    prefix.users.push(n.clone());
                } else {
                    let slot = rng.usize(0..512);
                    prefix.users[slot] = n.clone();
                }
                n
            };
            // Every draw is made here, whatever the answers, so each configuration meets the same honest
            // traffic (a retry carries its own).
            arrivals.push((p, number, Behaviour::draw(&mut rng, prefix.verify, second)));
        }
        // An honest surge (a campaign): the surge prefix's traffic triples for two hours of the attack day,
        // new users behaving like its others, from a stream of their own.
        if (attack_from + SURGE_FROM..attack_from + SURGE_FROM + SURGE_LENGTH).contains(&second) {
            surge_credit += 2.0 * prefixes[SURGE].rate;
            while surge_credit >= 1.0 {
                surge_credit -= 1.0;
                let number = number_of(&mut surge_rng, &prefixes[SURGE].shape);
                let behaviour = Behaviour::draw(&mut surge_rng, prefixes[SURGE].verify, second);
                arrivals.push((SURGE, number, behaviour));
            }
        }
        if let Some(list) = retries.remove(&second) {
            arrivals.extend(list);
        }
        for (p, number, Behaviour { asks_again, verifies, delay }) in arrivals {
            let had_history = verified.contains(&number);
            // Drawn whatever the answer, from a stream of its own: the honest traffic stays the same.
            let passes_challenge = challenge_rng.f64() < scenario.challenge;
            let ok = send(&services, &tenant, &number, second, passes_challenge).await;
            let inside = attacking.then(|| attacked.get(&p)).flatten();
            match inside {
                Some(&a) => {
                    let out = &mut attackers[a].out;
                    out.honest_inside += 1;
                    out.honest_inside_refused += u64::from(!ok);
                    out.verified_inside += u64::from(had_history);
                    out.verified_inside_refused += u64::from(had_history && !ok);
                }
                None => {
                    if p == SURGE
                        && (attack_from + SURGE_FROM..attack_from + SURGE_FROM + SURGE_LENGTH + 3600).contains(&second)
                    {
                        out.surge += 1;
                        out.surge_refused += u64::from(!ok);
                    }
                    out.honest_outside += 1;
                    out.honest_outside_refused += u64::from(!ok);
                    if !ok {
                        *refused_outside.entry(p).or_default() += 1;
                    }
                }
            }
            if !ok {
                continue;
            }
            if let Some(at) = asks_again {
                retries.entry(at).or_default().push((p, number, Behaviour { asks_again: None, verifies, delay }));
                continue;
            }
            if verifies {
                out.honest_verified_sends += 1;
                due.entry(second + delay).or_default().push(number);
            }
        }
        if !attacking {
            continue;
        }
        for a in attackers.iter_mut() {
            a.credit += a.rate;
            while a.credit >= 1.0 {
                a.credit -= 1.0;
                if let (Kind::Repeat, Some(until)) = (a.kind, a.paused_until) {
                    if second < until {
                        continue;
                    }
                }
                let range = a.ranges[a.rng.usize(0..a.ranges.len())];
                let number = number_of(&mut a.rng, &prefixes[range].shape);
                let verifies = a.rng.f64() < a.verify;
                let delay = a.rng.u64(5..=30);
                a.out.attempts += 1;
                let passes_challenge = a.challenge_rng.f64() < scenario.attacker_challenge;
                if send(&services, &tenant, &number, second, passes_challenge).await {
                    a.out.sent += 1;
                    let hour = ((second - attack_from) / 3600) as usize;
                    if a.out.sent_by_hour.len() <= hour {
                        a.out.sent_by_hour.resize(hour + 1, 0);
                    }
                    a.out.sent_by_hour[hour] += 1;
                    a.paused_until = None;
                    if verifies {
                        due.entry(second + delay).or_default().push(number);
                    }
                } else if matches!(a.kind, Kind::Repeat) {
                    a.paused_until = Some(second + 300);
                }
            }
        }
    }
    let mut by_prefix: Vec<(String, u64)> =
        refused_outside.into_iter().map(|(p, n)| (prefixes[p].shape.chars().skip(1).take(6).collect(), n)).collect();
    by_prefix.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.refused_outside_by_prefix = by_prefix;
    out.attacks = attackers.into_iter().map(|a| a.out).collect();
    out
}

fn attacker(name: &'static str, ranges: Vec<usize>, rate: f64, verify: f64, kind: Kind) -> Attacker {
    Attacker {
        name,
        ranges,
        rate,
        verify,
        kind,
        credit: 0.0,
        paused_until: None,
        out: AttackOutcome { name, ..AttackOutcome::default() },
        rng: fastrand::Rng::new(),
        challenge_rng: fastrand::Rng::new(),
    }
}

/// One send through the pipeline: true when accepted (dry run), false on `suspected_pumping`. Refused, a
/// user who `passes_challenge` (the caller's own, a CAPTCHA) is sent again, vouched for.
async fn send(
    services: &std::sync::Arc<Services>,
    tenant: &std::sync::Arc<smsgate::runtime::LiveTenant>,
    number: &str,
    second: u64,
    passes_challenge: bool,
) -> bool {
    if send_once(services, tenant, number, second, false).await {
        return true;
    }
    passes_challenge && send_once(services, tenant, number, second, true).await
}

async fn send_once(
    services: &std::sync::Arc<Services>,
    tenant: &std::sync::Arc<smsgate::runtime::LiveTenant>,
    number: &str,
    second: u64,
    vouched: bool,
) -> bool {
    let request = SendRequest {
        phone: PhoneInput::Native(number.to_owned()),
        usage: "SignIn".into(),
        params: vec![format!("{:06}", second % 1_000_000)],
        code: Some(format!("{:06}", second % 1_000_000)),
        ip: None,
        locale: None,
        idempotency_key: None,
        vouched,
    };
    let mut trail = Trail::default();
    match services.send(tenant, request, &mut trail).await {
        Ok(_) => true,
        Err(e) if e.code() == "suspected_pumping" => false,
        Err(e) => panic!("unexpected refusal {}: {e}", e.code()),
    }
}

fn main() {
    if std::env::var_os("SIM_LOG").is_some() {
        tracing_subscriber::fmt().with_ansi(false).with_max_level(tracing::Level::INFO).init();
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let seeds: Vec<u64> = std::env::var("SIM_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    let mut configs: Vec<(&str, String)> =
        vec![("old rule (prefix 6, 30, 0.2)", OLD_RULE.to_owned()), ("excess rule", EXCESS_RULE.to_owned())];
    if let Ok(extra) = std::env::var("SIM_PROTECTION") {
        configs = extra.split(";;").map(|c| ("SIM_PROTECTION", c.trim().to_owned())).collect();
    }
    let hours = |name: &str, default: u64| std::env::var(name).ok().and_then(|h| h.parse().ok()).unwrap_or(default);
    let share = |name: &str| std::env::var(name).ok().and_then(|h| h.parse().ok()).unwrap_or(0.0);
    let scenario = Scenario {
        warmup_hours: hours("SIM_WARMUP_HOURS", 6),
        attack_hours: hours("SIM_ATTACK_HOURS", 24),
        challenge: share("SIM_CHALLENGE"),
        attacker_challenge: share("SIM_ATTACKER_CHALLENGE"),
        ..Scenario::default()
    };
    println!(
        "warm-up {} h, attacks {} h, honest {}/s; seeds {seeds:?}; leak = attack SMS sent in the attack hours; \
         refused users passing the caller's challenge: honest {}, attackers {}",
        scenario.warmup_hours,
        scenario.attack_hours,
        scenario.honest_per_second,
        scenario.challenge,
        scenario.attacker_challenge
    );
    for (name, protection) in configs {
        let outcomes: Vec<Outcome> =
            seeds.iter().map(|&seed| runtime.block_on(run(&Scenario { seed, ..scenario }, &protection))).collect();
        println!("\n{name}: {protection}\n");
        println!(
            "| attacker | attempted | leaked | honest refused inside its range(s) | of them with a verification before |"
        );
        println!("| --- | ---: | ---: | ---: | ---: |");
        for i in 0..outcomes[0].attacks.len() {
            let cells: Vec<&AttackOutcome> = outcomes.iter().map(|o| &o.attacks[i]).collect();
            let join =
                |f: &dyn Fn(&AttackOutcome) -> String| cells.iter().map(|a| f(a)).collect::<Vec<_>>().join(" / ");
            let share = |n: u64, of: u64| format!("{:.1} % of {of}", 100.0 * n as f64 / of.max(1) as f64);
            println!(
                "| {} | {} | {} | {} | {} |",
                cells[0].name,
                join(&|a| a.attempts.to_string()),
                join(&|a| format!("{} ({:.1} %)", a.sent, 100.0 * a.sent as f64 / a.attempts.max(1) as f64)),
                join(&|a| share(a.honest_inside_refused, a.honest_inside)),
                join(&|a| share(a.verified_inside_refused, a.verified_inside)),
            );
        }
        if std::env::var_os("SIM_HOURLY").is_some() {
            for o in &outcomes {
                for a in &o.attacks {
                    println!("{}: sent by hour of the attack {:?}", a.name, a.sent_by_hour);
                }
            }
        }
        for o in &outcomes {
            if !o.refused_outside_by_prefix.is_empty() {
                let top: Vec<String> =
                    o.refused_outside_by_prefix.iter().take(8).map(|(p, n)| format!("+{p}: {n}")).collect();
                println!("\nrefused outside attacked ranges, by prefix: {}", top.join(", "));
            }
        }
        let outside: Vec<String> =
            outcomes.iter().map(|o| format!("{} of {}", o.honest_outside_refused, o.honest_outside)).collect();
        println!("\nhonest refused outside attacked ranges: {}", outside.join(" / "));
        let surge: Vec<String> = outcomes.iter().map(|o| format!("{} of {}", o.surge_refused, o.surge)).collect();
        println!("of them, in an honest surge (a prefix's traffic tripled for 2 h): {}", surge.join(" / "));
    }
}
