//! The feedback loop's inbound routes: `POST /v1/logto/webhook/<tenant>` (Logto's signed webhooks; without
//! the tenant, while few tenants have a key), `POST /v1/sms/verified` (a tenant's bearer token) and
//! `POST /v1/tencent/status/<secret>` (Tencent's delivery-status callback, authenticated by its unguessable
//! path). Bodies are read like a send's (the same size limit and deadline, from the tenant's reading slots;
//! Logto's webhook, whose signature covers the body, from the budget of unverified bodies, and only once the
//! signature header is there). One log line and one metric per request; never the path of the status route
//! (it holds the secret), never a number unmasked.

use crate::config::{Config, SHARED_LOGTO_WEBHOOK_KEYS};
use crate::error::GatewayError;
use crate::feedback::signals::{self, LogtoEvent};
use crate::feedback::telemetry::SignalLabels;
use crate::phone::Phone;
use crate::runtime::{LiveTenant, Runtime};
use crate::server::body::{self, BodyLimits, SignedDoor};
use crate::server::{respond, Gateway};
use crate::sms::ProviderId;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use std::sync::Arc;

/// `/v1/<provider>/status/<secret>`: each provider's delivery reports.
const STATUS_PREFIXES: [(&str, ProviderId); 3] = [
    ("/v1/tencent/status/", ProviderId::Tencent),
    ("/v1/aliyun/status/", ProviderId::Aliyun),
    ("/v1/twilio/status/", ProviderId::Twilio),
];
/// Twilio's signature of its status callbacks.
const TWILIO_SIGNATURE: &str = "x-twilio-signature";
const LOGTO_WEBHOOK: &str = "/v1/logto/webhook";

pub(in crate::server) enum SignalRoute {
    /// The tenant named in the path, or none (the shared route).
    LogtoWebhook(Option<String>),
    Verified,
    /// A provider's delivery reports, and the path secret.
    Status(ProviderId, String),
}

impl SignalRoute {
    pub(in crate::server) fn name(&self) -> &'static str {
        match self {
            SignalRoute::LogtoWebhook(_) => "logto_webhook",
            SignalRoute::Verified => "verified",
            SignalRoute::Status(ProviderId::Tencent, _) => "tencent_status",
            SignalRoute::Status(ProviderId::Aliyun, _) => "aliyun_status",
            SignalRoute::Status(ProviderId::Twilio, _) => "twilio_status",
        }
    }
}

pub(in crate::server) fn route_of(path: &str) -> Option<SignalRoute> {
    match path {
        LOGTO_WEBHOOK => Some(SignalRoute::LogtoWebhook(None)),
        "/v1/sms/verified" => Some(SignalRoute::Verified),
        _ => {
            if let Some(tenant) = path.strip_prefix(LOGTO_WEBHOOK).and_then(|rest| rest.strip_prefix('/')) {
                return Some(SignalRoute::LogtoWebhook(Some(tenant.to_owned())));
            }
            STATUS_PREFIXES.iter().find_map(|(prefix, provider)| {
                path.strip_prefix(prefix).map(|secret| SignalRoute::Status(*provider, secret.to_owned()))
            })
        }
    }
}

/// How a signal request ended: its answer, the tenant (when known) and the outcome word for logs/metrics.
struct Handled {
    response: Response<Full<Bytes>>,
    tenant: Option<Arc<str>>,
    outcome: &'static str,
    detail: Option<String>,
}

pub(in crate::server) async fn serve<B>(
    gateway: &Gateway,
    route: SignalRoute,
    req: Request<B>,
    id: &str,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let name = route.name();
    let mut tenant = None;
    let handled = if req.method() != Method::POST {
        Err(GatewayError::MethodNotAllowed { allow: "POST" })
    } else {
        let runtime = gateway.runtime();
        match route {
            SignalRoute::LogtoWebhook(named) => {
                logto_webhook(gateway, &runtime, named.as_deref(), req, id, &mut tenant).await
            }
            SignalRoute::Verified => verified(gateway, &runtime, req, id, &mut tenant).await,
            SignalRoute::Status(provider, secret) => {
                status(gateway, &runtime, provider, &secret, req, id, &mut tenant).await
            }
        }
    };
    let handled = handled.unwrap_or_else(|e| {
        let mut response = respond::error(&e, id, None);
        respond::close_if_unread(&mut response, &e);
        Handled { response, tenant: tenant.clone(), outcome: e.code(), detail: None }
    });
    let tenant_name = handled.tenant.as_deref().unwrap_or("");
    let labels = SignalLabels { route: name.into(), tenant: tenant_name.into(), outcome: handled.outcome.into() };
    gateway.metrics().feedback.signals.get_or_create(&labels).inc();
    tracing::info!(
        request_id = %id,
        route = name,
        status = handled.response.status().as_u16(),
        tenant = tenant_name,
        outcome = handled.outcome,
        detail = handled.detail.as_deref(),
        "feedback signal"
    );
    handled.response
}

async fn logto_webhook<B>(
    gateway: &Gateway,
    runtime: &Runtime,
    named: Option<&str>,
    req: Request<B>,
    id: &str,
    tenant_out: &mut Option<Arc<str>>,
) -> Result<Handled, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The keys an anonymous call makes us try: the named tenant's, or on the shared route those of the (at
    // most SHARED_LOGTO_WEBHOOK_KEYS, see `compile`) tenants with one. Never one per configured tenant.
    let config = runtime.config();
    let candidates: Vec<&Arc<LiveTenant>> = match named {
        Some(name) => runtime.tenant(name).filter(|t| signals::logto_key(t).is_some()).into_iter().collect(),
        None if !config.server.shared_logto_webhook => Vec::new(),
        None => runtime
            .tenants()
            .iter()
            .filter(|t| signals::logto_key(t).is_some())
            .take(SHARED_LOGTO_WEBHOOK_KEYS)
            .collect(),
    };
    if candidates.is_empty() {
        return Err(GatewayError::NotFound);
    }
    super::require_json(req.headers())?;
    let header = req.headers().get(signals::LOGTO_SIGNATURE).and_then(|v| v.to_str().ok());
    let wanted = signals::logto_signature(header)
        .ok_or(GatewayError::BadSignature("missing or malformed logto-signature-sha-256 header"))?;
    let (body, hold) = gateway.shared.unverified.read(SignedDoor::LogtoWebhook, req, limits(config)).await?;
    let mut tried = 0;
    let tenant = candidates.into_iter().find(|t| {
        tried += 1;
        signals::logto_signed(t, &body, &wanted)
    });
    gateway.metrics().signature_checks(SignedDoor::LogtoWebhook.label(), tried);
    drop(hold);
    let tenant = tenant
        .ok_or(GatewayError::BadSignature("no tenant's webhook key verifies the logto-signature-sha-256 header"))?;
    *tenant_out = Some(tenant.name.clone());
    let handled = |outcome, detail: Option<String>| Handled {
        response: respond::empty(StatusCode::NO_CONTENT, id),
        tenant: Some(tenant.name.clone()),
        outcome,
        detail,
    };
    // Logto retries any non-2xx answer: events smsgate cannot use are accepted and ignored.
    let (event, phone) = match signals::parse_logto(&body)? {
        LogtoEvent::Ignored(why) => return Ok(handled("ignored", Some(why.into()))),
        LogtoEvent::Verified { event, phone } => (event, phone),
    };
    let Ok(phone) = Phone::from_logto(&phone) else {
        return Ok(handled("ignored", Some(format!("{event}: primaryPhone is not a valid number"))));
    };
    let services = gateway.services();
    let result = services.feedback.verify(tenant.spec(), &tenant.providers, &phone, None, &services.limiter).await;
    let outcome = verdict(result.found, result.converted);
    Ok(handled(outcome, Some(format!("{event} {}", phone.masked()))))
}

fn limits(config: &Config) -> BodyLimits {
    BodyLimits { max_bytes: config.server.max_body_bytes, timeout: config.server.body_timeout }
}

fn verdict(found: usize, converted: usize) -> &'static str {
    match (found, converted) {
        (0, _) => "no_recent_send",
        (_, 0) => "already_converted",
        _ => "converted",
    }
}

async fn verified<B>(
    gateway: &Gateway,
    runtime: &Runtime,
    req: Request<B>,
    id: &str,
    tenant_out: &mut Option<Arc<str>>,
) -> Result<Handled, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = runtime.config();
    let token = super::bearer_token(req.headers())?;
    let tenant = runtime.tenant_for_token(token).ok_or(GatewayError::Unauthorized)?.clone();
    *tenant_out = Some(tenant.name.clone());
    super::require_json(req.headers())?;
    let body = body::read(req, limits(config), &tenant.body_readers).await?;
    let report = signals::parse_verified(&body)?;
    let phone = Phone::from_native(&report.phone, tenant.default_country)
        .map_err(|_| GatewayError::InvalidPhone { upstream: None })?;
    let services = gateway.services();
    let result = services
        .feedback
        .verify(tenant.spec(), &tenant.providers, &phone, report.request_id.as_deref(), &services.limiter)
        .await;
    if result.found == 0 {
        return Err(GatewayError::NoRecentSend);
    }
    Ok(Handled {
        response: respond::empty(StatusCode::NO_CONTENT, id),
        tenant: Some(tenant.name.clone()),
        outcome: verdict(result.found, result.converted),
        detail: Some(phone.masked().to_string()),
    })
}

async fn status<B>(
    gateway: &Gateway,
    runtime: &Runtime,
    provider: ProviderId,
    secret: &str,
    req: Request<B>,
    id: &str,
    tenant_out: &mut Option<Arc<str>>,
) -> Result<Handled, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = runtime.config();
    // An unknown secret is an unknown route: the answer says nothing about which secrets exist.
    let tenant = runtime.tenant_for_status_secret(provider, secret).ok_or(GatewayError::NotFound)?.clone();
    *tenant_out = Some(tenant.name.clone());
    // Twilio signs its callbacks: one without a signature is refused before its body is read.
    let signature = req.headers().get(TWILIO_SIGNATURE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if provider == ProviderId::Twilio && signature.is_none() {
        return Err(GatewayError::BadSignature("missing X-Twilio-Signature"));
    }
    let body = body::read(req, limits(config), &tenant.body_readers).await?;
    let (reports, ack) = match provider {
        ProviderId::Tencent => (signals::parse_status(&body)?, Some(r#"{"result":0,"errmsg":"OK"}"#)),
        other => {
            let pushed = crate::providers::read_push(&tenant, other, signature.as_deref(), &body)?;
            (pushed.reports, pushed.ack)
        }
    };
    let services = gateway.services();
    let summary = services.feedback.receipts(tenant.spec(), &reports, &services.limiter).await;
    Ok(Handled {
        response: match ack {
            Some(ack) => respond::json(StatusCode::OK, id, ack),
            None => respond::empty(StatusCode::NO_CONTENT, id),
        },
        tenant: Some(tenant.name.clone()),
        outcome: if summary.unknown == 0 { "accepted" } else { "accepted_with_unknown_sid" },
        detail: Some(format!(
            "{} matched, {} unknown sid, {} repeated",
            summary.matched, summary.unknown, summary.repeated
        )),
    })
}
