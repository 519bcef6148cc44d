//! Rate limits through HTTP on the memory backend with a fake clock: every rule key, the usage filter,
//! shadow rules, the headers, test numbers, and limiter state across a config reload.

use crate::common::mock::{MockTencent, Reply};
use crate::common::*;
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
    let limits = "      - { name: signin, key: tenant, limit: 1, per: 1h, usage: [SignIn] }\n      - { name: watch, key: phone, limit: 1, per: 1h, shadow: true }";
    let (mock, gw) = setup(limits).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status, 200);
    gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "1")).await.assert_error(429, "rate_limited");
    // Generic is outside the signin rule; the shadow rule would deny the repeat but only reports it.
    for _ in 0..3 {
        let a = gw.post("/v1/sms/send", &native("+8613800138000", "Generic", "1")).await;
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

/// A tenant `usages` with templates SignIn 1110, Register 1111 and Generic 1113, one send per number and usage
/// per hour for Register and for Generic (the rules name them in other spellings: `register`, `GENERIC`), and
/// optionally a hook (`scripts/hook.lua` in `dir`).
fn usage_yaml(endpoint: &str, hook: bool) -> String {
    let script = if hook { "    script: scripts/hook.lua\n" } else { "" };
    format!(
        r#"
tenants:
  usages:
    tokens: ["{TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - {{ usageType: SignIn, templateCode: "1110" }}
        - {{ usageType: Register, templateCode: "1111" }}
        - {{ usageType: Generic, templateCode: "1113" }}
      endpoint: {endpoint}
      timeout: 1s
    limits:
      - {{ name: register, key: phone, limit: 1, per: 1h, usage: [register] }}
      - {{ name: generic, key: phone, limit: 1, per: 1h, usage: [GENERIC] }}
{script}"#
    )
}

/// The spellings the attack used, in order: the first Register goes out, every other is the same Register
/// send again or, without a template of its own, a Generic send.
const SPELLINGS: [&str; 7] = ["Register", "Register", "register", "REGISTER", "Register_", "Register-2", "SignUp"];

/// Sends every spelling for `phone` by one route (distinct codes: no repeat is a de-duplicated retry) and
/// returns the statuses.
async fn send_spellings(gw: &TestGateway, logto: bool, phone: &str) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (i, usage) in SPELLINGS.iter().enumerate() {
        let code = format!("{}", 100_000 + i);
        let answer = if logto {
            let body = serde_json::json!({"to": &phone[1..], "type": usage, "payload": {"code": code}});
            gw.post("/v1/logto/sms", &body.to_string()).await
        } else {
            gw.post("/v1/sms/send", &native(phone, usage, &code)).await
        };
        if answer.status != 200 {
            answer.assert_error(429, "rate_limited");
        }
        statuses.push(answer.status);
    }
    statuses
}

/// The TemplateIds the mock Tencent received for `phone`, in order.
fn templates_sent(mock: &MockTencent, phone: &str) -> Vec<String> {
    mock.seen()
        .iter()
        .filter(|s| s.body["PhoneNumberSet"][0] == phone)
        .map(|s| s.body["TemplateId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `{usage: [Register]}` let `register`, `REGISTER`, `Register_`, `Register-2` and `SignUp` through: six SMS to
/// one number on a 1-per-hour rule. Usage types now match ignoring case and are judged as the usage the send
/// is made under (without a template of their own: Generic), before and after the hook, by both routes.
#[tokio::test]
async fn regression_usage_respelling_cannot_escape_a_usage_rule() {
    // (hook source, what each route's sends must be, the templates that go out)
    let hooks: [(Option<&str>, [u16; 7], &[&str]); 3] = [
        (None, [200, 429, 429, 429, 200, 429, 429], &["1111", "1113"]),
        // A hook that sees only canonical spellings (it refuses anything else) and renames SignUp to a
        // lower-case `register`: still the one Register send.
        (
            Some(
                r#"function on_send(req)
  if req.usage ~= "Register" and req.usage:lower() == "register" then
    return { reject = "the hook saw a raw spelling" }
  end
  if req.usage == "SignUp" then req.usage = "register" end
end"#,
            ),
            [200, 429, 429, 429, 200, 429, 429],
            &["1111", "1113"],
        ),
        // A hook that makes every usage one the tenant has no template for: every send is a Generic send.
        (
            Some(r#"function on_send(req) req.usage = req.usage .. "_x" end"#),
            [200, 429, 429, 429, 429, 429, 429],
            &["1113"],
        ),
    ];
    for (hook, expected, templates) in hooks {
        let dir = tempfile::tempdir().unwrap();
        if let Some(source) = hook {
            std::fs::create_dir(dir.path().join("scripts")).unwrap();
            std::fs::write(dir.path().join("scripts/hook.lua"), source).unwrap();
        }
        let mock = MockTencent::start(SECRET_KEY).await;
        let yaml = usage_yaml(&mock.endpoint(), hook.is_some());
        let config = smsgate::config::Config::from_yaml(&yaml, &dir.path().join("gateway.yaml"), &env())
            .unwrap_or_else(|e| panic!("{e}"));
        let gw = TestGateway::start(config).await;
        for (logto, phone) in [(false, "+8613800138000"), (true, "+8613800138001")] {
            let statuses = send_spellings(&gw, logto, phone).await;
            assert_eq!(statuses, expected, "hook {hook:?}, logto route: {logto}");
            assert_eq!(templates_sent(&mock, phone), templates, "hook {hook:?}, logto route: {logto}");
        }
        assert_eq!(mock.seen().len(), 2 * templates.len(), "exactly these SMS reached Tencent");
        // Metrics name usage types in their one spelling; a respelling is never a label of its own.
        let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
        for raw in ["register", "REGISTER", "Register_", "Register-2", "SignUp", "Register_x"] {
            assert!(!metrics.contains(&format!("usage=\"{raw}\"")), "{raw} in\n{metrics}");
        }
    }
}

/// A tenant with no Generic template sends only the usage types it names: a respelling it has no template for
/// is refused (`no_template`) and consumes nothing, never sent under another rule.
#[tokio::test]
async fn respelled_usages_without_a_generic_template_are_refused() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let yaml = usage_yaml(&mock.endpoint(), false)
        .replace("        - { usageType: Generic, templateCode: \"1113\" }\n", "")
        .replace("usage: [GENERIC]", "usage: [SignIn]");
    let gw = TestGateway::start(compile(&yaml)).await;
    let mut statuses = Vec::new();
    for (i, usage) in SPELLINGS.iter().enumerate() {
        statuses.push(gw.post("/v1/sms/send", &native("+8613800138000", usage, &i.to_string())).await.status);
    }
    assert_eq!(statuses, [200, 429, 429, 429, 422, 422, 422]);
    assert_eq!(templates_sent(&mock, "+8613800138000"), ["1111"]);
}

/// Limit rules name usage types as sends are judged: a spelling that differs only in case is that usage
/// type, a name the tenant has no template for (which would be judged as Generic, so the rule could never
/// apply) and an unknown name are config errors, as are two templates that differ only in case.
#[test]
fn rule_usages_must_name_a_usage_a_send_can_be_judged_under() {
    let errors = |yaml: &str| match smsgate::config::Config::from_yaml(yaml, std::path::Path::new("t.yaml"), &env()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    let base = usage_yaml("http://127.0.0.1:9", false);
    assert_eq!(errors(&base), "", "register and GENERIC are Register and Generic");
    let config = compile(&base);
    let tenant = config.tenant("usages").unwrap();
    assert_eq!(tenant.limits[0].usages, ["Register"]);
    assert_eq!(tenant.limits[1].usages, ["Generic"]);

    let typo = errors(&base.replace("usage: [register]", "usage: [Regster]"));
    assert!(typo.contains("limits[0].usage[0]: unknown usage type Regster"), "{typo}");
    let no_template = errors(&base.replace("usage: [register]", "usage: [MfaVerification]"));
    assert!(
        no_template.contains("limits[0].usage[0]: the tenant has no template for usage type MfaVerification"),
        "{no_template}"
    );
    let twice = errors(&base.replace("usageType: SignIn,", "usageType: signin,").replace(
        "        - { usageType: Generic",
        "        - { usageType: SIGNIN, templateCode: \"1112\" }\n        - { usageType: Generic",
    ));
    assert!(twice.contains("usage type SignIn is listed twice (usage types match ignoring case)"), "{twice}");
    // Logto's spelling wins for its own usage types written another way in the templates.
    let config = compile(&base.replace("usageType: SignIn,", "usageType: SIGNIN,"));
    assert!(config.tenant("usages").unwrap().names_usage("SignIn"));
}

/// The acme tenant with one rule, `hourly` (3 per hour per number), pointed at `endpoint`; with `redis`, the
/// redis limiter backend (`on_error: deny`, so every decision below is Redis's).
fn hourly_yaml(endpoint: &str, redis: Option<&str>) -> String {
    let yaml = config_yaml(endpoint, &without_dedupe("      - { name: hourly, key: phone, limit: 3, per: 1h }"), "");
    match redis {
        Some(url) => yaml.replacen(
            "tenants:",
            &format!("limits_backend: {{ kind: redis, url: \"{url}\", on_error: deny, timeout: 2s, key: {STORAGE_KEY} }}\ntenants:"),
            1,
        ),
        None => yaml,
    }
}

/// With Tencent unreachable, three sends used up a 3-per-hour rule and the fourth got `429 Retry-After: 1188`
/// although no SMS went out. A send that certainly went nowhere now gives its quota back; one that may have
/// gone out, or that Tencent refused for the number itself, keeps it.
async fn sends_that_never_left_give_their_quota_back(redis: Option<&str>) {
    // Nothing listens on the port yet: every connect is refused.
    let port = crate::common::redis_server::free_port();
    let gw = TestGateway::start(compile(&hourly_yaml(&format!("http://127.0.0.1:{port}"), redis))).await;
    for _ in 0..5 {
        let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await;
        a.assert_error(503, "upstream_unavailable");
    }
    // Tencent is back: the whole quota is there.
    let mock = MockTencent::start_on(port, SECRET_KEY).await;
    let statuses = [
        gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status,
        gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status,
        gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.status,
    ];
    assert_eq!(statuses, [200, 200, 200], "redis: {redis:?}");
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await;
    a.assert_error(429, "rate_limited");
    assert_eq!(mock.seen().len(), 3);

    // Refused before anything was sent (the operator's template): the quota comes back too.
    for _ in 0..4 {
        mock.reply(Reply::Envelope(200, "FailedOperation.TemplateIncorrectOrUnapproved"));
        gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "1")).await.assert_error(502, "upstream_rejected");
    }
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "1")).await.status, 200);

    // The connection dropped after the request went out: the SMS may have been sent (answered so, never as
    // a failure), the quota stays taken.
    for code in ["1", "2", "3"] {
        mock.reply(Reply::Drop);
        let a = gw.post("/v1/sms/send", &native("+8613800138002", "SignIn", code)).await;
        assert_eq!(a.json["status"], "maybe_sent", "{:#}", a.json);
    }
    gw.post("/v1/sms/send", &native("+8613800138002", "SignIn", "1")).await.assert_error(429, "rate_limited");
    // Tencent refused the number itself: no SMS, but the quota stays taken, so a number Tencent refuses cannot
    // buy unlimited calls to it.
    for _ in 0..3 {
        mock.reply(Reply::PerNumber("FailedOperation.PhoneNumberInBlacklist"));
        gw.post("/v1/sms/send", &native("+8613800138003", "SignIn", "1")).await.assert_error(502, "upstream_rejected");
    }
    gw.post("/v1/sms/send", &native("+8613800138003", "SignIn", "1")).await.assert_error(429, "rate_limited");
}

#[tokio::test]
async fn regression_a_send_that_never_left_gives_its_quota_back() {
    sends_that_never_left_give_their_quota_back(None).await;
}

#[tokio::test]
async fn regression_a_send_that_never_left_gives_its_quota_back_in_redis() {
    let Some(redis) = crate::common::redis_server::RedisServer::start() else { return };
    sends_that_never_left_give_their_quota_back(Some(&redis.url())).await;
}

/// Give-backs racing other sends on one key never let more through than the rule allows, and every request
/// that sent nothing is returned whatever the order: a tenant rule of 5 per hour, 24 concurrent sends of which
/// Tencent refuses the first 12 without sending (their quota comes back), then sends until the rule denies.
async fn racing_give_backs(redis: Option<&str>) {
    let mock = MockTencent::start(SECRET_KEY).await;
    let yaml = hourly_yaml(&mock.endpoint(), redis)
        .replace("{ name: hourly, key: phone, limit: 3, per: 1h }", "{ name: tenant, key: tenant, limit: 5, per: 1h }");
    let gw = std::sync::Arc::new(TestGateway::start(compile(&yaml)).await);
    for _ in 0..12 {
        mock.reply(Reply::Envelope(200, "LimitExceeded.AppDailyLimit"));
    }
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                gw.post("/v1/sms/send", &native(&format!("+86138001380{i:02}"), "SignIn", "1")).await
            })
        })
        .collect();
    let mut sent = 0;
    for task in tasks {
        let a = task.await.unwrap();
        match a.status {
            200 => sent += 1,
            502 => a.assert_error(502, "upstream_rejected"),
            _ => a.assert_error(429, "rate_limited"),
        }
    }
    assert!(sent <= 5, "{sent} sent on a rule of 5");
    // Then one at a time (Tencent refuses what is left of the 12 first), until the rule denies.
    let mut more = 0;
    for i in 0..40 {
        let a = gw.post("/v1/sms/send", &native(&format!("+86139001380{i:02}"), "SignIn", "1")).await;
        match a.status {
            200 => more += 1,
            502 => continue,
            _ => {
                a.assert_error(429, "rate_limited");
                break;
            }
        }
        assert!(sent + more <= 5, "over the rule");
    }
    assert_eq!(sent + more, 5, "every refused send's quota came back (redis: {redis:?})");
    let delivered = mock.seen().len() - 12;
    assert_eq!(delivered, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_backs_racing_other_sends_never_exceed_the_rule() {
    racing_give_backs(None).await;
    if let Some(redis) = crate::common::redis_server::RedisServer::start() {
        racing_give_backs(Some(&redis.url())).await;
    }
}

/// With `retry_maybe_sent`, an earlier attempt that may have gone out makes the send `maybe_sent` and keeps
/// the quota (and the spend reservation) even when the last attempt was refused without sending.
#[tokio::test]
async fn regression_a_retried_maybe_sent_attempt_keeps_the_quota() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let limits =
        without_dedupe("      - { name: hourly, key: phone, limit: 1, per: 1h }\n    spend_caps: { daily: 2 }");
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), &limits, "      retry_maybe_sent: true"))).await;
    mock.reply(Reply::Drop);
    mock.reply(Reply::Envelope(200, "FailedOperation.TemplateIncorrectOrUnapproved"));
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await;
    assert_eq!(a.json["status"], "maybe_sent", "{:#}", a.json);
    assert_eq!(mock.seen().len(), 2, "retried after the dropped connection");
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "1")).await.assert_error(429, "rate_limited");
    // The daily cap of 2 has one message left: the first send kept its reservation.
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "1")).await.status, 200);
    gw.post("/v1/sms/send", &native("+8613800138002", "SignIn", "1")).await.assert_error(429, "spend_cap_reached");
}

/// With the memory backend a denial is decided under the de-duplication key's lock (`claim_admitted`, whose
/// unit test shows it creates no entry): through the whole path, denials leave no entry behind, and a repeat
/// of the send that went out is still answered from that send, not limited.
#[tokio::test]
async fn a_denial_leaves_no_dedupe_entry_and_a_repeat_still_replays() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let limits = "      - { name: burst, key: phone, limit: 1, per: 30s }";
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), limits, ""))).await;
    let dedupe = &gw.gateway.services().dedupe;
    let send = |code: &str| {
        serde_json::json!({"to": "8613800138000", "type": "SignIn", "payload": {"code": code}}).to_string()
    };
    let first = gw.post("/v1/logto/sms", &send("111111")).await;
    assert_eq!(first.status, 200, "{:#}", first.json);
    assert_eq!(dedupe.len(), 1);
    for code in ["222222", "333333", "444444"] {
        gw.post("/v1/logto/sms", &send(code)).await.assert_error(429, "rate_limited");
    }
    assert_eq!(dedupe.len(), 1, "denials leave no de-duplication entry");
    let again = gw.post("/v1/logto/sms", &send("111111")).await;
    assert_eq!(again.status, 200, "{:#}", again.json);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(mock.seen().len(), 1, "one SMS in all");
}
