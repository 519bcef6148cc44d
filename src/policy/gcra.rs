//! GCRA arithmetic for one rule, on integer nanoseconds. A rule of `limit` per `per` is a bucket of `limit`
//! that refills continuously at `limit` per `per`: a burst of `limit`, then one every `per / limit`. State is
//! one number, the theoretical arrival time (TAT); a key whose TAT is in the past holds no state at all.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval T = per / limit, in nanoseconds.
    interval: u64,
    /// The window `per`, in nanoseconds: a request is allowed while TAT - now stays within it.
    period: u64,
}

/// The outcome of one rule for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleVerdict {
    pub allowed: bool,
    /// The TAT to store if the whole request is allowed.
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
        let period = per.as_nanos() as u64;
        Gcra { interval: (period / u64::from(limit.max(1))).max(1), period }
    }

    /// Judges one request at `now` against the stored TAT (`None`: no state, a full bucket).
    pub fn check(&self, tat: Option<u64>, now: u64) -> RuleVerdict {
        let tat = tat.unwrap_or(now).max(now);
        let new_tat = tat + self.interval;
        if new_tat - now <= self.period {
            let remaining = (self.period - (new_tat - now)) / self.interval;
            RuleVerdict {
                allowed: true,
                new_tat,
                remaining: remaining.min(u64::from(u32::MAX)) as u32,
                reset: Duration::from_nanos(new_tat - now),
                retry_after: Duration::ZERO,
            }
        } else {
            RuleVerdict {
                allowed: false,
                new_tat: tat,
                remaining: 0,
                reset: Duration::from_nanos(tat - now),
                retry_after: Duration::from_nanos(new_tat - self.period - now),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

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
}
