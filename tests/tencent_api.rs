//! The Tencent-compatible API with Tencent's official Python SDK as the client (tests/python/tencent_sdk.py),
//! over real sockets to the gateway's second listener, and the mock Tencent behind it verifying that what
//! it receives is re-signed with the tenant's real keys: per-number policy, one upstream call for the
//! allowed numbers (two when mainland and international numbers mix), answers in the caller's order, wrong
//! keys, a skewed clock, a tampered body, passthrough, and limits that batching cannot escape.

use crate::common::mock::MockTencent;
use crate::common::python::{self, PythonProcess};
use crate::common::*;
use serde_json::{json, Value};
use smsgate::error::GatewayError;
use smsgate::server::doors::tencent_api::status_code;
use std::path::Path;
use std::time::Duration;

pub(crate) const SDK_ID: &str = "AKIDsdkclient0001";
pub(crate) const SDK_KEY: &str = "sdk-client-key-0123456789";

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn sdk_config(endpoint: &str, limits: &str) -> String {
    let tenant = format!(
        "{limits}\n    blocked_prefixes: [\"+86170\"]\n    sdk_clients: [{{ secretId: {SDK_ID}, secretKey: {SDK_KEY} }}]\n    sdk_passthrough: [PullSmsSendStatus]"
    );
    config_yaml(endpoint, &tenant, "")
}

pub(crate) fn send_sms(numbers: &[&str]) -> Value {
    json!({"action": "SendSms", "secret_id": SDK_ID, "secret_key": SDK_KEY, "params": {
        "PhoneNumberSet": numbers, "SmsSdkAppId": "1400006666", "TemplateId": "1110",
        "SignName": "腾讯云", "TemplateParamSet": ["123456"], "SessionContext": "ctx-1"}})
}

/// Runs the SDK calls in one Python process; None when Python is not installed (test skipped).
pub(crate) async fn sdk(gw: &TestGateway, calls: Vec<Value>) -> Option<Vec<Value>> {
    let python = python::interpreter()?;
    let endpoint = gw.tencent_addr.unwrap().to_string();
    let n = calls.len();
    let calls = Value::Array(calls).to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let mut process = PythonProcess::spawn(&python, "tencent_sdk.py", &[&endpoint, &calls]);
        (0..n).map(|_| process.next_json()).collect()
    })
    .await
    .unwrap();
    Some(answers)
}

pub(crate) fn codes(answer: &Value) -> Vec<String> {
    let set = answer["response"]["SendStatusSet"].as_array().unwrap_or_else(|| panic!("{answer:#}"));
    set.iter().map(|e| e["Code"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn official_sdk_send_is_policed_per_number_and_forwarded_in_one_call() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.strict_signatures();
    mock.set_clock(now());
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    // The number's one send per 30 s goes through the native route first: the SDK door shares the limit.
    let native_first = gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "111111")).await;
    assert_eq!(native_first.status, 200);
    let Some(answers) =
        sdk(&gw, vec![send_sms(&["+8613800138000", "13800138001", "+8613800138002", "+8617012345678"])]).await
    else {
        return;
    };
    let answer = &answers[0];
    assert_eq!(answer["ok"], true, "{answer:#}");
    assert_eq!(
        codes(answer),
        ["Ok", "LimitExceeded.PhoneNumberThirtySecondLimit", "Ok", "FailedOperation.PhoneNumberInBlacklist"]
    );
    let set = &answer["response"]["SendStatusSet"];
    assert_eq!(set[0]["PhoneNumber"], "+8613800138000");
    // Tencent's own entries (the mock numbers its serials across calls: the native send took 2019:0).
    assert_eq!(set[0]["SerialNo"], "2019:1", "Tencent's own entry");
    assert_eq!(set[2]["SerialNo"], "2019:2");
    assert_eq!(set[1]["PhoneNumber"], "+8613800138001", "the bare mainland number, read as +86");
    assert_eq!(set[1]["SessionContext"], "ctx-1");
    assert!(set[1]["Message"].as_str().unwrap().contains("30 seconds"), "{set:#}");
    assert!(!answer["response"]["RequestId"].as_str().unwrap().is_empty());

    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "the native send, then one call for the SDK's allowed numbers");
    let call = &seen[1];
    assert!(call.signature_valid, "re-signed with the tenant's real key");
    assert!(call.header("authorization").contains(&format!("Credential={SECRET_ID}/")));
    assert!(!call.header("authorization").contains(SDK_ID));
    assert_eq!(call.body["PhoneNumberSet"], json!(["+8613800138000", "+8613800138002"]));
    assert_eq!(call.body["TemplateId"], "1110");
    assert_eq!(call.body["SignName"], "腾讯云");
    assert_eq!(call.body["TemplateParamSet"], json!(["123456"]));
    assert_eq!(call.body["SessionContext"], "ctx-1");
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="sent"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="rate_limited"} 1"#));
}

#[tokio::test]
async fn mainland_and_international_numbers_go_in_two_calls() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    let Some(answers) = sdk(&gw, vec![send_sms(&["+14155550100", "+8613800138000", "+14155550101"])]).await else {
        return;
    };
    assert_eq!(codes(&answers[0]), ["Ok", "Ok", "Ok"]);
    let calls: Vec<Value> = mock.seen().iter().map(|s| s.body["PhoneNumberSet"].clone()).collect();
    assert_eq!(calls, [json!(["+14155550100", "+14155550101"]), json!(["+8613800138000"])]);
}

#[tokio::test]
async fn wrong_keys_skewed_clock_and_tampered_body_raise_sdk_errors_and_consume_nothing() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    let mut unknown = send_sms(&["+8613800138000"]);
    unknown["secret_id"] = json!("AKIDnobody");
    let mut wrong_key = send_sms(&["+8613800138000"]);
    wrong_key["secret_key"] = json!("not-the-key-0123456789");
    let mut tampered = send_sms(&["+8613800138000"]);
    tampered["tamper"] = json!(true);
    let mut real_keys = send_sms(&["+8613800138000"]);
    (real_keys["secret_id"], real_keys["secret_key"]) = (json!(SECRET_ID), json!(SECRET_KEY));
    let Some(answers) = sdk(&gw, vec![unknown, wrong_key, tampered, real_keys]).await else { return };
    let got: Vec<(&Value, &Value)> = answers.iter().map(|a| (&a["ok"], &a["code"])).collect();
    assert_eq!(
        got,
        [
            (&json!(false), &json!("AuthFailure.SecretIdNotFound")),
            (&json!(false), &json!("AuthFailure.SignatureFailure")),
            (&json!(false), &json!("AuthFailure.SignatureFailure")),
            (&json!(false), &json!("AuthFailure.SecretIdNotFound")),
        ],
        "{answers:#?}"
    );
    assert!(answers.iter().all(|a| !a["request_id"].as_str().unwrap_or("").is_empty()), "every answer has a RequestId");

    // The gateway's clock 10 minutes ahead of the SDK's.
    let skewed = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now() + 600).await;
    let answers = sdk(&skewed, vec![send_sms(&["+8613800138000"])]).await.unwrap();
    assert_eq!(answers[0]["code"], "AuthFailure.SignatureExpire", "{answers:#?}");

    assert!(mock.seen().is_empty(), "nothing reached Tencent");
    // Nothing consumed: the number's one send per 30 s is still there.
    let answers = sdk(&gw, vec![send_sms(&["+8613800138000"])]).await.unwrap();
    assert_eq!(codes(&answers[0]), ["Ok"]);
    let metrics = gw.gateway.metrics().render();
    // Unknown SecretIds have no tenant; the others are acme's.
    assert!(metrics.contains(r#"smsgate_requests_total{tenant="",usage="",code="invalid_signature"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="",code="invalid_signature"} 2"#));
}

#[tokio::test]
async fn whole_request_refusals_use_tencent_codes() {
    let mock = MockTencent::start(SECRET_KEY).await;
    // 201 numbers need more than the test config's 1 KiB body bound (the default 16 KiB holds 200).
    let yaml = sdk_config(&mock.endpoint(), PHONE_LIMITS).replace("max_body_bytes: 1024", "max_body_bytes: 16384");
    let gw = TestGateway::start_doors(compile(&yaml), now()).await;
    let mut app = send_sms(&["+8613800138000"]);
    app["params"]["SmsSdkAppId"] = json!("1400009999");
    let mut template = send_sms(&["+8613800138000"]);
    template["params"]["TemplateId"] = json!("9999");
    let many: Vec<String> = (0..201).map(|i| format!("+86138{i:08}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let empty = send_sms(&[]);
    let unlisted = json!({"action": "DescribeSmsTemplateList", "secret_id": SDK_ID, "secret_key": SDK_KEY,
        "params": {"International": 0, "Limit": 10, "Offset": 0}});
    let Some(answers) = sdk(&gw, vec![app, template, send_sms(&many), empty, unlisted]).await else { return };
    let codes: Vec<&str> = answers.iter().map(|a| a["code"].as_str().unwrap_or("<ok>")).collect();
    assert_eq!(
        codes,
        [
            "InvalidParameterValue.SdkAppIdNotExist",
            "FailedOperation.TemplateIncorrectOrUnapproved",
            "LimitExceeded.PhoneNumberCountLimit",
            "MissingParameter.EmptyPhoneNumberSet",
            "UnsupportedOperation",
        ],
        "{answers:#?}"
    );
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn listed_actions_pass_through_re_signed() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.strict_signatures();
    mock.set_clock(now());
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    let pull = json!({"action": "PullSmsSendStatus", "secret_id": SDK_ID, "secret_key": SDK_KEY,
        "params": {"Limit": 10, "SmsSdkAppId": "1400006666"}});
    let Some(answers) = sdk(&gw, vec![pull]).await else { return };
    assert_eq!(answers[0]["ok"], true, "{answers:#?}");
    assert_eq!(answers[0]["response"]["Response"]["RequestId"], "mock-pull", "Tencent's own answer");
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].signature_valid);
    assert_eq!(seen[0].header("x-tc-action"), "PullSmsSendStatus");
    assert_eq!(seen[0].body, json!({"Limit": 10, "SmsSdkAppId": "1400006666"}));
}

#[tokio::test]
async fn regression_a_batch_cannot_escape_the_tenant_limit() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let limits = "      - { name: tenant, key: tenant, limit: 3, per: 1h }";
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), limits)), now()).await;
    let numbers = ["+8613800138000", "+8613800138001", "+8613800138002", "+8613800138003", "+8613800138004"];
    let Some(answers) = sdk(&gw, vec![send_sms(&numbers)]).await else { return };
    assert_eq!(
        codes(&answers[0]),
        ["Ok", "Ok", "Ok", "LimitExceeded.PhoneNumberOneHourLimit", "LimitExceeded.PhoneNumberOneHourLimit"]
    );
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(mock.seen()[0].body["PhoneNumberSet"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn regression_a_number_twice_in_one_request_is_sent_once() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    let Some(answers) = sdk(&gw, vec![send_sms(&["+8613800138000", "13800138000"])]).await else { return };
    assert_eq!(codes(&answers[0]), ["Ok", "Ok"]);
    let set = &answers[0]["response"]["SendStatusSet"];
    assert_eq!(set[0]["SerialNo"], set[1]["SerialNo"], "the repeat is answered from the first");
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(mock.seen()[0].body["PhoneNumberSet"], json!(["+8613800138000"]));
    // Billed once: the repeat's answer is the first send's, and so is its fee.
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains("smsgate_upstream_fee_units_total{tenant=\"acme\",country=\"CN\"} 1\n"), "{metrics}");
}

#[tokio::test]
async fn tencent_refusals_of_single_numbers_come_back_as_its_own_entries() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.reply(crate::common::mock::Reply::PerNumber("LimitExceeded.PhoneNumberDailyLimit"));
    let limits = "      - { name: tenant, key: tenant, limit: 100, per: 1s }\n    spend_caps: { daily: 2 }";
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), limits)), now()).await;
    let Some(answers) = sdk(&gw, vec![send_sms(&["+8613800138000", "+8613800138001"])]).await else { return };
    assert_eq!(codes(&answers[0]), ["LimitExceeded.PhoneNumberDailyLimit", "LimitExceeded.PhoneNumberDailyLimit"]);
    let message = &answers[0]["response"]["SendStatusSet"][0]["Message"];
    assert!(
        message.as_str().unwrap().starts_with("Too many messages. Try again in "),
        "the gateway's words: {message}"
    );
    // Nothing went out (Tencent's per-number limit): both spend reservations came back.
    let answers = sdk(&gw, vec![send_sms(&["+8613800138002", "+8613800138003", "+8613800138004"])]).await.unwrap();
    assert_eq!(codes(&answers[0]), ["Ok", "Ok", "LimitExceeded.AppDailyLimit"]);
}

#[test]
fn the_front_doors_refusal_table_matches_the_code() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/front-doors.md")).unwrap();
    let minute = Some(Duration::from_secs(30));
    let rows: Vec<(&str, GatewayError, Option<Duration>)> = vec![
        (
            "`rate_limited`, rule window up to 1 minute",
            GatewayError::RateLimited { rule: "r".into(), retry_after: Duration::ZERO },
            minute,
        ),
        (
            "`rate_limited`, rule window up to 1 hour",
            GatewayError::RateLimited { rule: "r".into(), retry_after: Duration::ZERO },
            Some(Duration::from_secs(3600)),
        ),
        (
            "`rate_limited`, longer windows",
            GatewayError::RateLimited { rule: "r".into(), retry_after: Duration::ZERO },
            Some(Duration::from_secs(86_400)),
        ),
        ("`country_blocked` (countries, blocked prefixes)", GatewayError::CountryBlocked, None),
        ("`rejected` (the Lua hook; its message)", GatewayError::Rejected("no".into()), None),
        (
            "`number_type_blocked` (premium rate, satellite…)",
            GatewayError::NumberTypeBlocked { kind: smsgate::phone::NumberType::PremiumRate },
            None,
        ),
        (
            "`suspected_pumping` (a protection rule blocked the range)",
            GatewayError::SuspectedPumping { rule: "prefix".into() },
            None,
        ),
        ("`invalid_phone`", GatewayError::InvalidPhone { upstream: None }, None),
        ("`no_template` (the hook changed the usage)", GatewayError::NoTemplate { usage: "X".into() }, None),
        (
            "`spend_cap_reached`, tenant caps",
            GatewayError::SpendCapReached { cap: "daily".into(), retry_after: Duration::ZERO },
            None,
        ),
        (
            "`spend_cap_reached`, per-country caps",
            GatewayError::SpendCapReached { cap: "US daily".into(), retry_after: Duration::ZERO },
            None,
        ),
        ("`upstream_timeout`", GatewayError::UpstreamTimeout, None),
        (
            "`upstream_unavailable` without an answer (connect, proxy, reset)",
            GatewayError::UpstreamUnavailable { reason: "connect".into(), upstream: None },
            None,
        ),
        ("`limiter_unavailable`, `script_busy`, `script_error`, `internal`", GatewayError::ScriptBusy, None),
    ];
    for (cause, error, window) in rows {
        let row = format!("| {cause} | `{}` |", status_code(&error, window));
        assert!(doc.contains(&row), "docs/front-doors.md lacks the row {row}");
    }
}

#[test]
fn the_real_binary_serves_the_sdk_listener() {
    let Some(python) = python::interpreter() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockTencent::start(SECRET_KEY));
    mock.strict_signatures();
    let config = sdk_config(&mock.endpoint(), PHONE_LIMITS)
        .replace("  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  tencent_listen: 127.0.0.1:0\n");
    let mut server = crate::common::process::Server::spawn(&config, &[("ACME_SECRET", SECRET_KEY)]);
    let line = server.wait_for_log("Tencent-compatible API listening");
    let event: Value = serde_json::from_str(&line).unwrap();
    let endpoint = event["addr"].as_str().unwrap().to_owned();
    let calls = Value::Array(vec![send_sms(&["+8613800138000"])]).to_string();
    let answer = PythonProcess::spawn(&python, "tencent_sdk.py", &[&endpoint, &calls]).next_json();
    assert_eq!(codes(&answer), ["Ok"], "{}", server.log_text());
    assert!(mock.seen()[0].signature_valid);
    let log = server.log_text();
    assert!(log.contains(r#""route":"tencent_api""#), "{log}");
    for secret in [SDK_KEY, SECRET_KEY, "13800138000", "123456"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// The SDK door is the same pipeline as the native route for the feedback loop: its accepted numbers are
/// remembered (a verification converts them), and a range a protection rule blocked is refused number by
/// number, before anything is consumed or sent.
#[tokio::test]
async fn sdk_sends_feed_the_feedback_loop_and_meet_its_protection() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let protection = "    conversion: { window: 1m }\n    protection:\n      - { name: prefix, key: { phone_prefix: 6 }, window: 1h, min_sends: 3, min_conversion: 0.5, block_for: 30m }";
    let config = sdk_config(&mock.endpoint(), &format!("{PHONE_LIMITS}\n{protection}"));
    let gw = TestGateway::start_doors(compile(&config), now()).await;
    let Some(answers) = sdk(&gw, vec![send_sms(&["+8613800138001", "+8613800138002", "+8613800138003"])]).await else {
        return;
    };
    assert_eq!(codes(&answers[0]), ["Ok", "Ok", "Ok"]);
    let verified = gw
        .http
        .post(gw.url("/v1/sms/verified"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"phone":"+8613800138001"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 204, "an SDK send is remembered: its verification converts it");

    // One of three matured sends verified (below 0.5): the prefix trips at the next send to it.
    gw.clock.advance(Duration::from_secs(61));
    let Some(answers) = sdk(&gw, vec![send_sms(&["+8613800138004", "+8613900139000"])]).await else { return };
    assert_eq!(codes(&answers[0]), ["FailedOperation.PhoneNumberInBlacklist", "Ok"]);
    let calls: Vec<Value> = mock.seen().iter().map(|s| s.body["PhoneNumberSet"].clone()).collect();
    assert_eq!(calls.last().unwrap(), &json!(["+8613900139000"]), "the blocked number never went out");
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains(r#"code="suspected_pumping"} 1"#), "{metrics}");
}
