//! The feedback loop's metrics. Label values are bounded: tenants and rules come from the config, countries
//! are ISO codes (`ZZ` without one), statuses and results are fixed words; never a number or a SerialNo.

use crate::providers::ReportLabels;
use crate::relay::RelayLabels;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CountryLabels {
    pub tenant: String,
    pub country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeliveryLabels {
    pub tenant: String,
    pub country: String,
    /// success, fail, other (Tencent's `report_status`), unknown_sid (not a send smsgate remembers).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// logto_webhook, verified, tencent_status.
    pub route: String,
    pub tenant: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtectionLabels {
    pub tenant: String,
    pub rule: String,
    pub shadow: bool,
}

type Latency = Family<TenantLabels, Histogram>;

fn latency() -> Latency {
    // 1 s to about 4.5 h.
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 15)))
}

#[derive(Clone)]
pub struct Telemetry {
    pub sends: Family<CountryLabels, Counter>,
    pub conversions: Family<CountryLabels, Counter>,
    pub(crate) deliveries: Family<DeliveryLabels, Counter>,
    pub(crate) verify_latency: Latency,
    pub(crate) receipt_latency: Latency,
    pub signals: Family<SignalLabels, Counter>,
    pub trips: Family<ProtectionLabels, Counter>,
    pub blocked: Family<ProtectionLabels, Counter>,
    pub exempted: Family<ProtectionLabels, Counter>,
    pub exemptions_closed: Family<ProtectionLabels, Counter>,
    pub lifts: Family<ProtectionLabels, Counter>,
    pub remembered: Gauge,
    pub dropped: Counter,
    pub reports: Family<ReportLabels, Counter>,
    pub webhooks: Family<RelayLabels, Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            sends: Family::default(),
            conversions: Family::default(),
            deliveries: Family::default(),
            verify_latency: latency(),
            receipt_latency: latency(),
            signals: Family::default(),
            trips: Family::default(),
            blocked: Family::default(),
            exempted: Family::default(),
            exemptions_closed: Family::default(),
            lifts: Family::default(),
            remembered: Gauge::default(),
            dropped: Counter::default(),
            reports: Family::default(),
            webhooks: Family::default(),
        }
    }
}

impl Telemetry {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "feedback_sends",
            "Accepted sends remembered for the feedback loop (the denominator of the conversion rate)",
            self.sends.clone(),
        );
        registry.register(
            "conversions",
            "Remembered sends a verification converted within conversion.window",
            self.conversions.clone(),
        );
        registry.register(
            "delivery_reports",
            "Tencent delivery receipts by status (unknown_sid: not a send smsgate remembers)",
            self.deliveries.clone(),
        );
        registry.register(
            "verify_latency_seconds",
            "Time from a send to the verification that converted it",
            self.verify_latency.clone(),
        );
        registry.register(
            "receipt_latency_seconds",
            "Time from a send to its delivery receipt reaching smsgate",
            self.receipt_latency.clone(),
        );
        registry.register(
            "feedback_requests",
            "Logto webhooks, verification reports and Tencent status callbacks by outcome",
            self.signals.clone(),
        );
        registry.register(
            "protection_trips",
            "Keys a protection rule blocked (shadow: would have)",
            self.trips.clone(),
        );
        registry.register(
            "protection_blocked",
            "Sends refused with suspected_pumping (shadow: would have been)",
            self.blocked.clone(),
        );
        registry.register(
            "protection_exempted",
            "Sends let through a blocked key: to a number with a verification history, or vouched for by the caller \
             (shadow: would have been)",
            self.exempted.clone(),
        );
        registry.register(
            "protection_exemptions_closed",
            "Blocks whose exemptions of one kind (verified numbers, vouched sends) stopped converting: no more let through",
            self.exemptions_closed.clone(),
        );
        registry.register(
            "protection_lifts",
            "Blocks that ended (their time was up; operators' lifts are logged, not counted here)",
            self.lifts.clone(),
        );
        registry.register("remembered_sends", "Sends this process remembers now", self.remembered.clone());
        registry.register(
            "remembered_sends_dropped",
            "Remembered sends pushed out by server.max_remembered_sends before their time",
            self.dropped.clone(),
        );
        registry.register(
            "report_conversion",
            "Tencent ReportConversion calls by result (dropped: queue full; off: refused for the account)",
            self.reports.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Relayed webhook events by result (retried: one failed attempt; dropped: queue full)",
            self.webhooks.clone(),
        );
    }
}
