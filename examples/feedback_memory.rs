//! Memory per remembered send in the feedback loop (memory mode): one million accepted sends to distinct
//! numbers within one `remember_for` (1h), for a tenant with two protection rules (country, 6-digit prefix),
//! each with a 32-character SerialNo and request id. Measured two ways: the send log's own allocation
//! (`Feedback::footprint`) and the process's resident memory (RSS from /proc/self/statm). Then the sends age
//! out and a sweep runs; then twice the cap arrives within one window and the cap holds. The allocator is
//! mimalloc, as in the `smsgate` binary.
//! Run: `cargo run --release --example feedback_memory`. Figures are in BENCHMARKS.md.

use smsgate::clock::{ManualClock, SharedClock};
use smsgate::config::Config;
use smsgate::feedback::{Feedback, Telemetry};
use smsgate::phone::Phone;
use smsgate::providers::Providers;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// As the `smsgate` binary: memory given back after a burst is the allocator's business too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SENDS: u64 = 1_000_000;

const YAML: &str = r#"
server: { max_remembered_sends: CAP }
tenants:
  acme:
    tokens: ["memory-token-0000001"]
    tencent: { accessKeyId: a, accessKeySecret: b, sdkAppId: "1", region: ap-guangzhou,
               templates: [{ usageType: Generic, templateCode: "1" }] }
    conversion: { window: 10m, remember_for: 1h }
    protection:
      - { name: country, key: country, window: 1h, min_sends: 1000000, min_conversion: 0.2, block_for: 1h }
      - { name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 1000000, min_conversion: 0.2, block_for: 1h }
"#;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `count` sends to numbers never seen before, spread evenly over `over`.
fn spray(
    feedback: &Feedback,
    clock: &ManualClock,
    tenant: &smsgate::config::Tenant,
    seen: &mut u64,
    count: u64,
    over: Duration,
) {
    let step = over / count as u32;
    for _ in 0..count {
        let phone = Phone::from_e164(&format!("+86138{:08}", (*seen * 987_654_323) % 100_000_000)).expect("valid");
        *seen += 1;
        clock.advance(step);
        let memo = feedback.admit(tenant, &phone, false).expect("never blocked here").expect("feedback is on");
        let serial = format!("2433:{:028}", *seen);
        let request_id = format!("{:032x}", u128::from(*seen) * 0x9e37_79b9_7f4a_7c15);
        feedback.remember(tenant, &memo, &request_id, &serial);
    }
}

fn main() {
    Phone::warm_up();
    let load = |cap: u64| {
        let yaml = YAML.replace("CAP", &cap.to_string());
        Config::from_yaml(&yaml, Path::new("memory.yaml"), &HashMap::<String, String>::new()).expect("config")
    };
    // First with room to spare, so every send is remembered.
    let config = load(2 * SENDS);
    let tenant = config.tenant("acme").expect("tenant").clone();
    let clock = ManualClock::new(1_700_000_000);
    let shared: SharedClock = clock.clone();
    let feedback = Feedback::new(
        shared.clone(),
        Providers::new(shared, Default::default()).conversions(Default::default()),
        Telemetry::default(),
    );
    feedback.configure(&config);
    let baseline = rss_bytes();
    let mut seen = 0;
    spray(&feedback, &clock, &tenant, &mut seen, SENDS, Duration::from_secs(3000));
    let (log_bytes, keys) = feedback.footprint();
    let rss = rss_bytes().saturating_sub(baseline);
    println!("remembered sends          {}", feedback.remembered());
    println!("protection keys tracked   {keys}");
    println!(
        "send log bytes            {:.1} MiB = {:.1} bytes per send",
        mib(log_bytes as u64),
        log_bytes as f64 / SENDS as f64
    );
    println!("RSS growth                {:.1} MiB = {:.1} bytes per send", mib(rss), rss as f64 / SENDS as f64);

    // Past remember_for (and its last sixteenth) every send has aged out.
    clock.advance(Duration::from_secs(3600 + 3600 / 16 + 1));
    feedback.sweep(&config);
    let (after, keys) = feedback.footprint();
    println!(
        "after expiry and sweep    {} sends, {after} bytes, {keys} keys, RSS {:.1} MiB above baseline",
        feedback.remembered(),
        mib(rss_bytes().saturating_sub(baseline))
    );

    // A cap of one million, and twice that within one window: the oldest are dropped (and counted).
    let config = load(SENDS);
    feedback.configure(&config);
    spray(&feedback, &clock, &tenant, &mut seen, 2 * SENDS, Duration::from_secs(600));
    println!(
        "2M sends in 10 min        {} remembered (cap {}), {} dropped, RSS {:.1} MiB above baseline",
        feedback.remembered(),
        config.server.max_remembered_sends,
        feedback.dropped(),
        mib(rss_bytes().saturating_sub(baseline))
    );
}
