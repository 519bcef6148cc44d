//! Per-endpoint circuit breakers, for any provider's endpoints, one per way to an endpoint (directly, or
//! through one proxy: `Endpoint::way`): after a run of connect failures an endpoint is skipped for a cool-down,
//! so a dead region does not cost every send a connect time-out. When every endpoint is open the primary is
//! tried anyway, once per send and without retries: a send that might work beats one refused outright. A
//! breaker logs when it opens and when its endpoint answers again, not at every failure.

use crate::config::Endpoint;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive connect failures that open a breaker.
pub(crate) const FAILURES_TO_OPEN: u32 = 3;
/// How long an open breaker skips its endpoint before one trial send.
pub(crate) const COOL_DOWN: Duration = Duration::from_secs(30);

#[derive(Default, Clone, Copy)]
struct State {
    failures: u32,
    /// Monotonic time until which the endpoint is skipped.
    open_until: Option<Duration>,
}

/// `smsgate_upstream_breaker_open{endpoint}`: 1 while the endpoint's breaker is open (from the run of
/// failures that opens it to the answer that closes it). The endpoint is a configured scheme and host, with
/// ` via <proxy>` when reached through a proxy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Default)]
pub(crate) struct Breakers {
    states: Mutex<HashMap<String, State>>,
    open: Family<EndpointLabels, Gauge>,
}

impl Breakers {
    /// Breakers that keep `open` up to date.
    pub(crate) fn observed(open: Family<EndpointLabels, Gauge>) -> Breakers {
        Breakers { states: Mutex::default(), open }
    }

    fn set_open(&self, endpoint: &Endpoint, open: bool) {
        self.open.get_or_create(&EndpointLabels { endpoint: endpoint.way.clone() }).set(i64::from(open));
    }

    fn is_open(&self, endpoint: &Endpoint, now: Duration) -> bool {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(endpoint.way.as_str()).and_then(|s| s.open_until).is_some_and(|until| now < until)
    }

    /// The first endpoint at or after `from` (wrapping) whose breaker is closed; the primary if all are open.
    pub(crate) fn pick(&self, endpoints: &[Endpoint], from: usize, now: Duration) -> usize {
        self.next_closed(endpoints, from, now).unwrap_or(0)
    }

    /// The first endpoint at or after `from` (wrapping) whose breaker is closed; None when all are open (a
    /// retry would only hit an endpoint known to be down).
    pub(crate) fn next_closed(&self, endpoints: &[Endpoint], from: usize, now: Duration) -> Option<usize> {
        let n = endpoints.len();
        (0..n).map(|i| (from + i) % n).find(|&i| !self.is_open(&endpoints[i], now))
    }

    pub(crate) fn failure(&self, endpoint: &Endpoint, now: Duration) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(endpoint.way.clone()).or_default();
        state.failures += 1;
        if state.failures >= FAILURES_TO_OPEN {
            let was_open = state.open_until.is_some();
            state.open_until = Some(now + COOL_DOWN);
            if !was_open {
                self.set_open(endpoint, true);
                tracing::warn!(endpoint = %endpoint.way, failures = state.failures, cool_down_s = COOL_DOWN.as_secs(),
                    "endpoint unreachable: skipping it while other endpoints answer");
            }
        }
    }

    pub(crate) fn success(&self, endpoint: &Endpoint) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.remove(endpoint.way.as_str()) {
            if state.open_until.is_some() {
                self.set_open(endpoint, false);
                tracing::info!(endpoint = %endpoint.way, "endpoint answers again");
            }
        }
    }
}
