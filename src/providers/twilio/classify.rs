//! Twilio's answers -> what they mean for the gateway: its error codes (https://www.twilio.com/docs/api/errors)
//! in the shared code [`Table`], and [`judge`], which turns one answer to a Messages create into `Sent`,
//! `Unconfirmed` (the request reached Twilio and no answer says nothing went out) or an error (nothing sent).

use super::api::{ApiError, Message};
use crate::error::{GatewayError, UpstreamClass as Class, UpstreamDetail};
use crate::providers::codes::Table;
use crate::providers::{Dispatched, Unconfirmed};
use crate::sms::Receipt;
use std::time::Duration;

/// Exact codes. Twilio's codes are numbers with no family a prefix could name safely (`30xxx` mixes
/// carrier refusals, fraud blocks and queue overflows), so there are no families: a code not listed is
/// `Unknown` (502 upstream_rejected when Twilio refused with a 4xx, logged with the label `other`).
///
/// Codes met on a created message already `failed` and in status callbacks (`30xxx`, `14107`) are listed too:
/// they classify the message's `error_code` the same way.
pub(crate) const EXACT: &[(&str, Class)] = &[
    // API throttle of the whole account: "never processed and always safe to retry" (Twilio's words).
    ("20429", Class::TransientNotSent),
    // Twilio failed inside (normally with a 5xx, which is unconfirmed whatever the code): may have gone out.
    ("20500", Class::TransientMaybeSent),
    ("20503", Class::TransientMaybeSent),
    // Credentials, account and sender: nothing the caller can change; the operator must.
    // 20001 is listed by Twilio as a warning (unknown parameters, ignored); as a refusal it would mean our
    // request is wrong for this account, not the caller's input.
    ("20001", Class::OperatorConfig),
    // Authentication failed (wrong SID/token, deleted token, suspended or closed account).
    ("20003", Class::OperatorConfig),
    // Account not active (no funds, trial not activated).
    ("20005", Class::OperatorConfig),
    // Test credentials used for a resource they cannot reach.
    ("20008", Class::OperatorConfig),
    // The resource does not exist: the AccountSid in the path is wrong.
    ("20404", Class::OperatorConfig),
    // Account disabled (balance at zero, policy): funds or support, an operator's action, not a quota that
    // resets by itself, hence not AccountQuota.
    ("10001", Class::OperatorConfig),
    // A trial account asked for a full account's feature.
    ("10002", Class::OperatorConfig),
    // Sending to this country is not enabled in the account's Geo Permissions.
    ("21408", Class::OperatorConfig),
    // From is not an SMS-capable number of this account.
    ("21601", Class::OperatorConfig),
    // Neither From nor MessagingServiceSid.
    ("21603", Class::OperatorConfig),
    // From is not a message-capable Twilio number for this destination/account.
    ("21606", Class::OperatorConfig),
    // Trial account (or no approved compliance profile): only verified numbers may receive.
    ("21608", Class::OperatorConfig),
    // From is not a Twilio number, or a short code's country does not match.
    ("21659", Class::OperatorConfig),
    // From is not SMS-capable.
    ("21661", Class::OperatorConfig),
    // Invalid From (caller ID).
    ("21212", Class::OperatorConfig),
    // The Messaging Service does not exist (or is another account's), has no senders, is invalid.
    ("21701", Class::OperatorConfig),
    ("21704", Class::OperatorConfig),
    ("21705", Class::OperatorConfig),
    // Account suspended, met as a message's error code.
    ("30002", Class::OperatorConfig),
    // The carrier filtered the text as spam: the operator's template and sender registration, not the number.
    ("30007", Class::OperatorConfig),
    // The sender's queue holds hours of messages already (21611 at creation; 30001 when a Messaging Service
    // fails the message after creation): the account's sending capacity is used up for longer than any send's
    // deadline, and the recipient did nothing wrong, so AccountQuota (rejected, quota refunded) rather than
    // TransientNotSent (retried within the deadline to no avail).
    ("21611", Class::AccountQuota),
    ("30001", Class::AccountQuota),
    // The number or content: the caller's choice. Quota is not refunded, so refused numbers buy no free calls.
    // Not a valid phone number.
    ("21211", Class::CallerInput),
    // No To.
    ("21604", Class::CallerInput),
    // Not a mobile number (a landline cannot receive SMS): answered invalid_phone, the user must give another.
    ("21614", Class::CallerInput),
    // The recipient replied STOP to this sender.
    ("21610", Class::CallerInput),
    // This To/From combination cannot be reached (destination network or country): per destination; the
    // same account sends elsewhere.
    ("21612", Class::CallerInput),
    // The body is over 1600 characters: the code (and Logto's other payload values) made it too long.
    ("21617", Class::CallerInput),
    // Delivery failures of the handset or destination, met as a message's error code.
    ("30003", Class::CallerInput),
    ("30004", Class::CallerInput),
    ("30005", Class::CallerInput),
    ("30006", Class::CallerInput),
    // Per-destination blocks with a documented window: retry after it (429 with Retry-After), and quota is
    // not refunded. SMS Pumping Protection blocks a destination it suspects of pumping fraud: 30450 for
    // 15-30 minutes, 30453 for "a few hours". They are not CallerInput: a legitimate user flagged by mistake
    // is told when to try again instead of that the message was refused.
    ("30450", Class::RecipientThrottle),
    ("30453", Class::RecipientThrottle),
    // More than 30 messages between the same two numbers in 30 seconds: failed for 30 seconds.
    ("14107", Class::RecipientThrottle),
];

/// Twilio's codes, classified.
pub(crate) const TABLE: Table = Table {
    provider: "Twilio",
    exact: EXACT,
    families: &[],
    invalid_phone: &["21211", "21614"],
    retry_after: recipient_retry_after,
};

/// How long a per-destination block lasts: the end of its documented window.
pub(crate) fn recipient_retry_after(code: &str, _now_unix: i64) -> Duration {
    match code {
        "30450" => Duration::from_secs(30 * 60),
        "30453" => Duration::from_secs(3 * 3600),
        "14107" => Duration::from_secs(30),
        _ => Duration::from_secs(60),
    }
}

/// Message statuses that say Twilio will not send it: a resource can be created already `failed` (a
/// Messaging Service's fraud or queue checks); `undelivered` and `canceled` cannot come back from a create
/// but would mean the same.
const NOT_SENT: &[&str] = &["failed", "undelivered", "canceled"];

/// Twilio's answer to one Messages create (`status`, the `Twilio-Request-Id` header, the body) -> what
/// became of the message. `Err` only when the answer says nothing was sent: a Twilio error (a 4xx with a
/// `code`) or a message created already failed. Anything else Twilio may have acted on: a 5xx, an answer
/// that is not Twilio's (a proxy's page, empty, cut short, no `sid`) is `Unconfirmed`, never an error.
pub(crate) fn judge(
    status: http::StatusCode,
    request_id: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<Dispatched, GatewayError> {
    let request_id = request_id.unwrap_or_default();
    let unconfirmed = |reason: String, upstream: Option<UpstreamDetail>| {
        Ok(Dispatched::Unconfirmed(Unconfirmed { reason, upstream }))
    };
    if status.is_success() {
        let Ok(message) = serde_json::from_slice::<Message>(body) else {
            return unconfirmed(format!("unreadable answer with HTTP status {status}"), None);
        };
        let Some(sid) = message.sid.filter(|sid| !sid.is_empty()) else {
            return unconfirmed(format!("answer with HTTP status {status} without a message sid"), None);
        };
        let state = message.status.unwrap_or_default();
        if NOT_SENT.contains(&state.as_str()) {
            // Without an error code, the status stands in for it (an unlisted code: upstream_rejected).
            let code = message.error_code.filter(|c| !c.is_empty()).unwrap_or_else(|| state.clone());
            let detail = TABLE.detail(code, message.error_message.unwrap_or_default(), request_id.to_owned());
            return match detail.class {
                Class::Sent | Class::TransientMaybeSent => {
                    unconfirmed(format!("Twilio created message {sid} as {state} with {}", detail.label), Some(detail))
                }
                _ => Err(TABLE.to_error(detail, now_unix)),
            };
        }
        // Twilio bills per segment; 0 (not yet counted) or unreadable is at least the one message sent.
        let fee = message.num_segments.and_then(|n| n.parse::<u32>().ok()).filter(|n| *n > 0).unwrap_or(1);
        return Ok(Dispatched::Sent(Receipt { serial_no: sid, fee, request_id: request_id.to_owned() }));
    }
    let error = serde_json::from_slice::<ApiError>(body).ok().and_then(|error| {
        let code = error.code.filter(|c| !c.is_empty())?;
        Some(TABLE.detail(code, error.message.unwrap_or_default(), request_id.to_owned()))
    });
    match error {
        Some(detail) if status.is_client_error() => match detail.class {
            Class::Sent | Class::TransientMaybeSent => {
                unconfirmed(format!("Twilio answered HTTP {status} with {}", detail.label), Some(detail))
            }
            _ => Err(TABLE.to_error(detail, now_unix)),
        },
        Some(detail) => unconfirmed(format!("Twilio answered HTTP {status} with {}", detail.label), Some(detail)),
        None => unconfirmed(format!("HTTP status {status} without a Twilio error"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn error_body(code: &str) -> String {
        format!(
            r#"{{"code":{code},"message":"m","more_info":"https://www.twilio.com/docs/errors/{code}","status":400}}"#
        )
    }

    fn unconfirmed(r: Result<Dispatched, GatewayError>) -> Unconfirmed {
        match r {
            Ok(Dispatched::Unconfirmed(u)) => u,
            other => panic!("expected unconfirmed, got {other:?}"),
        }
    }

    #[test]
    fn created_message_is_sent_with_its_segments() {
        let body = br#"{"sid":"SM1","status":"accepted","num_segments":"2","error_code":null,"price":null}"#;
        let r = judge(StatusCode::CREATED, Some("RQ1"), body, 0).unwrap();
        assert_eq!(r, Dispatched::Sent(Receipt { serial_no: "SM1".into(), fee: 2, request_id: "RQ1".into() }));
        for (segments, fee) in [(r#""0""#, 1), ("null", 1), (r#""x""#, 1), ("3", 3)] {
            let body = format!(r#"{{"sid":"SM1","status":"queued","num_segments":{segments}}}"#);
            let r = judge(StatusCode::CREATED, None, body.as_bytes(), 0).unwrap();
            assert_eq!(r, Dispatched::Sent(Receipt { serial_no: "SM1".into(), fee, request_id: String::new() }));
        }
        // A status the gateway does not know is still a created message.
        let r = judge(StatusCode::OK, None, br#"{"sid":"SM3","status":"brand_new"}"#, 0).unwrap();
        assert!(matches!(r, Dispatched::Sent(_)));
    }

    #[test]
    fn created_already_failed_is_an_error_by_its_code() {
        let body = br#"{"sid":"SM1","status":"failed","error_code":30450,"error_message":"blocked"}"#;
        let e = judge(StatusCode::CREATED, Some("RQ2"), body, 0).unwrap_err();
        assert_eq!((e.code(), e.retry_after()), ("upstream_rate_limited", Some(1800)));
        let upstream = e.upstream().unwrap();
        assert_eq!((upstream.code.as_str(), upstream.request_id.as_str()), ("30450", "RQ2"));
        let body = br#"{"sid":"SM1","status":"failed","error_code":"30001"}"#;
        assert_eq!(judge(StatusCode::CREATED, None, body, 0).unwrap_err().code(), "upstream_rejected");
        // No code: the status stands in, unknown, so rejected (nothing was sent).
        let e = judge(StatusCode::CREATED, None, br#"{"sid":"SM1","status":"undelivered"}"#, 0).unwrap_err();
        assert_eq!(
            (e.code(), e.upstream().unwrap().code.as_str(), e.upstream().unwrap().label),
            ("upstream_rejected", "undelivered", "other")
        );
        assert!(judge(StatusCode::CREATED, None, br#"{"sid":"SM1","status":"canceled"}"#, 0).is_err());
        // Twilio failed inside while creating it: maybe sent.
        let body = br#"{"sid":"SM1","status":"failed","error_code":20500}"#;
        let u = unconfirmed(judge(StatusCode::CREATED, None, body, 0));
        assert_eq!(u.upstream.unwrap().code, "20500");
    }

    #[test]
    fn unreadable_success_is_unconfirmed() {
        for body in [
            &b""[..],
            b"<html>ok</html>",
            br#"{"sid":"SM1","status":"#,
            br#"{"status":"queued"}"#,
            br#"{"sid":""}"#,
            b"[]",
            b"null",
        ] {
            let u = unconfirmed(judge(StatusCode::CREATED, None, body, 0));
            assert!(u.upstream.is_none(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn client_errors_are_classified() {
        let e = judge(StatusCode::BAD_REQUEST, Some("RQ3"), error_body("21211").as_bytes(), 0).unwrap_err();
        assert_eq!(e.code(), "invalid_phone");
        assert_eq!(e.upstream().unwrap().request_id, "RQ3");
        let e = judge(StatusCode::UNAUTHORIZED, None, error_body("20003").as_bytes(), 0).unwrap_err();
        assert_eq!(e.code(), "upstream_rejected");
        let e = judge(StatusCode::TOO_MANY_REQUESTS, None, error_body("20429").as_bytes(), 0).unwrap_err();
        assert_eq!(e.code(), "upstream_unavailable");
        assert!(e.quota_comes_back());
        // A code as a string, and a code Twilio may add tomorrow: refused, nothing sent.
        let e = judge(StatusCode::BAD_REQUEST, None, br#"{"code":"21610","message":"unsubscribed"}"#, 0).unwrap_err();
        assert_eq!(e.upstream().unwrap().code, "21610");
        let e = judge(StatusCode::BAD_REQUEST, None, error_body("29999").as_bytes(), 0).unwrap_err();
        assert_eq!((e.code(), e.upstream().unwrap().label), ("upstream_rejected", "other"));
        // A maybe-sent code, even under a 4xx, stays unconfirmed.
        let u = unconfirmed(judge(StatusCode::BAD_REQUEST, None, error_body("20500").as_bytes(), 0));
        assert_eq!(u.upstream.unwrap().class, Class::TransientMaybeSent);
    }

    #[test]
    fn server_errors_and_foreign_answers_are_unconfirmed() {
        // A 5xx is never an error, even with a code that would refuse under a 4xx.
        let u = unconfirmed(judge(StatusCode::SERVICE_UNAVAILABLE, Some("RQ4"), error_body("20003").as_bytes(), 0));
        assert_eq!(u.upstream.unwrap().code, "20003");
        let u = unconfirmed(judge(StatusCode::INTERNAL_SERVER_ERROR, None, b"<html>oops</html>", 0));
        assert!(u.upstream.is_none() && u.reason.contains("500"));
        // A 4xx that is not Twilio's JSON (a proxy's page, a truncated body, JSON without a code).
        for body in [&b"<html>403</html>"[..], b"", br#"{"code":2121"#, br#"{"message":"x","status":404}"#] {
            unconfirmed(judge(StatusCode::FORBIDDEN, None, body, 0));
        }
        // A redirect or an odd status with Twilio's JSON: not a refusal Twilio documents.
        unconfirmed(judge(StatusCode::PERMANENT_REDIRECT, None, error_body("21211").as_bytes(), 0));
    }

    #[test]
    fn every_listed_code_maps_to_its_documented_answer() {
        for (code, class) in EXACT {
            let d = TABLE.detail(code.to_string(), String::new(), String::new());
            assert_eq!(d.label, *code, "listed codes are their own label");
            let r = judge(StatusCode::BAD_REQUEST, None, error_body(code).as_bytes(), 0);
            if *class == Class::TransientMaybeSent {
                assert_eq!(unconfirmed(r).upstream.unwrap().code, *code);
                continue;
            }
            let e = r.unwrap_err();
            let expected = match class {
                Class::RecipientThrottle => "upstream_rate_limited",
                Class::TransientNotSent => "upstream_unavailable",
                Class::CallerInput if ["21211", "21614"].contains(code) => "invalid_phone",
                _ => "upstream_rejected",
            };
            assert_eq!(e.code(), expected, "{code}");
            assert!(e.upstream().is_some(), "{code} keeps Twilio's detail");
        }
    }

    #[test]
    fn pumping_blocks_last_their_documented_window() {
        assert_eq!(recipient_retry_after("30450", 0), Duration::from_secs(1800));
        assert_eq!(recipient_retry_after("30453", 0), Duration::from_secs(10800));
        assert_eq!(recipient_retry_after("14107", 0), Duration::from_secs(30));
        let e = judge(StatusCode::BAD_REQUEST, None, error_body("30453").as_bytes(), 0).unwrap_err();
        assert_eq!(e.retry_after(), Some(10800));
    }
}
