//! Twilio's status callbacks: the form Twilio posts to a message's `StatusCallback` each time its status
//! changes (`MessageSid`, `MessageStatus`, `ErrorCode`, `AccountSid`, `To`, `From`, `SmsSid`, `ApiVersion`,
//! ...). [`parse`] reads it into a [`Report`] and hands back the decoded parameters for the signature check
//! ([`super::sign`]); the caller checks the signature before acting on the report. Parsing refuses what a
//! genuine callback never is, with a stable reason: an unbounded form, no message, conflicting values.

use std::borrow::Cow;

/// The most fields one callback may have: Twilio sends about twenty (more for WhatsApp and RCS channels).
pub(crate) const MAX_FIELDS: usize = 64;

/// A callback's parameters as decoded, every pair in the order sent: what [`super::sign::check`] signs.
pub(crate) type Params = Vec<(String, String)>;

/// Where a message stands, as the gateway needs it: final (delivered or failed) or not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `delivered`, or `read` (after delivery, on channels with read receipts).
    Delivered,
    /// `undelivered` (the carrier said so), `failed` (never sent), `canceled` (a scheduled message).
    Failed,
    /// Any other status (`accepted`, `scheduled`, `queued`, `sending`, `sent`, `partially_delivered`,
    /// and any Twilio adds): more callbacks may follow.
    Pending,
}

impl Outcome {
    /// A `MessageStatus` value; Twilio writes them in lower case.
    pub(crate) fn of(status: &str) -> Outcome {
        match status {
            "delivered" | "read" => Outcome::Delivered,
            "undelivered" | "failed" | "canceled" => Outcome::Failed,
            _ => Outcome::Pending,
        }
    }
}

/// One status callback, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) message_sid: String,
    /// To match against the tenant's account: a callback for another account is not ours.
    pub(crate) account_sid: String,
    pub(crate) outcome: Outcome,
    /// Twilio's error code when the message failed (absent or empty when none).
    pub(crate) error_code: Option<String>,
    /// The recipient, E.164 (empty when absent); mask it before logging.
    pub(crate) to: String,
}

/// A status callback for `account` as the feedback loop's receipts (matched by `twilio:<MessageSid>`): its
/// signature checked against the callback URL the account's messages name, its account checked; an
/// intermediate status (`queued`, `sent`...) reads as no receipt, so a later final one is still the first.
/// Answered 204.
pub(crate) fn receipts(
    account: &crate::config::TwilioAccount,
    signature: Option<&str>,
    body: &[u8],
) -> Result<crate::providers::Pushed, crate::error::GatewayError> {
    use crate::error::GatewayError;
    use crate::providers::{report_digits, report_text, Pushed};
    use crate::sms::{message_key, ProviderId, StatusReport};
    let url = account.status_callback.as_deref().ok_or(GatewayError::NotFound)?;
    let (params, report) = parse(body).map_err(|why| GatewayError::InvalidRequest(why.into()))?;
    super::sign::check(account.auth_token.expose(), url, &params, signature.unwrap_or_default())
        .map_err(GatewayError::BadSignature)?;
    if report.account_sid != account.account_sid {
        return Err(GatewayError::BadSignature("a callback for another Twilio account"));
    }
    let status = match report.outcome {
        Outcome::Delivered => "SUCCESS",
        Outcome::Failed => "FAIL",
        Outcome::Pending => return Ok(Pushed { reports: Vec::new(), ack: None }),
    };
    let reports = vec![StatusReport {
        sid: message_key(ProviderId::Twilio, &report.message_sid).into_owned(),
        digits: report_digits(&report.to),
        status: status.into(),
        errmsg: report_text(report.error_code.as_deref().unwrap_or_default()),
        description: String::new(),
        user_receive_time: String::new(),
    }];
    Ok(Pushed { reports, ack: None })
}

/// Reads a callback's form body. The parameters come back as decoded, every pair in the order sent, for the
/// signature; invalid UTF-8 is decoded lossily (the signature then fails: Twilio signed the original). The
/// fields read must each have one value: a name repeated with a different value is refused, since which
/// one counts would otherwise be the reader's choice and not what was signed.
pub(crate) fn parse(body: &[u8]) -> Result<(Params, Report), &'static str> {
    let mut params = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        if params.len() == MAX_FIELDS {
            return Err("too many fields");
        }
        params.push((name.into_owned(), value.into_owned()));
    }
    let message_sid = single(&params, "MessageSid").map_err(|_| "conflicting MessageSid values")?;
    let message_sid = message_sid.filter(|s| !s.is_empty()).ok_or("missing MessageSid")?;
    let account_sid = single(&params, "AccountSid").map_err(|_| "conflicting AccountSid values")?;
    let account_sid = account_sid.filter(|s| !s.is_empty()).ok_or("missing AccountSid")?;
    // `SmsStatus` is the older name Twilio still sends beside `MessageStatus`.
    let status = match single(&params, "MessageStatus").map_err(|_| "conflicting MessageStatus values")? {
        Some(status) => status,
        None => {
            single(&params, "SmsStatus").map_err(|_| "conflicting SmsStatus values")?.ok_or("missing MessageStatus")?
        }
    };
    let error_code = single(&params, "ErrorCode").map_err(|_| "conflicting ErrorCode values")?;
    let to = single(&params, "To").map_err(|_| "conflicting To values")?;
    let report = Report {
        message_sid: message_sid.into_owned(),
        account_sid: account_sid.into_owned(),
        outcome: Outcome::of(&status),
        error_code: error_code.filter(|c| !c.is_empty()).map(Cow::into_owned),
        to: to.map(Cow::into_owned).unwrap_or_default(),
    };
    Ok((params, report))
}

/// The one value of `name`: `Ok(None)` when absent, `Err` when given twice with different values.
fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<Cow<'a, str>>, ()> {
    let mut values = params.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.any(|v| v != first) {
        return Err(());
    }
    Ok(Some(Cow::Borrowed(first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivered SMS's callback as Twilio posts it (field set and order from a real callback).
    const DELIVERED: &[u8] = b"SmsSid=SM0123456789abcdef0123456789abcdef&SmsStatus=delivered&MessageStatus=delivered\
&To=%2B15005550006&MessagingServiceSid=MG0123456789abcdef0123456789abcdef\
&MessageSid=SM0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef\
&From=%2B15017122661&ApiVersion=2010-04-01&RawDlrDoneDate=2401011200";

    #[test]
    fn reads_a_delivered_callback() {
        let (params, report) = parse(DELIVERED).unwrap();
        assert_eq!(params.len(), 10);
        assert_eq!(params[3], ("To".to_string(), "+15005550006".to_string()), "decoded for the signature");
        assert_eq!(
            report,
            Report {
                message_sid: "SM0123456789abcdef0123456789abcdef".into(),
                account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                outcome: Outcome::Delivered,
                error_code: None,
                to: "+15005550006".into(),
            }
        );
    }

    #[test]
    fn reads_a_failure_and_its_code() {
        let body = b"MessageSid=SM1&AccountSid=AC1&MessageStatus=undelivered&ErrorCode=30003&To=%2B4412";
        let (_, report) = parse(body).unwrap();
        assert_eq!((report.outcome, report.error_code.as_deref()), (Outcome::Failed, Some("30003")));
        let (params, report) = parse(b"MessageSid=SM1&AccountSid=AC1&MessageStatus=sent&ErrorCode=").unwrap();
        assert_eq!((report.outcome, report.error_code, report.to.as_str()), (Outcome::Pending, None, ""));
        assert_eq!(params[3], ("ErrorCode".to_string(), String::new()), "an empty value is still signed");
        // Only the older status name.
        let (_, report) = parse(b"MessageSid=SM1&AccountSid=AC1&SmsStatus=failed").unwrap();
        assert_eq!(report.outcome, Outcome::Failed);
    }

    #[test]
    fn statuses_final_or_not() {
        for (status, outcome) in [
            ("delivered", Outcome::Delivered),
            ("read", Outcome::Delivered),
            ("undelivered", Outcome::Failed),
            ("failed", Outcome::Failed),
            ("canceled", Outcome::Failed),
            ("accepted", Outcome::Pending),
            ("scheduled", Outcome::Pending),
            ("queued", Outcome::Pending),
            ("sending", Outcome::Pending),
            ("sent", Outcome::Pending),
            ("partially_delivered", Outcome::Pending),
            ("Delivered", Outcome::Pending),
            ("", Outcome::Pending),
        ] {
            assert_eq!(Outcome::of(status), outcome, "{status}");
        }
    }

    #[test]
    fn refuses_what_twilio_never_sends() {
        let many: String = (0..MAX_FIELDS).map(|i| format!("F{i}=x&")).collect::<String>() + "MessageSid=SM1";
        assert_eq!(parse(many.as_bytes()).unwrap_err(), "too many fields");
        let just_enough: String = (0..MAX_FIELDS - 3).map(|i| format!("F{i}=x&")).collect::<String>()
            + "MessageSid=SM1&AccountSid=AC1&MessageStatus=sent";
        assert!(parse(just_enough.as_bytes()).is_ok());
        assert_eq!(parse(b"AccountSid=AC1&MessageStatus=sent").unwrap_err(), "missing MessageSid");
        assert_eq!(parse(b"MessageSid=&AccountSid=AC1&MessageStatus=sent").unwrap_err(), "missing MessageSid");
        assert_eq!(parse(b"MessageSid=SM1&MessageStatus=sent").unwrap_err(), "missing AccountSid");
        assert_eq!(parse(b"MessageSid=SM1&AccountSid=AC1").unwrap_err(), "missing MessageStatus");
        assert_eq!(parse(b"").unwrap_err(), "missing MessageSid");
        assert_eq!(
            parse(b"MessageSid=SM1&AccountSid=AC1&MessageStatus=sent&MessageSid=SM2").unwrap_err(),
            "conflicting MessageSid values"
        );
        assert_eq!(
            parse(b"MessageSid=SM1&AccountSid=AC1&MessageStatus=failed&MessageStatus=delivered").unwrap_err(),
            "conflicting MessageStatus values"
        );
        // The same value twice is one value (and one pair in the signature).
        let (params, report) = parse(b"MessageSid=SM1&AccountSid=AC1&MessageStatus=sent&MessageSid=SM1").unwrap();
        assert_eq!((params.len(), report.message_sid.as_str()), (4, "SM1"));
    }

    #[test]
    fn decoding_is_form_decoding() {
        let (params, report) =
            parse(b"MessageSid=SM%31&AccountSid=AC1&MessageStatus=sent&Body=a+b%2Bc%26%E9%AA%8C").unwrap();
        assert_eq!(report.message_sid, "SM1");
        assert_eq!(params[3].1, "a b+c&验");
        // Invalid UTF-8 is replaced, not refused: the signature check refuses it.
        let (params, _) = parse(b"MessageSid=SM1&AccountSid=AC1&MessageStatus=sent&X=%FF").unwrap();
        assert_eq!(params[3].1, "\u{FFFD}");
    }
}
