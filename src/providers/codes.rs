//! A provider's answer codes -> what they mean for the gateway: one table per provider (its `classify.rs`),
//! read by the same code. The class and the bounded label are decided here, once, where the answer is read;
//! every consumer (answers, refunds, metrics, the feedback loop, retries, failover) reads those.

use crate::error::{GatewayError, UpstreamClass as Class, UpstreamDetail};
use std::time::Duration;

/// One provider's code table.
pub(crate) struct Table {
    /// The provider's name in log reasons (`Tencent answered …`).
    pub(crate) provider: &'static str,
    /// Exact codes, checked before the families.
    pub(crate) exact: &'static [(&'static str, Class)],
    /// Code families by prefix: `(prefix, label, class)`; the label names the family in metrics.
    pub(crate) families: &'static [(&'static str, &'static str, Class)],
    /// Codes that say the number itself is invalid: answered 400 `invalid_phone`.
    pub(crate) invalid_phone: &'static [&'static str],
    /// How long a per-number throttle (`RecipientThrottle`) lasts, for a code at a time.
    pub(crate) retry_after: fn(code: &str, now_unix: i64) -> Duration,
}

impl Table {
    pub(crate) fn classify(&self, code: &str) -> Class {
        if let Some((_, class)) = self.exact.iter().find(|(c, _)| *c == code) {
            return *class;
        }
        self.families.iter().find(|(prefix, _, _)| code.starts_with(prefix)).map_or(Class::Unknown, |(_, _, c)| *c)
    }

    /// A code as a metrics label or a log word: the code itself when the table lists it exactly, its family
    /// when a prefix matches, else `other`. A closed set whatever an upstream answers: an invented code
    /// never becomes a new label value.
    pub(crate) fn label(&self, code: &str) -> &'static str {
        if let Some((exact, _)) = self.exact.iter().find(|(c, _)| *c == code) {
            return exact;
        }
        self.families.iter().find(|(prefix, _, _)| code.starts_with(prefix)).map_or("other", |(_, label, _)| label)
    }

    /// The provider's answer for a send as the gateway's typed detail.
    pub(crate) fn detail(&self, code: String, message: String, request_id: String) -> UpstreamDetail {
        UpstreamDetail { class: self.classify(&code), label: self.label(&code), code, message, request_id }
    }

    /// The gateway error for a refused send (any class but `Sent`). A send path never takes a
    /// `TransientMaybeSent` code here: the provider's judge makes it `Unconfirmed` first.
    pub(crate) fn to_error(&self, detail: UpstreamDetail, now_unix: i64) -> GatewayError {
        match detail.class {
            Class::RecipientThrottle => GatewayError::UpstreamRateLimited {
                retry_after: (self.retry_after)(&detail.code, now_unix),
                upstream: detail,
            },
            Class::TransientNotSent | Class::TransientMaybeSent => GatewayError::UpstreamUnavailable {
                reason: format!("{} answered {}", self.provider, detail.label),
                upstream: Some(detail),
            },
            Class::CallerInput if self.invalid_phone.contains(&detail.code.as_str()) => {
                GatewayError::InvalidPhone { upstream: Some(detail) }
            }
            Class::Clock | Class::OperatorConfig | Class::CallerInput | Class::AccountQuota | Class::Unknown => {
                GatewayError::UpstreamRejected(detail)
            }
            Class::Sent => GatewayError::Internal("an accepted send was classified as an error".into()),
        }
    }
}

const CHINA_UTC_OFFSET: i64 = 8 * 3600;

/// Time left until midnight China time (UTC+8), when the Chinese providers' daily per-number limits reset.
pub(crate) fn until_china_midnight(now_unix: i64) -> Duration {
    let local = now_unix + CHINA_UTC_OFFSET;
    Duration::from_secs((86_400 - local.rem_euclid(86_400)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: Table = Table {
        provider: "Test",
        exact: &[("OK", Class::Sent), ("bad.number", Class::CallerInput), ("slow", Class::RecipientThrottle)],
        families: &[("isp.", "isp.*", Class::TransientMaybeSent)],
        invalid_phone: &["bad.number"],
        retry_after: |_, _| Duration::from_secs(7),
    };

    #[test]
    fn exact_codes_then_families_then_unknown() {
        assert_eq!(TABLE.classify("OK"), Class::Sent);
        assert_eq!(TABLE.classify("isp.RAM"), Class::TransientMaybeSent);
        assert_eq!(TABLE.label("isp.RAM"), "isp.*");
        assert_eq!(TABLE.classify("made.up"), Class::Unknown);
        assert_eq!(TABLE.label("+8613800138000"), "other");
    }

    #[test]
    fn errors_follow_the_class() {
        let e = TABLE.to_error(TABLE.detail("bad.number".into(), String::new(), String::new()), 0);
        assert_eq!(e.code(), "invalid_phone");
        let e = TABLE.to_error(TABLE.detail("slow".into(), String::new(), String::new()), 0);
        assert_eq!((e.code(), e.retry_after()), ("upstream_rate_limited", Some(7)));
        let e = TABLE.to_error(TABLE.detail("made.up".into(), String::new(), String::new()), 0);
        assert_eq!(e.code(), "upstream_rejected");
    }

    #[test]
    fn daily_limits_last_until_china_midnight() {
        // 2024-01-01 15:00 UTC = 23:00 in China: one hour to go.
        assert_eq!(until_china_midnight(1704121200), Duration::from_secs(3600));
    }
}
