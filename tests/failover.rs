//! Failover across providers (issue 21), under faults injected in the mocks: Tencent first, Aliyun next. The
//! next provider gets a send only when the one before certainly sent nothing, for a reason of its own;
//! never on a per-number answer, never once it may have gone out. Each case counts the requests that
//! reached each mock: at most one SMS per request, whatever fails.

use crate::common::aliyun_mock::{MockAliyun, ALIYUN_KEY_ID};
use crate::common::mock::{MockTencent, Reply};
use crate::common::*;
use crate::tencent_api::{codes, now, sdk, send_sms, SDK_ID, SDK_KEY};
use std::time::Duration;

const ALIYUN_SECRET: &str = "aliyun-test-secret-0001";

/// Tenant `acme`: Tencent at `tencent` then Aliyun at `aliyun` for every number, one phone limit, and
/// `extra` tenant keys.
fn yaml(tencent: &str, aliyun: &str, extra: &str) -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:0
tenants:
  acme:
    tokens: ["{TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - {{ usageType: SignIn, templateCode: "1110" }}
        - {{ usageType: Generic, templateCode: "1113" }}
      endpoint: {tencent}
      timeout: 1s
      max_attempts: 1
    aliyun:
      accessKeyId: {ALIYUN_KEY_ID}
      accessKeySecret: {ALIYUN_SECRET}
      signName: 阿里云短信测试
      templates:
        - {{ usageType: Generic, templateCode: SMS_154950913 }}
      endpoint: {aliyun}
      timeout: 1s
    routes:
      - {{ via: [tencent, aliyun] }}
    limits:
      - {{ name: burst, key: phone, limit: 1, per: 30s }}
{extra}"#
    )
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn send(gw: &TestGateway, phone: &str) -> Answer {
    gw.post("/v1/sms/send", &native(phone, "SignIn", "123456")).await
}

#[tokio::test]
async fn a_provider_refusing_connections_fails_over_and_the_next_one_sends_once() {
    let aliyun = MockAliyun::start(ALIYUN_SECRET).await;
    let tencent = format!("http://127.0.0.1:{}", closed_port());
    let gw = TestGateway::start(compile(&yaml(&tencent, &aliyun.endpoint(), ""))).await;
    let answer = send(&gw, "+8613800138000").await;
    assert_eq!((answer.status, &answer.json["status"]), (200, &"sent".into()), "{:#}", answer.json);
    assert_eq!(answer.json["provider"], "aliyun");
    assert_eq!(answer.json["template_id"], "SMS_154950913");
    assert_eq!(aliyun.sent(), 1, "one SMS");
    assert!(aliyun.seen()[0].signature_valid);
    let metrics = metrics(&gw).await;
    let failed_over =
        r#"smsgate_upstream_failovers_total{tenant="acme",code="upstream_unavailable",provider="tencent"} 1"#;
    assert!(metrics.contains(failed_over), "{metrics}");
    assert!(
        metrics.contains(r#"smsgate_upstream_results_total{tenant="acme",code="OK",provider="aliyun"} 1"#),
        "{metrics}"
    );
    // Limits are judged once per request, whichever provider sent it: the number's one send is used (another
    // code, so that de-duplication does not answer it).
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "654321")).await.assert_error(429, "rate_limited");
    assert_eq!(aliyun.sent(), 1);
}

#[tokio::test]
async fn a_provider_wide_refusal_fails_over_a_per_number_one_does_not() {
    let tencent = MockTencent::start(SECRET_KEY).await;
    let aliyun = MockAliyun::start(ALIYUN_SECRET).await;
    let gw = TestGateway::start(compile(&yaml(&tencent.endpoint(), &aliyun.endpoint(), ""))).await;
    // The account's balance is used up (nothing sent): Aliyun takes it.
    tencent.reply(Reply::PerNumber("FailedOperation.InsufficientBalanceInSmsPackage"));
    let answer = send(&gw, "+8613800138000").await;
    assert_eq!((answer.status, &answer.json["provider"]), (200, &"aliyun".into()), "{:#}", answer.json);
    assert_eq!((tencent.seen().len(), aliyun.sent()), (1, 1), "Tencent refused it, Aliyun sent it");
    // The whole account throttled: the same.
    tencent.reply(Reply::Envelope(200, "RequestLimitExceeded"));
    let answer = send(&gw, "+8613800138001").await;
    assert_eq!((answer.status, &answer.json["provider"]), (200, &"aliyun".into()), "{:#}", answer.json);
    assert_eq!(aliyun.sent(), 2);
    // The number itself is refused: no other provider gets it, and the caller hears why.
    tencent.reply(Reply::PerNumber("InvalidParameterValue.IncorrectPhoneNumber"));
    send(&gw, "+8613800138002").await.assert_error(400, "invalid_phone");
    // That number's own limit at Tencent: the same.
    tencent.reply(Reply::PerNumber("LimitExceeded.PhoneNumberDailyLimit"));
    send(&gw, "+8613800138003").await.assert_error(429, "upstream_rate_limited");
    assert_eq!(aliyun.sent(), 2, "per-number answers never fail over");
}

#[tokio::test]
async fn a_send_that_may_have_gone_out_never_goes_to_the_next_provider() {
    let tencent = MockTencent::start(SECRET_KEY).await;
    let aliyun = MockAliyun::start(ALIYUN_SECRET).await;
    let gw = TestGateway::start(compile(&yaml(&tencent.endpoint(), &aliyun.endpoint(), ""))).await;
    // A 5xx page: Tencent received the request.
    tencent.reply(Reply::Raw(502, "text/html", "<html>bad gateway</html>"));
    let answer = send(&gw, "+8613800138000").await;
    assert_eq!((answer.status, &answer.json["status"]), (200, &"maybe_sent".into()), "{:#}", answer.json);
    assert_eq!(answer.json["provider"], "tencent");
    // Tencent's own internal error.
    tencent.reply(Reply::PerNumber("InternalError.SendAndRecvFail"));
    assert_eq!(send(&gw, "+8613800138001").await.json["status"], "maybe_sent");
    // Hanging after the request was written, past the deadline.
    tencent.reply(Reply::Slow(Duration::from_secs(3)));
    let answer = send(&gw, "+8613800138002").await;
    assert_eq!((answer.status, &answer.json["status"]), (200, &"maybe_sent".into()), "{:#}", answer.json);
    // The connection dropped after the request.
    tencent.reply(Reply::Drop);
    assert_eq!(send(&gw, "+8613800138003").await.json["status"], "maybe_sent");
    assert_eq!(tencent.seen().len(), 4);
    assert_eq!(aliyun.sent(), 0, "a send that may have gone out is never sent again elsewhere");
}

#[tokio::test]
async fn an_open_breaker_sends_traffic_to_the_next_provider_and_a_recovered_one_takes_it_back() {
    let port = closed_port();
    let aliyun = MockAliyun::start(ALIYUN_SECRET).await;
    let gw = TestGateway::start(compile(&yaml(&format!("http://127.0.0.1:{port}"), &aliyun.endpoint(), ""))).await;
    // Three connect failures open Tencent's breaker; each send failed over to Aliyun.
    for i in 0..3 {
        let answer = send(&gw, &format!("+861380013800{i}")).await;
        assert_eq!(answer.json["provider"], "aliyun", "{:#}", answer.json);
    }
    let metrics_text = metrics(&gw).await;
    let failovers = sample(
        &metrics_text,
        r#"smsgate_upstream_failovers_total{tenant="acme",code="upstream_unavailable",provider="tencent"}"#,
    );
    assert_eq!(failovers, 3.0, "{metrics_text}");
    // Open: Aliyun is asked first, Tencent not at all.
    let answer = send(&gw, "+8613800138009").await;
    assert_eq!(answer.json["provider"], "aliyun");
    let metrics_text = metrics(&gw).await;
    let failovers = sample(
        &metrics_text,
        r#"smsgate_upstream_failovers_total{tenant="acme",code="upstream_unavailable",provider="tencent"}"#,
    );
    assert_eq!(failovers, 3.0, "Tencent was skipped, not tried");
    // Tencent comes back; once the cool-down is over, the trial send goes to it and it keeps the traffic.
    let tencent = MockTencent::start_on(port, SECRET_KEY).await;
    gw.clock.advance(Duration::from_secs(31));
    for phone in ["+8613800138010", "+8613800138011"] {
        let answer = send(&gw, phone).await;
        assert_eq!((answer.status, &answer.json["provider"]), (200, &"tencent".into()), "{:#}", answer.json);
    }
    assert_eq!((tencent.seen().len(), aliyun.sent()), (2, 4));
}

#[tokio::test]
async fn a_provider_in_dry_run_after_a_failover_signs_and_sends_nothing() {
    let aliyun = MockAliyun::start(ALIYUN_SECRET).await;
    let tencent = format!("http://127.0.0.1:{}", closed_port());
    let yaml = yaml(&tencent, &aliyun.endpoint(), "").replace(
        &format!("      endpoint: {}\n      timeout: 1s\n    routes:", aliyun.endpoint()),
        &format!("      endpoint: {}\n      timeout: 1s\n      dry_run: true\n    routes:", aliyun.endpoint()),
    );
    let gw = TestGateway::start(compile(&yaml)).await;
    let answer = send(&gw, "+8613800138000").await;
    assert_eq!((answer.status, &answer.json["status"]), (200, &"dry_run".into()), "{:#}", answer.json);
    assert_eq!(answer.json["provider"], "aliyun");
    assert_eq!(aliyun.sent(), 0);
}

#[tokio::test]
async fn tencent_sdk_callers_fail_over_too() {
    let aliyun = MockAliyun::start(ALIYUN_SECRET).await;
    let tencent = format!("http://127.0.0.1:{}", closed_port());
    let extra = format!("    sdk_clients: [{{ secretId: {SDK_ID}, secretKey: {SDK_KEY} }}]\n");
    let yaml =
        yaml(&tencent, &aliyun.endpoint(), &extra).replace("server:\n", "server:\n  tencent_listen: 127.0.0.1:0\n");
    let gw = TestGateway::start_doors(compile(&yaml), now()).await;
    let Some(answers) = sdk(&gw, vec![send_sms(&["+8613800138000", "+8613800138001"])]).await else { return };
    assert_eq!(codes(&answers[0]), ["Ok", "Ok"], "{:#}", answers[0]);
    assert_eq!(aliyun.sent(), 2, "each number went out once, through Aliyun");
    let numbers: Vec<_> =
        aliyun.seen().iter().map(|s| s.param("PhoneNumbers").unwrap_or_default().to_owned()).collect();
    assert_eq!(numbers, ["13800138000", "13800138001"]);
}
