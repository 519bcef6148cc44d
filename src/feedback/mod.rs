//! The feedback loop: smsgate remembers each accepted send of a tenant with a `conversion:` block, takes in
//! verified codes (Logto's webhook, `/v1/sms/verified`) and Tencent's delivery receipts, and gives out
//! metrics, Tencent's `ReportConversion` and a relayed webhook, and feeds the adaptive SMS-pumping defense
//! (`crate::protection`).
//!
//! On a send's request path it costs an in-memory check of the number's protection keys before the send
//! ([`Feedback::admit`], checked before de-duplication, spend caps and limits, so a blocked key consumes
//! nothing) and, after Tencent's answer, remembering the send: in memory, or with the redis backend in a
//! background task (no Redis round trip on the request path). Signals, reports and webhooks run off it.

pub mod sends;
pub mod signals;
mod store;
pub(crate) mod telemetry;
mod verified;

pub(crate) use sends::SendInfo;
pub use telemetry::Telemetry;

use crate::clock::SharedClock;
use crate::config::{Config, ConversionSettings, ProtectionRule, Tenant};
use crate::error::GatewayError;
use crate::phone::{Masked, Phone};
use crate::policy::{Limiter, RedisStore};
use crate::protection::{self, Event, KeyReport, KeySource, ProtectionTable};
use crate::providers::{Conversions, States};
use crate::relay::Relay;
use prometheus_client::metrics::counter::Counter;
use sends::TenantSends;
use signals::StatusReport;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use telemetry::{CountryLabels, DeliveryLabels, ProtectionLabels, TenantLabels};
use verified::VerifiedNumbers;

/// With the redis backend, how often a replica pulls the shared protection blocks (the longest a block
/// tripped on another replica takes to reach this one).
pub(crate) const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a send that passed [`Feedback::admit`] carries to [`Feedback::remember`]: the parts of the number
/// the feedback loop needs, not the number.
#[derive(Debug, Clone, Copy)]
pub struct Memo {
    source: KeySource,
    /// E.164 digits: hashed (memory) or HMAC'd (Redis) when remembered, never stored.
    digits: u64,
    /// The send passed a block as one the caller vouched for.
    vouched: bool,
}

/// What a verification report found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Sends to the number within the conversion window.
    pub found: usize,
    /// Those this report converted (the rest had been converted before).
    pub converted: usize,
}

/// What a delivery-status callback matched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Receipts {
    pub(crate) matched: usize,
    /// Reports whose `sid` names no send smsgate remembers for this tenant and number: counted, dropped.
    pub unknown: usize,
    /// Reports naming a send whose receipt was already counted: counted as `repeated`, not relayed again.
    pub repeated: usize,
}

/// One block, for the admin API; `strikes`: the key's trips in a row (each blocks 4x longer).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockView {
    pub rule: String,
    pub key: String,
    pub shadow: bool,
    pub until_unix_ms: u64,
    pub strikes: u8,
    /// The kinds of exemption the block lets through no more (`verified_number`, `vouched`): their sends
    /// stopped converting.
    pub exemptions_closed: Vec<&'static str>,
}

/// A key whose block lifted while its strikes are remembered (its next trip escalates), for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiftedView {
    pub rule: String,
    pub key: String,
    pub shadow: bool,
    pub(crate) lifted_at_unix_ms: u64,
    pub strikes: u8,
}

/// Background work started for the request path, for tests to wait on.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by background feedback work; the last one dropped wakes [`Feedback::settled`].
pub(crate) struct Tracked(Arc<InFlight>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Tenant -> country -> counter.
type SendCounters = HashMap<Arc<str>, HashMap<[u8; 2], Counter>>;

pub struct Feedback {
    clock: SharedClock,
    /// Keys the in-process hashes of numbers (random per process).
    hasher: std::hash::RandomState,
    sends: TenantSends,
    protection: ProtectionTable,
    /// Numbers that verified before: they pass a blocked key (a small allowance at a time).
    verified: VerifiedNumbers,
    telemetry: Telemetry,
    /// The provider's conversion reports (Tencent's ReportConversion).
    reporter: Box<dyn Conversions>,
    relay: Relay,
    inflight: Arc<InFlight>,
    /// `smsgate_feedback_sends_total` counters by tenant and country, found without building label strings
    /// (the send path).
    send_counters: std::sync::Mutex<SendCounters>,
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

impl Feedback {
    pub fn new(clock: SharedClock, reporter: Box<dyn Conversions>, telemetry: Telemetry) -> Feedback {
        Feedback {
            reporter,
            relay: Relay::new(clock.clone(), crate::relay::QUEUE, telemetry.webhooks.clone()),
            sends: TenantSends::new(1_000_000),
            protection: ProtectionTable::default(),
            verified: VerifiedNumbers::default(),
            hasher: std::hash::RandomState::new(),
            inflight: Arc::default(),
            send_counters: Default::default(),
            telemetry,
            clock,
        }
    }

    /// Applies a (re)loaded config: the cap and age of remembered sends, the live protection rules, and
    /// ReportConversion back on for every tenant.
    pub fn configure(&self, config: &Config) {
        let keep = config.tenants.iter().filter_map(|t| t.conversion.as_ref()).map(|c| millis(c.remember_for)).max();
        self.sends.set_limits(config.server.max_remembered_sends, keep.unwrap_or(0));
        self.reporter.reset();
    }

    /// Starts the ReportConversion and webhook workers (needs a runtime; without them, queues fill and drop).
    pub fn start(&self) {
        self.reporter.start();
        self.relay.start();
    }

    fn number_key(&self, tenant: &str, digits: u64) -> u64 {
        self.hasher.hash_one((tenant, digits))
    }

    fn log_event(&self, tenant: &Tenant, event: &Event) {
        match *event {
            Event::Tripped { rule, key, sends, converted, excess, strike, until_ms } => {
                let rule = &tenant.protection[rule];
                self.telemetry.trips.get_or_create(&protection_labels(tenant, rule)).inc();
                tracing::warn!(
                    tenant = %tenant.name,
                    rule = %rule.name,
                    key = %protection::key_label(key),
                    judged_sends = sends,
                    converted,
                    excess,
                    strike,
                    min_conversion = rule.min_conversion,
                    block_seconds = until_ms.saturating_sub(self.clock.unix_millis()) / 1000,
                    until_unix_ms = until_ms,
                    shadow = rule.shadow,
                    "protection: key tripped, suspected SMS pumping{}",
                    if rule.shadow { " (shadow: not blocked)" } else { ": sends to it are refused" }
                );
            }
            Event::ExemptionsClosed { rule, key, vouched, excess } => {
                let rule = &tenant.protection[rule];
                self.telemetry.exemptions_closed.get_or_create(&protection_labels(tenant, rule)).inc();
                tracing::warn!(
                    tenant = %tenant.name,
                    rule = %rule.name,
                    key = %protection::key_label(key),
                    exemption = if vouched { "vouched" } else { "verified_number" },
                    excess,
                    shadow = rule.shadow,
                    "protection: the sends this block let through as exemptions of this kind are not converting; \
                     no more are let through until the block ends"
                );
            }
            Event::Lifted { rule, key } => {
                let rule = &tenant.protection[rule];
                self.telemetry.lifts.get_or_create(&protection_labels(tenant, rule)).inc();
                tracing::info!(
                    tenant = %tenant.name,
                    rule = %rule.name,
                    key = %protection::key_label(key),
                    shadow = rule.shadow,
                    "protection: block lifted (its time is up)"
                );
            }
        }
    }

    fn count_blocked(&self, tenant: &Tenant, rule: &ProtectionRule) {
        self.telemetry.blocked.get_or_create(&protection_labels(tenant, rule)).inc();
    }

    /// Before a send consumes anything: `403 suspected_pumping` when one of the number's protection keys is
    /// blocked by an enforcing rule (shadow rules count and let it through). A number with a verification
    /// history, within its allowance, or a send the caller vouched for, passes while the block's exemptions
    /// are open. Trips and lifts happen here (logged once). Returns what [`Feedback::remember`] needs, or None
    /// when the tenant has no feedback loop.
    pub fn admit(&self, tenant: &Tenant, phone: &Phone, vouched: bool) -> Result<Option<Memo>, GatewayError> {
        let Some(conversion) = &tenant.conversion else { return Ok(None) };
        let source = KeySource::of(phone, &tenant.protection);
        if !tenant.protection.is_empty() {
            let now = self.clock.unix_millis();
            let mut admission = self.protection.admit(&tenant.protection, millis(conversion.window), &source, now);
            let hit = admission.blocked_by.or(admission.shadow_hits.first().copied());
            // An exemption: the caller vouched for the user, or the number has a verification history (each
            // kind passes while the block lets that kind through). Some(true) for the first.
            let exempt = hit.and_then(|rule| {
                let window = millis(conversion.window);
                let events = &mut admission.events;
                let mut key_allows =
                    |kind| self.protection.exempt(&tenant.protection, rule, window, &source, now, kind, events);
                if vouched && key_allows(true) {
                    return Some(true);
                }
                let number = self.number_key(&tenant.name, phone.digits());
                self.verified.pass(&tenant.name, number, now, || key_allows(false)).then_some(false)
            });
            for event in &admission.events {
                self.log_event(tenant, event);
            }
            if let (Some(vouched), Some(rule)) = (exempt, hit) {
                let rule = &tenant.protection[rule];
                self.telemetry.exempted.get_or_create(&protection_labels(tenant, rule)).inc();
                return Ok(Some(Memo { source, digits: phone.digits(), vouched }));
            }
            for &rule in &admission.shadow_hits {
                self.count_blocked(tenant, &tenant.protection[rule]);
            }
            if let Some(rule) = admission.blocked_by {
                let rule = &tenant.protection[rule];
                self.count_blocked(tenant, rule);
                return Err(GatewayError::SuspectedPumping { rule: rule.name.clone() });
            }
        }
        Ok(Some(Memo { source, digits: phone.digits(), vouched: false }))
    }

    /// The protection state of a number's keys, judged but never changed (`explain`).
    pub fn report(&self, tenant: &Tenant, phone: &Phone) -> Vec<KeyReport> {
        let source = KeySource::of(phone, &tenant.protection);
        let conversion_ms = tenant.conversion.as_ref().map_or(0, |c| millis(c.window));
        self.protection.report(&tenant.protection, conversion_ms, &source, self.clock.unix_millis())
    }

    /// Remembers an accepted send in this process (the memory backend, or Redis unreachable).
    pub fn remember(&self, tenant: &Tenant, memo: &Memo, request_id: &str, serial: &str) {
        if tenant.conversion.is_none() {
            return;
        }
        let now = self.clock.unix_millis();
        let number = self.number_key(&tenant.name, memo.digits);
        let history = !tenant.protection.is_empty() && self.verified.has_history(&tenant.name, number, now);
        let sent = protection::Sent { vouched: memo.vouched, history };
        self.protection.record(&tenant.protection, &memo.source, now, sent);
        let (dropped, len) = self
            .sends
            .push(&tenant.name, sends::NewSend { number, at_ms: now, source: memo.source, serial, request_id });
        self.count_send(tenant, &memo.source);
        self.telemetry.remembered.set(len as i64);
        if dropped > 0 {
            self.telemetry.dropped.inc_by(dropped);
        }
    }

    fn count_send(&self, tenant: &Tenant, source: &KeySource) {
        let mut counters = self.send_counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = counters.get(&*tenant.name).and_then(|c| c.get(&source.country)) {
            counter.inc();
            return;
        }
        let labels = CountryLabels { tenant: tenant.name.to_string(), country: source.country().to_owned() };
        let counter = self.telemetry.sends.get_or_create(&labels).clone();
        counter.inc();
        counters.entry(tenant.name.clone()).or_default().insert(source.country, counter);
    }

    /// Remembers an accepted send in Redis (run it off the request path), judging its keys there; a trip
    /// is logged here and takes effect on this replica at once. On a Redis failure (`Err(Some(e))`) the caller
    /// reports it and falls back to [`Feedback::remember`].
    pub(crate) async fn remember_shared(
        &self,
        redis: &RedisStore,
        tenant: &Tenant,
        memo: &Memo,
        request_id: &str,
        serial: &str,
    ) -> Result<(), Option<crate::policy::RedisError>> {
        let Some(conversion) = &tenant.conversion else { return Ok(()) };
        let now = self.clock.unix_millis();
        let events =
            store::record(redis, tenant, conversion, &memo.source, memo.digits, request_id, serial, now).await?;
        for event in &events {
            if let Event::Tripped { rule, key, until_ms, .. } = *event {
                self.protection.share(tenant.protection[rule].id, key, until_ms);
            }
            self.log_event(tenant, event);
        }
        self.count_send(tenant, &memo.source);
        Ok(())
    }

    /// Marks background work the request path started; [`Feedback::settled`] waits for it.
    pub(crate) fn track(&self) -> Tracked {
        self.inflight.count.fetch_add(1, Ordering::SeqCst);
        Tracked(self.inflight.clone())
    }

    /// Background feedback work running now (records on their way to Redis).
    pub fn pending(&self) -> usize {
        self.inflight.count.load(Ordering::SeqCst)
    }

    /// Waits until no background feedback work is running (tests: a send's record has landed).
    pub async fn settled(&self) {
        loop {
            let idle = self.inflight.idle.notified();
            if self.inflight.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// A verification of `phone` (Logto's webhook, `/v1/sms/verified`): converts one send to it made within
    /// `conversion.window`, the one answered with `request_id` or else the most recent (one verification,
    /// one conversion), and gives the number its pass through blocked keys.
    /// `states`: the tenant's provider states, for the conversion report.
    pub async fn verify(
        &self,
        tenant: &Arc<Tenant>,
        states: &States,
        phone: &Phone,
        request_id: Option<&str>,
        limiter: &Limiter,
    ) -> Verification {
        let Some(conversion) = &tenant.conversion else { return Verification::default() };
        let now = self.clock.unix_millis();
        let window = millis(conversion.window);
        let local =
            self.sends.convert(&tenant.name, self.number_key(&tenant.name, phone.digits()), now, window, request_id);
        for send in &local.newly {
            self.protection.convert(&tenant.protection, &send.source, send.at_ms, now);
        }
        let mut result = Verification { found: local.found, converted: local.newly.len() };
        let mut converted = local.newly;
        if let Some(redis) = limiter.shared() {
            match store::convert(redis, tenant, conversion, phone.digits(), request_id, now).await {
                Ok((found, shared)) => {
                    result.found += found;
                    result.converted += shared.len();
                    converted.extend(shared);
                }
                Err(e) => limiter.shared_failed(&e),
            }
        }
        if result.found > 0 {
            // Only a verification of a code smsgate sent earns the number its pass through blocked keys.
            self.verified.verified(&tenant.name, self.number_key(&tenant.name, phone.digits()), now);
        }
        for send in &converted {
            self.on_conversion(tenant, states, conversion, send, phone, now);
        }
        result
    }

    fn on_conversion(
        &self,
        tenant: &Arc<Tenant>,
        states: &States,
        conversion: &ConversionSettings,
        send: &SendInfo,
        phone: &Phone,
        now: u64,
    ) {
        let labels = CountryLabels { tenant: tenant.name.to_string(), country: send.source.country().to_owned() };
        self.telemetry.conversions.get_or_create(&labels).inc();
        let seconds = now.saturating_sub(send.at_ms) as f64 / 1000.0;
        self.telemetry.verify_latency.get_or_create(&TenantLabels { tenant: tenant.name.to_string() }).observe(seconds);
        let tencent = crate::sms::split_message_key(&send.serial).0 == crate::sms::ProviderId::Tencent;
        if conversion.report_to_tencent && tencent && !send.serial.is_empty() {
            self.reporter.enqueue(tenant, states, &send.serial, (now / 1000) as i64);
        }
        if let Some(target) = &tenant.webhook {
            let data = serde_json::json!({
                "tenant": &*tenant.name,
                "request_id": send.request_id,
                "serial_no": send.serial,
                "phone": Masked(phone.e164()).to_string(),
                "country": send.source.country(),
                "sent_at": rfc3339(send.at_ms),
                "converted_at": rfc3339(now),
            });
            self.relay.enqueue(&tenant.name, target, "sms.converted", data);
        }
    }

    /// Tencent's delivery-status callback for `tenant`: each report whose `sid` and number name a remembered
    /// send is counted (metrics, the relayed webhook); the others are counted as `unknown_sid` and dropped.
    pub async fn receipts(&self, tenant: &Arc<Tenant>, reports: &[StatusReport], limiter: &Limiter) -> Receipts {
        let now = self.clock.unix_millis();
        // (the send, whether this is the first receipt naming it)
        let mut found: Vec<Option<(SendInfo, bool)>> = reports
            .iter()
            .map(|r| {
                let digits = r.digits?;
                self.sends.receipt(&tenant.name, self.number_key(&tenant.name, digits), &r.sid)
            })
            .collect();
        let missing: Vec<usize> =
            (0..reports.len()).filter(|&i| found[i].is_none() && reports[i].digits.is_some()).collect();
        if let (Some(redis), false) = (limiter.shared(), missing.is_empty()) {
            let wanted: Vec<(&str, u64)> =
                missing.iter().map(|&i| (reports[i].sid.as_str(), reports[i].digits.unwrap_or(0))).collect();
            match store::receipts(redis, tenant, &wanted).await {
                Ok(shared) => {
                    let named: Vec<usize> =
                        missing.iter().zip(&shared).filter(|(_, s)| s.is_some()).map(|(&i, _)| i).collect();
                    let serials: Vec<&str> = named.iter().map(|&i| reports[i].sid.as_str()).collect();
                    let remember = tenant.conversion.as_ref().map_or(0, |c| millis(c.remember_for)).max(1);
                    // Redis failing here counts the receipt (a repeated webhook rather than a lost one).
                    let first = store::first_receipts(redis, tenant, &serials, remember).await.unwrap_or_else(|e| {
                        limiter.shared_failed(&e);
                        vec![true; serials.len()]
                    });
                    let first: HashMap<usize, bool> = named.into_iter().zip(first).collect();
                    for (i, send) in missing.into_iter().zip(shared) {
                        found[i] = send.map(|s| (s, first.get(&i).copied().unwrap_or(true)));
                    }
                }
                Err(e) => limiter.shared_failed(&e),
            }
        }
        let mut summary = Receipts::default();
        for (report, send) in reports.iter().zip(found) {
            let Some((send, first)) = send else {
                summary.unknown += 1;
                self.count_delivery(tenant, "", "unknown_sid");
                continue;
            };
            if !first {
                // A receipt already counted (repeated in this callback or an earlier one): no second webhook.
                summary.repeated += 1;
                self.count_delivery(tenant, send.source.country(), "repeated");
                continue;
            }
            summary.matched += 1;
            self.count_delivery(tenant, send.source.country(), report.status_label());
            let seconds = now.saturating_sub(send.at_ms) as f64 / 1000.0;
            self.telemetry
                .receipt_latency
                .get_or_create(&TenantLabels { tenant: tenant.name.to_string() })
                .observe(seconds);
            if let Some(target) = &tenant.webhook {
                let kind = if report.status == "SUCCESS" { "sms.delivered" } else { "sms.delivery_failed" };
                let phone = report.digits.map(|d| Masked(&format!("+{d}")).to_string());
                let data = serde_json::json!({
                    "tenant": &*tenant.name,
                    "request_id": send.request_id,
                    "serial_no": send.serial,
                    "phone": phone,
                    "country": send.source.country(),
                    "status": report.status,
                    "errmsg": report.errmsg,
                    "description": report.description,
                    "user_receive_time": report.user_receive_time,
                    "sent_at": rfc3339(send.at_ms),
                });
                self.relay.enqueue(&tenant.name, target, kind, data);
            }
        }
        summary
    }

    fn count_delivery(&self, tenant: &Tenant, country: &str, status: &str) {
        let labels = DeliveryLabels { tenant: tenant.name.to_string(), country: country.into(), status: status.into() };
        self.telemetry.deliveries.get_or_create(&labels).inc();
    }

    /// Reads the tenant's shared blocks from Redis into this replica (read only: `explain`, the admin API).
    pub(crate) async fn load_blocks(&self, tenant: &Tenant, limiter: &Limiter) {
        let Some(redis) = limiter.shared() else { return };
        if tenant.protection.is_empty() {
            return;
        }
        match store::blocks(redis, tenant, self.clock.unix_millis(), false).await {
            Ok((live, _)) => self.share_blocks(tenant, &live),
            Err(e) => limiter.shared_failed(&e),
        }
    }

    fn share_blocks(&self, tenant: &Tenant, live: &[(u64, u64, u64)]) {
        let ids: Vec<u64> = tenant.protection.iter().map(|r| r.id).collect();
        let live: Vec<_> = live.iter().filter(|(rule, _, _)| ids.contains(rule)).copied().collect();
        self.protection.replace_shared(&ids, &live);
    }

    /// Redis backend: pulls every tenant's blocks into this replica and deletes the ended ones, logging
    /// each lift once across replicas. Run every second in the background.
    pub async fn refresh(&self, config: &Config, limiter: &Limiter) {
        let Some(redis) = limiter.shared() else { return };
        for tenant in config.tenants.iter().filter(|t| !t.protection.is_empty()) {
            match store::blocks(redis, tenant, self.clock.unix_millis(), true).await {
                Ok((live, lifted)) => {
                    self.share_blocks(tenant, &live);
                    for (rule_id, key) in lifted {
                        if let Some(rule) = tenant.protection.iter().position(|r| r.id == rule_id) {
                            self.log_event(tenant, &Event::Lifted { rule, key });
                        }
                    }
                }
                Err(e) => {
                    limiter.shared_failed(&e);
                    return;
                }
            }
        }
    }

    /// Every live block of the tenant's rules (local and, with the redis backend, shared), and the keys
    /// whose block lifted while their strikes are remembered (local).
    pub async fn blocks(&self, tenant: &Tenant, limiter: &Limiter) -> (Vec<BlockView>, Vec<LiftedView>) {
        self.load_blocks(tenant, limiter).await;
        let (mut blocks, mut lifted) = (Vec::new(), Vec::new());
        for state in self.protection.blocks(&tenant.protection, self.clock.unix_millis()) {
            let rule = &tenant.protection[state.rule];
            let (name, key, shadow) = (rule.name.clone(), protection::key_label(state.key), rule.shadow);
            match (state.until_ms, state.lifted_at_ms) {
                (Some(until_unix_ms), _) => blocks.push(BlockView {
                    rule: name,
                    key,
                    shadow,
                    until_unix_ms,
                    strikes: state.strikes,
                    exemptions_closed: protection::exemption_names(state.exemptions_closed),
                }),
                (None, Some(lifted_at_unix_ms)) => {
                    lifted.push(LiftedView { rule: name, key, shadow, lifted_at_unix_ms, strikes: state.strikes })
                }
                (None, None) => {}
            }
        }
        (blocks, lifted)
    }

    /// Lifts a block early (the admin API): `Ok(false)` when the key is not blocked, `NotFound` for an
    /// unknown rule, `InvalidRequest` for a key that cannot be one of the rule's.
    pub async fn lift(&self, tenant: &Tenant, rule: &str, key: &str, limiter: &Limiter) -> Result<bool, GatewayError> {
        let rule = tenant.protection.iter().find(|r| r.name == rule).ok_or(GatewayError::NotFound)?;
        let key = protection::parse_key(rule.key, key).ok_or_else(|| {
            GatewayError::InvalidRequest("the key is a country code such as CN or a prefix such as +861380".into())
        })?;
        let mut lifted = self.protection.lift(rule.id, key, self.clock.unix_millis());
        if let Some(redis) = limiter.shared() {
            match store::lift(redis, tenant, rule.id, key).await {
                Ok(shared) => lifted |= shared,
                Err(e) => {
                    limiter.shared_failed(&e);
                    return Err(GatewayError::LimiterUnavailable);
                }
            }
        }
        if lifted {
            tracing::warn!(
                tenant = %tenant.name,
                rule = %rule.name,
                key = %protection::key_label(key),
                "protection: block lifted by an operator"
            );
        }
        Ok(lifted)
    }

    /// Memory housekeeping (every few seconds): old sends leave, keys are judged (trips and lifts logged
    /// and counted like the send path's), idle keys and keys of removed rules are dropped.
    pub fn sweep(&self, config: &Config) {
        let now = self.clock.unix_millis();
        let mut rules: HashMap<u64, (&ProtectionRule, usize, u64)> = HashMap::new();
        let mut owner: HashMap<u64, &Tenant> = HashMap::new();
        for tenant in &config.tenants {
            let window = tenant.conversion.as_ref().map_or(0, |c| millis(c.window));
            for (i, rule) in tenant.protection.iter().enumerate() {
                rules.insert(rule.id, (rule, i, window));
                owner.insert(rule.id, tenant);
            }
        }
        for (rule_id, event) in self.protection.sweep(&rules, now) {
            if let Some(tenant) = owner.get(&rule_id) {
                self.log_event(tenant, &event);
            }
        }
        let live: Vec<&str> = config.tenants.iter().map(|t| &*t.name).collect();
        self.verified.sweep(&live, now);
        self.sends.sweep(now);
        self.telemetry.remembered.set(self.sends.len() as i64);
    }

    /// Remembered sends in this process (tests, the memory example).
    pub fn remembered(&self) -> usize {
        self.sends.len()
    }

    /// Bytes the remembered sends hold (entries, id strings, index), and the protection keys tracked.
    pub fn footprint(&self) -> (usize, usize) {
        (self.sends.footprint(), self.protection.len())
    }

    /// Sends the cap pushed out so far.
    pub fn dropped(&self) -> u64 {
        self.sends.dropped()
    }
}

fn protection_labels(tenant: &Tenant, rule: &ProtectionRule) -> ProtectionLabels {
    ProtectionLabels { tenant: tenant.name.to_string(), rule: rule.name.clone(), shadow: rule.shadow }
}

fn rfc3339(unix_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
