//! The config file as written: serde types that reject unknown keys and hold raw strings (with `${VAR}`
//! already expanded by the deserializer, `de.rs`). Nothing here is validated; `compile` turns these into the
//! runtime model. Keep `deny_unknown_fields` on new structs: `de.rs` reports unknown keys from the field list
//! serde passes it, but content serde buffers (untagged enums, `flatten`) only the attribute can guard.
//!
//! Serializing a raw config is `check --print`: every text value prints as `**REDACTED**` unless its field
//! says `serialize_with = "shown::..."`, so a new field is redacted until someone decides it is not secret.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// gateway.yaml, as `smsgate schema` describes it (`$ smsgate schema > gateway.schema.json`).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "smsgate gateway.yaml")]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits_backend: RawLimitsBackend,
    pub tenants: BTreeMap<String, RawTenant>,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    #[serde(serialize_with = "shown::option")]
    pub listen: Option<Scalar>,
    pub max_body_bytes: Option<u64>,
    #[serde(serialize_with = "shown::option")]
    pub shutdown_grace: Option<Scalar>,
    /// Bearer tokens of the admin API (`/admin/v1/...`).
    #[serde(default)]
    pub admin_tokens: Vec<Scalar>,
    /// Cap on the sends remembered in this process for the feedback loop.
    pub max_remembered_sends: Option<u64>,
    /// The whole request head must arrive within this time.
    #[serde(serialize_with = "shown::option")]
    pub header_timeout: Option<Scalar>,
    /// The whole body must arrive within this time.
    #[serde(serialize_with = "shown::option")]
    pub body_timeout: Option<Scalar>,
    /// Bodies one tenant may have in reading at once.
    pub max_body_readers: Option<u64>,
    /// Bodies read before their signature is checked (Supabase hook, Tencent API, Logto webhook): at
    /// once per door, at once per source address (all doors), and their bytes (all doors).
    pub(crate) max_unverified_readers: Option<u64>,
    pub(crate) max_unverified_per_address: Option<u64>,
    pub max_unverified_bytes: Option<u64>,
    /// Whether `/v1/logto/webhook` (no tenant in the path) is served.
    pub shared_logto_webhook: Option<bool>,
    /// Address of the Tencent-compatible API (the official SDKs' `SendSms`); off when absent.
    #[serde(serialize_with = "shown::option")]
    pub tencent_listen: Option<Scalar>,
    /// Threads serving requests.
    pub workers: Option<u64>,
    /// Address of `/metrics` and `/admin/v1/...` (then served only there); off when absent.
    #[serde(serialize_with = "shown::option")]
    pub admin_listen: Option<Scalar>,
    /// TLS of `listen`.
    pub tls: Option<RawListenerTls>,
    /// TLS of `tencent_listen`.
    pub tencent_tls: Option<RawListenerTls>,
    /// TLS of `admin_listen`.
    pub admin_tls: Option<RawListenerTls>,
    /// On SIGTERM, how long `/readyz` answers 503 while requests are still served, before the listeners close.
    #[serde(serialize_with = "shown::option")]
    pub drain_delay: Option<Scalar>,
}

/// `tls: {cert_file, key_file, client_ca_file}` of one listener: PEM files, relative to the config's folder.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    /// The certificate chain, leaf first.
    #[serde(serialize_with = "shown::scalar")]
    pub cert_file: Scalar,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    #[serde(serialize_with = "shown::scalar")]
    pub key_file: Scalar,
    /// With it, clients must present a certificate signed by one of these CAs (mutual TLS).
    #[serde(serialize_with = "shown::option")]
    pub client_ca_file: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimitsBackend {
    #[serde(serialize_with = "shown::option")]
    pub kind: Option<Scalar>,
    /// One Redis node (the primary).
    pub url: Option<Scalar>,
    /// Seed nodes of a Redis Cluster.
    pub cluster: Option<Vec<Scalar>>,
    /// A primary watched by Sentinel.
    pub sentinel: Option<RawSentinel>,
    /// `tls: {ca_file: path}`: the CA that signs the Redis servers' certificates (`rediss://`).
    pub tls: Option<RawRedisTls>,
    #[serde(serialize_with = "shown::option")]
    pub on_error: Option<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub timeout: Option<Scalar>,
    /// The per-deployment key numbers are hashed under in Redis keys.
    pub key: Option<Scalar>,
}

/// `sentinel: {master: mymaster, nodes: [redis://s1:26379, ...], password: ...}`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSentinel {
    #[serde(serialize_with = "shown::scalar")]
    pub master: Scalar,
    pub nodes: Vec<Scalar>,
    /// Credentials of the primary (those in the node URLs are the sentinels').
    #[serde(serialize_with = "shown::option")]
    pub username: Option<Scalar>,
    pub password: Option<Scalar>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedisTls {
    #[serde(serialize_with = "shown::scalar")]
    pub ca_file: Scalar,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    pub tokens: Vec<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub default_country: Option<Scalar>,
    /// Logto's Tencent SMS connector config, plus smsgate's keys.
    pub tencent: Option<RawTencent>,
    /// Logto's Aliyun SMS connector config, plus smsgate's keys.
    pub aliyun: Option<RawAliyun>,
    /// Logto's Twilio SMS connector config, plus smsgate's keys.
    pub twilio: Option<RawTwilio>,
    /// Which providers send which numbers, in order (failover); optional with one provider.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub limits: Vec<RawLimit>,
    /// E.164 number -> the fixed code the auth server accepts for it (staging, app-store review logins).
    #[serde(default)]
    pub test_numbers: BTreeMap<String, Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub script: Option<Scalar>,
    pub script_limits: Option<RawScriptLimits>,
    #[serde(serialize_with = "shown::option")]
    pub on_script_error: Option<Scalar>,
    /// `{allow: [CN, HK]}` or `{deny: [KP]}`.
    pub countries: Option<RawCountries>,
    /// E.164 prefixes refused outright, such as premium-rate ranges.
    #[serde(default)]
    #[serde(serialize_with = "shown::list")]
    pub blocked_prefixes: Vec<Scalar>,
    /// Number types sent to (`mobile`, `fixed_line_or_mobile`, ...); others are refused.
    #[serde(serialize_with = "shown::option_list")]
    pub number_types: Option<Vec<Scalar>>,
    /// Same (number, usage, code) within this window: answered from the first send. `0s` turns it off.
    #[serde(serialize_with = "shown::option")]
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
    #[serde(serialize_with = "shown::list")]
    pub sdk_passthrough: Vec<Scalar>,
    /// Allows `sdk_passthrough` to list actions that are not reads of the tenant's own application (writes
    /// such as AddSmsTemplate, account-wide reads such as DescribeSmsTemplateList, actions smsgate does not
    /// know).
    pub sdk_passthrough_unscoped: Option<bool>,
}

/// `conversion: { window: 10m, remember_for: 1h, logto_webhook_secret: ... }`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConversion {
    #[serde(serialize_with = "shown::option")]
    pub window: Option<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub remember_for: Option<Scalar>,
    pub logto_webhook_secret: Option<Scalar>,
}

/// One `protection:` rule.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProtection {
    #[serde(serialize_with = "shown::scalar")]
    pub name: Scalar,
    pub key: RawLimitKey,
    #[serde(serialize_with = "shown::scalar")]
    pub window: Scalar,
    pub min_sends: u32,
    pub min_conversion: f64,
    /// Unverified sends above the key's own baseline that trip it (unset: not judged).
    pub max_excess: Option<u32>,
    #[serde(serialize_with = "shown::scalar")]
    pub block_for: Scalar,
    /// Longest block a repeat offender gets (each trip within a day of the last blocks 4x longer).
    #[serde(serialize_with = "shown::option")]
    pub(crate) max_block_for: Option<Scalar>,
    #[serde(default)]
    pub shadow: bool,
}

/// `webhook: { url: https://..., secret: whsec_... }`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub url: Scalar,
    pub secret: Scalar,
    /// Allows a link-local or cloud-metadata receiver (169.254.0.0/16, fe80::/10, metadata hosts).
    pub allow_link_local: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSupabase {
    pub secret: Scalar,
    #[serde(serialize_with = "shown::option")]
    pub usage: Option<Scalar>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSdkClient {
    #[serde(rename = "secretId")]
    #[serde(serialize_with = "shown::scalar")]
    pub secret_id: Scalar,
    #[serde(rename = "secretKey")]
    pub secret_key: Scalar,
}

/// `{allow: [..]}` or `{deny: [..]}`; exactly one (checked by `compile`).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCountries {
    #[serde(serialize_with = "shown::option_list")]
    pub allow: Option<Vec<Scalar>>,
    #[serde(serialize_with = "shown::option_list")]
    pub deny: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCaps {
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
    pub(crate) daily_fee: Option<u64>,
    pub(crate) monthly_fee: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpendCaps {
    /// UTC offset where days and months start, `+08:00` (China time, as Tencent bills) by default.
    #[serde(serialize_with = "shown::option")]
    pub utc_offset: Option<Scalar>,
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
    pub(crate) daily_fee: Option<u64>,
    pub(crate) monthly_fee: Option<u64>,
    #[serde(default)]
    pub countries: std::collections::BTreeMap<String, RawCaps>,
}

/// `script_limits: { instructions: 200000, memory: 1MiB, time: 10ms }`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScriptLimits {
    pub instructions: Option<u64>,
    #[serde(serialize_with = "shown::option")]
    pub memory: Option<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub time: Option<Scalar>,
}

/// The Logto Tencent SMS connector's JSON (camelCase, pasted as is) plus smsgate's own snake_case keys.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTencent {
    #[serde(rename = "accessKeyId")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) access_key_id: Scalar,
    #[serde(rename = "accessKeySecret")]
    pub(crate) access_key_secret: Scalar,
    #[serde(rename = "signName")]
    #[serde(serialize_with = "shown::option")]
    pub sign_name: Option<Scalar>,
    #[serde(rename = "sdkAppId")]
    #[serde(serialize_with = "shown::scalar")]
    pub sdk_app_id: Scalar,
    #[serde(serialize_with = "shown::scalar")]
    pub region: Scalar,
    pub templates: Vec<RawTemplate>,
    #[serde(serialize_with = "shown::option")]
    pub endpoint: Option<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub timeout: Option<Scalar>,
    pub dry_run: Option<bool>,
    /// Allows an `http://` endpoint that is not a loopback address for real (not dry-run) sends.
    pub allow_plain_http: Option<bool>,
    /// Tried in order after `endpoint` when it cannot be reached.
    #[serde(default)]
    #[serde(serialize_with = "shown::list")]
    pub fallback_endpoints: Vec<Scalar>,
    /// Attempts per send, the first included.
    pub max_attempts: Option<u32>,
    /// Also retry failures after which the SMS may have gone out (read time-outs, resets, InternalError).
    pub retry_maybe_sent: Option<bool>,
    /// A second key pair, tried when Tencent refuses the first one's credentials.
    pub next_credentials: Option<RawCredentials>,
    /// Templates for numbers outside mainland China; with them, `templates` serve +86 numbers only.
    pub international_templates: Option<Vec<RawTemplate>>,
    #[serde(serialize_with = "shown::option")]
    pub international_sign_name: Option<Scalar>,
    /// Path secret of the delivery-receipt callback, `/v1/tencent/status/<secret>`.
    pub status_secret: Option<Scalar>,
    /// Report converted sends to Tencent's `ReportConversion`.
    pub report_conversion: Option<bool>,
    /// `http://[user:password@]host:port` of an HTTP proxy for every endpoint, or `direct`; without it, the
    /// proxy environment variables decide.
    pub proxy: Option<Scalar>,
    /// A PEM file of certificates trusted besides the built-in roots.
    #[serde(serialize_with = "shown::option")]
    pub ca_file: Option<Scalar>,
}

// The keys every provider section shares (endpoint to ca_file, status_secret) are written out in each: serde
// cannot `flatten` a struct into one that denies unknown keys. `RawUpstream` reads them the same way.

/// `aliyun:`: Logto's Aliyun SMS connector JSON as is, plus smsgate's keys.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAliyun {
    #[serde(rename = "accessKeyId")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) access_key_id: Scalar,
    #[serde(rename = "accessKeySecret")]
    pub(crate) access_key_secret: Scalar,
    #[serde(rename = "signName")]
    #[serde(serialize_with = "shown::scalar")]
    pub sign_name: Scalar,
    pub templates: Vec<RawAliyunTemplate>,
    /// Logto's key, accepted and unused: smsgate always knows a number's country.
    #[serde(rename = "strictPhoneRegionNumberCheck")]
    pub strict_phone_region_number_check: Option<bool>,
    #[serde(serialize_with = "shown::option")]
    pub endpoint: Option<Scalar>,
    #[serde(default)]
    #[serde(serialize_with = "shown::list")]
    pub fallback_endpoints: Vec<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub timeout: Option<Scalar>,
    pub dry_run: Option<bool>,
    pub allow_plain_http: Option<bool>,
    pub max_attempts: Option<u32>,
    pub retry_maybe_sent: Option<bool>,
    pub proxy: Option<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub ca_file: Option<Scalar>,
    /// Path secret of the delivery-report push, `/v1/aliyun/status/<secret>`.
    pub status_secret: Option<Scalar>,
}

/// One Aliyun template: Logto's `{type, usageType, templateCode}`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAliyunTemplate {
    /// Logto's template type, accepted and unused.
    #[serde(rename = "type")]
    pub kind: Option<u64>,
    #[serde(rename = "usageType")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) usage_type: Scalar,
    #[serde(rename = "templateCode")]
    pub(crate) template_code: RawTemplateCode,
}

/// An Aliyun TemplateCode for every number, or Logto's `{china, overseas}` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawTemplateCode {
    One(Scalar),
    Split { china: Scalar, overseas: Scalar },
}

impl Serialize for RawTemplateCode {
    // Template codes are not secret.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            RawTemplateCode::One(code) => serializer.serialize_str(&code.0),
            RawTemplateCode::Split { china, overseas } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("china", &china.0)?;
                map.serialize_entry("overseas", &overseas.0)?;
                map.end()
            }
        }
    }
}

impl JsonSchema for RawTemplateCode {
    fn schema_name() -> Cow<'static, str> {
        "TemplateCode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                { "type": ["string", "number"] },
                {
                    "type": "object",
                    "properties": { "china": { "type": ["string", "number"] }, "overseas": { "type": ["string", "number"] } },
                    "required": ["china", "overseas"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

// By hand: an untagged enum would buffer the value and lose the unknown-key and position reporting of `de.rs`.
impl<'de> Deserialize<'de> for RawTemplateCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;
        impl<'de> Visitor<'de> for CodeVisitor {
            type Value = RawTemplateCode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a template code, or {china: code, overseas: code}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTemplateCode, E> {
                Ok(RawTemplateCode::One(Scalar(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RawTemplateCode, E> {
                Ok(RawTemplateCode::One(Scalar(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawTemplateCode, E> {
                Ok(RawTemplateCode::One(Scalar(v.to_string())))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawTemplateCode, A::Error> {
                let (mut china, mut overseas) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "china" => china = Some(map.next_value::<Scalar>()?),
                        "overseas" => overseas = Some(map.next_value::<Scalar>()?),
                        other => return Err(de::Error::unknown_field(other, &["china", "overseas"])),
                    }
                }
                match (china, overseas) {
                    (Some(china), Some(overseas)) => Ok(RawTemplateCode::Split { china, overseas }),
                    (None, _) => Err(de::Error::missing_field("china")),
                    (_, None) => Err(de::Error::missing_field("overseas")),
                }
            }
        }
        deserializer.deserialize_any(CodeVisitor)
    }
}

/// `twilio:`: Logto's Twilio SMS connector JSON as is, plus smsgate's keys.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTwilio {
    #[serde(rename = "accountSID")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) account_sid: Scalar,
    #[serde(rename = "authToken")]
    pub(crate) auth_token: Scalar,
    #[serde(rename = "fromMessagingServiceSID")]
    #[serde(serialize_with = "shown::scalar")]
    pub messaging_service_sid: Scalar,
    #[serde(rename = "disableRiskCheck")]
    pub disable_risk_check: Option<bool>,
    pub templates: Vec<RawTwilioTemplate>,
    #[serde(serialize_with = "shown::option")]
    pub endpoint: Option<Scalar>,
    #[serde(default)]
    #[serde(serialize_with = "shown::list")]
    pub fallback_endpoints: Vec<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub timeout: Option<Scalar>,
    pub dry_run: Option<bool>,
    pub allow_plain_http: Option<bool>,
    pub max_attempts: Option<u32>,
    pub retry_maybe_sent: Option<bool>,
    pub proxy: Option<Scalar>,
    #[serde(serialize_with = "shown::option")]
    pub ca_file: Option<Scalar>,
    /// Path secret of the status callbacks, `/v1/twilio/status/<secret>`.
    pub status_secret: Option<Scalar>,
    /// The gateway's public base URL, as Twilio reaches it: the status callback's address and signature.
    #[serde(serialize_with = "shown::option")]
    pub public_url: Option<Scalar>,
}

/// One Twilio template: Logto's `{usageType, content}`, `{{code}}` standing for the code.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTwilioTemplate {
    #[serde(rename = "usageType")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) usage_type: Scalar,
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) content: Scalar,
}

/// One `routes:` entry.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    #[serde(default)]
    #[serde(serialize_with = "shown::list")]
    pub countries: Vec<Scalar>,
    #[serde(default)]
    #[serde(serialize_with = "shown::list")]
    pub prefixes: Vec<Scalar>,
    #[serde(serialize_with = "shown::list")]
    pub via: Vec<Scalar>,
}

/// The keys every provider section shares, read from any of them.
pub(crate) struct RawUpstream<'a> {
    pub endpoint: Option<&'a Scalar>,
    pub fallback_endpoints: &'a [Scalar],
    pub timeout: Option<&'a Scalar>,
    pub dry_run: Option<bool>,
    pub allow_plain_http: Option<bool>,
    pub max_attempts: Option<u32>,
    pub retry_maybe_sent: Option<bool>,
    pub proxy: Option<&'a Scalar>,
    pub ca_file: Option<&'a Scalar>,
    pub status_secret: Option<&'a Scalar>,
}

macro_rules! raw_upstream {
    ($($t:ty),*) => {$(
        impl $t {
            pub(crate) fn upstream(&self) -> RawUpstream<'_> {
                RawUpstream {
                    endpoint: self.endpoint.as_ref(),
                    fallback_endpoints: &self.fallback_endpoints,
                    timeout: self.timeout.as_ref(),
                    dry_run: self.dry_run,
                    allow_plain_http: self.allow_plain_http,
                    max_attempts: self.max_attempts,
                    retry_maybe_sent: self.retry_maybe_sent,
                    proxy: self.proxy.as_ref(),
                    ca_file: self.ca_file.as_ref(),
                    status_secret: self.status_secret.as_ref(),
                }
            }
        }
    )*};
}
raw_upstream!(RawTencent, RawAliyun, RawTwilio);

impl RawTenant {
    /// Each provider section the tenant has, with its shared keys.
    pub(crate) fn provider_sections(&self) -> Vec<(crate::sms::ProviderId, RawUpstream<'_>)> {
        use crate::sms::ProviderId;
        let mut sections = Vec::new();
        if let Some(t) = &self.tencent {
            sections.push((ProviderId::Tencent, t.upstream()));
        }
        if let Some(a) = &self.aliyun {
            sections.push((ProviderId::Aliyun, a.upstream()));
        }
        if let Some(t) = &self.twilio {
            sections.push((ProviderId::Twilio, t.upstream()));
        }
        sections
    }
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
    #[serde(rename = "accessKeyId")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) access_key_id: Scalar,
    #[serde(rename = "accessKeySecret")]
    pub(crate) access_key_secret: Scalar,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTemplate {
    #[serde(rename = "usageType")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) usage_type: Scalar,
    #[serde(rename = "templateCode")]
    #[serde(serialize_with = "shown::scalar")]
    pub(crate) template_code: Scalar,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    #[serde(serialize_with = "shown::scalar")]
    pub name: Scalar,
    pub key: RawLimitKey,
    pub limit: u32,
    #[serde(serialize_with = "shown::scalar")]
    pub per: Scalar,
    #[serde(default)]
    #[serde(serialize_with = "shown::list")]
    pub usage: Vec<Scalar>,
    #[serde(default)]
    pub shadow: bool,
}

/// `key: phone` or `key: { phone_prefix: 5 }`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawLimitKey {
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

impl JsonSchema for RawLimitKey {
    fn schema_name() -> Cow<'static, str> {
        "LimitKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What a rule counts by: phone, tenant, ip, country, or { phone_prefix: N } (the first N digits).",
            "oneOf": [
                { "enum": ["phone", "tenant", "ip", "country"] },
                {
                    "type": "object",
                    "properties": { "phone_prefix": { "type": "integer", "minimum": 0, "maximum": 255 } },
                    "required": ["phone_prefix"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl Serialize for RawLimitKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RawLimitKey::Phone => serializer.serialize_str("phone"),
            RawLimitKey::Tenant => serializer.serialize_str("tenant"),
            RawLimitKey::Ip => serializer.serialize_str("ip"),
            RawLimitKey::Country => serializer.serialize_str("country"),
            RawLimitKey::PhonePrefix(n) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("phone_prefix", n)?;
                map.end()
            }
        }
    }
}

/// Text values that are not secret, printed as they are by `check --print`.
mod shown {
    use super::Scalar;
    use serde::Serializer;

    pub(super) fn scalar<S: Serializer>(value: &Scalar, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.0)
    }

    pub(crate) fn option<S: Serializer>(value: &Option<Scalar>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_some(&value.0),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn list<S: Serializer>(values: &[Scalar], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|v| &v.0))
    }

    pub(crate) fn option_list<S: Serializer>(values: &Option<Vec<Scalar>>, serializer: S) -> Result<S::Ok, S::Error> {
        match values {
            Some(values) => serializer.serialize_some(&values.iter().map(|v| &v.0).collect::<Vec<_>>()),
            None => serializer.serialize_none(),
        }
    }
}

/// A YAML scalar read as text: strings as they are, numbers and booleans in their canonical form, so that
/// `sdkAppId: 1400006666` and `sdkAppId: "1400006666"` mean the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub String);

/// A string, or a number or boolean read as its text.
impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// Redacted unless its field is marked `shown` (see the module's note).
impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(super::Secret::REDACTED)
    }
}

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
