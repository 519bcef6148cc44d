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
    /// The caller vouches for the end user (its own challenge passed, or the number confirmed in its
    /// records): the send may pass a protection block while the block's exemptions are open.
    pub vouched: bool,
}

impl std::fmt::Debug for SendRequest {
    // By hand: the number, code and params must never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRequest")
            .field("usage", &self.usage)
            .field("params", &self.params.len())
            .field("ip", &self.ip)
            .field("locale", &self.locale)
            .field("vouched", &self.vouched)
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
    /// The template it went out with: Tencent's TemplateId, Aliyun's TemplateCode, or for Twilio the usage
    /// type whose text was sent.
    pub template_id: String,
    pub receipt: Option<Receipt>,
    /// The provider that took it (None for a test number: nothing was handed to any).
    #[serde(default)]
    pub provider: Option<ProviderId>,
}

/// A send that may have gone out: the request reached the provider (or may have) and no answer says it did not.
/// Never reported failed and never retried into a second SMS; its numbers are remembered as possibly sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    /// Why it is not confirmed, for the log only (never shown to a caller).
    pub reason: String,
    /// The provider's own answer when it gave one (Tencent's `InternalError.*`), for the log and metrics.
    pub upstream: Option<crate::error::UpstreamDetail>,
}

/// One delivery report, whatever the provider that pushed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The send's message key ([`message_key`]: Tencent's SerialNo, `aliyun:<BizId>`, `twilio:<MessageSid>`).
    pub sid: String,
    /// The number's E.164 digits, when the report names it.
    pub digits: Option<u64>,
    /// `SUCCESS`, `FAIL` or what the provider wrote.
    pub status: String,
    pub errmsg: String,
    pub description: String,
    pub user_receive_time: String,
}

impl StatusReport {
    /// The status as a metric label.
    pub(crate) fn status_label(&self) -> &'static str {
        match self.status.as_str() {
            "SUCCESS" => "success",
            "FAIL" => "fail",
            _ => "other",
        }
    }
}

/// The SMS providers the gateway sends through: a closed set (a metrics label, a route's `via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
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

    /// Its place in [`ProviderId::ALL`], for tables indexed by provider.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_name(name: &str) -> Option<ProviderId> {
        ProviderId::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// How a provider's message id is remembered (and matched by its delivery receipts): Tencent's SerialNo as it
/// is (as remembered before there were other providers), another provider's as `<provider>:<id>`, so two
/// providers' ids never meet and each remembered send names its provider.
pub fn message_key(provider: ProviderId, id: &str) -> std::borrow::Cow<'_, str> {
    match provider {
        ProviderId::Tencent => std::borrow::Cow::Borrowed(id),
        other => std::borrow::Cow::Owned(format!("{}:{id}", other.as_str())),
    }
}

/// The provider a remembered message key names, and its own id.
pub fn split_message_key(key: &str) -> (ProviderId, &str) {
    for other in [ProviderId::Aliyun, ProviderId::Twilio] {
        if let Some(id) = key.strip_prefix(other.as_str()).and_then(|rest| rest.strip_prefix(':')) {
            return (other, id);
        }
    }
    (ProviderId::Tencent, key)
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The providers a send may go through, in order: its route's, or the one the hook chose first. At most one
/// of each provider; inline, so routing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via {
    list: [ProviderId; 3],
    len: u8,
}

impl Via {
    pub fn one(id: ProviderId) -> Via {
        Via { list: [id; 3], len: 1 }
    }

    pub fn iter(&self) -> impl Iterator<Item = ProviderId> + '_ {
        self.list[..usize::from(self.len)].iter().copied()
    }

    pub fn first(&self) -> ProviderId {
        self.list[0]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The providers as one small number, two bits each in order (`index + 1`; 0 ends the list): how the Lua
    /// hook receives its candidates without an allocation.
    pub fn code(&self) -> u8 {
        self.iter().enumerate().fold(0, |code, (i, id)| code | ((id.index() as u8 + 1) << (2 * i)))
    }

    /// `id` first, then the others in their order.
    pub fn with_first(&self, id: ProviderId) -> Via {
        Via::from_iter(std::iter::once(id).chain(self.iter().filter(|p| *p != id)))
    }
}

impl FromIterator<ProviderId> for Via {
    /// The providers in order, each once (repeats and any beyond three are dropped).
    fn from_iter<I: IntoIterator<Item = ProviderId>>(providers: I) -> Via {
        let mut via = Via { list: [ProviderId::Tencent; 3], len: 0 };
        for id in providers {
            if usize::from(via.len) < via.list.len() && !via.iter().any(|p| p == id) {
                via.list[usize::from(via.len)] = id;
                via.len += 1;
            }
        }
        via
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, id) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(id.as_str())?;
        }
        Ok(())
    }
}
