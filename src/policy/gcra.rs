//! GCRA arithmetic for one rule, on integer milliseconds. A rule of `limit` per `per` is a bucket of `limit`
//! that refills continuously: a burst of `limit`, then one every `per / limit`. State is one number, the
//! theoretical arrival time (TAT); a key whose TAT is not in the future holds no state at all.
//!
//! Both backends run exactly this arithmetic (the Redis Lua script mirrors `check`), on the same millisecond
//! ticks, so they give the same decisions for the same sequence of requests.

use std::time::Duration;

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

    pub fn interval_ms(&self) -> u64 {
        self.interval
    }

    pub fn horizon_ms(&self) -> u64 {
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
