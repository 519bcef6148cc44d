//! Response bodies and headers, exactly as the README's HTTP API section writes them.

use crate::error::GatewayError;
use crate::pipeline::{Accepted, Delivery, Trail};
use crate::policy::Decision;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

pub const REQUEST_ID: &str = "x-request-id";

/// The caller's `X-Request-Id` when it is a sane token, else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:032x}", fastrand::u128(..)))
}

pub fn status_word(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Sent => "sent",
        Delivery::DryRun => "dry_run",
        Delivery::TestNumber => "sent",
    }
}

pub fn text(status: StatusCode, id: &str, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID, id);
    }
    response
}

/// An answer without a body (`204 No Content`).
pub fn empty(status: StatusCode, id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    if let Ok(id) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

pub fn json(status: StatusCode, id: &str, body: String) -> Response<Full<Bytes>> {
    text(status, id, "application/json", body)
}

fn rate_limit_headers(response: &mut Response<Full<Bytes>>, decision: Option<&Decision>) {
    if let Some((policy, current)) = decision.and_then(Decision::headers) {
        let headers = response.headers_mut();
        if let (Ok(policy), Ok(current)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&current)) {
            headers.insert("ratelimit-policy", policy);
            headers.insert("ratelimit", current);
        }
    }
}

pub fn accepted(accepted: &Accepted, trail: &Trail, id: &str) -> Response<Full<Bytes>> {
    let mut body = json!({
        "status": status_word(accepted.delivery),
        "request_id": id,
        "tenant": trail.tenant.as_deref(),
        "template_id": accepted.template_id,
    });
    if accepted.delivery == Delivery::TestNumber {
        body["test_number"] = json!(true);
    }
    if let Some(receipt) = &accepted.receipt {
        body["upstream"] =
            json!({"serial_no": receipt.serial_no, "fee": receipt.fee, "request_id": receipt.request_id});
    }
    let mut response = json(StatusCode::OK, id, body.to_string());
    rate_limit_headers(&mut response, trail.limits.as_ref());
    response
}

pub fn error(e: &GatewayError, id: &str, decision: Option<&Decision>) -> Response<Full<Bytes>> {
    let mut error = json!({"code": e.code(), "message": e.public_message(), "request_id": id});
    if let Some(upstream) = e.upstream() {
        error["upstream"] =
            json!({"code": upstream.code, "message": upstream.message, "request_id": upstream.request_id});
    }
    let mut response = json(e.status(), id, json!({ "error": error }).to_string());
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
