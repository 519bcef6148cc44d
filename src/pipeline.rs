//! The send pipeline: normalize -> script -> template -> policy -> upstream, each stage taking the request
//! and returning it or a typed error. The template is resolved before the policy so that a request that
//! cannot be sent (`no_template`) consumes no quota.

use crate::clock::SharedClock;
use crate::config::Tenant;
use crate::error::GatewayError;
use crate::ingress::{PhoneInput, SendRequest};
use crate::phone::{InvalidPhone, Phone};
use crate::policy::{Decision, Limiter, Subject};
use crate::script::{Routed, ScriptReport};
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
    pub tenant: Option<Arc<str>>,
    pub usage: Option<String>,
    pub phone: Option<Phone>,
    pub template_id: Option<String>,
    pub limits: Option<Decision>,
    pub upstream_code: Option<String>,
    pub upstream_latency: Option<Duration>,
    /// What the tenant's Lua hook did, when it has one.
    pub script: Option<ScriptReport>,
    /// The request's id, for log lines written during the pipeline (the hook's `smsgate.log`).
    pub request_id: Option<String>,
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

/// Normalize stage: the number as the route writes it -> E.164 and country.
pub fn normalize(tenant: &Tenant, input: &PhoneInput) -> Result<Phone, GatewayError> {
    let parsed = match input {
        PhoneInput::Logto(to) => Phone::from_logto(to),
        PhoneInput::Native(text) => Phone::from_native(text, tenant.default_country),
    };
    parsed.map_err(|InvalidPhone| GatewayError::InvalidPhone { upstream: None })
}

/// Template stage: the usage type's TemplateId, falling back to `Generic`.
pub fn template<'t>(tenant: &'t Tenant, usage: &str) -> Result<&'t str, GatewayError> {
    tenant.templates.resolve(usage).ok_or_else(|| GatewayError::NoTemplate { usage: usage.to_owned() })
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
        let normalized = normalize(tenant, &request.phone);
        trail.phone = normalized.as_ref().ok().cloned();
        let routed = match &tenant.script {
            Some(hook) => {
                let (routed, report) =
                    crate::script::stage(hook, tenant, &request, normalized, trail.request_id.as_deref());
                trail.script = Some(report);
                routed?
            }
            None => Routed {
                phone: normalized?,
                usage: request.usage.clone(),
                params: request.params,
                template_id: None,
                sign_name: None,
                region: None,
            },
        };
        // Everything after the hook, limits included, keys on the final number and usage.
        let Routed { phone, usage, params, template_id, sign_name, region } = routed;
        trail.usage = Some(usage.clone());
        trail.phone = Some(phone.clone());

        let template_id = match template_id {
            Some(id) => id,
            None => template(tenant, &usage)?.to_owned(),
        };
        trail.template_id = Some(template_id.clone());

        let decision = self.limiter.decide(tenant, &Subject { phone: &phone, usage: &usage, ip: request.ip }, commit);
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
            sign_name: sign_name.or_else(|| account.sign_name.clone()),
            params,
            region: region.unwrap_or_else(|| account.region.clone()),
        };
        let request = TencentClient::prepare(account, &sms, self.clock.unix_seconds());
        Ok(Planned { sms, request })
    }

    /// The whole pipeline for one request.
    pub async fn send(
        &self,
        tenant: &Tenant,
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
        let clock = self.clock.clone();
        let result = self.tencent.send(request, account.timeout, move || clock.unix_seconds()).await;
        trail.upstream_latency = Some(started.elapsed());
        match result {
            Ok(receipt) => {
                trail.upstream_code = Some("Ok".into());
                Ok(Accepted { delivery: Delivery::Sent, template_id: sms.template_id, receipt: Some(receipt) })
            }
            Err(e) => {
                trail.upstream_code = e.upstream().map(|u| u.code.clone());
                Err(e)
            }
        }
    }
}
