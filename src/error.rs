//! Every way a request can fail, mapped in one place to an HTTP status and a stable error code. The
//! matches have no catch-all arm: a new variant cannot silently become a 500.

use http::StatusCode;
use std::borrow::Cow;
use std::time::Duration;

/// What Tencent said when it refused a send: its code and RequestId go to the caller under `upstream`;
/// its message only to the log (it is operator detail, such as a credentials error, and Logto shows the
/// body to the end user).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamDetail {
    pub code: String,
    /// What the code means, set where the answer was read.
    #[serde(skip_serializing)]
    pub class: UpstreamClass,
    /// The code as a bounded label for metrics and logs (a closed set per provider).
    #[serde(skip_serializing)]
    pub label: &'static str,
    #[serde(skip_serializing)]
    pub message: String,
    pub request_id: String,
}

/// What a provider's answer means for the gateway, decided by the provider where the answer is read (its
/// code table) and carried in [`UpstreamDetail`], so no consumer reads a provider's codes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamClass {
    /// Accepted for delivery.
    Sent,
    /// Refused before sending (API throttles): safe to retry.
    TransientNotSent,
    /// The provider failed internally: the SMS may have gone out.
    TransientMaybeSent,
    /// The request's timestamp is too far from the provider's clock.
    Clock,
    /// The operator's account, signature, template or credentials are wrong.
    OperatorConfig,
    /// The number or content was refused.
    CallerInput,
    /// The provider's per-number frequency limits.
    RecipientThrottle,
    /// The account's daily quotas.
    AccountQuota,
    /// A code this table does not know.
    Unknown,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// Malformed JSON, a missing or wrong-typed field. The text says which field, never its value.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid phone number")]
    InvalidPhone { upstream: Option<UpstreamDetail> },
    #[error("missing or unknown token")]
    Unauthorized,
    /// A signed request (Logto webhook, Supabase hook, the Tencent-compatible API) whose signature is missing, does not
    /// verify or is too old; the text says which, for the log.
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    #[error("country blocked")]
    CountryBlocked,
    /// The number is of a type the tenant does not send to (premium rate, toll free, satellite...).
    #[error("number type {kind} blocked")]
    NumberTypeBlocked { kind: crate::phone::NumberType },
    /// The Lua hook refused; its message is shown to the caller.
    #[error("rejected by policy: {0}")]
    Rejected(String),
    #[error("route not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("payload too large")]
    PayloadTooLarge,
    /// The body did not arrive whole within `server.body_timeout`.
    #[error("request body timed out")]
    RequestTimeout,
    /// Every body-reading slot of the tenant is taken (`server.max_body_readers`).
    #[error("too many bodies in reading")]
    ServerBusy,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("no template for usage {usage}")]
    NoTemplate { usage: String },
    #[error("rate limited by rule {rule}")]
    RateLimited { rule: String, retry_after: Duration },
    /// A tenant's daily or monthly spend cap is used up; `cap` names it for the log.
    #[error("spend cap {cap} reached")]
    SpendCapReached { cap: String, retry_after: Duration },
    #[error("upstream rate limited")]
    UpstreamRateLimited { retry_after: Duration, upstream: UpstreamDetail },
    /// The hook failed or ran over budget; the text is for the log only.
    #[error("script error: {0}")]
    ScriptError(String),
    /// The tenant's share of the hook threads stayed taken: its hook call could not start in time.
    #[error("script busy")]
    ScriptBusy,
    /// A bug; the text is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("upstream rejected")]
    UpstreamRejected(UpstreamDetail),
    /// Nothing was sent: Tencent could not be reached (no connection, or none before the request was
    /// written) or throttled its API. A send that may have gone out is never this error but `maybe_sent`
    /// (`tencent::client::Dispatched`). `reason` is for the log only.
    #[error("upstream unavailable: {reason}")]
    UpstreamUnavailable { reason: String, upstream: Option<UpstreamDetail> },
    #[error("limiter unavailable")]
    LimiterUnavailable,
    /// The send's deadline passed before its request was written: nothing was sent.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// A protection rule blocked the number's country or prefix: its sends convert too rarely. `rule`
    /// names it for the log.
    #[error("suspected SMS pumping (protection rule {rule})")]
    SuspectedPumping { rule: String },
    /// A verification report for a number with no send within the conversion window.
    #[error("no send to this number within the conversion window")]
    NoRecentSend,
}

impl GatewayError {
    /// Whether the rate-limit quota a send that certainly went nowhere took comes back: not when the number or
    /// content the caller chose was refused (or the provider's own per-number limits), so refused numbers cannot
    /// buy unlimited calls to the provider. The provider unreachable, throttling its API, or refusing the
    /// operator's account, template or quota is no reason to lock the user out.
    pub(crate) fn quota_comes_back(&self) -> bool {
        match self.upstream() {
            None => true,
            Some(u) => matches!(
                u.class,
                UpstreamClass::TransientNotSent
                    | UpstreamClass::Clock
                    | UpstreamClass::OperatorConfig
                    | UpstreamClass::AccountQuota
            ),
        }
    }

    /// Whether the next provider of a route may take a send this error refused: nothing was sent, and the
    /// cause is the provider's as a whole (unreachable before the request was written, the deadline passed
    /// before it was, its API throttling the account, its refusal of the operator's account, quota or clock),
    /// never the number or the text (an invalid number, that number's limit at the provider).
    pub(crate) fn fails_over(&self) -> bool {
        match self {
            GatewayError::UpstreamTimeout | GatewayError::UpstreamUnavailable { upstream: None, .. } => true,
            GatewayError::UpstreamUnavailable { upstream: Some(u), .. } => u.class == UpstreamClass::TransientNotSent,
            GatewayError::UpstreamRejected(u) => {
                matches!(u.class, UpstreamClass::OperatorConfig | UpstreamClass::AccountQuota | UpstreamClass::Clock)
            }
            _ => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            InvalidRequest(_) | InvalidPhone { .. } => StatusCode::BAD_REQUEST,
            Unauthorized | BadSignature(_) => StatusCode::UNAUTHORIZED,
            CountryBlocked | NumberTypeBlocked { .. } | Rejected(_) | SuspectedPumping { .. } => StatusCode::FORBIDDEN,
            NotFound | NoRecentSend => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            NoTemplate { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited { .. } | UpstreamRateLimited { .. } | SpendCapReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            ScriptError(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            UpstreamRejected(_) => StatusCode::BAD_GATEWAY,
            UpstreamUnavailable { .. } | LimiterUnavailable | ServerBusy | ScriptBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable code in the JSON body, metrics and logs.
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            InvalidRequest(_) => "invalid_request",
            InvalidPhone { .. } => "invalid_phone",
            Unauthorized => "unauthorized",
            BadSignature(_) => "invalid_signature",
            CountryBlocked => "country_blocked",
            NumberTypeBlocked { .. } => "number_type_blocked",
            Rejected(_) => "rejected",
            NotFound => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            PayloadTooLarge => "payload_too_large",
            RequestTimeout => "request_timeout",
            ServerBusy => "server_busy",
            UnsupportedMediaType => "unsupported_media_type",
            NoTemplate { .. } => "no_template",
            RateLimited { .. } => "rate_limited",
            UpstreamRateLimited { .. } => "upstream_rate_limited",
            SpendCapReached { .. } => "spend_cap_reached",
            ScriptError(_) => "script_error",
            ScriptBusy => "script_busy",
            Internal(_) => "internal",
            UpstreamRejected(_) => "upstream_rejected",
            UpstreamUnavailable { .. } => "upstream_unavailable",
            LimiterUnavailable => "limiter_unavailable",
            UpstreamTimeout => "upstream_timeout",
            SuspectedPumping { .. } => "suspected_pumping",
            NoRecentSend => "no_recent_send",
        }
    }

    /// A short message fit to show a person (Logto shows it to the end user). Never internal detail.
    pub(crate) fn public_message(&self) -> Cow<'static, str> {
        use GatewayError::*;
        match self {
            InvalidRequest(detail) => Cow::Owned(format!("Invalid request: {detail}.")),
            InvalidPhone { .. } => Cow::Borrowed("This phone number is not valid."),
            Unauthorized => Cow::Borrowed("Missing or unknown access token."),
            BadSignature(_) => Cow::Borrowed("The request signature is missing, invalid or expired."),
            CountryBlocked => Cow::Borrowed("SMS to this country or region is not available."),
            NumberTypeBlocked { .. } => Cow::Borrowed("This number cannot receive verification codes."),
            Rejected(message) => Cow::Owned(message.clone()),
            NotFound => Cow::Borrowed("Not found."),
            MethodNotAllowed { .. } => Cow::Borrowed("Method not allowed."),
            PayloadTooLarge => Cow::Borrowed("Request body is too large."),
            RequestTimeout => Cow::Borrowed("The request body did not arrive in time."),
            ServerBusy => Cow::Borrowed("The service is busy. Try again shortly."),
            UnsupportedMediaType => Cow::Borrowed("Send the request as application/json."),
            NoTemplate { .. } => Cow::Borrowed("No SMS template is configured for this kind of message."),
            RateLimited { retry_after, .. } | UpstreamRateLimited { retry_after, .. } => Cow::Owned(format!(
                "Too many messages. Try again in {}.",
                human_wait(retry_after_seconds(*retry_after))
            )),
            SpendCapReached { .. } => Cow::Borrowed("SMS sending is paused for now. Try again later."),
            ScriptError(_) | Internal(_) => Cow::Borrowed("Internal error. Try again later."),
            ScriptBusy => Cow::Borrowed("The service is busy. Try again in a moment."),
            UpstreamRejected(_) => Cow::Borrowed("The SMS provider refused the message."),
            UpstreamUnavailable { .. } => Cow::Borrowed("The SMS provider is unavailable. Try again later."),
            LimiterUnavailable => Cow::Borrowed("The service is temporarily unavailable. Try again later."),
            UpstreamTimeout => Cow::Borrowed("The SMS provider did not answer in time."),
            SuspectedPumping { .. } => Cow::Borrowed("SMS to this number is not available right now. Try again later."),
            NoRecentSend => Cow::Borrowed("No code was sent to this number recently."),
        }
    }

    pub fn upstream(&self) -> Option<&UpstreamDetail> {
        use GatewayError::*;
        match self {
            InvalidPhone { upstream } | UpstreamUnavailable { upstream, .. } => upstream.as_ref(),
            UpstreamRateLimited { upstream, .. } | UpstreamRejected(upstream) => Some(upstream),
            InvalidRequest(_)
            | Unauthorized
            | BadSignature(_)
            | CountryBlocked
            | NumberTypeBlocked { .. }
            | Rejected(_)
            | NotFound
            | MethodNotAllowed { .. }
            | PayloadTooLarge
            | RequestTimeout
            | ServerBusy
            | UnsupportedMediaType
            | NoTemplate { .. }
            | RateLimited { .. }
            | SpendCapReached { .. }
            | ScriptError(_)
            | ScriptBusy
            | Internal(_)
            | LimiterUnavailable
            | UpstreamTimeout
            | SuspectedPumping { .. }
            | NoRecentSend => None,
        }
    }

    /// `Retry-After` for 429s and `script_busy`: whole seconds, rounded up, never 0.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited { retry_after, .. }
            | GatewayError::UpstreamRateLimited { retry_after, .. }
            | GatewayError::SpendCapReached { retry_after, .. } => Some(retry_after_seconds(*retry_after)),
            GatewayError::ServerBusy | GatewayError::ScriptBusy => Some(1),
            _ => None,
        }
    }
}

/// A wait as a person reads it (Logto shows the message to the end user): `30 seconds`, `20 minutes`,
/// `1 hour 24 minutes`, `1 day 6 hours`: at most two units, the smaller rounded up so the person never
/// comes back too early.
pub(crate) fn human_wait(seconds: u64) -> String {
    fn unit(n: u64, name: &str) -> String {
        if n == 1 {
            format!("1 {name}")
        } else {
            format!("{n} {name}s")
        }
    }
    fn pair(big: u64, big_name: &str, small: u64, small_name: &str) -> String {
        if small == 0 {
            unit(big, big_name)
        } else {
            format!("{} {}", unit(big, big_name), unit(small, small_name))
        }
    }
    match seconds {
        0..90 => unit(seconds.max(1), "second"),
        90..3_600 => unit(seconds.div_ceil(60), "minute"),
        3_600..86_400 => {
            let minutes = seconds.div_ceil(60);
            match (minutes / 60, minutes % 60) {
                (24, _) => unit(1, "day"),
                (hours, rest) => pair(hours, "hour", rest, "minute"),
            }
        }
        _ => {
            let hours = seconds.div_ceil(3_600);
            pair(hours / 24, "day", hours % 24, "hour")
        }
    }
}

pub(crate) fn retry_after_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(30)), 30);
    }

    #[test]
    fn waits_read_as_a_person_would_say_them() {
        assert_eq!(human_wait(1), "1 second");
        assert_eq!(human_wait(30), "30 seconds");
        assert_eq!(human_wait(89), "89 seconds");
        assert_eq!(human_wait(90), "2 minutes");
        assert_eq!(human_wait(1188), "20 minutes");
        assert_eq!(human_wait(3599), "60 minutes");
        assert_eq!(human_wait(3600), "1 hour");
        assert_eq!(human_wait(5000), "1 hour 24 minutes");
        assert_eq!(human_wait(7200), "2 hours");
        assert_eq!(human_wait(86_399), "1 day");
        assert_eq!(human_wait(86_400), "1 day");
        assert_eq!(human_wait(30 * 3_600 + 1), "1 day 7 hours");
        assert_eq!(human_wait(3 * 86_400), "3 days");
        let e = GatewayError::RateLimited { rule: "hourly".into(), retry_after: Duration::from_secs(1188) };
        assert_eq!(e.public_message(), "Too many messages. Try again in 20 minutes.");
        assert_eq!(e.retry_after(), Some(1188));
    }

    #[test]
    fn messages_carry_no_internal_detail() {
        let e = GatewayError::Internal("db password wrong at /etc/x".into());
        assert!(!e.public_message().contains("/etc/x"));
        let e = GatewayError::UpstreamUnavailable { reason: "dns: sms.local".into(), upstream: None };
        assert!(!e.public_message().contains("dns"));
    }
}
