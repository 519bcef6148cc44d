//! Sends one signed SendSms call. The body is serialized once, signed, and those exact bytes are sent. One
//! pooled hyper client (rustls, keep-alive) serves every tenant; the tenant's `timeout` bounds the send.
//! A plain hyper client rather than a general-purpose one: the request is fully built here (URI parsed
//! once per endpoint, headers written in the order signed), so nothing is re-parsed per send.

use super::api::{self, Envelope, SendSmsRequest};
use super::breaker::Breakers;
use super::classify;
use super::proxy::{self, HttpsClient};
use super::sign::{self, Tc3Input};
use crate::clock::SharedClock;
use crate::config::{Credentials, Endpoint, TencentAccount};
use crate::error::{GatewayError, UpstreamDetail};
use crate::phone::Masked;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The message the pipeline decided to send.
#[derive(Debug, Clone)]
pub struct OutboundSms {
    pub phone_e164: String,
    pub template_id: String,
    pub sign_name: Option<String>,
    pub params: Vec<String>,
    pub region: String,
    pub extras: CallExtras,
}

/// `SendSms` fields only a caller of the SDK front door sets, passed to Tencent as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CallExtras {
    pub extend_code: Option<String>,
    pub session_context: Option<String>,
    pub sender_id: Option<String>,
}

/// A signed request, ready to send (or to show, redacted, in dry-run and `explain`).
#[derive(Clone)]
pub struct PreparedRequest {
    pub url: http::Uri,
    /// Headers in the order sent, `Authorization` included.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl PreparedRequest {
    /// The body for dry-run logs: the phone number masked and the template parameters (the code) hidden.
    /// The secret key never enters a prepared request, so nothing else needs redacting.
    pub fn redacted_body(&self) -> String {
        let mut body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        if let Some(numbers) = body.get_mut("PhoneNumberSet").and_then(|v| v.as_array_mut()) {
            for n in numbers {
                *n = Masked(n.as_str().unwrap_or_default()).to_string().into();
            }
        }
        if let Some(params) = body.get_mut("TemplateParamSet").and_then(|v| v.as_array_mut()) {
            for p in params {
                *p = "***".into();
            }
        }
        body.to_string()
    }
}

/// Tencent's acceptance of one number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    pub serial_no: String,
    pub fee: u32,
    pub request_id: String,
}

/// Cap on how much of an answer we read; SendSms answers for one number are well under 1 KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// First back-off before a retry; doubled per retry, with full jitter, always inside the send's deadline.
const BACKOFF_BASE: Duration = Duration::from_millis(25);

/// Credential errors after which the other key pair (rotation) is tried: nothing was sent.
const CREDENTIAL_ERRORS: &[&str] = &[
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.SignatureFailure",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.InvalidAuthorization",
];

/// Cheap to clone: clones share the connection pools, the endpoint breakers and the clock-skew estimate.
#[derive(Clone)]
pub struct TencentClient {
    /// Direct, built-in roots: the common case.
    http: HttpsClient,
    /// Through a proxy or with extra roots: one client per distinct egress.
    routes: Arc<proxy::Routes>,
    clock: SharedClock,
    breakers: Arc<Breakers>,
    /// Seconds to add to our clock to get Tencent's, learnt from `AuthFailure.SignatureExpire` answers.
    skew: Arc<AtomicI64>,
    telemetry: Telemetry,
}

/// Metrics the client updates itself.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub retries: Family<ReasonLabels, Counter>,
    pub clock_skew: Gauge,
    /// 1 per endpoint whose breaker is open.
    pub breakers_open: Family<super::breaker::EndpointLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// How one exchange failed before Tencent judged the request.
enum Transport {
    /// No connection was made: nothing was sent, safe to retry or fail over.
    Connect(String),
    /// The request may have reached Tencent (reset, truncated answer).
    MaybeSent(String),
}

struct Answer {
    status: http::StatusCode,
    /// Tencent's clock, from the `Date` header.
    date: Option<i64>,
    body: Vec<u8>,
}

impl TencentClient {
    pub fn new(clock: SharedClock, telemetry: Telemetry) -> Self {
        TencentClient {
            http: proxy::https_client(None, None),
            routes: Arc::default(),
            clock,
            breakers: Arc::new(Breakers::observed(telemetry.breakers_open.clone())),
            skew: Arc::default(),
            telemetry,
        }
    }

    /// Serializes and signs `sms` for one endpoint with one key pair at `timestamp`. Pure: no I/O, no clock.
    pub fn prepare(
        account: &TencentAccount,
        credentials: &Credentials,
        endpoint: &Endpoint,
        sms: &OutboundSms,
        timestamp: i64,
    ) -> PreparedRequest {
        TencentClient::prepare_many(account, credentials, endpoint, sms, &[&sms.phone_e164], timestamp)
    }

    /// `sms`'s message to every number of `numbers` in one call (its own `phone_e164` is not used).
    pub fn prepare_many(
        account: &TencentAccount,
        credentials: &Credentials,
        endpoint: &Endpoint,
        sms: &OutboundSms,
        numbers: &[&str],
        timestamp: i64,
    ) -> PreparedRequest {
        let body = serde_json::to_vec(&SendSmsRequest {
            phone_number_set: numbers,
            sms_sdk_app_id: &account.sdk_app_id,
            template_id: &sms.template_id,
            sign_name: sms.sign_name.as_deref(),
            template_param_set: &sms.params,
            extend_code: sms.extras.extend_code.as_deref(),
            session_context: sms.extras.session_context.as_deref(),
            sender_id: sms.extras.sender_id.as_deref(),
        })
        .expect("the request serializes");
        TencentClient::prepare_action(credentials, endpoint, api::ACTION, api::VERSION, &sms.region, body, timestamp)
    }

    /// Signs one call of any SMS action whose body is already serialized: those exact bytes are signed and
    /// sent. Pure: no I/O, no clock.
    pub fn prepare_action(
        credentials: &Credentials,
        endpoint: &Endpoint,
        action: &str,
        version: &str,
        region: &str,
        body: Vec<u8>,
        timestamp: i64,
    ) -> PreparedRequest {
        let signature = sign::sign(
            &credentials.secret_id,
            credentials.secret_key.expose(),
            &Tc3Input {
                service: api::SERVICE,
                host: &endpoint.host,
                content_type: api::CONTENT_TYPE,
                timestamp,
                body: &body,
            },
        );
        let headers = vec![
            ("Host", endpoint.host.clone()),
            ("Content-Type", api::CONTENT_TYPE.to_owned()),
            ("X-TC-Action", action.to_owned()),
            ("X-TC-Version", version.to_owned()),
            ("X-TC-Region", region.to_owned()),
            ("X-TC-Timestamp", timestamp.to_string()),
            ("Authorization", signature.authorization),
        ];
        PreparedRequest { url: endpoint.uri.clone(), headers, body: body.into() }
    }

    /// One call of another action (the SDK front door's passthrough), signed with the account's preferred key
    /// pair, to its first healthy endpoint, within the account's `timeout`; no retry (the action may not be
    /// idempotent). Tencent's status and body, as they came.
    pub async fn forward(
        &self,
        account: &TencentAccount,
        action: &str,
        version: &str,
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, Vec<u8>), GatewayError> {
        let key = account.preferred_credentials.load(Ordering::Relaxed) % account.credentials.len();
        let endpoint = &account.endpoints[self.breakers.pick(account, 0, self.clock.monotonic())];
        let credentials = &account.credentials[key];
        let request = TencentClient::prepare_action(
            credentials,
            endpoint,
            action,
            version,
            &account.region,
            body,
            self.timestamp(),
        );
        match tokio::time::timeout(account.timeout, self.exchange(account, endpoint, request)).await {
            Err(_) => Err(GatewayError::UpstreamTimeout),
            Ok(Err(Transport::Connect(reason))) => {
                self.breakers.failure(endpoint, self.clock.monotonic());
                Err(GatewayError::UpstreamUnavailable { reason, upstream: None })
            }
            Ok(Err(Transport::MaybeSent(reason))) => Err(GatewayError::UpstreamUnavailable { reason, upstream: None }),
            Ok(Ok(answer)) => {
                self.breakers.success(endpoint);
                Ok((answer.status, answer.body))
            }
        }
    }

    /// The request the next attempt would send: preferred key pair, first healthy endpoint, our clock
    /// corrected by the learnt skew. Used by dry run and `explain`.
    pub fn prepare_next(&self, account: &TencentAccount, sms: &OutboundSms) -> PreparedRequest {
        let key = account.preferred_credentials.load(Ordering::Relaxed) % account.credentials.len();
        let endpoint = self.breakers.pick(account, 0, self.clock.monotonic());
        TencentClient::prepare(account, &account.credentials[key], &account.endpoints[endpoint], sms, self.timestamp())
    }

    fn timestamp(&self) -> i64 {
        self.clock.unix_seconds() + self.skew.load(Ordering::Relaxed)
    }

    /// Sends `sms` within the account's deadline, retrying only where no second SMS can result (connect
    /// failures, Tencent's API throttles) unless the tenant opted into retrying maybe-sent failures. Fails over
    /// across endpoints on connect failures, re-signs once on a clock error, and tries the next key pair once
    /// on a credential error. The result is always the last attempt's: never a stale error after a success.
    pub async fn deliver(&self, account: &TencentAccount, sms: &OutboundSms) -> Result<Receipt, GatewayError> {
        let mut entries = self.deliver_many(account, sms, &[&sms.phone_e164]).await?;
        let entry = entries.pop().filter(|_| entries.is_empty());
        let entry = entry.ok_or_else(|| GatewayError::UpstreamUnavailable {
            reason: "answer without exactly one SendStatusSet entry".into(),
            upstream: None,
        })?;
        entry.judge(self.timestamp())
    }

    /// One SendSms call for every number of `numbers` (`sms`'s message; its own number is not used), with the
    /// retries, failover and re-signing of [`TencentClient::deliver`]. The answer is Tencent's entry per
    /// number, each with the call's RequestId, not yet judged; a call whose every entry failed with one code
    /// is that code's error (retried as such: an API throttle on every number sent nothing).
    pub async fn deliver_many(
        &self,
        account: &TencentAccount,
        sms: &OutboundSms,
        numbers: &[&str],
    ) -> Result<Vec<Entry>, GatewayError> {
        let deadline = tokio::time::Instant::now() + account.timeout;
        let mut key = account.preferred_credentials.load(Ordering::Relaxed) % account.credentials.len();
        let mut rotated = false;
        let mut resigned = false;
        let mut attempts = 0;
        let mut endpoint = self.breakers.pick(account, 0, self.clock.monotonic());
        loop {
            attempts += 1;
            let target = &account.endpoints[endpoint];
            let request =
                TencentClient::prepare_many(account, &account.credentials[key], target, sms, numbers, self.timestamp());
            let outcome = match tokio::time::timeout_at(deadline, self.exchange(account, target, request)).await {
                Err(_) => return Err(GatewayError::UpstreamTimeout),
                Ok(outcome) => outcome,
            };
            let (error, reason) = match outcome {
                Err(Transport::Connect(reason)) => {
                    self.breakers.failure(target, self.clock.monotonic());
                    let error = GatewayError::UpstreamUnavailable { reason, upstream: None };
                    match self.breakers.next_closed(account, endpoint + 1, self.clock.monotonic()) {
                        Some(next) => endpoint = next,
                        // Every endpoint is known to be down: this send made its one attempt.
                        None => return Err(error),
                    }
                    (error, "connect")
                }
                Err(Transport::MaybeSent(reason)) => {
                    self.breakers.success(target);
                    let error = GatewayError::UpstreamUnavailable { reason, upstream: None };
                    if !account.retry_maybe_sent {
                        return Err(error);
                    }
                    (error, "maybe_sent")
                }
                Ok(answer) => {
                    self.breakers.success(target);
                    let error = match judge_many(answer.status, &answer.body, self.timestamp()) {
                        Ok(entries) => {
                            if rotated {
                                // The other key pair works: use it first from now on.
                                account.preferred_credentials.store(key, Ordering::Relaxed);
                            }
                            return Ok(entries);
                        }
                        Err(error) => error,
                    };
                    let code = error.upstream().map(|u| u.code.clone()).unwrap_or_default();
                    match classify::classify(&code) {
                        classify::Class::Clock if !resigned => {
                            resigned = true;
                            attempts -= 1;
                            self.learn_skew(answer.date, &code);
                            continue;
                        }
                        _ if CREDENTIAL_ERRORS.contains(&code.as_str())
                            && !rotated
                            && account.credentials.len() > 1 =>
                        {
                            rotated = true;
                            attempts -= 1;
                            key = (key + 1) % account.credentials.len();
                            tracing::warn!(code = %code, "Tencent refused the key pair; trying the other one");
                            continue;
                        }
                        classify::Class::TransientNotSent => (error, "throttled"),
                        classify::Class::TransientMaybeSent if account.retry_maybe_sent => (error, "maybe_sent"),
                        _ => return Err(error),
                    }
                }
            };
            if attempts >= account.max_attempts {
                return Err(error);
            }
            let backoff = BACKOFF_BASE.saturating_mul(1 << (attempts - 1).min(8));
            let pause = backoff.mul_f64(fastrand::f64());
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(error);
            }
            self.telemetry.retries.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
            tokio::time::sleep(pause).await;
        }
    }

    fn learn_skew(&self, tencent_now: Option<i64>, code: &str) {
        let ours = self.clock.unix_seconds();
        let skew = tencent_now.map_or(0, |theirs| theirs - ours);
        self.skew.store(skew, Ordering::Relaxed);
        self.telemetry.clock_skew.set(skew);
        tracing::warn!(
            code,
            skew_seconds = skew,
            "Tencent refused our timestamp: re-signing once; check this host's clock"
        );
    }

    /// The client that reaches `endpoint`: the shared direct one, or the one of its proxy and roots.
    fn client_for(&self, account: &TencentAccount, endpoint: &Endpoint) -> Option<HttpsClient> {
        if endpoint.proxy.is_none() && account.roots.is_none() {
            return None;
        }
        Some(self.routes.client(endpoint.proxy.as_ref(), account.roots.as_ref()))
    }

    async fn exchange(
        &self,
        account: &TencentAccount,
        endpoint: &Endpoint,
        request: PreparedRequest,
    ) -> Result<Answer, Transport> {
        let routed = self.client_for(account, endpoint);
        let http = routed.as_ref().unwrap_or(&self.http);
        let mut builder = http::Request::post(request.url);
        for (name, value) in request.headers {
            // `Host` is written as signed; the client adds one only when the request has none.
            builder = builder.header(name, value);
        }
        if let Some(proxy) = endpoint.proxy.as_ref().filter(|_| endpoint.url.scheme() == "http") {
            // Plain http goes to the proxy itself: the request carries the proxy's credentials (through a
            // CONNECT tunnel, only the CONNECT does).
            if let Some(authorization) = &proxy.authorization {
                builder = builder.header(http::header::PROXY_AUTHORIZATION, authorization.expose());
            }
        }
        let request = builder
            .header(http::header::USER_AGENT, concat!("smsgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(request.body))
            .map_err(|e| Transport::Connect(format!("connect: request could not be built: {e}")))?;
        let response = http.request(request).await.map_err(transport_error)?;
        let status = response.status();
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.timestamp());
        let body = match Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e) if e.is::<LengthLimitError>() => return Err(Transport::MaybeSent("answer too large".into())),
            Err(e) => return Err(Transport::MaybeSent(format!("transport: reading the answer: {}", chain(&*e)))),
        };
        Ok(Answer { status, date, body })
    }
}

/// An error and its sources, `: `-separated. The chain carries no secret: only addresses and protocol errors.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason.push_str(&format!(": {s}"));
        source = s.source();
    }
    reason
}

fn transport_error(e: hyper_util::client::legacy::Error) -> Transport {
    if e.is_connect() {
        Transport::Connect(format!("connect: {}", chain(&e)))
    } else {
        Transport::MaybeSent(format!("transport: {}", chain(&e)))
    }
}

/// One number's entry of an answer, with the call's RequestId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status: super::api::SendStatus,
    pub request_id: String,
}

impl Entry {
    pub fn serial_no(&self) -> &str {
        &self.status.serial_no
    }

    /// Tencent accepted this number (`Code: Ok`): its receipt; else the error its code stands for.
    pub fn judge(&self, now_unix: i64) -> Result<Receipt, GatewayError> {
        if classify::classify(&self.status.code) == classify::Class::Sent {
            return Ok(Receipt {
                serial_no: self.status.serial_no.clone(),
                fee: self.status.fee,
                request_id: self.request_id.clone(),
            });
        }
        let detail = UpstreamDetail {
            code: self.status.code.clone(),
            message: self.status.message.clone(),
            request_id: self.request_id.clone(),
        };
        Err(classify::to_error(detail, now_unix))
    }
}

impl std::ops::Deref for Entry {
    type Target = super::api::SendStatus;
    fn deref(&self) -> &Self::Target {
        &self.status
    }
}

/// Tencent's answer to a call -> its entries, not judged one by one, or the call's error: the error envelope
/// (read whatever the status and Content-Type), a non-Tencent answer, no entries, or every entry failed with
/// the same code.
pub fn judge_many(status: http::StatusCode, body: &[u8], now_unix: i64) -> Result<Vec<Entry>, GatewayError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(_) => {
            return Err(GatewayError::UpstreamUnavailable {
                reason: format!("unreadable answer with HTTP status {status}"),
                upstream: None,
            })
        }
    };
    let response = envelope.response;
    if let Some(error) = response.error {
        let detail = UpstreamDetail { code: error.code, message: error.message, request_id: response.request_id };
        return Err(classify::to_error(detail, now_unix));
    }
    if !status.is_success() {
        return Err(GatewayError::UpstreamUnavailable {
            reason: format!("HTTP status {status} without an error envelope"),
            upstream: None,
        });
    }
    let request_id = response.request_id;
    let entries: Vec<Entry> =
        response.send_status_set.into_iter().map(|status| Entry { status, request_id: request_id.clone() }).collect();
    let Some(first) = entries.first() else {
        return Err(GatewayError::UpstreamUnavailable {
            reason: "answer without SendStatusSet".into(),
            upstream: None,
        });
    };
    let failed_alike =
        classify::classify(&first.code) != classify::Class::Sent && entries.iter().all(|e| e.code == first.code);
    if failed_alike {
        return Err(first.judge(now_unix).expect_err("a failed entry"));
    }
    Ok(entries)
}

/// Tencent's answer for one number -> receipt or error. Every entry is judged, so a partial answer can never
/// read as success.
pub fn judge(status: http::StatusCode, body: &[u8], now_unix: i64) -> Result<Receipt, GatewayError> {
    let entries = judge_many(status, body, now_unix)?;
    let mut receipts = entries.iter().map(|e| e.judge(now_unix));
    let first = receipts.next().expect("judge_many answers at least one entry");
    receipts.try_for_each(|r| r.map(drop))?;
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn judges_success_and_per_number_failure() {
        let ok = br#"{"Response":{"SendStatusSet":[{"SerialNo":"s1","PhoneNumber":"+8613800138000","Fee":1,"Code":"Ok","Message":"send success"}],"RequestId":"r1"}}"#;
        let r = judge(StatusCode::OK, ok, 0).unwrap();
        assert_eq!(r, Receipt { serial_no: "s1".into(), fee: 1, request_id: "r1".into() });

        let limited = br#"{"Response":{"SendStatusSet":[{"SerialNo":"","PhoneNumber":"+8613800138000","Fee":0,"Code":"LimitExceeded.PhoneNumberThirtySecondLimit","Message":"too fast"}],"RequestId":"r2"}}"#;
        let e = judge(StatusCode::OK, limited, 0).unwrap_err();
        assert_eq!(e.code(), "upstream_rate_limited");
        assert_eq!(e.retry_after(), Some(30));
    }

    #[test]
    fn error_envelope_is_read_whatever_the_status() {
        let body =
            br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"bad sig"},"RequestId":"r3"}}"#;
        for status in [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR] {
            let e = judge(status, body, 0).unwrap_err();
            assert_eq!(e.code(), "upstream_rejected");
            assert_eq!(e.upstream().unwrap().code, "AuthFailure.SignatureFailure");
        }
    }

    #[test]
    fn redacted_request_hides_number_code_and_secret() {
        let credentials =
            Credentials { secret_id: "AKIDtest".into(), secret_key: crate::config::Secret::new("very-secret-key") };
        let endpoint = crate::config::parse_endpoint("https://sms.tencentcloudapi.com").unwrap();
        let account = TencentAccount {
            credentials: vec![credentials.clone()],
            sign_name: Some("Demo".into()),
            sdk_app_id: "1400006666".into(),
            region: "ap-guangzhou".into(),
            endpoints: vec![endpoint.clone()],
            timeout: Duration::from_secs(5),
            dry_run: true,
            max_attempts: 1,
            retry_maybe_sent: false,
            international_sign_name: None,
            roots: None,
            preferred_credentials: Default::default(),
        };
        let sms = OutboundSms {
            phone_e164: "+8613800138000".into(),
            template_id: "1110".into(),
            sign_name: Some("Demo".into()),
            params: vec!["654321".into()],
            region: "ap-guangzhou".into(),
            extras: Default::default(),
        };
        let request = TencentClient::prepare(&account, &credentials, &endpoint, &sms, 1700000000);
        let body = request.redacted_body();
        assert!(body.contains("+86138****8000"), "{body}");
        let headers: String = request.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        assert!(headers.contains("X-TC-Region: ap-guangzhou"), "{headers}");
        assert!(headers.contains("Credential=AKIDtest/2023-11-14/sms/tc3_request"), "{headers}");
        for secret in ["654321", "very-secret-key", "13800138000"] {
            assert!(!body.contains(secret) && !headers.contains(secret), "{secret} leaked: {headers}{body}");
        }
    }

    #[test]
    fn html_and_empty_answers_are_unavailable() {
        assert_eq!(judge(StatusCode::BAD_GATEWAY, b"<html>502</html>", 0).unwrap_err().code(), "upstream_unavailable");
        assert_eq!(
            judge(StatusCode::OK, br#"{"Response":{"RequestId":"r"}}"#, 0).unwrap_err().code(),
            "upstream_unavailable"
        );
    }
}
