//! The front doors. A door is one file here holding all that door is: its path (or its listener), how its
//! caller proves who it is (verify), how its body is read and checked into `SendRequest`s (parse), and how it
//! is served and answered (serve, answer), in `impl Gateway` blocks (a door is a child module of `server`, so
//! it reaches the gateway's state). `native.rs`: `POST /v1/sms/send`; `logto.rs`: `POST /v1/logto/sms`
//! (Logto's HTTP SMS connector); `supabase.rs`: the Supabase Auth Send SMS hook; `tencent_api.rs`: the
//! Tencent-compatible API listener; `signals.rs`: the feedback routes; `admin.rs`: the admin API.
//!
//! This file holds what doors share: the checks made before a body is read (a tenant's bearer token, a JSON
//! content type, the `Idempotency-Key` header); the field checks of the bodies (errors name the field at
//! fault, never its value); the send path of the bearer-token doors (native and Logto differ only in how
//! they parse their body); and `record`, the one log line and metrics update of a send request.
//!
//! A new door touches its file (and its `mod` line below); one line in the route table in `server/mod.rs`
//! (`Gateway::handle`; a door with a listener of its own is a `Door` there instead) and its metrics label in
//! `route_label`; for a door that sends, a `Route` variant, which names it in `record`; and its section of the
//! config.

pub mod admin;
pub mod logto;
pub mod native;
pub(super) mod signals;
pub mod supabase;
pub mod tencent_api;

use crate::error::GatewayError;
use crate::metrics::{RequestLabels, RuleLabels, ScriptLabels, TenantLabels};
use crate::pipeline::Trail;
use crate::runtime::Runtime;
use crate::server::{body, respond, Gateway};
use crate::sms::{Accepted, Delivery, SendRequest};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Body;
use std::net::IpAddr;
use std::time::Instant;

/// The front doors that send: which one a send request came through, named in its log line (`doors::record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Native,
    Logto,
    /// The Supabase Auth Send SMS hook.
    Supabase,
    /// The Tencent-compatible API (its own listener).
    TencentApi,
}

impl Route {
    /// The route's name in a send request's log line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Route::Native => "native",
            Route::Logto => "logto",
            Route::Supabase => "supabase",
            Route::TencentApi => "tencent_api",
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, GatewayError> {
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
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), GatewayError> {
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

/// A door's body -> the send it asks for.
type Parse = fn(&[u8]) -> Result<SendRequest, GatewayError>;

impl Gateway {
    /// Serves a send through a door whose caller is a tenant's bearer token and whose body is one JSON
    /// object: the native API and Logto's connector, which differ only in `parse`. Answered with the native
    /// answer (docs/front-doors.md), recorded once.
    async fn serve_bearer<B>(
        &self,
        route: Route,
        parse: Parse,
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
        let result = self.send(&runtime, req, parse, &mut trail).await;
        let mut response = match &result {
            Ok(accepted) => respond::accepted(accepted, &trail, id),
            Err(e) => respond::error(e, id, trail.limits.as_ref()),
        };
        if let Err(e) = &result {
            respond::close_if_unread(&mut response, e);
        }
        if trail.replayed {
            response.headers_mut().insert(respond::IDEMPOTENT_REPLAYED, http::HeaderValue::from_static("true"));
        }
        self.record(route, &result, &trail, id, started, response.status());
        response
    }

    /// Bearer token, tenant, JSON content type, Idempotency-Key, the body within the tenant's reading slots,
    /// then the one-number pipeline.
    async fn send<B>(
        &self,
        runtime: &Runtime,
        req: Request<B>,
        parse: Parse,
        trail: &mut Trail,
    ) -> Result<Accepted, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let config = runtime.config();
        let token = bearer_token(req.headers())?;
        let tenant = runtime.tenant_for_token(token).ok_or(GatewayError::Unauthorized)?.clone();
        trail.tenant = Some(tenant.name.clone());
        require_json(req.headers())?;
        let idempotency_key = idempotency_key(req.headers())?;
        let limits = body::BodyLimits { max_bytes: config.server.max_body_bytes, timeout: config.server.body_timeout };
        let body = body::read(req, limits, &tenant.body_readers).await?;
        let mut request = parse(&body)?;
        request.idempotency_key = idempotency_key;
        self.shared.services.send(&tenant, request, trail).await
    }

    /// The one log event and the metrics of a send request.
    /// `status`: the HTTP status of the answer (200 for every answer of the Tencent-compatible API).
    fn record(
        &self,
        route: Route,
        result: &Result<Accepted, GatewayError>,
        trail: &Trail,
        id: &str,
        started: Instant,
        status: http::StatusCode,
    ) {
        let outcome = match result {
            Ok(accepted) if accepted.delivery == Delivery::TestNumber => "test_number",
            Ok(accepted) => respond::status_word(accepted.delivery),
            Err(e) => e.code(),
        };
        let tenant_name = trail.tenant.as_deref().unwrap_or("");
        let usage_label = match trail.usage.as_deref() {
            Some(usage) if trail.usage_named => usage.to_owned(),
            Some(_) => "other".to_owned(),
            None => String::new(),
        };
        let metrics = &self.shared.metrics;
        metrics
            .requests
            .get_or_create(&RequestLabels { tenant: tenant_name.into(), usage: usage_label, code: outcome.into() })
            .inc();
        if let Some(decision) = &trail.limits {
            for rule in decision.rules.iter().filter(|r| !r.verdict.allowed) {
                metrics
                    .limit_denials
                    .get_or_create(&RuleLabels {
                        tenant: tenant_name.into(),
                        rule: rule.name.clone(),
                        shadow: rule.shadow,
                    })
                    .inc();
                if rule.shadow {
                    tracing::info!(request_id = %id, tenant = tenant_name, rule = %rule.name, "shadow rule would deny");
                }
            }
        }
        if let (Some(report), Some(took)) = (&trail.script, trail.script_duration) {
            let labels = ScriptLabels { tenant: tenant_name.into(), result: report.result().into() };
            metrics.script_results.get_or_create(&labels).inc();
            metrics
                .script_duration
                .get_or_create(&TenantLabels { tenant: tenant_name.into() })
                .observe(took.as_secs_f64());
        }
        if let (Some(latency), Some(provider)) = (trail.upstream_latency, trail.provider) {
            metrics.observe_upstream(tenant_name, provider, trail.upstream_code, outcome, latency, &trail.failed_over);
        }
        // A replay is answered from the first send's receipt: billed once.
        if let (Ok(Accepted { receipt: Some(receipt), .. }), Some(phone), false) =
            (result, &trail.phone, trail.replayed)
        {
            metrics.observe_fee(tenant_name, phone.country_code(), receipt.fee);
        }
        // Under a flood, rate_limited lines are capped per tenant; the count of those left out rides on the
        // next line written.
        let mut suppressed = None;
        if let (Err(GatewayError::RateLimited { .. } | GatewayError::SuspectedPumping { .. }), Some(tenant)) =
            (result, &trail.tenant)
        {
            match self.shared.denial_log.admit(tenant, self.shared.services.clock.monotonic()) {
                None => return,
                Some(0) => {}
                Some(n) => suppressed = Some(n),
            }
        }
        let error = result.as_ref().err();
        let level_is_warn = error.is_some_and(|e| e.status().is_server_error()) || trail.unconfirmed.is_some();
        let route = route.name();
        let phone = trail.phone.as_ref().map(|p| tracing::field::display(p.masked()));
        let country = trail.phone.as_ref().map(|p| p.country_code());
        let upstream_ms = trail.upstream_latency.map(crate::logfields::millis);
        let latency_ms = crate::logfields::millis(started.elapsed());
        let status = status.as_u16();
        // Hook rejections carry the script's own text, and Tencent's its own, either of which may hold a
        // number; an unconfirmed send says why. For the log only: answers never carry Tencent's text.
        let detail = match (error, &trail.unconfirmed) {
            (Some(e), _) => Some(match e.upstream() {
                Some(u) => format!("{e}: {} ({})", u.code, u.message),
                None => e.to_string(),
            }),
            (None, unconfirmed) => unconfirmed.clone(),
        };
        let detail = detail.map(|d| crate::phone::mask_numbers(&d).into_owned());
        let script = trail.script.as_ref().map(|s| s.summary());
        let failed_over = (!trail.failed_over.is_empty()).then(|| {
            let hops: Vec<String> = trail.failed_over.iter().map(|(p, code)| format!("{p}: {code}")).collect();
            hops.join(", ")
        });
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    request_id = %id,
                    route,
                    status,
                    tenant = tenant_name,
                    usage = trail.usage.as_deref(),
                    phone,
                    country,
                    template_id = trail.template_id.as_deref(),
                    provider = trail.provider.map(crate::sms::ProviderId::as_str),
                    failed_over = failed_over.as_deref(),
                    script = script.as_deref(),
                    outcome,
                    upstream_code = trail.upstream_code,
                    upstream_ms,
                    latency_ms,
                    detail = detail.as_deref(),
                    replayed = trail.replayed.then_some(true),
                    suppressed,
                    "send request"
                )
            };
        }
        if level_is_warn {
            event!(tracing::Level::WARN);
        } else {
            event!(tracing::Level::INFO);
        }
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
