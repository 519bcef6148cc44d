//! Per-endpoint circuit breakers: after a run of connect failures an endpoint is skipped for a cool-down,
//! so a dead region does not cost every send a connect time-out. When every endpoint is open the primary is
//! tried anyway: a send that might work beats one refused outright.

use crate::config::{Endpoint, TencentAccount};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive connect failures that open a breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open breaker skips its endpoint before one trial send.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

#[derive(Default, Clone, Copy)]
struct State {
    failures: u32,
    /// Monotonic time until which the endpoint is skipped.
    open_until: Option<Duration>,
}

#[derive(Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    fn is_open(&self, endpoint: &Endpoint, now: Duration) -> bool {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(endpoint.url.as_str()).and_then(|s| s.open_until).is_some_and(|until| now < until)
    }

    /// The first endpoint at or after `from` (wrapping) whose breaker is closed; the primary if all are open.
    pub fn pick(&self, account: &TencentAccount, from: usize, now: Duration) -> usize {
        let n = account.endpoints.len();
        (0..n).map(|i| (from + i) % n).find(|&i| !self.is_open(&account.endpoints[i], now)).unwrap_or(0)
    }

    pub fn failure(&self, endpoint: &Endpoint, now: Duration) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(endpoint.url.as_str().to_owned()).or_default();
        state.failures += 1;
        if state.failures >= FAILURES_TO_OPEN {
            state.open_until = Some(now + COOL_DOWN);
            tracing::warn!(endpoint = %endpoint.url, failures = state.failures, "endpoint unreachable: skipping it for a while");
        }
    }

    pub fn success(&self, endpoint: &Endpoint) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.remove(endpoint.url.as_str());
    }
}
