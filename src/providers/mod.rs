//! SMS providers, one folder each. A provider owns its wire types, its signer, its client (built on the
//! shared egress of [`crate::net`]), the classification of its answers into the gateway's typed outcome,
//! and its delivery-report plumbing. Tencent Cloud SMS is the one provider today.

pub(crate) mod codes;
pub mod tencent;
pub(crate) mod twilio;

use crate::config::Tenant;
use crate::error::{GatewayError, UpstreamDetail};
use crate::sms::{CallExtras, Receipt};
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;

/// Metrics a provider's client updates itself.
#[derive(Clone, Default)]
pub struct ClientTelemetry {
    pub retries: Family<ReasonLabels, Counter>,
    pub(crate) clock_skew: Gauge,
    /// 1 per endpoint whose breaker is open.
    pub(crate) breakers_open: Family<crate::net::breaker::EndpointLabels, Gauge>,
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

/// What one send went out as; what the pipeline decided, handed to the tenant's provider.
#[derive(Debug, Clone)]
pub struct OutboundSms {
    pub(crate) phone_e164: String,
    pub template_id: String,
    pub sign_name: Option<String>,
    pub params: Vec<String>,
    pub region: String,
    pub(crate) extras: CallExtras,
}

/// A signed request, ready to send (or to show, redacted, in dry-run and `explain`).
#[derive(Clone)]
pub struct PreparedRequest {
    pub url: http::Uri,
    /// Headers in the order sent, `Authorization` included.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// The provider's redaction of its own body (numbers masked, codes hidden).
    pub(crate) redact: fn(&[u8]) -> String,
}

impl PreparedRequest {
    /// The body for dry-run logs and `explain`: numbers masked, template parameters (the code) hidden.
    pub(crate) fn redacted_body(&self) -> String {
        (self.redact)(&self.body)
    }
}

/// A send that may have gone out: the request reached the provider (or may have) and no answer says it did not.
/// Never reported failed and never retried into a second SMS; its numbers are remembered as possibly sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    /// Why it is not confirmed, for the log only (never shown to a caller).
    pub reason: String,
    /// The provider's own answer when it gave one (Tencent's `InternalError.*`), for the log and metrics.
    pub upstream: Option<UpstreamDetail>,
}

/// What a number handed to a provider came to, when something may have gone out. Beside it, an `Err` always
/// means nothing was sent: the one decision every consumer reads (answers, refunds of limits and caps,
/// metrics, the feedback loop, retries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dispatched {
    Sent(Receipt),
    Unconfirmed(Unconfirmed),
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

/// One SMS provider behind the gateway's policy. The pipeline hands it a decided message and reads back the
/// typed outcome: `Ok` when something went out or may have, `Err` only when nothing was sent (the classes of
/// [`crate::error::UpstreamClass`], set where the provider read its answer). Its wire format, signer,
/// retries within the deadline, failover across its endpoints, breakers and answer codes stay behind it.
pub(crate) trait Provider: Send + Sync {
    /// The tenant's section for this provider in `gateway.yaml`, compiled (inert).
    type Account: Send + Sync;
    /// What the client learns of one account while serving it (runtime state, in [`States`]).
    type State: Default + Send + Sync;

    /// The signed request the next attempt would send (dry runs and `explain` show it redacted).
    fn prepare(&self, account: &Self::Account, state: &Self::State, sms: &OutboundSms) -> PreparedRequest;

    /// Sends one message, retrying and failing over inside the account's deadline where nothing was sent.
    fn deliver(
        &self,
        account: &Self::Account,
        state: &Self::State,
        sms: &OutboundSms,
    ) -> impl std::future::Future<Output = Result<Dispatched, GatewayError>> + Send;
}

/// Every provider the gateway sends through, and which one a tenant's send goes to. Adding a provider is
/// its folder, its config section, a field here and its case in each method below (with one provider, each
/// calls Tencent's client directly; choosing among several per tenant and route is the routing issue's).
#[derive(Clone)]
pub struct Providers {
    pub tencent: tencent::TencentClient,
}

impl Providers {
    pub fn new(clock: crate::clock::SharedClock, telemetry: ClientTelemetry) -> Providers {
        Providers { tencent: tencent::TencentClient::new(clock, telemetry) }
    }

    /// The signed request for `sms` on the tenant's provider.
    pub(crate) fn prepare(&self, tenant: &Tenant, states: &States, sms: &OutboundSms) -> PreparedRequest {
        self.tencent.prepare(&tenant.tencent, &states.tencent, sms)
    }

    /// Sends `sms` through the tenant's provider.
    pub(crate) async fn deliver(
        &self,
        tenant: &Tenant,
        states: &States,
        sms: &OutboundSms,
    ) -> Result<Dispatched, GatewayError> {
        Provider::deliver(&self.tencent, &tenant.tencent, &states.tencent, sms).await
    }

    /// Whether the tenant's sends are signed and logged, never transmitted.
    pub fn dry_run(&self, tenant: &Tenant) -> bool {
        tenant.tencent.dry_run
    }

    /// The deadline of one send on the tenant's provider, retries included.
    pub fn timeout(&self, tenant: &Tenant) -> std::time::Duration {
        tenant.tencent.timeout
    }

    /// The conversion reports of the feedback loop, with their results counted in `results`.
    pub fn conversions(&self, results: Family<ReportLabels, Counter>) -> Box<dyn Conversions> {
        Box::new(tencent::report::Reporter::new(self.tencent.clone(), tencent::report::QUEUE, results))
    }
}
