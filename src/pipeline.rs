//! The send pipeline: normalize -> script -> template -> policy -> upstream, each stage taking the request
//! and returning it or a typed error. The template is resolved before the policy so that a request that
//! cannot be sent (`no_template`) consumes no quota.

use crate::clock::SharedClock;
use crate::config::Tenant;
use crate::error::GatewayError;
use crate::ingress::{PhoneInput, SendRequest};
use crate::phone::{InvalidPhone, Masked, Phone};
use crate::policy::{Decision, Limiter, Subject};
use crate::tencent::{OutboundSms, PreparedRequest, Receipt, TencentClient};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The process-wide services every request uses; they outlive config reloads.
pub struct Services {
    pub limiter: Limiter,
    pub tencent: TencentClient,
    pub clock: SharedClock,
}

/// What each stage decided, for the response headers and the one log event per request.
#[derive(Debug, Default)]
pub struct Trail {
    pub request_id: String,
    pub tenant: Option<Arc<str>>,
    pub usage: Option<String>,
    pub phone: Option<Phone>,
    pub template_id: Option<String>,
    pub limits: Option<Decision>,
    pub upstream_code: Option<String>,
    pub upstream_latency: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    DryRun,
}

/// A send the pipeline accepted.
#[derive(Debug)]
pub struct Accepted {
    pub delivery: Delivery,
    pub template_id: String,
    pub receipt: Option<Receipt>,
}

/// Held by a send from the moment it is handed to Tencent; if it is dropped unfinished (the process stops
/// past its shutdown grace), the send's outcome is unknown and the log says so.
struct HandedOver {
    request_id: String,
    tenant: Arc<str>,
    phone: String,
    finished: bool,
}

impl HandedOver {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for HandedOver {
    fn drop(&mut self) {
        if !self.finished {
            tracing::warn!(
                request_id = %self.request_id,
                tenant = %self.tenant,
                phone = %self.phone,
                "send abandoned after it was handed to Tencent: outcome unknown"
            );
        }
    }
}

/// Normalize stage: the number as the route writes it -> E.164 and country.
pub fn normalize(tenant: &Tenant, input: &PhoneInput) -> Result<Phone, GatewayError> {
    let parsed = match input {
        PhoneInput::Logto(to) => Phone::from_logto(to),
        PhoneInput::Native(text) => Phone::from_native(text, tenant.default_country),
    };
    parsed.map_err(|InvalidPhone| GatewayError::InvalidPhone { upstream: None })
}

/// Template stage: the TemplateId and sign name for the usage type and the kind of number (mainland China
/// or international), falling back to `Generic` within that kind only.
pub fn template<'t>(
    tenant: &'t Tenant,
    usage: &str,
    phone: &Phone,
) -> Result<(&'t str, Option<&'t str>), GatewayError> {
    let (templates, sign_name) = tenant.templates_for(phone.is_mainland_china());
    let id = templates.resolve(usage).ok_or_else(|| GatewayError::NoTemplate { usage: usage.to_owned() })?;
    Ok((id, sign_name))
}

/// Everything up to the network: the message to send, signed, after every check has passed.
pub struct Planned {
    pub sms: OutboundSms,
    pub request: PreparedRequest,
}

impl Services {
    /// Runs the stages before the network. With `commit` false (explain), quota is judged but not consumed.
    pub fn plan(
        &self,
        tenant: &Tenant,
        request: SendRequest,
        commit: bool,
        trail: &mut Trail,
    ) -> Result<Planned, GatewayError> {
        trail.usage = Some(request.usage.clone());
        let phone = normalize(tenant, &request.phone)?;
        trail.phone = Some(phone.clone());

        let (template_id, sign_name) = template(tenant, &request.usage, &phone)?;
        let (template_id, sign_name) = (template_id.to_owned(), sign_name.map(str::to_owned));
        trail.template_id = Some(template_id.clone());

        let decision =
            self.limiter.decide(tenant, &Subject { phone: &phone, usage: &request.usage, ip: request.ip }, commit);
        let denied = (!decision.allowed).then(|| GatewayError::RateLimited {
            rule: decision.denied_by.clone().unwrap_or_default(),
            retry_after: decision.retry_after,
        });
        trail.limits = Some(decision);
        if let Some(denied) = denied {
            return Err(denied);
        }

        let account = &tenant.tencent;
        let sms = OutboundSms {
            phone_e164: phone.e164().to_owned(),
            template_id,
            sign_name,
            params: request.params,
            region: account.region.clone(),
        };
        let request = self.tencent.prepare_next(account, &sms);
        Ok(Planned { sms, request })
    }

    /// The whole pipeline for one request.
    pub async fn send(
        &self,
        tenant: &Arc<Tenant>,
        request: SendRequest,
        trail: &mut Trail,
    ) -> Result<Accepted, GatewayError> {
        let Planned { sms, request } = self.plan(tenant, request, true, trail)?;
        let account = &tenant.tencent;
        if account.dry_run {
            tracing::info!(
                tenant = %tenant.name,
                endpoint = %request.url,
                region = %sms.region,
                body = %request.redacted_body(),
                "dry run: signed, not sent"
            );
            return Ok(Accepted { delivery: Delivery::DryRun, template_id: sms.template_id, receipt: None });
        }
        let started = Instant::now();
        let client = self.tencent.clone();
        let owner = tenant.clone();
        let guard = HandedOver {
            request_id: trail.request_id.clone(),
            tenant: tenant.name.clone(),
            phone: Masked(&sms.phone_e164).to_string(),
            finished: false,
        };
        // Its own task: a caller that hangs up does not cancel a send Tencent may already be delivering.
        let template_id = sms.template_id.clone();
        let send = tokio::spawn(async move {
            let result = client.deliver(&owner.tencent, &sms).await;
            guard.finish();
            result
        });
        let result = send.await.unwrap_or_else(|e| Err(GatewayError::Internal(format!("send task failed: {e}"))));
        trail.upstream_latency = Some(started.elapsed());
        match result {
            Ok(receipt) => {
                trail.upstream_code = Some("Ok".into());
                Ok(Accepted { delivery: Delivery::Sent, template_id, receipt: Some(receipt) })
            }
            Err(e) => {
                trail.upstream_code = e.upstream().map(|u| u.code.clone());
                Err(e)
            }
        }
    }
}
