//! The shapes of the inbound signals: Logto's webhook (and its `logto-signature-sha-256` check), the
//! `/v1/sms/verified` body, and Tencent's delivery-status callback. Errors name a field, never a value.

use crate::config::Tenant;
use crate::error::GatewayError;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

pub(crate) const LOGTO_SIGNATURE: &str = "logto-signature-sha-256";
/// Logto's interaction hook events: a user finished signing up, in, or resetting a password.
pub(crate) const LOGTO_EVENTS: [&str; 3] = ["PostRegister", "PostSignIn", "PostResetPassword"];
/// Longest text relayed from a Tencent report field.
const MAX_REPORT_TEXT: usize = 128;

/// The `logto-signature-sha-256` header: the hex HMAC-SHA256 of the raw body. None when missing or not 64
/// hex digits (refused before the body is read).
pub(crate) fn logto_signature(header: Option<&str>) -> Option<[u8; 32]> {
    let mut wanted = [0u8; 32];
    hex::decode_to_slice(header?.trim(), &mut wanted).ok()?;
    Some(wanted)
}

/// Whether `tenant`'s Logto signing key signed `body` (one HMAC; a tenant without a key: false, none).
/// The comparison is constant-time.
pub(crate) fn logto_signed(tenant: &Tenant, body: &[u8], wanted: &[u8; 32]) -> bool {
    let Some(key) = logto_key(tenant) else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    bool::from(mac.finalize().into_bytes().as_slice().ct_eq(wanted))
}

/// The tenant's Logto webhook signing key.
pub(crate) fn logto_key(tenant: &Tenant) -> Option<&crate::config::Secret> {
    tenant.conversion.as_ref().and_then(|c| c.logto_webhook_secret.as_ref())
}

/// What a (verified) Logto webhook reports.
#[derive(Debug, PartialEq, Eq)]
pub enum LogtoEvent {
    /// A user with a phone finished an interaction: `phone` as Logto keeps it (country code and digits).
    Verified { event: String, phone: String },
    /// Accepted and ignored (Logto retries non-2xx answers): why.
    Ignored(&'static str),
}

pub fn parse_logto(body: &[u8]) -> Result<LogtoEvent, GatewayError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| GatewayError::InvalidRequest("body is not valid JSON".into()))?;
    let Some(object) = value.as_object() else {
        return Err(GatewayError::InvalidRequest("body must be a JSON object".into()));
    };
    let Some(event) = object.get("event").and_then(Value::as_str) else { return Ok(LogtoEvent::Ignored("no_event")) };
    if !LOGTO_EVENTS.contains(&event) {
        return Ok(LogtoEvent::Ignored("other_event"));
    }
    match object.get("user").and_then(|u| u.get("primaryPhone")).and_then(Value::as_str) {
        Some(phone) if !phone.trim().is_empty() => {
            Ok(LogtoEvent::Verified { event: event.to_owned(), phone: phone.to_owned() })
        }
        _ => Ok(LogtoEvent::Ignored("no_phone")),
    }
}

/// `POST /v1/sms/verified`: `{"phone": "...", "request_id": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifiedBody {
    pub phone: String,
    pub request_id: Option<String>,
}

pub(crate) fn parse_verified(body: &[u8]) -> Result<VerifiedBody, GatewayError> {
    let parsed: VerifiedBody = crate::json::decode(body)?;
    if let Some(id) = &parsed.request_id {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
            return Err(GatewayError::InvalidRequest("`request_id` must be a request id smsgate answered".into()));
        }
    }
    Ok(parsed)
}

pub use crate::sms::StatusReport;

/// A field as text, whether Tencent wrote it as a string or a number.
fn text(entry: &Value, field: &str) -> String {
    let text = match entry.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    text.chars().filter(|c| !c.is_control()).take(MAX_REPORT_TEXT).collect()
}

/// The E.164 digits of `nationcode` + `mobile` (a `mobile` written with `+` is taken whole).
fn digits(nationcode: &str, mobile: &str) -> Option<u64> {
    let joined = match mobile.strip_prefix('+') {
        Some(e164) => e164.to_owned(),
        None => format!("{}{mobile}", nationcode.trim_start_matches('+')),
    };
    let ok = !joined.is_empty() && joined.len() <= 15 && joined.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| joined.parse().ok()).flatten()
}

/// Tencent's callback body: a JSON array of reports (a single object is read as one).
pub(crate) fn parse_status(body: &[u8]) -> Result<Vec<StatusReport>, GatewayError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| GatewayError::InvalidRequest("body is not valid JSON".into()))?;
    let entries = match value {
        Value::Array(entries) => entries,
        object @ Value::Object(_) => vec![object],
        _ => return Err(GatewayError::InvalidRequest("body must be a JSON array of reports".into())),
    };
    Ok(entries
        .iter()
        .map(|entry| StatusReport {
            sid: text(entry, "sid"),
            digits: digits(&text(entry, "nationcode"), &text(entry, "mobile")),
            status: text(entry, "report_status"),
            errmsg: text(entry, "errmsg"),
            description: text(entry, "description"),
            user_receive_time: text(entry, "user_receive_time"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logto_events() {
        let body = br#"{"hookId":"h","event":"PostSignIn","createdAt":"2024-01-02T03:04:05.000Z","interactionEvent":"SignIn","user":{"id":"u","primaryPhone":"8613800138000"}}"#;
        assert_eq!(
            parse_logto(body).unwrap(),
            LogtoEvent::Verified { event: "PostSignIn".into(), phone: "8613800138000".into() }
        );
        assert_eq!(
            parse_logto(br#"{"event":"PostSignIn","user":{"id":"u"}}"#).unwrap(),
            LogtoEvent::Ignored("no_phone")
        );
        assert_eq!(parse_logto(br#"{"event":"User.Created","user":{}}"#).unwrap(), LogtoEvent::Ignored("other_event"));
        assert!(parse_logto(b"[1]").is_err());
    }

    #[test]
    fn status_reports() {
        let body = br#"[{"user_receive_time":"2015-10-17 08:03:04","nationcode":"86","mobile":"13800138000","report_status":"SUCCESS","errmsg":"DELIVRD","description":"ok","sid":"2019:0"},
                        {"nationcode":86,"mobile":"+14155550100","report_status":"FAIL","sid":"x"},{"sid":"y"}]"#;
        let reports = parse_status(body).unwrap();
        assert_eq!(reports[0].digits, Some(8613800138000));
        assert_eq!((reports[0].status_label(), reports[0].errmsg.as_str()), ("success", "DELIVRD"));
        assert_eq!(reports[1].digits, Some(14155550100));
        assert_eq!(reports[1].status_label(), "fail");
        assert_eq!((reports[2].digits, reports[2].status_label()), (None, "other"));
        assert!(parse_status(b"\"x\"").is_err());
    }

    #[test]
    fn verified_bodies() {
        assert_eq!(parse_verified(br#"{"phone":"+8613800138000"}"#).unwrap().phone, "+8613800138000");
        assert!(parse_verified(br#"{"phone":"+8613800138000","request_id":"a b"}"#).is_err());
        assert!(parse_verified(br#"{"phone":"+8613800138000","code":"1"}"#).is_err());
    }
}
