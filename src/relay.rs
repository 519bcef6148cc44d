//! Outgoing webhooks: delivery receipts and conversions relayed to a tenant's `webhook.url` as JSON, signed
//! the Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256
//! of "id.timestamp.body">`). Never on the request path: each tenant has its own lane (`lanes.rs`): a queue
//! bounded in events and bytes, and `WORKERS` deliveries at once, each retrying failures with back-off (the
//! same id, a fresh timestamp and signature). A full lane drops that tenant's event and counts it; a tenant
//! whose receiver hangs or is down delays only its own events.

use crate::clock::SharedClock;
use crate::config::WebhookTarget;
use crate::lanes::{Lanes, Share};
use crate::net::proxy::{https_client, HttpsClient, WrittenBody};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use std::time::Duration;

/// Events waiting to be delivered, per tenant.
pub(crate) const QUEUE: usize = 1024;
/// Bytes of events waiting to be delivered, per tenant.
const QUEUE_BYTES: usize = 1 << 20;
/// Deliveries in flight at once, per tenant (each may be waiting out a back-off: at most about 65 s).
const WORKERS: usize = 4;
/// Bound on one attempt, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before each retry: five attempts over about 40 s.
const BACKOFF: [Duration; 4] =
    [Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(8), Duration::from_secs(30)];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayLabels {
    pub tenant: String,
    /// ok, retried (an attempt failed and another follows), failed (gave up), dropped (queue full).
    pub result: String,
}

/// The `webhook-signature` value for one attempt: `v1,` and the base64 of HMAC-SHA256(key, "id.ts.body").
pub(crate) fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

struct Event {
    tenant: Arc<str>,
    target: WebhookTarget,
    id: String,
    body: Bytes,
}

pub(crate) struct Relay {
    lanes: Lanes<Event>,
    clock: SharedClock,
    results: Family<RelayLabels, Counter>,
}

fn count(results: &Family<RelayLabels, Counter>, tenant: &str, result: &str) {
    results.get_or_create(&RelayLabels { tenant: tenant.into(), result: result.into() }).inc();
}

impl Relay {
    /// `capacity`: events waiting per tenant.
    pub(crate) fn new(clock: SharedClock, capacity: usize, results: Family<RelayLabels, Counter>) -> Relay {
        let lanes = Lanes::new(Share { jobs: capacity, bytes: QUEUE_BYTES, workers: WORKERS });
        Relay { lanes, clock, results }
    }

    /// Queues `{"type": kind, "timestamp": …, "data": data}` for the tenant's receiver; never waits.
    pub(crate) fn enqueue(&self, tenant: &Arc<str>, target: &WebhookTarget, kind: &str, data: serde_json::Value) {
        let timestamp = chrono::DateTime::from_timestamp_millis(self.clock.unix_millis() as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::json!({"type": kind, "timestamp": timestamp, "data": data}).to_string();
        let event = Event {
            tenant: tenant.clone(),
            target: target.clone(),
            id: format!("msg_{:024x}", fastrand::u128(..) >> 32),
            body: Bytes::from(body),
        };
        let bytes = event.body.len() + event.id.len();
        if !self.lanes.push(tenant, event, bytes) {
            count(&self.results, tenant, "dropped");
        }
    }

    /// Starts the workers on the current runtime (once; later calls do nothing).
    pub(crate) fn start(&self) {
        let (clock, results) = (self.clock.clone(), self.results.clone());
        let http = https_client(None, None);
        self.lanes.start(move |event: Event| {
            let (http, clock, results) = (http.clone(), clock.clone(), results.clone());
            async move {
                let result = deliver(&http, &clock, &results, &event).await;
                count(&results, &event.tenant, result);
            }
        });
    }
}

/// Delivers one event, retrying timeouts, connection failures, 408, 429 and 5xx; the result label.
async fn deliver(
    http: &HttpsClient,
    clock: &SharedClock,
    results: &Family<RelayLabels, Counter>,
    event: &Event,
) -> &'static str {
    let mut pauses = BACKOFF.iter();
    loop {
        let timestamp = clock.unix_seconds();
        let signature = sign(&event.target.key.0, &event.id, timestamp, &event.body);
        let request = http::Request::post(event.target.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("smsgate/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(WrittenBody::new(event.body.clone()).0);
        let Ok(request) = request else { return "failed" };
        let attempt = async {
            let response = http.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Read (and bound) the answer so the connection can be reused.
            let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024).collect().await;
            Ok::<_, String>(status)
        };
        let (retry, reason) = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(status)) if status.is_success() => return "ok",
            Ok(Ok(status)) => {
                let retry = status.is_server_error()
                    || status == http::StatusCode::TOO_MANY_REQUESTS
                    || status == http::StatusCode::REQUEST_TIMEOUT;
                (retry, format!("HTTP status {status}"))
            }
            Ok(Err(reason)) => (true, reason),
            Err(_) => (true, "no answer within 5 s".to_owned()),
        };
        match pauses.next() {
            Some(pause) if retry => {
                count(results, &event.tenant, "retried");
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
            }
            _ => {
                tracing::warn!(tenant = %event.tenant, webhook_id = %event.id, reason = %reason, "webhook not delivered");
                return "failed";
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (its reference libraries' test vector).
    #[test]
    fn signs_as_the_standard_webhooks_specification() {
        let key = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// A full lane drops its own tenant's events only.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let results = Family::<RelayLabels, Counter>::default();
        let relay = Relay::new(crate::clock::ManualClock::new(0), 1, results.clone());
        let target =
            WebhookTarget { url: "http://127.0.0.1:9/".parse().unwrap(), key: crate::config::SigningKey(vec![1; 32]) };
        let tenant: Arc<str> = "acme".into();
        for _ in 0..3 {
            relay.enqueue(&tenant, &target, "sms.converted", serde_json::json!({}));
        }
        let dropped = results.get_or_create(&RelayLabels { tenant: "acme".into(), result: "dropped".into() }).get();
        assert_eq!(dropped, 2);
        relay.enqueue(&"beta".into(), &target, "sms.converted", serde_json::json!({}));
        let dropped = results.get_or_create(&RelayLabels { tenant: "beta".into(), result: "dropped".into() }).get();
        assert_eq!(dropped, 0, "beta's lane is its own");
    }
}
