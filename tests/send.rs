//! The send pipeline end to end: the gateway on 127.0.0.1:0 against the mock Tencent, through real sockets.

use crate::common::mock::{MockTencent, Reply};
use crate::common::*;
use std::time::Duration;

async fn setup(limits: &str) -> (MockTencent, TestGateway) {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), limits, ""))).await;
    (mock, gw)
}

fn number(i: u32) -> String {
    format!("+861380013{i:04}")
}

#[tokio::test]
async fn native_send_reaches_tencent_signed_with_the_right_fields() {
    let (mock, gw) = setup(PHONE_LIMITS).await;
    let a = gw.post("/v1/sms/send", &native("13800138000", "SignIn", "123456")).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    assert_eq!(a.json["status"], "sent");
    assert_eq!(a.json["tenant"], "acme");
    assert_eq!(a.json["template_id"], "1110");
    assert_eq!(a.json["upstream"]["serial_no"], "2019:0");
    assert_eq!(a.json["upstream"]["fee"], 1);
    assert_eq!(a.json["upstream"]["request_id"], "mock-req");
    assert_eq!(a.json["request_id"], a.header("x-request-id").unwrap());
    assert!(a.header("ratelimit-policy").unwrap().contains(r#""burst";q=1;w=30"#));

    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(s.signature_valid, "TC3 signature verifies independently: {:?}", s.headers);
    assert_eq!(s.body["PhoneNumberSet"], serde_json::json!(["+8613800138000"]));
    assert_eq!(s.body["TemplateId"], "1110");
    assert_eq!(s.body["SignName"], "腾讯云");
    assert_eq!(s.body["SmsSdkAppId"], "1400006666");
    assert_eq!(s.body["TemplateParamSet"], serde_json::json!(["123456"]));
    assert_eq!(s.header("x-tc-action"), "SendSms");
    assert_eq!(s.header("x-tc-version"), "2021-01-11");
    assert_eq!(s.header("x-tc-region"), "ap-guangzhou");
    assert_eq!(s.header("x-tc-timestamp"), START_UNIX.to_string());
    assert_eq!(s.header("host"), mock.addr.to_string());
    assert!(s.header("authorization").contains(&format!("Credential={SECRET_ID}/2024-01-02/sms/tc3_request")));
}

#[tokio::test]
async fn logto_send_reads_digits_only_numbers_and_sends_only_the_code() {
    let (mock, gw) = setup(PHONE_LIMITS).await;
    let body = r#"{"to":"8613800138000","type":"SignIn","payload":{"code":"654321","locale":"zh-CN","uiLocales":"zh-CN en"},"ip":"203.0.113.7"}"#;
    let a = gw.post("/v1/logto/sms", body).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    // Logto's HTTP connector: a usage type without its own template falls back to Generic.
    let a = gw.post("/v1/logto/sms", r#"{"to":"14155550100","type":"Register","payload":{"code":"111222"}}"#).await;
    assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some("1113")), "{:#}", a.json);

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.signature_valid));
    assert_eq!(seen[0].body["PhoneNumberSet"], serde_json::json!(["+8613800138000"]));
    assert_eq!(seen[0].body["TemplateParamSet"], serde_json::json!(["654321"]));
    assert_eq!(seen[1].body["PhoneNumberSet"], serde_json::json!(["+14155550100"]));
    assert_eq!(seen[1].body["TemplateId"], "1113");
}

#[tokio::test]
async fn the_token_picks_the_tenant() {
    let (mock, gw) = setup(PHONE_LIMITS).await;
    let a = gw.post_as("/v1/sms/send", &native("+8613800138000", "SignIn", "1234"), Some(OTHER_TOKEN)).await;
    assert_eq!((a.status, a.json["tenant"].as_str()), (200, Some("beta")), "{:#}", a.json);
    let s = &mock.seen()[0];
    assert_eq!((s.body["TemplateId"].as_str(), s.body["SmsSdkAppId"].as_str()), (Some("2220"), Some("1400007777")));
    assert_eq!(s.header("x-tc-region"), "ap-beijing");
    assert!(s.signature_valid);
}

#[tokio::test]
async fn a_second_send_inside_the_window_is_429_and_never_reaches_tencent() {
    let (mock, gw) = setup(PHONE_LIMITS).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    // The same number written another way is the same number.
    let a = gw.post("/v1/logto/sms", r#"{"to":"8613800138000","type":"SignIn","payload":{"code":"2"}}"#).await;
    a.assert_error(429, "rate_limited");
    assert_eq!(a.header("retry-after"), Some("30"));
    assert_eq!(a.header("ratelimit"), Some(r#""burst";r=0;t=30"#));
    assert_eq!(mock.seen().len(), 1);

    gw.clock.advance(Duration::from_secs(29));
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "3")).await.assert_error(429, "rate_limited");
    gw.clock.advance(Duration::from_secs(1));
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "4")).await.status, 200);
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn a_denied_request_consumes_no_quota_of_any_rule() {
    let limits = "      - { name: burst, key: phone, limit: 1, per: 30s }\n      - { name: tenant, key: tenant, limit: 2, per: 1h }";
    let (mock, gw) = setup(limits).await;
    assert_eq!(gw.post("/v1/sms/send", &native(&number(1), "SignIn", "1")).await.status, 200);
    for i in 0..5 {
        let code = format!("2{i}");
        gw.post("/v1/sms/send", &native(&number(1), "SignIn", &code)).await.assert_error(429, "rate_limited");
    }
    // The five denials did not touch the tenant rule: it still has room for one more.
    assert_eq!(gw.post("/v1/sms/send", &native(&number(2), "SignIn", "1")).await.status, 200);
    let a = gw.post("/v1/sms/send", &native(&number(3), "SignIn", "1")).await;
    a.assert_error(429, "rate_limited");
    assert_eq!(a.header("retry-after"), Some("1800"));
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn bad_input_gets_its_documented_answer_and_changes_nothing() {
    let (mock, gw) = setup(PHONE_LIMITS).await;
    let phone = "+8613800138000";
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/sms/send", "{not json".into(), 400, "invalid_request"),
        ("/v1/sms/send", r#"{"usage":"SignIn","code":"1"}"#.into(), 400, "invalid_request"),
        (
            "/v1/sms/send",
            format!(r#"{{"phone":{},"usage":"SignIn","code":"1"}}"#, 8613800138000u64),
            400,
            "invalid_request",
        ),
        ("/v1/sms/send", format!(r#"{{"phone":"{phone}","usage":"SignIn","code":["1"]}}"#), 400, "invalid_request"),
        (
            "/v1/sms/send",
            format!(r#"{{"phone":"{phone}","usage":"SignIn","code":"1","extra":true}}"#),
            400,
            "invalid_request",
        ),
        ("/v1/logto/sms", r#"{"to":"8613800138000","type":"SignIn"}"#.into(), 400, "invalid_request"),
        ("/v1/sms/send", native("not a number", "SignIn", "1"), 400, "invalid_phone"),
        ("/v1/sms/send", native("+86138", "SignIn", "1"), 400, "invalid_phone"),
        ("/v1/logto/sms", r#"{"to":"+86 138","type":"SignIn","payload":{"code":"1"}}"#.into(), 400, "invalid_phone"),
        (
            "/v1/sms/send",
            format!(r#"{{"phone":"{phone}","usage":"SignIn","code":"{}"}}"#, "9".repeat(2000)),
            413,
            "payload_too_large",
        ),
    ];
    for (path, body, status, code) in &cases {
        gw.post(path, body).await.assert_error(*status, code);
    }

    let body = native(phone, "SignIn", "1");
    gw.post_as("/v1/sms/send", &body, None).await.assert_error(401, "unauthorized");
    gw.post_as("/v1/sms/send", &body, Some("not-a-known-token-at-all")).await.assert_error(401, "unauthorized");
    let a = gw
        .http
        .post(gw.url("/v1/sms/send"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    Answer::from(a).await.assert_error(415, "unsupported_media_type");
    let a = gw.http.post(gw.url("/v1/sms/send")).bearer_auth(TOKEN).body(body.clone()).send().await.unwrap();
    Answer::from(a).await.assert_error(415, "unsupported_media_type");
    // A body without Content-Length (chunked) is cut off at the limit too.
    let chunks: Vec<Result<String, std::io::Error>> = (0..40).map(|_| Ok("x".repeat(100))).collect();
    let stream = reqwest::Body::wrap_stream(futures_stream(chunks));
    let a = gw
        .http
        .post(gw.url("/v1/sms/send"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(stream)
        .send()
        .await
        .unwrap();
    Answer::from(a).await.assert_error(413, "payload_too_large");
    let a = gw.http.get(gw.url("/v1/sms/send")).send().await.unwrap();
    let a = Answer::from(a).await;
    a.assert_error(405, "method_not_allowed");
    assert_eq!(a.header("allow"), Some("POST"));
    Answer::from(gw.http.get(gw.url("/nope")).send().await.unwrap()).await.assert_error(404, "not_found");

    // beta has no Generic template: an unknown usage type cannot be sent, and uses none of beta's quota of one.
    let a = gw.post_as("/v1/sms/send", &native(phone, "Register", "1"), Some(OTHER_TOKEN)).await;
    a.assert_error(422, "no_template");
    assert_eq!(gw.post_as("/v1/sms/send", &native(phone, "SignIn", "1"), Some(OTHER_TOKEN)).await.status, 200);

    assert_eq!(mock.seen().len(), 1, "only the one good request reached Tencent");
    // None of the bad requests used acme's quota for the number.
    assert_eq!(gw.post("/v1/sms/send", &native(phone, "SignIn", "1")).await.status, 200);
}

fn futures_stream<T>(items: Vec<T>) -> impl futures_core::Stream<Item = T> {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    impl<T> Unpin for Iter<T> {}
    Iter(items.into_iter())
}

#[tokio::test]
async fn each_upstream_failure_class_maps_to_its_documented_answer() {
    // One attempt per send: this test is about classification; retries are in tests/reliability.rs.
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), "      []", "      max_attempts: 1"))).await;
    let cases: Vec<(Reply, u16, &str, Option<&str>)> = vec![
        (
            Reply::Envelope(200, "AuthFailure.SignatureFailure"),
            502,
            "upstream_rejected",
            Some("AuthFailure.SignatureFailure"),
        ),
        (
            Reply::Envelope(200, "FailedOperation.TemplateIncorrectOrUnapproved"),
            502,
            "upstream_rejected",
            Some("FailedOperation.TemplateIncorrectOrUnapproved"),
        ),
        // Tencent had the request: it may have gone out (answered as such, never as a failure).
        (Reply::Envelope(500, "InternalError"), 200, "maybe_sent", None),
        (Reply::Envelope(200, "RequestLimitExceeded"), 503, "upstream_unavailable", Some("RequestLimitExceeded")),
        (
            Reply::PerNumber("LimitExceeded.PhoneNumberThirtySecondLimit"),
            429,
            "upstream_rate_limited",
            Some("LimitExceeded.PhoneNumberThirtySecondLimit"),
        ),
        (
            Reply::PerNumber("InvalidParameterValue.IncorrectPhoneNumber"),
            400,
            "invalid_phone",
            Some("InvalidParameterValue.IncorrectPhoneNumber"),
        ),
        (
            Reply::PerNumber("FailedOperation.ContainSensitiveWord"),
            502,
            "upstream_rejected",
            Some("FailedOperation.ContainSensitiveWord"),
        ),
        (Reply::Raw(502, "text/html", "<html><body>502 Bad Gateway</body></html>"), 200, "maybe_sent", None),
        (Reply::Raw(200, "application/json", "{\"unexpected\":true}"), 200, "maybe_sent", None),
        (Reply::Slow(Duration::from_secs(5)), 200, "maybe_sent", None),
        (Reply::Drop, 200, "maybe_sent", None),
    ];
    for (i, (reply, status, code, upstream)) in cases.into_iter().enumerate() {
        mock.reply(reply.clone());
        let a = gw.post("/v1/sms/send", &native(&number(i as u32), "SignIn", "1")).await;
        if status == 200 {
            assert_eq!(a.json["status"], code, "{reply:?}: {:#}", a.json);
            continue;
        }
        a.assert_error(status, code);
        assert_eq!(a.json["error"]["upstream"]["code"].as_str(), upstream, "{reply:?}");
        if status == 429 {
            assert_eq!(a.header("retry-after"), Some("30"));
        }
    }
    assert_eq!(mock.seen().len(), 11, "one request each");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_upstream_unavailable() {
    // Bind then drop a listener: nothing listens on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = TestGateway::start(compile(&config_yaml(&format!("http://127.0.0.1:{port}"), "      []", ""))).await;
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.assert_error(503, "upstream_unavailable");
}

#[tokio::test]
async fn dry_run_signs_but_never_transmits() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, "      dry_run: true"))).await;
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    assert_eq!((a.status, a.json["status"].as_str()), (200, Some("dry_run")), "{:#}", a.json);
    assert!(a.json.get("upstream").is_none());
    // Dry-run sends count against limits like real ones.
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123457")).await.assert_error(429, "rate_limited");
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn operational_routes_and_request_ids() {
    let (_mock, gw) = setup(PHONE_LIMITS).await;
    let health = gw.http.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(gw.http.get(gw.url("/readyz")).send().await.unwrap().status(), 200);

    let a = gw
        .http
        .post(gw.url("/v1/sms/send"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("x-request-id", "trace-abc-123")
        .body(native("+8613800138000", "SignIn", "1"))
        .send()
        .await
        .unwrap();
    let a = Answer::from(a).await;
    assert_eq!(
        (a.header("x-request-id"), a.json["request_id"].as_str()),
        (Some("trace-abc-123"), Some("trace-abc-123"))
    );
    gw.post("/v1/sms/send", "{").await.assert_error(400, "invalid_request");

    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="sent"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="",code="invalid_request"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"smsgate_upstream_results_total{tenant="acme",code="Ok",provider="tencent"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("13800138000"));
}

#[tokio::test]
async fn the_mock_refuses_a_signature_made_with_another_key() {
    // Guards the harness itself: signature_valid is a real check, not a constant.
    let mock = MockTencent::start("a-different-secret-key").await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), "      []", ""))).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    assert!(!mock.seen()[0].signature_valid);
}
