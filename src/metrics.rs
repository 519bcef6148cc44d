//! Prometheus metrics. Every label value is bounded: tenants and rules come from the config, usage types are
//! the ones sends are judged as (a template name of the tenant, or one of Logto's types, in one spelling;
//! anything else reads `other`), and Tencent codes are the table's own, their family (`InternalError.*`) or
//! `other`. Never a phone number or any other caller-chosen string. Request routes and status classes are
//! closed sets (`route_label` in `server`, [`status_class`]); countries are ISO region codes from the
//! number metadata.
//!
//! Besides the `smsgate_` families: `process_*` (process.rs) and `smsgate_build_info{version,commit}`.

mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Request duration buckets: 0.5 ms (an answer from memory) to 10 s (a send near its deadline).
const REQUEST_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// One of the gateway's route names (`native`, `logto`, `tencent_api`, `healthz`…, `other`).
    pub route: &'static str,
    /// `2xx`, `3xx`, `4xx`, `5xx` (`1xx` never leaves the gateway).
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CountryLabels {
    pub tenant: String,
    /// ISO region code of the number (`ZZ` for non-geographic numbers).
    pub country: String,
}

/// The status class label of an HTTP status.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tenant: String,
    pub usage: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RuleLabels {
    pub tenant: String,
    pub rule: String,
    pub shadow: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    pub tenant: String,
    pub code: String,
    /// `tencent`, `aliyun`, `twilio`.
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProviderLabels {
    pub tenant: String,
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModeLabels {
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScriptLabels {
    pub tenant: String,
    /// unchanged, changed, rejected, failed, skipped.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CapLabels {
    pub tenant: String,
    /// `all` or a country code the tenant's `spend_caps.countries` names.
    pub scope: String,
    /// `daily`, `monthly`.
    pub period: &'static str,
    /// `messages`, `fee`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoorLabels {
    /// supabase, tencent_api, logto_webhook.
    pub door: &'static str,
}

pub struct Metrics {
    /// The root registry: `process_*` and, under the `smsgate_` prefix, everything else.
    registry: Registry,
    /// Every answered HTTP request by route and status class, from the request head to the answer.
    pub(crate) request_duration: Family<RouteLabels, Histogram>,
    /// Fee units (Tencent's `Fee`) of sent messages, by tenant and country.
    pub fees: Family<CountryLabels, Counter>,
    /// Unix time of the last config load that was put in force (the start counts).
    pub(crate) last_reload_success: Gauge<f64, AtomicU64>,
    /// 1 when the last reload put its config in force, 0 when it failed.
    pub(crate) last_reload_successful: Gauge,
    /// Signatures computed over bodies of callers not verified yet: what anonymous calls cost in CPU.
    pub signature_checks: Family<DoorLabels, Counter>,
    /// Each spend cap's use in its current period, as this replica last saw it (set at each scrape).
    pub(crate) spend_cap_used: Family<CapLabels, Gauge<f64, AtomicU64>>,
    pub requests: Family<RequestLabels, Counter>,
    pub(crate) limit_denials: Family<RuleLabels, Counter>,
    pub(crate) upstream_results: Family<UpstreamLabels, Counter>,
    pub(crate) upstream_latency: Family<ProviderLabels, Histogram>,
    /// Sends a provider refused with nothing sent, passed on to the route's next one.
    pub(crate) upstream_failovers: Family<UpstreamLabels, Counter>,
    pub reloads: Family<ResultLabels, Counter>,
    pub tencent: crate::providers::ClientTelemetry,
    pub(crate) script_results: Family<ScriptLabels, Counter>,
    pub(crate) script_duration: Family<TenantLabels, Histogram>,
    pub(crate) limiter_mode: Family<ModeLabels, Gauge>,
    /// The feedback loop's metrics (conversions, receipts, protection, ReportConversion, webhooks).
    pub feedback: crate::feedback::Telemetry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("smsgate");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION"), commit: crate::COMMIT }).set(1);
        registry.register("build_info", "Always 1: the version and commit of this binary", build_info);
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS.iter().copied()));
        registry.register(
            "request_duration_seconds",
            "HTTP requests by route and status class: request head read to answer written",
            request_duration.clone(),
        );
        let fees = Family::<CountryLabels, Counter>::default();
        registry.register(
            "upstream_fee_units",
            "Fee units the provider reported for sent messages (its billing units), by tenant and country",
            fees.clone(),
        );
        let last_reload_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load put in force (start-up included)",
            last_reload_success.clone(),
        );
        let last_reload_successful = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 when the last config reload was put in force, 0 when it failed",
            last_reload_successful.clone(),
        );
        let spend_cap_used = Family::<CapLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "spend_cap_used_ratio",
            "Each spend cap's use in its current period over the cap (1: reached), as this replica last saw it",
            spend_cap_used.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Send requests by tenant, usage type and outcome code", requests.clone());
        let limit_denials = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rate_limit_denials",
            "Requests a limit rule denied (shadow rules: would have denied)",
            limit_denials.clone(),
        );
        let upstream_results = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_results",
            "Provider answers to sends, by provider and code",
            upstream_results.clone(),
        );
        let upstream_failovers = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_failovers",
            "Sends a provider refused with nothing sent, passed to the route's next provider",
            upstream_failovers.clone(),
        );
        let upstream_latency = Family::<ProviderLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "upstream_duration_seconds",
            "A send's round trip to its providers",
            upstream_latency.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("config_reloads", "Config reloads by result", reloads.clone());
        let tencent = crate::providers::ClientTelemetry::default();
        registry.register("upstream_retries", "SendSms attempts retried, by reason", tencent.retries.clone());
        registry.register(
            "clock_skew_seconds",
            "Tencent's clock minus ours, learnt from AuthFailure.SignatureExpire answers",
            tencent.clock_skew.clone(),
        );
        registry.register(
            "upstream_breaker_open",
            "1 while an endpoint's breaker is open (connect failures in a row; skipped for a cool-down)",
            tencent.breakers_open.clone(),
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
        feedback.register(registry);
        Metrics {
            registry: root,
            request_duration,
            fees,
            last_reload_success,
            last_reload_successful,
            signature_checks,
            spend_cap_used,
            requests,
            limit_denials,
            upstream_results,
            upstream_latency,
            upstream_failovers,
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

    /// One answered HTTP request.
    pub(crate) fn observe_request(&self, route: &'static str, status: u16, took: Duration) {
        self.request_duration
            .get_or_create(&RouteLabels { route, class: status_class(status) })
            .observe(took.as_secs_f64());
    }

    /// A config load put in force (at start or by a reload) at `unix` seconds, or a reload that failed.
    pub(crate) fn config_loaded(&self, unix: Option<i64>) {
        if let Some(unix) = unix {
            self.last_reload_success.set(unix as f64);
        }
        self.last_reload_successful.set(i64::from(unix.is_some()));
    }

    /// The fee Tencent reported for a sent message.
    pub(crate) fn observe_fee(&self, tenant: &str, country: &str, fee: u32) {
        if fee > 0 {
            self.fees
                .get_or_create(&CountryLabels { tenant: tenant.into(), country: country.into() })
                .inc_by(u64::from(fee));
        }
    }

    /// `n` signatures computed at `door` for a caller not verified yet.
    pub(crate) fn signature_checks(&self, door: &'static str, n: usize) {
        self.signature_checks.get_or_create(&DoorLabels { door }).inc_by(n as u64);
    }

    /// Sets the spend-cap gauges to `uses` (tenant, use): every cap of every tenant, the last scrape's gone.
    pub(crate) fn set_spend_caps(&self, uses: impl IntoIterator<Item = (String, crate::policy::spend::CapUse)>) {
        self.spend_cap_used.clear();
        for (tenant, u) in uses {
            let labels = CapLabels { tenant, scope: u.scope, period: u.period, kind: u.kind };
            self.spend_cap_used.get_or_create(&labels).set(u.ratio);
        }
    }

    /// Sets the limiter mode gauge: 1 for `mode`, 0 for the others.
    pub(crate) fn set_limiter_mode(&self, mode: crate::policy::LimiterMode) {
        for m in crate::policy::LimiterMode::ALL {
            self.limiter_mode.get_or_create(&ModeLabels { mode: m.as_str().into() }).set(i64::from(m == mode));
        }
    }

    /// One send handed to its providers: the last provider's code as a bounded label when it answered (its
    /// table's `label`), else the gateway outcome (`upstream_timeout`, `upstream_unavailable`, `maybe_sent`);
    /// and each provider it failed over from, with that provider's code.
    pub(crate) fn observe_upstream(
        &self,
        tenant: &str,
        provider: crate::sms::ProviderId,
        code: Option<&'static str>,
        outcome: &'static str,
        latency: Duration,
        failed_over: &[(crate::sms::ProviderId, &'static str)],
    ) {
        let code = code.unwrap_or(outcome);
        let provider = provider.as_str();
        let labels = UpstreamLabels { tenant: tenant.into(), code: code.into(), provider };
        self.upstream_results.get_or_create(&labels).inc();
        let labels = ProviderLabels { tenant: tenant.into(), provider };
        self.upstream_latency.get_or_create(&labels).observe(latency.as_secs_f64());
        for (from, code) in failed_over {
            let labels = UpstreamLabels { tenant: tenant.into(), code: (*code).into(), provider: from.as_str() };
            self.upstream_failovers.get_or_create(&labels).inc();
        }
    }
}
