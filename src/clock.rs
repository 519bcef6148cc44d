//! Time, injected: the limiter reads a monotonic clock and the signer a wall clock, so tests advance time
//! instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since an arbitrary origin fixed for the process.
    fn monotonic(&self) -> Duration;
    /// Wall-clock unix time in seconds (Tencent's `X-TC-Timestamp`).
    fn unix_seconds(&self) -> i64;
    /// Wall-clock unix time in milliseconds: the time base the redis limiter backend shares across replicas.
    fn unix_millis(&self) -> u64;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clocks.
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock { origin: Instant::now() })
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn unix_seconds(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    fn unix_millis(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// A clock that moves only when told to; both readings advance together.
pub struct ManualClock {
    elapsed_nanos: AtomicU64,
    unix_start: i64,
}

impl ManualClock {
    pub fn new(unix_start: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock { elapsed_nanos: AtomicU64::new(0), unix_start })
    }

    pub fn advance(&self, by: Duration) {
        self.elapsed_nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::SeqCst))
    }

    fn unix_seconds(&self) -> i64 {
        self.unix_start + self.monotonic().as_secs() as i64
    }

    fn unix_millis(&self) -> u64 {
        self.unix_start as u64 * 1000 + self.monotonic().as_millis() as u64
    }
}
