//! SendSms wire types (API version 2021-01-11): the request body we serialize once and sign, and the
//! answer envelopes we read back.

use serde::{Deserialize, Serialize};

pub(crate) const ACTION: &str = "SendSms";
pub const VERSION: &str = "2021-01-11";
pub(crate) const SERVICE: &str = "sms";
pub(crate) const CONTENT_TYPE: &str = "application/json; charset=utf-8";

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SendSmsRequest<'a> {
    pub(crate) phone_number_set: &'a [&'a str],
    pub(crate) sms_sdk_app_id: &'a str,
    pub template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_name: Option<&'a str>,
    pub(crate) template_param_set: &'a [String],
    /// The SDK front door passes these three as its caller sent them; the other routes never set them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) extend_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_context: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sender_id: Option<&'a str>,
}

/// Both answer shapes: `{"Response":{"SendStatusSet":[...],"RequestId"}}` and
/// `{"Response":{"Error":{"Code","Message"},"RequestId"}}`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(rename = "Response")]
    pub response: ResponseBody,
}

#[derive(Debug, Deserialize)]
pub struct ResponseBody {
    #[serde(rename = "Error")]
    pub error: Option<ApiError>,
    #[serde(rename = "SendStatusSet", default)]
    pub(crate) send_status_set: Vec<SendStatus>,
    #[serde(rename = "RequestId", default)]
    pub request_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// One number's entry of `SendStatusSet`, read from Tencent and written, in the same shape, by the SDK front
/// door.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SendStatus {
    #[serde(rename = "SerialNo", default)]
    pub serial_no: String,
    #[serde(rename = "PhoneNumber", default)]
    pub(crate) phone_number: String,
    #[serde(rename = "Fee", default)]
    pub fee: u32,
    #[serde(rename = "SessionContext", default)]
    pub(crate) session_context: String,
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
    #[serde(rename = "IsoCode", default)]
    pub(crate) iso_code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_field_names_match_tencent() {
        let params = vec!["123456".to_owned()];
        let body = serde_json::to_string(&SendSmsRequest {
            phone_number_set: &["+8613800138000"],
            sms_sdk_app_id: "1400006666",
            template_id: "1110",
            sign_name: Some("腾讯云"),
            template_param_set: &params,
            extend_code: None,
            session_context: None,
            sender_id: None,
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400006666","TemplateId":"1110","SignName":"腾讯云","TemplateParamSet":["123456"]}"#
        );
    }

    #[test]
    fn reads_both_envelopes() {
        let ok: Envelope = serde_json::from_str(r#"{"Response":{"SendStatusSet":[{"SerialNo":"5000:1","PhoneNumber":"+8613800138000","Fee":1,"SessionContext":"","Code":"Ok","Message":"send success","IsoCode":"CN"}],"RequestId":"r1"}}"#).unwrap();
        assert_eq!(ok.response.send_status_set[0].code, "Ok");
        let err: Envelope = serde_json::from_str(
            r#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"bad"},"RequestId":"r2"}}"#,
        )
        .unwrap();
        assert_eq!(err.response.error.unwrap().code, "AuthFailure.SignatureFailure");
    }
}
