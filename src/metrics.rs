//! Prometheus metrics. Every label value is bounded: tenants and rules come from the config, usage types are
//! the ones sends are judged as (a template name of the tenant, or one of Logto's types, in one spelling;
//! anything else reads `other`), and Tencent codes outside the known table read `unknown`. Never a phone
//! number or any other caller-chosen string.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tenant: String,
    pub usage: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub tenant: String,
    pub rule: String,
    pub shadow: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub tenant: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptLabels {
    pub tenant: String,
    /// unchanged, changed, rejected, failed, skipped.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoorLabels {
    /// supabase, tencent_api, logto_webhook.
    pub door: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Signatures computed over bodies of callers not verified yet: what anonymous calls cost in CPU.
    pub signature_checks: Family<DoorLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub limit_denials: Family<RuleLabels, Counter>,
    pub upstream_results: Family<UpstreamLabels, Counter>,
    pub upstream_latency: Family<TenantLabels, Histogram>,
    pub reloads: Family<ResultLabels, Counter>,
    pub tencent: crate::tencent::client::Telemetry,
    pub script_results: Family<ScriptLabels, Counter>,
    pub script_duration: Family<TenantLabels, Histogram>,
    pub limiter_mode: Family<ModeLabels, Gauge>,
    /// The feedback loop's metrics (conversions, receipts, protection, ReportConversion, webhooks).
    pub feedback: crate::feedback::Telemetry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smsgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Send requests by tenant, usage type and outcome code", requests.clone());
        let limit_denials = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rate_limit_denials",
            "Requests a limit rule denied (shadow rules: would have denied)",
            limit_denials.clone(),
        );
        let upstream_results = Family::<UpstreamLabels, Counter>::default();
        registry.register("upstream_results", "Tencent SendSms answers by code", upstream_results.clone());
        let upstream_latency = Family::<TenantLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register("upstream_duration_seconds", "Tencent SendSms round trip", upstream_latency.clone());
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("config_reloads", "Config reloads by result", reloads.clone());
        let tencent = crate::tencent::client::Telemetry::default();
        registry.register("upstream_retries", "SendSms attempts retried, by reason", tencent.retries.clone());
        registry.register(
            "clock_skew_seconds",
            "Tencent's clock minus ours, learnt from AuthFailure.SignatureExpire answers",
            tencent.clock_skew.clone(),
        );
        let limiter_mode = Family::<ModeLabels, Gauge>::default();
        registry.register(
            "limiter_mode",
            "1 for the limiter mode in force (memory, redis, local-fallback, unlimited, unavailable), else 0",
            limiter_mode.clone(),
        );
        let script_results = Family::<ScriptLabels, Counter>::default();
        registry.register(
            "script_results",
            "Lua hook calls by result (failed: error or over budget)",
            script_results.clone(),
        );
        let script_duration = Family::<TenantLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_001, 4.0, 10))
        });
        registry.register("script_duration_seconds", "Lua hook call time", script_duration.clone());
        let signature_checks = Family::<DoorLabels, Counter>::default();
        registry.register(
            "signature_checks",
            "Signatures (HMACs over the body) computed for callers not verified yet, by door",
            signature_checks.clone(),
        );
        let feedback = crate::feedback::Telemetry::default();
        feedback.register(&mut registry);
        Metrics {
            registry,
            signature_checks,
            requests,
            limit_denials,
            upstream_results,
            upstream_latency,
            reloads,
            tencent,
            limiter_mode,
            script_results,
            script_duration,
            feedback,
        }
    }
}

impl Metrics {
    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// `n` signatures computed at `door` for a caller not verified yet.
    pub(crate) fn signature_checks(&self, door: &'static str, n: usize) {
        self.signature_checks.get_or_create(&DoorLabels { door }).inc_by(n as u64);
    }

    /// Sets the limiter mode gauge: 1 for `mode`, 0 for the others.
    pub fn set_limiter_mode(&self, mode: crate::policy::LimiterMode) {
        for m in crate::policy::LimiterMode::ALL {
            self.limiter_mode.get_or_create(&ModeLabels { mode: m.as_str().into() }).set(i64::from(m == mode));
        }
    }

    /// One upstream exchange: Tencent's code when it answered (`unknown` for codes outside the table), else
    /// the gateway outcome (`upstream_timeout`, `upstream_unavailable`).
    pub fn observe_upstream(&self, tenant: &str, tencent_code: Option<&str>, outcome: &str, latency: Duration) {
        use crate::tencent::classify::{classify, Class};
        let code = match tencent_code {
            Some(code) if classify(code) != Class::Unknown => code,
            Some(_) => "unknown",
            None => outcome,
        };
        self.upstream_results.get_or_create(&UpstreamLabels { tenant: tenant.into(), code: code.into() }).inc();
        self.upstream_latency.get_or_create(&TenantLabels { tenant: tenant.into() }).observe(latency.as_secs_f64());
    }
}
