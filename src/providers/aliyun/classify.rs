//! Aliyun's SendSms answers -> what they mean for the gateway: its code table (read by the shared
//! [`Table`] code) and the judge that turns one HTTP answer into sent, maybe sent, or refused. Codes from
//! Aliyun's "API错误码" (help.aliyun.com/document_detail/101346.html) and its OpenAPI common errors.

use crate::error::{GatewayError, UpstreamClass as Class};
use crate::providers::codes::Table;
use crate::providers::{Dispatched, Unconfirmed};
use crate::sms::Receipt;
use std::time::Duration;

use super::api::Answer;

/// Aliyun's code for an accepted send.
pub(crate) const OK: &str = "OK";

/// Exact codes, checked before the families below. Each class says who can fix the refusal.
pub(crate) const EXACT: &[(&str, Class)] = &[
    (OK, Class::Sent),
    // The per-number frequency limits (by default 1 a minute, 5 an hour, 10 a day for one sign name): one
    // code for all three windows, which only the message tells apart.
    ("isv.BUSINESS_LIMIT_CONTROL", Class::RecipientThrottle),
    // Caps and money of the whole account: the operator's to raise or pay; no number is to blame.
    ("isv.DAY_LIMIT_CONTROL", Class::AccountQuota),
    ("isv.MONTH_LIMIT_CONTROL", Class::AccountQuota),
    ("isv.AMOUNT_NOT_ENOUGH", Class::AccountQuota),
    // "业务停机": the account is stopped for lack of balance (even with a package left).
    ("isv.OUT_OF_SERVICE", Class::AccountQuota),
    // Credentials, account, signature and template: all fixed in the console or the config, never by a caller.
    ("SignatureDoesNotMatch", Class::OperatorConfig),
    ("IncompleteSignature", Class::OperatorConfig),
    ("InvalidAccessKeyId.NotFound", Class::OperatorConfig),
    ("InvalidAccessKeyId.Inactive", Class::OperatorConfig),
    ("isv.SMS_SIGNATURE_ILLEGAL", Class::OperatorConfig),
    ("isv.SMS_SIGN_ILLEGAL", Class::OperatorConfig),
    ("isv.SIGN_STATE_ILLEGAL", Class::OperatorConfig),
    ("isv.SMS_SIGNATURE_SCENE_ILLEGAL", Class::OperatorConfig),
    ("isv.SMS_TEMPLATE_ILLEGAL", Class::OperatorConfig),
    ("isv.EXTEND_CODE_ERROR", Class::OperatorConfig),
    ("isv.ACCOUNT_NOT_EXISTS", Class::OperatorConfig),
    ("isv.ACCOUNT_ABNORMAL", Class::OperatorConfig),
    ("isv.PRODUCT_UN_SUBSCRIPT", Class::OperatorConfig),
    ("isv.PRODUCT_UNSUBSCRIBE", Class::OperatorConfig),
    // The gateway's egress IP is outside mainland China, which may not send domestic messages: deployment.
    ("isv.DENY_IP_RANGE", Class::OperatorConfig),
    // The key's RAM user lacks dysms:SendSms: a grant to fix, though its prefix says "system error".
    ("isp.RAM_PERMISSION_DENY", Class::OperatorConfig),
    ("isv.MOBILE_NUMBER_ILLEGAL", Class::CallerInput),
    // The number or the content the caller chose (Tencent's table classes its equivalents the same).
    ("isv.DOMESTIC_NUMBER_NOT_SUPPORTED", Class::CallerInput),
    ("isv.TEMPLATE_PARAMS_ILLEGAL", Class::CallerInput),
    ("isv.TEMPLATE_MISSING_PARAMETERS", Class::CallerInput),
    ("isv.INVALID_PARAMETERS", Class::CallerInput),
    ("isv.INVALID_JSON_PARAM", Class::CallerInput),
    ("isv.BLACK_KEY_CONTROL_LIMIT", Class::CallerInput),
    ("isv.PARAM_LENGTH_LIMIT", Class::CallerInput),
    ("isv.PARAM_NOT_SUPPORT_URL", Class::CallerInput),
    ("isv.SMS_CONTENT_ILLEGAL", Class::CallerInput),
    ("isv.MOBILE_COUNT_OVER_LIMIT", Class::CallerInput),
    // Refused at the door for the request's date or a nonce seen before: a fresh date and nonce fix it.
    ("InvalidTimeStamp.Expired", Class::Clock),
    ("SignatureNonceUsed", Class::Clock),
    // Aliyun failed inside after taking the request: the SMS may have gone out.
    ("isp.SYSTEM_ERROR", Class::TransientMaybeSent),
    ("isp.GATEWAY_ERROR", Class::TransientMaybeSent),
    ("InternalError", Class::TransientMaybeSent),
    ("ServiceUnavailable", Class::TransientMaybeSent),
];

/// Aliyun's codes, classified.
pub(crate) const TABLE: Table = Table {
    provider: "Aliyun",
    exact: EXACT,
    families: &[
        // API throttles of the whole account (Throttling, Throttling.User, Throttling.Api): refused at the
        // door, nothing sent, safe to retry.
        ("Throttling", "Throttling*", Class::TransientNotSent),
        ("isp.", "isp.*", Class::TransientMaybeSent),
        ("InternalError", "InternalError*", Class::TransientMaybeSent),
        ("InvalidAccessKeyId", "InvalidAccessKeyId*", Class::OperatorConfig),
        // Forbidden.RAM, Forbidden.AccessKeyDisabled…: the key's permissions.
        ("Forbidden", "Forbidden*", Class::OperatorConfig),
    ],
    invalid_phone: &["isv.MOBILE_NUMBER_ILLEGAL"],
    retry_after: recipient_retry_after,
};

/// How long a per-number throttle lasts. `isv.BUSINESS_LIMIT_CONTROL` covers the minute, hour and day
/// windows alike; an hour is the middle one (the table reads codes, not messages).
pub(crate) fn recipient_retry_after(_code: &str, _now_unix: i64) -> Duration {
    Duration::from_secs(3600)
}

/// Aliyun's answer to one SendSms -> what became of the message. Its error object is read whatever the HTTP
/// status (Aliyun answers refusals with 4xx and 5xx and the same JSON). An answer that cannot be read, or an
/// `OK` without its `BizId`, came from past the point where the SMS may have gone out: unconfirmed, never an
/// error.
pub(crate) fn judge(status: http::StatusCode, body: &[u8], now_unix: i64) -> Result<Dispatched, GatewayError> {
    let unconfirmed = |reason: String, upstream: Option<crate::error::UpstreamDetail>| {
        Ok(Dispatched::Unconfirmed(Unconfirmed { reason, upstream }))
    };
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(_) => return unconfirmed(format!("unreadable answer with HTTP status {status}"), None),
    };
    let request_id = answer.request_id.unwrap_or_default();
    if answer.code == OK {
        return match answer.biz_id.filter(|id| !id.is_empty()) {
            Some(serial_no) if status.is_success() => Ok(Dispatched::Sent(Receipt { serial_no, fee: 1, request_id })),
            Some(_) => unconfirmed(format!("OK with HTTP status {status}"), None),
            None => unconfirmed("OK without BizId".into(), None),
        };
    }
    let detail = TABLE.detail(answer.code, answer.message.unwrap_or_default(), request_id);
    if detail.class == Class::TransientMaybeSent {
        return unconfirmed(format!("Aliyun answered {}", detail.label), Some(detail));
    }
    Err(TABLE.to_error(detail, now_unix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn ok_with_biz_id_is_sent() {
        let body = br#"{"Message":"OK","RequestId":"F655A8D5-B967-440B-8683-DAD6FF8DE990","Code":"OK","BizId":"9006197469364984400"}"#;
        assert_eq!(
            judge(StatusCode::OK, body, 0).unwrap(),
            Dispatched::Sent(Receipt {
                serial_no: "9006197469364984400".into(),
                fee: 1,
                request_id: "F655A8D5-B967-440B-8683-DAD6FF8DE990".into()
            })
        );
    }

    #[test]
    fn ok_without_biz_id_or_with_an_error_status_is_unconfirmed() {
        for body in [&br#"{"Code":"OK","RequestId":"r"}"#[..], br#"{"Code":"OK","BizId":"","RequestId":"r"}"#] {
            let r = judge(StatusCode::OK, body, 0).unwrap();
            assert!(matches!(r, Dispatched::Unconfirmed(Unconfirmed { upstream: None, .. })), "{r:?}");
        }
        let r = judge(StatusCode::BAD_GATEWAY, br#"{"Code":"OK","BizId":"b"}"#, 0).unwrap();
        assert!(matches!(r, Dispatched::Unconfirmed(_)));
    }

    #[test]
    fn unreadable_answers_are_unconfirmed_never_errors() {
        let bodies: [&[u8]; 7] = [
            b"",
            b"<html><body>502 Bad Gateway</body></html>",
            br#"{"Code":"OK","BizId":"9006"#,
            br#"{"Message":"no code","RequestId":"r"}"#,
            br#"{"Code":null}"#,
            b"[]",
            &[0xff, 0xfe, 0x00],
        ];
        for status in [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_REQUEST] {
            for body in bodies {
                let r = judge(status, body, 0).unwrap();
                let Dispatched::Unconfirmed(u) = r else { panic!("{status} {body:?}: {r:?}") };
                assert!(u.reason.contains(status.as_str()), "{}", u.reason);
            }
        }
    }

    #[test]
    fn system_errors_are_unconfirmed_with_their_detail() {
        let body = br#"{"Code":"isp.SYSTEM_ERROR","Message":"isp.SYSTEM_ERROR","RequestId":"r9","HostId":"dysmsapi.aliyuncs.com"}"#;
        let Dispatched::Unconfirmed(u) = judge(StatusCode::OK, body, 0).unwrap() else { panic!("not unconfirmed") };
        assert_eq!(u.reason, "Aliyun answered isp.SYSTEM_ERROR");
        let detail = u.upstream.expect("Aliyun's detail kept");
        assert_eq!((detail.code.as_str(), detail.request_id.as_str()), ("isp.SYSTEM_ERROR", "r9"));
        // An unlisted isp.* code and a 500 with InternalError alike.
        let r = judge(StatusCode::OK, br#"{"Code":"isp.NEW_FAILURE","RequestId":"r"}"#, 0).unwrap();
        assert!(matches!(r, Dispatched::Unconfirmed(Unconfirmed { upstream: Some(_), .. })));
        let r = judge(StatusCode::INTERNAL_SERVER_ERROR, br#"{"Code":"InternalError","Message":"x"}"#, 0).unwrap();
        assert!(matches!(r, Dispatched::Unconfirmed(Unconfirmed { upstream: Some(_), .. })));
    }

    #[test]
    fn refusals_are_errors_whatever_the_status() {
        let body = br#"{"Code":"isv.MOBILE_NUMBER_ILLEGAL","Message":"invalid mobile number","RequestId":"r1"}"#;
        let e = judge(StatusCode::OK, body, 0).unwrap_err();
        assert_eq!(e.code(), "invalid_phone");
        assert_eq!(e.upstream().map(|u| u.request_id.as_str()), Some("r1"));

        let body = br#"{"RequestId":"r2","HostId":"dysmsapi.aliyuncs.com","Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation.","Recommend":"https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch"}"#;
        let e = judge(StatusCode::BAD_REQUEST, body, 0).unwrap_err();
        assert_eq!(e.code(), "upstream_rejected");
        assert_eq!(e.upstream().map(|u| u.class), Some(Class::OperatorConfig));

        let body =
            br#"{"Code":"Throttling.User","Message":"Request was denied due to user flow control.","RequestId":"r3"}"#;
        let e = judge(StatusCode::SERVICE_UNAVAILABLE, body, 0).unwrap_err();
        assert_eq!(e.code(), "upstream_unavailable");
        assert_eq!(e.upstream().map(|u| u.label), Some("Throttling*"));

        let body =
            "{\"Code\":\"isv.BUSINESS_LIMIT_CONTROL\",\"Message\":\"触发小时级流控Permits:5\",\"RequestId\":\"r4\"}";
        let e = judge(StatusCode::OK, body.as_bytes(), 0).unwrap_err();
        assert_eq!((e.code(), e.retry_after()), ("upstream_rate_limited", Some(3600)));

        let e = judge(StatusCode::OK, br#"{"Code":"isv.SOMETHING_NEW","Message":"m"}"#, 0).unwrap_err();
        assert_eq!(e.code(), "upstream_rejected");
        assert_eq!(e.upstream().map(|u| (u.class, u.label)), Some((Class::Unknown, "other")));
    }

    #[test]
    fn exact_codes_win_over_families() {
        assert_eq!(TABLE.classify("isp.RAM_PERMISSION_DENY"), Class::OperatorConfig);
        assert_eq!(TABLE.classify("isp.SYSTEM_ERROR"), Class::TransientMaybeSent);
        assert_eq!(TABLE.classify("isp.ANYTHING"), Class::TransientMaybeSent);
        assert_eq!(TABLE.classify("Throttling"), Class::TransientNotSent);
        assert_eq!(TABLE.classify("Throttling.Api"), Class::TransientNotSent);
        assert_eq!(TABLE.classify("InvalidAccessKeyId"), Class::OperatorConfig);
        assert_eq!(TABLE.classify("Forbidden.RAM"), Class::OperatorConfig);
        assert_eq!(TABLE.classify("InternalError.Backend"), Class::TransientMaybeSent);
        assert_eq!(TABLE.classify("isv.UNLISTED"), Class::Unknown);
    }

    #[test]
    fn labels_are_a_closed_set() {
        assert_eq!(TABLE.label("isv.BUSINESS_LIMIT_CONTROL"), "isv.BUSINESS_LIMIT_CONTROL");
        assert_eq!(TABLE.label("isp.Invented17"), "isp.*");
        assert_eq!(TABLE.label("Forbidden.Invented"), "Forbidden*");
        assert_eq!(TABLE.label("isv.Invented"), "other");
        assert_eq!(TABLE.label("13800138000"), "other");
    }

    #[test]
    fn every_listed_code_maps_to_its_documented_answer() {
        for (code, class) in EXACT.iter().filter(|(_, c)| *c != Class::Sent) {
            let body = format!(r#"{{"Code":"{code}","Message":"m","RequestId":"r"}}"#);
            let judged = judge(http::StatusCode::OK, body.as_bytes(), 0);
            if *class == Class::TransientMaybeSent {
                assert!(matches!(judged, Ok(Dispatched::Unconfirmed(Unconfirmed { upstream: Some(_), .. }))), "{code}");
                continue;
            }
            let e = judged.expect_err(code);
            let expected = match class {
                Class::RecipientThrottle => "upstream_rate_limited",
                Class::TransientNotSent => "upstream_unavailable",
                Class::CallerInput if *code == "isv.MOBILE_NUMBER_ILLEGAL" => "invalid_phone",
                _ => "upstream_rejected",
            };
            assert_eq!(e.code(), expected, "{code}");
            let upstream = e.upstream().expect("Aliyun's detail kept");
            assert_eq!((upstream.class, upstream.label), (*class, *code), "{code}");
        }
    }
}
