//! GCRA arithmetic for one rule, on integer milliseconds. A rule of `limit` per `per` is a bucket of `limit`
//! that refills continuously: a burst of `limit`, then one every `per / limit`. State is one number, the
//! theoretical arrival time (TAT); a key whose TAT is not in the future holds no state at all.
//!
//! Both backends run exactly this arithmetic (the Redis Lua scripts mirror `check`, `give_back` and the
//! `Ledger`), on the same millisecond ticks, so they give the same decisions for the same sequence of
//! requests.
//!
//! Giving back: a request that certainly sent nothing returns its quota. Its part of a key is the interval
//! ending at the TAT it stored, but give-backs of requests admitted before it move that interval earlier, so
//! each key with a recent give-back keeps a small `Ledger` of them, and each admitted request carries a
//! sequence number that orders it among the others.

use std::time::Duration;

/// How long after its decision a request may give its quota back: the longest send (`tencent.timeout` is at
/// most 120 s) and a margin. The stores keep what a give-back needs for this long.
pub const GIVE_BACK_WINDOW_MS: u64 = 150_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval T = per / limit in whole milliseconds, rounded up so the refill is never faster than
    /// configured (config validation keeps `per / limit` at 1 ms or more).
    interval: u64,
    /// `limit * interval`: a request is allowed while its new TAT stays within this of now. With the rounded
    /// interval this keeps the burst at exactly `limit`.
    horizon: u64,
}

/// The outcome of one rule for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleVerdict {
    pub allowed: bool,
    /// The TAT to store if the whole request is allowed (the stored TAT when denied).
    pub new_tat: u64,
    /// Requests still allowed right after this one (0 when denied).
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until this rule would allow the request (zero when allowed).
    pub retry_after: Duration,
}

impl Gcra {
    pub fn new(limit: u32, per: Duration) -> Gcra {
        let limit = u64::from(limit.max(1));
        let per = (per.as_millis() as u64).max(1);
        let interval = per.div_ceil(limit).max(1);
        Gcra { interval, horizon: interval * limit }
    }

    pub(crate) fn interval_ms(&self) -> u64 {
        self.interval
    }

    pub(crate) fn horizon_ms(&self) -> u64 {
        self.horizon
    }

    /// Judges one request at `now` (ms) against the stored TAT (`None` or a TAT in the past: a full bucket).
    pub fn check(&self, tat: Option<u64>, now: u64) -> RuleVerdict {
        let tat = tat.unwrap_or(now).max(now);
        let new_tat = tat + self.interval;
        if new_tat - now <= self.horizon {
            let remaining = (self.horizon - (new_tat - now)) / self.interval;
            RuleVerdict {
                allowed: true,
                new_tat,
                remaining: remaining.min(u64::from(u32::MAX)) as u32,
                reset: Duration::from_millis(new_tat - now),
                retry_after: Duration::ZERO,
            }
        } else {
            RuleVerdict {
                allowed: false,
                new_tat: tat,
                remaining: 0,
                reset: Duration::from_millis(tat - now),
                retry_after: Duration::from_millis(new_tat - self.horizon - now),
            }
        }
    }
}

impl Gcra {
    /// Gives back what one committed request took, when it certainly sent nothing. `stored` is the key's TAT
    /// now, `taken` the TAT that request stored, `moved` how far give-backs of requests admitted before it
    /// have moved its interval since (`Ledger::moved`).
    ///
    /// The request occupies the interval of one emission ending at `taken - moved`; only the part of it still
    /// ahead of `now` can come back (time has refilled the rest), and it comes off the current TAT, so the
    /// requests admitted after it keep what they consumed. If the key was reset since (its TAT passed and a
    /// later request started afresh), that interval is in the past and nothing comes back. Returns the TAT
    /// to store (None: the bucket is full, drop the key) and the milliseconds given back.
    pub fn give_back(&self, stored: u64, taken: u64, moved: u64, now: u64) -> (Option<u64>, u64) {
        let refund = taken.saturating_sub(moved).saturating_sub(now).min(self.interval).min(stored);
        let left = stored - refund;
        ((left > now).then_some(left), refund)
    }
}

/// One give-back on a key: whose (the request's admission sequence number), when (the sequence counter at
/// the give-back: requests admitted since have numbers above it), how much, and until when it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GivenBack {
    pub seq: u64,
    pub(crate) at_seq: u64,
    pub(crate) refund: u64,
    pub until: u64,
}

/// The give-backs of one key in the last `GIVE_BACK_WINDOW_MS`, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    pub entries: Vec<GivenBack>,
}

impl Ledger {
    /// How far give-backs made after request `seq` was admitted, of requests admitted before it, moved its
    /// interval: each removed an interval ahead of it in the key's queue.
    pub(super) fn moved(&self, seq: u64, now: u64) -> u64 {
        self.entries.iter().filter(|e| e.until > now && e.at_seq >= seq && e.seq < seq).map(|e| e.refund).sum()
    }

    /// Records a give-back of request `seq` made when the counter read `at_seq`, and forgets what no request
    /// that may still give back can need.
    pub(super) fn record(&mut self, seq: u64, at_seq: u64, refund: u64, now: u64) {
        self.prune(now);
        if refund > 0 {
            self.entries.push(GivenBack { seq, at_seq, refund, until: now + GIVE_BACK_WINDOW_MS });
        }
    }

    pub(crate) fn prune(&mut self, now: u64) {
        self.entries.retain(|e| e.until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000;

    #[test]
    fn burst_then_steady_rate() {
        let g = Gcra::new(5, Duration::from_secs(3600));
        let mut tat = None;
        for i in 0..5 {
            let v = g.check(tat, 0);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 4 - i);
            tat = Some(v.new_tat);
        }
        let denied = g.check(tat, 0);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_secs(720));
        assert_eq!(denied.new_tat, tat.unwrap(), "a denial leaves the state as it was");
        assert!(!g.check(tat, 719 * S).allowed);
        assert!(g.check(tat, 720 * S).allowed);
    }

    #[test]
    fn one_per_window() {
        let g = Gcra::new(1, Duration::from_secs(30));
        let v = g.check(None, 0);
        assert!(v.allowed && v.remaining == 0);
        let d = g.check(Some(v.new_tat), 10 * S);
        assert_eq!((d.allowed, d.retry_after), (false, Duration::from_secs(20)));
        assert!(g.check(Some(v.new_tat), 30 * S).allowed);
    }

    #[test]
    fn an_uneven_rate_keeps_its_whole_burst() {
        // 3 per second: the interval rounds up to 334 ms, the burst stays 3.
        let g = Gcra::new(3, Duration::from_secs(1));
        let mut tat = None;
        for _ in 0..3 {
            let v = g.check(tat, 0);
            assert!(v.allowed);
            tat = Some(v.new_tat);
        }
        assert!(!g.check(tat, 0).allowed);
    }

    #[test]
    fn giving_back_returns_exactly_one_request() {
        // 3 per hour: one every 20 minutes.
        let g = Gcra::new(3, Duration::from_secs(3600));
        let (a, b, c) = (g.check(None, 0), g.check(Some(1_200 * S), 0), g.check(Some(2_400 * S), 0));
        assert!(a.allowed && b.allowed && c.allowed && !g.check(Some(c.new_tat), 0).allowed);
        // The second request sent nothing: one slot comes back, the others stay taken.
        let (left, refund) = g.give_back(c.new_tat, b.new_tat, 0, 5 * S);
        let left = left.unwrap();
        assert_eq!(refund, 1_200 * S);
        assert_eq!(left, 2_400 * S);
        let again = g.check(Some(left), 5 * S);
        assert!(again.allowed);
        assert!(!g.check(Some(again.new_tat), 5 * S).allowed, "exactly one came back");
        // Giving back the only request empties the key.
        assert_eq!(g.give_back(a.new_tat, a.new_tat, 0, 0), (None, 1_200 * S));
    }

    #[test]
    fn giving_back_never_frees_what_later_requests_took() {
        let g = Gcra::new(1, Duration::from_secs(30));
        let first = g.check(None, 0);
        // The first request's slot has refilled by itself and a later request started a new one.
        let later = g.check(Some(first.new_tat), 40 * S);
        assert!(later.allowed);
        assert_eq!(g.give_back(later.new_tat, first.new_tat, 0, 41 * S), (Some(later.new_tat), 0));
        // Half of a slot refilled already: only the other half comes back.
        assert_eq!(g.give_back(first.new_tat, first.new_tat, 0, 15 * S), (None, 15 * S));
        let two = Gcra::new(2, Duration::from_secs(60));
        let (x, y) = (two.check(None, 0), two.check(Some(30 * S), 0));
        assert_eq!(two.give_back(y.new_tat, x.new_tat, 0, 15 * S), (Some(45 * S), 15 * S));
        // An earlier give-back moved this request's interval down by 20 s: only what is left of it returns.
        assert_eq!(two.give_back(y.new_tat, y.new_tat, 20 * S, 15 * S), (Some(35 * S), 25 * S));
    }

    proptest! {
        /// Admitted requests minus those given back never exceed the bound, whatever the order of sends,
        /// give-backs and the clock: the bound of `no_span_admits_more_than_the_bucket_bound`, counted over
        /// the requests that were kept.
        #[test]
        fn give_backs_never_let_more_through_than_the_bound(
            limit in 1u32..6,
            per_s in 1u64..60,
            steps in proptest::collection::vec((0u64..3_000, any::<bool>(), 0usize..4), 1..150),
        ) {
            let per_ms = per_s * 1000;
            let g = Gcra::new(limit, Duration::from_millis(per_ms));
            let mut tat: Option<u64> = None;
            let mut now = 0;
            let mut ledger = Ledger::default();
            let mut counter = 0;
            // (admitted at, the TAT it stored, its sequence number); a give-back removes one of them.
            let mut kept: Vec<(u64, u64, u64)> = Vec::new();
            for (gap, send, pick) in steps {
                now += gap;
                if send || kept.is_empty() {
                    let v = g.check(tat, now);
                    if v.allowed {
                        tat = Some(v.new_tat);
                        counter += 1;
                        kept.push((now, v.new_tat, counter));
                    }
                } else {
                    let (_, taken, seq) = kept.remove(pick % kept.len());
                    if let Some(stored) = tat {
                        let (left, refund) = g.give_back(stored, taken, ledger.moved(seq, now), now);
                        tat = left;
                        ledger.record(seq, counter, refund, now);
                    }
                }
                let times: Vec<u64> = kept.iter().map(|(at, _, _)| *at).collect();
                for i in 0..times.len() {
                    for j in i..times.len() {
                        let span = times[j] - times[i];
                        let bound = u64::from(limit) + span * u64::from(limit) / per_ms;
                        prop_assert!((j - i + 1) as u64 <= bound, "{} kept in {span} ms", j - i + 1);
                    }
                }
            }
        }
    }

    proptest! {
        /// While time stands still (a burst of concurrent sends), give-backs are exact in any order: the TAT
        /// holds one interval per request kept, so every request given back can be sent again.
        #[test]
        fn give_backs_in_any_order_return_whole_intervals(
            limit in 1u32..10,
            steps in proptest::collection::vec((any::<bool>(), 0usize..10), 1..100),
        ) {
            let g = Gcra::new(limit, Duration::from_secs(3600));
            let now = 1_000;
            let (mut tat, mut ledger, mut counter) = (None, Ledger::default(), 0);
            let mut kept: Vec<(u64, u64)> = Vec::new();
            for (send, pick) in steps {
                if send || kept.is_empty() {
                    let v = g.check(tat, now);
                    if v.allowed {
                        tat = Some(v.new_tat);
                        counter += 1;
                        kept.push((v.new_tat, counter));
                    }
                } else {
                    let (taken, seq) = kept.remove(pick % kept.len());
                    let (left, refund) = g.give_back(tat.unwrap(), taken, ledger.moved(seq, now), now);
                    prop_assert_eq!(refund, g.interval);
                    tat = left;
                    ledger.record(seq, counter, refund, now);
                }
                prop_assert_eq!(tat.map_or(0, |t| t - now), kept.len() as u64 * g.interval);
            }
        }
    }

    proptest! {
        /// The token-bucket bound: in any span of Δ ms, a rule admits at most `limit + floor(Δ·limit/per)`.
        /// Checked over every pair of admitted requests of a random sequence.
        #[test]
        fn no_span_admits_more_than_the_bucket_bound(
            limit in 1u32..20,
            per_s in 1u64..120,
            gaps in proptest::collection::vec(0u64..5_000, 1..200),
        ) {
            let per_ms = per_s * 1000;
            let g = Gcra::new(limit, Duration::from_millis(per_ms));
            let mut tat = None;
            let mut now = 0;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                let v = g.check(tat, now);
                if v.allowed {
                    tat = Some(v.new_tat);
                    admitted.push(now);
                }
            }
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let span = admitted[j] - admitted[i];
                    let bound = u64::from(limit) + span * u64::from(limit) / per_ms;
                    prop_assert!((j - i + 1) as u64 <= bound, "{} admitted in {span} ms", j - i + 1);
                }
            }
        }
    }
}
