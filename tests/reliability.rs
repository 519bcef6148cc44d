//! Upstream reliability through the real path: retries only when no second SMS can result, re-signing on a
//! clock error, endpoint failover, key rotation, and domestic/international templates.

use crate::common::mock::{MockTencent, Reply};
use crate::common::*;
use std::time::Duration;

async fn gateway(mock: &MockTencent, extra: &str) -> TestGateway {
    TestGateway::start(compile(&config_yaml(&mock.endpoint(), "      []", extra))).await
}

fn send_body(phone: &str) -> String {
    native(phone, "SignIn", "123456")
}

#[tokio::test]
async fn api_throttles_are_retried_and_only_the_last_answer_counts() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "").await;
    mock.reply(Reply::Envelope(200, "RequestLimitExceeded"));
    mock.reply(Reply::Envelope(200, "LimitExceeded.GlobalSmsSendingRateLimit"));
    let a = gw.post("/v1/sms/send", &send_body("+8613800138000")).await;
    assert_eq!((a.status, a.json["status"].as_str()), (200, Some("sent")), "{:#}", a.json);
    assert_eq!(mock.seen().len(), 3);
    assert!(mock.seen().iter().all(|s| s.signature_valid));

    // Out of attempts (3 by default): the last error is the answer.
    for _ in 0..3 {
        mock.reply(Reply::Envelope(200, "RequestLimitExceeded"));
    }
    gw.post("/v1/sms/send", &send_body("+8613800138001")).await.assert_error(503, "upstream_unavailable");
    assert_eq!(mock.seen().len(), 6);
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains(r#"smsgate_upstream_retries_total{reason="throttled"} 4"#), "{metrics}");
}

#[tokio::test]
async fn failures_that_may_have_sent_are_not_retried_unless_the_tenant_opts_in() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "").await;
    for (reply, phone) in [
        (Reply::Envelope(200, "InternalError.Timeout"), "+8613800138000"),
        (Reply::Drop, "+8613800138001"),
        (Reply::Slow(Duration::from_secs(3)), "+8613800138002"),
    ] {
        mock.reply(reply);
        let a = gw.post("/v1/sms/send", &send_body(phone)).await;
        assert_eq!((a.status, a.json["status"].as_str()), (200, Some("maybe_sent")), "{:#}", a.json);
    }
    assert_eq!(mock.seen().len(), 3, "exactly one request each");

    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "      retry_maybe_sent: true").await;
    mock.reply(Reply::Envelope(200, "InternalError.SendAndRecvFail"));
    mock.reply(Reply::Drop);
    let a = gw.post("/v1/sms/send", &send_body("+8613800138000")).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    assert_eq!(mock.seen().len(), 3);
}

#[tokio::test]
async fn a_clock_error_is_re_signed_once_with_tencents_time() {
    let mock = MockTencent::start(SECRET_KEY).await;
    // Our clock (START_UNIX) is an hour behind Tencent's.
    mock.set_clock(START_UNIX + 3600);
    let gw = gateway(&mock, "").await;
    let a = gw.post("/v1/sms/send", &send_body("+8613800138000")).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "the first refused, the re-signed one sent");
    assert_eq!(seen[0].header("x-tc-timestamp"), START_UNIX.to_string());
    assert_eq!(seen[1].header("x-tc-timestamp"), (START_UNIX + 3600).to_string());
    assert!(seen[1].signature_valid);
    // The learnt skew is used from then on: the next send goes through first time.
    assert_eq!(gw.post("/v1/sms/send", &send_body("+8613800138001")).await.status, 200);
    assert_eq!(mock.seen().len(), 3);
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains("smsgate_clock_skew_seconds 3600"), "{metrics}");

    // A clock error that persists after re-signing is the operator's problem: one retry only.
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = gateway(&mock, "").await;
    mock.reply(Reply::Envelope(200, "AuthFailure.SignatureExpire"));
    mock.reply(Reply::Envelope(200, "AuthFailure.SignatureExpire"));
    let a = gw.post("/v1/sms/send", &send_body("+8613800138000")).await;
    a.assert_error(502, "upstream_rejected");
    assert_eq!(a.json["error"]["upstream"]["code"], "AuthFailure.SignatureExpire");
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn connect_failures_fail_over_to_the_next_endpoint() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml = config_yaml(
        &format!("http://{dead}"),
        "      []",
        &format!("      fallback_endpoints: [\"{}\"]", mock.endpoint()),
    );
    let gw = TestGateway::start(compile(&yaml)).await;
    for i in 0..5 {
        let a = gw.post("/v1/sms/send", &send_body(&format!("+86138001380{i:02}"))).await;
        assert_eq!(a.status, 200, "{:#}", a.json);
    }
    let seen = mock.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.signature_valid && s.header("host") == mock.addr.to_string()));
    let metrics = gw.gateway.metrics().render();
    // Three connect failures open the dead endpoint's breaker; later sends skip it.
    assert!(metrics.contains(r#"smsgate_upstream_retries_total{reason="connect"} 3"#), "{metrics}");
}

#[tokio::test]
async fn the_next_key_pair_takes_over_when_tencent_refuses_the_current_one() {
    let mock = MockTencent::start("the-new-secret-key").await;
    mock.strict_signatures();
    let extra = "      next_credentials: { accessKeyId: AKIDnext, accessKeySecret: the-new-secret-key }";
    let gw = gateway(&mock, extra).await;
    assert_eq!(gw.post("/v1/sms/send", &send_body("+8613800138000")).await.status, 200);
    assert_eq!(mock.seen().len(), 2);
    assert!(mock.seen()[1].header("authorization").contains("Credential=AKIDnext/"));
    // From then on the working pair is used first.
    assert_eq!(gw.post("/v1/sms/send", &send_body("+8613800138001")).await.status, 200);
    assert_eq!(mock.seen().len(), 3);

    // Without a next pair, a credential error is the operator's: 502 with Tencent's code.
    let mock = MockTencent::start("the-new-secret-key").await;
    mock.strict_signatures();
    let gw = gateway(&mock, "").await;
    let a = gw.post("/v1/sms/send", &send_body("+8613800138000")).await;
    a.assert_error(502, "upstream_rejected");
    assert_eq!(a.json["error"]["upstream"]["code"], "AuthFailure.SignatureFailure");
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn each_number_gets_its_kind_of_template() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let extra = "      international_templates:\n        - { usageType: SignIn, templateCode: \"5550\" }\n      international_sign_name: Acme Global";
    let gw = gateway(&mock, extra).await;
    assert_eq!(gw.post("/v1/sms/send", &send_body("+8613800138000")).await.status, 200);
    assert_eq!(gw.post("/v1/sms/send", &send_body("+14155550100")).await.status, 200);
    let seen = mock.seen();
    assert_eq!(
        (seen[0].body["TemplateId"].as_str(), seen[0].body["SignName"].as_str()),
        (Some("1110"), Some("腾讯云"))
    );
    assert_eq!(
        (seen[1].body["TemplateId"].as_str(), seen[1].body["SignName"].as_str()),
        (Some("5550"), Some("Acme Global"))
    );

    // No international Generic: an international number never falls back to a mainland template.
    let a = gw.post("/v1/sms/send", &native("+14155550101", "Register", "1")).await;
    a.assert_error(422, "no_template");
    let a = gw.post("/v1/sms/send", &native("+8613800138001", "Register", "1")).await;
    assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some("1113")), "mainland Generic");
    assert_eq!(mock.seen().len(), 3);
}
