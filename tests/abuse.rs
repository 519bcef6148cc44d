//! Abuse defenses through the real path: de-duplication (sequential and concurrent, automatic and by
//! Idempotency-Key), country and prefix rules, and spend caps reached at exactly the configured count.

use crate::common::mock::{MockTencent, Reply};
use crate::common::*;
use std::time::Duration;

async fn gateway(mock: &MockTencent, limits: &str, tenant_extra: &str) -> TestGateway {
    // Tenant-level keys go after `limits:`; config_yaml's third argument is for the tencent block.
    let yaml = config_yaml(&mock.endpoint(), &format!("{limits}\n{tenant_extra}"), "");
    TestGateway::start(compile(&yaml)).await
}

#[tokio::test]
async fn a_repeated_send_gets_the_first_answer_without_a_second_sms() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, PHONE_LIMITS, "").await;
    let body = native("+8613800138000", "SignIn", "123456");
    let first = gw.post("/v1/sms/send", &body).await;
    assert_eq!(first.status, 200);
    // Written another way, the same number, usage and code is the same send; the burst limit is not touched.
    let again = gw.post("/v1/logto/sms", r#"{"to":"8613800138000","type":"SignIn","payload":{"code":"123456"}}"#).await;
    assert_eq!(again.status, 200, "{:#}", again.json);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["upstream"], first.json["upstream"]);
    assert_eq!(mock.seen().len(), 1);
    // A new code is a new send (and here, over the burst limit).
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "654321")).await.assert_error(429, "rate_limited");
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_wait_for_the_first_send() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.reply(Reply::Slow(Duration::from_millis(300)));
    let gw = std::sync::Arc::new(gateway(&mock, PHONE_LIMITS, "").await);
    let body = native("+8613800138000", "SignIn", "123456");
    let answers: Vec<Answer> = futures_join((0..6).map(|_| {
        let gw = gw.clone();
        let body = body.clone();
        tokio::spawn(async move { gw.post("/v1/sms/send", &body).await })
    }))
    .await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:#?}");
    let serials: std::collections::HashSet<_> =
        answers.iter().map(|a| a.json["upstream"]["serial_no"].to_string()).collect();
    assert_eq!(serials.len(), 1, "one answer for all");
    assert_eq!(answers.iter().filter(|a| a.header("idempotent-replayed").is_some()).count(), 5);
    assert_eq!(mock.seen().len(), 1, "one SMS");
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn idempotency_keys_and_failed_first_sends() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "      []", "").await;
    let post = |code: &'static str, key: &'static str| {
        gw.http
            .post(gw.url("/v1/sms/send"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(native("+8613800138000", "SignIn", code))
            .send()
    };
    assert_eq!(post("111111", "order-1").await.unwrap().status(), 200);
    let again = Answer::from(post("222222", "order-1").await.unwrap()).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (200, Some("true")));
    assert_eq!(mock.seen().len(), 1);

    // A first send that failed (nothing sent) is not kept: the retry goes out.
    mock.reply(Reply::Envelope(200, "FailedOperation.TemplateIncorrectOrUnapproved"));
    gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "333333")).await.assert_error(502, "upstream_rejected");
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "333333")).await.status, 200);
    assert_eq!(mock.seen().len(), 3);
    // One that may have gone out is kept: the retry is answered from it, never sent again.
    mock.reply(Reply::Envelope(200, "InternalError"));
    let first = gw.post("/v1/sms/send", &native("+8613800138002", "SignIn", "555555")).await;
    assert_eq!(first.json["status"], "maybe_sent", "{:#}", first.json);
    let again = gw.post("/v1/sms/send", &native("+8613800138002", "SignIn", "555555")).await;
    assert_eq!(
        (again.json["status"].as_str(), again.header("idempotent-replayed")),
        (Some("maybe_sent"), Some("true"))
    );
    assert_eq!(mock.seen().len(), 4);

    let bad = Answer::from(post("444444", "").await.unwrap()).await;
    bad.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn dedupe_can_be_turned_off() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "      []", "    dedupe_window: 0s").await;
    for _ in 0..2 {
        assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await.status, 200);
    }
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn country_and_prefix_rules_refuse_before_anything_is_spent() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let tenant = "    countries: { deny: [US, KP] }\n    blocked_prefixes: [\"+86170\", \"+44 9\"]";
    let yaml = config_yaml(&mock.endpoint(), &format!("{PHONE_LIMITS}\n{tenant}"), "");
    let errors = smsgate::Config::from_yaml(&yaml, std::path::Path::new("t.yaml"), &env()).unwrap_err().to_string();
    assert!(errors.contains("tenants.acme.blocked_prefixes[1]: expected an E.164 prefix"), "{errors}");

    let gw =
        gateway(&mock, PHONE_LIMITS, "    countries: { deny: [US, KP] }\n    blocked_prefixes: [\"+86170\"]").await;
    gw.post("/v1/sms/send", &native("+14155550100", "SignIn", "1")).await.assert_error(403, "country_blocked");
    gw.post("/v1/sms/send", &native("+8617012345678", "SignIn", "1")).await.assert_error(403, "country_blocked");
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    assert_eq!(mock.seen().len(), 1);
    let metrics = gw.gateway.metrics().render();
    assert!(
        metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="country_blocked"} 2"#),
        "{metrics}"
    );

    let gw = gateway(&mock, PHONE_LIMITS, "    countries: { allow: [CN] }").await;
    gw.post("/v1/sms/send", &native("+14155550100", "SignIn", "1")).await.assert_error(403, "country_blocked");
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "1")).await.status, 200);
}

#[tokio::test]
async fn spend_caps_refuse_at_exactly_the_configured_count() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "      []", "    spend_caps: { daily: 3, countries: { US: { daily: 1 } } }").await;
    for i in 0..3 {
        let a = gw.post("/v1/sms/send", &native(&format!("+86138001380{i:02}"), "SignIn", "1")).await;
        assert_eq!(a.status, 200, "{:#}", a.json);
    }
    let a = gw.post("/v1/sms/send", &native("+8613800138099", "SignIn", "1")).await;
    a.assert_error(429, "spend_cap_reached");
    // START_UNIX is 03:04:05 UTC = 11:04:05 in China: the day resets in 12:55:55.
    assert_eq!(a.header("retry-after"), Some("46555"));
    assert_eq!(mock.seen().len(), 3);

    // A send that certainly went nowhere gives its message back.
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "      []", "    spend_caps: { daily: 1 }").await;
    mock.reply(Reply::Envelope(200, "FailedOperation.TemplateIncorrectOrUnapproved"));
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.assert_error(502, "upstream_rejected");
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "2")).await.status, 200);
    gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "3")).await.assert_error(429, "spend_cap_reached");

    // Country caps apply on top of the tenant's.
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "      []", "    spend_caps: { daily: 10, countries: { US: { daily: 1 } } }").await;
    assert_eq!(gw.post("/v1/sms/send", &native("+14155550100", "SignIn", "1")).await.status, 200);
    gw.post("/v1/sms/send", &native("+14155550101", "SignIn", "1")).await.assert_error(429, "spend_cap_reached");
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
}

/// Premium-rate (`+1900…`), toll-free, satellite (`+8816…`) and fixed-line numbers all went upstream. A tenant
/// sends to the number types it allows (by default mobiles, and numbers that may be mobiles such as US ones);
/// the others get `403 number_type_blocked` before anything is consumed, by both routes.
#[tokio::test]
async fn regression_numbers_that_are_not_mobiles_are_not_sent() {
    let mock = MockTencent::start(SECRET_KEY).await;
    // One send per hour for the whole tenant: a refusal that consumed quota would show as a 429 below.
    let gw = gateway(&mock, "      - { name: all, key: tenant, limit: 1, per: 1h }", "    dedupe_window: 0s").await;
    for (number, kind) in [
        ("+19005550100", "premium_rate"),
        ("+18005550100", "toll_free"),
        ("+8816123456789", "satellite"),
        ("+870773111632", "satellite"),
        ("+861082123456", "fixed_line"),
        ("+442079460000", "fixed_line"),
        ("+449098790000", "premium_rate"),
        ("+443003030000", "uan"),
        ("+88216123456", "voip"),
    ] {
        let native_answer = gw.post("/v1/sms/send", &native(number, "SignIn", "1")).await;
        native_answer.assert_error(403, "number_type_blocked");
        assert_eq!(native_answer.json["error"]["message"], "This number cannot receive verification codes.");
        let body = serde_json::json!({"to": &number[1..], "type": "SignIn", "payload": {"code": "1"}});
        gw.post("/v1/logto/sms", &body.to_string()).await.assert_error(403, "number_type_blocked");
        let phone = smsgate::phone::Phone::from_e164(number).unwrap();
        assert_eq!(phone.number_type().as_str(), kind, "{number}");
    }
    assert!(mock.seen().is_empty(), "none of them reached Tencent");
    // The shipped examples' numbers: a mainland mobile, and a US number (fixed line or mobile).
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    let gw2 = gateway(&mock, "      []", "").await;
    let us = gw2.post("/v1/logto/sms", r#"{"to":"14155550100","type":"Register","payload":{"code":"123456"}}"#).await;
    assert_eq!(us.status, 200, "{:#}", us.json);
    assert_eq!(mock.seen().len(), 2);
    let metrics = gw.gateway.metrics().render();
    assert!(
        metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="number_type_blocked"} 18"#),
        "{metrics}"
    );

    // A tenant that also sends to fixed lines (a voice-capable SMS route) says so.
    let gw = gateway(&mock, "      []", "    number_types: [mobile, fixed_line_or_mobile, fixed_line]").await;
    assert_eq!(gw.post("/v1/sms/send", &native("+861082123456", "SignIn", "1")).await.status, 200);
    gw.post("/v1/sms/send", &native("+19005550100", "SignIn", "1")).await.assert_error(403, "number_type_blocked");
}

/// The type is judged on the number the send goes to: a hook that rewrites a mobile into a premium-rate number
/// is refused like a caller who sent that number.
#[tokio::test]
async fn a_hook_cannot_route_a_send_to_a_premium_rate_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.lua"), r#"function on_send(req) req.phone = "+19005550100" end"#).unwrap();
    let mock = MockTencent::start(SECRET_KEY).await;
    let yaml = config_yaml(&mock.endpoint(), &format!("{PHONE_LIMITS}\n    script: hook.lua"), "");
    let config = smsgate::Config::from_yaml(&yaml, &dir.path().join("gateway.yaml"), &env()).unwrap();
    let gw = TestGateway::start(config).await;
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.assert_error(403, "number_type_blocked");
    assert!(mock.seen().is_empty());
}

/// Config: the key's values are the metadata's type names; a test number of a refused type could never work.
#[test]
fn number_types_are_checked_with_the_config() {
    let errors = |tenant_extra: &str| {
        let yaml = config_yaml("http://127.0.0.1:9", &format!("      []\n{tenant_extra}"), "");
        smsgate::Config::from_yaml(&yaml, std::path::Path::new("t.yaml"), &env()).err().map(|e| e.to_string())
    };
    let unknown = errors("    number_types: [mobile, landline]").unwrap();
    assert!(
        unknown.contains("tenants.acme.number_types[1]: expected a number type: mobile, fixed_line_or_mobile"),
        "{unknown}"
    );
    assert!(errors("    number_types: []").unwrap().contains("list at least one number type"));
    let test_number = errors("    test_numbers: { \"+861082123456\": \"123456\" }").unwrap();
    assert!(test_number.contains("this is a fixed_line number, which number_types refuses"), "{test_number}");
    assert_eq!(errors("    number_types: [fixed_line, mobile]\n    test_numbers: { \"+861082123456\": \"1\" }"), None);
}
