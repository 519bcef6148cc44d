//! The in-process limiter store: sharded hash maps from (rule, key) to a GCRA TAT, laid out to stay small
//! with millions of numbers. A decision over several rules locks their shards in a fixed order, judges every
//! rule, and writes only if all enforcing rules allow, so a denied request consumes no quota. Expired entries
//! are swept as shards grow (and by `sweep`): memory follows the keys with live quota, not every key seen.
//!
//! Layout, because a spray of random numbers is the attack this store must absorb:
//! - a rule id (a 64-bit hash) is mapped to a 14-bit slot, and the slot and a key below 2^50 (every E.164
//!   number, prefix, country and the tenant key) are packed into one u64, stored as two u32 halves so an
//!   entry is 12 bytes with 4-byte alignment (13 bytes per hash-table bucket with hashbrown's control byte);
//! - a TAT is a u32 of milliseconds after the shard's epoch; the epoch moves forward every 2^30 ms (12 days),
//!   dropping what expired and shifting the rest, so TATs (at most about 30 days ahead) always fit;
//! - keys that do not fit 50 bits (IPv6 /64 blocks) and rules beyond the slot space use a second, wider map.
//!
//! Give-backs (a send that certainly went nowhere returns its quota) keep a `Ledger` beside the TATs, only for
//! keys that had one in the last `GIVE_BACK_WINDOW_MS`, and every admitted request takes a number from one
//! counter, so a give-back knows which others were admitted before it (see `Gcra::give_back`).

use super::gcra::{Gcra, Ledger, RuleVerdict};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

pub(crate) const SHARDS: usize = 64;
/// A shard sweeps expired entries whenever it has grown to this many since the last sweep (or twice the
/// live count then), so sweeping is amortized O(1) per insert.
const MIN_SWEEP: usize = 1024;
const KEY_BITS: u32 = 50;
const SLOTS: usize = 1 << (64 - KEY_BITS);
/// How far the epoch may fall behind now before a shard rebases; with TATs at most ~30 days ahead (config
/// validation: `per` up to 30d, `limit` up to 1e6), 2^30 ms + 30 days stays below 2^32 ms.
const REBASE_AFTER_MS: u64 = 1 << 30;
/// Keys below this are low-cardinality (tenant, country, short prefixes): spread them over shards by rule
/// too, so one hot tenant rule does not serialize every request. Larger keys (numbers, addresses) pick the
/// shard by key alone, so all rules of one number share one lock.
const SPREAD_BELOW: u64 = 1 << 32;

/// One rule to judge: the rule's stable id, its key value, and its rate.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub rule_id: u64,
    pub key: u64,
    pub gcra: Gcra,
    /// Shadow rules are judged and written with the others, but never deny.
    pub shadow: bool,
}

/// Slot (14 bits) and key (50 bits) packed into a u64 kept as two u32s: 4-byte alignment keeps an entry at
/// 12 bytes instead of 16.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedKey([u32; 2]);

impl PackedKey {
    fn new(slot: u16, key: u64) -> PackedKey {
        let packed = (u64::from(slot) << KEY_BITS) | key;
        PackedKey([(packed >> 32) as u32, packed as u32])
    }

    fn slot(self) -> u16 {
        (self.0[0] >> (KEY_BITS - 32)) as u16
    }
}

impl Hash for PackedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One u64 write instead of the slice hashing `[u32; 2]` would do (length prefix and two writes).
        state.write_u64((u64::from(self.0[0]) << 32) | u64::from(self.0[1]));
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

enum Where {
    Packed(PackedKey),
    Wide((u64, u64)),
}

struct Shard {
    packed: FastMap<PackedKey, u32>,
    wide: FastMap<(u64, u64), u32>,
    /// Milliseconds; stored TATs are relative to it.
    epoch: u64,
    sweep_at: usize,
    /// (rule id, key) -> the give-backs of keys with a recent one.
    given: FastMap<(u64, u64), Ledger>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            packed: FastMap::default(),
            wide: FastMap::default(),
            epoch: 0,
            sweep_at: MIN_SWEEP,
            given: FastMap::default(),
        }
    }

    fn len(&self) -> usize {
        self.packed.len() + self.wide.len()
    }

    fn get(&self, at: &Where) -> Option<u64> {
        let stored = match at {
            Where::Packed(k) => self.packed.get(k),
            Where::Wide(k) => self.wide.get(k),
        };
        stored.map(|&rel| self.epoch + u64::from(rel))
    }

    fn put(&mut self, at: &Where, tat: u64) {
        // Config validation bounds TAT - now to about 30 days and the epoch trails now by at most 2^30 ms.
        let rel = u32::try_from(tat.saturating_sub(self.epoch)).unwrap_or(u32::MAX);
        match at {
            Where::Packed(k) => self.packed.insert(*k, rel),
            Where::Wide(k) => self.wide.insert(*k, rel),
        };
    }

    fn remove(&mut self, at: &Where) {
        match at {
            Where::Packed(k) => self.packed.remove(k),
            Where::Wide(k) => self.wide.remove(k),
        };
    }

    /// Drops entries whose TAT is not after `now` (they mean a full bucket, the same as no entry).
    fn drop_expired(&mut self, now: u64) {
        let live_after = now.saturating_sub(self.epoch);
        self.packed.retain(|_, rel| u64::from(*rel) > live_after);
        self.wide.retain(|_, rel| u64::from(*rel) > live_after);
        self.prune_given(now);
        self.sweep_at = (self.len() * 2).max(MIN_SWEEP);
    }

    /// Moves the epoch to `now`, dropping expired entries and shifting the rest.
    fn rebase(&mut self, now: u64) {
        let shift = now - self.epoch;
        let keep = |rel: &mut u32| {
            if u64::from(*rel) > shift {
                *rel -= shift as u32;
                true
            } else {
                false
            }
        };
        self.packed.retain(|_, rel| keep(rel));
        self.wide.retain(|_, rel| keep(rel));
        self.prune_given(now);
        self.epoch = now;
        self.sweep_at = (self.len() * 2).max(MIN_SWEEP);
    }

    fn prune_given(&mut self, now: u64) {
        self.given.retain(|_, ledger| {
            ledger.prune(now);
            !ledger.entries.is_empty()
        });
    }

    fn maintain(&mut self, now: u64) {
        if now.saturating_sub(self.epoch) >= REBASE_AFTER_MS {
            self.rebase(now);
        } else if self.len() >= self.sweep_at {
            self.drop_expired(now);
        }
    }
}

/// Rule id -> 14-bit slot, so a packed key can name its rule. Slots of rules no longer configured are freed
/// (and their entries purged) by `retain_rules` on reload.
#[derive(Default)]
struct Slots {
    by_rule: HashMap<u64, u16, foldhash::fast::RandomState>,
    free: Vec<u16>,
    next: usize,
}

pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    slots: RwLock<Slots>,
    /// The last admission's sequence number: admitted requests are numbered in the order they took quota.
    seq: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            slots: RwLock::default(),
            seq: AtomicU64::new(0),
        }
    }
}

type Small<T> = smallvec::SmallVec<[T; 8]>;

fn shard_of(check: &Check) -> usize {
    let mixed = if check.key < SPREAD_BELOW { check.key ^ check.rule_id } else { check.key };
    (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard cannot leave a half-written TAT (writes are single inserts).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    fn slot(&self, rule_id: u64) -> Option<u16> {
        if let Some(&slot) = self.slots.read().unwrap_or_else(|p| p.into_inner()).by_rule.get(&rule_id) {
            return Some(slot);
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&slot) = slots.by_rule.get(&rule_id) {
            return Some(slot);
        }
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None if slots.next < SLOTS => {
                slots.next += 1;
                (slots.next - 1) as u16
            }
            None => return None,
        };
        slots.by_rule.insert(rule_id, slot);
        Some(slot)
    }

    fn place(&self, check: &Check) -> Where {
        match self.slot(check.rule_id) {
            Some(slot) if check.key < 1 << KEY_BITS => Where::Packed(PackedKey::new(slot, check.key)),
            _ => Where::Wide((check.rule_id, check.key)),
        }
    }

    /// Judges every check at `now` (ms); when `commit` and all enforcing checks allow, records the request.
    /// Verdicts come back in the order of `checks`.
    pub fn decide(&self, checks: &[Check], now: u64, commit: bool) -> Vec<RuleVerdict> {
        self.decide_taking(checks, now, commit).0
    }

    /// [`MemoryStore::decide`], also returning the request's sequence number when it was recorded (what a
    /// later [`MemoryStore::give_back`] of it needs).
    pub fn decide_taking(&self, checks: &[Check], now: u64, commit: bool) -> (Vec<RuleVerdict>, Option<u64>) {
        // On the stack for policies of up to 8 rules: a decision allocates only its verdicts.
        let places: Small<(Where, usize)> = checks.iter().map(|c| (self.place(c), shard_of(c))).collect();
        let mut order: Small<usize> = places.iter().map(|(_, s)| *s).collect();
        order.sort_unstable();
        order.dedup();
        // Locked in ascending shard order, so concurrent decisions cannot deadlock.
        let mut guards: Small<MutexGuard<'_, Shard>> = order.iter().map(|&i| lock(&self.shards[i])).collect();
        let guard_of: Small<usize> =
            places.iter().map(|(_, s)| order.binary_search(s).expect("every shard is locked")).collect();

        let verdicts: Vec<RuleVerdict> = checks
            .iter()
            .zip(&places)
            .zip(&guard_of)
            .map(|((check, (at, _)), &g)| check.gcra.check(guards[g].get(at), now))
            .collect();
        let allowed = checks.iter().zip(&verdicts).all(|(c, v)| c.shadow || v.allowed);
        let mut seq = None;
        if commit && allowed {
            for guard in guards.iter_mut() {
                guard.maintain(now);
            }
            for (((at, _), &g), verdict) in places.iter().zip(&guard_of).zip(&verdicts) {
                if verdict.allowed {
                    guards[g].put(at, verdict.new_tat);
                }
            }
            // Taken under the locks: on each key, numbers follow the order requests took quota.
            seq = Some(self.seq.fetch_add(1, Ordering::SeqCst) + 1);
        }
        (verdicts, seq)
    }

    /// Each check's stored TAT, live or not (None: no entry). Changes nothing.
    pub fn peek(&self, checks: &[Check]) -> Vec<Option<u64>> {
        checks.iter().map(|c| lock(&self.shards[shard_of(c)]).get(&self.place(c))).collect()
    }

    /// Records TATs decided elsewhere (the redis backend's decisions, kept here as this replica's own record):
    /// each key keeps the later of its TAT and the given one. TATs not after `now` are skipped.
    pub(crate) fn absorb(&self, entries: &[(Check, u64)], now: u64) {
        for (check, tat) in entries.iter().filter(|(_, tat)| *tat > now) {
            let at = self.place(check);
            let mut shard = lock(&self.shards[shard_of(check)]);
            shard.maintain(now);
            if shard.get(&at).is_none_or(|stored| stored < *tat) {
                shard.put(&at, *tat);
            }
        }
    }

    /// Gives back what committed request `seq` took, when its send certainly went nowhere: for each check, the
    /// TAT that request stored (see [`Gcra::give_back`]). Each key is adjusted under its shard's lock, so a
    /// give-back racing other decisions never returns what they consumed.
    pub fn give_back(&self, taken: &[(Check, u64)], seq: u64, now: u64) {
        for (check, taken_tat) in taken {
            let at = self.place(check);
            let mut shard = lock(&self.shards[shard_of(check)]);
            let Some(stored) = shard.get(&at) else { continue };
            let id = (check.rule_id, check.key);
            let moved = shard.given.get(&id).map_or(0, |ledger| ledger.moved(seq, now));
            let (left, refund) = check.gcra.give_back(stored, *taken_tat, moved, now);
            match left {
                Some(left) => shard.put(&at, left),
                None => shard.remove(&at),
            }
            if refund > 0 {
                let at_seq = self.seq.load(Ordering::SeqCst);
                shard.given.entry(id).or_default().record(seq, at_seq, refund, now);
            }
        }
    }

    /// Lowers each check's TAT to at most the given one (None: drop it): this replica's own record follows a
    /// give-back made in Redis.
    pub(crate) fn lower_to(&self, entries: &[(Check, Option<u64>)]) {
        for (check, tat) in entries {
            let at = self.place(check);
            let mut shard = lock(&self.shards[shard_of(check)]);
            match (shard.get(&at), tat) {
                (Some(stored), Some(tat)) if stored > *tat => shard.put(&at, *tat),
                (Some(_), None) => shard.remove(&at),
                _ => {}
            }
        }
    }

    /// The live entries of one of the `SHARDS` shards as (rule id, key, TAT): what the redis backend writes
    /// back into Redis when it returns after an outage.
    pub(crate) fn live_entries(&self, shard: usize, now: u64) -> Vec<(u64, u64, u64)> {
        let rules: HashMap<u16, u64> = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_rule
            .iter()
            .map(|(&id, &slot)| (slot, id))
            .collect();
        let s = lock(&self.shards[shard % SHARDS]);
        let mut out = Vec::new();
        for (key, &rel) in &s.packed {
            let tat = s.epoch + u64::from(rel);
            if let (true, Some(&rule_id)) = (tat > now, rules.get(&key.slot())) {
                let packed = (u64::from(key.0[0]) << 32) | u64::from(key.0[1]);
                out.push((rule_id, packed & ((1 << KEY_BITS) - 1), tat));
            }
        }
        for (&(rule_id, key), &rel) in &s.wide {
            let tat = s.epoch + u64::from(rel);
            if tat > now {
                out.push((rule_id, key, tat));
            }
        }
        out
    }

    /// Entries currently held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hash-table buckets allocated across shards and the bytes they take (entries and control bytes), for
    /// the memory benchmark.
    pub fn footprint(&self) -> (usize, usize) {
        let mut buckets = 0;
        let mut bytes = 0;
        for shard in self.shards.iter() {
            let s = lock(shard);
            for (capacity, entry) in [
                (s.packed.capacity(), std::mem::size_of::<(PackedKey, u32)>()),
                (s.wide.capacity(), std::mem::size_of::<((u64, u64), u32)>()),
            ] {
                if capacity > 0 {
                    // hashbrown: buckets are the next power of two of capacity * 8/7, one control byte each.
                    let b = (capacity * 8 / 7).next_power_of_two();
                    buckets += b;
                    bytes += b * (entry + 1);
                }
            }
        }
        (buckets, bytes)
    }

    /// Drops every expired entry now and gives memory back when the maps have become mostly empty (the
    /// store also drops expired entries by itself as it grows).
    pub fn sweep(&self, now: u64) {
        for shard in 0..SHARDS {
            self.sweep_shard(shard, now);
        }
    }

    /// Sweeps one of the `SHARDS` shards: callers on an async runtime yield between shards, so a sweep of
    /// a million entries never holds a worker thread (or a shard's lock) for long.
    pub(crate) fn sweep_shard(&self, shard: usize, now: u64) {
        let mut s = lock(&self.shards[shard % SHARDS]);
        s.drop_expired(now);
        if s.packed.len() < s.packed.capacity() / 4 {
            s.packed.shrink_to_fit();
        }
        if s.wide.len() < s.wide.capacity() / 4 {
            s.wide.shrink_to_fit();
        }
    }

    /// Forgets every rule not in `live` (after a reload): frees their slots and drops their entries, so
    /// state and slots follow the config in force.
    pub(crate) fn retain_rules(&self, live: &[u64]) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(u64, u16)> =
            slots.by_rule.iter().filter(|(id, _)| !live.contains(id)).map(|(&id, &slot)| (id, slot)).collect();
        if gone.is_empty() {
            return;
        }
        let mut dead = vec![false; SLOTS];
        for &(id, slot) in &gone {
            slots.by_rule.remove(&id);
            dead[usize::from(slot)] = true;
        }
        for shard in self.shards.iter() {
            let mut s = lock(shard);
            s.packed.retain(|k, _| !dead[usize::from(k.slot())]);
            s.wide.retain(|(id, _), _| live.contains(id));
            s.given.retain(|(id, _), _| live.contains(id));
        }
        slots.free.extend(gone.iter().map(|&(_, slot)| slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000;

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
            store.decide(&[check(1, 8_613_800_000_000 + key, 1, 30)], 0, true);
        }
        assert!(store.len() >= 20_000);
        // New traffic after expiry sweeps the old keys as the shards grow.
        for key in 0..20_000 {
            store.decide(&[check(1, 8_613_900_000_000 + key, 1, 30)], 31 * S, true);
        }
        assert!(store.len() <= 20_000 + SHARDS * MIN_SWEEP, "len {}", store.len());
        store.sweep(62 * S);
        assert!(store.is_empty());
        assert_eq!(store.footprint().0, 0, "swept maps give their memory back");
    }

    #[test]
    fn wide_keys_and_packed_keys_do_not_mix() {
        let store = MemoryStore::default();
        let v6 = check(1, (1 << 63) | 0x2001_0db8, 1, 30);
        let v4 = check(1, 0x2001_0db8, 1, 30);
        assert!(store.decide(&[v6], 0, true)[0].allowed);
        assert!(store.decide(&[v4], 0, true)[0].allowed, "a different key is a different bucket");
        assert!(!store.decide(&[v6], 0, true)[0].allowed);
        assert!(!store.decide(&[v4], 0, true)[0].allowed);
    }

    #[test]
    fn state_survives_an_epoch_rebase() {
        let store = MemoryStore::default();
        let daily = check(9, 8_613_800_138_000, 2, 30 * 86_400);
        let start = REBASE_AFTER_MS - 5;
        assert!(store.decide(&[daily], start, true)[0].allowed);
        // This decision rebases the shard; the first request must still count.
        assert!(store.decide(&[daily], start + 10, true)[0].allowed);
        assert!(!store.decide(&[daily], start + 20, true)[0].allowed);
        let later = start + 15 * 86_400 * S;
        assert!(store.decide(&[daily], later, true)[0].allowed, "one refilled after 15 days");
        assert!(!store.decide(&[daily], later, true)[0].allowed);
    }

    #[test]
    fn retain_rules_frees_slots_and_state() {
        let store = MemoryStore::default();
        let kept = check(1, 100, 1, 30);
        let dropped = check(2, 100, 1, 30);
        store.decide(&[kept, dropped], 0, true);
        store.retain_rules(&[1]);
        assert_eq!(store.len(), 1);
        assert!(!store.decide(&[kept], 0, true)[0].allowed, "the kept rule keeps its count");
        let fresh = check(3, 100, 1, 30);
        assert!(store.decide(&[fresh], 0, true)[0].allowed, "a reused slot starts empty");
    }
}
