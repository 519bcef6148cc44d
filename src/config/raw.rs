//! The config file exactly as written: serde types that reject unknown keys and hold raw strings.
//! Nothing here is validated or interpolated; `compile` turns these into the runtime model.

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitsBackend {
    pub kind: Option<Scalar>,
    pub url: Option<Scalar>,
    pub on_error: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub tokens: Vec<Scalar>,
    pub default_country: Option<Scalar>,
    pub tencent: RawTencent,
    #[serde(default)]
    pub limits: Vec<RawLimit>,
    pub script: Option<Scalar>,
    pub script_limits: Option<RawScriptLimits>,
    pub on_script_error: Option<Scalar>,
}

/// `script_limits: { instructions: 200000, memory: 1MiB }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScriptLimits {
    pub instructions: Option<u64>,
    pub memory: Option<Scalar>,
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
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawLimitKey {
    Phone,
    Tenant,
    Ip,
    Country,
    PhonePrefix(u8),
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
