//! The in-process limiter store: sharded maps from (rule, key) to a GCRA TAT. A decision over several rules
//! locks their shards in a fixed order, judges every rule, and writes only if all allow, so a denied request
//! consumes no quota. Expired entries are swept as shards grow: memory follows active keys only.

use super::gcra::{Gcra, RuleVerdict};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;
const MIN_SWEEP: usize = 1024;

/// One rule to judge: the rule's stable id, its key value, and its rate.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub rule_id: u64,
    pub key: u64,
    pub gcra: Gcra,
    /// Shadow rules are judged and written with the others, but never deny.
    pub shadow: bool,
}

struct Shard {
    tats: HashMap<u128, u64, foldhash::fast::RandomState>,
    sweep_at: usize,
}

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { tats: HashMap::default(), sweep_at: MIN_SWEEP })).collect();
        MemoryStore { shards }
    }
}

fn slot(check: &Check) -> u128 {
    (u128::from(check.rule_id) << 64) | u128::from(check.key)
}

fn shard_of(slot: u128) -> usize {
    // Mix both halves so rules sharing a key spread over shards.
    let folded = (slot as u64) ^ ((slot >> 64) as u64).rotate_left(29);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
}

impl MemoryStore {
    /// Judges every check at `now`; when `commit` and all enforcing checks allow, records the request.
    /// Verdicts come back in the order of `checks`.
    pub fn decide(&self, checks: &[Check], now: u64, commit: bool) -> Vec<RuleVerdict> {
        let slots: Vec<(u128, usize)> = checks.iter().map(|c| (slot(c), shard_of(slot(c)))).collect();
        let mut order: Vec<usize> = slots.iter().map(|(_, s)| *s).collect();
        order.sort_unstable();
        order.dedup();
        // Locked in ascending shard order, so concurrent decisions cannot deadlock.
        let mut guards: Vec<MutexGuard<'_, Shard>> =
            order.iter().map(|&i| self.shards[i].lock().unwrap_or_else(|p| p.into_inner())).collect();
        let guard_of: Vec<usize> =
            slots.iter().map(|(_, s)| order.binary_search(s).expect("every shard is locked")).collect();

        let verdicts: Vec<RuleVerdict> = checks
            .iter()
            .zip(&slots)
            .zip(&guard_of)
            .map(|((check, (slot, _)), &g)| check.gcra.check(guards[g].tats.get(slot).copied(), now))
            .collect();
        let allowed = checks.iter().zip(&verdicts).all(|(c, v)| c.shadow || v.allowed);
        if commit && allowed {
            for (((slot, _), &g), verdict) in slots.iter().zip(&guard_of).zip(&verdicts) {
                if verdict.allowed {
                    let shard = &mut guards[g];
                    shard.tats.insert(*slot, verdict.new_tat);
                    if shard.tats.len() >= shard.sweep_at {
                        shard.tats.retain(|_, tat| *tat > now);
                        shard.sweep_at = (shard.tats.len() * 2).max(MIN_SWEEP);
                    }
                }
            }
        }
        verdicts
    }

    /// Entries currently held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).tats.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired entry now (the store also does this by itself as it grows).
    pub fn sweep(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.tats.retain(|_, tat| *tat > now);
            shard.tats.shrink_to_fit();
            shard.sweep_at = (shard.tats.len() * 2).max(MIN_SWEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn check(rule_id: u64, key: u64, limit: u32, secs: u64) -> Check {
        Check { rule_id, key, gcra: Gcra::new(limit, Duration::from_secs(secs)), shadow: false }
    }

    #[test]
    fn a_denied_request_consumes_no_quota_of_any_rule() {
        let store = MemoryStore::default();
        let phone = check(1, 42, 1, 30);
        let tenant = check(2, 0, 3, 60);
        assert!(store.decide(&[phone, tenant], 0, true).iter().all(|v| v.allowed));
        // Denied by the phone rule: the tenant rule must not be charged.
        for _ in 0..10 {
            let v = store.decide(&[phone, tenant], S, true);
            assert!(!v[0].allowed && v[1].allowed);
        }
        let other = check(1, 43, 1, 30);
        assert!(store.decide(&[other, tenant], S, true).iter().all(|v| v.allowed));
        let third = check(1, 44, 1, 30);
        let v = store.decide(&[third, tenant], S, true);
        assert!(v[0].allowed && v[1].allowed, "tenant quota had room for exactly three");
        let fourth = check(1, 45, 1, 30);
        assert!(!store.decide(&[fourth, tenant], S, true)[1].allowed);
    }

    #[test]
    fn peeking_changes_nothing() {
        let store = MemoryStore::default();
        let c = check(1, 7, 1, 30);
        for _ in 0..3 {
            assert!(store.decide(&[c], 0, false)[0].allowed);
        }
        assert!(store.is_empty());
    }

    #[test]
    fn memory_returns_after_windows_expire() {
        let store = MemoryStore::default();
        for key in 0..20_000 {
            store.decide(&[check(1, key, 1, 30)], 0, true);
        }
        assert!(store.len() >= 20_000);
        // New traffic after expiry sweeps the old keys as the shards grow.
        for key in 0..20_000 {
            store.decide(&[check(1, 1_000_000 + key, 1, 30)], 31 * S, true);
        }
        assert!(store.len() <= 20_000 + SHARDS * MIN_SWEEP, "len {}", store.len());
        store.sweep(62 * S);
        assert!(store.is_empty());
    }
}
