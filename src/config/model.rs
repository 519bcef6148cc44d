//! The compiled, validated configuration: types that cannot hold a bad value. Built by `compile`, read by
//! every pipeline stage, swapped whole on reload.

use super::Secret;
use phonenumber::country;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://sms.tencentcloudapi.com";
pub const GENERIC_USAGE: &str = "Generic";

#[derive(Debug)]
pub struct Config {
    /// The file this config was read from; scripts resolve relative to its folder.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub tenants: Vec<Arc<Tenant>>,
    pub(crate) tokens: super::tokens::TokenTable,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
}

#[derive(Debug)]
pub struct Tenant {
    pub name: Arc<str>,
    /// Country used to read native-API numbers written without `+` or `00`.
    pub default_country: Option<country::Id>,
    pub tencent: TencentAccount,
    pub templates: Templates,
    pub limits: Vec<LimitRule>,
    /// The tenant's Lua hook, compiled, with its pool of states.
    pub script: Option<crate::script::ScriptHook>,
}

#[derive(Debug)]
pub struct TencentAccount {
    pub secret_id: String,
    pub secret_key: Secret,
    pub sign_name: Option<String>,
    pub sdk_app_id: String,
    pub region: String,
    pub endpoint: Endpoint,
    /// Deadline for the whole send, retries included.
    pub timeout: Duration,
    pub dry_run: bool,
}

/// Where SendSms is posted, with the `Host` value the signature covers (host, and port when not default).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: reqwest::Url,
    pub host: String,
}

/// Usage type -> Tencent TemplateId. Unknown usage types resolve to `Generic` when the tenant has one.
#[derive(Debug, Default)]
pub struct Templates {
    by_usage: HashMap<String, String>,
}

impl Templates {
    pub fn insert(&mut self, usage: String, template_id: String) -> Option<String> {
        self.by_usage.insert(usage, template_id)
    }

    pub fn resolve(&self, usage: &str) -> Option<&str> {
        self.by_usage.get(usage).or_else(|| self.by_usage.get(GENERIC_USAGE)).map(String::as_str)
    }

    /// Whether the tenant names this usage type itself (not through the Generic fallback).
    pub fn has_usage(&self, usage: &str) -> bool {
        self.by_usage.contains_key(usage)
    }

    pub fn contains_id(&self, template_id: &str) -> bool {
        self.by_usage.values().any(|id| id == template_id)
    }

    /// (usage type, TemplateId) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_usage.iter().map(|(u, id)| (u.as_str(), id.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Phone,
    Tenant,
    Ip,
    Country,
    /// The first N digits of the E.164 number (without `+`).
    PhonePrefix(u8),
}

#[derive(Debug, Clone)]
pub struct LimitRule {
    /// Stable across reloads for an unchanged rule (same tenant, name and definition), so limiter state keyed
    /// by it survives a reload.
    pub id: u64,
    pub name: String,
    pub key: LimitKey,
    pub limit: NonZeroU32,
    pub per: Duration,
    /// Usage types the rule applies to; empty means all.
    pub usages: Vec<String>,
    /// Count and report, never deny.
    pub shadow: bool,
}

impl LimitRule {
    pub fn applies_to(&self, usage: &str) -> bool {
        self.usages.is_empty() || self.usages.iter().any(|u| u == usage)
    }
}

impl Config {
    /// The tenant a bearer token belongs to.
    pub fn tenant_for_token(&self, token: &str) -> Option<&Arc<Tenant>> {
        self.tokens.lookup(token).map(|index| &self.tenants[index])
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| &*t.name == name)
    }
}
