//! What the feedback loop writes to the log, through the real path: a protection trip and its lift are one
//! line each however many sends hit the block, an unauthorized ReportConversion is one error line however
//! many conversions follow, and no number, code, token or secret (the status path secret included) is
//! written. The log is captured with `common::logs` (one global subscriber; a scoped one raced with the tests
//! beside it).

use crate::common::mock::MockTencent;
use crate::common::*;
use std::time::Duration;

const STATUS_SECRET: &str = "tencent-status-acme-0123456789";
const LOGTO_KEY: &str = "logto-signing-key-acme-0123456789";

fn yaml(endpoint: &str) -> String {
    format!(
        r#"
tenants:
  acme:
    tokens: ["{TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{{ usageType: Generic, templateCode: "1113" }}]
      endpoint: {endpoint}
      status_secret: {STATUS_SECRET}
      report_conversion: true
    conversion: {{ window: 1m, logto_webhook_secret: {LOGTO_KEY} }}
    protection:
      - {{ name: prefix, key: {{ phone_prefix: 6 }}, window: 1h, min_sends: 3, min_conversion: 0.5, block_for: 30m }}
"#
    )
}

async fn count_of(gw: &TestGateway, series: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if text.contains(series) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "no {series}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn trips_lifts_and_a_refused_report_are_logged_once_and_nothing_secret_is() {
    let captured = crate::common::logs::capture();
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.reply_report("UnauthorizedOperation.SmsSdkAppIdVerifyFail");
    let gw = TestGateway::start(compile(&yaml(&mock.endpoint()))).await;

    let codes = ["481516", "234200", "771199", "660033", "559922", "118833", "990011", "220044"];
    for (i, code) in codes[..3].iter().enumerate() {
        assert_eq!(gw.post("/v1/sms/send", &native(&format!("+861380013800{i}"), "SignIn", code)).await.status, 200);
    }
    // Two conversions: the first ReportConversion is refused, the second is not even tried.
    for i in 0..2 {
        let body = format!(r#"{{"phone":"+861380013800{i}"}}"#);
        let a = gw.http.post(gw.url("/v1/sms/verified")).bearer_auth(TOKEN).header("content-type", "application/json");
        assert_eq!(a.body(body).send().await.unwrap().status(), 204);
    }
    count_of(&gw, r#"smsgate_report_conversion_total{tenant="acme",result="off"} 2"#).await;
    let reports = r#"[{"nationcode":"86","mobile":"13800138000","report_status":"SUCCESS","sid":"2019:0"}]"#;
    let status = gw.http.post(gw.url(&format!("/v1/tencent/status/{STATUS_SECRET}"))).body(reports).send().await;
    assert_eq!(status.unwrap().status(), 200);

    // Two of three converted is not below half; a third unconverted send tips it once judged.
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138003", "SignIn", codes[3])).await.status, 200);
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138004", "SignIn", codes[4])).await.status, 200);
    gw.clock.advance(Duration::from_secs(61));
    for (i, code) in codes[5..].iter().enumerate() {
        let a = gw.post("/v1/sms/send", &native(&format!("+861380013801{i}"), "SignIn", code)).await;
        a.assert_error(403, "suspected_pumping");
    }
    gw.clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138020", "SignIn", "102030")).await.status, 200);
    gw.gateway.services().feedback.sweep(&gw.gateway.config());

    let log = captured.text();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("protection: key tripped"), 1, "{log}");
    assert_eq!(lines("protection: block lifted"), 1, "{log}");
    assert_eq!(lines("ReportConversion refused"), 1, "{log}");
    assert!(log.contains("key=+861380"), "{log}");
    assert!(log.contains("+86138****8000"), "numbers are masked: {log}");
    let mut secrets = vec![TOKEN, SECRET_KEY, STATUS_SECRET, LOGTO_KEY, "13800138000", "13800138010", "102030"];
    secrets.extend(codes);
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }
}
