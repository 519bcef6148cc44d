//! The feedback loop through real sockets, memory backend: Logto's signed webhook, `/v1/sms/verified`,
//! Tencent's delivery-status callback, ReportConversion reaching the mock Tencent, the webhook relay
//! verified by the reference `standardwebhooks` package, and the adaptive protection with its admin API.

use crate::common::mock::MockTencent;
use crate::common::python::{interpreter, PythonProcess};
use crate::common::*;
use hmac::{Hmac, Mac};
use std::time::Duration;

const LOGTO_KEY: &str = "logto-signing-key-acme-0123456789";
const BETA_LOGTO_KEY: &str = "logto-signing-key-beta-0123456789";
const STATUS_SECRET: &str = "tencent-status-acme-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const PROTECTION: &str = "    protection:\n      - { name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 3, min_conversion: 0.5, block_for: 30m }\n";

/// Tenant `acme` (conversion window 1m, Logto key, status secret) and `beta`, against the mock at `endpoint`;
/// `acme_extra` and `beta_extra` are tenant-level lines (4 spaces), `tencent_extra` acme's tencent lines (6).
fn yaml(endpoint: &str, acme_extra: &str, tencent_extra: &str, beta_extra: &str) -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:0
  max_body_bytes: 4096
  admin_tokens: ["{ADMIN_TOKEN}"]
tenants:
  acme:
    tokens: ["{TOKEN}"]
    default_country: CN
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{{ usageType: Generic, templateCode: "1113" }}]
      endpoint: {endpoint}
      timeout: 1s
      status_secret: {STATUS_SECRET}
{tencent_extra}
    conversion:
      window: 1m
      logto_webhook_secret: {LOGTO_KEY}
{acme_extra}
  beta:
    tokens: ["{OTHER_TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      sdkAppId: "1400007777"
      region: ap-beijing
      templates: [{{ usageType: Generic, templateCode: "2220" }}]
      endpoint: {endpoint}
    conversion: {{ logto_webhook_secret: {BETA_LOGTO_KEY} }}
{beta_extra}
"#
    )
}

async fn setup(acme_extra: &str, tencent_extra: &str) -> (MockTencent, TestGateway) {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&yaml(&mock.endpoint(), acme_extra, tencent_extra, ""))).await;
    (mock, gw)
}

fn hmac_hex(key: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A Logto interaction-hook body as Logto posts it (`primaryPhone`: country code and digits, no `+`).
fn logto_body(event: &str, phone: Option<&str>) -> String {
    serde_json::json!({
        "hookId": "hk8q3t5e1w", "event": event, "createdAt": "2024-01-02T03:05:00.000Z",
        "interactionEvent": "SignIn", "sessionId": "s1", "userAgent": "Mozilla/5.0", "userIp": "203.0.113.7",
        "userId": "u1",
        "user": {"id": "u1", "username": null, "primaryEmail": null, "primaryPhone": phone, "name": null,
                 "avatar": null, "customData": {}, "identities": {}, "lastSignInAt": 1704164700000u64,
                 "createdAt": 1704000000000u64, "applicationId": "app1", "isSuspended": false},
        "application": {"id": "app1", "type": "SPA", "name": "Acme", "description": null}
    })
    .to_string()
}

/// POSTs `body` with extra headers; the status and the body as text (204s have none).
async fn post_raw(gw: &TestGateway, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = gw.http.post(gw.url(path)).header("content-type", "application/json").body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn webhook(gw: &TestGateway, body: &str, signature: Option<&str>) -> (u16, String) {
    match signature {
        Some(signature) => post_raw(gw, "/v1/logto/webhook", body, &[("logto-signature-sha-256", signature)]).await,
        None => post_raw(gw, "/v1/logto/webhook", body, &[]).await,
    }
}

async fn send(gw: &TestGateway, phone: &str, code: &str) -> Answer {
    gw.post("/v1/sms/send", &native(phone, "SignIn", code)).await
}

async fn verified(gw: &TestGateway, body: &str) -> (u16, String) {
    post_raw(gw, "/v1/sms/verified", body, &[("authorization", &format!("Bearer {TOKEN}"))]).await
}

#[tokio::test]
async fn logto_webhook_signed_as_logto_signs_converts_the_send() {
    let (_mock, gw) = setup("", "").await;
    assert_eq!(send(&gw, "+8613800138000", "123456").await.status, 200);
    gw.clock.advance(Duration::from_secs(20));
    let body = logto_body("PostSignIn", Some("8613800138000"));
    let (status, text) = webhook(&gw, &body, Some(&hmac_hex(LOGTO_KEY, &body))).await;
    assert_eq!((status, text.as_str()), (204, ""));
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_conversions_total{tenant="acme",country="CN"}"#), 1.0, "{m}");
    assert_eq!(sample(&m, r#"smsgate_verify_latency_seconds_sum{tenant="acme"}"#), 20.0, "{m}");
    let converted = r#"smsgate_feedback_requests_total{route="logto_webhook",tenant="acme",outcome="converted"}"#;
    assert_eq!(sample(&m, converted), 1.0, "{m}");
    // Logto retries: the same webhook again converts nothing new and is still 2xx.
    assert_eq!(webhook(&gw, &body, Some(&hmac_hex(LOGTO_KEY, &body))).await.0, 204);
    // A sign-in of a number smsgate sent nothing to: 2xx (Logto would retry anything else), nothing marked.
    let other = logto_body("PostRegister", Some("8613900139000"));
    assert_eq!(webhook(&gw, &other, Some(&hmac_hex(LOGTO_KEY, &other))).await.0, 204);
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_conversions_total{tenant="acme",country="CN"}"#), 1.0, "{m}");
    let again = r#"smsgate_feedback_requests_total{route="logto_webhook",tenant="acme",outcome="already_converted"}"#;
    assert_eq!(sample(&m, again), 1.0, "{m}");
    let none = r#"smsgate_feedback_requests_total{route="logto_webhook",tenant="acme",outcome="no_recent_send"}"#;
    assert_eq!(sample(&m, none), 1.0, "{m}");
}

#[tokio::test]
async fn a_wrong_or_missing_logto_signature_is_refused_and_marks_nothing() {
    let (_mock, gw) = setup("", "").await;
    assert_eq!(send(&gw, "+8613800138000", "123456").await.status, 200);
    let body = logto_body("PostSignIn", Some("8613800138000"));
    let tampered = body.replace("8613800138000", "8613800138001");
    for signature in [
        Some(hmac_hex("not-the-signing-key-0123456789", &body)),
        Some(hmac_hex(LOGTO_KEY, &tampered)),
        Some("zz".repeat(32)),
        Some(String::new()),
        None,
    ] {
        let (status, text) = webhook(&gw, &body, signature.as_deref()).await;
        assert_eq!(status, 401, "{text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["code"], "invalid_signature");
    }
    // Beta's key verifies as beta: beta never sent to the number, so acme's send stays unconverted.
    assert_eq!(webhook(&gw, &body, Some(&hmac_hex(BETA_LOGTO_KEY, &body))).await.0, 204);
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_conversions_total{tenant="acme",country="CN"}"#), 0.0, "{m}");
    let refused = r#"smsgate_feedback_requests_total{route="logto_webhook",tenant="",outcome="invalid_signature"}"#;
    assert_eq!(sample(&m, refused), 5.0, "{m}");
    // Only now is the send converted: none of the refused calls marked it.
    assert_eq!(webhook(&gw, &body, Some(&hmac_hex(LOGTO_KEY, &body))).await.0, 204);
    let converted = r#"smsgate_feedback_requests_total{route="logto_webhook",tenant="acme",outcome="converted"}"#;
    assert_eq!(sample(&metrics(&gw).await, converted), 1.0);
}

#[tokio::test]
async fn logto_events_without_a_phone_are_accepted_and_ignored() {
    let (_mock, gw) = setup("", "").await;
    for body in [
        logto_body("PostSignIn", None),
        logto_body("PostSignIn", Some("")),
        logto_body("PostSignIn", Some("not-a-number")),
        logto_body("User.Created", Some("8613800138000")),
        r#"{"hookId":"h","createdAt":"2024-01-02T03:05:00.000Z"}"#.to_owned(),
    ] {
        let (status, text) = webhook(&gw, &body, Some(&hmac_hex(LOGTO_KEY, &body))).await;
        assert_eq!(status, 204, "{body}: {text}");
    }
    let ignored = r#"smsgate_feedback_requests_total{route="logto_webhook",tenant="acme",outcome="ignored"}"#;
    assert_eq!(sample(&metrics(&gw).await, ignored), 5.0);
    // A signed body that is not JSON is a bad request, not a silent 2xx.
    let (status, _) = webhook(&gw, "{nope", Some(&hmac_hex(LOGTO_KEY, "{nope"))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn verified_reports_convert_within_the_window_or_answer_404() {
    let (_mock, gw) = setup("", "").await;
    let no_send = verified(&gw, r#"{"phone":"+8613800138000"}"#).await;
    assert_eq!(no_send.0, 404, "{}", no_send.1);
    assert!(no_send.1.contains("no_recent_send"), "{}", no_send.1);

    let first = send(&gw, "+8613800138000", "111111").await;
    let request_id = first.json["request_id"].as_str().unwrap().to_owned();
    let wrong_id = verified(&gw, r#"{"phone":"+8613800138000","request_id":"another-request"}"#).await;
    assert_eq!(wrong_id.0, 404);
    let body = format!(r#"{{"phone":"13800138000","request_id":"{request_id}"}}"#);
    assert_eq!(verified(&gw, &body).await.0, 204, "national digits in the tenant's default country");
    // Idempotent: reported again, still 204.
    assert_eq!(verified(&gw, r#"{"phone":"+8613800138000"}"#).await.0, 204);

    // Past the conversion window (1m) a send is no longer converted by a report.
    assert_eq!(send(&gw, "+8613900139000", "222222").await.status, 200);
    gw.clock.advance(Duration::from_secs(61));
    assert_eq!(verified(&gw, r#"{"phone":"+8613900139000"}"#).await.0, 404);

    // Tenant-scoped: beta's token does not see acme's sends.
    assert_eq!(send(&gw, "+8613700137000", "333333").await.status, 200);
    let beta = post_raw(
        &gw,
        "/v1/sms/verified",
        r#"{"phone":"+8613700137000"}"#,
        &[("authorization", &format!("Bearer {OTHER_TOKEN}"))],
    )
    .await;
    assert_eq!(beta.0, 404);
    // Bad input: a clear error, nothing marked.
    let unauthorized = post_raw(&gw, "/v1/sms/verified", r#"{"phone":"+8613700137000"}"#, &[]).await;
    assert_eq!(unauthorized.0, 401);
    assert_eq!(verified(&gw, r#"{"phone":"12"}"#).await.0, 400);
    assert_eq!(verified(&gw, r#"{"phone":"+8613700137000","code":"333333"}"#).await.0, 400);
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_conversions_total{tenant="acme",country="CN"}"#), 1.0, "{m}");
    assert_eq!(verified(&gw, r#"{"phone":"+8613700137000"}"#).await.0, 204);
}

#[tokio::test]
async fn tencent_status_callback_with_several_reports_and_unknown_sids() {
    let (_mock, gw) = setup("", "").await;
    let a = send(&gw, "+8613800138000", "111111").await;
    let b = send(&gw, "+14155550100", "222222").await;
    assert_eq!(
        (a.json["upstream"]["serial_no"].as_str(), b.json["upstream"]["serial_no"].as_str()),
        (Some("2019:0"), Some("2019:1"))
    );
    gw.clock.advance(Duration::from_secs(5));
    let reports = serde_json::json!([
        {"user_receive_time": "2024-01-02 11:04:09", "nationcode": "86", "mobile": "13800138000",
         "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "用户短信送达成功", "sid": "2019:0"},
        {"user_receive_time": "2024-01-02 11:04:10", "nationcode": "1", "mobile": "4155550100",
         "report_status": "FAIL", "errmsg": "UNDELIV", "description": "failed", "sid": "2019:1"},
        {"user_receive_time": "2024-01-02 11:04:11", "nationcode": "86", "mobile": "13800138000",
         "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "?", "sid": "9999:9"},
        // A real SerialNo with another number: not the send it names.
        {"user_receive_time": "2024-01-02 11:04:12", "nationcode": "86", "mobile": "13900139000",
         "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "?", "sid": "2019:0"}
    ])
    .to_string();
    let (status, text) = post_raw(&gw, &format!("/v1/tencent/status/{STATUS_SECRET}"), &reports, &[]).await;
    assert_eq!((status, text.as_str()), (200, r#"{"result":0,"errmsg":"OK"}"#));
    let m = metrics(&gw).await;
    for (series, value) in [
        (r#"smsgate_delivery_reports_total{tenant="acme",country="CN",status="success"}"#, 1.0),
        (r#"smsgate_delivery_reports_total{tenant="acme",country="US",status="fail"}"#, 1.0),
        (r#"smsgate_delivery_reports_total{tenant="acme",country="",status="unknown_sid"}"#, 2.0),
        (r#"smsgate_receipt_latency_seconds_count{tenant="acme"}"#, 2.0),
        (r#"smsgate_receipt_latency_seconds_sum{tenant="acme"}"#, 10.0),
    ] {
        assert_eq!(sample(&m, series), value, "{series}\n{m}");
    }
    // A wrong secret is an unknown route; a body over the limit is refused unread; neither counts anything.
    let (status, _) = post_raw(&gw, "/v1/tencent/status/tencent-status-acme-0123456780", &reports, &[]).await;
    assert_eq!(status, 404);
    let big = format!("[{}]", vec![r#"{"sid":"2019:0","nationcode":"86","mobile":"13800138000"}"#; 100].join(","));
    let (status, _) = post_raw(&gw, &format!("/v1/tencent/status/{STATUS_SECRET}"), &big, &[]).await;
    assert_eq!(status, 413);
    let (status, _) = post_raw(&gw, &format!("/v1/tencent/status/{STATUS_SECRET}"), "{nope", &[]).await;
    assert_eq!(status, 400);
    let after = metrics(&gw).await;
    assert_eq!(sample(&after, r#"smsgate_delivery_reports_total{tenant="acme",country="CN",status="success"}"#), 1.0);
    assert_eq!(sample(&after, r#"smsgate_delivery_reports_total{tenant="acme",country="",status="unknown_sid"}"#), 2.0);
}

#[tokio::test]
async fn report_conversion_reaches_tencent_signed_like_sendsms() {
    let (mock, gw) = setup("", "      report_conversion: true").await;
    assert_eq!(send(&gw, "+8613800138000", "123456").await.status, 200);
    gw.clock.advance(Duration::from_secs(30));
    assert_eq!(verified(&gw, r#"{"phone":"+8613800138000"}"#).await.0, 204);
    wait_for_sample(&gw, r#"smsgate_report_conversion_total{tenant="acme",result="ok"}"#, 1.0).await;
    let seen = mock.seen_action("ReportConversion");
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert!(r.signature_valid, "TC3 verifies independently: {:?}", r.headers);
    assert_eq!(
        r.body,
        serde_json::json!({"SmsSdkAppId": "1400006666", "SerialNo": "2019:0", "ConversionTime": START_UNIX + 30})
    );
    assert_eq!(r.header("x-tc-version"), "2021-01-11");
    assert_eq!(r.header("x-tc-region"), "ap-guangzhou");
    assert_eq!(r.header("x-tc-timestamp"), (START_UNIX + 30).to_string());
    assert_eq!(mock.seen_action("SendSms").len(), 1);
}

#[tokio::test]
async fn an_unauthorized_report_conversion_turns_reporting_off_until_a_reload() {
    let (mock, gw) = setup("", "      report_conversion: true").await;
    mock.reply_report("UnauthorizedOperation.SmsSdkAppIdVerifyFail");
    for (phone, code) in [("+8613800138000", "111111"), ("+8613900139000", "222222"), ("+8613700137000", "333333")] {
        assert_eq!(send(&gw, phone, code).await.status, 200);
    }
    assert_eq!(verified(&gw, r#"{"phone":"+8613800138000"}"#).await.0, 204);
    let off = r#"smsgate_report_conversion_total{tenant="acme",result="off"}"#;
    wait_for_sample(&gw, off, 1.0).await;
    // Off: the next conversion is not sent to Tencent at all.
    assert_eq!(verified(&gw, r#"{"phone":"+8613900139000"}"#).await.0, 204);
    wait_for_sample(&gw, off, 2.0).await;
    assert_eq!(mock.seen_action("ReportConversion").len(), 1);
    // A reload turns it back on (the account may have been allow-listed meanwhile).
    gw.gateway.reload(compile(&yaml(&mock.endpoint(), "", "      report_conversion: true", "")));
    assert_eq!(verified(&gw, r#"{"phone":"+8613700137000"}"#).await.0, 204);
    wait_for_sample(&gw, r#"smsgate_report_conversion_total{tenant="acme",result="ok"}"#, 1.0).await;
    assert_eq!(mock.seen_action("ReportConversion").len(), 2);
}

/// Three sends to one prefix, one verified (a third, below the rule's half): once their conversion window
/// has passed, the prefix is refused with 403 suspected_pumping, and the refusals consume nothing: no SMS,
/// no quota of the limits, no spend, no de-duplication replay.
#[tokio::test]
async fn protection_blocks_a_low_converting_prefix_and_a_blocked_send_consumes_nothing() {
    let extra = format!("    limits:\n      - {{ name: tenant, key: tenant, limit: 6, per: 1h }}\n    spend_caps: {{ daily: 7 }}\n{PROTECTION}");
    let (mock, gw) = setup(&extra, "").await;
    for (i, phone) in ["+8613800138001", "+8613800138002", "+8613800138003"].into_iter().enumerate() {
        assert_eq!(send(&gw, phone, &format!("10000{i}")).await.status, 200);
    }
    assert_eq!(verified(&gw, r#"{"phone":"+8613800138001"}"#).await.0, 204);
    gw.clock.advance(Duration::from_secs(61));
    send(&gw, "+8613800138004", "100004").await.assert_error(403, "suspected_pumping");
    // A repeat of an accepted send would be replayed by de-duplication: the block comes first.
    send(&gw, "+8613800138002", "100001").await.assert_error(403, "suspected_pumping");
    // Logto's route is the same pipeline: no way around the block there.
    let logto = r#"{"to":"8613800138005","type":"SignIn","payload":{"code":"100005"}}"#;
    gw.post("/v1/logto/sms", logto).await.assert_error(403, "suspected_pumping");
    assert_eq!(mock.seen_action("SendSms").len(), 3);
    // Other prefixes send; the tenant limit (6) saw only the accepted sends.
    let other = send(&gw, "+8613900139000", "200000").await;
    assert_eq!(other.status, 200, "{:#}", other.json);
    assert!(other.header("ratelimit").unwrap().starts_with(r#""tenant";r=2;"#), "{:?}", other.headers);
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_protection_trips_total{tenant="acme",rule="prefix",shadow="false"}"#), 1.0, "{m}");
    assert_eq!(sample(&m, r#"smsgate_protection_blocked_total{tenant="acme",rule="prefix",shadow="false"}"#), 3.0);
    // Whatever usage label the send is counted under.
    let refused: f64 = m
        .lines()
        .filter(|l| l.starts_with("smsgate_requests_total{") && l.contains(r#"code="suspected_pumping""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(refused, 3.0, "{m}");
}

#[tokio::test]
async fn a_burst_of_fresh_sends_is_not_judged_before_its_window_passes() {
    let (mock, gw) = setup(PROTECTION, "").await;
    for i in 0..10 {
        gw.clock.advance(Duration::from_secs(5));
        assert_eq!(send(&gw, &format!("+86138001380{i:02}"), "123456").await.status, 200, "send {i}");
    }
    assert_eq!(mock.seen_action("SendSms").len(), 10);
    // At 70 s the windows (1m) of the first two sends have passed: fewer than min_sends (3) are judged.
    gw.clock.advance(Duration::from_secs(20));
    assert_eq!(send(&gw, "+8613800138098", "123456").await.status, 200);
    // At 75 s the third one's has too: three judged, none verified, and the prefix trips.
    gw.clock.advance(Duration::from_secs(5));
    send(&gw, "+8613800138099", "123456").await.assert_error(403, "suspected_pumping");
}

#[tokio::test]
async fn test_numbers_never_count() {
    let extra = format!("    test_numbers: {{ \"+8613800000000\": \"123456\" }}\n{PROTECTION}");
    let (mock, gw) = setup(&extra, "").await;
    for _ in 0..5 {
        let a = send(&gw, "+8613800000000", "123456").await;
        assert_eq!(a.json["test_number"], true);
    }
    gw.clock.advance(Duration::from_secs(120));
    assert_eq!(send(&gw, "+8613800138000", "123456").await.status, 200);
    assert_eq!(mock.seen_action("SendSms").len(), 1);
}

#[tokio::test]
async fn a_shadow_rule_counts_and_never_blocks() {
    let shadow = PROTECTION.replace("block_for: 30m }", "block_for: 30m, shadow: true }");
    let (mock, gw) = setup(&shadow, "").await;
    for i in 0..3 {
        assert_eq!(send(&gw, &format!("+861380013800{i}"), "123456").await.status, 200);
    }
    gw.clock.advance(Duration::from_secs(61));
    for i in 3..6 {
        assert_eq!(send(&gw, &format!("+861380013800{i}"), "123456").await.status, 200);
    }
    assert_eq!(mock.seen_action("SendSms").len(), 6);
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_protection_trips_total{tenant="acme",rule="prefix",shadow="true"}"#), 1.0, "{m}");
    assert_eq!(sample(&m, r#"smsgate_protection_blocked_total{tenant="acme",rule="prefix",shadow="true"}"#), 3.0);
}

#[tokio::test]
async fn the_admin_api_lists_and_lifts_a_block() {
    let (_mock, gw) = setup(PROTECTION, "").await;
    for i in 0..3 {
        assert_eq!(send(&gw, &format!("+861380013800{i}"), "123456").await.status, 200);
    }
    gw.clock.advance(Duration::from_secs(61));
    send(&gw, "+8613800138009", "123456").await.assert_error(403, "suspected_pumping");

    let list = |token: Option<&'static str>| {
        let mut request = gw.http.get(gw.url("/admin/v1/tenants/acme/protection"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let listed = Answer::from(list(Some(ADMIN_TOKEN)).await.unwrap()).await;
    assert_eq!(listed.status, 200, "{:#}", listed.json);
    let until = (START_UNIX + 61) * 1000 + 30 * 60 * 1000;
    assert_eq!(
        listed.json["blocks"],
        serde_json::json!([{"rule": "prefix", "key": "+861380", "shadow": false, "until_unix_ms": until, "strikes": 1, "exemptions_closed": []}])
    );
    assert_eq!(listed.json["rules"][0]["key"], serde_json::json!({"phone_prefix": 6}));
    // A tenant's token is not an admin token.
    Answer::from(list(Some(TOKEN)).await.unwrap()).await.assert_error(401, "unauthorized");
    Answer::from(list(None).await.unwrap()).await.assert_error(401, "unauthorized");

    let delete = |path: &str| gw.http.delete(gw.url(path)).bearer_auth(ADMIN_TOKEN).send();
    let bad_key = Answer::from(delete("/admin/v1/tenants/acme/protection/prefix/abc").await.unwrap()).await;
    bad_key.assert_error(400, "invalid_request");
    let unknown_rule = Answer::from(delete("/admin/v1/tenants/acme/protection/nope/%2B861380").await.unwrap()).await;
    unknown_rule.assert_error(404, "not_found");
    let unknown_tenant =
        Answer::from(delete("/admin/v1/tenants/zeta/protection/prefix/%2B861380").await.unwrap()).await;
    unknown_tenant.assert_error(404, "not_found");
    let lifted = delete("/admin/v1/tenants/acme/protection/prefix/%2B861380").await.unwrap();
    assert_eq!(lifted.status(), 204);
    assert_eq!(send(&gw, "+8613800138009", "123456").await.status, 200, "lifted, and the key starts afresh");
    let again = Answer::from(delete("/admin/v1/tenants/acme/protection/prefix/%2B861380").await.unwrap()).await;
    again.assert_error(404, "not_found");
    let wrong_method = gw.http.post(gw.url("/admin/v1/tenants/acme/protection")).bearer_auth(ADMIN_TOKEN).send();
    assert_eq!(wrong_method.await.unwrap().status(), 405);
}

/// The relay's webhooks, received by the reference Standard Webhooks library: acme's verify under acme's
/// secret; beta's, signed with another secret than the receiver's, are refused by it (the check is real).
#[tokio::test]
async fn relayed_webhooks_verify_with_the_standardwebhooks_package() {
    let Some(python) = interpreter() else { return };
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut receiver = PythonProcess::spawn(&python, "webhook_receiver.py", &[secret]);
    let port = receiver.next_json()["port"].as_u64().unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks/smsgate");
    let mock = MockTencent::start(SECRET_KEY).await;
    let acme = format!("    webhook: {{ url: \"{url}\", secret: {secret} }}");
    let beta = format!("    webhook: {{ url: \"{url}\", secret: whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA }}");
    let config = compile(&yaml(&mock.endpoint(), &acme, "", &beta));
    // The receiver checks webhook-timestamp against its own clock: start the injected clock at now.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let gw = TestGateway::start_at(config, now).await;

    assert_eq!(send(&gw, "+8613800138000", "123456").await.status, 200);
    assert_eq!(verified(&gw, r#"{"phone":"+8613800138000"}"#).await.0, 204);
    let converted = receiver.next_json();
    assert_eq!(converted["verified"], true, "{converted}");
    let payload = &converted["payload"];
    assert_eq!(payload["type"], "sms.converted");
    assert_eq!(payload["data"]["tenant"], "acme");
    assert_eq!(payload["data"]["serial_no"], "2019:0");
    assert_eq!(payload["data"]["phone"], "+86138****8000");
    assert!(converted["id"].as_str().unwrap().starts_with("msg_"));

    let report = r#"[{"nationcode":"86","mobile":"13800138000","report_status":"SUCCESS","errmsg":"DELIVRD","description":"ok","sid":"2019:0","user_receive_time":"2024-01-02 11:04:09"}]"#;
    assert_eq!(post_raw(&gw, &format!("/v1/tencent/status/{STATUS_SECRET}"), report, &[]).await.0, 200);
    let delivered = receiver.next_json();
    assert_eq!(delivered["verified"], true, "{delivered}");
    assert_eq!(delivered["payload"]["type"], "sms.delivered");
    assert_eq!(delivered["payload"]["data"]["errmsg"], "DELIVRD");

    // Beta signs with a key the receiver does not hold: refused there (401, not retried), counted failed.
    let beta_send = gw.post_as("/v1/sms/send", &native("+8613900139000", "SignIn", "654321"), Some(OTHER_TOKEN)).await;
    assert_eq!(beta_send.status, 200);
    let beta_verified = post_raw(
        &gw,
        "/v1/sms/verified",
        r#"{"phone":"+8613900139000"}"#,
        &[("authorization", &format!("Bearer {OTHER_TOKEN}"))],
    )
    .await;
    assert_eq!(beta_verified.0, 204);
    let refused = receiver.next_json();
    assert_eq!(refused["verified"], false, "{refused}");
    wait_for_sample(&gw, r#"smsgate_webhook_deliveries_total{tenant="beta",result="failed"}"#, 1.0).await;
    let m = wait_for_sample(&gw, r#"smsgate_webhook_deliveries_total{tenant="acme",result="ok"}"#, 2.0).await;
    assert_eq!(sample(&m, r#"smsgate_webhook_deliveries_total{tenant="acme",result="retried"}"#), 0.0);
}
