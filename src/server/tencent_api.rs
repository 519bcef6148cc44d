//! The Tencent-compatible API listener (`server.tencent_listen`): every request is `POST /` as the official
//! SDKs send it. The head is checked before the body is read (headers, SecretId, timestamp), the signature
//! over the body after; `SendSms` runs the batch pipeline (each number through the tenant's policy, the
//! allowed ones in as few upstream calls as Tencent allows, re-signed with the tenant's real keys) and answers
//! `SendStatusSet` in the caller's order; another action is forwarded re-signed when the tenant lists it in
//! `sdk_passthrough`. Every answer is HTTP 200 with a `RequestId`, errors in Tencent's envelope, so the SDKs
//! raise their usual exceptions.

use super::{body, respond, Gateway, Route};
use crate::error::GatewayError;
use crate::ingress::tencent_api::{self, ApiError, Head};
use crate::pipeline::{NumberResult, Trail};
use crate::providers::tencent::api::{self, SendStatus};
use crate::runtime::Runtime;
use crate::sms::Delivery;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use serde_json::json;
use std::time::Instant;

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
            tencent_api::check_passthrough(&bytes, &head.action, &tenant)?;
            let forwarded = self
                .shared
                .services
                .providers
                .tencent
                .forward(&tenant.tencent, &tenant.providers.tencent, &head.action, &head.version, bytes.to_vec())
                .await;
            tracing::info!(request_id = %id, tenant = %tenant.name, action = %head.action,
                outcome = forwarded.as_ref().map_or_else(|e| e.code(), |_| "forwarded"), "tencent api passthrough");
            return match forwarded {
                Ok((_, answer)) => Ok(respond::json(StatusCode::OK, id, without_upstream_text(answer, id))),
                Err(e) => Err(ApiError::from_gateway(e)),
            };
        }
        let send = tencent_api::parse_send_sms(&bytes, &tenant)?;
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

fn truncate(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(cut, _)| &s[..cut])
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
            status.code = tencent_api::status_code(e, window).to_owned();
            status.message = tencent_api::status_message(e);
        }
    }
    status
}
