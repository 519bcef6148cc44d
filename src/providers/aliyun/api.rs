//! SendSms wire types (Dysmsapi, API version 2017-05-25): the parameters in Aliyun's formats, the answer we
//! read back, and the redaction of a signed query for logs.

use crate::phone::Masked;
use serde::Deserialize;

pub(crate) const ACTION: &str = "SendSms";
pub(crate) const VERSION: &str = "2017-05-25";

const MAINLAND_CHINA: &str = "+86";

/// A number in E.164 as SendSms's `PhoneNumbers` wants it: a mainland China mobile number (`+86` and 11
/// digits) as its 11 digits, the form Aliyun documents for domestic messages; any other number as its
/// country code and number without the `+` (`85298765432`), the form of international and Hong Kong, Macao
/// and Taiwan messages.
pub(crate) fn phone_number(e164: &str) -> String {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    match e164.strip_prefix(MAINLAND_CHINA) {
        Some(national) if national.len() == 11 && national.bytes().all(|b| b.is_ascii_digit()) => national.to_owned(),
        _ => digits.to_owned(),
    }
}

/// The template's variables for a verification code, `{"code":"…"}`, byte for byte as Logto's Aliyun
/// connector sends them (`JSON.stringify({ code })`: serde_json escapes the same characters the same way),
/// so a template approved for Logto works unchanged.
pub(crate) fn template_param(code: &str) -> String {
    #[derive(serde::Serialize)]
    struct Param<'a> {
        code: &'a str,
    }
    serde_json::to_string(&Param { code }).unwrap_or_default()
}

/// SendSms's answer, success or error (Aliyun answers errors with a 4xx or 5xx status and the same object,
/// with `HostId` and `Recommend` besides, which are not read). Only `Code` is required: without it the
/// answer is not one of Aliyun's.
#[derive(Debug, Deserialize)]
pub(crate) struct Answer {
    #[serde(rename = "Code")]
    pub(crate) code: String,
    #[serde(rename = "Message", default)]
    pub(crate) message: Option<String>,
    /// The message's id (`OK` only): the delivery report's `biz_id`.
    #[serde(rename = "BizId", default)]
    pub(crate) biz_id: Option<String>,
    #[serde(rename = "RequestId", default)]
    pub(crate) request_id: Option<String>,
}

/// A signed path and query for dry-run logs and `explain`: the numbers masked (and shown decoded), the
/// template's variables (the code) hidden, everything else as sent. The secret never enters the query.
pub(crate) fn redacted_query(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("PhoneNumbers", numbers)) => {
                let numbers = percent_encoding::percent_decode_str(numbers).decode_utf8_lossy();
                let masked: Vec<String> = numbers.split(',').map(|n| Masked(n).to_string()).collect();
                format!("PhoneNumbers={}", masked.join(","))
            }
            Some(("TemplateParam", _)) => "TemplateParam=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mainland_numbers_lose_their_country_code() {
        assert_eq!(phone_number("+8613800138000"), "13800138000");
        assert_eq!(phone_number("+85298765432"), "85298765432");
        assert_eq!(phone_number("+14155550100"), "14155550100");
        assert_eq!(phone_number("+447700900123"), "447700900123");
        // A +86 number that is not an 11-digit mobile keeps its country code, as any other.
        assert_eq!(phone_number("+861012345678"), "861012345678");
        assert_eq!(phone_number("+86"), "86");
    }

    /// Expected bytes from node 20: `JSON.stringify({code: "a\"b\\c/é\u2028\u0001\n\t\b\f\r\u007f<>&😀"})`.
    #[test]
    fn template_param_matches_json_stringify() {
        assert_eq!(template_param("123456"), r#"{"code":"123456"}"#);
        let code = "a\"b\\c/é\u{2028}\u{1}\n\t\u{8}\u{c}\r\u{7f}<>&😀";
        assert_eq!(template_param(code), "{\"code\":\"a\\\"b\\\\c/é\u{2028}\\u0001\\n\\t\\b\\f\\r\u{7f}<>&😀\"}");
    }

    #[test]
    fn answers_read_both_shapes() {
        let ok: Answer = serde_json::from_str(
            r#"{"Code":"OK","Message":"OK","BizId":"9006197469364984400","RequestId":"F655A8D5"}"#,
        )
        .unwrap();
        assert_eq!((ok.code.as_str(), ok.biz_id.as_deref()), ("OK", Some("9006197469364984400")));
        let err: Answer = serde_json::from_str(
            r#"{"Code":"SignatureDoesNotMatch","Message":"bad","RequestId":"r","HostId":"dysmsapi.aliyuncs.com","Recommend":"https://api.aliyun.com/troubleshoot"}"#,
        )
        .unwrap();
        assert_eq!((err.code.as_str(), err.biz_id), ("SignatureDoesNotMatch", None));
        let nulls: Answer =
            serde_json::from_str(r#"{"Code":"OK","Message":null,"BizId":null,"RequestId":null}"#).unwrap();
        assert_eq!((nulls.message, nulls.request_id), (None, None));
        assert!(serde_json::from_str::<Answer>(r#"{"Message":"no code"}"#).is_err());
    }

    #[test]
    fn redaction_masks_numbers_and_hides_the_code() {
        let q = "/?OutId=o1&PhoneNumbers=13800138000%2C85298765432&SignName=%E9%98%BF&TemplateCode=SMS_1\
                 &TemplateParam=%7B%22code%22%3A%22123456%22%7D";
        let r = redacted_query(q);
        assert_eq!(
            r,
            "/?OutId=o1&PhoneNumbers=13800****00,85298****32&SignName=%E9%98%BF&TemplateCode=SMS_1&TemplateParam=***"
        );
        assert!(!r.contains("123456") && !r.contains("0013"));
        assert_eq!(redacted_query("/"), "/");
    }
}
