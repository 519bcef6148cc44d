//! `ReportConversion` (API 2021-01-11): tells Tencent which sent codes were used, off the request path. Each
//! tenant has its own lane (`lanes.rs`): a bounded queue and one worker, so a tenant whose endpoint hangs
//! delays only its own reports; a full lane drops that tenant's report and counts it, so a send never waits
//! on it. Transient failures are retried with back-off. Tencent accepts this action only from allow-listed
//! accounts: an `UnauthorizedOperation`-class answer turns reporting off for that tenant (one error line)
//! until the config is reloaded.

use super::{AccountState, TencentClient};
use crate::config::Tenant;
use crate::lanes::{Lanes, Share};
use crate::providers::{Conversions, ReportLabels, States};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const ACTION: &str = "ReportConversion";
/// Conversions waiting to be reported, per tenant.
pub(crate) const QUEUE: usize = 1024;
/// Reports in progress at once, per tenant (in the order they came).
const WORKERS: usize = 1;
/// Attempts per report, the first included, and the pause before each retry.
const BACKOFF: [Duration; 3] = [Duration::from_millis(500), Duration::from_secs(4), Duration::from_secs(30)];

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ReportConversionRequest<'a> {
    pub(crate) sms_sdk_app_id: &'a str,
    pub serial_no: &'a str,
    pub(crate) conversion_time: i64,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: Body,
}

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(rename = "Error")]
    error: Option<Status>,
    #[serde(rename = "ReportConversionStatus")]
    status: Option<Status>,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(rename = "Code", default)]
    code: String,
}

/// What one answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Reported,
    /// Worth another try (no answer, throttled, Tencent's internal error).
    Retry(String),
    /// The account may not use this action: stop reporting for the tenant.
    Unauthorized(String),
    /// Refused for another reason (logged, not retried).
    Failed(String),
}

/// Reads a ReportConversion answer.
pub(crate) fn judge(status: http::StatusCode, body: &[u8]) -> Verdict {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        return Verdict::Retry(format!("unreadable answer with HTTP status {status}"));
    };
    if let Some(error) = envelope.response.error {
        let code = error.code;
        return if code.starts_with("UnauthorizedOperation") || code == "AuthFailure.UnauthorizedOperation" {
            Verdict::Unauthorized(code)
        } else if code.starts_with("RequestLimitExceeded") || code.starts_with("InternalError") {
            Verdict::Retry(code)
        } else {
            Verdict::Failed(code)
        };
    }
    match envelope.response.status {
        Some(s) if s.code.eq_ignore_ascii_case("ok") => Verdict::Reported,
        Some(s) => Verdict::Failed(s.code),
        None => Verdict::Failed("answer without ReportConversionStatus".into()),
    }
}

struct Job {
    tenant: Arc<Tenant>,
    /// The client's state of the tenant's account (the key pair in use), from the runtime the verification
    /// came in under.
    state: Arc<AccountState>,
    serial_no: String,
    conversion_time: i64,
}

/// The tenants' lanes and their workers.
pub(crate) struct Reporter {
    lanes: Lanes<Job>,
    client: TencentClient,
    off: Arc<Mutex<HashSet<Arc<str>>>>,
    results: Family<ReportLabels, Counter>,
}

impl Conversions for Reporter {
    fn enqueue(&self, tenant: &Arc<Tenant>, states: &States, message_id: &str, at_unix: i64) {
        Reporter::enqueue(self, tenant, &states.tencent, message_id, at_unix)
    }

    fn reset(&self) {
        Reporter::reset(self)
    }

    fn start(&self) {
        Reporter::start(self)
    }
}

impl Reporter {
    /// `capacity`: reports waiting per tenant.
    pub(crate) fn new(client: TencentClient, capacity: usize, results: Family<ReportLabels, Counter>) -> Reporter {
        // A job is a SerialNo (Tencent's are short; a longer one is still counted) and a few fixed fields.
        let share = Share { jobs: capacity, bytes: capacity * 256, workers: WORKERS };
        Reporter { lanes: Lanes::new(share), client, off: Arc::default(), results }
    }

    fn count(results: &Family<ReportLabels, Counter>, tenant: &str, result: &str) {
        results.get_or_create(&ReportLabels { tenant: tenant.into(), result: result.into() }).inc();
    }

    /// Queues one converted send; never waits.
    pub(crate) fn enqueue(
        &self,
        tenant: &Arc<Tenant>,
        state: &Arc<AccountState>,
        serial_no: &str,
        conversion_time: i64,
    ) {
        if self.off.lock().unwrap_or_else(|p| p.into_inner()).contains(&tenant.name) {
            Reporter::count(&self.results, &tenant.name, "off");
            return;
        }
        let job =
            Job { tenant: tenant.clone(), state: state.clone(), serial_no: serial_no.to_owned(), conversion_time };
        if !self.lanes.push(&tenant.name, job, 64 + serial_no.len()) {
            Reporter::count(&self.results, &tenant.name, "dropped");
        }
    }

    /// Reporting comes back on for every tenant (after a reload: the account may have been allow-listed).
    pub(crate) fn reset(&self) {
        self.off.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Starts the workers on the current runtime (once; later calls do nothing).
    pub(crate) fn start(&self) {
        let (client, off, results) = (self.client.clone(), self.off.clone(), self.results.clone());
        self.lanes.start(move |job: Job| {
            let (client, off, results) = (client.clone(), off.clone(), results.clone());
            async move {
                let result = report(&client, &off, &job).await;
                Reporter::count(&results, &job.tenant.name, result);
            }
        });
    }
}

/// Reports one conversion, retrying what may succeed later; the result label.
async fn report(client: &TencentClient, off: &Mutex<HashSet<Arc<str>>>, job: &Job) -> &'static str {
    // Only Tencent's sends are reported, and a reload may have taken the tenant's Tencent section away.
    let Some(account) = job.tenant.tencent.as_ref() else { return "off" };
    let body = serde_json::to_vec(&ReportConversionRequest {
        sms_sdk_app_id: &account.sdk_app_id,
        serial_no: &job.serial_no,
        conversion_time: job.conversion_time,
    })
    .expect("the request serializes");
    let mut pauses = BACKOFF.iter();
    loop {
        if off.lock().unwrap_or_else(|p| p.into_inner()).contains(&job.tenant.name) {
            return "off";
        }
        let verdict = match client.forward(account, &job.state, ACTION, super::api::VERSION, body.clone()).await {
            Ok((status, answer)) => judge(status, &answer),
            Err(e) => Verdict::Retry(e.to_string()),
        };
        match verdict {
            Verdict::Reported => return "ok",
            Verdict::Unauthorized(code) => {
                if off.lock().unwrap_or_else(|p| p.into_inner()).insert(job.tenant.name.clone()) {
                    tracing::error!(
                        tenant = %job.tenant.name,
                        code = %code,
                        "ReportConversion refused: reporting conversions to Tencent is off for this tenant until a \
                         reload (Tencent opens this API to allow-listed accounts only)"
                    );
                }
                return "off";
            }
            Verdict::Failed(code) => {
                tracing::warn!(tenant = %job.tenant.name, code = %code, "ReportConversion refused");
                return "failed";
            }
            Verdict::Retry(reason) => match pauses.next() {
                Some(pause) => {
                    let jitter = pause.mul_f64(0.5 + fastrand::f64() / 2.0);
                    tokio::time::sleep(jitter).await;
                }
                None => {
                    tracing::warn!(tenant = %job.tenant.name, reason = %reason, "ReportConversion failed, giving up");
                    return "failed";
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn request_field_names_match_tencent() {
        let body = serde_json::to_string(&ReportConversionRequest {
            sms_sdk_app_id: "1400006666",
            serial_no: "2019:0",
            conversion_time: 1704164645,
        })
        .unwrap();
        assert_eq!(body, r#"{"SmsSdkAppId":"1400006666","SerialNo":"2019:0","ConversionTime":1704164645}"#);
    }

    #[test]
    fn answers() {
        let ok = br#"{"Response":{"ReportConversionStatus":{"Code":"OK","Message":"success"},"RequestId":"r"}}"#;
        assert_eq!(judge(StatusCode::OK, ok), Verdict::Reported);
        let denied = br#"{"Response":{"Error":{"Code":"UnauthorizedOperation.SmsSdkAppIdVerifyFail","Message":"x"},"RequestId":"r"}}"#;
        assert!(matches!(judge(StatusCode::OK, denied), Verdict::Unauthorized(_)));
        let throttled = br#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"x"},"RequestId":"r"}}"#;
        assert!(matches!(judge(StatusCode::OK, throttled), Verdict::Retry(_)));
        let bad = br#"{"Response":{"Error":{"Code":"InvalidParameterValue.SerialNo","Message":"x"},"RequestId":"r"}}"#;
        assert!(matches!(judge(StatusCode::OK, bad), Verdict::Failed(_)));
        assert!(matches!(judge(StatusCode::BAD_GATEWAY, b"<html>"), Verdict::Retry(_)));
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let results = Family::<ReportLabels, Counter>::default();
        let reporter = Reporter::new(
            crate::providers::Providers::new(crate::clock::SystemClock::shared(), Default::default()).tencent,
            1,
            results.clone(),
        );
        let yaml = r#"
tenants:
  acme:
    tokens: ["token-for-acme-00001"]
    conversion: {}
    tencent: { accessKeyId: a, accessKeySecret: b, sdkAppId: "1", region: ap-guangzhou, report_conversion: true,
               templates: [{ usageType: Generic, templateCode: "1" }] }
"#;
        let config =
            crate::Config::from_yaml(yaml, std::path::Path::new("t.yaml"), &std::collections::HashMap::new()).unwrap();
        let tenant = config.tenant("acme").unwrap();
        // No worker started: the first waits in the queue, the next ones find it full.
        for _ in 0..3 {
            reporter.enqueue(tenant, &Arc::default(), "2019:0", 0);
        }
        let dropped = results.get_or_create(&ReportLabels { tenant: "acme".into(), result: "dropped".into() }).get();
        assert_eq!(dropped, 2);
    }
}
