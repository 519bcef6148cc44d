//! The config file as written: serde types that reject unknown keys and hold raw strings (with `${VAR}`
//! already expanded by the deserializer, `de.rs`). Nothing here is validated; `compile` turns these into the
//! runtime model. Keep `deny_unknown_fields` on new structs: `de.rs` reports unknown keys from the field list
//! serde passes it, but content serde buffers (untagged enums, `flatten`) only the attribute can guard.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits_backend: RawLimitsBackend,
    pub tenants: BTreeMap<String, RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Scalar>,
    pub max_body_bytes: Option<u64>,
    pub shutdown_grace: Option<Scalar>,
    /// Bearer tokens of the admin API (`/admin/v1/...`).
    #[serde(default)]
    pub admin_tokens: Vec<Scalar>,
    /// Cap on the sends remembered in this process for the feedback loop.
    pub max_remembered_sends: Option<u64>,
    /// The whole request head must arrive within this time.
    pub header_timeout: Option<Scalar>,
    /// The whole body must arrive within this time.
    pub body_timeout: Option<Scalar>,
    /// Bodies one tenant may have in reading at once.
    pub max_body_readers: Option<u64>,
    /// Bodies read before their signature is checked (Supabase hook, Tencent API, Logto webhook): at
    /// once per door, at once per source address (all doors), and their bytes (all doors).
    pub max_unverified_readers: Option<u64>,
    pub max_unverified_per_address: Option<u64>,
    pub max_unverified_bytes: Option<u64>,
    /// Whether `/v1/logto/webhook` (no tenant in the path) is served.
    pub shared_logto_webhook: Option<bool>,
    /// Address of the Tencent-compatible API (the official SDKs' `SendSms`); off when absent.
    pub tencent_listen: Option<Scalar>,
    /// Threads serving requests.
    pub workers: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitsBackend {
    pub kind: Option<Scalar>,
    /// One Redis node (the primary).
    pub url: Option<Scalar>,
    /// Seed nodes of a Redis Cluster.
    pub cluster: Option<Vec<Scalar>>,
    /// A primary watched by Sentinel.
    pub sentinel: Option<RawSentinel>,
    /// `tls: {ca_file: path}`: the CA that signs the Redis servers' certificates (`rediss://`).
    pub tls: Option<RawRedisTls>,
    pub on_error: Option<Scalar>,
    pub timeout: Option<Scalar>,
}

/// `sentinel: {master: mymaster, nodes: [redis://s1:26379, ...], password: ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master: Scalar,
    pub nodes: Vec<Scalar>,
    /// Credentials of the primary (those in the node URLs are the sentinels').
    pub username: Option<Scalar>,
    pub password: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    pub ca_file: Scalar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub tokens: Vec<Scalar>,
    pub default_country: Option<Scalar>,
    pub tencent: RawTencent,
    #[serde(default)]
    pub limits: Vec<RawLimit>,
    /// E.164 number -> the fixed code the auth server accepts for it (staging, app-store review logins).
    #[serde(default)]
    pub test_numbers: BTreeMap<String, Scalar>,
    pub script: Option<Scalar>,
    pub script_limits: Option<RawScriptLimits>,
    pub on_script_error: Option<Scalar>,
    /// `{allow: [CN, HK]}` or `{deny: [KP]}`.
    pub countries: Option<RawCountries>,
    /// E.164 prefixes refused outright, such as premium-rate ranges.
    #[serde(default)]
    pub blocked_prefixes: Vec<Scalar>,
    /// Number types sent to (`mobile`, `fixed_line_or_mobile`, ...); others are refused.
    pub number_types: Option<Vec<Scalar>>,
    /// Same (number, usage, code) within this window: answered from the first send. `0s` turns it off.
    pub dedupe_window: Option<Scalar>,
    pub spend_caps: Option<RawSpendCaps>,
    /// The feedback loop: when a verification counts as a conversion of a send.
    pub conversion: Option<RawConversion>,
    /// Adaptive SMS-pumping defense rules.
    #[serde(default)]
    pub protection: Vec<RawProtection>,
    /// Where delivery receipts and conversions are relayed (Standard Webhooks).
    pub webhook: Option<RawWebhook>,
    /// The Supabase Auth Send SMS hook: `{secret: "v1,whsec_…", usage: Generic}`.
    pub supabase: Option<RawSupabase>,
    /// Credentials the tenant issues to callers of the Tencent-compatible API: `[{secretId, secretKey}]`.
    #[serde(default)]
    pub sdk_clients: Vec<RawSdkClient>,
    /// Tencent SMS actions other than SendSms that SDK callers may use, forwarded re-signed.
    #[serde(default)]
    pub sdk_passthrough: Vec<Scalar>,
}

/// `conversion: { window: 10m, remember_for: 1h, logto_webhook_secret: ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConversion {
    pub window: Option<Scalar>,
    pub remember_for: Option<Scalar>,
    pub logto_webhook_secret: Option<Scalar>,
}

/// One `protection:` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtection {
    pub name: Scalar,
    pub key: RawLimitKey,
    pub window: Scalar,
    pub min_sends: u32,
    pub min_conversion: f64,
    pub block_for: Scalar,
    #[serde(default)]
    pub shadow: bool,
}

/// `webhook: { url: https://..., secret: whsec_... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Scalar,
    pub secret: Scalar,
    /// Allows a link-local or cloud-metadata receiver (169.254.0.0/16, fe80::/10, metadata hosts).
    pub allow_link_local: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupabase {
    pub secret: Scalar,
    pub usage: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSdkClient {
    #[serde(rename = "secretId")]
    pub secret_id: Scalar,
    #[serde(rename = "secretKey")]
    pub secret_key: Scalar,
}

/// `{allow: [..]}` or `{deny: [..]}`; exactly one (checked by `compile`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCountries {
    pub allow: Option<Vec<Scalar>>,
    pub deny: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaps {
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
    pub daily_fee: Option<u64>,
    pub monthly_fee: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpendCaps {
    /// UTC offset where days and months start, `+08:00` (China time, as Tencent bills) by default.
    pub utc_offset: Option<Scalar>,
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
    pub daily_fee: Option<u64>,
    pub monthly_fee: Option<u64>,
    #[serde(default)]
    pub countries: std::collections::BTreeMap<String, RawCaps>,
}

/// `script_limits: { instructions: 200000, memory: 1MiB, time: 10ms }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScriptLimits {
    pub instructions: Option<u64>,
    pub memory: Option<Scalar>,
    pub time: Option<Scalar>,
}

/// The Logto Tencent SMS connector's JSON (camelCase, pasted as is) plus smsgate's own snake_case keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTencent {
    #[serde(rename = "accessKeyId")]
    pub access_key_id: Scalar,
    #[serde(rename = "accessKeySecret")]
    pub access_key_secret: Scalar,
    #[serde(rename = "signName")]
    pub sign_name: Option<Scalar>,
    #[serde(rename = "sdkAppId")]
    pub sdk_app_id: Scalar,
    pub region: Scalar,
    pub templates: Vec<RawTemplate>,
    pub endpoint: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub dry_run: Option<bool>,
    /// Allows an `http://` endpoint that is not a loopback address for real (not dry-run) sends.
    pub allow_plain_http: Option<bool>,
    /// Tried in order after `endpoint` when it cannot be reached.
    #[serde(default)]
    pub fallback_endpoints: Vec<Scalar>,
    /// Attempts per send, the first included.
    pub max_attempts: Option<u32>,
    /// Also retry failures after which the SMS may have gone out (read time-outs, resets, InternalError).
    pub retry_maybe_sent: Option<bool>,
    /// A second key pair, tried when Tencent refuses the first one's credentials.
    pub next_credentials: Option<RawCredentials>,
    /// Templates for numbers outside mainland China; with them, `templates` serve +86 numbers only.
    pub international_templates: Option<Vec<RawTemplate>>,
    pub international_sign_name: Option<Scalar>,
    /// Path secret of the delivery-receipt callback, `/v1/tencent/status/<secret>`.
    pub status_secret: Option<Scalar>,
    /// Report converted sends to Tencent's `ReportConversion`.
    pub report_conversion: Option<bool>,
    /// `http://[user:password@]host:port` of an HTTP proxy for every endpoint, or `direct`; without it, the
    /// proxy environment variables decide.
    pub proxy: Option<Scalar>,
    /// A PEM file of certificates trusted besides the built-in roots.
    pub ca_file: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    #[serde(rename = "accessKeyId")]
    pub access_key_id: Scalar,
    #[serde(rename = "accessKeySecret")]
    pub access_key_secret: Scalar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    #[serde(rename = "usageType")]
    pub usage_type: Scalar,
    #[serde(rename = "templateCode")]
    pub template_code: Scalar,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub name: Scalar,
    pub key: RawLimitKey,
    pub limit: u32,
    pub per: Scalar,
    #[serde(default)]
    pub usage: Vec<Scalar>,
    #[serde(default)]
    pub shadow: bool,
}

/// `key: phone` or `key: { phone_prefix: 5 }`.
#[derive(Debug, Clone, Copy)]
pub enum RawLimitKey {
    Phone,
    Tenant,
    Ip,
    Country,
    PhonePrefix(u8),
}

const LIMIT_KEYS: &[&str] = &["phone", "tenant", "ip", "country", "phone_prefix"];

// By hand: serde_yaml 0.9 read externally tagged enums only from YAML tags (`!phone_prefix 5`), not from
// the `{ phone_prefix: 5 }` map the config documents (regression_phone_prefix_map_form in tests/limits.rs).
impl<'de> Deserialize<'de> for RawLimitKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = RawLimitKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("phone, tenant, ip, country or { phone_prefix: N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawLimitKey, E> {
                match v {
                    "phone" => Ok(RawLimitKey::Phone),
                    "tenant" => Ok(RawLimitKey::Tenant),
                    "ip" => Ok(RawLimitKey::Ip),
                    "country" => Ok(RawLimitKey::Country),
                    _ => Err(E::unknown_variant(v, LIMIT_KEYS)),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawLimitKey, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                if key != "phone_prefix" {
                    return Err(de::Error::unknown_variant(&key, &["phone_prefix"]));
                }
                let digits: u8 = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::invalid_length(2, &self));
                }
                Ok(RawLimitKey::PhonePrefix(digits))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// A YAML scalar read as text: strings as they are, numbers and booleans in their canonical form, so that
/// `sdkAppId: 1400006666` and `sdkAppId: "1400006666"` mean the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}
