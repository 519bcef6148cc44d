//! Criterion: what the feedback loop adds to a send in memory mode. `admit` (the protection check of the
//! number's keys before the send) plus `remember` (after Tencent's answer: the send log and the keys'
//! counts), for a tenant with two protection rules (country and a 6-digit prefix), distinct numbers; and
//! the same for a tenant without a `conversion:` block (the feature off). The rules never trip here (their
//! `min_sends` is out of reach, as for honest traffic): every send pays the full judgement.
//!
//! Time is the benchmark thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), not the wall clock: on a
//! shared machine, other processes' turns on the CPU would otherwise count as ours.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use smsgate::clock::{ManualClock, SharedClock};
use smsgate::config::Config;
use smsgate::feedback::{Feedback, Telemetry};
use smsgate::phone::Phone;
use smsgate::providers::Providers;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// This thread's CPU time so far.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

const YAML: &str = r#"
tenants:
  on:
    tokens: ["bench-token-on-000001"]
    tencent: { accessKeyId: a, accessKeySecret: b, sdkAppId: "1", region: ap-guangzhou,
               templates: [{ usageType: Generic, templateCode: "1" }] }
    conversion: { window: 10m }
    protection:
      - { name: country, key: country, window: 1h, min_sends: 1000000, min_conversion: 0.2, block_for: 1h }
      - { name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 1000000, min_conversion: 0.2, max_excess: 1000000, block_for: 1h }
  off:
    tokens: ["bench-token-off-00001"]
    tencent: { accessKeyId: a, accessKeySecret: b, sdkAppId: "1", region: ap-guangzhou,
               templates: [{ usageType: Generic, templateCode: "1" }] }
"#;

fn send_path(c: &mut Criterion) {
    let config = Config::from_yaml(YAML, Path::new("bench.yaml"), &HashMap::<String, String>::new()).unwrap();
    let clock = ManualClock::new(1_700_000_000);
    let shared: SharedClock = clock.clone();
    let feedback = Feedback::new(
        shared.clone(),
        Providers::new(shared, Default::default()).conversions(Default::default()),
        Telemetry::default(),
    );
    feedback.configure(&config);
    // 100k distinct mainland numbers over 1,000 prefixes, parsed once (parsing is the normalize stage's cost).
    let phones: Vec<Phone> = (0..100_000u64)
        .map(|i| Phone::from_e164(&format!("+86138{:08}", (i * 7_919) % 100_000_000)).unwrap())
        .collect();
    let serial = "2433:346829417817211458511931224";
    let request_id = "5b0e9b2cf3d04c1e8a7f6d5c4b3a2910";
    for name in ["on", "off"] {
        let tenant = config.tenant(name).unwrap().clone();
        let mut i = 0;
        c.bench_function(&format!("feedback/admit_and_remember_{name}"), |b| {
            b.iter_custom(|iterations| {
                let start = cpu_time();
                for _ in 0..iterations {
                    i += 1;
                    // 100 sends a second: the windows slide, old sends mature and leave as in a real day.
                    clock.advance(Duration::from_millis(10));
                    let phone = &phones[i % phones.len()];
                    if let Some(memo) = feedback.admit(&tenant, black_box(phone), false).unwrap() {
                        feedback.remember(&tenant, &memo, request_id, serial);
                    }
                }
                cpu_time() - start
            })
        });
    }
}

criterion_group!(benches, send_path);
criterion_main!(benches);
