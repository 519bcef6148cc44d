//! Rate limits through HTTP on the memory backend with a fake clock: every rule key, the usage filter,
//! shadow rules, the headers, test numbers, and limiter state across a config reload.

mod common;

use common::mock::MockTencent;
use common::*;
use std::time::Duration;

/// These tests repeat sends on purpose: de-duplication is off so every request meets the limits.
fn without_dedupe(limits: &str) -> String {
    format!("{limits}\n    dedupe_window: 0s")
}

async fn setup(limits: &str) -> (MockTencent, TestGateway) {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), &without_dedupe(limits), ""))).await;
    (mock, gw)
}

fn logto(to: &str, usage: &str, ip: Option<&str>) -> String {
    let mut body = serde_json::json!({"to": to, "type": usage, "payload": {"code": "123456"}});
    if let Some(ip) = ip {
        body["ip"] = ip.into();
    }
    body.to_string()
}

#[tokio::test]
async fn ip_rules_count_the_callers_address_and_skip_requests_without_one() {
    let (_mock, gw) = setup("      - { name: per-ip, key: ip, limit: 2, per: 1h }").await;
    for (i, to) in ["8613800138001", "8613800138002"].iter().enumerate() {
        let a = gw.post("/v1/logto/sms", &logto(to, "SignIn", Some("203.0.113.7"))).await;
        assert_eq!(a.status, 200, "request {i}: {:#}", a.json);
    }
    let a = gw.post("/v1/logto/sms", &logto("8613800138003", "SignIn", Some("203.0.113.7"))).await;
    a.assert_error(429, "rate_limited");
    assert_eq!(a.header("retry-after"), Some("1800"));
    // Another address, an IPv4-mapped form of another address, and no address at all are not limited by it.
    for ip in [Some("203.0.113.8"), Some("::ffff:198.51.100.1"), None] {
        let a = gw.post("/v1/logto/sms", &logto("8613800138004", "SignIn", ip)).await;
        assert_eq!(a.status, 200, "{ip:?}: {:#}", a.json);
    }
    // IPv6 counts by /64: rotating the interface id does not escape the rule.
    for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"].iter().enumerate() {
        let a = gw.post("/v1/logto/sms", &logto("8613800138005", "SignIn", Some(ip))).await;
        assert_eq!(a.status == 200, i < 2, "{ip}: {:#}", a.json);
    }
}

/// `key: { phone_prefix: N }` (the documented form) failed to parse: serde_yaml wanted `!phone_prefix N`.
#[tokio::test]
async fn regression_phone_prefix_map_form() {
    let limits = "      - { name: cn, key: country, limit: 2, per: 1h }\n      - { name: block, key: { phone_prefix: 9 }, limit: 1, per: 1h }";
    let (_mock, gw) = setup(limits).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    // Same first 9 digits (861380013): the prefix rule denies.
    let a = gw.post("/v1/sms/send", &native("+8613800139999", "SignIn", "1")).await;
    a.assert_error(429, "rate_limited");
    assert!(a.json["error"]["message"].as_str().unwrap().contains("Try again in 1 hour."), "{:#}", a.json);
    assert_eq!(gw.post("/v1/sms/send", &native("+8613900138000", "SignIn", "1")).await.status, 200);
    // The third CN number is over the country rule; a US number is not.
    gw.post("/v1/sms/send", &native("+8615000138000", "SignIn", "1")).await.assert_error(429, "rate_limited");
    assert_eq!(gw.post("/v1/sms/send", &native("+14155550100", "SignIn", "1")).await.status, 200);
}

#[tokio::test]
async fn usage_filters_and_shadow_rules() {
    let limits = "      - { name: signup, key: tenant, limit: 1, per: 1h, usage: [Register] }\n      - { name: watch, key: phone, limit: 1, per: 1h, shadow: true }";
    let (mock, gw) = setup(limits).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "Register", "1")).await.status, 200);
    gw.post("/v1/sms/send", &native("+8613800138001", "Register", "1")).await.assert_error(429, "rate_limited");
    // SignIn is outside the signup rule; the shadow rule would deny the repeat but only reports it.
    for _ in 0..3 {
        let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await;
        assert_eq!(a.status, 200, "{:#}", a.json);
        assert_eq!(a.header("ratelimit-policy"), None, "shadow rules are not advertised");
    }
    assert_eq!(mock.seen().len(), 4);
    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"smsgate_rate_limit_denials_total{tenant="acme",rule="watch",shadow="true"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"smsgate_limiter_mode{mode="memory"} 1"#), "{metrics}");
}

#[tokio::test]
async fn headers_on_allowed_and_denied_answers() {
    let limits = "      - { name: burst, key: phone, limit: 1, per: 30s }\n      - { name: hourly, key: phone, limit: 5, per: 1h }";
    let (_mock, gw) = setup(limits).await;
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await;
    assert_eq!(a.header("ratelimit-policy"), Some(r#""burst";q=1;w=30, "hourly";q=5;w=3600"#));
    assert_eq!(a.header("ratelimit"), Some(r#""burst";r=0;t=30"#));
    assert_eq!(a.header("retry-after"), None);
    gw.clock.advance(Duration::from_millis(29_500));
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await;
    a.assert_error(429, "rate_limited");
    assert_eq!(a.header("retry-after"), Some("1"), "half a second left rounds up, never 0");
    assert_eq!(a.header("ratelimit"), Some(r#""burst";r=0;t=1"#));
}

#[tokio::test]
async fn test_numbers_are_answered_as_sent_never_sent_and_never_counted() {
    let limits = format!("{PHONE_LIMITS}\n    test_numbers: {{\"+8613800000000\": \"123456\"}}");
    let (mock, gw) = setup(&limits).await;
    for code in ["123456", "999999", "123456"] {
        let a = gw.post("/v1/sms/send", &native("+8613800000000", "SignIn", code)).await;
        assert_eq!((a.status, a.json["status"].as_str()), (200, Some("sent")), "{:#}", a.json);
        assert_eq!(a.json["test_number"], true);
        assert!(a.json.get("upstream").is_none());
        assert_eq!(a.header("ratelimit"), None);
    }
    let a = gw.post("/v1/logto/sms", &logto("8613800000000", "SignIn", None)).await;
    assert_eq!(a.json["test_number"], true, "{:#}", a.json);
    assert!(mock.seen().is_empty(), "a test number never reaches Tencent");
    // Other numbers are sent and limited as usual.
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn a_reload_keeps_the_counts_of_unchanged_rules_only() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let before = "      - { name: burst, key: phone, limit: 1, per: 1h }\n      - { name: tenant, key: tenant, limit: 2, per: 1h }";
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), &without_dedupe(before), ""))).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "1")).await.status, 200);
    gw.post("/v1/sms/send", &native("+8613800138002", "SignIn", "1")).await.assert_error(429, "rate_limited");

    // `burst` is unchanged; `tenant` has a new definition, so it starts from a full bucket.
    let after = "      - { name: burst, key: phone, limit: 1, per: 1h }\n      - { name: tenant, key: tenant, limit: 3, per: 1h }";
    gw.gateway.reload(compile(&config_yaml(&mock.endpoint(), &without_dedupe(after), "")));
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await;
    a.assert_error(429, "rate_limited");
    assert!(a.header("ratelimit").unwrap().starts_with(r#""burst";r=0"#), "burst kept its count");
    for i in 2..5 {
        let a = gw.post("/v1/sms/send", &native(&format!("+861380013800{i}"), "SignIn", "1")).await;
        assert_eq!(a.status, 200, "the changed tenant rule starts empty: {:#}", a.json);
    }
    gw.post("/v1/sms/send", &native("+8613800138009", "SignIn", "1")).await.assert_error(429, "rate_limited");
}
