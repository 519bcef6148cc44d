//! `POST /v1/logto/sms`, for Logto's HTTP SMS connector. Its body, exactly what the connector posts, is read
//! into one [`SendRequest`] with the field checks that make it safe to hand to the later stages (errors name
//! the field at fault, never its value). The caller is a tenant's bearer token; the send and its answer are
//! those the door shares with the native API (`doors/mod.rs`).

use super::Route;
use super::{check_code, check_ip, check_locale, check_usage};
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

pub const PATH: &str = "/v1/logto/sms";

/// Exactly what Logto's HTTP SMS connector posts. Unknown keys are tolerated, as Logto may add some.
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
        vouched: false,
    })
}

impl Gateway {
    /// Serves `POST /v1/logto/sms`.
    pub(in crate::server) async fn logto<B>(&self, req: Request<B>, id: &str, started: Instant) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.serve_bearer(Route::Logto, parse_logto, req, id, started).await
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
    fn errors_name_the_field_not_the_value() {
        assert_eq!(err(parse_logto(br#"{"to":"1","type":"SignIn","payload":{}}"#)), "missing field `payload.code`");
        assert!(err(parse_logto(br#"{"to":"1","type":"SignIn","payload":{"code":"http://x.y/"}}"#))
            .contains("payload.code"));
    }
}
