//! Caps the log lines a flood of denials writes: per tenant, at most `PER_SECOND` `rate_limited` lines in
//! each second of the injected clock. The rest are still counted in metrics; the next line written for the
//! tenant says how many were left out (`suppressed`), so the log stays a faithful count of the denials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Denial lines per tenant per second. An SMS-pumping flood runs at thousands of requests a second; a line
/// for each would cost more than the denial itself and fill the disk.
pub(crate) const PER_SECOND: u32 = 20;

#[derive(Default)]
pub(crate) struct DenialLog {
    tenants: Mutex<HashMap<Arc<str>, Window, foldhash::fast::RandomState>>,
}

#[derive(Default)]
struct Window {
    second: u64,
    written: u32,
    suppressed: u64,
}

impl DenialLog {
    /// Whether a denial for `tenant` at `now` (monotonic) gets its line: `Some(n)` with the number of
    /// denials left out since the tenant's previous line, or `None` to leave this one out.
    pub(super) fn admit(&self, tenant: &Arc<str>, now: Duration) -> Option<u64> {
        let second = now.as_secs();
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let window = match tenants.get_mut(tenant) {
            Some(window) => window,
            None => tenants.entry(tenant.clone()).or_default(),
        };
        if window.second != second {
            window.second = second;
            window.written = 0;
        }
        if window.written >= PER_SECOND {
            window.suppressed += 1;
            return None;
        }
        window.written += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_a_few_lines_per_second_and_counts_the_rest() {
        let log = DenialLog::default();
        let (acme, beta): (Arc<str>, Arc<str>) = ("acme".into(), "beta".into());
        let t = Duration::from_millis(5_000);
        let admitted: Vec<_> = (0..50).map(|_| log.admit(&acme, t)).collect();
        assert!(admitted[..PER_SECOND as usize].iter().all(|a| *a == Some(0)));
        assert!(admitted[PER_SECOND as usize..].iter().all(Option::is_none));
        // Another tenant has its own budget.
        assert_eq!(log.admit(&beta, t), Some(0));
        // The next second's first line reports what the last one left out.
        assert_eq!(log.admit(&acme, t + Duration::from_millis(999)), None);
        assert_eq!(log.admit(&acme, t + Duration::from_secs(1)), Some(31));
        assert_eq!(log.admit(&acme, t + Duration::from_secs(1)), Some(0));
    }
}
