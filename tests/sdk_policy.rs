//! Policy the Tencent-compatible door cannot escape by the shape of its requests, through the official
//! Python SDK: a number repeated in one SendSms (any spelling, any parameters) is sent once; a template
//! shared by several usages is judged by every rule of each of them; passthrough reaches only the tenant's
//! own application, in the API version the gateway knows, for read actions.

use crate::common::mock::MockTencent;
use crate::common::*;
use crate::tencent_api::{codes, now, sdk, sdk_config, send_sms, SDK_ID, SDK_KEY};
use serde_json::json;

/// Issue 19, item 5: one number 20 times with two template parameters went out in one call carrying 19
/// copies (no code to de-duplicate on).
#[tokio::test]
async fn regression_a_number_repeated_with_two_params_is_sent_once() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let limits = "      - { name: hourly, key: phone, limit: 20, per: 1h }";
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), limits)), now()).await;
    let mut call = send_sms(&["+8613800138000"; 20]);
    call["params"]["TemplateParamSet"] = json!(["123456", "5"]);
    let Some(answers) = sdk(&gw, vec![call]).await else { return };
    assert_eq!(codes(&answers[0]), vec!["Ok"; 20]);
    let set = answers[0]["response"]["SendStatusSet"].as_array().unwrap();
    assert!(set.iter().all(|e| e["SerialNo"] == set[0]["SerialNo"]), "every copy answered from the one send");
    let seen = mock.seen_action("SendSms");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["PhoneNumberSet"], json!(["+8613800138000"]));
}

/// The same class by other spellings of one number (with and without `+`, the `86` prefix, spaces) and
/// beside other numbers: each number goes out once, in the caller's order of first appearance.
#[tokio::test]
async fn regression_one_number_in_every_spelling_is_sent_once() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let limits = "      - { name: hourly, key: phone, limit: 20, per: 1h }";
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), limits)), now()).await;
    let spellings =
        ["+8613800138000", "8613800138000", "13800138000", " 13800138000 ", "+8613900139000", "+86 138 0013 8000"];
    let mut call = send_sms(&spellings);
    call["params"]["TemplateParamSet"] = json!(["123456", "5"]);
    let Some(answers) = sdk(&gw, vec![call]).await else { return };
    let got = codes(&answers[0]);
    let set = answers[0]["response"]["SendStatusSet"].as_array().unwrap();
    for (i, entry) in set.iter().enumerate() {
        if got[i] == "Ok" && entry["PhoneNumber"] == "+8613800138000" {
            assert_eq!(entry["SerialNo"], set[0]["SerialNo"], "{set:#?}");
        }
    }
    let seen = mock.seen_action("SendSms");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["PhoneNumberSet"], json!(["+8613800138000", "+8613900139000"]), "{set:#?}");
}

/// The SDK door's config where SignIn and ForgotPassword share template 1110, under `limits`.
fn shared_template_config(endpoint: &str, limits: &str) -> String {
    sdk_config(endpoint, limits).replace(
        r#"- { usageType: SignIn, templateCode: "1110" }"#,
        r#"- { usageType: SignIn, templateCode: "1110" }
        - { usageType: ForgotPassword, templateCode: "1110" }"#,
    )
}

const SIGN_IN_ONLY: &str = "      - { name: signin, key: phone, limit: 1, per: 1h, usage: [SignIn] }";

/// Issue 19, item 6: SignIn and ForgotPassword share a template; with a SignIn-only 1/h rule, three more
/// codes went to one number through the SDK door (judged as ForgotPassword, the alphabetically first usage).
#[tokio::test]
async fn regression_a_shared_template_is_judged_by_every_usage_rule() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&shared_template_config(&mock.endpoint(), SIGN_IN_ONLY)), now()).await;
    let calls = (0..4)
        .map(|i| {
            let mut call = send_sms(&["+8613800138000"]);
            call["params"]["TemplateParamSet"] = json!([format!("12345{i}")]);
            call
        })
        .collect();
    let Some(answers) = sdk(&gw, calls).await else { return };
    let got: Vec<String> = answers.iter().map(|a| codes(a)[0].clone()).collect();
    assert_eq!(
        got,
        [
            "Ok",
            "LimitExceeded.PhoneNumberOneHourLimit",
            "LimitExceeded.PhoneNumberOneHourLimit",
            "LimitExceeded.PhoneNumberOneHourLimit"
        ]
    );
    assert_eq!(mock.seen_action("SendSms").len(), 1);
}

/// The same class by another door first: a native SignIn send takes the number's SignIn quota, and the SDK
/// door cannot send the shared template to it; a native ForgotPassword send (a door that names its usage)
/// is judged as ForgotPassword only.
#[tokio::test]
async fn regression_a_native_sign_in_quota_holds_at_the_sdk_door_through_the_shared_template() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&shared_template_config(&mock.endpoint(), SIGN_IN_ONLY)), now()).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "111111")).await.status, 200);
    let Some(answers) = sdk(&gw, vec![send_sms(&["+8613800138000", "+8613800138001"])]).await else { return };
    assert_eq!(codes(&answers[0]), ["LimitExceeded.PhoneNumberOneHourLimit", "Ok"]);
    let forgot = gw.post("/v1/sms/send", &native("+8613800138000", "ForgotPassword", "222222")).await;
    assert_eq!(forgot.status, 200, "{:#}", forgot.json);
    assert_eq!(mock.seen_action("SendSms").len(), 3);
}

fn pull(params: serde_json::Value) -> serde_json::Value {
    json!({"action": "PullSmsSendStatus", "secret_id": SDK_ID, "secret_key": SDK_KEY, "params": params})
}

/// Issue 19, item 7: a tenant's SDK client pulled another tenant's receipts by naming its SmsSdkAppId (same
/// Tencent account), and versions `2019-07-11` and `x` were forwarded. Only the tenant's own application,
/// named, in the one version, with no repeated key.
#[tokio::test]
async fn regression_passthrough_reaches_only_the_tenants_own_application_in_one_version() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    let mut old_version = pull(json!({"Limit": 10, "SmsSdkAppId": "1400006666"}));
    old_version["version"] = json!("2019-07-11");
    let mut nonsense_version = old_version.clone();
    nonsense_version["version"] = json!("x");
    let calls = vec![
        pull(json!({"Limit": 10, "SmsSdkAppId": "1400007777"})),
        pull(json!({"Limit": 10})),
        pull(json!({"Limit": 10, "SmsSdkAppId": "1400006666", "smsSdkAppId": "1400007777"})),
        pull(json!({"Limit": 10, "SmsSdkAppId": 1400007777u64})),
        old_version,
        nonsense_version,
        pull(json!({"Limit": 10, "SmsSdkAppId": "1400006666"})),
    ];
    let Some(answers) = sdk(&gw, calls).await else { return };
    let got: Vec<&str> = answers.iter().map(|a| a["code"].as_str().unwrap_or("<forwarded>")).collect();
    assert_eq!(
        got,
        [
            "InvalidParameterValue.SdkAppIdNotExist",
            "MissingParameter",
            "InvalidParameter",
            "InvalidParameterValue.SdkAppIdNotExist",
            "NoSuchVersion",
            "NoSuchVersion",
            "<forwarded>",
        ],
        "{answers:#?}"
    );
    let seen = mock.seen_action("PullSmsSendStatus");
    assert_eq!(seen.len(), 1, "only the tenant's own, in 2021-01-11");
    assert_eq!(seen[0].body["SmsSdkAppId"], "1400006666");
}

/// The same class by the config: a write action (or an account-wide read) in `sdk_passthrough` would run
/// with the real keys, so `check` refuses it unless `sdk_passthrough_unscoped: true` says so.
#[test]
fn regression_a_write_action_in_passthrough_is_a_config_error_unless_allowed() {
    for action in ["AddSmsTemplate", "DeleteSmsSign", "ReportConversion", "DescribeSmsTemplateList", "MadeUpAction"] {
        let yaml = sdk_config("http://127.0.0.1:9", PHONE_LIMITS).replace(
            "sdk_passthrough: [PullSmsSendStatus]",
            &format!("sdk_passthrough: [PullSmsSendStatus, {action}]"),
        );
        let error = smsgate::config::Config::from_yaml(&yaml, std::path::Path::new("test.yaml"), &env()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("sdk_passthrough[1]") && text.contains("sdk_passthrough_unscoped: true"), "{text}");
        let allowed = yaml.replace(
            &format!("sdk_passthrough: [PullSmsSendStatus, {action}]"),
            &format!("sdk_passthrough: [PullSmsSendStatus, {action}]\n    sdk_passthrough_unscoped: true"),
        );
        compile(&allowed);
    }
}
