//! The send pipeline: normalize -> script (Lua hook) -> destination rules -> template -> de-duplication -> policy
//! (limits, spend caps) -> upstream, each stage taking the request and returning it or a typed error.
//! Every stage that consumes nothing runs first, so a request that cannot be sent (bad number, blocked
//! country or number type, `no_template`) consumes no quota, and a send that certainly went nowhere gives
//! back what it took. From the limits on, the request runs in its own task: a caller that hangs up cannot
//! cancel a send Tencent may already be delivering, nor its accounting. With the memory backend, whose
//! admit phase never waits (so it has no point at which a hang-up could cut it), the request's own task
//! admits, under the de-duplication key's lock: a denial costs no task and no de-duplication entry. A
//! tenant's test numbers stop after the template: they are answered as sent, never sent, never counted. The
//! usage type is read in one spelling, and every stage after the template judges the usage the send is
//! actually made under.

use crate::clock::SharedClock;
use crate::config::Tenant;
use crate::dedupe::{self, Admission, Claim, Dedupe, Outcome, Ticket};
use crate::error::GatewayError;
use crate::feedback::{Feedback, Memo};
use crate::phone::{InvalidPhone, Masked, Phone};
use crate::policy::spend::{Reservation, SpendLedger};
use crate::policy::{Decision, Limiter, Subject};
use crate::providers::{Dispatched, OutboundSms, PreparedRequest, Providers};
use crate::runtime::LiveTenant;
use crate::script::{Routed, ScriptReport};
use crate::sms::{Accepted, Delivery, ProviderId, Via};
use crate::sms::{CallerMessage, PhoneInput, SendRequest};
pub(crate) mod batch;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The process-wide services every request uses; they outlive config reloads.
pub struct Services {
    pub limiter: Limiter,
    pub providers: Providers,
    pub clock: SharedClock,
    pub dedupe: Arc<Dedupe>,
    pub spend: Arc<SpendLedger>,
    /// Remembered sends, verification and delivery signals, the SMS-pumping defense.
    pub feedback: Arc<Feedback>,
}

/// What each stage decided, for the response headers and the one log event per request.
#[derive(Debug, Default)]
pub struct Trail {
    pub request_id: String,
    pub tenant: Option<Arc<str>>,
    /// The usage type in its canonical spelling; from the template stage on, the one the send is made and
    /// judged under (`Generic` for a usage type without a template of its own).
    pub usage: Option<String>,
    /// The usage type as the caller (or the hook) named it, canonically spelled, when it had no template of
    /// its own and the send was judged as `Generic`.
    pub(crate) usage_fallback_from: Option<String>,
    /// The tenant or Logto knows the usage type (else it is `other` in metrics).
    pub(crate) usage_named: bool,
    pub phone: Option<Phone>,
    pub template_id: Option<String>,
    pub limits: Option<Decision>,
    /// The number is one of the tenant's test numbers: answered as sent, never sent, never counted.
    pub test_number: bool,
    /// The provider's code for the send, as a bounded label ([`crate::error::UpstreamDetail::label`]).
    pub upstream_code: Option<&'static str>,
    /// Why a send that may have gone out is not confirmed, for the log only.
    pub(crate) unconfirmed: Option<String>,
    pub(crate) upstream_latency: Option<Duration>,
    /// The answer is a repeat's: the first send's, replayed.
    pub replayed: bool,
    /// What the tenant's Lua hook did, when it has one, and how long it took.
    pub script: Option<ScriptReport>,
    pub(crate) script_duration: Option<Duration>,
    /// The hook's log lines for the request: the trails of one batch share it.
    pub(crate) hook_log: crate::script::LogBudget,
    /// The protection state of the number's keys (`explain`).
    pub protection: Vec<crate::protection::KeyReport>,
    /// The providers the send may go through, in its route's order (or the hook's choice first).
    pub via: Option<Via>,
    /// The route's place in `routes:` (None: the tenant's one provider, no `routes:`).
    pub route: Option<usize>,
    /// The provider the hook chose to send first.
    pub hook_provider: Option<ProviderId>,
    /// The provider the send went to (or would go to first).
    pub provider: Option<ProviderId>,
    /// The providers that refused the send before, nothing sent, with their error code.
    pub(crate) failed_over: Vec<(ProviderId, &'static str)>,
}

/// A request that passed every stage that consumes nothing.
pub struct Checked {
    pub phone: Phone,
    pub usage: String,
    pub ip: Option<IpAddr>,
    pub code: Option<String>,
    pub idempotency_key: Option<String>,
    /// The caller vouches for the end user (`SendRequest::vouched`).
    pub vouched: bool,
    pub sms: OutboundSms,
    /// The other usage types the send stands for: a caller that named only a template several usages share
    /// is judged by the rules of each (`Tenant::template_usages`).
    pub(crate) also_usages: Vec<String>,
    /// The providers that may send it, in order (failover).
    pub(crate) via: Via,
}

impl Checked {
    /// What the limits judge: the number, the usage (and the others its template stands for), the address.
    fn subject(&self) -> Subject<'_> {
        Subject { phone: &self.phone, usage: &self.usage, also: &self.also_usages, ip: self.ip }
    }
}

/// A send that passed the stages that consume something: the spend it reserved (the limits it consumed are
/// in its trail) and its message.
struct Admitted {
    checked: Checked,
    reservation: Option<Reservation>,
}

/// How far a send got before its own task takes it over.
enum Commit {
    /// Admitted in the request's task (the in-process limiter never waits).
    Admitted(Admitted),
    /// Still to be admitted: the limits wait on Redis, so the task admits it.
    Checked(Checked),
}

/// What de-duplication made of a request, in this process and across replicas.
enum Claimed {
    /// A repeat of a finished send (here or on another replica): its answer.
    Replay(Outcome),
    /// A repeat of a send in flight in this process: wait for its answer.
    Wait(tokio::sync::watch::Receiver<Option<Outcome>>),
    /// The first of its key: the in-process ticket and the Redis key this replica holds, when keyed.
    First { ticket: Option<Ticket>, shared_key: Option<String> },
}

/// The cross-replica de-duplication outcome of a request.
enum SharedClaim {
    /// No Redis, no key, or Redis failed: in-process de-duplication only.
    Unshared,
    /// This replica holds the key and records the answer.
    Held(String),
    /// Another replica's answer.
    Replay(Outcome),
}

/// Everything up to the network, for `explain`: the message and the request that would carry it.
pub struct Planned {
    pub sms: OutboundSms,
    pub request: PreparedRequest,
    /// The provider the send would go to first.
    pub provider: ProviderId,
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
                "send abandoned after it was handed to a provider: outcome unknown"
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

/// Destination rules: the tenant's country allow/deny list, blocked prefixes and allowed number types.
pub(crate) fn destination(tenant: &Tenant, phone: &Phone) -> Result<(), GatewayError> {
    let country_ok = tenant.countries.as_ref().is_none_or(|rule| rule.permits(phone.country_code()));
    let prefix_ok = !tenant.blocked_prefixes.iter().any(|p| phone.e164().starts_with(p.as_str()));
    if !(country_ok && prefix_ok) {
        return Err(GatewayError::CountryBlocked);
    }
    let kind = phone.number_type();
    if !tenant.number_types.contains(&kind) {
        return Err(GatewayError::NumberTypeBlocked { kind });
    }
    Ok(())
}

/// Template stage: the TemplateId and sign name for the usage type and the kind of number (mainland China
/// or international), falling back to `Generic` within that kind only.
pub fn template<'t>(
    tenant: &'t Tenant,
    usage: &str,
    phone: &Phone,
) -> Result<(&'t str, Option<&'t str>), GatewayError> {
    let no_template = || GatewayError::NoTemplate { usage: usage.to_owned() };
    let (templates, sign_name) =
        tenant.tencent.as_ref().ok_or_else(no_template)?.templates_for(phone.is_mainland_china());
    let id = templates.resolve(usage).ok_or_else(no_template)?;
    Ok((id, sign_name))
}

/// Route stage: the providers that may take the number's send, in order: its route's (by country or prefix,
/// else the default route), with the hook's choice first when it made one; and the route's place in `routes:`.
pub(crate) fn route(tenant: &Tenant, phone: &Phone, chosen: Option<ProviderId>) -> (Via, Option<usize>) {
    let route = tenant.route_for(phone.country_code(), phone.e164());
    let via = Via::from_iter(route.via.iter().copied());
    match chosen {
        Some(id) => (via.with_first(id), route.index),
        None => (via, route.index),
    }
}

/// A spend-cap refusal is logged at error level where it happens: sends stay refused until the cap resets.
fn spend_cap_logged(tenant: &Tenant, reserved: Result<Reservation, GatewayError>) -> Result<Reservation, GatewayError> {
    if let Err(GatewayError::SpendCapReached { cap, .. }) = &reserved {
        tracing::error!(tenant = %tenant.name, cap = %cap, "spend cap reached: sends refused until it resets");
    }
    reserved
}

impl Services {
    pub fn new(limiter: Limiter, providers: Providers, clock: SharedClock) -> Arc<Services> {
        Services::observed(limiter, providers, clock, crate::feedback::Telemetry::default())
    }

    /// With the feedback loop's metrics registered by the caller.
    pub(crate) fn observed(
        limiter: Limiter,
        providers: Providers,
        clock: SharedClock,
        feedback: crate::feedback::Telemetry,
    ) -> Arc<Services> {
        Arc::new(Services {
            feedback: Arc::new(Feedback::new(clock.clone(), providers.conversions(feedback.reports.clone()), feedback)),
            providers,
            dedupe: Dedupe::new(clock.clone()),
            spend: limiter.spend().clone(),
            limiter,
            clock,
        })
    }

    /// The stages that consume nothing: normalize, the Lua hook, destination rules, template. Everything
    /// after the hook keys on the number and usage it chose. The hook runs on the hook threads (its
    /// duration includes the wait for one); the request travels there and back without a copy.
    pub async fn check(
        &self,
        tenant: &LiveTenant,
        request: SendRequest,
        trail: &mut Trail,
    ) -> Result<Checked, GatewayError> {
        self.check_with(tenant, request, None, trail).await
    }

    /// [`Services::check`] for a caller that chose the message (the Tencent-compatible API): its TemplateId
    /// is sent unless the hook sets one or changes the usage type, its sign name unless the hook sets one,
    /// and its extra fields as they are.
    pub(crate) async fn check_with(
        &self,
        tenant: &LiveTenant,
        mut request: SendRequest,
        caller: Option<&CallerMessage>,
        trail: &mut Trail,
    ) -> Result<Checked, GatewayError> {
        // One spelling from here on (the hook sees it too): `register` and `REGISTER` are `Register`.
        if let Some(canonical) = Some(tenant.canonical_usage(&request.usage)).filter(|c| *c != request.usage) {
            request.usage = canonical.to_owned();
        }
        let asked_usage = caller.map(|_| request.usage.clone());
        trail.usage = Some(request.usage.clone());
        trail.usage_named = tenant.knows_usage(&request.usage);
        let normalized = normalize(tenant, &request.phone);
        trail.phone = normalized.as_ref().ok().cloned();
        let (ip, idempotency_key, vouched) = (request.ip, request.idempotency_key.take(), request.vouched);
        let code = request.code.clone();
        let routed = match &tenant.script {
            Some(hook) => {
                let started = Instant::now();
                let (routed, report) =
                    crate::script::stage(hook, tenant, request, normalized, &trail.request_id, &trail.hook_log).await;
                trail.script_duration = report.is_some().then(|| started.elapsed());
                trail.script = report;
                routed?
            }
            None => Routed {
                phone: normalized?,
                usage: request.usage,
                params: request.params,
                template_id: None,
                sign_name: None,
                region: None,
                provider: None,
            },
        };
        let Routed { phone, usage, params, template_id, sign_name, region, provider } = routed;
        trail.phone = Some(phone.clone());
        // The usage the send is made under: a usage type without a template of its own (for this kind of
        // number) goes out with the Generic template, so it is limited, de-duplicated and counted as Generic.
        let canonical = tenant.canonical_usage(&usage);
        let judged = tenant.judged_usage(canonical, phone.is_mainland_china());
        trail.usage_fallback_from = (judged != canonical).then(|| canonical.to_owned());
        trail.usage = Some(judged.to_owned());
        trail.usage_named = tenant.knows_usage(judged);
        let usage = judged.to_owned();
        destination(tenant, &phone)?;
        let (via, route_index) = route(tenant, &phone, provider);
        trail.via = Some(via);
        trail.route = route_index;
        trail.hook_provider = provider;
        let mainland_china = phone.is_mainland_china();
        let tencent_sign_name = || tenant.tencent.as_ref().and_then(|t| t.templates_for(mainland_china).1);
        let mut also_usages = Vec::new();
        let (template_id, kind_sign_name) = match (template_id, caller) {
            // Tencent's template matters only when Tencent may send; else the first provider's must exist.
            _ if !via.iter().any(|p| p == ProviderId::Tencent) => {
                let id = tenant.template_of(via.first(), &usage, mainland_china);
                (id.ok_or_else(|| GatewayError::NoTemplate { usage: usage.clone() })?.to_owned(), None)
            }
            (Some(id), _) => (id, tencent_sign_name()),
            // The caller's TemplateId, unless the hook moved the send to another usage type; the send stands
            // for every usage the template serves.
            (None, Some(caller)) if asked_usage.as_deref() == Some(canonical) => {
                also_usages = tenant
                    .template_usages(&caller.template_id)
                    .into_iter()
                    .filter(|u| *u != usage)
                    .map(str::to_owned)
                    .collect();
                (caller.template_id.clone(), tencent_sign_name())
            }
            (None, _) => {
                let (id, sign_name) = template(tenant, &usage, &phone)?;
                (id.to_owned(), sign_name)
            }
        };
        trail.template_id = Some(template_id.clone());
        // Test numbers (staging, app-store review logins) are never counted: they must keep working however
        // often a reviewer signs in.
        trail.test_number = tenant.test_numbers.contains_key(&phone.digits());
        let sms = OutboundSms {
            phone_e164: phone.e164().to_owned(),
            template_id,
            sign_name: sign_name
                .or_else(|| caller.and_then(|c| c.sign_name.clone()))
                .or_else(|| kind_sign_name.map(str::to_owned)),
            params,
            region: region.or_else(|| tenant.tencent.as_ref().map(|t| t.region.clone())).unwrap_or_default(),
            extras: caller.map(|c| c.extras.clone()).unwrap_or_default(),
            usage: usage.clone(),
            mainland_china,
        };
        Ok(Checked { phone, usage, ip, code, idempotency_key, vouched, sms, also_usages, via })
    }

    /// For `explain`: every stage up to the network, with limits judged but not consumed.
    pub async fn plan(
        &self,
        tenant: &LiveTenant,
        request: SendRequest,
        trail: &mut Trail,
    ) -> Result<Planned, GatewayError> {
        let checked = self.check(tenant, request, trail).await?;
        let provider = self.providers.order(tenant, checked.via).first();
        trail.provider = Some(provider);
        trail.template_id = self.providers.template(tenant, provider, &checked.sms);
        if trail.test_number {
            let request = self.providers.prepare(tenant, &tenant.providers, provider, &checked.sms)?;
            return Ok(Planned { sms: checked.sms, request, provider });
        }
        trail.protection = self.feedback.report(tenant, &checked.phone);
        if let Some(blocked) = trail.protection.iter().find(|k| !k.shadow && k.blocked_until_ms.is_some()) {
            return Err(GatewayError::SuspectedPumping { rule: blocked.rule.clone() });
        }
        let subject = checked.subject();
        let decision = self.limiter.decide(tenant, &subject, false).await?;
        let denied = decision.denial();
        trail.limits = Some(decision);
        if let Some(denied) = denied {
            return Err(denied);
        }
        let request = self.providers.prepare(tenant, &tenant.providers, provider, &checked.sms)?;
        Ok(Planned { sms: checked.sms, request, provider })
    }

    /// The whole pipeline for one request.
    pub async fn send(self: &Arc<Self>, tenant: &Arc<LiveTenant>, request: SendRequest, trail: &mut Trail) -> Outcome {
        let checked = self.check(tenant, request, trail).await?;
        if trail.test_number {
            // The auth server generates its own code; whether it matches the configured one is logged (never
            // the codes themselves) so a misconfigured review account is visible, but it does not change the
            // answer: refusing would only break the login being tested.
            let matches =
                checked.code.is_some() && tenant.test_numbers.get(&checked.phone.digits()) == checked.code.as_ref();
            tracing::info!(tenant = %tenant.name, code_matches = matches, "test number: answered as sent, not sent");
            return Ok(Accepted {
                delivery: Delivery::TestNumber,
                template_id: checked.sms.template_id,
                receipt: None,
                provider: None,
            });
        }
        // Before de-duplication, spend caps and limits: a blocked key consumes nothing.
        let memo = self.feedback.admit(tenant, &checked.phone, checked.vouched)?;
        if self.limiter.is_local() {
            return self.send_local(tenant, checked, memo, trail).await;
        }
        let (ticket, shared_key) = match self.claim_everywhere(tenant, &checked, trail).await {
            Claimed::First { ticket, shared_key } => (ticket, shared_key),
            Claimed::Replay(outcome) => return outcome,
            Claimed::Wait(first) => return dedupe::wait(first).await,
        };
        self.finish_in_task(tenant, Commit::Checked(checked), memo, shared_key, ticket, trail).await
    }

    /// Runs the rest of a send in a task of its own (see the module doc): admit when it is not yet, deliver,
    /// settle; then remembers it, shares its answer and completes its de-duplication ticket.
    async fn finish_in_task(
        self: &Arc<Self>,
        tenant: &Arc<LiveTenant>,
        commit: Commit,
        memo: Option<Memo>,
        shared_key: Option<String>,
        ticket: Option<Ticket>,
        trail: &mut Trail,
    ) -> Outcome {
        let services = self.clone();
        let tenant = tenant.clone();
        let mut owned = std::mem::take(trail);
        let task = tokio::spawn(async move {
            let outcome = match commit {
                Commit::Admitted(admitted) => services.deliver_admitted(&tenant, admitted, &mut owned).await,
                Commit::Checked(checked) => services.commit_and_send(&tenant, checked, &mut owned).await,
            };
            services.remember_accepted(tenant.spec(), memo, &owned.request_id, &outcome);
            if let Some(key) = shared_key {
                services.share_outcome(&tenant, &key, &outcome).await;
            }
            if let Some(ticket) = ticket {
                ticket.complete(&outcome);
            }
            (outcome, owned)
        });
        match task.await {
            Ok((outcome, owned)) => {
                *trail = owned;
                outcome
            }
            Err(e) => Err(GatewayError::Internal(format!("send task failed: {e}"))),
        }
    }

    /// [`Services::send`] with the memory backend, from de-duplication on. Its admit phase never waits, so it
    /// runs in the request's own task, under the de-duplication key's lock: a repeat is answered without
    /// it, and a denial costs neither a task nor a de-duplication entry. Only an admitted send gets a task.
    async fn send_local(
        self: &Arc<Self>,
        tenant: &Arc<LiveTenant>,
        checked: Checked,
        memo: Option<Memo>,
        trail: &mut Trail,
    ) -> Outcome {
        let (ticket, admitted) = match self.dedupe_key(tenant, &checked) {
            None => (None, self.admit_now(tenant, checked, trail)?),
            Some(key) => {
                match self
                    .dedupe
                    .claim_admitted(key, tenant.dedupe_window, || self.admit_now(tenant, checked, trail))?
                {
                    Admission::First(ticket, admitted) => (Some(ticket), admitted),
                    Admission::Replay(outcome) => {
                        trail.replayed = true;
                        return outcome;
                    }
                    Admission::Wait(first) => {
                        trail.replayed = true;
                        return dedupe::wait(first).await;
                    }
                }
            }
        };
        self.finish_in_task(tenant, Commit::Admitted(admitted), memo, None, ticket, trail).await
    }

    /// The feedback loop's record of a send that was accepted (nothing for other outcomes, or without a
    /// `conversion:` block).
    fn remember_accepted(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        memo: Option<Memo>,
        request_id: &str,
        outcome: &Outcome,
    ) {
        if let (Some(memo), Ok(accepted)) = (memo, outcome) {
            self.remember(tenant, memo, request_id, accepted);
        }
    }

    /// Remembers an accepted send for the feedback loop: in memory at once, or with the redis backend in a
    /// task of its own, so the answer never waits on Redis for it.
    fn remember(self: &Arc<Self>, tenant: &Arc<Tenant>, memo: Memo, request_id: &str, accepted: &Accepted) {
        let serial = match (&accepted.receipt, accepted.provider) {
            (Some(receipt), Some(provider)) => crate::sms::message_key(provider, &receipt.serial_no),
            _ => "".into(),
        };
        let serial = serial.as_ref();
        if self.limiter.shared().is_none() {
            self.feedback.remember(tenant, &memo, request_id, serial);
            return;
        }
        let (services, tenant, tracked) = (self.clone(), tenant.clone(), self.feedback.track());
        let (request_id, serial) = (request_id.to_owned(), serial.to_owned());
        tokio::spawn(async move {
            let _tracked = tracked;
            let stored = match services.limiter.shared() {
                Some(redis) => services.feedback.remember_shared(redis, &tenant, &memo, &request_id, &serial).await,
                None => Err(None),
            };
            if let Err(error) = stored {
                if let Some(e) = error {
                    services.limiter.shared_failed(&e);
                }
                services.feedback.remember(&tenant, &memo, &request_id, &serial);
            }
        });
    }

    /// The request's in-process de-duplication key; None when the tenant does not de-duplicate or the
    /// request has nothing to key on.
    fn dedupe_key(&self, tenant: &Tenant, checked: &Checked) -> Option<u64> {
        if tenant.dedupe_window.is_zero() {
            return None;
        }
        self.dedupe.key(
            &tenant.name,
            checked.idempotency_key.as_deref(),
            checked.phone.e164(),
            &checked.usage,
            checked.code.as_deref(),
        )
    }

    /// De-duplication of a request whose admission waits (the redis backend, batches): its in-process claim,
    /// then, for the first of its key here, the cross-replica one. A repeat is marked in the trail.
    async fn claim_everywhere(&self, tenant: &Tenant, checked: &Checked, trail: &mut Trail) -> Claimed {
        let claim = self.dedupe_key(tenant, checked).map(|key| self.dedupe.claim(key, tenant.dedupe_window));
        let ticket = match claim {
            Some(Claim::Replay(outcome)) => {
                trail.replayed = true;
                return Claimed::Replay(outcome);
            }
            Some(Claim::Wait(first)) => {
                trail.replayed = true;
                return Claimed::Wait(first);
            }
            Some(Claim::First(ticket)) => ticket,
            None => return Claimed::First { ticket: None, shared_key: None },
        };
        match self.shared_claim(tenant, checked).await {
            SharedClaim::Replay(outcome) => {
                trail.replayed = true;
                ticket.complete(&outcome);
                Claimed::Replay(outcome)
            }
            SharedClaim::Held(key) => Claimed::First { ticket: Some(ticket), shared_key: Some(key) },
            SharedClaim::Unshared => Claimed::First { ticket: Some(ticket), shared_key: None },
        }
    }

    /// The cross-replica half of de-duplication (redis backend only): claims the request's shared key, or
    /// finds the answer another replica recorded, waiting while that replica's send is in flight.
    async fn shared_claim(&self, tenant: &Tenant, checked: &Checked) -> SharedClaim {
        if tenant.dedupe_window.is_zero() {
            return SharedClaim::Unshared;
        }
        let Some(redis) = self.limiter.shared() else { return SharedClaim::Unshared };
        let Some(key) = dedupe::shared_key(
            redis.storage_key(),
            tenant,
            checked.idempotency_key.as_deref(),
            checked.phone.e164(),
            &checked.usage,
            checked.code.as_deref(),
        ) else {
            return SharedClaim::Unshared;
        };
        // A claim outlives the longest send, so a replica that died mid-send does not block the key forever.
        let pending_for = self.providers.timeout(tenant) + Duration::from_secs(5);
        match redis.set_new(&key, dedupe::PENDING, pending_for).await {
            Ok(true) => return SharedClaim::Held(key),
            Ok(false) => {}
            Err(e) => {
                self.limiter.shared_failed(&e);
                return SharedClaim::Unshared;
            }
        }
        let deadline = tokio::time::Instant::now() + pending_for;
        loop {
            match redis.get(&key).await {
                Ok(Some(value)) if value != dedupe::PENDING => {
                    return match serde_json::from_str::<Accepted>(&value) {
                        Ok(accepted) => SharedClaim::Replay(Ok(accepted)),
                        Err(_) => SharedClaim::Unshared,
                    };
                }
                // Still in flight elsewhere: never send a second SMS; past the deadline the answer is unknown.
                Ok(Some(_)) if tokio::time::Instant::now() >= deadline => {
                    return SharedClaim::Replay(Err(GatewayError::UpstreamTimeout))
                }
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                // The first send failed and its key was dropped: this request is a retry and goes out.
                Ok(None) => return SharedClaim::Unshared,
                Err(e) => {
                    self.limiter.shared_failed(&e);
                    return SharedClaim::Unshared;
                }
            }
        }
    }

    /// Records a held shared key's answer for the window (successes), or drops the key (failures).
    async fn share_outcome(&self, tenant: &Tenant, key: &str, outcome: &Outcome) {
        let Some(redis) = self.limiter.shared() else { return };
        let result = match outcome.as_ref().ok().and_then(|a| serde_json::to_string(a).ok()) {
            Some(answer) => redis.set(key, &answer, tenant.dedupe_window).await,
            None => redis.delete(key).await,
        };
        if let Err(e) = result {
            self.limiter.shared_failed(&e);
        }
    }

    /// Reserves one message against the tenant's spend caps: in Redis when it is up, else in this process.
    async fn reserve_spend(&self, tenant: &Tenant, country: &str) -> Result<Option<Reservation>, GatewayError> {
        let Some(caps) = &tenant.spend_caps else { return Ok(None) };
        let Some(redis) = self.limiter.shared() else { return self.reserve_spend_here(tenant, country) };
        let now = self.clock.unix_seconds();
        match self.spend.reserve_shared(redis, &tenant.name, caps, country, now).await {
            Ok(reserved) => spend_cap_logged(tenant, reserved).map(Some),
            Err(e) => {
                self.limiter.shared_failed(&e);
                self.reserve_spend_here(tenant, country)
            }
        }
    }

    /// Reserves one message against the tenant's spend caps in this process.
    fn reserve_spend_here(&self, tenant: &Tenant, country: &str) -> Result<Option<Reservation>, GatewayError> {
        let Some(caps) = &tenant.spend_caps else { return Ok(None) };
        let reserved = self.spend.reserve(&tenant.name, caps, country, self.clock.unix_seconds());
        spend_cap_logged(tenant, reserved).map(Some)
    }

    async fn give_back(&self, reservation: Option<Reservation>) {
        if let Some(r) = reservation {
            self.spend.release(r, self.limiter.shared()).await;
        }
    }

    async fn keep(&self, reservation: Option<Reservation>, fee: u32) {
        if let Some(r) = reservation {
            self.spend.settle(r, fee, self.limiter.shared()).await;
        }
    }

    /// Admit phase: spend caps, then the limits (consumed). A denial gives back what was reserved; the
    /// limiter's decision stays in the trail for the answer's headers.
    async fn admit(&self, tenant: &Tenant, checked: Checked, trail: &mut Trail) -> Result<Admitted, GatewayError> {
        let subject = checked.subject();
        let reservation = self.reserve_spend(tenant, checked.phone.country_code()).await?;
        let decision = match self.limiter.decide(tenant, &subject, true).await {
            Ok(decision) => decision,
            Err(e) => {
                self.give_back(reservation).await;
                return Err(e);
            }
        };
        let denied = decision.denial();
        trail.limits = Some(decision);
        if let Some(denied) = denied {
            self.give_back(reservation).await;
            return Err(denied);
        }
        // The decision stays in the trail until the send's outcome is known: its quota comes back if nothing
        // went out (settle).
        Ok(Admitted { checked, reservation })
    }

    /// [`Services::admit`] for the memory backend, without waiting: spend caps and limits in this process.
    fn admit_now(&self, tenant: &Tenant, checked: Checked, trail: &mut Trail) -> Result<Admitted, GatewayError> {
        let subject = checked.subject();
        let reservation = self.reserve_spend_here(tenant, checked.phone.country_code())?;
        let Some(decision) = self.limiter.decide_now(tenant, &subject, true) else {
            return Err(GatewayError::Internal("the limiter waits on Redis".into()));
        };
        let denied = decision.denial();
        trail.limits = Some(decision);
        if let Some(denied) = denied {
            if let Some(Reservation::Local(keys)) = reservation {
                self.spend.release_local(keys);
            }
            return Err(denied);
        }
        Ok(Admitted { checked, reservation })
    }

    /// Dry run: signed and logged, never transmitted; the reservation is kept (it counts as a send).
    async fn dry_run(
        &self,
        tenant: &LiveTenant,
        admitted: Admitted,
        provider: ProviderId,
        trail: &mut Trail,
    ) -> Outcome {
        let sms = admitted.checked.sms;
        let request = match self.providers.prepare(tenant, &tenant.providers, provider, &sms) {
            Ok(request) => request,
            Err(e) => {
                self.give_back(admitted.reservation).await;
                return Err(e);
            }
        };
        let template_id = self.providers.template(tenant, provider, &sms).unwrap_or_default();
        trail.template_id = Some(template_id.clone());
        tracing::info!(
            tenant = %tenant.name,
            provider = %provider,
            endpoint = %request.redacted_url(),
            region = %sms.region,
            body = %request.redacted_body(),
            "dry run: signed, not sent"
        );
        self.keep(admitted.reservation, 0).await;
        Ok(Accepted { delivery: Delivery::DryRun, template_id, receipt: None, provider: Some(provider) })
    }

    /// Settle phase, for one admitted number once its upstream result is known: the fee is kept, or the
    /// reservation given back when the send certainly went nowhere, with the rate-limit quota when nothing
    /// went out for a reason that is not the caller's; Tencent's code goes to the trail. The caller records an
    /// accepted send for the feedback loop (`remember_accepted`).
    async fn settle(
        &self,
        reservation: Option<Reservation>,
        template_id: String,
        provider: ProviderId,
        result: Result<Dispatched, GatewayError>,
        trail: &mut Trail,
    ) -> Outcome {
        let provider = Some(provider);
        match result {
            Ok(Dispatched::Sent(receipt)) => {
                trail.upstream_code = provider.map(crate::providers::sent_code);
                self.keep(reservation, receipt.fee).await;
                Ok(Accepted { delivery: Delivery::Sent, template_id, receipt: Some(receipt), provider })
            }
            Ok(Dispatched::Unconfirmed(unconfirmed)) => {
                // Counted as one billed message: the cap errs on the side of the bill.
                self.keep(reservation, 1).await;
                trail.upstream_code = unconfirmed.upstream.as_ref().map(|u| u.label);
                trail.unconfirmed = Some(unconfirmed.reason);
                Ok(Accepted { delivery: Delivery::MaybeSent, template_id, receipt: None, provider })
            }
            // Nothing was sent (the client's decision): the spend comes back, and the quota unless the caller's
            // number or text was refused.
            Err(e) => {
                if e.quota_comes_back() {
                    if let Some(decision) = trail.limits.as_mut() {
                        self.limiter.give_back(decision).await;
                    }
                }
                self.give_back(reservation).await;
                trail.upstream_code = e.upstream().map(|u| u.label);
                Err(e)
            }
        }
    }

    /// Admit, deliver, settle: the stages that consume something, for one number.
    async fn commit_and_send(&self, tenant: &LiveTenant, checked: Checked, trail: &mut Trail) -> Outcome {
        let admitted = self.admit(tenant, checked, trail).await?;
        self.deliver_admitted(tenant, admitted, trail).await
    }

    /// Deliver and settle an admitted send (or sign and log it in a dry run).
    async fn deliver_admitted(&self, tenant: &LiveTenant, admitted: Admitted, trail: &mut Trail) -> Outcome {
        let via = self.providers.order(tenant, admitted.checked.via);
        trail.provider = Some(via.first());
        if self.providers.dry_run(tenant, via.first()) {
            return self.dry_run(tenant, admitted, via.first(), trail).await;
        }
        let Admitted { checked, reservation } = admitted;
        let sms = &checked.sms;
        let started = Instant::now();
        let guard = HandedOver {
            request_id: trail.request_id.clone(),
            tenant: tenant.name.clone(),
            phone: Masked(&sms.phone_e164).to_string(),
            finished: false,
        };
        // Boxed: the client's future is large, and this task's is moved whole into its spawned cell, on
        // denied requests too.
        let delivered = Box::pin(self.providers.deliver(tenant, &tenant.providers, via, sms)).await;
        guard.finish();
        trail.provider = Some(delivered.provider);
        trail.template_id = Some(delivered.template_id.clone());
        trail.failed_over = delivered.failed_over;
        if delivered.dry_run {
            // The providers before it sent nothing: the route ended at a provider in dry run.
            let admitted = Admitted { checked, reservation };
            return self.dry_run(tenant, admitted, delivered.provider, trail).await;
        }
        trail.upstream_latency = Some(started.elapsed());
        self.settle(reservation, delivered.template_id, delivered.provider, delivered.result, trail).await
    }
}
