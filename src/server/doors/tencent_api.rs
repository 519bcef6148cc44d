//! The Tencent-compatible API listener (`server.tencent_listen`), as the official SDKs call it: every request
//! is `POST /` with `X-TC-*` headers, signed TC3-HMAC-SHA256. The head is read and checked before the body is
//! read (headers, SecretId, timestamp), the signature over the body after, exactly as Tencent does, with the
//! signing code of `providers/tencent/sign.rs`, against the credentials a tenant issues to its callers.
//! `SendSms` becomes the caller's message and one [`SendRequest`] per number and runs the batch pipeline (each
//! number through the tenant's policy, the allowed ones in as few upstream calls as Tencent allows, re-signed
//! with the tenant's real keys), answered as `SendStatusSet` in the caller's order; another action is forwarded
//! re-signed when the tenant lists it in `sdk_passthrough`. Every answer is HTTP 200 with a `RequestId`, and
//! every refusal carries Tencent's code (a whole request in Tencent's error envelope, a single number in
//! `SendStatusSet`), so the SDKs raise their usual exceptions.

use super::Route;
use crate::config::{read_scope, ReadScope};
use crate::config::{Credentials, Tenant, GENERIC_USAGE};
use crate::error::GatewayError;
use crate::pipeline::batch::NumberResult;
use crate::pipeline::Trail;
use crate::providers::tencent::api::{self, SendStatus};
use crate::providers::tencent::sign;
use crate::runtime::Runtime;
use crate::server::{body, respond, Gateway};
use crate::sms::CallExtras;
use crate::sms::Delivery;
use crate::sms::{CallerMessage, PhoneInput, SendRequest};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The service of every credential scope this API accepts.
pub(crate) const SERVICE: &str = "sms";
/// How far `X-TC-Timestamp` may be from the gateway's clock, either way (Tencent's window).
pub(crate) const TOLERANCE_SECONDS: i64 = 300;
/// Numbers per SendSms, as Tencent allows.
pub(crate) const MAX_NUMBERS: usize = 200;
const MAX_PARAMS: usize = 16;
const MAX_PARAM_CHARS: usize = 64;
const MAX_FIELD: usize = 512;

/// A refusal of the whole request: Tencent's code and message in its error envelope (HTTP 200, as Tencent),
/// and the gateway error it stands for in metrics and logs.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    pub cause: Box<GatewayError>,
}

impl ApiError {
    fn new(code: &'static str, message: impl Into<String>, cause: GatewayError) -> ApiError {
        ApiError { code, message: message.into(), cause: Box::new(cause) }
    }

    fn auth(code: &'static str, message: &'static str) -> ApiError {
        ApiError::new(code, message, GatewayError::BadSignature(message))
    }

    fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError { code, cause: Box::new(GatewayError::InvalidRequest(message.clone())), message }
    }

    /// The envelope for a gateway error that stops the whole request before any number is looked at (body
    /// bounds, reading slots).
    pub(crate) fn from_gateway(e: GatewayError) -> ApiError {
        use GatewayError::*;
        let code = match &e {
            PayloadTooLarge => "RequestSizeLimitExceeded",
            RequestTimeout => "InvalidRequest",
            ServerBusy => "RequestLimitExceeded",
            UnsupportedMediaType => "InvalidParameter",
            NotFound | MethodNotAllowed { .. } => "UnsupportedProtocol",
            Unauthorized | BadSignature(_) => "AuthFailure.SignatureFailure",
            InvalidRequest(_) | InvalidPhone { .. } => "InvalidParameter",
            UpstreamTimeout => "InternalError.Timeout",
            UpstreamUnavailable { .. } => "InternalError.SendAndRecvFail",
            CountryBlocked
            | NumberTypeBlocked { .. }
            | SuspectedPumping { .. }
            | NoRecentSend
            | Rejected(_)
            | NoTemplate { .. }
            | RateLimited { .. }
            | SpendCapReached { .. }
            | UpstreamRateLimited { .. }
            | ScriptError(_)
            | ScriptBusy
            | Internal(_)
            | UpstreamRejected(_)
            | LimiterUnavailable => "InternalError",
        };
        ApiError { code, message: e.public_message().into_owned(), cause: Box::new(e) }
    }
}

/// The signed head of a request, read before its body.
pub(crate) struct Head {
    pub action: String,
    pub version: String,
    pub timestamp: i64,
    pub secret_id: String,
    date: String,
    signed_headers: Vec<(String, String)>,
    signature: String,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

impl Head {
    /// The `X-TC-*` headers and the `Authorization` header, parsed; nothing verified yet.
    pub(crate) fn read(headers: &HeaderMap) -> Result<Head, ApiError> {
        let required = |name: &'static str| {
            header(headers, name).map(str::to_owned).ok_or_else(|| {
                ApiError::invalid("MissingParameter", format!("The request is missing the `{name}` header."))
            })
        };
        let action = required("x-tc-action")?;
        let version = required("x-tc-version")?;
        let timestamp = required("x-tc-timestamp")?;
        // Required as Tencent requires it; the region a send goes to is the tenant's (or its hook's).
        required("x-tc-region")?;
        let timestamp: i64 = timestamp
            .parse()
            .map_err(|_| ApiError::invalid("InvalidParameter", "`X-TC-Timestamp` must be unix seconds."))?;
        let malformed = || {
            ApiError::auth(
                "AuthFailure.InvalidAuthorization",
                "Authorization must be TC3-HMAC-SHA256 Credential=<SecretId>/<date>/sms/tc3_request, \
                 SignedHeaders=<names>, Signature=<hex>",
            )
        };
        let authorization = header(headers, "authorization").ok_or_else(malformed)?;
        let rest =
            authorization.strip_prefix(sign::ALGORITHM).and_then(|r| r.strip_prefix(' ')).ok_or_else(malformed)?;
        let (mut credential, mut signed_names, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (key, value) = part.trim().split_once('=').ok_or_else(malformed)?;
            match key {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_names = Some(value),
                "Signature" => signature = Some(value),
                _ => return Err(malformed()),
            }
        }
        let (credential, signed_names, signature) =
            (credential.ok_or_else(malformed)?, signed_names.ok_or_else(malformed)?, signature.ok_or_else(malformed)?);
        let mut scope = credential.split('/');
        let (Some(secret_id), Some(date), Some(service), Some("tc3_request"), None) =
            (scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
        else {
            return Err(malformed());
        };
        if service != SERVICE {
            return Err(ApiError::auth(
                "AuthFailure.InvalidAuthorization",
                "the credential scope's service must be sms",
            ));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let names: Vec<String> = signed_names.split(';').map(|n| n.trim().to_ascii_lowercase()).collect();
        if !names.iter().any(|n| n == "content-type") || !names.iter().any(|n| n == "host") {
            return Err(ApiError::auth(
                "AuthFailure.InvalidAuthorization",
                "SignedHeaders must include content-type and host",
            ));
        }
        if header(headers, "x-tc-content-sha256").is_some_and(|v| v.eq_ignore_ascii_case("UNSIGNED-PAYLOAD")) {
            return Err(ApiError::auth(
                "AuthFailure.InvalidAuthorization",
                "unsigned payloads are refused: the signature must cover the body",
            ));
        }
        let mut signed_headers = Vec::with_capacity(names.len());
        for name in names {
            let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                ApiError::auth("AuthFailure.InvalidAuthorization", "a header named in SignedHeaders is missing")
            })?;
            signed_headers.push((name, value.to_owned()));
        }
        Ok(Head {
            action,
            version,
            timestamp,
            secret_id: secret_id.to_owned(),
            date: date.to_owned(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// `X-TC-Timestamp` within 5 minutes of `now`, and the scope's date its UTC date.
    pub(crate) fn check_time(&self, now: i64) -> Result<(), ApiError> {
        if (self.timestamp - now).abs() > TOLERANCE_SECONDS {
            return Err(ApiError::auth(
                "AuthFailure.SignatureExpire",
                "X-TC-Timestamp is more than 5 minutes from the server's clock",
            ));
        }
        if self.date != sign::utc_date(self.timestamp) {
            return Err(ApiError::auth(
                "AuthFailure.SignatureFailure",
                "the credential scope's date is not the UTC date of X-TC-Timestamp",
            ));
        }
        Ok(())
    }

    /// The signature over the signed headers and these exact body bytes, under the caller's key.
    pub(crate) fn verify(&self, client: &Credentials, body: &[u8]) -> Result<(), ApiError> {
        let pairs: Vec<(&str, &str)> = self.signed_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let (canonical, _) = sign::canonical_request(&pairs, &sign::hash_hex(body));
        let expected =
            sign::signature(client.secret_key.expose(), SERVICE, self.timestamp, &sign::hash_hex(canonical.as_bytes()));
        if bool::from(expected.as_bytes().ct_eq(self.signature.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::auth("AuthFailure.SignatureFailure", "the signature does not match"))
        }
    }

    /// The signed `Content-Type` is JSON.
    pub(crate) fn is_json(&self) -> bool {
        self.signed_headers.iter().any(|(n, v)| {
            n == "content-type"
                && v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
    }
}

/// `SendSms` (2021-01-11) as the SDKs serialize it; fields they leave unset are absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendSmsBody {
    #[serde(rename = "PhoneNumberSet")]
    phone_number_set: Vec<String>,
    #[serde(rename = "SmsSdkAppId")]
    sms_sdk_app_id: String,
    #[serde(rename = "TemplateId")]
    template_id: String,
    #[serde(rename = "SignName")]
    sign_name: Option<String>,
    #[serde(rename = "TemplateParamSet", default)]
    template_param_set: Vec<String>,
    #[serde(rename = "ExtendCode")]
    extend_code: Option<String>,
    #[serde(rename = "SessionContext")]
    session_context: Option<String>,
    #[serde(rename = "SenderId")]
    sender_id: Option<String>,
}

/// A verified SendSms: the caller's message and one request per number, in the caller's order, with the
/// numbers as written (for the answer's refused entries).
pub struct SendSms {
    pub message: CallerMessage,
    pub requests: Vec<SendRequest>,
    pub numbers: Vec<String>,
}

fn decode_body(body: &[u8]) -> Result<SendSmsBody, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("InvalidParameter", "The body must be a JSON object."));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        if inner.classify() != serde_json::error::Category::Data {
            ApiError::invalid("InvalidParameter", "The body is not valid JSON.")
        } else if let Some(field) = text.strip_prefix("missing field `").and_then(|t| t.split('`').next()) {
            ApiError::invalid("MissingParameter", format!("The request is missing a required parameter `{field}`."))
        } else if text.starts_with("unknown field") {
            ApiError::invalid("UnknownParameter", format!("The parameter `{}` is not recognized.", truncate(&path)))
        } else {
            ApiError::invalid("InvalidParameter", format!("The parameter `{}` has the wrong type.", truncate(&path)))
        }
    })?;
    de.end().map_err(|_| ApiError::invalid("InvalidParameter", "The body is not valid JSON."))?;
    Ok(parsed)
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(cut, _)| &s[..cut])
}

fn printable(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

/// The usage type the tenant maps a TemplateId to: a named usage before `Generic`, then by name; None when
/// the TemplateId is none of the tenant's. The send is also judged by the rules of the template's other
/// usages (`Tenant::template_usages`).
pub(crate) fn usage_for_template(tenant: &Tenant, template_id: &str) -> Option<String> {
    tenant.template_usages(template_id).into_iter().min_by_key(|u| (*u == GENERIC_USAGE, *u)).map(str::to_owned)
}

/// A Tencent-style number -> the reading the pipeline takes: `+…` as E.164, 11 bare digits starting with 1
/// as a mainland mobile, other digits as country code and number.
fn phone_input(number: &str) -> PhoneInput {
    let number = number.trim();
    let bare_mainland = number.len() == 11 && number.starts_with('1') && number.bytes().all(|b| b.is_ascii_digit());
    PhoneInput::Logto(if bare_mainland { format!("86{number}") } else { number.to_owned() })
}

/// A SendSms body -> the caller's message and one request per number, after the checks that refuse the
/// whole request: number count, the tenant's SmsSdkAppId and templates, parameter and field bounds.
pub(crate) fn parse_send_sms(body: &[u8], tenant: &Tenant) -> Result<SendSms, ApiError> {
    let b = decode_body(body)?;
    if b.phone_number_set.is_empty() {
        return Err(ApiError::invalid("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty."));
    }
    if b.phone_number_set.len() > MAX_NUMBERS {
        return Err(ApiError::invalid(
            "LimitExceeded.PhoneNumberCountLimit",
            format!("PhoneNumberSet holds more than {MAX_NUMBERS} numbers."),
        ));
    }
    if Some(&b.sms_sdk_app_id) != tenant.tencent.as_ref().map(|t| &t.sdk_app_id) {
        return Err(ApiError::invalid("InvalidParameterValue.SdkAppIdNotExist", "SmsSdkAppId is not this account's."));
    }
    let usage = usage_for_template(tenant, &b.template_id).ok_or_else(|| {
        ApiError::invalid(
            "FailedOperation.TemplateIncorrectOrUnapproved",
            "TemplateId is not one of this account's templates.",
        )
    })?;
    if b.template_param_set.len() > MAX_PARAMS {
        return Err(ApiError::invalid(
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
            format!("TemplateParamSet holds more than {MAX_PARAMS} values."),
        ));
    }
    if b.template_param_set.iter().any(|p| p.chars().count() > MAX_PARAM_CHARS) {
        return Err(ApiError::invalid(
            "InvalidParameterValue.TemplateParameterLengthLimit",
            format!("Each TemplateParamSet value has at most {MAX_PARAM_CHARS} characters."),
        ));
    }
    if b.template_param_set.iter().any(|p| p.is_empty() || p.chars().any(char::is_control)) {
        return Err(ApiError::invalid(
            "InvalidParameterValue.TemplateParameterFormatError",
            "TemplateParamSet values must be printable and not empty.",
        ));
    }
    for (name, value, max) in [
        ("SignName", &b.sign_name, 64),
        ("SessionContext", &b.session_context, MAX_FIELD),
        ("ExtendCode", &b.extend_code, 32),
        ("SenderId", &b.sender_id, 64),
    ] {
        if value.as_deref().is_some_and(|v| !printable(v, max)) {
            return Err(ApiError::invalid("InvalidParameter", format!("`{name}` is too long or not printable.")));
        }
    }
    if b.phone_number_set.iter().any(|n| !printable(n, 32)) {
        return Err(ApiError::invalid("InvalidParameterValue.IncorrectPhoneNumber", "A phone number is malformed."));
    }
    // A single parameter that looks like a verification code is one (for the hook and de-duplication).
    let code = match b.template_param_set.as_slice() {
        [only] if only.len() <= 12 && only.bytes().all(|c| c.is_ascii_alphanumeric()) => Some(only.clone()),
        _ => None,
    };
    let requests = b
        .phone_number_set
        .iter()
        .map(|number| SendRequest {
            phone: phone_input(number),
            usage: usage.clone(),
            params: b.template_param_set.clone(),
            code: code.clone(),
            ip: None,
            locale: None,
            idempotency_key: None,
            vouched: false,
        })
        .collect();
    let message = CallerMessage {
        template_id: b.template_id,
        sign_name: b.sign_name.filter(|s| !s.is_empty()),
        extras: CallExtras { extend_code: b.extend_code, session_context: b.session_context, sender_id: b.sender_id },
    };
    Ok(SendSms { message, requests, numbers: b.phone_number_set })
}

/// Accepts any JSON value whose objects repeat no key (compared ignoring ASCII case, as a lenient reader
/// might): Tencent and the gateway must read the same request.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
                while seq.next_element::<UniqueKeys>()?.is_some() {}
                Ok(UniqueKeys)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut keys = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !keys.insert(key.to_ascii_lowercase()) {
                        return Err(serde::de::Error::custom("a key is repeated"));
                    }
                    map.next_value::<UniqueKeys>()?;
                }
                Ok(UniqueKeys)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A passthrough body, before it is forwarded with the tenant's real keys: a JSON object repeating no key;
/// its `SmsSdkAppId` (any spelling of the name) the tenant's own, and present for an action that reads one
/// application's data, so a caller reaches no other application of a shared Tencent account.
pub(crate) fn check_passthrough(body: &[u8], action: &str, tenant: &Tenant) -> Result<(), ApiError> {
    let not_json = || ApiError::invalid("InvalidParameter", "The body must be a JSON object repeating no key.");
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not_json());
    }
    serde_json::from_slice::<UniqueKeys>(body).map_err(|_| not_json())?;
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).map_err(|_| not_json())?;
    let app_id = object.iter().find(|(k, _)| k.eq_ignore_ascii_case("SmsSdkAppId")).map(|(_, v)| v);
    match app_id {
        Some(serde_json::Value::String(id)) if Some(id) == tenant.tencent.as_ref().map(|t| &t.sdk_app_id) => Ok(()),
        Some(_) => {
            Err(ApiError::invalid("InvalidParameterValue.SdkAppIdNotExist", "SmsSdkAppId is not this account's."))
        }
        None if read_scope(action) == Some(ReadScope::App) => {
            Err(ApiError::invalid("MissingParameter", "The request is missing a required parameter `SmsSdkAppId`."))
        }
        None => Ok(()),
    }
}

/// The Tencent code of a number the gateway refused or could not send, given the window of the limit rule
/// that denied it (rate limits only). Tencent's own code when Tencent answered.
pub fn status_code(e: &GatewayError, rule_window: Option<Duration>) -> &str {
    use GatewayError::*;
    match e {
        RateLimited { .. } => match rule_window.unwrap_or_default().as_secs() {
            0..=60 => "LimitExceeded.PhoneNumberThirtySecondLimit",
            61..=3600 => "LimitExceeded.PhoneNumberOneHourLimit",
            _ => "LimitExceeded.PhoneNumberDailyLimit",
        },
        CountryBlocked | NumberTypeBlocked { .. } | SuspectedPumping { .. } | Rejected(_) => {
            "FailedOperation.PhoneNumberInBlacklist"
        }
        InvalidPhone { upstream: None } => "InvalidParameterValue.IncorrectPhoneNumber",
        NoTemplate { .. } => "FailedOperation.TemplateIncorrectOrUnapproved",
        SpendCapReached { cap, .. } if cap.contains(' ') => "LimitExceeded.AppCountryOrRegionDailyLimit",
        SpendCapReached { .. } => "LimitExceeded.AppDailyLimit",
        InvalidPhone { upstream: Some(u) }
        | UpstreamRejected(u)
        | UpstreamRateLimited { upstream: u, .. }
        | UpstreamUnavailable { upstream: Some(u), .. } => &u.code,
        UpstreamUnavailable { upstream: None, .. } => "InternalError.SendAndRecvFail",
        UpstreamTimeout => "InternalError.Timeout",
        LimiterUnavailable | ScriptBusy | ScriptError(_) | Internal(_) | NoRecentSend => "InternalError",
        InvalidRequest(_) => "InvalidParameter",
        // Refusals of a whole request; never a single number's.
        Unauthorized | BadSignature(_) => "AuthFailure.SignatureFailure",
        NotFound | MethodNotAllowed { .. } => "UnsupportedProtocol",
        PayloadTooLarge => "RequestSizeLimitExceeded",
        RequestTimeout => "InvalidRequest",
        ServerBusy => "RequestLimitExceeded",
        UnsupportedMediaType => "InvalidParameter",
    }
}

/// The message of a refused number: the gateway's public message, never Tencent's text (a caller such as
/// Logto shows it to the end user; the operator finds Tencent's in the log).
pub(crate) fn status_message(e: &GatewayError) -> String {
    crate::phone::mask_numbers(&e.public_message()).into_owned()
}

impl Gateway {
    /// Answers one request of the Tencent-compatible listener.
    pub async fn handle_tencent<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let id = respond::request_id(req.headers());
        let runtime = self.runtime();
        let mut trail = Trail { request_id: id.clone(), ..Trail::default() };
        match self.tencent_call(&runtime, req, &id, started, &mut trail).await {
            Ok(response) => response,
            Err(e) => {
                // One log event and one metrics update for a request refused whole.
                self.record(Route::TencentApi, &Err((*e.cause).clone()), &trail, &id, started, StatusCode::OK);
                let mut response = envelope(&id, json!({"Error": {"Code": e.code, "Message": e.message}}));
                respond::close_if_unread(&mut response, &e.cause);
                response
            }
        }
    }

    async fn tencent_call<B>(
        &self,
        runtime: &Runtime,
        req: Request<B>,
        id: &str,
        started: Instant,
        trail: &mut Trail,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let config = runtime.config();
        if req.method() != Method::POST || req.uri().path() != "/" {
            return Err(ApiError::from_gateway(GatewayError::NotFound));
        }
        let head = Head::read(req.headers())?;
        let Some((tenant, client)) = runtime.sdk_client(&head.secret_id) else {
            let message = "The SecretId is not known.";
            return Err(ApiError {
                code: "AuthFailure.SecretIdNotFound",
                message: message.into(),
                cause: Box::new(GatewayError::BadSignature(message)),
            });
        };
        let (tenant, client) = (tenant.clone(), client.clone());
        trail.tenant = Some(tenant.name.clone());
        head.check_time(self.shared.services.clock.unix_seconds())?;
        if !head.is_json() {
            return Err(ApiError::from_gateway(GatewayError::UnsupportedMediaType));
        }
        let limits = body::BodyLimits { max_bytes: config.server.max_body_bytes, timeout: config.server.body_timeout };
        let (bytes, hold) = self
            .shared
            .unverified
            .read(body::SignedDoor::TencentApi, req, limits)
            .await
            .map_err(ApiError::from_gateway)?;
        self.metrics().signature_checks(body::SignedDoor::TencentApi.label(), 1);
        let verified = head.verify(&client, &bytes);
        drop(hold);
        verified?;

        if head.action != api::ACTION && !tenant.sdk_passthrough.contains(&head.action) {
            return Err(ApiError {
                code: "UnsupportedOperation",
                message: format!("The action {} is not available through this gateway.", truncate(&head.action)),
                cause: Box::new(GatewayError::InvalidRequest("action not in sdk_passthrough".into())),
            });
        }
        // Every action, forwarded or not, in the one version whose requests the gateway reads.
        if head.version != api::VERSION {
            return Err(ApiError {
                code: "NoSuchVersion",
                message: format!("This gateway serves version {} only.", api::VERSION),
                cause: Box::new(GatewayError::InvalidRequest("unsupported API version".into())),
            });
        }
        if head.action != api::ACTION {
            check_passthrough(&bytes, &head.action, &tenant)?;
            let forwarded = self
                .shared
                .services
                .providers
                .tencent
                .forward(
                    tencent_account(&tenant)?,
                    &tenant.providers.tencent,
                    &head.action,
                    &head.version,
                    bytes.to_vec(),
                )
                .await;
            tracing::info!(request_id = %id, tenant = %tenant.name, action = %head.action,
                outcome = forwarded.as_ref().map_or_else(|e| e.code(), |_| "forwarded"), "tencent api passthrough");
            return match forwarded {
                Ok((_, answer)) => Ok(respond::json(StatusCode::OK, id, without_upstream_text(answer, id))),
                Err(e) => Err(ApiError::from_gateway(e)),
            };
        }
        let send = parse_send_sms(&bytes, &tenant)?;
        let session_context = send.message.extras.session_context.clone().unwrap_or_default();
        let hook_log = crate::script::LogBudget::default();
        let mut trails: Vec<Trail> = (0..send.requests.len())
            .map(|_| Trail {
                request_id: id.to_owned(),
                tenant: Some(tenant.name.clone()),
                hook_log: hook_log.clone(),
                ..Trail::default()
            })
            .collect();
        let results = self.shared.services.send_batch(&tenant, send.requests, &send.message, &mut trails).await;
        let mut set = Vec::with_capacity(results.len());
        for ((result, trail), written) in results.iter().zip(&trails).zip(&send.numbers) {
            self.record(Route::TencentApi, &result.outcome, trail, id, started, StatusCode::OK);
            set.push(entry(result, trail, written, &session_context));
        }
        Ok(envelope(id, json!({ "SendStatusSet": set })))
    }
}

/// A forwarded answer as the caller gets it: Tencent's data as it came, but an error's message replaced by the
/// gateway's (Tencent's text can be operator detail, such as a credentials error; the code stays). An answer
/// that is not Tencent's envelope becomes `InternalError`.
fn without_upstream_text(answer: Vec<u8>, id: &str) -> Vec<u8> {
    let Ok(mut envelope) = serde_json::from_slice::<serde_json::Value>(&answer) else {
        return internal_error(id);
    };
    let Some(response) = envelope.get_mut("Response").and_then(|r| r.as_object_mut()) else {
        return internal_error(id);
    };
    match response.get_mut("Error").and_then(|e| e.as_object_mut()) {
        None => answer,
        Some(error) => {
            error.insert("Message".into(), json!("Tencent refused the request; the operator's log has the detail."));
            envelope.to_string().into_bytes()
        }
    }
}

fn internal_error(id: &str) -> Vec<u8> {
    let message = GatewayError::UpstreamUnavailable { reason: String::new(), upstream: None }.public_message();
    json!({"Response": {"Error": {"Code": "InternalError", "Message": message}, "RequestId": id}})
        .to_string()
        .into_bytes()
}

/// `{"Response": {…, "RequestId"}}` with HTTP 200.
fn envelope(id: &str, mut response: serde_json::Value) -> Response<Full<Bytes>> {
    response["RequestId"] = json!(id);
    respond::json(StatusCode::OK, id, json!({ "Response": response }).to_string())
}

/// One number's `SendStatusSet` entry: Tencent's own fields when Tencent judged the number in this request,
/// else ones in its shape; the message always the gateway's own (never Tencent's text). A number that may
/// have been sent reads `Ok`: the one code after which no caller or SDK sends again.
fn entry(result: &NumberResult, trail: &Trail, written: &str, session_context: &str) -> SendStatus {
    let phone_number = trail.phone.as_ref().map_or_else(|| written.to_owned(), |p| p.e164().to_owned());
    let iso_code = trail.phone.as_ref().map(|p| p.country_code().to_owned()).unwrap_or_default();
    let mut status = match &result.entry {
        Some(entry) => entry.status.clone(),
        None => SendStatus {
            serial_no: String::new(),
            phone_number,
            fee: 0,
            session_context: session_context.to_owned(),
            code: String::new(),
            message: String::new(),
            iso_code,
        },
    };
    match &result.outcome {
        Ok(accepted) => {
            if let Some(receipt) = &accepted.receipt {
                (status.serial_no, status.fee) = (receipt.serial_no.clone(), receipt.fee);
            }
            status.code = "Ok".into();
            status.message = match accepted.delivery {
                Delivery::Sent => "send success",
                Delivery::DryRun => "dry run: signed, not sent",
                Delivery::TestNumber => "test number: not sent",
                Delivery::MaybeSent => "sent, not confirmed: do not send again",
            }
            .into();
        }
        Err(e) => {
            let window = match e {
                GatewayError::RateLimited { rule, .. } => {
                    trail.limits.as_ref().and_then(|d| d.rules.iter().find(|r| &r.name == rule)).map(|r| r.window)
                }
                _ => None,
            };
            status.serial_no.clear();
            status.fee = 0;
            status.code = status_code(e, window).to_owned();
            status.message = status_message(e);
        }
    }
    status
}

/// The tenant's Tencent account: `check` allows SDK callers only beside one, so its absence is a bug.
fn tencent_account(tenant: &crate::config::Tenant) -> Result<&crate::config::TencentAccount, ApiError> {
    tenant
        .tencent
        .as_ref()
        .ok_or_else(|| ApiError::from_gateway(GatewayError::Internal("SDK callers without a tencent section".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn tc(authorization: &str, host: &str, content_type: &str, ts: &str) -> HeaderMap {
        headers(&[
            ("authorization", authorization),
            ("host", host),
            ("content-type", content_type),
            ("x-tc-action", "SendSms"),
            ("x-tc-version", "2021-01-11"),
            ("x-tc-region", "ap-guangzhou"),
            ("x-tc-timestamp", ts),
        ])
    }

    fn client(id: &str, key: &str) -> Credentials {
        Credentials { secret_id: id.into(), secret_key: crate::config::Secret::new(key) }
    }

    #[test]
    fn published_vectors_verify_through_the_verifier() {
        // V2 of REFERENCE.md: the SMS vector.
        let body = r#"{"PhoneNumberSet":["+8613800000000"],"SmsSdkAppId":"1400006666","SignName":"腾讯云","TemplateId":"1110","TemplateParamSet":["4370"]}"#;
        let auth = "TC3-HMAC-SHA256 Credential=AKIDtest/2023-11-14/sms/tc3_request, SignedHeaders=content-type;host, \
                    Signature=e4d8c980e383e91faeff0785ac2048134658bdd0c3743ce9c9fdc9b9f50ab69b";
        let h = tc(auth, "sms.tencentcloudapi.com", "application/json", "1700000000");
        let head = Head::read(&h).unwrap();
        assert_eq!(head.secret_id, "AKIDtest");
        head.check_time(1_700_000_100).unwrap();
        head.verify(&client("AKIDtest", "testkey"), body.as_bytes()).unwrap();
        assert_eq!(
            head.verify(&client("AKIDtest", "otherkey"), body.as_bytes()).unwrap_err().code,
            "AuthFailure.SignatureFailure"
        );
        let tampered = body.replace("4370", "4371");
        assert!(head.verify(&client("AKIDtest", "testkey"), tampered.as_bytes()).is_err());

        // V3: as Logto's connector signs (charset in the Content-Type, signed byte for byte).
        let body = r#"{"SmsSdkAppId":"1400006666","SignName":"腾讯云","TemplateId":"1110","TemplateParamSet":["123456"],"PhoneNumberSet":["8613800138000"]}"#;
        let auth =
            "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2024-01-02/sms/tc3_request, SignedHeaders=content-type;host, \
                    Signature=8f52bd77b6b354623d3f380e911bee44f3414e56b79e1ee5033ed2e13ac284e5";
        let h = tc(auth, "sms.tencentcloudapi.com", "application/json; charset=utf-8", "1704164645");
        Head::read(&h).unwrap().verify(&client("AKIDEXAMPLE", "SECRETEXAMPLE"), body.as_bytes()).unwrap();
    }

    #[test]
    fn extra_signed_headers_are_verified_in_canonical_order() {
        // The current signature docs sign x-tc-action too; the verifier takes any list with content-type and host.
        let body = br#"{"a":1}"#;
        let pairs = [("content-type", "application/json"), ("host", "127.0.0.1:8081"), ("x-tc-action", "sendsms")];
        let (canonical, signed) = sign::canonical_request(&pairs, &sign::hash_hex(body));
        assert_eq!(signed, "content-type;host;x-tc-action");
        let signature =
            sign::signature("k3y-k3y-k3y-k3y-k3y", "sms", 1_704_164_645, &sign::hash_hex(canonical.as_bytes()));
        let auth = format!(
            "TC3-HMAC-SHA256 Credential=id/2024-01-02/sms/tc3_request, SignedHeaders=x-tc-action;content-type;host, Signature={signature}"
        );
        let mut h = tc(&auth, "127.0.0.1:8081", "application/json", "1704164645");
        h.insert("x-tc-action", HeaderValue::from_static("SendSms"));
        Head::read(&h).unwrap().verify(&client("id", "k3y-k3y-k3y-k3y-k3y"), body).unwrap();
    }

    #[test]
    fn malformed_heads_get_tencent_codes() {
        let sig = "0".repeat(64);
        let good = format!("TC3-HMAC-SHA256 Credential=id/2024-01-02/sms/tc3_request, SignedHeaders=content-type;host, Signature={sig}");
        let code = |h: HeaderMap| Head::read(&h).err().map(|e| e.code);
        assert_eq!(code(tc(&good, "h", "application/json", "1704164645")), None);
        assert_eq!(code(tc("Bearer x", "h", "application/json", "1")), Some("AuthFailure.InvalidAuthorization"));
        assert_eq!(
            code(tc(&good.replace("/sms/", "/cvm/"), "h", "application/json", "1")),
            Some("AuthFailure.InvalidAuthorization")
        );
        assert_eq!(
            code(tc(&good.replace("content-type;host", "host"), "h", "application/json", "1")),
            Some("AuthFailure.InvalidAuthorization")
        );
        let mut h = tc(&good, "h", "application/json", "1");
        h.remove("x-tc-action");
        assert_eq!(code(h), Some("MissingParameter"));
        let mut h = tc(&good, "h", "application/json", "1");
        h.insert("x-tc-content-sha256", HeaderValue::from_static("UNSIGNED-PAYLOAD"));
        assert_eq!(code(h), Some("AuthFailure.InvalidAuthorization"));
        let head = Head::read(&tc(&good, "h", "application/json", "1704164645")).unwrap();
        assert_eq!(head.check_time(1_704_164_645 + 301).unwrap_err().code, "AuthFailure.SignatureExpire");
        assert_eq!(head.check_time(1_704_164_645 - 301).unwrap_err().code, "AuthFailure.SignatureExpire");
        let wrong_date =
            Head::read(&tc(&good.replace("2024-01-02", "2024-01-03"), "h", "application/json", "1704164645")).unwrap();
        assert_eq!(wrong_date.check_time(1_704_164_645).unwrap_err().code, "AuthFailure.SignatureFailure");
    }

    #[test]
    fn bare_mainland_numbers_read_as_plus_86() {
        assert_eq!(phone_input("13800138000"), PhoneInput::Logto("8613800138000".into()));
        assert_eq!(phone_input("+14155550100"), PhoneInput::Logto("+14155550100".into()));
        assert_eq!(phone_input("8613800138000"), PhoneInput::Logto("8613800138000".into()));
    }
}
