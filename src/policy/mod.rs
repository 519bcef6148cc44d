//! Policy stage: the tenant's limit rules, judged as one decision. A request is allowed only if every
//! enforcing rule allows it; a denied request consumes no quota of any rule; shadow rules count and report
//! but never deny. Also renders the IETF `RateLimit` / `RateLimit-Policy` headers.

mod gcra;
mod memory;
pub mod spend;

pub use gcra::{Gcra, RuleVerdict};
pub use memory::{Check, MemoryStore};

use crate::clock::SharedClock;
use crate::config::{LimitKey, LimitRule, Tenant};
use crate::phone::Phone;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the rules key on, after normalization and the script.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub phone: &'a Phone,
    pub usage: &'a str,
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
    pub denied_by: Option<String>,
    pub rules: Vec<RuleReport>,
}

impl Decision {
    /// `RateLimit-Policy` and `RateLimit` header values (IETF httpapi ratelimit-headers draft), for the
    /// enforcing rules; None when no enforcing rule applied.
    pub fn headers(&self) -> Option<(String, String)> {
        let enforcing: Vec<&RuleReport> = self.rules.iter().filter(|r| !r.shadow).collect();
        let mut policy = String::new();
        for (i, r) in enforcing.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(policy, "{sep}\"{}\";q={};w={}", r.name, r.limit, r.window.as_secs());
        }
        // The rule closest to denying: fewest remaining, then the longest reset.
        let tightest = enforcing.iter().min_by(|a, b| {
            (a.verdict.remaining, std::cmp::Reverse(a.verdict.reset))
                .cmp(&(b.verdict.remaining, std::cmp::Reverse(b.verdict.reset)))
        })?;
        let reset = crate::error::retry_after_seconds(tightest.verdict.reset);
        let current = format!("\"{}\";r={};t={}", tightest.name, tightest.verdict.remaining, reset);
        Some((policy, current))
    }
}

/// The limiter: rules from the tenant, state in a store that outlives config reloads.
pub struct Limiter {
    store: Arc<MemoryStore>,
    clock: SharedClock,
}

impl Limiter {
    pub fn new(store: Arc<MemoryStore>, clock: SharedClock) -> Self {
        Limiter { store, clock }
    }

    /// Judges `subject` against every applicable rule of `tenant`; records it only when `commit` and allowed.
    pub fn decide(&self, tenant: &Tenant, subject: &Subject<'_>, commit: bool) -> Decision {
        let applicable: Vec<(&LimitRule, u64)> = tenant
            .limits
            .iter()
            .filter(|rule| rule.applies_to(subject.usage))
            .filter_map(|rule| key_of(rule, subject).map(|key| (rule, key)))
            .collect();
        let checks: Vec<Check> = applicable
            .iter()
            .map(|(rule, key)| Check {
                rule_id: rule.id,
                key: *key,
                gcra: Gcra::new(rule.limit.get(), rule.per),
                shadow: rule.shadow,
            })
            .collect();
        let now = self.clock.monotonic().as_nanos() as u64;
        let verdicts = if checks.is_empty() { Vec::new() } else { self.store.decide(&checks, now, commit) };

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
        }
    }

    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
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
        LimitKey::Ip => match subject.ip? {
            IpAddr::V4(v4) => (1 << 63) | u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64 & !(1 << 63),
        },
    })
}
