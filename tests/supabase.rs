//! The Supabase Auth Send SMS hook through real sockets, signed by the reference Standard Webhooks library
//! (tests/python/supabase_hook.py) as Supabase Auth signs it: sends, signature lists and rotation, stale or
//! bad signatures (401, nothing sent, nothing consumed), and answers as Supabase reads them.

use crate::common::mock::MockTencent;
use crate::common::python::{self, PythonProcess};
use crate::common::*;
use serde_json::{json, Value};

pub(crate) const SECRET: &str = "v1,whsec_c21zZ2F0ZS1zdXBhYmFzZS10ZXN0LWtleS0x";
const OTHER_SECRET: &str = "v1,whsec_c21zZ2F0ZS1zdXBhYmFzZS1vdGhlci1rZXk=";

pub(crate) fn hooked_config(endpoint: &str, supabase: &str) -> String {
    let limits = format!("{PHONE_LIMITS}\n    countries: {{ deny: [GB] }}\n    supabase: {supabase}");
    config_yaml(endpoint, &limits, "")
}

pub(crate) fn payload(phone: &str, otp: &str) -> String {
    json!({
        "metadata": {"uuid": "8b6c2a1e-0000-4000-8000-000000000001", "time": "2024-01-02T03:04:05Z",
                     "name": "send-sms", "ip_address": "203.0.113.7"},
        "user": {"id": "6481a5c1-3d37-4a56-9f6a-bee08c554965", "aud": "authenticated", "role": "authenticated",
                 "email": "", "phone": phone, "app_metadata": {"provider": "phone", "providers": ["phone"]},
                 "user_metadata": {}, "identities": [], "is_anonymous": false},
        "sms": {"otp": otp}
    })
    .to_string()
}

/// Posts one hook request through the Python client; None when Python is not installed (test skipped).
pub(crate) async fn hook(url: String, mode: &str, timestamp: i64, body: String, secrets: &[&str]) -> Option<Value> {
    let python = python::interpreter()?;
    let mut args = vec![mode.to_owned(), url, timestamp.to_string(), body];
    args.extend(secrets.iter().map(|s| s.to_string()));
    let answer = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        PythonProcess::spawn(&python, "supabase_hook.py", &args).next_json()
    })
    .await
    .unwrap();
    Some(answer)
}

fn assert_refused_in_200(answer: &Value, http_code: u64, message_part: &str) {
    assert_eq!(answer["status"], 200, "{answer:#}");
    assert_eq!(answer["body"]["error"]["http_code"], http_code, "{answer:#}");
    let message = answer["body"]["error"]["message"].as_str().unwrap();
    assert!(message.contains(message_part), "{message}");
}

#[tokio::test]
async fn hook_signed_by_standard_webhooks_sends_the_otp() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.strict_signatures();
    let gw =
        TestGateway::start(compile(&hooked_config(&mock.endpoint(), &format!("{{ secret: \"{SECRET}\" }}")))).await;
    let url = gw.url("/v1/supabase/sms");
    // Supabase keeps E.164 digits without the "+"; a number with it works the same.
    let Some(answer) = hook(url.clone(), "signed", START_UNIX, payload("8613800138000", "123456"), &[SECRET]).await
    else {
        return;
    };
    assert_eq!((answer["status"].as_u64(), &answer["body"]), (Some(200), &json!({})), "{answer:#}");
    let answer = hook(url, "signed", START_UNIX, payload("+14155550100", "654321"), &[SECRET]).await.unwrap();
    assert_eq!(answer["status"], 200, "{answer:#}");
    assert_eq!(answer["body"], json!({}));

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.signature_valid));
    assert_eq!(seen[0].body["PhoneNumberSet"], json!(["+8613800138000"]));
    assert_eq!(seen[0].body["TemplateParamSet"], json!(["123456"]));
    assert_eq!(seen[0].body["TemplateId"], "1113", "the usage is supabase.usage, Generic by default");
    assert_eq!(seen[1].body["PhoneNumberSet"], json!(["+14155550100"]));
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="Generic",code="sent"} 2"#), "{metrics}");
}

#[tokio::test]
async fn several_signatures_and_rotated_secrets_verify() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let supabase = format!("{{ secret: \"{OTHER_SECRET}|{SECRET}\", usage: SignIn }}");
    let gw = TestGateway::start(compile(&hooked_config(&mock.endpoint(), &supabase))).await;
    let url = gw.url("/v1/supabase/sms/acme");
    // Supabase with two secrets sends "v1,<a>, v1,<b>"; either may be ours.
    let unknown = "v1,whsec_dW5yZWxhdGVkLXNlY3JldC1vZi1zb21lb25lLWVsc2U=";
    let Some(answer) =
        hook(url.clone(), "signed", START_UNIX, payload("8613800138000", "111111"), &[unknown, SECRET]).await
    else {
        return;
    };
    assert_eq!(answer["status"], 200, "{answer:#}");
    assert_eq!(answer["body"], json!({}));
    let answer = hook(url, "signed", START_UNIX, payload("8613800138001", "222222"), &[OTHER_SECRET]).await.unwrap();
    assert_eq!(answer["body"], json!({}), "the rotated-in secret verifies too");
    assert_eq!(mock.seen().len(), 2);
    assert_eq!(mock.seen()[0].body["TemplateId"], "1110", "supabase.usage: SignIn");
}

#[tokio::test]
async fn regression_stale_or_bad_signature_is_401_and_consumes_nothing() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw =
        TestGateway::start(compile(&hooked_config(&mock.endpoint(), &format!("{{ secret: \"{SECRET}\" }}")))).await;
    let url = gw.url("/v1/supabase/sms");
    let body = payload("8613800138000", "123456");
    let wrong = "v1,whsec_dW5yZWxhdGVkLXNlY3JldC1vZi1zb21lb25lLWVsc2U=";
    let cases = [
        ("signed", START_UNIX - 301, wrong, "wrong secret"),
        ("signed", START_UNIX - 301, SECRET, "stale by 301 s"),
        ("signed", START_UNIX + 301, SECRET, "301 s in the future"),
        ("tampered", START_UNIX, SECRET, "body changed after signing"),
        ("signed", START_UNIX, wrong, "wrong secret, fresh"),
    ];
    for (mode, timestamp, secret, why) in cases {
        let Some(answer) = hook(url.clone(), mode, timestamp, body.clone(), &[secret]).await else { return };
        assert_eq!(answer["status"], 401, "{why}: {answer:#}");
        assert_eq!(answer["body"]["error"]["http_code"], 401, "{why}");
    }
    assert!(mock.seen().is_empty(), "nothing sent");
    // Nothing consumed: the phone's one-per-30s quota is still there.
    let answer = hook(url, "signed", START_UNIX, body, &[SECRET]).await.unwrap();
    assert_eq!((answer["status"].as_u64(), &answer["body"]), (Some(200), &json!({})), "{answer:#}");
    assert_eq!(mock.seen().len(), 1);
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains(r#"code="invalid_signature"} 5"#), "{metrics}");
}

#[tokio::test]
async fn refusals_ride_in_a_200_and_only_safe_failures_are_retryable() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw =
        TestGateway::start(compile(&hooked_config(&mock.endpoint(), &format!("{{ secret: \"{SECRET}\" }}")))).await;
    let url = gw.url("/v1/supabase/sms");
    let Some(first) = hook(url.clone(), "signed", START_UNIX, payload("8613800138000", "123456"), &[SECRET]).await
    else {
        return;
    };
    assert_eq!(first["body"], json!({}));
    // The same code again (Supabase retrying, or a replayed capture): answered from the first, no second SMS.
    let again = hook(url.clone(), "signed", START_UNIX, payload("8613800138000", "123456"), &[SECRET]).await.unwrap();
    assert_eq!((again["status"].as_u64(), &again["body"]), (Some(200), &json!({})));
    assert_eq!(again["headers"]["idempotent-replayed"], "true");
    assert_eq!(mock.seen().len(), 1);
    // A new code within 30 s: Supabase shows this message with status 429, and does not retry.
    let limited = hook(url.clone(), "signed", START_UNIX, payload("8613800138000", "654321"), &[SECRET]).await.unwrap();
    assert_refused_in_200(&limited, 429, "Try again in 30 seconds");
    assert!(limited["headers"].get("retry-after").is_none(), "{limited:#}");
    let blocked = hook(url.clone(), "signed", START_UNIX, payload("447400123456", "123456"), &[SECRET]).await.unwrap();
    assert_refused_in_200(&blocked, 403, "not available");
    let bad = hook(url, "signed", START_UNIX, payload("12", "123456"), &[SECRET]).await.unwrap();
    assert_refused_in_200(&bad, 400, "not valid");
    assert_eq!(mock.seen().len(), 1);

    // Tencent unreachable (nothing sent): a real 503 with Retry-After, so Supabase retries.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let gw =
        TestGateway::start(compile(&hooked_config(&format!("http://{dead}"), &format!("{{ secret: \"{SECRET}\" }}"))))
            .await;
    let down = hook(gw.url("/v1/supabase/sms"), "signed", START_UNIX, payload("8613800138000", "123456"), &[SECRET])
        .await
        .unwrap();
    assert_eq!(down["status"], 503, "{down:#}");
    assert!(down["headers"].get("retry-after").is_some(), "{down:#}");
    assert_eq!(down["body"]["error"]["http_code"], 503);
}

#[tokio::test]
async fn the_url_names_the_tenant_when_several_take_the_hook() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let yaml = hooked_config(&mock.endpoint(), &format!("{{ secret: \"{SECRET}\" }}")).replace(
        "      - { name: all, key: tenant, limit: 1, per: 1h }",
        &format!("      - {{ name: all, key: tenant, limit: 1, per: 1h }}\n    supabase: {{ secret: \"{OTHER_SECRET}\", usage: SignIn }}"),
    );
    let gw = TestGateway::start(compile(&yaml)).await;
    let answer = gw.post_as("/v1/supabase/sms", &payload("8613800138000", "1"), None).await;
    answer.assert_error(400, "invalid_request");
    let answer = gw.post_as("/v1/supabase/sms/nobody", &payload("8613800138000", "1"), None).await;
    answer.assert_error(404, "not_found");
    let Some(answer) = hook(
        gw.url("/v1/supabase/sms/beta"),
        "signed",
        START_UNIX,
        payload("8613800138000", "123456"),
        &[OTHER_SECRET],
    )
    .await
    else {
        return;
    };
    assert_eq!(answer["body"], json!({}), "{answer:#}");
    // acme's secret does not open beta's door.
    let answer =
        hook(gw.url("/v1/supabase/sms/beta"), "signed", START_UNIX, payload("8613800138001", "123456"), &[SECRET])
            .await
            .unwrap();
    assert_eq!(answer["status"], 401);
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(mock.seen()[0].body["SmsSdkAppId"], "1400007777");
}
