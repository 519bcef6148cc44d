//! Policy the Tencent-compatible door cannot escape by the shape of its requests, through the official
//! Python SDK: a number repeated in one SendSms (any spelling, any parameters) is sent once; a template
//! shared by several usages is judged by every rule of each of them; passthrough reaches only the tenant's
//! own application, in the API version the gateway knows, for read actions.

use crate::common::mock::MockTencent;
use crate::common::*;
use crate::tencent_api::{codes, now, sdk, sdk_config, send_sms};
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
