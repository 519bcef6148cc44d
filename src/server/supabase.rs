//! `POST /v1/supabase/sms` (or `/v1/supabase/sms/<tenant>`): the Supabase Auth Send SMS hook. The Standard
//! Webhooks signature is checked (headers and timestamp before the body is read, the HMAC over the body
//! after), then the one-number pipeline runs with the tenant's `supabase.usage`. Answers follow how Supabase
//! Auth reads a hook's answer: it shows a message only from a 200 carrying `{"error": {"http_code",
//! "message"}}` (answering the end user with that status), turns any other status into a generic 500, and
//! retries only a 429 or 503 that carries `Retry-After`. So a refusal is a 200 with the error inside; a
//! failure after which a retry can succeed without a second SMS is a real 503 with `Retry-After`; a bad or
//! stale signature is a 401, with nothing sent.

use super::{body, respond, Gateway, Route};
use crate::error::GatewayError;
use crate::ingress::{self, supabase};
use crate::pipeline::Trail;
use crate::runtime::{LiveTenant, Runtime};
use crate::sms::Accepted;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use std::sync::Arc;
use std::time::Instant;

pub const PATH: &str = "/v1/supabase/sms";

impl Gateway {
    /// Answers one hook request (the tenant is named by the path after [`PATH`], or is the only one).
    pub(super) async fn supabase<B>(&self, req: Request<B>, id: &str, started: Instant) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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
        ingress::require_json(req.headers())?;
        let now = self.shared.services.clock.unix_seconds();
        // Headers and timestamp first: a stale or unsigned request is refused before its body is read.
        let envelope = supabase::Envelope::read(req.headers(), now).map_err(unverified)?;
        let limits = body::BodyLimits { max_bytes: config.server.max_body_bytes, timeout: config.server.body_timeout };
        let (bytes, hold) = self.shared.unverified.read(body::SignedDoor::Supabase, req, limits).await?;
        let mut tried = 0;
        let verified_now = envelope.verify(&hook.keys, &bytes, &mut tried);
        self.metrics().signature_checks(body::SignedDoor::Supabase.label(), tried);
        drop(hold);
        verified_now.map_err(unverified)?;
        *verified = true;
        let request = supabase::parse(&bytes, hook)?;
        self.shared.services.send(&tenant, request, trail).await
    }
}

fn unverified(e: supabase::Unverified) -> GatewayError {
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
