//! Aliyun's delivery reports (SmsReport, "HTTP批量推送"): a POST whose body is a JSON array of reports, one
//! per message, each naming the message by the `BizId` SendSms answered. Only the parsing lives here; the
//! door that receives the push (and what it trusts it with: the push carries no signature) is the server's.

use serde_json::Value;

/// The answer Aliyun wants for a push it may forget: HTTP 200 with a numeric `code` (it checks nothing
/// else); any other answer makes it push again (after 1, 5 and 10 minutes). The message is its doc's.
pub(crate) const ACK: &str = r#"{"code":0,"msg":"接收成功"}"#;

/// The most reports one push is read for. Aliyun batches reports, but a push of more is no push of its.
pub(crate) const MAX_REPORTS: usize = 1000;

/// One message's delivery, as the gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// SendSms's `BizId` ([`crate::sms::Receipt::serial_no`]).
    pub(crate) biz_id: String,
    /// Whether the handset received it.
    pub(crate) success: bool,
    /// The carrier's status, `DELIVERED` on success; empty when absent.
    pub(crate) err_code: String,
    /// The number as Aliyun writes it (11 digits for mainland China); empty when absent.
    pub(crate) phone: String,
}

/// A push as the feedback loop's receipts (matched by `aliyun:<BizId>`), answered [`ACK`]; a push that does
/// not read whole is refused (400) and Aliyun sends it again.
pub(crate) fn receipts(body: &[u8]) -> Result<crate::providers::Pushed, crate::error::GatewayError> {
    use crate::sms::{message_key, ProviderId, StatusReport};
    let reports = parse(body).map_err(|why| crate::error::GatewayError::InvalidRequest(why.into()))?;
    let reports = reports
        .into_iter()
        .map(|r| StatusReport {
            sid: message_key(ProviderId::Aliyun, &r.biz_id).into_owned(),
            digits: crate::providers::report_digits(&r.phone),
            status: if r.success { "SUCCESS" } else { "FAIL" }.into(),
            errmsg: crate::providers::report_text(&r.err_code),
            description: String::new(),
            user_receive_time: String::new(),
        })
        .collect();
    Ok(crate::providers::Pushed { reports, ack: Some(ACK) })
}

/// Reads one push. The whole push is refused, with a stable reason for the log, when its shape is not
/// Aliyun's: no entry is half-read, and Aliyun pushes again what it was refused. Unknown fields are ignored.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<Report>, &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let Value::Array(entries) = value else {
        return Err("not a JSON array");
    };
    if entries.len() > MAX_REPORTS {
        return Err("too many reports");
    }
    entries.iter().map(report).collect()
}

fn report(entry: &Value) -> Result<Report, &'static str> {
    let Value::Object(fields) = entry else {
        return Err("an entry is not an object");
    };
    let text = |name: &str| -> Result<String, &'static str> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err("a field is not a string"),
        }
    };
    let biz_id = text("biz_id")?;
    if biz_id.is_empty() {
        return Err("an entry has no biz_id");
    }
    let Some(Value::Bool(success)) = fields.get("success") else {
        return Err("an entry has no boolean success");
    };
    Ok(Report { biz_id, success: *success, err_code: text("err_code")?, phone: text("phone_number")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aliyun's documented example, with a second entry as a batch carries.
    #[test]
    fn reads_the_documented_push() {
        let body = r#"[
          {"phone_number":"13800138000","send_time":"2017-01-01 00:00:00","report_time":"2017-01-01 00:00:00",
           "success":true,"err_code":"DELIVERED","err_msg":"用户接收成功","sms_size":"1","biz_id":"12345","out_id":"67890"},
          {"phone_number":"85298765432","send_time":"2017-01-01 00:00:00","report_time":"2017-01-01 00:00:05",
           "success":false,"err_code":"MK:0001","err_msg":"空号","sms_size":"2","biz_id":"12346","out_id":""}
        ]"#;
        assert_eq!(
            parse(body.as_bytes()).unwrap(),
            [
                Report {
                    biz_id: "12345".into(),
                    success: true,
                    err_code: "DELIVERED".into(),
                    phone: "13800138000".into()
                },
                Report {
                    biz_id: "12346".into(),
                    success: false,
                    err_code: "MK:0001".into(),
                    phone: "85298765432".into()
                },
            ]
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_ones_default() {
        let body = br#"[{"biz_id":"b1","success":true,"template_code":"SMS_1","sign_name":"x","err_code":null}]"#;
        let r = parse(body).unwrap();
        assert_eq!(r, [Report { biz_id: "b1".into(), success: true, err_code: String::new(), phone: String::new() }]);
        assert_eq!(parse(b"[]").unwrap(), []);
    }

    #[test]
    fn refuses_what_is_not_a_push() {
        let cases: [(&[u8], &str); 11] = [
            (b"", "not JSON"),
            (b"[{\"biz_id\":\"b\"", "not JSON"),
            (br#"{"biz_id":"b","success":true}"#, "not a JSON array"),
            (b"\"text\"", "not a JSON array"),
            (br#"[{"biz_id":"b","success":true}, 7]"#, "an entry is not an object"),
            (br#"[["b", true]]"#, "an entry is not an object"),
            (br#"[{"success":true}]"#, "an entry has no biz_id"),
            (br#"[{"biz_id":"","success":true}]"#, "an entry has no biz_id"),
            (br#"[{"biz_id":12345,"success":true}]"#, "a field is not a string"),
            (br#"[{"biz_id":"b","success":"true"}]"#, "an entry has no boolean success"),
            (br#"[{"biz_id":"b"}]"#, "an entry has no boolean success"),
        ];
        for (body, reason) in cases {
            assert_eq!(parse(body), Err(reason), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn refuses_more_than_max_reports() {
        let entry = r#"{"biz_id":"b","success":true}"#;
        let body = |n: usize| format!("[{}]", vec![entry; n].join(","));
        assert_eq!(parse(body(MAX_REPORTS).as_bytes()).map(|r| r.len()), Ok(MAX_REPORTS));
        assert_eq!(parse(body(MAX_REPORTS + 1).as_bytes()), Err("too many reports"));
    }

    #[test]
    fn ack_has_a_numeric_code() {
        let ack: Value = serde_json::from_str(ACK).unwrap();
        assert_eq!(ack["code"], 0);
    }
}
