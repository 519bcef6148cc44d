//! Spend caps: per tenant (and optionally per country), a cap on messages and on Tencent's reported `Fee`
//! per day and per month. A send reserves one message before it is handed to Tencent, so concurrent sends
//! cannot overshoot a message cap; the reservation is released when the send certainly went nowhere, and
//! the fee is added when Tencent reports it. Counters live in Redis when the redis limiter backend is
//! configured and up (one script call checks and reserves atomically, so replicas share one cap), else in
//! this process.
//!
//! Across a Redis outage (`on_error: local`) the ledger is this replica's own record, as the limiter's is:
//! every answer from Redis is mirrored here, so the fallback starts from what Redis had admitted, not from
//! zero; what the fallback admits is written into Redis before Redis is trusted again (each counter becomes
//! the larger of Redis's and the mirror's, plus the local additions), and a counter Redis lost (restarted
//! empty, flushed) is restored from the mirror by the next reservation. One replica therefore sends at most
//! the cap across any outage; R replicas at most R times the cap (each may spend what it had not yet seen the
//! others spend).

use crate::config::{Caps, SpendCaps};
use crate::error::GatewayError;
use crate::policy::redis::{SpendCounter, SpendMerge};
use crate::policy::{RedisError, RedisStore};
use chrono::{Datelike, TimeZone};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counters outlive their period by an hour, then expire: Redis and the mirror hold current periods only.
const AFTER_PERIOD_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Period {
    /// Days since the epoch, in the caps' offset.
    Day(i64),
    /// Year * 12 + month0, in the caps' offset.
    Month(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    tenant: Arc<str>,
    /// None: the tenant's own caps; Some: a country's.
    country: Option<String>,
    period: Period,
}

/// One counter as this replica knows it: what Redis last said plus what was changed here since.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Spent {
    messages: u64,
    fee: u64,
    /// Of `messages` and `fee`: what this process added while Redis was unreachable, not yet in Redis.
    pending_messages: u64,
    pending_fee: u64,
    /// Unix milliseconds after which the counter's period is over (plus an hour).
    expires_ms: u64,
}

/// The counters of every tenant's current periods.
#[derive(Default)]
pub struct SpendLedger {
    spent: Mutex<HashMap<Key, Spent>>,
}

/// One message reserved against the caps; settle it with what happened.
#[derive(Debug)]
pub enum Reservation {
    /// Made in this process (Redis unreachable, or the memory backend).
    Local(Vec<Key>),
    /// Made in Redis (the counters' keys; the mirror follows).
    Shared(Vec<Key>),
}

/// One cap scope and period a send counts against.
struct Slot {
    key: Key,
    message_cap: Option<u64>,
    fee_cap: Option<u64>,
    wait: Duration,
    /// `daily`, `US monthly`...: names the cap in logs.
    name: String,
}

impl Slot {
    fn expires_ms(&self, now_unix: i64) -> u64 {
        (now_unix.max(0) as u64) * 1000 + self.wait.as_millis() as u64 + AFTER_PERIOD_MS
    }
}

fn slots(tenant: &Arc<str>, caps: &SpendCaps, country: &str, now_unix: i64) -> Vec<Slot> {
    let clocks = clocks(now_unix, caps.utc_offset_seconds);
    let scopes: Vec<(Option<String>, &Caps)> = std::iter::once((None, &caps.tenant))
        .chain(caps.countries.get(country).map(|c| (Some(country.to_owned()), c)))
        .collect();
    let mut slots = Vec::new();
    for (country, cap) in scopes {
        let scope = country.as_deref().map_or(String::new(), |c| format!("{c} "));
        for (period, message_cap, fee_cap, wait, name) in [
            (clocks.day, cap.daily, cap.daily_fee, clocks.until_tomorrow, "daily"),
            (clocks.month, cap.monthly, cap.monthly_fee, clocks.until_next_month, "monthly"),
        ] {
            if message_cap.is_none() && fee_cap.is_none() {
                continue;
            }
            let key = Key { tenant: tenant.clone(), country: country.clone(), period };
            slots.push(Slot { key, message_cap, fee_cap, wait, name: format!("{scope}{name}") });
        }
    }
    slots
}

/// How much of one cap is used, as this replica last saw it: Redis's answers mirrored, plus what it counted
/// alone (`smsgate_spend_cap_used_ratio`).
#[derive(Debug, Clone, PartialEq)]
pub struct CapUse {
    /// `all` (the tenant's own caps) or the ISO country code of a country's.
    pub scope: String,
    /// `daily` or `monthly`.
    pub period: &'static str,
    /// `messages` or `fee`.
    pub kind: &'static str,
    /// Used over cap: 1 or more when the cap is reached (a cap of 0 reads 1).
    pub ratio: f64,
}

fn redis_key(key: &Key) -> String {
    let scope = key.country.as_deref().unwrap_or("all");
    let period = match key.period {
        Period::Day(d) => format!("d{d}"),
        Period::Month(m) => format!("m{m}"),
    };
    format!("smsgate:{{{}}}:spend:{scope}:{period}", key.tenant)
}

struct Clocks {
    day: Period,
    month: Period,
    until_tomorrow: Duration,
    until_next_month: Duration,
}

fn clocks(now_unix: i64, offset_seconds: i32) -> Clocks {
    let offset = chrono::FixedOffset::east_opt(offset_seconds).unwrap_or(chrono::FixedOffset::east_opt(0).unwrap());
    let local = offset.timestamp_opt(now_unix, 0).single().unwrap_or_default();
    let local_seconds = now_unix + i64::from(offset_seconds);
    let day = local_seconds.div_euclid(86_400);
    let (year, month0) = (i64::from(local.year()), i64::from(local.month0()));
    let (next_year, next_month) = if month0 == 11 { (year + 1, 1) } else { (year, month0 + 2) };
    let next_month_start = offset
        .with_ymd_and_hms(next_year as i32, next_month as u32, 1, 0, 0, 0)
        .single()
        .map_or(now_unix + 86_400, |d| d.timestamp());
    Clocks {
        day: Period::Day(day),
        month: Period::Month(year * 12 + month0),
        until_tomorrow: Duration::from_secs(((day + 1) * 86_400 - local_seconds) as u64),
        until_next_month: Duration::from_secs((next_month_start - now_unix).max(1) as u64),
    }
}

/// The refusal of a slot at its cap.
fn refusal(slot: &Slot, fee: bool) -> GatewayError {
    let cap = if fee { format!("{}_fee", slot.name) } else { slot.name.clone() };
    GatewayError::SpendCapReached { cap, retry_after: slot.wait }
}

impl SpendLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Spent>> {
        self.spent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves one message for `tenant` to `country` at `now_unix` in this process, or refuses when a cap
    /// is reached. With the redis backend this is the fallback: it counts from what Redis last admitted.
    pub(crate) fn reserve(
        &self,
        tenant: &Arc<str>,
        caps: &SpendCaps,
        country: &str,
        now_unix: i64,
    ) -> Result<Reservation, GatewayError> {
        let slots = slots(tenant, caps, country, now_unix);
        let now_ms = (now_unix.max(0) as u64) * 1000;
        let mut spent = self.lock();
        // Periods that are over are dropped so the ledger stays small.
        spent.retain(|_, s| s.expires_ms > now_ms);
        for slot in &slots {
            let so_far = spent.get(&slot.key).copied().unwrap_or_default();
            if slot.message_cap.is_some_and(|cap| so_far.messages >= cap) {
                return Err(refusal(slot, false));
            }
            if slot.fee_cap.is_some_and(|cap| so_far.fee >= cap) {
                return Err(refusal(slot, true));
            }
        }
        for slot in &slots {
            let entry = spent.entry(slot.key.clone()).or_default();
            entry.messages += 1;
            entry.pending_messages += 1;
            entry.expires_ms = entry.expires_ms.max(slot.expires_ms(now_unix));
        }
        Ok(Reservation::Local(slots.into_iter().map(|s| s.key).collect()))
    }

    /// The use of every cap of `tenant` in the periods current at `now_unix`, for the metrics.
    pub fn usage(&self, tenant: &Arc<str>, caps: &SpendCaps, now_unix: i64) -> Vec<CapUse> {
        let clocks = clocks(now_unix, caps.utc_offset_seconds);
        let spent = self.lock();
        let scopes = std::iter::once((None, &caps.tenant)).chain(caps.countries.iter().map(|(c, cap)| (Some(c), cap)));
        let mut uses = Vec::new();
        for (country, cap) in scopes {
            for (period, name, message_cap, fee_cap) in [
                (clocks.day, "daily", cap.daily, cap.daily_fee),
                (clocks.month, "monthly", cap.monthly, cap.monthly_fee),
            ] {
                let key = Key { tenant: tenant.clone(), country: country.cloned(), period };
                let so_far = spent.get(&key).copied().unwrap_or_default();
                for (kind, cap, used) in [("messages", message_cap, so_far.messages), ("fee", fee_cap, so_far.fee)] {
                    let Some(cap) = cap else { continue };
                    let ratio = if cap == 0 { 1.0 } else { used as f64 / cap as f64 };
                    let scope = country.map_or_else(|| "all".to_owned(), Clone::clone);
                    uses.push(CapUse { scope, period: name, kind, ratio });
                }
            }
        }
        uses
    }

    /// The same in Redis, shared by every replica; the counters Redis returns are mirrored here. The outer
    /// error is Redis failing (the caller falls back to [`SpendLedger::reserve`]).
    pub(crate) async fn reserve_shared(
        &self,
        redis: &RedisStore,
        tenant: &Arc<str>,
        caps: &SpendCaps,
        country: &str,
        now_unix: i64,
    ) -> Result<Result<Reservation, GatewayError>, RedisError> {
        let slots = slots(tenant, caps, country, now_unix);
        let keys: Vec<String> = slots.iter().map(|s| redis_key(&s.key)).collect();
        let counters: Vec<SpendCounter> = {
            let spent = self.lock();
            slots
                .iter()
                .map(|s| {
                    let mirror = spent.get(&s.key).copied().unwrap_or_default();
                    SpendCounter {
                        message_cap: s.message_cap.unwrap_or(0),
                        fee_cap: s.fee_cap.unwrap_or(0),
                        ttl_ms: s.wait.as_millis() as u64 + AFTER_PERIOD_MS,
                        floor: (mirror.messages, mirror.fee),
                    }
                })
                .collect()
        };
        let answer = redis.reserve_spend(&keys, &counters).await?;
        let mut spent = self.lock();
        for (slot, &(messages, fee)) in slots.iter().zip(&answer.counts) {
            let entry = spent.entry(slot.key.clone()).or_default();
            entry.messages = messages + entry.pending_messages;
            entry.fee = fee + entry.pending_fee;
            entry.expires_ms = entry.expires_ms.max(slot.expires_ms(now_unix));
        }
        Ok(match answer.refused {
            None => Ok(Reservation::Shared(slots.into_iter().map(|s| s.key).collect())),
            Some((index, fee)) => Err(refusal(&slots[index], fee)),
        })
    }

    /// The send went nowhere (refused before or by Tencent without sending): give the message back.
    pub async fn release(&self, reservation: Reservation, redis: Option<&RedisStore>) {
        match reservation {
            Reservation::Local(keys) => self.release_local(keys),
            Reservation::Shared(keys) => {
                self.adjust_mirror(&keys, |s| s.messages = s.messages.saturating_sub(1));
                shared_adjust(redis, &keys, "m", -1).await;
            }
        }
    }

    /// Gives back a reservation made in this process ([`SpendLedger::reserve`]).
    pub(crate) fn release_local(&self, keys: Vec<Key>) {
        self.adjust_mirror(&keys, |s| {
            s.messages = s.messages.saturating_sub(1);
            s.pending_messages = s.pending_messages.saturating_sub(1);
        });
    }

    /// The send went out (or may have): keep the message and add Tencent's fee.
    pub async fn settle(&self, reservation: Reservation, fee: u32, redis: Option<&RedisStore>) {
        let fee = u64::from(fee);
        match reservation {
            // Settled after Redis returned (a send in flight across the recovery): the fee goes to Redis now.
            Reservation::Local(keys) if fee > 0 && redis.is_some() => {
                self.adjust_mirror(&keys, |s| s.fee += fee);
                if !shared_adjust(redis, &keys, "f", fee as i64).await {
                    self.adjust_mirror(&keys, |s| s.pending_fee += fee);
                }
            }
            Reservation::Local(keys) => self.adjust_mirror(&keys, |s| {
                s.fee += fee;
                s.pending_fee += fee;
            }),
            Reservation::Shared(keys) if fee > 0 => {
                self.adjust_mirror(&keys, |s| s.fee += fee);
                shared_adjust(redis, &keys, "f", fee as i64).await;
            }
            Reservation::Shared(_) => {}
        }
    }

    fn adjust_mirror(&self, keys: &[Key], change: impl Fn(&mut Spent)) {
        let mut spent = self.lock();
        for key in keys {
            if let Some(s) = spent.get_mut(key) {
                change(s);
            }
        }
    }

    /// Writes this replica's counters into Redis (after an outage, before Redis is trusted again): each
    /// becomes the larger of Redis's count and the mirror's, plus what was added here meanwhile. Returns how
    /// many counters were written.
    pub(crate) async fn write_back(&self, redis: &RedisStore, now_ms: u64) -> Result<usize, RedisError> {
        let snapshot: Vec<(Key, Spent)> = {
            let mut spent = self.lock();
            spent.retain(|_, s| s.expires_ms > now_ms);
            spent.iter().map(|(k, s)| (k.clone(), *s)).collect()
        };
        let mut by_tenant: HashMap<Arc<str>, Vec<(Key, Spent)>> = HashMap::new();
        for (key, s) in snapshot {
            by_tenant.entry(key.tenant.clone()).or_default().push((key, s));
        }
        let mut written = 0;
        for entries in by_tenant.values() {
            let keys: Vec<String> = entries.iter().map(|(k, _)| redis_key(k)).collect();
            let merges: Vec<SpendMerge> = entries
                .iter()
                .map(|(_, s)| SpendMerge {
                    base: (s.messages.saturating_sub(s.pending_messages), s.fee.saturating_sub(s.pending_fee)),
                    pending: (s.pending_messages, s.pending_fee),
                    ttl_ms: s.expires_ms.saturating_sub(now_ms).max(1),
                })
                .collect();
            let after = redis.merge_spend(&keys, &merges).await?;
            let mut spent = self.lock();
            for ((key, written_from), (messages, fee)) in entries.iter().zip(after) {
                if let Some(s) = spent.get_mut(key) {
                    s.pending_messages = s.pending_messages.saturating_sub(written_from.pending_messages);
                    s.pending_fee = s.pending_fee.saturating_sub(written_from.pending_fee);
                    s.messages = messages + s.pending_messages;
                    s.fee = fee + s.pending_fee;
                }
            }
            written += entries.len();
        }
        Ok(written)
    }
}

/// Adds `delta` to `field` of the counters in Redis; whether Redis took it.
async fn shared_adjust(redis: Option<&RedisStore>, keys: &[Key], field: &'static str, delta: i64) -> bool {
    let keys: Vec<String> = keys.iter().map(redis_key).collect();
    let result = match redis {
        Some(redis) => redis.adjust_spend(&keys, field, delta).await,
        None => return false,
    };
    if let Err(e) = &result {
        // The counters stay conservative (a message kept, a fee lost); log it rather than fail the send.
        tracing::warn!(error = %e, field, delta, "spend caps: could not update the shared counters");
    }
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(daily: u64) -> SpendCaps {
        SpendCaps {
            utc_offset_seconds: 8 * 3600,
            tenant: Caps { daily: Some(daily), monthly: Some(100), daily_fee: None, monthly_fee: None },
            countries: HashMap::from([("US".to_owned(), Caps { daily: Some(1), ..Caps::default() })]),
        }
    }

    // 2024-01-31 15:00 UTC = 23:00 on the 31st in China: one hour to both boundaries.
    const LATE: i64 = 1706713200;

    /// A reservation's counters (tenant and country, day and month) go to Redis in one script call: one slot.
    #[test]
    fn one_reservation_keeps_its_keys_in_one_slot() {
        let t: Arc<str> = "acme".into();
        let keys: Vec<String> = slots(&t, &caps(2), "US", LATE).iter().map(|s| redis_key(&s.key)).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(crate::policy::one_slot(&keys), "{keys:?}");
        assert!(keys.iter().all(|k| crate::policy::hash_tag(k.as_bytes()) == b"acme"), "{keys:?}");
    }

    #[tokio::test]
    async fn refuses_at_exactly_the_cap_and_releases_unsent() {
        let ledger = SpendLedger::default();
        let t: Arc<str> = "acme".into();
        let c = caps(2);
        let first = ledger.reserve(&t, &c, "CN", LATE).unwrap();
        let second = ledger.reserve(&t, &c, "CN", LATE).unwrap();
        let refused = ledger.reserve(&t, &c, "CN", LATE).unwrap_err();
        assert_eq!(refused.code(), "spend_cap_reached");
        assert_eq!(refused.retry_after(), Some(3600));
        ledger.release(second, None).await;
        ledger.settle(first, 1, None).await;
        assert!(ledger.reserve(&t, &c, "CN", LATE).is_ok(), "a released message is available again");
        assert!(ledger.reserve(&t, &c, "CN", LATE).is_err());
        // The next day (China time) starts afresh.
        assert!(ledger.reserve(&t, &c, "CN", LATE + 3600).is_ok());
    }

    #[test]
    fn usage_reads_every_cap_of_the_current_periods() {
        let ledger = SpendLedger::default();
        let tenant: Arc<str> = "acme".into();
        let mut caps = caps(4);
        caps.countries.insert("US".to_owned(), Caps { monthly_fee: Some(10), ..Caps::default() });
        ledger.reserve(&tenant, &caps, "US", LATE).unwrap();
        let uses = ledger.usage(&tenant, &caps, LATE);
        let find = |scope: &str, period: &str, kind: &str| {
            uses.iter().find(|u| u.scope == scope && u.period == period && u.kind == kind).map(|u| u.ratio)
        };
        assert_eq!(find("all", "daily", "messages"), Some(0.25));
        assert_eq!(find("all", "monthly", "messages"), Some(0.01));
        assert_eq!(find("US", "monthly", "fee"), Some(0.0));
        assert_eq!(uses.len(), 3, "{uses:?}");
        // An hour later a new day (and month) starts in China time: nothing used yet.
        assert!(ledger.usage(&tenant, &caps, LATE + 3600).iter().all(|u| u.ratio == 0.0));
    }

    #[test]
    fn country_caps_apply_on_top() {
        let ledger = SpendLedger::default();
        let t: Arc<str> = "acme".into();
        let c = caps(10);
        ledger.reserve(&t, &c, "US", LATE).unwrap();
        assert!(
            matches!(ledger.reserve(&t, &c, "US", LATE), Err(GatewayError::SpendCapReached { cap, .. }) if cap == "US daily")
        );
        assert!(ledger.reserve(&t, &c, "CN", LATE).is_ok());
    }

    #[tokio::test]
    async fn fee_caps_count_reported_fees() {
        let ledger = SpendLedger::default();
        let t: Arc<str> = "acme".into();
        let c = SpendCaps {
            utc_offset_seconds: 0,
            tenant: Caps { daily_fee: Some(3), ..Caps::default() },
            countries: HashMap::new(),
        };
        let r = ledger.reserve(&t, &c, "CN", LATE).unwrap();
        ledger.settle(r, 3, None).await;
        assert!(ledger.reserve(&t, &c, "CN", LATE).is_err());
    }

    #[test]
    fn month_boundaries_follow_the_offset() {
        let c = clocks(LATE, 8 * 3600);
        assert_eq!(c.until_next_month, Duration::from_secs(3600));
        let utc = clocks(LATE, 0);
        assert_eq!(utc.until_tomorrow, Duration::from_secs(9 * 3600));
    }
}
