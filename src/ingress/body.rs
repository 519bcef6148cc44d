//! Request bodies: serde shapes for the native API and Logto's HTTP SMS connector, and the field checks
//! that make every accepted `SendRequest` safe to hand to the later stages.

use crate::error::GatewayError;
use crate::json::decode;
use crate::sms::{PhoneInput, SendRequest};
use serde::Deserialize;
use std::net::IpAddr;

const MAX_CODE: usize = 12;
const MAX_PARAMS: usize = 16;
const MAX_PARAM_CHARS: usize = 64;
const MAX_SHORT_FIELD: usize = 64;

/// `POST /v1/sms/send`: `{"phone","usage","code"}` or `{"phone","usage","params":[...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeBody {
    phone: String,
    usage: String,
    code: Option<String>,
    params: Option<Vec<String>>,
    ip: Option<String>,
    locale: Option<String>,
}

/// `POST /v1/logto/sms`: exactly what Logto's HTTP SMS connector posts. Unknown keys are tolerated, as
/// Logto may add some.
#[derive(Deserialize)]
struct LogtoBody {
    to: String,
    #[serde(rename = "type")]
    usage: String,
    payload: LogtoPayload,
    ip: Option<String>,
}

#[derive(Deserialize)]
struct LogtoPayload {
    code: String,
    locale: Option<String>,
    // `uiLocales` and anything else in the payload are read and dropped: Logto's own Tencent connector
    // leaks them into TemplateParamSet and Tencent refuses the send.
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(message.into())
}

fn check_usage(usage: String, field: &str) -> Result<String, GatewayError> {
    let ok = !usage.is_empty()
        && usage.len() <= MAX_SHORT_FIELD
        && usage.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(usage).ok_or_else(|| invalid(format!("`{field}` must be a usage type such as SignIn")))
}

pub(super) fn check_code(code: String, field: &str) -> Result<String, GatewayError> {
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

pub fn parse_native(body: &[u8]) -> Result<SendRequest, GatewayError> {
    let b: NativeBody = decode(body)?;
    let (params, code) = match (b.code, b.params) {
        (Some(code), None) => {
            let code = check_code(code, "code")?;
            (vec![code.clone()], Some(code))
        }
        (None, Some(params)) => {
            if params.is_empty() || params.len() > MAX_PARAMS {
                return Err(invalid(format!("`params` must hold 1 to {MAX_PARAMS} values")));
            }
            if params
                .iter()
                .any(|p| p.is_empty() || p.chars().count() > MAX_PARAM_CHARS || p.chars().any(char::is_control))
            {
                return Err(invalid(format!("each of `params` must be 1 to {MAX_PARAM_CHARS} printable characters")));
            }
            (params, None)
        }
        (Some(_), Some(_)) => return Err(invalid("give `code` or `params`, not both")),
        (None, None) => return Err(invalid("missing field `code`")),
    };
    Ok(SendRequest {
        phone: PhoneInput::Native(b.phone),
        usage: check_usage(b.usage, "usage")?,
        params,
        code,
        ip: check_ip(b.ip)?,
        locale: check_locale(b.locale)?,
        idempotency_key: None,
    })
}

pub fn parse_logto(body: &[u8]) -> Result<SendRequest, GatewayError> {
    let b: LogtoBody = decode(body)?;
    let code = check_code(b.payload.code, "payload.code")?;
    Ok(SendRequest {
        phone: PhoneInput::Logto(b.to),
        usage: check_usage(b.usage, "type")?,
        params: vec![code.clone()],
        code: Some(code),
        ip: check_ip(b.ip)?,
        locale: check_locale(b.payload.locale)?,
        idempotency_key: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<SendRequest, GatewayError>) -> String {
        match r.unwrap_err() {
            GatewayError::InvalidRequest(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn regression_logto_ui_locales_never_reach_template_params() {
        let body = br#"{"to":"8613800138000","type":"SignIn","payload":{"code":"123456","locale":"zh-CN","uiLocales":"zh-CN en"},"ip":"203.0.113.7"}"#;
        let r = parse_logto(body).unwrap();
        assert_eq!(r.params, vec!["123456"]);
        assert_eq!(r.phone, PhoneInput::Logto("8613800138000".into()));
        assert_eq!(r.usage, "SignIn");
        assert_eq!(r.locale.as_deref(), Some("zh-CN"));
        assert_eq!(r.ip, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn logto_minimal_body() {
        let r = parse_logto(br#"{"to":"14155550100","type":"Register","payload":{"code":"000111"}}"#).unwrap();
        assert_eq!((r.ip, r.locale), (None, None));
    }

    #[test]
    fn native_code_or_params() {
        let r = parse_native(br#"{"phone":"+8613800138000","usage":"SignIn","code":"123456"}"#).unwrap();
        assert_eq!((r.params, r.code.as_deref()), (vec!["123456".to_owned()], Some("123456")));
        let r = parse_native(br#"{"phone":"+8613800138000","usage":"Generic","params":["a","b"]}"#).unwrap();
        assert_eq!((r.params.len(), r.code), (2, None));
    }

    #[test]
    fn errors_name_the_field_not_the_value() {
        assert_eq!(err(parse_native(b"{nope")), "body is not valid JSON");
        assert_eq!(err(parse_native(b"[1]")), "body must be a JSON object");
        assert_eq!(err(parse_native(br#"{"usage":"SignIn","code":"1"}"#)), "missing field `phone`");
        assert_eq!(
            err(parse_native(br#"{"phone":8613800138000,"usage":"SignIn","code":"1"}"#)),
            "field `phone` has the wrong type"
        );
        assert_eq!(err(parse_native(br#"{"phone":"+1","usage":"SignIn","code":"1","x":1}"#)), "unknown field `x`");
        assert_eq!(err(parse_native(br#"{"phone":"+1","usage":"SignIn"}"#)), "missing field `code`");
        assert_eq!(
            err(parse_native(br#"{"phone":"+1","usage":"SignIn","code":"1","params":["1"]}"#)),
            "give `code` or `params`, not both"
        );
        assert_eq!(err(parse_logto(br#"{"to":"1","type":"SignIn","payload":{}}"#)), "missing field `payload.code`");
        assert!(err(parse_logto(br#"{"to":"1","type":"SignIn","payload":{"code":"http://x.y/"}}"#))
            .contains("payload.code"));
        assert!(err(parse_native(br#"{"phone":"+1","usage":"Sign In","code":"1"}"#)).contains("usage"));
        assert!(err(parse_native(br#"{"phone":"+1","usage":"SignIn","code":"1","ip":"999.1.1.1"}"#)).contains("ip"));
        assert_eq!(err(parse_native(br#"{"phone":"+1","usage":"SignIn","code":"1"} x"#)), "body is not valid JSON");
    }
}
