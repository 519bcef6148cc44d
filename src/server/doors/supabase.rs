//! `POST /v1/supabase/sms` (or `/v1/supabase/sms/<tenant>`): the Supabase Auth Send SMS hook, verified, read,
//! served and answered. The Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one or several) is checked in two
//! steps: the headers and timestamp before the body is read, the HMAC over the body after; nothing here trusts
//! the body before the signature over it has been checked. The hook's body becomes one [`SendRequest`], and the
//! one-number pipeline runs with the tenant's `supabase.usage`. Answers follow how Supabase Auth reads a hook's
//! answer: it shows a message only from a 200 carrying `{"error": {"http_code", "message"}}` (answering the end
//! user with that status), turns any other status into a generic 500, and retries only a 429 or 503 that
//! carries `Retry-After`. So a refusal is a 200 with the error inside; a failure after which a retry can
//! succeed without a second SMS is a real 503 with `Retry-After`; a bad or stale signature is a 401, with
//! nothing sent.

use super::Route;
use super::{check_code, require_json};
use crate::config::{SupabaseHook, WebhookKey};
use crate::error::GatewayError;
use crate::json::decode;
use crate::pipeline::Trail;
use crate::runtime::{LiveTenant, Runtime};
use crate::server::{body, respond, Gateway};
use crate::sms::{Accepted, PhoneInput, SendRequest};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

pub const PATH: &str = "/v1/supabase/sms";

/// How far `webhook-timestamp` may be from our clock, either way (as the Standard Webhooks libraries).
pub(crate) const TOLERANCE_SECONDS: i64 = 5 * 60;
const MAX_ID: usize = 256;
/// More signatures than this in one header are not looked at (Supabase sends one per configured secret).
const MAX_SIGNATURES: usize = 8;

/// Why a hook request was refused before its body was trusted (`401`, nothing sent). The text is for the
/// log and the answer; it never holds a signature or the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified(pub &'static str);

/// The headers that must be checked before the body is read: present, well formed, and a timestamp within
/// the tolerance of `now` (a stale request is refused unread).
pub struct Envelope {
    id: String,
    timestamp: String,
    signatures: String,
}

impl Envelope {
    pub fn read(headers: &HeaderMap, now: i64) -> Result<Envelope, Unverified> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let id = get("webhook-id").filter(|id| !id.is_empty() && id.len() <= MAX_ID);
        let (Some(id), Some(timestamp), Some(signatures)) = (id, get("webhook-timestamp"), get("webhook-signature"))
        else {
            return Err(Unverified("missing or malformed webhook-id, webhook-timestamp or webhook-signature"));
        };
        let Ok(sent) = timestamp.parse::<i64>() else {
            return Err(Unverified("webhook-timestamp is not a unix time"));
        };
        if (sent - now).abs() > TOLERANCE_SECONDS {
            return Err(Unverified("webhook-timestamp is more than 5 minutes from the gateway's clock"));
        }
        Ok(Envelope { id: id.to_owned(), timestamp: timestamp.to_owned(), signatures: signatures.to_owned() })
    }

    /// Whether one of the header's `v1,` signatures is the HMAC of `id.timestamp.body` under one of `keys`
    /// (one HMAC per key tried, counted in `tried`).
    pub fn verify(&self, keys: &[WebhookKey], body: &[u8], tried: &mut usize) -> Result<(), Unverified> {
        let engine = base64::engine::general_purpose::STANDARD;
        // Space-separated per the spec; Supabase joins its signatures with ", ", so a trailing comma goes.
        let offered: Vec<Vec<u8>> = self
            .signatures
            .split_ascii_whitespace()
            .take(MAX_SIGNATURES)
            .filter_map(|s| s.trim_end_matches(',').strip_prefix("v1,"))
            .filter_map(|b64| engine.decode(b64).ok())
            .collect();
        for key in keys {
            *tried += 1;
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.expose()).expect("HMAC takes any key");
            mac.update(self.id.as_bytes());
            mac.update(b".");
            mac.update(self.timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            if offered.iter().any(|sig| bool::from(sig.as_slice().ct_eq(expected.as_slice()))) {
                return Ok(());
            }
        }
        Err(Unverified("no webhook-signature matches the tenant's secret"))
    }
}

/// The hook's body: `{"user": {"phone", ...}, "sms": {"otp", "phone"?, "sms_type"?}, "metadata": {...}}`.
/// Unknown keys are tolerated (the user object is large and grows).
#[derive(Deserialize)]
struct HookBody {
    user: Option<HookUser>,
    sms: HookSms,
    metadata: Option<HookMetadata>,
}

#[derive(Deserialize)]
struct HookUser {
    phone: Option<String>,
    /// Set once the user confirmed `phone` with a code.
    phone_confirmed_at: Option<String>,
}

#[derive(Deserialize)]
struct HookSms {
    otp: String,
    /// The destination, set by recent Supabase versions (for a phone change, the new number; for MFA, the
    /// factor's); older ones send only `user.phone`.
    phone: Option<String>,
}

#[derive(Deserialize)]
struct HookMetadata {
    ip_address: Option<String>,
}

/// A verified hook body -> the send: the number (E.164 digits with or without `+`), `[otp]` as parameters,
/// the tenant's configured usage type, and the end user's IP when Supabase passed it.
pub fn parse(body: &[u8], hook: &SupabaseHook) -> Result<SendRequest, GatewayError> {
    let b: HookBody = decode(body)?;
    let confirmed = b
        .user
        .as_ref()
        .filter(|u| u.phone_confirmed_at.as_deref().is_some_and(|at| !at.trim().is_empty()))
        .and_then(|u| u.phone.as_deref())
        .map(|p| p.trim().trim_start_matches('+').to_owned())
        .filter(|p| !p.is_empty());
    let phone = b
        .sms
        .phone
        .filter(|p| !p.trim().is_empty())
        .or_else(|| b.user.and_then(|u| u.phone))
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| GatewayError::InvalidRequest("missing field `user.phone`".into()))?;
    // Supabase confirmed this number with a code before (a sign-in, not a change to a new number): the
    // user has proved it, as a number with a verification history in smsgate has.
    let vouched = confirmed.is_some_and(|c| c == phone.trim().trim_start_matches('+'));
    let code = check_code(b.sms.otp, "sms.otp")?;
    let ip = b.metadata.and_then(|m| m.ip_address).and_then(|ip| ip.trim().parse().ok());
    Ok(SendRequest {
        phone: PhoneInput::Logto(phone),
        usage: hook.usage.clone(),
        params: vec![code.clone()],
        code: Some(code),
        ip,
        locale: None,
        idempotency_key: None,
        vouched,
    })
}

impl Gateway {
    /// Answers one hook request (the tenant is named by the path after [`PATH`], or is the only one).
    pub(in crate::server) async fn supabase<B>(
        &self,
        req: Request<B>,
        id: &str,
        started: Instant,
    ) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.method() != Method::POST {
            return respond::error(&GatewayError::MethodNotAllowed { allow: "POST" }, id, None);
        }
        let runtime = self.runtime();
        let mut trail = Trail { request_id: id.to_owned(), ..Trail::default() };
        let mut verified = false;
        let result = self.supabase_send(&runtime, req, &mut trail, &mut verified).await;
        let mut response = answer(&result, verified, id);
        if trail.replayed {
            response.headers_mut().insert(respond::IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        self.record(Route::Supabase, &result, &trail, id, started, response.status());
        response
    }

    async fn supabase_send<B>(
        &self,
        runtime: &Runtime,
        req: Request<B>,
        trail: &mut Trail,
        verified: &mut bool,
    ) -> Result<Accepted, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let config = runtime.config();
        let tenant = hook_tenant(runtime, req.uri().path())?.clone();
        let hook = tenant.supabase.as_ref().ok_or(GatewayError::NotFound)?;
        trail.tenant = Some(tenant.name.clone());
        require_json(req.headers())?;
        let now = self.shared.services.clock.unix_seconds();
        // Headers and timestamp first: a stale or unsigned request is refused before its body is read.
        let envelope = Envelope::read(req.headers(), now).map_err(unverified)?;
        let limits = body::BodyLimits { max_bytes: config.server.max_body_bytes, timeout: config.server.body_timeout };
        let (bytes, hold) = self.shared.unverified.read(body::SignedDoor::Supabase, req, limits).await?;
        let mut tried = 0;
        let verified_now = envelope.verify(&hook.keys, &bytes, &mut tried);
        self.metrics().signature_checks(body::SignedDoor::Supabase.label(), tried);
        drop(hold);
        verified_now.map_err(unverified)?;
        *verified = true;
        let request = parse(&bytes, hook)?;
        self.shared.services.send(&tenant, request, trail).await
    }
}

fn unverified(e: Unverified) -> GatewayError {
    GatewayError::BadSignature(e.0)
}

/// The tenant a hook request is for: named in the path, or the only tenant that takes the hook.
fn hook_tenant<'r>(runtime: &'r Runtime, path: &str) -> Result<&'r Arc<LiveTenant>, GatewayError> {
    match path.strip_prefix(PATH) {
        Some("") | Some("/") => {
            let mut hooked = runtime.tenants().iter().filter(|t| t.supabase.is_some());
            match (hooked.next(), hooked.next()) {
                (Some(only), None) => Ok(only),
                (None, _) => Err(GatewayError::NotFound),
                (Some(_), Some(_)) => Err(GatewayError::InvalidRequest(
                    "several tenants take the Supabase hook: name yours in the URL, /v1/supabase/sms/<tenant>".into(),
                )),
            }
        }
        Some(rest) => {
            let name = rest.strip_prefix('/').ok_or(GatewayError::NotFound)?;
            runtime.tenant(name).filter(|t| t.supabase.is_some()).ok_or(GatewayError::NotFound)
        }
        None => Err(GatewayError::NotFound),
    }
}

/// Whether Supabase may retry: the failure may pass on its own, and nothing was sent (an upstream error is
/// always one after which nothing went out: a send that may have gone out is answered as sent).
fn retryable(e: &GatewayError) -> bool {
    matches!(
        e,
        GatewayError::LimiterUnavailable
            | GatewayError::ServerBusy
            | GatewayError::ScriptBusy
            | GatewayError::UpstreamUnavailable { .. }
    )
}

/// Supabase reads `http_code` and `message`; `code` and `request_id` are ours, for the operator.
fn error_body(e: &GatewayError, id: &str) -> String {
    let error = serde_json::json!({
        "http_code": e.status().as_u16(),
        "message": e.public_message(),
        "code": e.code(),
        "request_id": id,
    });
    serde_json::json!({ "error": error }).to_string()
}

fn answer(result: &Result<Accepted, GatewayError>, verified: bool, id: &str) -> Response<Full<Bytes>> {
    let e = match result {
        Ok(_) => return respond::json(StatusCode::OK, id, "{}"),
        Err(e) => e,
    };
    if retryable(e) {
        let mut response = respond::json(e.status(), id, error_body(e, id));
        let seconds = e.retry_after().unwrap_or(1);
        response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        respond::close_if_unread(&mut response, e);
        return response;
    }
    // Before the signature held, the request is not Supabase's: plain statuses. After it, the error rides
    // in a 200 so that Supabase shows its message with its status.
    let status = if verified { StatusCode::OK } else { e.status() };
    let mut response = respond::json(status, id, error_body(e, id));
    respond::close_if_unread(&mut response, e);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const NOW: i64 = 1_704_164_645;

    fn key() -> WebhookKey {
        WebhookKey(b"0123456789abcdef-supabase".to_vec())
    }

    fn sign(key: &WebhookKey, id: &str, ts: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.expose()).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn headers(id: &str, ts: i64, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(signature).unwrap());
        h
    }

    #[test]
    fn signatures_in_either_list_form_verify() {
        let body = br#"{"sms":{"otp":"123456"}}"#;
        let good = sign(&key(), "msg_1", NOW, body);
        let other = sign(&WebhookKey(b"another-key-of-16-bytes".to_vec()), "msg_1", NOW, body);
        for header in [good.clone(), format!("{other} {good}"), format!("{other}, {good}"), format!("{good}, {other}")]
        {
            let h = headers("msg_1", NOW, &header);
            Envelope::read(&h, NOW)
                .unwrap()
                .verify(&[key()], body, &mut 0)
                .unwrap_or_else(|e| panic!("{header}: {e:?}"));
        }
        let h = headers("msg_1", NOW, &other);
        assert!(Envelope::read(&h, NOW).unwrap().verify(&[key()], body, &mut 0).is_err());
        // The id and timestamp are signed: a copy under another id fails.
        let h = headers("msg_2", NOW, &good);
        assert!(Envelope::read(&h, NOW).unwrap().verify(&[key()], body, &mut 0).is_err());
        let tampered = br#"{"sms":{"otp":"999999"}}"#;
        let h = headers("msg_1", NOW, &good);
        assert!(Envelope::read(&h, NOW).unwrap().verify(&[key()], tampered, &mut 0).is_err());
    }

    #[test]
    fn stale_and_future_timestamps_are_refused_unread() {
        let sig = sign(&key(), "m", NOW - 301, b"{}");
        assert!(Envelope::read(&headers("m", NOW - 301, &sig), NOW).is_err());
        assert!(Envelope::read(&headers("m", NOW + 301, &sig), NOW).is_err());
        assert!(Envelope::read(&headers("m", NOW - 300, &sig), NOW).is_ok());
        assert!(Envelope::read(&HeaderMap::new(), NOW).is_err());
    }

    #[test]
    fn body_reads_sms_phone_before_user_phone() {
        let hook = SupabaseHook { keys: vec![key()], usage: "Generic".into() };
        let r = parse(br#"{"user":{"id":"u","phone":"8613800138000"},"sms":{"otp":"123456"}}"#, &hook).unwrap();
        assert_eq!(
            (r.phone, r.code.as_deref(), r.usage.as_str()),
            (PhoneInput::Logto("8613800138000".into()), Some("123456"), "Generic")
        );
        let r = parse(
            br#"{"user":{"phone":"8613800138000"},"sms":{"otp":"1","phone":"+14155550100"},"metadata":{"ip_address":"203.0.113.7"}}"#,
            &hook,
        )
        .unwrap();
        assert_eq!(r.phone, PhoneInput::Logto("+14155550100".into()));
        assert_eq!(r.ip, Some("203.0.113.7".parse().unwrap()));
        assert!(parse(br#"{"user":{"phone":""},"sms":{"otp":"1"}}"#, &hook).is_err());
        assert!(parse(br#"{"user":{"phone":"1"},"sms":{"otp":"http://x"}}"#, &hook).is_err());
    }

    /// A number Supabase confirmed before is vouched for; a change to a new number, an unconfirmed user or
    /// an empty confirmation time is not.
    #[test]
    fn a_number_supabase_confirmed_is_vouched_for() {
        let hook = SupabaseHook { keys: vec![key()], usage: "Generic".into() };
        let vouched = |body: &str| parse(body.as_bytes(), &hook).unwrap().vouched;
        let at = r#""phone_confirmed_at":"2026-01-02T03:04:05Z""#;
        assert!(vouched(&format!(r#"{{"user":{{"phone":"8613800138000",{at}}},"sms":{{"otp":"1"}}}}"#)));
        assert!(vouched(&format!(
            r#"{{"user":{{"phone":"8613800138000",{at}}},"sms":{{"otp":"1","phone":"+8613800138000"}}}}"#
        )));
        assert!(!vouched(&format!(
            r#"{{"user":{{"phone":"8613800138000",{at}}},"sms":{{"otp":"1","phone":"+14155550100"}}}}"#
        )));
        assert!(!vouched(r#"{"user":{"phone":"8613800138000"},"sms":{"otp":"1"}}"#));
        assert!(!vouched(r#"{"user":{"phone":"8613800138000","phone_confirmed_at":null},"sms":{"otp":"1"}}"#));
        assert!(!vouched(r#"{"user":{"phone":"8613800138000","phone_confirmed_at":""},"sms":{"otp":"1"}}"#));
    }
}
