//! Limiter decisions per second: the memory store (decisions, and decisions given back) and the whole
//! `Limiter::decide` for a 3-rule phone policy, and the Redis store on loopback (a private `redis-server` on
//! a free port; skipped with a note when the binary is missing). Run: `cargo bench --bench limiter`. Figures
//! are in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use smsgate::clock::{ManualClock, SharedClock};
use smsgate::config::Config;
use smsgate::phone::Phone;
use smsgate::policy::{Check, Gcra, Limiter, MemoryStore, RedisStore, Subject};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The shipped demo policy's phone rules: 1 per 30s, 5 per hour, 10 per day.
fn phone_checks(phone: u64) -> [Check; 3] {
    let rule = |rule_id, limit, secs| Check {
        rule_id,
        key: phone,
        gcra: Gcra::new(limit, Duration::from_secs(secs)),
        shadow: false,
    };
    [rule(1, 1, 30), rule(2, 5, 3600), rule(3, 10, 86_400)]
}

/// 100k numbers in a random order, so decisions hit a warm map of realistic size, mixing allows and denies.
fn numbers() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..100_000).map(|_| 8_613_000_000_000 + rng.u64(0..1_000_000_000)).collect()
}

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter/memory");
    group.throughput(Throughput::Elements(1));
    let store = MemoryStore::default();
    let phones = numbers();
    let mut i = 0usize;
    let mut now = 0u64;
    group.bench_function("store_decide_3_phone_rules", |b| {
        b.iter(|| {
            i = (i + 1) % phones.len();
            now += 1; // a millisecond per decision
            store.decide(&phone_checks(phones[i]), now, true)
        })
    });
    // A send that certainly went nowhere: the decision, then its give-back (the failure path's extra cost).
    let given = MemoryStore::default();
    group.bench_function("store_decide_and_give_back_3_phone_rules", |b| {
        b.iter(|| {
            i = (i + 1) % phones.len();
            now += 1;
            let checks = phone_checks(phones[i]);
            let (verdicts, seq) = given.decide_taking(&checks, now, true);
            if let Some(seq) = seq {
                let taken: Vec<(Check, u64)> = checks.iter().zip(&verdicts).map(|(c, v)| (*c, v.new_tat)).collect();
                given.give_back(&taken, seq, now);
            }
        })
    });

    let yaml = r#"
tenants:
  acme:
    tokens: ["bench-token-000000001"]
    tencent: { accessKeyId: A, accessKeySecret: S, sdkAppId: "1", region: ap-guangzhou, templates: [{ usageType: Generic, templateCode: "1" }] }
    limits:
      - { name: burst, key: phone, limit: 1, per: 30s }
      - { name: hourly, key: phone, limit: 5, per: 1h }
      - { name: daily, key: phone, limit: 10, per: 1d }
"#;
    let config = Config::from_yaml(yaml, Path::new("bench.yaml"), &HashMap::<String, String>::new()).unwrap();
    let tenant = config.tenant("acme").unwrap().clone();
    let clock = ManualClock::new(1_704_164_645);
    let shared: SharedClock = clock.clone();
    let limiter = Limiter::new(Arc::new(MemoryStore::default()), shared);
    let parsed: Vec<Phone> = phones.iter().take(10_000).map(|p| Phone::from_e164(&format!("+{p}")).unwrap()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut j = 0usize;
    group.bench_function("limiter_decide_3_phone_rules", |b| {
        b.iter(|| {
            j = (j + 1) % parsed.len();
            clock.advance(Duration::from_millis(1));
            let subject = Subject { phone: &parsed[j], usage: "SignIn", also: &[], ip: None };
            runtime.block_on(limiter.decide(&tenant, &subject, true)).unwrap()
        })
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Ok(mut server) = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
    else {
        eprintln!("note: redis-server not found; skipping the Redis benchmark");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = Arc::new(
        RedisStore::new(
            &format!("redis://127.0.0.1:{port}"),
            Duration::from_secs(1),
            b"bench-storage-key-0123456789abcdef",
        )
        .unwrap(),
    );
    runtime.block_on(async {
        for _ in 0..200 {
            if store.ping().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start");
    });
    let phones = numbers();
    let mut group = c.benchmark_group("limiter/redis");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let base = 1_704_164_645_000u64;
    group.bench_function("one_decision_round_trip", |b| {
        b.iter(|| {
            i = (i + 1) % phones.len();
            runtime.block_on(store.decide("acme", &phone_checks(phones[i]), base + i as u64, true)).unwrap()
        })
    });
    // 64 decisions in flight on the one multiplexed connection, as under concurrent requests.
    const IN_FLIGHT: u64 = 64;
    group.throughput(Throughput::Elements(IN_FLIGHT));
    group.bench_function("64_concurrent_decisions", |b| {
        b.iter_batched(
            || {
                i = (i + IN_FLIGHT as usize) % (phones.len() - IN_FLIGHT as usize);
                i
            },
            |start| {
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..IN_FLIGHT as usize)
                        .map(|k| {
                            let store = store.clone();
                            let phone = phones[start + k];
                            tokio::spawn(async move {
                                store.decide("acme", &phone_checks(phone), base, true).await.unwrap()
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    let _ = server.kill();
    let _ = server.wait();
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
