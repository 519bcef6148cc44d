//! Sends one signed SendSms call. The body is serialized once, signed, and those exact bytes are sent. One
//! pooled hyper client (rustls, keep-alive) serves every tenant; the tenant's `timeout` bounds the send.
//! A plain hyper client rather than a general-purpose one: the request is fully built here (URI parsed
//! once per endpoint, headers written in the order signed), so nothing is re-parsed per send.

use super::api::{self, Envelope, SendSmsRequest};
use super::classify;
use super::sign::{self, Tc3Input};
use crate::clock::SharedClock;
use crate::config::{Credentials, Endpoint, TencentAccount};
use crate::error::{GatewayError, UpstreamDetail};
use crate::net::transport::{Answer, Attempt, Exchange, Step, Transport};
use crate::phone::Masked;
use crate::providers::{Dispatched, OutboundSms, PreparedRequest, Unconfirmed};
use crate::sms::Receipt;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What the client learns about one tenant's account while serving it: which key pair to sign with first
/// (switched when Tencent refuses one pair and accepts the other). Runtime state: it lives in runtime.rs,
/// built by Runtime::build, dropped with it on reload, so a reload starts again from the current pair.
#[derive(Debug, Default)]
pub struct AccountState {
    preferred_credentials: AtomicUsize,
}

impl AccountState {
    /// The index in `account.credentials` of the pair to sign with first.
    fn preferred(&self, account: &TencentAccount) -> usize {
        self.preferred_credentials.load(Ordering::Relaxed) % account.credentials.len()
    }
}

/// A SendSms body for dry-run logs and `explain`: the numbers masked and the template parameters (the code)
/// hidden. The secret key never enters a prepared request, so nothing else needs redacting.
fn redacted_body(body: &[u8]) -> String {
    let mut body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
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

/// The most a SendSms answer can legitimately hold per number: Tencent echoes `SessionContext` (up to 512
/// bytes, which a JSON encoder may write as six bytes each, `\u003c`) beside the entry's other fields (about
/// 300 bytes, messages included): 3.4 KiB at worst, rounded up.
const ANSWER_BYTES_PER_NUMBER: usize = 4 * 1024;
/// An answer's part that does not grow with the numbers (the envelope, `RequestId`, an error's message).
const ANSWER_BYTES_BASE: usize = 16 * 1024;
/// The most a passthrough answer is read to: the read actions answer at most 100 entries of a few fields
/// each (`PullSmsSendStatus`, `PullSmsReplyStatus`, template and sign lists), under 4 KiB each at the same
/// worst case, so 400 KiB; 1 MiB leaves room for Tencent to add fields. Status pulls are handed out once:
/// an answer cut here would lose them, so the bound is generous rather than tight.
pub(crate) const PASSTHROUGH_ANSWER_BYTES: usize = 1024 * 1024;

/// How much of a SendSms answer for `numbers` numbers is read: what Tencent can legitimately return for
/// them, so a real answer is never cut (a cut answer is `maybe sent`, never a retry).
pub(crate) const fn answer_limit(numbers: usize) -> usize {
    ANSWER_BYTES_BASE + numbers * ANSWER_BYTES_PER_NUMBER
}

/// Credential errors after which the other key pair (rotation) is tried: nothing was sent.
const CREDENTIAL_ERRORS: &[&str] = &[
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.SignatureFailure",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.InvalidAuthorization",
];

/// Cheap to clone: clones share the transport (pools, endpoint breakers) and the clock-skew estimate.
#[derive(Clone)]
pub struct TencentClient {
    transport: Transport,
    clock: SharedClock,
    /// Seconds to add to our clock to get Tencent's, learnt from `AuthFailure.SignatureExpire` answers.
    skew: Arc<AtomicI64>,
    clock_skew: Gauge,
}

/// What one SendSms call came to, for all its numbers (an `Err` beside it: nothing was sent).
#[derive(Debug)]
pub enum Call {
    /// Tencent's entry per number, not yet judged one by one.
    Answered(Vec<Entry>),
    /// No usable answer after the request was written: every number may have been sent.
    Unconfirmed(Unconfirmed),
}

impl crate::providers::Provider for TencentClient {
    type Account = TencentAccount;
    type State = AccountState;

    fn prepare(&self, account: &TencentAccount, state: &AccountState, sms: &OutboundSms) -> PreparedRequest {
        self.prepare_next(account, state, sms)
    }

    fn deliver(
        &self,
        account: &TencentAccount,
        state: &AccountState,
        sms: &OutboundSms,
    ) -> impl std::future::Future<Output = Result<Dispatched, GatewayError>> + Send {
        TencentClient::deliver(self, account, state, sms)
    }
}

impl TencentClient {
    pub(crate) fn new(transport: Transport, clock: SharedClock, clock_skew: Gauge) -> Self {
        TencentClient { transport, clock, skew: Arc::default(), clock_skew }
    }

    /// Serializes and signs `sms` for one endpoint with one key pair at `timestamp`. Pure: no I/O, no clock.
    pub(crate) fn prepare(
        account: &TencentAccount,
        credentials: &Credentials,
        endpoint: &Endpoint,
        sms: &OutboundSms,
        timestamp: i64,
    ) -> PreparedRequest {
        TencentClient::prepare_many(account, credentials, endpoint, sms, &[&sms.phone_e164], timestamp)
    }

    /// `sms`'s message to every number of `numbers` in one call (its own `phone_e164` is not used).
    pub(crate) fn prepare_many(
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
    pub(crate) fn prepare_action(
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
        PreparedRequest {
            url: endpoint.uri.clone(),
            headers,
            body: body.into(),
            redact: redacted_body,
            redact_url: PreparedRequest::plain_url,
        }
    }

    /// One call of another action (the SDK front door's passthrough), signed with the account's preferred key
    /// pair, to its first healthy endpoint, within the account's `timeout`; no retry (the action may not be
    /// idempotent). Tencent's status and body, as they came.
    pub(crate) async fn forward(
        &self,
        account: &TencentAccount,
        state: &AccountState,
        action: &str,
        version: &str,
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, Vec<u8>), GatewayError> {
        let key = state.preferred(account);
        let upstream = &account.upstream;
        let endpoint = &upstream.endpoints[self.transport.pick(upstream)];
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
        let deadline = tokio::time::Instant::now() + upstream.timeout;
        let breakers = &self.transport.breakers;
        match self.transport.exchange(upstream, endpoint, request, deadline, PASSTHROUGH_ANSWER_BYTES).await {
            Exchange::NotWritten { timed_out: true, .. } => Err(GatewayError::UpstreamTimeout),
            Exchange::NotWritten { reason, .. } => {
                breakers.failure(endpoint, self.clock.monotonic());
                Err(GatewayError::UpstreamUnavailable { reason, upstream: None })
            }
            Exchange::NoAnswer(reason) => Err(GatewayError::UpstreamUnavailable { reason, upstream: None }),
            Exchange::Answered(answer) => {
                breakers.success(endpoint);
                Ok((answer.status, answer.body))
            }
        }
    }

    /// The request the next attempt would send: preferred key pair, first healthy endpoint, our clock
    /// corrected by the learnt skew. Used by dry run and `explain`.
    pub(crate) fn prepare_next(
        &self,
        account: &TencentAccount,
        state: &AccountState,
        sms: &OutboundSms,
    ) -> PreparedRequest {
        let key = state.preferred(account);
        let endpoint = &account.upstream.endpoints[self.transport.pick(&account.upstream)];
        TencentClient::prepare(account, &account.credentials[key], endpoint, sms, self.timestamp())
    }

    fn timestamp(&self) -> i64 {
        self.clock.unix_seconds() + self.skew.load(Ordering::Relaxed)
    }

    /// Sends `sms` within the account's deadline, retrying only where no second SMS can result (connect
    /// failures, Tencent's API throttles) unless the tenant opted into retrying maybe-sent failures. Fails over
    /// across endpoints on connect failures, re-signs once on a clock error, and tries the next key pair once
    /// on a credential error. The result is the last attempt's (never a stale error after a success), except
    /// that once an attempt may have gone out the send is unconfirmed at worst.
    pub(crate) async fn deliver(
        &self,
        account: &TencentAccount,
        state: &AccountState,
        sms: &OutboundSms,
    ) -> Result<Dispatched, GatewayError> {
        let mut entries = match self.deliver_many(account, state, sms, &[&sms.phone_e164]).await? {
            Call::Answered(entries) => entries,
            Call::Unconfirmed(unconfirmed) => return Ok(Dispatched::Unconfirmed(unconfirmed)),
        };
        match entries.pop().filter(|_| entries.is_empty()) {
            Some(entry) => entry.judge(self.timestamp()),
            // Tencent took the request and answered something else: the number may have been sent.
            None => Ok(Dispatched::Unconfirmed(Unconfirmed {
                reason: "answer without exactly one SendStatusSet entry".into(),
                upstream: None,
            })),
        }
    }

    /// One SendSms call for every number of `numbers` (`sms`'s message; its own number is not used), with the
    /// transport's retries and failover, re-signed once on a clock error and with the next key pair once on a
    /// credential error. The answer is Tencent's entry per number, each with the call's RequestId, not yet
    /// judged, or the call unconfirmed; a call whose every entry failed with one code is that code's error
    /// (retried as such: an API throttle on every number sent nothing). An `Err` means nothing was sent by
    /// any attempt.
    pub(crate) async fn deliver_many(
        &self,
        account: &TencentAccount,
        state: &AccountState,
        sms: &OutboundSms,
        numbers: &[&str],
    ) -> Result<Call, GatewayError> {
        let mut call = SendCall {
            client: self,
            account,
            state,
            sms,
            numbers,
            key: state.preferred(account),
            rotated: false,
            resigned: false,
        };
        self.transport.call(&account.upstream, &mut call).await
    }

    fn learn_skew(&self, tencent_now: Option<i64>, code: &str) {
        let ours = self.clock.unix_seconds();
        let skew = tencent_now.map_or(0, |theirs| theirs - ours);
        self.skew.store(skew, Ordering::Relaxed);
        self.clock_skew.set(skew);
        tracing::warn!(
            code,
            skew_seconds = skew,
            "Tencent refused our timestamp: re-signing once; check this host's clock"
        );
    }
}

/// One SendSms call in the making: which key pair signs it, and whether it was re-signed or rotated already.
struct SendCall<'a> {
    client: &'a TencentClient,
    account: &'a TencentAccount,
    state: &'a AccountState,
    sms: &'a OutboundSms,
    numbers: &'a [&'a str],
    key: usize,
    rotated: bool,
    resigned: bool,
}

impl From<Unconfirmed> for Call {
    fn from(unconfirmed: Unconfirmed) -> Call {
        Call::Unconfirmed(unconfirmed)
    }
}

impl Attempt for SendCall<'_> {
    type Output = Call;

    fn request(&mut self, endpoint: &Endpoint) -> PreparedRequest {
        let credentials = &self.account.credentials[self.key];
        let timestamp = self.client.timestamp();
        TencentClient::prepare_many(self.account, credentials, endpoint, self.sms, self.numbers, timestamp)
    }

    fn judge(&mut self, answer: Answer) -> Step<Call> {
        let error = match judge_many(answer.status, &answer.body, self.client.timestamp()) {
            Ok(Call::Answered(entries)) => {
                if self.rotated {
                    // The other key pair works: use it first from now on.
                    self.state.preferred_credentials.store(self.key, Ordering::Relaxed);
                }
                return Step::Done(Ok(Call::Answered(entries)));
            }
            Ok(Call::Unconfirmed(unconfirmed)) => return Step::MaybeSent(unconfirmed),
            Err(error) => error,
        };
        let code = error.upstream().map(|u| u.code.clone()).unwrap_or_default();
        match classify::classify(&code) {
            classify::Class::Clock if !self.resigned => {
                self.resigned = true;
                self.client.learn_skew(answer.date(), &code);
                Step::Again
            }
            _ if CREDENTIAL_ERRORS.contains(&code.as_str()) && !self.rotated && self.account.credentials.len() > 1 => {
                self.rotated = true;
                self.key = (self.key + 1) % self.account.credentials.len();
                tracing::warn!(code = %code, "Tencent refused the key pair; trying the other one");
                Step::Again
            }
            classify::Class::TransientNotSent => Step::Retry(error, "throttled"),
            _ => Step::Done(Err(error)),
        }
    }

    fn answer_limit(&self) -> usize {
        answer_limit(self.numbers.len())
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

    /// Tencent accepted this number (`Code: Ok`): its receipt; failed inside Tencent (`InternalError*`):
    /// unconfirmed; else the error its code stands for (nothing sent).
    pub(crate) fn judge(&self, now_unix: i64) -> Result<Dispatched, GatewayError> {
        let detail =
            || classify::detail(self.status.code.clone(), self.status.message.clone(), self.request_id.clone());
        match classify::classify(&self.status.code) {
            classify::Class::Sent => Ok(Dispatched::Sent(Receipt {
                serial_no: self.status.serial_no.clone(),
                fee: self.status.fee,
                request_id: self.request_id.clone(),
            })),
            classify::Class::TransientMaybeSent => Ok(Dispatched::Unconfirmed(Unconfirmed {
                reason: format!("Tencent answered {}", classify::label(&self.status.code)),
                upstream: Some(detail()),
            })),
            _ => Err(classify::to_error(detail(), now_unix)),
        }
    }
}

impl std::ops::Deref for Entry {
    type Target = super::api::SendStatus;
    fn deref(&self) -> &Self::Target {
        &self.status
    }
}

/// Tencent's answer to a call -> its entries, not judged one by one; the call unconfirmed when the answer
/// cannot be read or says Tencent failed inside (a non-Tencent answer, no entries, `InternalError*`): the
/// request was received, so its numbers may have been sent; or the call's error (nothing sent): the error
/// envelope (read whatever the status and Content-Type), or every entry failed with the same code.
pub(crate) fn judge_many(status: http::StatusCode, body: &[u8], now_unix: i64) -> Result<Call, GatewayError> {
    let unconfirmed =
        |reason: String, upstream: Option<UpstreamDetail>| Ok(Call::Unconfirmed(Unconfirmed { reason, upstream }));
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(_) => return unconfirmed(format!("unreadable answer with HTTP status {status}"), None),
    };
    let response = envelope.response;
    if let Some(error) = response.error {
        let detail = classify::detail(error.code, error.message, response.request_id);
        if detail.class == classify::Class::TransientMaybeSent {
            return unconfirmed(format!("Tencent answered {}", detail.label), Some(detail));
        }
        return Err(classify::to_error(detail, now_unix));
    }
    if !status.is_success() {
        return unconfirmed(format!("HTTP status {status} without an error envelope"), None);
    }
    let request_id = response.request_id;
    let entries: Vec<Entry> =
        response.send_status_set.into_iter().map(|status| Entry { status, request_id: request_id.clone() }).collect();
    let Some(first) = entries.first() else {
        return unconfirmed("answer without SendStatusSet".into(), None);
    };
    let failed_alike =
        !matches!(classify::classify(&first.code), classify::Class::Sent | classify::Class::TransientMaybeSent)
            && entries.iter().all(|e| e.code == first.code);
    if failed_alike {
        return Err(first.judge(now_unix).expect_err("a failed entry"));
    }
    Ok(Call::Answered(entries))
}

/// Tencent's answer for one number -> what became of it. Every entry is judged, so a partial answer can
/// never read as success.
#[cfg(test)]
pub(crate) fn judge(status: http::StatusCode, body: &[u8], now_unix: i64) -> Result<Dispatched, GatewayError> {
    let entries = match judge_many(status, body, now_unix)? {
        Call::Answered(entries) => entries,
        Call::Unconfirmed(unconfirmed) => return Ok(Dispatched::Unconfirmed(unconfirmed)),
    };
    let mut judged = entries.iter().map(|e| e.judge(now_unix));
    let first = judged.next().expect("judge_many answers at least one entry");
    judged.try_for_each(|r| r.map(drop))?;
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
        assert_eq!(r, Dispatched::Sent(Receipt { serial_no: "s1".into(), fee: 1, request_id: "r1".into() }));

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
            templates: Default::default(),
            international_templates: None,
            international_sign_name: None,
            upstream: crate::config::Upstream {
                endpoints: vec![endpoint.clone()],
                timeout: std::time::Duration::from_secs(5),
                dry_run: true,
                max_attempts: 1,
                retry_maybe_sent: false,
                roots: None,
            },
        };
        let sms = OutboundSms {
            phone_e164: "+8613800138000".into(),
            template_id: "1110".into(),
            sign_name: Some("Demo".into()),
            params: vec!["654321".into()],
            region: "ap-guangzhou".into(),
            extras: Default::default(),
            usage: "SignIn".into(),
            mainland_china: true,
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

    /// Tencent received these requests: an answer it cannot be read from is `maybe sent`, never a failure.
    #[test]
    fn html_empty_and_internal_error_answers_are_unconfirmed() {
        let internal =
            br#"{"Response":{"Error":{"Code":"InternalError.SendAndRecvFail","Message":"m"},"RequestId":"r"}}"#;
        for (status, body) in [
            (StatusCode::BAD_GATEWAY, &b"<html>502</html>"[..]),
            (StatusCode::OK, br#"{"Response":{"RequestId":"r"}}"#),
            (StatusCode::OK, br#"{"Response":{"SendStatusSet":[{"SerialNo":""#),
            (StatusCode::OK, internal),
        ] {
            assert!(
                matches!(judge(status, body, 0), Ok(Dispatched::Unconfirmed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn answer_limit_holds_a_full_batch_echoing_session_context() {
        // 200 entries, each echoing 512 bytes of SessionContext written as `\u003c` (six bytes a byte).
        let entry = format!(
            r#"{{"SerialNo":"2019:{:040}","PhoneNumber":"+8613800138000","Fee":1,"SessionContext":"{}","Code":"Ok","Message":"send success","IsoCode":"CN"}}"#,
            0,
            "\\u003c".repeat(512)
        );
        let body = format!(
            r#"{{"Response":{{"SendStatusSet":[{}],"RequestId":"{}"}}}}"#,
            vec![entry; 200].join(","),
            "r".repeat(64)
        );
        assert!(body.len() <= answer_limit(200), "{} > {}", body.len(), answer_limit(200));
    }
}
