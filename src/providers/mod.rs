//! SMS providers, one folder each. A provider owns its wire types, its signer, its client (built on the
//! shared egress of [`crate::net`]), the classification of its answers into the gateway's typed outcome,
//! and its delivery-report plumbing. Tencent Cloud SMS is the one provider today.

pub mod tencent;

use crate::config::Tenant;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;

/// Metrics a provider's client updates itself.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub retries: Family<ReasonLabels, Counter>,
    pub clock_skew: Gauge,
    /// 1 per endpoint whose breaker is open.
    pub breakers_open: Family<crate::net::breaker::EndpointLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// `smsgate_report_conversion_total{tenant,result}`: what became of each conversion report to a provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportLabels {
    pub tenant: String,
    /// ok, failed, dropped (queue full), off (the tenant's reporting was turned off).
    pub result: String,
}

/// What the providers' clients learn of one tenant's accounts while serving (Tencent: the key pair it signs
/// with first). Runtime state: held by the runtime's live tenant, made afresh on reload.
#[derive(Debug, Default)]
pub struct States {
    pub tencent: Arc<tencent::AccountState>,
}

/// What a provider offers the feedback loop: being told which of its messages were verified (Tencent's
/// ReportConversion). Reports wait in per-tenant lanes and are sent by workers: `enqueue` never waits.
pub trait Conversions: Send + Sync {
    /// Queues one verified message (`message_id`: the provider's id, Tencent's SerialNo) verified at `at_unix`.
    fn enqueue(&self, tenant: &Arc<Tenant>, states: &States, message_id: &str, at_unix: i64);
    /// Reporting comes back on for every tenant (a reload: the account may have been allowed since).
    fn reset(&self);
    /// Starts the workers on the current runtime (once; later calls do nothing).
    fn start(&self);
}
