//! One hook call as the sandbox and the gateway both see it: the request going in ([`HookInput`]), what the
//! hook returned before it is checked ([`RawVerdict`]), the request's budget of log lines ([`LogBudget`]) and
//! the redaction of what the hook logs. Below both `mod.rs` and `sandbox.rs`, which import it.

use crate::phone::{mask_numbers, Phone};
use std::sync::Arc;

/// One request as the hook sees it.
#[derive(Clone)]
pub struct HookInput<'a> {
    pub tenant: &'a str,
    /// None when the number as written did not parse; the hook may still supply one.
    pub phone: Option<&'a Phone>,
    pub raw_phone: &'a str,
    pub usage: &'a str,
    pub code: Option<&'a str>,
    pub params: &'a [String],
    /// The providers the send would go through, for the number as the caller wrote it (None: it did not
    /// parse): `req.providers`.
    pub providers: Option<crate::sms::Via>,
    pub ip: Option<String>,
    pub locale: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// The request's log budget, shared by every call the request makes (a batch calls the hook once per
    /// number); None: the call's own.
    pub log_budget: Option<&'a LogBudget>,
}

/// Log lines the hook may still write for one request, all its calls together: a 200-number batch writes
/// at most [`LogBudget::LINES`] lines, as one call does. Cloned, it is the same budget.
#[derive(Debug, Clone, Default)]
pub struct LogBudget(Arc<std::sync::atomic::AtomicU32>);

impl LogBudget {
    /// Lines per request, and per call.
    pub(crate) const LINES: u32 = 20;

    /// Takes one line; false when the request has written its lines.
    pub(crate) fn take(&self) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < LogBudget::LINES
    }
}

/// What the hook returned, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawVerdict {
    Reject(String),
    /// Each field is Some when the hook set or changed it.
    Proceed {
        phone: Option<String>,
        usage: Option<String>,
        params: Option<Vec<String>>,
        template_id: Option<String>,
        sign_name: Option<String>,
        region: Option<String>,
        provider: Option<String>,
    },
}

/// Text fit for a log: digit runs that could be phone numbers masked, and the verification code removed.
pub(crate) fn redact(text: &str, code: Option<&str>) -> String {
    let text = match code {
        Some(code) if !code.is_empty() => text.replace(code, "***"),
        _ => text.to_owned(),
    };
    mask_numbers(&text).into_owned()
}
