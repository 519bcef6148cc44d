//! Properties of the limiter stores under random request sequences with a fake clock: no rule admits more
//! than its bucket bound (give-backs included), denied requests change nothing later, the memory and Redis
//! backends decide and give back alike, and give-backs racing other decisions on many threads never let more
//! through than a rule allows. The Redis properties run against a private `redis-server` (see
//! `common/redis_server.rs`).

use crate::common::STORAGE_KEY;
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
    /// were admitted (GCRA is a token bucket of `limit`, refilled at limit/per; see docs/limits-and-policy.md, "Limits").
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
    let Some(redis) = crate::common::redis_server::RedisServer::start() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = RedisStore::new(&redis.url(), Duration::from_secs(2), STORAGE_KEY.as_bytes()).unwrap();
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

/// (gap before the step in ms, which number, send or give back one of the requests still kept, which one)
fn steps_with_give_backs() -> impl Strategy<Value = Vec<(u64, u64, bool, usize)>> {
    proptest::collection::vec((0u64..3_000, 0u64..3, prop::bool::weighted(0.7), 0usize..8), 1..150)
}

/// Checks the bucket bound over the requests still kept, per (rule, key).
fn assert_bound(kept: &[(u64, u64, Vec<RuleVerdict>, Vec<Check>)]) -> Result<(), TestCaseError> {
    let mut admitted: HashMap<(u64, u64), Vec<u64>> = HashMap::new();
    for (at, _, verdicts, cs) in kept {
        for (c, v) in cs.iter().zip(verdicts) {
            if v.allowed {
                admitted.entry((c.rule_id, c.key)).or_default().push(*at);
            }
        }
    }
    for ((rule, _), times) in admitted {
        let (_, limit, per, _) = RULES[(rule - 1) as usize];
        let (limit, per_ms) = (u64::from(limit), per * 1000);
        for i in 0..times.len() {
            for j in i..times.len() {
                let span = times[j] - times[i];
                prop_assert!(
                    (j - i + 1) as u64 <= limit + span * limit / per_ms,
                    "rule {rule}: {} in {span} ms",
                    j - i + 1
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Sends and give-backs in any order, with time moving: the requests kept (admitted and not given back)
    /// never exceed any rule's bucket bound.
    #[test]
    fn give_backs_never_let_more_through_than_the_bound(seq in steps_with_give_backs(), shadow in any::<bool>()) {
        let store = MemoryStore::default();
        let mut now = 0;
        // (admitted at, admission number, verdicts, checks)
        let mut kept: Vec<(u64, u64, Vec<RuleVerdict>, Vec<Check>)> = Vec::new();
        for (gap, phone, send, pick) in seq {
            now += gap;
            if send || kept.is_empty() {
                let cs = checks(phone, shadow);
                let (v, number) = store.decide_taking(&cs, now, true);
                if let Some(number) = number {
                    kept.push((now, number, v, cs));
                }
            } else {
                let (_, number, v, cs) = kept.remove(pick % kept.len());
                let taken: Vec<(Check, u64)> =
                    cs.iter().zip(&v).filter(|(_, v)| v.allowed).map(|(c, v)| (*c, v.new_tat)).collect();
                store.give_back(&taken, number, now);
            }
            assert_bound(&kept)?;
        }
    }
}

/// The same sends and give-backs against both backends give the same verdicts at every step: the Redis
/// scripts mirror `Gcra::give_back` and the give-back ledger exactly.
#[test]
fn memory_and_redis_backends_give_back_alike() {
    let Some(redis) = crate::common::redis_server::RedisServer::start() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = RedisStore::new(&redis.url(), Duration::from_secs(2), STORAGE_KEY.as_bytes()).unwrap();
    let base = 1_704_164_645_000;
    let case = std::sync::atomic::AtomicU64::new(0);
    proptest!(ProptestConfig::with_cases(48), |(seq in steps_with_give_backs())| {
        let tenant = format!("giveback{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let memory = MemoryStore::default();
        let mut now = 0;
        // (memory's admission number, Redis's, verdicts, checks)
        let mut kept: Vec<(u64, u64, Vec<RuleVerdict>, Vec<Check>)> = Vec::new();
        for (gap, phone, send, pick) in seq {
            now += gap;
            if send || kept.is_empty() {
                let cs = checks(phone, false);
                let (local, local_number) = memory.decide_taking(&cs, now, true);
                let stored = runtime.block_on(store.decide_with_floors(&tenant, &cs, &[], base + now, true)).unwrap();
                let shared: Vec<RuleVerdict> =
                    cs.iter().zip(&stored.tats).map(|(c, tat)| c.gcra.check(*tat, base + now)).collect();
                for (l, s) in local.iter().zip(&shared) {
                    prop_assert_eq!((l.allowed, l.remaining, l.reset), (s.allowed, s.remaining, s.reset));
                }
                prop_assert_eq!(local_number.is_some(), stored.seq.is_some());
                if let (Some(l), Some(s)) = (local_number, stored.seq) {
                    kept.push((l, s, local, cs));
                }
            } else {
                let (l, s, v, cs) = kept.remove(pick % kept.len());
                let local: Vec<(Check, u64)> =
                    cs.iter().zip(&v).filter(|(_, v)| v.allowed).map(|(c, v)| (*c, v.new_tat)).collect();
                let shared: Vec<(Check, u64)> = local.iter().map(|&(c, tat)| (c, tat + base)).collect();
                memory.give_back(&local, l, now);
                let after = runtime.block_on(store.give_back(&tenant, &shared, s, base + now)).unwrap();
                let remaining: Vec<Option<u64>> =
                    memory.peek(&local.iter().map(|(c, _)| *c).collect::<Vec<_>>()).into_iter().map(|t| t.filter(|&t| t > now)).collect();
                let expected: Vec<Option<u64>> = after.iter().map(|t| t.map(|t| t - base)).collect();
                prop_assert_eq!(remaining, expected);
            }
        }
    });
}

/// Many threads sending and giving back on one tenant-wide rule while time stands still: at no point are more
/// requests kept than the rule allows, and afterwards exactly the quota not kept can still be taken.
#[test]
fn give_backs_racing_on_threads_never_exceed_the_rule() {
    let store = std::sync::Arc::new(MemoryStore::default());
    let rule = Check { rule_id: 9, key: 0, gcra: Gcra::new(20, Duration::from_secs(3600)), shadow: false };
    let kept = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let now = 5_000;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, kept) = (store.clone(), kept.clone());
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..5_000 {
                    let (v, number) = store.decide_taking(&[rule], now, true);
                    let Some(number) = number else { continue };
                    let in_use = kept.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    assert!(in_use <= 20, "{in_use} kept on a rule of 20");
                    if rng.bool() {
                        kept.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        store.give_back(&[(rule, v[0].new_tat)], number, now);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let kept = kept.load(std::sync::atomic::Ordering::SeqCst);
    let mut more = 0;
    while store.decide(&[rule], now, true)[0].allowed {
        more += 1;
    }
    assert_eq!(kept + more, 20, "{kept} kept, {more} more allowed");
}

/// The same race against Redis: concurrent tasks on one connection, scripts interleaving.
#[test]
fn give_backs_racing_in_redis_never_exceed_the_rule() {
    let Some(redis) = crate::common::redis_server::RedisServer::start() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store =
        std::sync::Arc::new(RedisStore::new(&redis.url(), Duration::from_secs(5), STORAGE_KEY.as_bytes()).unwrap());
    let rule = Check { rule_id: 9, key: 0, gcra: Gcra::new(20, Duration::from_secs(3600)), shadow: false };
    let kept = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let now = 1_704_164_645_000;
    runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (store, kept) = (store.clone(), kept.clone());
                tokio::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(t);
                    for _ in 0..150 {
                        let stored = store.decide_with_floors("race", &[rule], &[], now, true).await.unwrap();
                        let Some(number) = stored.seq else { continue };
                        let in_use = kept.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        assert!(in_use <= 20, "{in_use} kept on a rule of 20");
                        if rng.bool() {
                            kept.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            let taken = rule.gcra.check(stored.tats[0], now).new_tat;
                            store.give_back("race", &[(rule, taken)], number, now).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let kept = kept.load(std::sync::atomic::Ordering::SeqCst);
        let mut more = 0;
        while store.decide("race", &[rule], now, true).await.unwrap()[0]
            .is_none_or(|tat| rule.gcra.check(Some(tat), now).allowed)
        {
            more += 1;
            assert!(more <= 20);
        }
        assert_eq!(kept + more, 20, "{kept} kept, {more} more allowed");
    });
}
