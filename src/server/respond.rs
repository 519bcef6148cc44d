//! Response bodies and headers, exactly as docs/front-doors.md's HTTP API section writes them.

use crate::error::{GatewayError, UpstreamDetail};
use crate::pipeline::Trail;
use crate::policy::Decision;
use crate::sms::Receipt;
use crate::sms::{Accepted, Delivery};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use std::borrow::Cow;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// Marks an answer replayed from an earlier send with the same key.
pub(crate) const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The caller's `X-Request-Id` when it is a sane token, else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(fresh_request_id, str::to_owned)
}

/// 32 random hex digits.
fn fresh_request_id() -> String {
    let mut digits = [0u8; 32];
    hex::encode_to_slice(fastrand::u128(..).to_be_bytes(), &mut digits).expect("16 bytes are 32 hex digits");
    digits.iter().map(|&b| char::from(b)).collect()
}

pub(crate) fn status_word(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Sent => "sent",
        Delivery::DryRun => "dry_run",
        Delivery::TestNumber => "sent",
        Delivery::MaybeSent => "maybe_sent",
    }
}

pub(super) fn text(
    status: StatusCode,
    id: &str,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::try_from(id) {
        headers.insert(REQUEST_ID, id);
    }
    response
}

/// An answer without a body (`204 No Content`).
pub(super) fn empty(status: StatusCode, id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    if let Ok(id) = HeaderValue::try_from(id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

pub(super) fn json(status: StatusCode, id: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    text(status, id, "application/json", body)
}

fn rate_limit_headers(response: &mut Response<Full<Bytes>>, decision: Option<&Decision>) {
    if let Some((policy, current)) = decision.and_then(Decision::headers) {
        let headers = response.headers_mut();
        if let (Ok(policy), Ok(current)) = (HeaderValue::try_from(policy), HeaderValue::try_from(current)) {
            headers.insert(RATELIMIT_POLICY, policy);
            headers.insert(RATELIMIT, current);
        }
    }
}

/// The body of an accepted send.
#[derive(serde::Serialize)]
struct AcceptedBody<'a> {
    status: &'static str,
    request_id: &'a str,
    tenant: Option<&'a str>,
    template_id: &'a str,
    /// The provider that took the send (none for a test number).
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<crate::sms::ProviderId>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    test_number: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a Receipt>,
}

/// The body of a refused request: `{"error": {...}}`.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(serde::Serialize)]
struct ErrorDetail<'a> {
    code: &'static str,
    message: Cow<'static, str>,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a UpstreamDetail>,
}

fn to_json(body: &impl serde::Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, body).expect("serializing plain structs cannot fail");
    out
}

/// The JSON error body of `e`, as every native route writes it.
fn error_body(e: &GatewayError, id: &str) -> Vec<u8> {
    to_json(&ErrorBody {
        error: ErrorDetail { code: e.code(), message: e.public_message(), request_id: id, upstream: e.upstream() },
    })
}

pub(super) fn accepted(accepted: &Accepted, trail: &Trail, id: &str) -> Response<Full<Bytes>> {
    let body = to_json(&AcceptedBody {
        status: status_word(accepted.delivery),
        request_id: id,
        tenant: trail.tenant.as_deref(),
        template_id: &accepted.template_id,
        provider: accepted.provider,
        test_number: accepted.delivery == Delivery::TestNumber,
        upstream: accepted.receipt.as_ref(),
    });
    let mut response = json(StatusCode::OK, id, body);
    rate_limit_headers(&mut response, trail.limits.as_ref());
    response
}

/// `Connection: close` when `e` left the body unread or partly read: the connection cannot carry another
/// request.
pub(crate) fn close_if_unread(response: &mut Response<Full<Bytes>>, e: &GatewayError) {
    if matches!(e, GatewayError::PayloadTooLarge | GatewayError::RequestTimeout | GatewayError::ServerBusy) {
        response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
}

pub(super) fn error(e: &GatewayError, id: &str, decision: Option<&Decision>) -> Response<Full<Bytes>> {
    let mut response = json(e.status(), id, error_body(e, id));
    rate_limit_headers(&mut response, decision);
    let headers = response.headers_mut();
    if let Some(seconds) = e.retry_after() {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let GatewayError::MethodNotAllowed { allow } = e {
        headers.insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}
