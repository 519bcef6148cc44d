//! The vocabulary every layer shares: one send request whatever door it came by, and what became of it.
//! Nothing here knows a provider, a config or a door.

use std::net::IpAddr;

/// How the caller wrote the number; each route has its own reading rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneInput {
    /// Logto: country code and digits, no `+`.
    Logto(String),
    /// Native: `+…`, `00…`, or national digits in the tenant's default country.
    Native(String),
}

/// One "send this code to this number for this usage" request, whatever route it came by.
#[derive(Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub phone: PhoneInput,
    pub usage: String,
    /// `TemplateParamSet`: `[code]`, or the native `params`. Never locale fields.
    pub params: Vec<String>,
    /// The verification code, when the caller sent one (for the hook and de-duplication).
    pub code: Option<String>,
    pub ip: Option<IpAddr>,
    pub locale: Option<String>,
    /// The caller's `Idempotency-Key` header: repeats with the same key get the first answer.
    pub idempotency_key: Option<String>,
}

impl std::fmt::Debug for SendRequest {
    // By hand: the number, code and params must never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRequest")
            .field("usage", &self.usage)
            .field("params", &self.params.len())
            .field("ip", &self.ip)
            .field("locale", &self.locale)
            .finish_non_exhaustive()
    }
}

/// The message a caller of the Tencent-compatible API chose for every number of one SendSms: its TemplateId
/// (each number's `usage` is the usage type the tenant maps it to), sign name, and the fields passed to
/// Tencent as sent.
#[derive(Debug, Clone)]
pub struct CallerMessage {
    pub template_id: String,
    pub sign_name: Option<String>,
    pub(crate) extras: CallExtras,
}

/// `SendSms` fields only a caller of the SDK front door sets, passed to Tencent as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct CallExtras {
    pub(crate) extend_code: Option<String>,
    pub(crate) session_context: Option<String>,
    pub(crate) sender_id: Option<String>,
}

/// The provider's acceptance of one number: its message id (Tencent's `SerialNo`), the fee in units, the
/// request id of its answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    pub serial_no: String,
    pub fee: u32,
    pub request_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Delivery {
    Sent,
    DryRun,
    /// A configured test number: answered as sent without calling Tencent.
    TestNumber,
    /// Handed to Tencent, which may have sent it: its answer could not be read, or Tencent failed inside.
    /// Never reported failed, never retried into a second SMS; kept in limits and caps, and remembered for
    /// the feedback loop as possibly sent.
    MaybeSent,
}

/// A send the pipeline accepted (serialized when de-duplication shares it through Redis).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    pub delivery: Delivery,
    pub template_id: String,
    pub receipt: Option<Receipt>,
}

/// The SMS providers the gateway sends through: a closed set (a metrics label, a route's `via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderId {
    Tencent,
    Aliyun,
    Twilio,
}

impl ProviderId {
    pub const ALL: [ProviderId; 3] = [ProviderId::Tencent, ProviderId::Aliyun, ProviderId::Twilio];

    /// The name `gateway.yaml`, metrics and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Tencent => "tencent",
            ProviderId::Aliyun => "aliyun",
            ProviderId::Twilio => "twilio",
        }
    }

    pub fn from_name(name: &str) -> Option<ProviderId> {
        ProviderId::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
