//! SMS providers, one folder each. A provider owns its wire types, its signer, its client (built on the
//! shared egress of [`crate::net`]), the classification of its answers into the gateway's typed outcome,
//! and its delivery-report plumbing. [`Providers`] holds them all and sends along a tenant's routes.

pub(crate) mod aliyun;
pub(crate) mod codes;
pub mod tencent;
pub(crate) mod twilio;

use crate::config::Tenant;
use crate::error::GatewayError;
use crate::net::transport::Transport;
pub use crate::net::transport::{PreparedRequest, ReasonLabels};
pub use crate::sms::Unconfirmed;
use crate::sms::{CallExtras, ProviderId, Receipt, StatusReport, Via};
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
    /// The usage type the send is made under, and the kind of number: the other providers' templates are
    /// chosen from them.
    pub(crate) usage: String,
    pub(crate) mainland_china: bool,
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

/// The delivery reports of one push to `/v1/<provider>/status/<secret>` (Aliyun's SmsReport, Twilio's status
/// callbacks), as the feedback loop reads them, with the answer the provider expects. Tencent's callback is
/// read by the feedback loop itself (`feedback::signals::parse_status`).
pub(crate) struct Pushed {
    /// Final reports only: Twilio's intermediate statuses (`queued`, `sent`...) are left out, so a later
    /// final one still counts as the first receipt of its message.
    pub(crate) reports: Vec<StatusReport>,
    /// The body of the answer (JSON), or None for an empty 204.
    pub(crate) ack: Option<&'static str>,
}

/// A report's text field as the feedback loop keeps it: no control characters, at most 128 characters.
pub(crate) fn report_text(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(128).collect()
}

/// The code a provider's acceptance of a send is counted under (`smsgate_upstream_results_total{code}`):
/// its own word for it.
pub(crate) fn sent_code(id: ProviderId) -> &'static str {
    match id {
        ProviderId::Tencent => "Ok",
        ProviderId::Aliyun => aliyun::classify::OK,
        ProviderId::Twilio => "accepted",
    }
}

/// A number as a report writes it (E.164 with or without `+`, or Aliyun's 11 mainland digits) as E.164 digits.
/// Only a number written without `+` can be Aliyun's mainland digits: `+1` and ten digits (Twilio's `To` for
/// the US and Canada) is E.164 already.
pub(crate) fn report_digits(written: &str) -> Option<u64> {
    let (e164, digits) = match written.strip_prefix('+') {
        Some(digits) => (true, digits),
        None => (false, written),
    };
    let mainland = !e164 && digits.len() == 11 && digits.starts_with('1');
    let digits = if mainland { format!("86{digits}") } else { digits.to_owned() };
    let ok = !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| digits.parse().ok()).flatten()
}

/// Reads a push of delivery reports from provider `id` for `tenant` (found by its status secret): Twilio's
/// signature (`signature`: its `X-Twilio-Signature`) checked against the callback URL the tenant's messages
/// name, and its account checked; Aliyun's push carries no signature (the path secret is its proof). Nothing
/// is trusted from a push that does not read whole.
pub(crate) fn read_push(
    tenant: &Tenant,
    id: ProviderId,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Pushed, GatewayError> {
    match id {
        ProviderId::Aliyun => aliyun::report::receipts(body),
        ProviderId::Twilio => {
            let account = tenant.twilio.as_ref().ok_or(GatewayError::NotFound)?;
            twilio::report::receipts(account, signature, body)
        }
        ProviderId::Tencent => Err(GatewayError::Internal("Tencent's callback is read by the feedback loop".into())),
    }
}

/// Every provider the gateway sends through, on one shared transport, and the choice among a tenant's: a
/// send goes to its route's providers in order, the next taking it only when the one before certainly sent
/// nothing for a reason of its own ([`GatewayError::fails_over`]). Adding a provider is its folder, its
/// config section, a field here and its arm in [`Providers::prepare`] and [`Providers::deliver_one`].
#[derive(Clone)]
pub struct Providers {
    transport: Transport,
    pub tencent: tencent::TencentClient,
    aliyun: aliyun::AliyunClient,
    twilio: twilio::TwilioClient,
}

/// What a send through its route came to: the provider that took it (or the last one tried), the template it
/// used there, the providers it failed over from, and the outcome (an `Err`: nothing was sent by any).
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) provider: ProviderId,
    pub(crate) template_id: String,
    /// Each provider that refused the send before, with its error's code (empty on the common path: no
    /// allocation).
    pub(crate) failed_over: Vec<(ProviderId, &'static str)>,
    /// `provider` is in dry run: the send stopped there, signed and not transmitted (`result` is unused).
    pub(crate) dry_run: bool,
    pub(crate) result: Result<Dispatched, GatewayError>,
}

impl Providers {
    pub fn new(clock: crate::clock::SharedClock, telemetry: ClientTelemetry) -> Providers {
        let transport = Transport::new(clock.clone(), telemetry.retries.clone(), telemetry.breakers_open.clone());
        Providers {
            tencent: tencent::TencentClient::new(transport.clone(), clock.clone(), telemetry.clock_skew.clone()),
            aliyun: aliyun::AliyunClient::new(transport.clone(), clock.clone()),
            twilio: twilio::TwilioClient::new(transport.clone(), clock),
            transport,
        }
    }

    /// The order a send tries its route: as routed, except that a provider whose every endpoint is known to be
    /// down goes after those that are not. When a breaker's cool-down is over, its provider takes its place
    /// again (the trial send goes to it).
    pub(crate) fn order(&self, tenant: &Tenant, via: Via) -> Via {
        let down = |id: &ProviderId| tenant.upstream(*id).is_none_or(|u| self.transport.all_down(u));
        if via.len() == 1 || !via.iter().any(|id| down(&id)) {
            return via;
        }
        Via::from_iter(via.iter().filter(|id| !down(id)).chain(via.iter().filter(down)))
    }

    /// The template `sms` goes out with on provider `id`: Tencent's TemplateId as the pipeline chose it, else
    /// the provider's template for the send's usage type and kind of number.
    pub(crate) fn template(&self, tenant: &Tenant, id: ProviderId, sms: &OutboundSms) -> Option<String> {
        match id {
            ProviderId::Tencent => Some(sms.template_id.clone()),
            other => tenant.template_of(other, &sms.usage, sms.mainland_china).map(str::to_owned),
        }
    }

    /// The signed request for `sms` on provider `id` of the tenant.
    pub(crate) fn prepare(
        &self,
        tenant: &Tenant,
        states: &States,
        id: ProviderId,
        sms: &OutboundSms,
    ) -> Result<PreparedRequest, GatewayError> {
        let no_account = || GatewayError::Internal(format!("the tenant has no {id} account"));
        match id {
            ProviderId::Tencent => {
                let account = tenant.tencent.as_ref().ok_or_else(no_account)?;
                Ok(self.tencent.prepare(account, &states.tencent, sms))
            }
            ProviderId::Aliyun => Ok(self.aliyun.prepare(tenant.aliyun.as_ref().ok_or_else(no_account)?, &(), sms)),
            ProviderId::Twilio => Ok(self.twilio.prepare(tenant.twilio.as_ref().ok_or_else(no_account)?, &(), sms)),
        }
    }

    /// Sends `sms` through its route `via`: each provider in [`Providers::order`], the next only when the one
    /// before failed over; never a second provider once one may have sent it. A provider in dry run ends the
    /// route there, whether it comes first or after a failover: it never transmits.
    pub(crate) async fn deliver(&self, tenant: &Tenant, states: &States, via: Via, sms: &OutboundSms) -> Delivered {
        let order = self.order(tenant, via);
        let mut failed_over = Vec::new();
        let mut candidates = order.iter().peekable();
        loop {
            let id = candidates.next().expect("a route names at least one provider");
            let template_id = self.template(tenant, id, sms).unwrap_or_default();
            if self.dry_run(tenant, id) {
                let result = Err(GatewayError::Internal("a dry run is not delivered".into()));
                return Delivered { provider: id, template_id, failed_over, dry_run: true, result };
            }
            let result = self.deliver_one(tenant, states, id, sms).await;
            match &result {
                Err(e) if e.fails_over() => {
                    if let Some(next) = candidates.peek() {
                        tracing::warn!(
                            tenant = %tenant.name,
                            provider = %id,
                            next = %next,
                            code = e.upstream().map_or(e.code(), |u| u.label),
                            "nothing was sent: failing over to the route's next provider"
                        );
                        failed_over.push((id, e.upstream().map_or(e.code(), |u| u.label)));
                        continue;
                    }
                }
                _ => {}
            }
            return Delivered { provider: id, template_id, failed_over, dry_run: false, result };
        }
    }

    /// One provider's send (its own retries and endpoints inside its deadline).
    async fn deliver_one(
        &self,
        tenant: &Tenant,
        states: &States,
        id: ProviderId,
        sms: &OutboundSms,
    ) -> Result<Dispatched, GatewayError> {
        let no_account = || GatewayError::Internal(format!("the tenant has no {id} account"));
        match id {
            ProviderId::Tencent => {
                let account = tenant.tencent.as_ref().ok_or_else(no_account)?;
                Provider::deliver(&self.tencent, account, &states.tencent, sms).await
            }
            ProviderId::Aliyun => {
                let account = tenant.aliyun.as_ref().ok_or_else(no_account)?;
                Provider::deliver(&self.aliyun, account, &(), sms).await
            }
            ProviderId::Twilio => {
                let account = tenant.twilio.as_ref().ok_or_else(no_account)?;
                Provider::deliver(&self.twilio, account, &(), sms).await
            }
        }
    }

    /// Whether sends through provider `id` are signed and logged, never transmitted.
    pub fn dry_run(&self, tenant: &Tenant, id: ProviderId) -> bool {
        tenant.upstream(id).is_some_and(|u| u.dry_run)
    }

    /// The longest a send of the tenant may take, failovers included.
    pub fn timeout(&self, tenant: &Tenant) -> std::time::Duration {
        tenant.longest_send()
    }

    /// The conversion reports of the feedback loop, with their results counted in `results`.
    pub fn conversions(&self, results: Family<ReportLabels, Counter>) -> Box<dyn Conversions> {
        Box::new(tencent::report::Reporter::new(self.tencent.clone(), tencent::report::QUEUE, results))
    }
}

#[cfg(test)]
mod tests {
    use super::report_digits;

    #[test]
    fn report_numbers_read_as_e164_digits() {
        assert_eq!(report_digits("13800138000"), Some(8613800138000), "Aliyun's mainland digits");
        assert_eq!(report_digits("85298765432"), Some(85298765432));
        assert_eq!(report_digits("+8613800138000"), Some(8613800138000));
        // Regression: Twilio's `+1` numbers were read as mainland digits, so their receipts matched no send.
        assert_eq!(report_digits("+14155550100"), Some(14155550100));
        assert_eq!(report_digits(""), None);
        assert_eq!(report_digits("+1415555x100"), None);
    }
}
