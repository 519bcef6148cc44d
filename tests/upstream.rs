//! What the gateway makes of Tencent's answers, through every door: an answer as large as Tencent can
//! legitimately send is read whole (a 200-number SendSms echoing SessionContext, a full status pull); an
//! answer that cannot be read after the request was written (cut, slow, dropped) is `maybe sent`, never a
//! failure that invites a retry, and its numbers keep their limits and are remembered for the feedback
//! loop; a request that never left is a failure that gives everything back. Tencent's codes become a closed
//! set of metric labels, and its text never reaches a caller.

use crate::common::mock::{MockTencent, Reply};
use crate::common::*;
use crate::tencent_api::{codes, now, sdk, sdk_config, send_sms, SDK_ID, SDK_KEY};
use serde_json::json;

const CONVERSION: &str = "    conversion: { window: 1m }";

/// The SDK door's config with room for 200 numbers and a 512-byte SessionContext in one body.
fn big_body_config(endpoint: &str, limits: &str) -> String {
    sdk_config(endpoint, limits).replace("max_body_bytes: 1024", "max_body_bytes: 65536")
}

/// `n` distinct mainland mobile numbers.
fn numbers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("+861380010{i:04}")).collect()
}

async fn remembered(gw: &TestGateway, phone: &str) -> u16 {
    let body = json!({ "phone": phone }).to_string();
    let request =
        gw.http.post(gw.url("/v1/sms/verified")).bearer_auth(TOKEN).header("content-type", "application/json");
    request.body(body).send().await.unwrap().status().as_u16()
}

/// Issue 19, item 4: a 200-number SendSms whose answer echoed a 512-byte SessionContext per number (over
/// 64 KiB) was reported `InternalError.SendAndRecvFail` for every number, though Tencent sent all 200.
#[tokio::test]
async fn regression_a_full_batch_echoing_session_context_is_read_not_reported_failed() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let limits = format!("      - {{ name: tenant, key: tenant, limit: 1000, per: 1s }}\n{CONVERSION}");
    let gw = TestGateway::start_doors(compile(&big_body_config(&mock.endpoint(), &limits)), now()).await;
    let all = numbers(200);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut call = send_sms(&all);
    call["params"]["SessionContext"] = json!("c".repeat(512));
    let Some(answers) = sdk(&gw, vec![call]).await else { return };
    assert_eq!(codes(&answers[0]), vec!["Ok"; 200], "{:#}", answers[0]["response"]["SendStatusSet"][0]);
    let set = answers[0]["response"]["SendStatusSet"].as_array().unwrap();
    assert!(set.iter().all(|e| e["SerialNo"].as_str().unwrap().starts_with("2019:")), "Tencent's own serials");
    assert_eq!(mock.seen_action("SendSms").len(), 1, "one call, never retried");
    assert_eq!(remembered(&gw, all[199]).await, 204, "remembered for the feedback loop");
}

/// Issue 19, item 4, by a cut answer: Tencent had the request, so its numbers may have gone out. They are
/// answered `Ok` (the one code no caller or SDK sends again after), not sent again by a repeat of the call,
/// keep the limit they took, and are remembered as possibly sent.
#[tokio::test]
async fn regression_a_cut_answer_is_maybe_sent_never_failed_nor_sent_again() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.reply(Reply::Truncated);
    let limits = format!("{PHONE_LIMITS}\n{CONVERSION}");
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), &limits)), now()).await;
    let call = send_sms(&["+8613800138000", "+8613800138001"]);
    let Some(answers) = sdk(&gw, vec![call.clone(), call]).await else { return };
    assert_eq!(codes(&answers[0]), ["Ok", "Ok"], "{:#}", answers[0]);
    let first = &answers[0]["response"]["SendStatusSet"][0];
    assert_eq!(first["SerialNo"], "", "no receipt to show");
    assert!(first["Message"].as_str().unwrap().contains("not confirmed"), "{first:#}");
    assert_eq!(mock.seen_action("SendSms").len(), 1, "the repeat sent nothing: {:#}", answers[1]);
    assert_eq!(remembered(&gw, "+8613800138001").await, 204, "remembered as possibly sent");
    let metrics = gw.gateway.metrics().render();
    // Two sends and their two repeats, replayed.
    assert!(
        metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="maybe_sent"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"smsgate_upstream_results_total{tenant="acme",code="maybe_sent",provider="tencent"} 2"#),
        "{metrics}"
    );
}

/// The same class by the native door and other shapes: an answer slower than the deadline after the
/// request was written, a connection dropped after it, Tencent's internal error are `maybe_sent` (200,
/// quota kept); a connection that was never made is `upstream_unavailable` with the quota given back.
#[tokio::test]
async fn regression_slow_dropped_and_internal_error_answers_are_maybe_sent_on_the_native_door() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, ""))).await;
    for (i, reply) in [
        Reply::Slow(std::time::Duration::from_secs(5)),
        Reply::Drop,
        Reply::PerNumber("InternalError.SendAndRecvFail"),
        Reply::Envelope(500, "InternalError"),
        Reply::Raw(502, "text/html", "<html>bad gateway</html>"),
    ]
    .into_iter()
    .enumerate()
    {
        mock.reply(reply.clone());
        let phone = format!("+861380013800{i}");
        let a = gw.post("/v1/sms/send", &native(&phone, "SignIn", "123456")).await;
        assert_eq!((a.status, a.json["status"].as_str()), (200, Some("maybe_sent")), "{reply:?}: {:#}", a.json);
        assert!(a.json.get("upstream").is_none(), "no receipt: {:#}", a.json);
        // The quota it took is kept: it may have gone out.
        let again = gw.post("/v1/sms/send", &native(&phone, "SignIn", "654321")).await;
        again.assert_error(429, "rate_limited");
    }
    assert_eq!(mock.seen_action("SendSms").len(), 5, "each sent once, none retried");

    // Never connected: nothing went out, the quota comes back.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = TestGateway::start(compile(&config_yaml(&endpoint, PHONE_LIMITS, ""))).await;
    for _ in 0..2 {
        gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456"))
            .await
            .assert_error(503, "upstream_unavailable");
    }
}

/// The same class by the Supabase hook: a cut answer is a success (`200 {}`), never the `503` Supabase
/// retries into a second SMS.
#[tokio::test]
async fn regression_a_maybe_sent_supabase_hook_call_is_a_success_never_retried() {
    use crate::supabase::{hook, hooked_config, payload, SECRET};
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.reply(Reply::Truncated);
    let gw =
        TestGateway::start(compile(&hooked_config(&mock.endpoint(), &format!("{{ secret: \"{SECRET}\" }}")))).await;
    let url = gw.url("/v1/supabase/sms");
    let Some(answer) = hook(url, "signed", START_UNIX, payload("8613800138000", "123456"), &[SECRET]).await else {
        return;
    };
    assert_eq!((answer["status"].as_u64(), &answer["body"]), (Some(200), &json!({})), "{answer:#}");
    assert!(answer["headers"].get("retry-after").is_none(), "{answer:#}");
    assert_eq!(mock.seen_action("SendSms").len(), 1);
}

/// Issue 19, item 4: `PullSmsSendStatus` answers over 64 KiB were dropped, and Tencent hands each delivery
/// report out once.
#[tokio::test]
async fn regression_a_full_status_pull_over_64_kib_is_passed_through_whole() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    let pull = json!({"action": "PullSmsSendStatus", "secret_id": SDK_ID, "secret_key": SDK_KEY,
        "params": {"Limit": 100, "SmsSdkAppId": "1400006666"}});
    let Some(answers) = sdk(&gw, vec![pull]).await else { return };
    assert_eq!(answers[0]["ok"], true, "{:#}", answers[0]);
    let set = answers[0]["response"]["Response"]["PullSmsSendStatusSet"].as_array().unwrap();
    assert_eq!(set.len(), 100, "every report");
    assert_eq!(set[99]["SerialNo"], "2019:99");
}

/// Issue 19, lows: 40 invented Tencent codes made 40 label values. Every code is the table's own, its
/// family, or `other`, by both doors that reach Tencent.
#[tokio::test]
async fn regression_invented_upstream_codes_stay_a_closed_set_of_labels() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let limits = "      - { name: tenant, key: tenant, limit: 1000, per: 1s }";
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), limits)), now()).await;
    for i in 0..20 {
        let code: &'static str = Box::leak(format!("InternalError.Invented{i}").into_boxed_str());
        mock.reply(Reply::PerNumber(code));
        let a = gw.post("/v1/sms/send", &native(&format!("+86138001380{i:02}"), "SignIn", "123456")).await;
        assert_eq!(a.status, 200, "{:#}", a.json);
    }
    let mut calls = Vec::new();
    for i in 0..20 {
        let code: &'static str = Box::leak(format!("FailedOperation.Invented{i}").into_boxed_str());
        mock.reply(Reply::Envelope(200, code));
        calls.push(send_sms(&[&format!("+86139001390{i:02}")]));
    }
    let Some(answers) = sdk(&gw, calls).await else { return };
    assert!(answers.iter().all(|a| codes(a)[0].starts_with("FailedOperation.Invented")), "{answers:#?}");
    let metrics = gw.gateway.metrics().render();
    let mut labels: Vec<&str> = metrics.lines().filter(|l| l.starts_with("smsgate_upstream_results_total")).collect();
    labels.sort_unstable();
    assert_eq!(
        labels,
        [
            r#"smsgate_upstream_results_total{tenant="acme",code="InternalError.*",provider="tencent"} 20"#,
            r#"smsgate_upstream_results_total{tenant="acme",code="other",provider="tencent"} 20"#,
        ],
        "{metrics}"
    );
    assert!(!metrics.contains("Invented"), "{metrics}");
}

/// Issue 19, lows: with a wrong real Tencent key the body Logto shows carried Tencent's credentials message.
/// No door's answer carries Tencent's text (the log does).
#[tokio::test]
async fn regression_tencent_text_never_reaches_a_caller() {
    let mock = MockTencent::start("the-real-key-is-another-one").await;
    mock.strict_signatures();
    let gw = TestGateway::start_doors(compile(&sdk_config(&mock.endpoint(), PHONE_LIMITS)), now()).await;
    let logto = gw.post("/v1/logto/sms", r#"{"to":"8613800138000","type":"SignIn","payload":{"code":"123456"}}"#).await;
    let native = gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "123456")).await;
    for answer in [&logto, &native] {
        answer.assert_error(502, "upstream_rejected");
        assert_eq!(answer.json["error"]["upstream"]["code"], "AuthFailure.SignatureFailure", "the code stays");
        assert!(!answer.json.to_string().contains("mock says"), "{:#}", answer.json);
    }
    let pull = json!({"action": "PullSmsSendStatus", "secret_id": SDK_ID, "secret_key": SDK_KEY,
        "params": {"Limit": 10, "SmsSdkAppId": "1400006666"}});
    let Some(answers) = sdk(&gw, vec![send_sms(&["+8613800138002"]), pull]).await else { return };
    assert_eq!(codes(&answers[0]), ["AuthFailure.SignatureFailure"]);
    assert_eq!(answers[1]["code"], "AuthFailure.SignatureFailure", "a forwarded refusal keeps Tencent's code");
    for answer in &answers {
        assert!(!answer.to_string().contains("mock says"), "{answer:#}");
    }
}

/// Tencent's words go to the operator's log, numbers masked, and to no answer: a refusal whose message names
/// the number, through the real binary.
#[test]
fn regression_the_log_keeps_tencents_message_masked_and_the_answer_drops_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockTencent::start(SECRET_KEY));
    mock.reply(Reply::Raw(
        200,
        "application/json",
        r#"{"Response":{"Error":{"Code":"FailedOperation.PhoneNumberInBlacklist","Message":"number 8613800138000 is in the blacklist"},"RequestId":"r-1"}}"#,
    ));
    let mut server = crate::common::process::Server::spawn(
        &config_yaml(&mock.endpoint(), PHONE_LIMITS, ""),
        &[("ACME_SECRET", SECRET_KEY)],
    );
    let answer = runtime.block_on(server.send(&reqwest::Client::new(), "+8613800138000", "123456"));
    answer.assert_error(502, "upstream_rejected");
    assert_eq!(
        answer.json["error"]["upstream"],
        json!({"code": "FailedOperation.PhoneNumberInBlacklist", "request_id": "r-1"})
    );
    let line = server.wait_for_log("send request");
    assert!(line.contains("is in the blacklist") && line.contains("FailedOperation.PhoneNumberInBlacklist"), "{line}");
    assert!(!line.contains("13800138000"), "the number masked: {line}");
}

/// The other side of the one decision: a deadline that passes before the request was written (here a TLS
/// handshake that never completes) sent nothing, so it is `upstream_timeout` and gives the quota back; on
/// main every time-out kept the quota.
#[tokio::test]
async fn regression_a_deadline_before_the_request_was_written_gives_the_quota_back() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let gw = TestGateway::start(compile(&config_yaml(&endpoint, PHONE_LIMITS, "      max_attempts: 1"))).await;
    for _ in 0..2 {
        gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456"))
            .await
            .assert_error(504, "upstream_timeout");
    }
    held.abort();
}
