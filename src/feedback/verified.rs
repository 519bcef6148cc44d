//! Numbers with a verification history, per tenant, in this process: a number that verified a code smsgate
//! sent it within `HISTORY_MS` passes a blocked protection key (Twilio's Safe List, earned rather than
//! listed), for at most `ALLOWANCE` sends without a new verification in between, so an attacker who owns
//! one verified number cannot pump it through the block. Numbers are kept as the feedback loop's keyed
//! hash. Bounded per tenant (`PER_TENANT`): a full tenant forgets its older half, never another tenant's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a verification keeps a number exempt.
pub(crate) const HISTORY_MS: u64 = 30 * 86_400_000;
/// Sends a number may receive through a block since its last verification.
pub(crate) const ALLOWANCE: u8 = 2;
/// Numbers remembered per tenant: about 20 MB at most (16 bytes an entry with the table's slack). A tenant
/// whose verified users outnumber it forgets its older half, and they pass a block again once they verify.
pub(crate) const PER_TENANT: usize = 1_000_000;

/// 8 bytes with its key's 8: the verification time in unix seconds and the sends let through since.
#[derive(Clone, Copy)]
struct Entry {
    verified_s: u32,
    /// Sends let through a block since the last verification.
    spent: u8,
}

impl Entry {
    fn verified_ms(&self) -> u64 {
        u64::from(self.verified_s) * 1000
    }

    /// The verification is recent enough (within `HISTORY_MS`) to count at `now`.
    fn current(&self, now: u64) -> bool {
        self.verified_ms().saturating_add(HISTORY_MS) >= now
    }
}

type Numbers = HashMap<u64, Entry, foldhash::fast::RandomState>;

#[derive(Default)]
pub(crate) struct VerifiedNumbers {
    tenants: Mutex<HashMap<Arc<str>, Numbers>>,
}

impl VerifiedNumbers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Numbers>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A verification of a send to `number` (hashed) at `now`: its allowance is whole again.
    pub(crate) fn verified(&self, tenant: &Arc<str>, number: u64, now: u64) {
        let mut tenants = self.lock();
        let numbers = tenants.entry(tenant.clone()).or_default();
        if numbers.len() >= PER_TENANT && !numbers.contains_key(&number) {
            forget_older_half(numbers);
        }
        numbers.insert(number, Entry { verified_s: (now / 1000).min(u64::from(u32::MAX)) as u32, spent: 0 });
    }

    /// Whether `number` may pass a blocked key now and the key lets it (`key_allows`, asked only for a
    /// number with its allowance left); when it passes, one send of its allowance is spent.
    pub(crate) fn pass(&self, tenant: &str, number: u64, now: u64, key_allows: impl FnOnce() -> bool) -> bool {
        let mut tenants = self.lock();
        let Some(entry) = tenants.get_mut(tenant).and_then(|n| n.get_mut(&number)) else { return false };
        if entry.spent >= ALLOWANCE || !entry.current(now) || !key_allows() {
            return false;
        }
        entry.spent += 1;
        true
    }

    /// Whether `number` verified a code within `HISTORY_MS` (nothing is spent).
    pub(crate) fn has_history(&self, tenant: &str, number: u64, now: u64) -> bool {
        let tenants = self.lock();
        let entry = tenants.get(tenant).and_then(|n| n.get(&number));
        entry.is_some_and(|e| e.current(now))
    }

    /// Drops histories older than `HISTORY_MS` and tenants no longer configured.
    pub(crate) fn sweep(&self, live: &[&str], now: u64) {
        let mut tenants = self.lock();
        tenants.retain(|name, numbers| {
            numbers.retain(|_, e| e.current(now));
            live.contains(&&**name) && !numbers.is_empty()
        });
    }

    /// Numbers remembered for a tenant.
    #[cfg(test)]
    pub(crate) fn len(&self, tenant: &str) -> usize {
        self.lock().get(tenant).map_or(0, HashMap::len)
    }
}

fn forget_older_half(numbers: &mut Numbers) {
    let mut times: Vec<u32> = numbers.values().map(|e| e.verified_s).collect();
    let middle = times.len() / 2;
    let (_, &mut cut, _) = times.select_nth_unstable(middle);
    numbers.retain(|_, e| e.verified_s > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowance_is_spent_and_renewed_by_a_verification() {
        let v = VerifiedNumbers::default();
        let t: Arc<str> = "t".into();
        let yes = || true;
        assert!(!v.pass("t", 1, 0, yes), "no history, no pass");
        v.verified(&t, 1, 0);
        assert!(!v.pass("t", 1, 1, || false), "the key's exemptions are closed");
        assert!(v.pass("t", 1, 1, yes) && v.pass("t", 1, 2, yes), "a refusal by the key spent nothing");
        assert!(!v.pass("t", 1, 3, yes), "the allowance is spent");
        v.verified(&t, 1, 4);
        assert!(v.pass("t", 1, 5, yes));
        assert!(!v.pass("u", 1, 5, yes), "another tenant's history is not this one's");
        assert!(!v.pass("t", 1, 4 + HISTORY_MS + 1, yes), "too old");
        // A history is looked up without spending anything, the same 30 days.
        assert!(v.has_history("t", 1, 6) && v.has_history("t", 1, 6));
        assert!(!v.has_history("u", 1, 6) && !v.has_history("t", 2, 6));
        assert!(!v.has_history("t", 1, 4 + HISTORY_MS + 1));
    }

    #[test]
    fn a_full_tenant_forgets_its_own_older_half() {
        let v = VerifiedNumbers::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        v.verified(&b, 7, 0);
        for n in 0..(PER_TENANT as u64 + 10) {
            v.verified(&a, n, n * 1000);
        }
        assert!(v.len("a") <= PER_TENANT && v.len("a") >= PER_TENANT / 2, "{}", v.len("a"));
        assert_eq!(v.len("b"), 1);
        assert!(v.pass("a", PER_TENANT as u64 + 9, 0, || true));
    }
}
