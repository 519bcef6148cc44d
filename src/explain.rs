//! `smsgate explain`: runs normalize, script, template, policy (judged, not consumed) and signing for one
//! request and reports each stage's decision and the exact HTTP request it would send. The secret key never
//! enters a prepared request, so none can be printed.

use crate::clock::SharedClock;
use crate::error::GatewayError;
use crate::pipeline::{Planned, Services, Trail};
use crate::policy::Limiter;
use crate::providers::Providers;
use crate::runtime::Runtime;
use crate::script::ScriptOutcome;
use crate::sms::{PhoneInput, ProviderId, SendRequest};
use serde_json::json;
use std::fmt;

pub struct Input {
    pub tenant: String,
    pub phone: String,
    pub usage: String,
    pub code: String,
    pub logto: bool,
}

pub struct Report {
    tenant: String,
    /// Which route the number took and why.
    route: String,
    input_phone: String,
    trail: Trail,
    outcome: Result<Planned, GatewayError>,
    dry_run: bool,
    /// Protection state is read from Redis (redis backend) rather than this process's empty memory.
    shared_state: bool,
    number_types: Vec<crate::phone::NumberType>,
    /// The limits were judged against the live shared counts (redis backend), not a fresh state.
    live_counts: bool,
}

/// Explains one request. With the memory backend, limiter state lives in the serving process, so rules are
/// judged from a fresh state: the report shows which rules apply and what they allow, not the live counts.
/// With the redis backend the live shared counts are read (never written).
pub async fn explain(runtime: Runtime, clock: SharedClock, input: &Input) -> Result<Report, String> {
    let config = runtime.config();
    let tenant = runtime.tenant(&input.tenant).ok_or_else(|| format!("no tenant named {}", input.tenant))?.clone();
    let limiter = Limiter::from_backend(&config.limits_backend, clock.clone()).map_err(|e| e.to_string())?;
    let services = Services::new(limiter, Providers::new(clock.clone(), Default::default()), clock);
    let request = SendRequest {
        phone: if input.logto {
            PhoneInput::Logto(input.phone.clone())
        } else {
            PhoneInput::Native(input.phone.clone())
        },
        usage: input.usage.clone(),
        params: vec![input.code.clone()],
        code: Some(input.code.clone()),
        ip: None,
        locale: None,
        idempotency_key: None,
        vouched: false,
    };
    let mut trail = Trail { tenant: Some(tenant.name.clone()), ..Trail::default() };
    // With the redis backend, the live blocks are read (never written).
    services.feedback.load_blocks(&tenant, &services.limiter).await;
    let shared_state = services.limiter.shared().is_some();
    let outcome = services.plan(&tenant, request, &mut trail).await;
    let route = describe_route(&tenant, &trail);
    Ok(Report {
        route,
        tenant: tenant.name.to_string(),
        input_phone: input.phone.clone(),
        dry_run: trail.provider.and_then(|p| tenant.upstream(p)).is_some_and(|u| u.dry_run),
        number_types: tenant.number_types.clone(),
        live_counts: !matches!(config.limits_backend, crate::config::LimitsBackend::Memory),
        trail,
        outcome,
        shared_state,
    })
}

/// The route a send took, in words: which `routes:` entry matched and why, the providers in order, and the
/// hook's choice.
fn describe_route(tenant: &crate::config::Tenant, trail: &Trail) -> String {
    let Some(via) = trail.via else { return String::new() };
    let why = match trail.route.and_then(|i| tenant.routes.get(i).map(|r| (i, r))) {
        None => "the tenant's one provider".to_owned(),
        Some((i, r)) if r.is_default() => format!("routes[{i}], the default route"),
        Some((i, r)) => {
            let matched: Vec<&str> = trail.phone.as_ref().map_or_else(Vec::new, |p| {
                let by_country = r.countries.iter().filter(|c| *c == p.country_code());
                by_country
                    .chain(r.prefixes.iter().filter(|x| p.e164().starts_with(x.as_str())))
                    .map(String::as_str)
                    .collect()
            });
            format!("routes[{i}], matched by {}", matched.join(", "))
        }
    };
    let hook = trail.hook_provider.map_or(String::new(), |p| format!("; the hook chose {p} first"));
    format!("{why}: via {via}{hook}")
}

impl Report {
    fn route_json(&self) -> serde_json::Value {
        json!({"why": self.route, "via": self.trail.via.map(|v| v.iter().collect::<Vec<_>>()),
               "provider": self.trail.provider})
    }

    /// The number as the normalize stage left it, before any hook rewrite.
    fn normalized(&self) -> Option<&crate::phone::Phone> {
        match &self.trail.script {
            Some(report) => report.before.as_ref(),
            None => self.trail.phone.as_ref(),
        }
    }

    fn script_json(&self) -> serde_json::Value {
        let Some(report) = &self.trail.script else { return json!({"ran": false}) };
        let (outcome, detail, changes) = match &report.outcome {
            ScriptOutcome::Changed(changes) => ("ran", None, changes.as_slice()),
            ScriptOutcome::Rejected(message) => ("rejected", Some(message), &[][..]),
            ScriptOutcome::Failed(detail) => ("failed", Some(detail), &[][..]),
            ScriptOutcome::Skipped(detail) => ("skipped", Some(detail), &[][..]),
        };
        let changes: Vec<_> = changes.iter().map(|c| json!({"field": c.field, "from": c.from, "to": c.to})).collect();
        json!({"ran": true, "path": report.path, "outcome": outcome, "detail": detail, "changes": changes,
               "phone": self.trail.phone.as_ref().map(|p| p.e164())})
    }

    pub fn to_json(&self) -> serde_json::Value {
        let phone = self.normalized();
        let rules: Vec<_> = self
            .trail
            .limits
            .iter()
            .flat_map(|d| &d.rules)
            .map(|r| {
                json!({"rule": r.name, "limit": r.limit, "per_seconds": r.window.as_secs(), "shadow": r.shadow,
                       "allowed": r.verdict.allowed, "remaining_after": r.verdict.remaining})
            })
            .collect();
        let mut out = json!({
            "tenant": self.tenant,
            "normalize": {"input": self.input_phone, "e164": phone.map(|p| p.e164()), "country": phone.map(|p| p.country_code()),
                          "number_type": phone.map(|p| p.number_type().as_str())},
            "script": self.script_json(),
            "template": {"usage": self.trail.usage, "template_id": self.trail.template_id,
                         "generic_fallback": self.trail.usage_fallback_from.is_some(),
                         "requested_usage": self.trail.usage_fallback_from},
            "policy": {"rules": rules, "allowed": self.trail.limits.as_ref().map(|d| d.allowed),
                       "test_number": self.trail.test_number, "live_counts": self.live_counts},
            "protection": {"keys": self.trail.protection, "live_state": self.shared_state},
            "dry_run": self.dry_run,
        });
        match &self.outcome {
            Ok(planned) => {
                let headers: serde_json::Map<_, _> =
                    planned.request.redacted_headers().map(|(k, v)| (k.to_string(), json!(v))).collect();
                out["provider"] = json!(planned.provider);
                out["route"] = self.route_json();
                out["request"] = json!({"method": "POST", "url": planned.request.redacted_url(), "headers": headers,
                    "body": shown_body(planned)});
                out["outcome"] = json!("would send");
            }
            Err(e) => {
                out["outcome"] = json!({"code": e.code(), "status": e.status().as_u16(), "message": e.public_message()})
            }
        }
        out
    }
}

/// The signed body as explain prints it: TemplateParamSet (the code) as `***`, everything else as sent.
/// The body as `explain` shows it: Tencent's with the number as the operator gave it and the code hidden;
/// another provider's as its dry-run log shows it.
fn shown_body(planned: &Planned) -> String {
    if planned.provider != ProviderId::Tencent {
        return planned.request.redacted_body();
    }
    let body = &planned.request.body;
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else { return "<unreadable body>".into() };
    if let Some(params) = value.get_mut("TemplateParamSet").and_then(|v| v.as_array_mut()) {
        for p in params {
            *p = json!("***");
        }
    }
    value.to_string()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tenant     {}", self.tenant)?;
        match self.normalized() {
            Some(p) => writeln!(f, "normalize  {} -> {} (country {})", self.input_phone, p.e164(), p.country_code())?,
            None => writeln!(f, "normalize  {} -> invalid", self.input_phone)?,
        }
        match &self.trail.script {
            None => writeln!(f, "script     none configured")?,
            Some(report) => match &report.outcome {
                ScriptOutcome::Changed(changes) if changes.is_empty() => {
                    writeln!(f, "script     {}: no change", report.path)?
                }
                ScriptOutcome::Changed(changes) => {
                    for c in changes {
                        match &c.from {
                            Some(from) => writeln!(f, "script     {}: {} {from} -> {}", report.path, c.field, c.to)?,
                            None => writeln!(f, "script     {}: {} -> {}", report.path, c.field, c.to)?,
                        }
                    }
                }
                ScriptOutcome::Rejected(message) => writeln!(f, "script     {}: rejected: {message}", report.path)?,
                ScriptOutcome::Failed(detail) => writeln!(f, "script     {}: failed: {detail}", report.path)?,
                ScriptOutcome::Skipped(detail) => {
                    writeln!(f, "script     {}: failed, skipped (on_script_error: skip): {detail}", report.path)?
                }
            },
        }
        if let Some(p) = &self.trail.phone {
            let verdict = if self.number_types.contains(&p.number_type()) { "allowed" } else { "refused" };
            writeln!(f, "type       {}: {verdict} (number_types)", p.number_type())?;
        }
        if let Some(usage) = &self.trail.usage {
            match (&self.trail.template_id, &self.trail.usage_fallback_from) {
                (Some(id), Some(from)) => {
                    writeln!(f, "template   {from} -> {id} (no template of its own: sent and limited as {usage})")?
                }
                (Some(id), None) => writeln!(f, "template   {usage} -> {id}")?,
                (None, _) if self.trail.phone.is_some() => writeln!(f, "template   {usage} -> none")?,
                (None, _) => {}
            }
        }
        if !self.route.is_empty() {
            let first = self.trail.provider.map_or(String::new(), |p| format!(" -> {p}"));
            writeln!(f, "route      {}{first}", self.route)?;
        }
        if self.trail.test_number {
            writeln!(f, "policy     test number: not counted, answered as sent without calling a provider")?;
        }
        for key in &self.trail.protection {
            let shadow = if key.shadow { " (shadow)" } else { "" };
            let state = match key.blocked_until_ms {
                Some(until) => format!(
                    "BLOCKED until {}",
                    chrono::DateTime::from_timestamp_millis(until as i64)
                        .unwrap_or_default()
                        .format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None if self.shared_state => "not blocked (blocks read from Redis)".to_owned(),
                None => "not blocked in this process (memory backend: the serving process holds the live state; \
                         GET /admin/v1/tenants/<tenant>/protection shows it)"
                    .to_owned(),
            };
            let lifted = key.lifted_at_ms.map_or(String::new(), |at| {
                let at = chrono::DateTime::from_timestamp_millis(at as i64).unwrap_or_default();
                format!(", last block lifted {}", at.format("%Y-%m-%d %H:%M:%S UTC"))
            });
            let strikes = if key.strikes > 0 { format!(", {} strike(s)", key.strikes) } else { String::new() };
            writeln!(f, "protection {}{shadow}: key {}: {state}{strikes}{lifted}", key.rule, key.key)?;
        }
        if let Some(decision) = &self.trail.limits {
            if decision.rules.is_empty() {
                writeln!(f, "policy     no limit rule applies")?;
            } else if !self.live_counts {
                writeln!(
                    f,
                    "policy     (memory backend: the running gateway's counts live in its own process; these rules"
                )?;
                writeln!(f, "policy      are judged from a full bucket, as for a number it has not seen)")?;
            }
            for r in &decision.rules {
                let verdict = if r.verdict.allowed { "allow" } else { "deny" };
                let shadow = if r.shadow { " (shadow)" } else { "" };
                writeln!(
                    f,
                    "policy     {}: {} per {}s{shadow}: {verdict}, {} left after this one",
                    r.name,
                    r.limit,
                    r.window.as_secs(),
                    r.verdict.remaining
                )?;
            }
        }
        match &self.outcome {
            Ok(planned) => {
                let mode = if self.dry_run { "dry run: would sign and log, not send" } else { "would send" };
                writeln!(f, "upstream   {mode}\n")?;
                writeln!(f, "POST {}", planned.request.redacted_url())?;
                for (name, value) in planned.request.redacted_headers() {
                    writeln!(f, "{name}: {value}")?;
                }
                writeln!(f, "\n{}", shown_body(planned))?;
                writeln!(f, "\n(the code is shown as ***; the signature covers the real values)")
            }
            Err(e) => writeln!(f, "outcome    {} {}: {}", e.status().as_u16(), e.code(), e.public_message()),
        }
    }
}
