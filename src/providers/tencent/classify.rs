//! Tencent's answer codes -> what they mean for the gateway (REFERENCE.md, "Error codes"). The table is the
//! single source for the error-class table in docs/operating.md and for the mapping to gateway errors.

pub use crate::error::UpstreamClass as Class;
use crate::error::{GatewayError, UpstreamDetail};
use crate::providers::codes::{until_china_midnight, Table};
use std::time::Duration;

impl Class {
    /// The class's name and the gateway's answer, as docs/operating.md's table writes them.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Class::Sent => ("sent", "200 sent"),
            Class::TransientNotSent => {
                ("transient, nothing sent", "retried with back-off inside the deadline, then 503 upstream_unavailable")
            }
            Class::TransientMaybeSent => {
                ("transient, maybe sent", "200 maybe_sent, never a failure; retried only with retry_maybe_sent")
            }
            Class::Clock => ("clock", "re-signed once with Tencent's time, then 502 upstream_rejected"),
            Class::OperatorConfig => {
                ("operator config", "502 upstream_rejected (the next key pair is tried once on credential errors)")
            }
            Class::CallerInput => {
                ("caller input", "502 upstream_rejected (400 invalid_phone for IncorrectPhoneNumber)")
            }
            Class::RecipientThrottle => ("per-recipient throttle", "429 upstream_rate_limited with Retry-After"),
            Class::AccountQuota => ("account quota", "502 upstream_rejected"),
            Class::Unknown => ("unknown", "502 upstream_rejected, logged"),
        }
    }
}

/// Exact codes, checked before the families below.
pub const EXACT: &[(&str, Class)] = &[
    ("Ok", Class::Sent),
    ("LimitExceeded.GlobalSmsSendingRateLimit", Class::TransientNotSent),
    ("AuthFailure.SignatureExpire", Class::Clock),
    ("InternalError.RequestTimeException", Class::Clock),
    ("InternalError", Class::TransientMaybeSent),
    ("InternalError.Timeout", Class::TransientMaybeSent),
    ("InternalError.SendAndRecvFail", Class::TransientMaybeSent),
    ("InternalError.OtherError", Class::TransientMaybeSent),
    ("InternalError.UnknownError", Class::TransientMaybeSent),
    ("FailedOperation.SignatureIncorrectOrUnapproved", Class::OperatorConfig),
    ("FailedOperation.TemplateIncorrectOrUnapproved", Class::OperatorConfig),
    ("FailedOperation.TemplateUnapprovedOrNotExist", Class::OperatorConfig),
    ("InvalidParameterValue.SdkAppIdNotExist", Class::OperatorConfig),
    ("LimitExceeded.AppCountryOrRegionInBlacklist", Class::OperatorConfig),
    ("FailedOperation.InsufficientBalanceInSmsPackage", Class::OperatorConfig),
    ("InvalidParameterValue.IncorrectPhoneNumber", Class::CallerInput),
    ("FailedOperation.TemplateParamSetNotMatchApprovedTemplate", Class::CallerInput),
    ("InvalidParameterValue.TemplateParameterFormatError", Class::CallerInput),
    ("InvalidParameterValue.TemplateParameterLengthLimit", Class::CallerInput),
    ("InvalidParameterValue.ContentLengthLimit", Class::CallerInput),
    ("InvalidParameterValue.ProhibitedUseUrlInTemplateParameter", Class::CallerInput),
    ("FailedOperation.ContainSensitiveWord", Class::CallerInput),
    ("FailedOperation.PhoneNumberInBlacklist", Class::CallerInput),
    ("MissingParameter.EmptyPhoneNumberSet", Class::CallerInput),
    ("LimitExceeded.PhoneNumberCountLimit", Class::CallerInput),
    ("LimitExceeded.PhoneNumberThirtySecondLimit", Class::RecipientThrottle),
    ("LimitExceeded.PhoneNumberOneHourLimit", Class::RecipientThrottle),
    ("LimitExceeded.PhoneNumberDailyLimit", Class::RecipientThrottle),
    ("LimitExceeded.PhoneNumberSameContentDailyLimit", Class::RecipientThrottle),
    ("LimitExceeded.DeliveryFrequencyLimit", Class::RecipientThrottle),
    ("LimitExceeded.AppDailyLimit", Class::AccountQuota),
    ("LimitExceeded.AppMainlandChinaDailyLimit", Class::AccountQuota),
    ("LimitExceeded.AppGlobalDailyLimit", Class::AccountQuota),
    ("LimitExceeded.AppCountryOrRegionDailyLimit", Class::AccountQuota),
    ("LimitExceeded.DailyLimit", Class::AccountQuota),
];

/// Code families, by prefix: `(prefix, label, class)`.
pub const FAMILIES: &[(&str, &str, Class)] = &[
    ("RequestLimitExceeded", "RequestLimitExceeded*", Class::TransientNotSent),
    ("InternalError.", "InternalError.*", Class::TransientMaybeSent),
    ("AuthFailure.", "AuthFailure.*", Class::OperatorConfig),
    ("UnauthorizedOperation.", "UnauthorizedOperation.*", Class::OperatorConfig),
    ("UnsupportedOperation.", "UnsupportedOperation.*", Class::CallerInput),
];

/// Tencent's codes, classified.
pub(crate) const TABLE: Table = Table {
    provider: "Tencent",
    exact: EXACT,
    families: FAMILIES,
    invalid_phone: &["InvalidParameterValue.IncorrectPhoneNumber"],
    retry_after: recipient_retry_after,
};

pub fn classify(code: &str) -> Class {
    TABLE.classify(code)
}

/// A Tencent code as a metrics label or a log word (a closed set, [`Table::label`]).
pub(crate) fn label(code: &str) -> &'static str {
    TABLE.label(code)
}

/// Tencent's answer for a send as the gateway's typed detail.
pub fn detail(code: String, message: String, request_id: String) -> UpstreamDetail {
    TABLE.detail(code, message, request_id)
}

/// How long a per-number throttle lasts: its window, or for daily limits until midnight China time.
pub(crate) fn recipient_retry_after(code: &str, now_unix: i64) -> Duration {
    match code {
        "LimitExceeded.PhoneNumberThirtySecondLimit" => Duration::from_secs(30),
        "LimitExceeded.PhoneNumberOneHourLimit" => Duration::from_secs(3600),
        "LimitExceeded.PhoneNumberDailyLimit" | "LimitExceeded.PhoneNumberSameContentDailyLimit" => {
            until_china_midnight(now_unix)
        }
        _ => Duration::from_secs(60),
    }
}

/// The gateway error for a refused send (any class but `Sent`).
pub(crate) fn to_error(detail: UpstreamDetail, now_unix: i64) -> GatewayError {
    TABLE.to_error(detail, now_unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_codes_win_over_prefixes() {
        assert_eq!(classify("AuthFailure.SignatureExpire"), Class::Clock);
        assert_eq!(classify("AuthFailure.SecretIdNotFound"), Class::OperatorConfig);
        assert_eq!(classify("InternalError.RequestTimeException"), Class::Clock);
        assert_eq!(classify("InternalError.Whatever"), Class::TransientMaybeSent);
        assert_eq!(classify("RequestLimitExceeded.UinLimitExceeded"), Class::TransientNotSent);
        assert_eq!(classify("UnsupportedOperation.ChineseMainlandTemplateToGlobalPhone"), Class::CallerInput);
        assert_eq!(classify("Brand.New"), Class::Unknown);
    }

    #[test]
    fn labels_are_a_closed_set() {
        assert_eq!(label("InternalError.SendAndRecvFail"), "InternalError.SendAndRecvFail");
        assert_eq!(label("InternalError.Invented17"), "InternalError.*");
        assert_eq!(label("RequestLimitExceeded.UinLimitExceeded"), "RequestLimitExceeded*");
        assert_eq!(label("Brand.New"), "other");
        assert_eq!(label("+8613800138000"), "other");
    }

    #[test]
    fn every_listed_code_maps_to_its_documented_answer() {
        for (code, class) in EXACT.iter().filter(|(_, c)| *c != Class::Sent) {
            let d = detail(code.to_string(), String::new(), String::new());
            let e = to_error(d, 0);
            let expected = match class {
                Class::RecipientThrottle => "upstream_rate_limited",
                Class::TransientNotSent | Class::TransientMaybeSent => "upstream_unavailable",
                Class::CallerInput if *code == "InvalidParameterValue.IncorrectPhoneNumber" => "invalid_phone",
                _ => "upstream_rejected",
            };
            assert_eq!(e.code(), expected, "{code}");
            assert!(e.upstream().is_some(), "{code} keeps Tencent's detail");
        }
    }

    #[test]
    fn daily_limits_last_until_china_midnight() {
        // 2024-01-01 15:00 UTC = 23:00 in China: one hour to go.
        let d = recipient_retry_after("LimitExceeded.PhoneNumberDailyLimit", 1704121200);
        assert_eq!(d, Duration::from_secs(3600));
        assert_eq!(recipient_retry_after("LimitExceeded.PhoneNumberThirtySecondLimit", 0), Duration::from_secs(30));
    }
}
