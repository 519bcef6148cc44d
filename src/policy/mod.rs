//! Policy stage: the tenant's limit rules, judged as one decision. A request is allowed only if every
//! enforcing rule allows it; a denied request consumes no quota of any rule; shadow rules count and report
//! but never deny; what a request took is given back when its send certainly went nowhere. State lives in a
//! backend (in-process memory, or Redis shared by every replica, with a fallback when Redis is down whose
//! decisions are written into Redis when it returns). Also renders the IETF `RateLimit` / `RateLimit-Policy`
//! headers.

mod connect;
mod gcra;
mod memory;
mod redis;
pub mod spend;

pub use self::redis::{hash_tag, key_name, one_slot, pipeline_keys, Call, RedisError, RedisStore, StorageKey, Stored};
pub use gcra::{Gcra, RuleVerdict, GIVE_BACK_WINDOW_MS};
pub use memory::{Check, MemoryStore};

use crate::clock::SharedClock;
use crate::config::{LimitKey, LimitRule, LimitsBackend, OnError, Tenant};
use crate::error::GatewayError;
use crate::phone::Phone;
use spend::SpendLedger;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// While Redis is down, how often the background probe tries it again.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Keys per script call when local decisions are written back into Redis: small enough for one call to stay
/// well inside `limits_backend.timeout`.
const WRITE_BACK_BATCH: usize = 256;

/// What the rules key on, after normalization and the script.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub phone: &'a Phone,
    pub usage: &'a str,
    /// The other usage types the send stands for (a template several usages share, sent by a door that
    /// knows only the template): their rules apply too.
    pub also: &'a [String],
    pub ip: Option<IpAddr>,
}

/// One rule's part in a decision.
#[derive(Debug, Clone)]
pub struct RuleReport {
    pub name: String,
    pub limit: u32,
    pub window: Duration,
    pub shadow: bool,
    pub verdict: RuleVerdict,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    /// The longest wait among the denying enforcing rules.
    pub retry_after: Duration,
    /// The enforcing rule that denied with the longest wait.
    pub(crate) denied_by: Option<String>,
    pub rules: Vec<RuleReport>,
    /// What a committed, allowed decision took, for [`Limiter::give_back`].
    taken: Option<Taken>,
}

/// The quota one committed decision took: each rule it moved and the TAT it stored there.
#[derive(Debug, Clone)]
struct Taken {
    tenant: Arc<str>,
    /// Recorded in Redis (and in this replica's own record), or only in the in-process store.
    shared: bool,
    /// When, in the time of the store that recorded it.
    at: u64,
    /// Its admission number in the store that recorded it.
    seq: u64,
    rules: Vec<(Check, u64)>,
}

impl Decision {
    /// The `rate_limited` error of a denied decision.
    pub fn denial(&self) -> Option<GatewayError> {
        (!self.allowed).then(|| GatewayError::RateLimited {
            rule: self.denied_by.clone().unwrap_or_default(),
            retry_after: self.retry_after,
        })
    }

    /// `RateLimit-Policy` and `RateLimit` header values (IETF httpapi ratelimit-headers draft), for the
    /// enforcing rules; None when no enforcing rule applied.
    pub fn headers(&self) -> Option<(String, String)> {
        let mut policy = String::with_capacity(32 * self.rules.len());
        // The rule closest to denying: fewest remaining, then the longest reset (the first such rule).
        let mut tightest: Option<&RuleReport> = None;
        let closeness = |r: &RuleReport| (r.verdict.remaining, std::cmp::Reverse(r.verdict.reset));
        for r in self.rules.iter().filter(|r| !r.shadow) {
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            policy.push('"');
            policy.push_str(&r.name);
            policy.push_str("\";q=");
            policy.push_str(itoa::Buffer::new().format(r.limit));
            policy.push_str(";w=");
            policy.push_str(itoa::Buffer::new().format(r.window.as_secs()));
            if tightest.is_none_or(|t| closeness(r) < closeness(t)) {
                tightest = Some(r);
            }
        }
        let tightest = tightest?;
        let reset = crate::error::retry_after_seconds(tightest.verdict.reset);
        let mut current = String::with_capacity(tightest.name.len() + 24);
        current.push('"');
        current.push_str(&tightest.name);
        current.push_str("\";r=");
        current.push_str(itoa::Buffer::new().format(tightest.verdict.remaining));
        current.push_str(";t=");
        current.push_str(itoa::Buffer::new().format(reset));
        Some((policy, current))
    }
}

/// Which limiter is deciding right now (`/readyz`, the `smsgate_limiter_mode` gauge, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterMode {
    /// `kind: memory`.
    Memory,
    /// `kind: redis`, Redis answering.
    Redis,
    /// Redis down, `on_error: local`: the in-process store with the same rules.
    LocalFallback,
    /// Redis down, `on_error: allow`: requests pass without limits.
    Unlimited,
    /// Redis down, `on_error: deny`: requests get 503 `limiter_unavailable`.
    Unavailable,
}

impl LimiterMode {
    pub(crate) const ALL: [LimiterMode; 5] = [
        LimiterMode::Memory,
        LimiterMode::Redis,
        LimiterMode::LocalFallback,
        LimiterMode::Unlimited,
        LimiterMode::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimiterMode::Memory => "memory",
            LimiterMode::Redis => "redis",
            LimiterMode::LocalFallback => "local-fallback",
            LimiterMode::Unlimited => "unlimited",
            LimiterMode::Unavailable => "unavailable",
        }
    }
}

/// The Redis backend and what to do while it is unreachable.
struct RedisLink {
    store: RedisStore,
    on_error: OnError,
    healthy: AtomicBool,
    probing: AtomicBool,
    /// This replica's own record of what it admitted (through Redis, or alone during an outage), in unix
    /// milliseconds: the fallback judges with it, a key Redis lost is judged against it, and it is written
    /// into Redis when Redis returns. Shared with the `Limiter`.
    local: Arc<MemoryStore>,
    clock: SharedClock,
    /// Rule id -> tenant, for the Redis key names of the local record.
    tenants: RwLock<HashMap<u64, Arc<str>>>,
    /// The spend caps' counters, mirrored and written back the same way. Shared with the `Limiter`.
    spend: Arc<SpendLedger>,
}

impl RedisLink {
    fn degraded_mode(&self) -> LimiterMode {
        match self.on_error {
            OnError::Local => LimiterMode::LocalFallback,
            OnError::Allow => LimiterMode::Unlimited,
            OnError::Deny => LimiterMode::Unavailable,
        }
    }

    /// Records a failure: the first one switches the mode and starts the probe that switches it back.
    fn failed(self: &Arc<Self>, error: &RedisError) {
        if self.healthy.swap(false, Ordering::SeqCst) {
            tracing::error!(error = %error, topology = self.store.kind(), mode = self.degraded_mode().as_str(), "limiter: redis unavailable, switching mode");
        }
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if link.store.ping().await.is_err() {
                    continue;
                }
                // Redis may have come back empty (restarted) or without the decisions made here meanwhile:
                // write them in before trusting it again, or it would hand out fresh quota.
                let written = match link.write_back().await {
                    Ok(raised) => {
                        link.spend.write_back(&link.store, link.clock.unix_millis()).await.map(|s| (raised, s))
                    }
                    Err(e) => Err(e),
                };
                match written {
                    Ok((raised, spend_counters)) => {
                        link.healthy.store(true, Ordering::SeqCst);
                        link.probing.store(false, Ordering::SeqCst);
                        tracing::warn!(
                            mode = "redis",
                            keys_raised = raised,
                            spend_counters,
                            "limiter: redis reachable again, switching back"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "limiter: redis answers but the local record could not be written back yet")
                    }
                }
            }
        });
    }

    /// Notes which tenant each rule belongs to (the local record holds rule ids only).
    fn note_rules(&self, tenant: &Arc<str>, checks: &[Check]) {
        let known = self.tenants.read().unwrap_or_else(|p| p.into_inner());
        if checks.iter().all(|c| known.contains_key(&c.rule_id)) {
            return;
        }
        drop(known);
        let mut tenants = self.tenants.write().unwrap_or_else(|p| p.into_inner());
        for check in checks {
            tenants.entry(check.rule_id).or_insert_with(|| tenant.clone());
        }
    }

    /// Writes every live key of the local record into Redis, each key keeping the later of the two TATs
    /// (and that TAT's expiry). Returns how many keys Redis lacked or held earlier TATs for.
    async fn write_back(&self) -> Result<usize, RedisError> {
        let tenants = self.tenants.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut raised = 0;
        for shard in 0..memory::SHARDS {
            let now = self.clock.unix_millis();
            let mut by_tenant: HashMap<&Arc<str>, Vec<(u64, u64, u64)>> = HashMap::new();
            for entry in self.local.live_entries(shard, now) {
                if let Some(tenant) = tenants.get(&entry.0) {
                    by_tenant.entry(tenant).or_default().push(entry);
                }
            }
            for (tenant, entries) in by_tenant {
                for batch in entries.chunks(WRITE_BACK_BATCH) {
                    raised += self.store.merge(tenant, batch, now).await?;
                }
            }
            tokio::task::yield_now().await;
        }
        Ok(raised)
    }
}

/// The rules of `tenant` that apply to `subject`, with their keys, and the store checks they make.
fn applicable_checks<'t>(tenant: &'t Tenant, subject: &Subject<'_>) -> (Vec<(&'t LimitRule, u64)>, Vec<Check>) {
    let applicable: Vec<(&LimitRule, u64)> = tenant
        .limits
        .iter()
        .filter(|rule| rule.applies_to_any(subject.usage, subject.also))
        .filter_map(|rule| key_of(rule, subject).map(|key| (rule, key)))
        .collect();
    let checks = applicable
        .iter()
        .map(|(rule, key)| Check {
            rule_id: rule.id,
            key: *key,
            gcra: Gcra::new(rule.limit.get(), rule.per),
            shadow: rule.shadow,
        })
        .collect();
    (applicable, checks)
}

/// The limiter: rules from the tenant, state in a store that outlives config reloads.
pub struct Limiter {
    /// The memory backend, or the local fallback of the redis backend.
    memory: Arc<MemoryStore>,
    redis: Option<Arc<RedisLink>>,
    clock: SharedClock,
    /// Spend caps' counters (this process's, or its mirror of Redis's).
    spend: Arc<SpendLedger>,
}

impl Limiter {
    /// The in-process limiter (`kind: memory`).
    pub fn new(store: Arc<MemoryStore>, clock: SharedClock) -> Self {
        Limiter { memory: store, redis: None, clock, spend: Arc::default() }
    }

    /// The limiter `limits_backend` asks for. Connecting to Redis is lazy: a gateway starts even while
    /// Redis is down, in its `on_error` mode.
    pub fn from_backend(backend: &LimitsBackend, clock: SharedClock) -> Result<Self, RedisError> {
        let memory = Arc::new(MemoryStore::default());
        match backend {
            LimitsBackend::Memory => Ok(Limiter::new(memory, clock)),
            LimitsBackend::Redis { connect, on_error, timeout, key } => {
                let store = RedisStore::connect(connect, *timeout, key.expose().as_bytes())?;
                let spend = Arc::new(SpendLedger::default());
                let link = RedisLink {
                    store,
                    on_error: *on_error,
                    healthy: AtomicBool::new(true),
                    probing: AtomicBool::new(false),
                    local: memory.clone(),
                    clock: clock.clone(),
                    tenants: RwLock::default(),
                    spend: spend.clone(),
                };
                Ok(Limiter { memory, redis: Some(Arc::new(link)), clock, spend })
            }
        }
    }

    /// The memory backend: every decision is made in this process, without waiting.
    pub(crate) fn is_local(&self) -> bool {
        self.redis.is_none()
    }

    pub fn mode(&self) -> LimiterMode {
        match &self.redis {
            None => LimiterMode::Memory,
            Some(link) if link.healthy.load(Ordering::SeqCst) => LimiterMode::Redis,
            Some(link) => link.degraded_mode(),
        }
    }

    /// For `/readyz`: pings Redis when it is believed up (a failure switches the mode), and reports the mode.
    pub(crate) async fn check_ready(&self) -> LimiterMode {
        if let Some(link) = &self.redis {
            if link.healthy.load(Ordering::SeqCst) {
                if let Err(e) = link.store.ping().await {
                    link.failed(&e);
                }
            }
        }
        self.mode()
    }

    /// Judges `subject` against every applicable rule of `tenant`; records it only when `commit` and allowed.
    /// Fails only with `limiter_unavailable` (redis backend down, `on_error: deny`).
    pub async fn decide(&self, tenant: &Tenant, subject: &Subject<'_>, commit: bool) -> Result<Decision, GatewayError> {
        let (applicable, checks) = applicable_checks(tenant, subject);
        if applicable.is_empty() {
            return Ok(Decision::from_verdicts(&applicable, Vec::new()));
        }
        if let Some(link) = &self.redis {
            if commit {
                link.note_rules(&tenant.name, &checks);
            }
            if link.healthy.load(Ordering::SeqCst) {
                let now = self.clock.unix_millis();
                let floors = self.memory.peek(&checks);
                match link.store.decide_with_floors(&tenant.name, &checks, &floors, now, commit).await {
                    Ok(stored) => {
                        let verdicts =
                            checks.iter().zip(stored.tats).map(|(check, tat)| check.gcra.check(tat, now)).collect();
                        let mut decision = Decision::from_verdicts(&applicable, verdicts);
                        if let (true, Some(seq)) = (decision.allowed, stored.seq) {
                            let taken = decision.taken_from(&tenant.name, true, now, seq, &checks);
                            self.memory.absorb(&taken.rules, now);
                            decision.taken = Some(taken);
                        }
                        return Ok(decision);
                    }
                    Err(e) => link.failed(&e),
                }
            }
            match link.on_error {
                OnError::Local => {}
                OnError::Allow => {
                    tracing::warn!(tenant = %tenant.name, "limiter: redis unavailable, sending without limits (on_error: allow)");
                    return Ok(Decision::from_verdicts(&[], Vec::new()));
                }
                OnError::Deny => return Err(GatewayError::LimiterUnavailable),
            }
        }
        Ok(self.decide_in_process(tenant, &applicable, &checks, commit))
    }

    /// [`Limiter::decide`] for the memory backend, which never waits: None with the redis backend.
    pub(crate) fn decide_now(&self, tenant: &Tenant, subject: &Subject<'_>, commit: bool) -> Option<Decision> {
        if self.redis.is_some() {
            return None;
        }
        let (applicable, checks) = applicable_checks(tenant, subject);
        Some(self.decide_in_process(tenant, &applicable, &checks, commit))
    }

    /// A decision of the in-process store (the memory backend, or the redis backend's local fallback).
    fn decide_in_process(
        &self,
        tenant: &Tenant,
        applicable: &[(&LimitRule, u64)],
        checks: &[Check],
        commit: bool,
    ) -> Decision {
        if applicable.is_empty() {
            return Decision::from_verdicts(applicable, Vec::new());
        }
        let now = self.local_now();
        let (verdicts, seq) = self.memory.decide_taking(checks, now, commit);
        let mut decision = Decision::from_verdicts(applicable, verdicts);
        if let Some(seq) = seq {
            decision.taken = Some(decision.taken_from(&tenant.name, false, now, seq, checks));
        }
        decision
    }

    /// Gives back what `decision` took, once, when its send certainly went nowhere: in the store that
    /// recorded it (one atomic script call in Redis, followed by this replica's own record). A give-back that
    /// cannot reach Redis leaves the quota taken there (the failure switches the limiter to `on_error`); one
    /// later than `GIVE_BACK_WINDOW_MS` after the decision gives nothing.
    pub async fn give_back(&self, decision: &mut Decision) {
        let Some(taken) = decision.taken.take() else { return };
        let now = self.local_now();
        if now.saturating_sub(taken.at) > GIVE_BACK_WINDOW_MS {
            return;
        }
        match (taken.shared, &self.redis) {
            (true, Some(link)) => {
                match link.store.give_back(&taken.tenant, &taken.rules, taken.seq, now).await {
                    // This replica's own record follows: it never stands for more than Redis now holds.
                    Ok(after) => {
                        let own: Vec<(Check, Option<u64>)> =
                            taken.rules.iter().zip(after).map(|(&(check, _), tat)| (check, tat)).collect();
                        self.memory.lower_to(&own);
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %taken.tenant, error = %e, "limiter: could not give quota back in redis");
                        link.failed(&e);
                    }
                }
            }
            _ => self.memory.give_back(&taken.rules, taken.seq, now),
        }
    }

    /// The in-process store's time: monotonic for the memory backend; for the redis backend, the unix
    /// milliseconds Redis is judged in, so the local record and Redis compare directly.
    fn local_now(&self) -> u64 {
        match self.redis {
            Some(_) => self.clock.unix_millis(),
            None => self.clock.monotonic().as_millis() as u64,
        }
    }

    /// Redis, for the other state replicas share (de-duplication, spend caps): Some when the redis backend is
    /// configured and believed up. Callers report failures with [`Limiter::shared_failed`] and fall back to
    /// their in-process state.
    pub fn shared(&self) -> Option<&RedisStore> {
        self.redis.as_ref().filter(|link| link.healthy.load(Ordering::SeqCst)).map(|link| &link.store)
    }

    pub(crate) fn shared_failed(&self, error: &RedisError) {
        if let Some(link) = &self.redis {
            link.failed(error);
        }
    }

    /// The spend caps' counters: this process's, or with the redis backend its mirror of Redis's, written
    /// back with the limiter's record when Redis returns.
    pub fn spend(&self) -> &Arc<SpendLedger> {
        &self.spend
    }

    /// The in-process store (the memory backend, or the redis backend's local fallback).
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.memory
    }

    /// Drops in-process state of rules that are no longer configured (after a reload).
    pub(crate) fn retain_rules<'a>(&self, tenants: impl IntoIterator<Item = &'a Tenant>) {
        let live: Vec<u64> = tenants.into_iter().flat_map(|t| t.limits.iter().map(|r| r.id)).collect();
        self.memory.retain_rules(&live);
        if let Some(link) = &self.redis {
            link.tenants.write().unwrap_or_else(|p| p.into_inner()).retain(|id, _| live.contains(id));
        }
    }

    /// Drops expired in-process state (a background task calls this, so memory returns to its baseline even
    /// without traffic), one shard at a time, yielding between shards: on a one-thread runtime a whole sweep
    /// at once stalled every request behind it (a p99 spike every sweep period).
    pub async fn sweep(&self) {
        for shard in 0..memory::SHARDS {
            self.memory.sweep_shard(shard, self.local_now());
            tokio::task::yield_now().await;
        }
    }
}

impl Decision {
    fn from_verdicts(applicable: &[(&LimitRule, u64)], verdicts: Vec<RuleVerdict>) -> Decision {
        let rules: Vec<RuleReport> = applicable
            .iter()
            .zip(verdicts)
            .map(|((rule, _), verdict)| RuleReport {
                name: rule.name.clone(),
                limit: rule.limit.get(),
                window: rule.per,
                shadow: rule.shadow,
                verdict,
            })
            .collect();
        let denying = rules.iter().filter(|r| !r.shadow && !r.verdict.allowed);
        let worst = denying.max_by_key(|r| r.verdict.retry_after);
        Decision {
            allowed: worst.is_none(),
            retry_after: worst.map_or(Duration::ZERO, |r| r.verdict.retry_after),
            denied_by: worst.map(|r| r.name.clone()),
            rules,
            taken: None,
        }
    }

    /// The rules an allowed decision moved (shadow rules included: they count) and the TATs it stored.
    fn taken_from(&self, tenant: &Arc<str>, shared: bool, at: u64, seq: u64, checks: &[Check]) -> Taken {
        let rules = checks
            .iter()
            .zip(&self.rules)
            .filter(|(_, report)| report.verdict.allowed)
            .map(|(check, report)| (*check, report.verdict.new_tat))
            .collect();
        Taken { tenant: tenant.clone(), shared, at, seq, rules }
    }
}

/// The key a rule counts under for this request; None when the request lacks it (an `ip` rule and no ip).
fn key_of(rule: &LimitRule, subject: &Subject<'_>) -> Option<u64> {
    Some(match rule.key {
        LimitKey::Phone => subject.phone.digits(),
        LimitKey::Tenant => 0,
        LimitKey::PhonePrefix(n) => subject.phone.prefix(n),
        LimitKey::Country => {
            let code = subject.phone.country_code().as_bytes();
            u64::from(u16::from_be_bytes([code[0], code[1]]))
        }
        // IPv4 exactly; IPv6 by its /64, the block one host is usually given, so rotating addresses within
        // it does not escape the rule.
        // IPv4 addresses are tagged with bit 48 so they stay below 2^50 (the memory store's compact keys); a /64
        // is tagged with bit 63, which folds 7c00::/7 (unassigned) onto fc00::/7. IPv4-mapped IPv6 counts as
        // the IPv4 address.
        LimitKey::Ip => match subject.ip? {
            IpAddr::V4(v4) => (1 << 48) | u64::from(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (1 << 48) | u64::from(u32::from(v4)),
                None => (u128::from(v6) >> 64) as u64 | (1 << 63),
            },
        },
    })
}
