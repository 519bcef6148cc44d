//! The front doors, one file each: what a door is (its path, how its caller proves who it is, how its body
//! reads into a `SendRequest`, how it is served and answered) is in that door's file. Here is what doors
//! share: the bearer token, the JSON content type and the `Idempotency-Key` header, checked before a body is
//! read, and the field checks of the bodies. Errors name the field at fault, never its value.

pub mod admin;
pub mod logto;
pub mod native;
pub(super) mod signals;
pub mod supabase;
pub mod tencent_api;

use crate::error::GatewayError;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::HeaderMap;
use std::net::IpAddr;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let value = headers.get(AUTHORIZATION).ok_or(GatewayError::Unauthorized)?;
    let value = value.to_str().map_err(|_| GatewayError::Unauthorized)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(GatewayError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(GatewayError::Unauthorized);
    }
    Ok(token.trim())
}

/// The `Idempotency-Key` header, when it is a sane token (1 to 128 visible ASCII characters).
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else { return Ok(None) };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(GatewayError::InvalidRequest("the Idempotency-Key header must be 1 to 128 visible characters".into())),
    }
}

/// Bodies must be JSON: `application/json` or `application/*+json`, any parameters.
pub fn require_json(headers: &HeaderMap) -> Result<(), GatewayError> {
    let value = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).ok_or(GatewayError::UnsupportedMediaType)?;
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

// The field checks of the bodies (native, Logto, the Supabase hook).

const MAX_CODE: usize = 12;
const MAX_SHORT_FIELD: usize = 64;

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(message.into())
}

fn check_usage(usage: String, field: &str) -> Result<String, GatewayError> {
    let ok = !usage.is_empty()
        && usage.len() <= MAX_SHORT_FIELD
        && usage.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(usage).ok_or_else(|| invalid(format!("`{field}` must be a usage type such as SignIn")))
}

fn check_code(code: String, field: &str) -> Result<String, GatewayError> {
    let ok = !code.is_empty() && code.len() <= MAX_CODE && code.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(code).ok_or_else(|| invalid(format!("`{field}` must be 1 to {MAX_CODE} letters or digits")))
}

fn check_ip(ip: Option<String>) -> Result<Option<IpAddr>, GatewayError> {
    match ip.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| invalid("`ip` must be an IP address")),
    }
}

fn check_locale(locale: Option<String>) -> Result<Option<String>, GatewayError> {
    match locale {
        Some(l)
            if l.len() > MAX_SHORT_FIELD || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(invalid("`locale` must be a language tag such as zh-CN"))
        }
        Some(l) if l.is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(name: http::header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(&headers(AUTHORIZATION, "Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers(AUTHORIZATION, "bearer  abc ")).unwrap(), "abc");
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            assert!(bearer_token(&headers(AUTHORIZATION, bad)).is_err(), "{bad}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn json_content_types() {
        for ok in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"]
        {
            assert!(require_json(&headers(CONTENT_TYPE, ok)).is_ok(), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"] {
            assert!(require_json(&headers(CONTENT_TYPE, bad)).is_err(), "{bad}");
        }
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
