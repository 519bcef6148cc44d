//! `POST /v1/sms/send`, the native API. Its body, `{"phone","usage","code"}` or
//! `{"phone","usage","params":[...]}`, is read into one [`SendRequest`] with the field checks that make it
//! safe to hand to the later stages (errors name the field at fault, never its value). The caller is a
//! tenant's bearer token; the send and its answer are those the door shares with Logto's (`doors/mod.rs`).

use super::Route;
use super::{check_code, check_ip, check_locale, check_usage, invalid};
use crate::error::GatewayError;
use crate::json::decode;
use crate::server::Gateway;
use crate::sms::{PhoneInput, SendRequest};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Body;
use serde::Deserialize;
use std::time::Instant;

pub const PATH: &str = "/v1/sms/send";
const MAX_PARAMS: usize = 16;
const MAX_PARAM_CHARS: usize = 64;

/// `{"phone","usage","code"}` or `{"phone","usage","params":[...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeBody {
    phone: String,
    usage: String,
    code: Option<String>,
    params: Option<Vec<String>>,
    ip: Option<String>,
    locale: Option<String>,
    /// The caller vouches for the end user (see `SendRequest::vouched`).
    #[serde(default)]
    vouched: bool,
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
        vouched: b.vouched,
    })
}

impl Gateway {
    /// Serves `POST /v1/sms/send`.
    pub(in crate::server) async fn native<B>(
        &self,
        req: Request<B>,
        id: &str,
        started: Instant,
    ) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.serve_bearer(Route::Native, parse_native, req, id, started).await
    }
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
    fn native_code_or_params() {
        let r = parse_native(br#"{"phone":"+8613800138000","usage":"SignIn","code":"123456"}"#).unwrap();
        assert_eq!((r.params, r.code.as_deref()), (vec!["123456".to_owned()], Some("123456")));
        let r = parse_native(br#"{"phone":"+8613800138000","usage":"Generic","params":["a","b"]}"#).unwrap();
        assert_eq!((r.params.len(), r.code, r.vouched), (2, None, false));
        let r = parse_native(br#"{"phone":"+8613800138000","usage":"SignIn","code":"1","vouched":true}"#).unwrap();
        assert!(r.vouched);
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
        assert!(err(parse_native(br#"{"phone":"+1","usage":"Sign In","code":"1"}"#)).contains("usage"));
        assert!(err(parse_native(br#"{"phone":"+1","usage":"SignIn","code":"1","ip":"999.1.1.1"}"#)).contains("ip"));
        assert_eq!(err(parse_native(br#"{"phone":"+1","usage":"SignIn","code":"1"} x"#)), "body is not valid JSON");
        assert_eq!(
            err(parse_native(br#"{"phone":"+1","usage":"SignIn","code":"1","vouched":"yes"}"#)),
            "field `vouched` has the wrong type"
        );
    }
}
