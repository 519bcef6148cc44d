//! Properties of the limiter stores under random request sequences with a fake clock: no rule admits more
//! than its bucket bound, denied requests change nothing later, and the memory and Redis backends decide
//! alike. The Redis property runs against a private `redis-server` (see `common/redis_server.rs`).

mod common;

use proptest::prelude::*;
use smsgate::policy::{Check, Gcra, MemoryStore, RedisStore, RuleVerdict};
use std::collections::HashMap;
use std::time::Duration;

/// A 3-rule phone policy plus a tenant rule, as in the shipped config but with small windows so random
/// sequences reach refills: (rule id, limit, per seconds, key is the phone).
const RULES: [(u64, u32, u64, bool); 4] = [(1, 1, 3, true), (2, 3, 20, true), (3, 5, 60, true), (4, 8, 5, false)];

fn checks(phone: u64, shadow_last: bool) -> Vec<Check> {
    RULES
        .iter()
        .enumerate()
        .map(|(i, &(rule_id, limit, per, by_phone))| Check {
            rule_id,
            key: if by_phone { 8_613_800_000_000 + phone } else { 0 },
            gcra: Gcra::new(limit, Duration::from_secs(per)),
            shadow: shadow_last && i == RULES.len() - 1,
        })
        .collect()
}

/// (gap before the request in ms, which of a few numbers, commit or only peek)
fn requests() -> impl Strategy<Value = Vec<(u64, u64, bool)>> {
    proptest::collection::vec((0u64..3_000, 0u64..4, prop::bool::weighted(0.9)), 1..120)
}

fn allowed(verdicts: &[RuleVerdict], checks: &[Check]) -> bool {
    verdicts.iter().zip(checks).all(|(v, c)| c.shadow || v.allowed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// For every (rule, key): in any span Δ between two admitted requests, at most limit + ⌊Δ·limit/per⌋
    /// were admitted (GCRA is a token bucket of `limit`, refilled at limit/per; see README "Limits").
    #[test]
    fn no_rule_admits_more_than_its_bound(seq in requests(), shadow in any::<bool>()) {
        let store = MemoryStore::default();
        let mut now = 0;
        let mut admitted: HashMap<(u64, u64), Vec<u64>> = HashMap::new();
        for (gap, phone, commit) in seq {
            now += gap;
            let cs = checks(phone, shadow);
            let v = store.decide(&cs, now, commit);
            if commit && allowed(&v, &cs) {
                for (c, v) in cs.iter().zip(&v) {
                    if v.allowed {
                        admitted.entry((c.rule_id, c.key)).or_default().push(now);
                    }
                }
            }
        }
        for ((rule, _), times) in admitted {
            let (_, limit, per, _) = RULES[(rule - 1) as usize];
            let (limit, per_ms) = (u64::from(limit), per * 1000);
            for i in 0..times.len() {
                for j in i..times.len() {
                    let span = times[j] - times[i];
                    prop_assert!((j - i + 1) as u64 <= limit + span * limit / per_ms);
                }
            }
        }
    }

    /// Replaying only the requests that were allowed gives the very same verdicts: a denied request (and a
    /// peek) left no trace in any rule.
    #[test]
    fn denied_requests_change_nothing(seq in requests()) {
        let full = MemoryStore::default();
        let replay = MemoryStore::default();
        let mut now = 0;
        let mut kept = Vec::new();
        for (gap, phone, commit) in seq {
            now += gap;
            let cs = checks(phone, false);
            let v = full.decide(&cs, now, commit);
            if commit && allowed(&v, &cs) {
                kept.push((now, phone, v));
            }
        }
        for (now, phone, v) in kept {
            prop_assert_eq!(replay.decide(&checks(phone, false), now, true), v);
        }
    }
}

#[test]
fn memory_and_redis_backends_decide_alike() {
    let Some(redis) = common::redis_server::RedisServer::start() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = RedisStore::new(&redis.url(), Duration::from_secs(2)).unwrap();
    // Any unix time: both backends only look at differences.
    let base = 1_704_164_645_000;
    let case = std::sync::atomic::AtomicU64::new(0);
    proptest!(ProptestConfig::with_cases(48), |(seq in requests(), shadow in any::<bool>())| {
        // A tenant per case: fresh keys without flushing.
        let tenant = format!("parity{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let memory = MemoryStore::default();
        let mut now = 0;
        for (gap, phone, commit) in seq {
            now += gap;
            let cs = checks(phone, shadow);
            let local = memory.decide(&cs, now, commit);
            let stored = runtime.block_on(store.decide(&tenant, &cs, base + now, commit)).unwrap();
            let shared: Vec<RuleVerdict> =
                cs.iter().zip(stored).map(|(c, tat)| c.gcra.check(tat, base + now)).collect();
            for (l, s) in local.iter().zip(&shared) {
                prop_assert_eq!((l.allowed, l.remaining, l.reset, l.retry_after), (s.allowed, s.remaining, s.reset, s.retry_after));
            }
        }
    });
    // Every key carries a TTL: Redis memory is bounded by live quota too.
    let mut c = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("smsgate:*").query(&mut c).unwrap();
    assert!(!keys.is_empty());
    for key in keys.iter().take(50) {
        // -1: no TTL; -2: expired since KEYS listed it (TTLs run on Redis's clock and some are milliseconds).
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut c).unwrap();
        assert!(ttl != -1, "{key} has no TTL");
        assert!(key.starts_with("smsgate:{parity"), "tenant hash tag: {key}");
    }
}
