//! Aliyun SMS through the real path: a gateway on 127.0.0.1:0 with an Aliyun-only tenant, sending to the
//! mock Aliyun (`common::aliyun_mock`), which checks every V3 signature with its own verifier. The signature
//! is also recomputed by Alibaba Cloud's official Python SDK signer (`tests/python/aliyun_sign.py`) for a
//! request as the mock received it. Then Aliyun's answers classified end to end, dry runs and `explain`
//! redacted, SmsReport pushes counted as receipts, and `check`'s refusals of Aliyun sections.

use crate::common::aliyun_mock::{AliyunReply, MockAliyun, ALIYUN_KEY_ID};
use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const SIGN_NAME: &str = "阿里云短信测试";
/// SignIn's templates: mainland China numbers, others.
const SIGN_IN_CHINA: &str = "SMS_154950909";
const SIGN_IN_OVERSEAS: &str = "SMS_200000001";
const GENERIC: &str = "SMS_154950999";
const STATUS_SECRET: &str = "aliyun-status-acme-0123456789";
const CONVERSION: &str = "    conversion: { window: 1m }";
const ACK: &str = r#"{"code":0,"msg":"接收成功"}"#;

/// Tenant `acme` with an `aliyun:` section only (Logto's connector JSON plus smsgate's keys) against
/// `endpoint`; `aliyun_extra` are lines of the aliyun section (6 spaces), `tenant_extra` tenant lines (4).
fn yaml(endpoint: &str, aliyun_extra: &str, tenant_extra: &str) -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:0
  max_body_bytes: 65536
tenants:
  acme:
    tokens: ["{TOKEN}"]
    default_country: CN
    aliyun:
      accessKeyId: {ALIYUN_KEY_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: {SIGN_NAME}
      templates:
        - {{ type: 2, usageType: SignIn, templateCode: {{ china: {SIGN_IN_CHINA}, overseas: {SIGN_IN_OVERSEAS} }} }}
        - {{ usageType: Generic, templateCode: {GENERIC} }}
      endpoint: {endpoint}
      timeout: 1s
{aliyun_extra}
    limits:
      - {{ name: burst, key: phone, limit: 1, per: 30s }}
      - {{ name: tenant, key: tenant, limit: 100, per: 1s }}
{tenant_extra}
"#
    )
}

async fn setup(aliyun_extra: &str, tenant_extra: &str) -> (MockAliyun, TestGateway) {
    let mock = MockAliyun::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&yaml(&mock.endpoint(), aliyun_extra, tenant_extra))).await;
    (mock, gw)
}

async fn send(gw: &TestGateway, phone: &str, code: &str) -> Answer {
    gw.post("/v1/sms/send", &native(phone, "SignIn", code)).await
}

/// POSTs `body` to `path` without a token; the status and the body as text.
async fn post_raw(gw: &TestGateway, path: &str, body: &str) -> (u16, String) {
    let response = gw
        .http
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn native_send_reaches_aliyun_signed_with_its_parameters_in_the_query() {
    let (mock, gw) = setup("", "").await;
    let a = send(&gw, "+8613800138000", "123456").await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    assert_eq!(a.json["status"], "sent");
    assert_eq!(a.json["tenant"], "acme");
    assert_eq!(a.json["template_id"], SIGN_IN_CHINA);
    assert_eq!(a.json["upstream"]["serial_no"], "100000^0", "the mock's BizId is the receipt");
    assert_eq!(a.json["upstream"]["request_id"], "MOCK-0001-REQ");

    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(s.signature_valid, "V3 signature verifies independently: {s:#?}");
    assert_eq!(s.biz_id.as_deref(), Some("100000^0"));
    assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/"));
    assert!(s.body.is_empty(), "everything is in the query");
    // Exactly SendSms's parameters (no OutId), each in Aliyun's format.
    assert_eq!(s.param_names(), ["PhoneNumbers", "SignName", "TemplateCode", "TemplateParam"]);
    assert_eq!(s.param("PhoneNumbers"), Some("13800138000"), "mainland: 11 digits, no +86");
    assert_eq!(s.param("SignName"), Some(SIGN_NAME));
    assert_eq!(s.param("TemplateCode"), Some(SIGN_IN_CHINA));
    assert_eq!(s.param("TemplateParam"), Some(r#"{"code":"123456"}"#));
    assert_eq!(s.header("x-acs-action"), "SendSms");
    assert_eq!(s.header("x-acs-version"), "2017-05-25");
    assert_eq!(s.header("x-acs-date"), "2024-01-02T03:04:05Z", "the injected clock");
    assert_eq!(s.header("host"), mock.addr.to_string());
    assert_eq!(s.header("x-acs-content-sha256"), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"")));
    assert!(s.header("authorization").starts_with(&format!("ACS3-HMAC-SHA256 Credential={ALIYUN_KEY_ID},")));

    // An international number: country code and number, no `+`, and the overseas template.
    let b = send(&gw, "+85291234567", "654321").await;
    assert_eq!((b.status, b.json["status"].as_str()), (200, Some("sent")), "{:#}", b.json);
    assert_eq!(b.json["template_id"], SIGN_IN_OVERSEAS);
    assert_eq!(b.json["upstream"]["serial_no"], "100001^0", "a fresh BizId per message");
    let s = &mock.seen()[1];
    assert!(s.signature_valid, "{s:#?}");
    assert_eq!(s.param("PhoneNumbers"), Some("85291234567"));
    assert_eq!(s.param("TemplateCode"), Some(SIGN_IN_OVERSEAS));
    assert_eq!(s.param("TemplateParam"), Some(r#"{"code":"654321"}"#));
    assert_ne!(s.header("x-acs-signature-nonce"), mock.seen()[0].header("x-acs-signature-nonce"));
}

#[tokio::test]
async fn logto_connector_request_is_sent_the_same_way() {
    let (mock, gw) = setup("", "").await;
    let body =
        r#"{"to":"8613800138000","type":"SignIn","payload":{"code":"654321","locale":"zh-CN"},"ip":"203.0.113.7"}"#;
    let a = gw.post("/v1/logto/sms", body).await;
    assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some(SIGN_IN_CHINA)), "{:#}", a.json);
    // A usage type without its own template falls back to Generic.
    let a = gw.post("/v1/logto/sms", r#"{"to":"14155550100","type":"Register","payload":{"code":"111222"}}"#).await;
    assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some(GENERIC)), "{:#}", a.json);
    assert_eq!(a.json["upstream"]["serial_no"], "100001^0");

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.signature_valid), "{seen:#?}");
    assert_eq!(seen[0].param("PhoneNumbers"), Some("13800138000"));
    assert_eq!(seen[0].param("TemplateParam"), Some(r#"{"code":"654321"}"#));
    assert_eq!(seen[0].param("TemplateCode"), Some(SIGN_IN_CHINA));
    assert_eq!(seen[1].param("PhoneNumbers"), Some("14155550100"));
    assert_eq!(seen[1].param("TemplateCode"), Some(GENERIC));
    assert_eq!(seen[1].param("TemplateParam"), Some(r#"{"code":"111222"}"#));
}

/// The Authorization Alibaba Cloud's own signer (alibabacloud-tea-openapi) computes for `request`.
fn sdk_authorization(python: &std::path::Path, request: &serde_json::Value) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/aliyun_sign.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} {}: {e}", python.display(), script.display()));
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "aliyun_sign.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

/// THE SDK PROOF: the official SDK's signer, given a request exactly as the mock received it from smsgate,
/// computes byte for byte the Authorization smsgate sent; a tampered query gets another one.
#[tokio::test]
async fn the_official_sdk_signs_smsgates_request_identically() {
    let Some(python) = crate::common::python::interpreter() else { return };
    let mock = MockAliyun::start(SECRET_KEY).await;
    // A sign name with characters the encodings disagree on (space, `+`, `*`, `~`, `/`, `&`, `=`).
    let odd = yaml(&mock.endpoint(), "", "").replace(SIGN_NAME, "\"阿里 云+*~/&=短信\"");
    let gw = TestGateway::start(compile(&odd)).await;
    // A request whose signature the mock's own verifier refuses gets SignatureDoesNotMatch: no `sent` below.
    mock.strict_signatures();
    let answer = gw.post("/v1/sms/send", &native("+85291234567", "SignIn", "Ab12cd")).await;
    assert_eq!(answer.status, 200, "{:#}", answer.json);
    assert_eq!(mock.seen()[0].param("SignName"), Some("阿里 云+*~/&=短信"));
    assert_eq!(send(&gw, "+8613800138000", "123456").await.status, 200);
    for s in mock.seen() {
        assert!(s.signature_valid, "{s:#?}");
        let sent = s.header("authorization").to_owned();
        let request = |query: serde_json::Value| {
            serde_json::json!({"method": s.method, "path": s.path, "query": query, "headers": s.headers,
                "body": String::from_utf8(s.body.clone()).unwrap(), "access_key_id": ALIYUN_KEY_ID,
                "access_key_secret": SECRET_KEY})
        };
        // The raw query as received, and the decoded pairs: the same signature either way.
        assert_eq!(sdk_authorization(&python, &request(serde_json::json!(s.raw_query))), sent, "{s:#?}");
        assert_eq!(sdk_authorization(&python, &request(serde_json::json!(s.query))), sent, "{s:#?}");

        let phone = s.param("PhoneNumbers").unwrap();
        let tampered = s.raw_query.replace(phone, &phone.replace('1', "2"));
        assert_ne!(tampered, s.raw_query);
        assert_ne!(sdk_authorization(&python, &request(serde_json::json!(tampered))), sent, "tampered number");
        let mut reordered = s.query.clone();
        reordered.reverse();
        assert_eq!(sdk_authorization(&python, &request(serde_json::json!(reordered))), sent, "order-free");
        let other_code = s.raw_query.replace("TemplateParam=%7B", "TemplateParam=%7B%20");
        assert_ne!(sdk_authorization(&python, &request(serde_json::json!(other_code))), sent, "tampered code");
    }
}

#[tokio::test]
async fn aliyun_refusals_are_classified_end_to_end() {
    let (mock, gw) = setup("", "").await;
    mock.reply(AliyunReply::Error(200, "isv.MOBILE_NUMBER_ILLEGAL"));
    let a = send(&gw, "+8613800138001", "123456").await;
    a.assert_error(400, "invalid_phone");
    assert_eq!(a.json["error"]["upstream"]["code"], "isv.MOBILE_NUMBER_ILLEGAL", "{:#}", a.json);

    mock.reply(AliyunReply::Error(200, "isv.BUSINESS_LIMIT_CONTROL"));
    let a = send(&gw, "+8613800138002", "123456").await;
    a.assert_error(429, "upstream_rate_limited");
    assert_eq!(a.header("retry-after"), Some("3600"));

    // The account's balance: the operator's to fix; one provider, so nothing to fail over to.
    mock.reply(AliyunReply::Error(400, "isv.AMOUNT_NOT_ENOUGH"));
    let a = send(&gw, "+8613800138003", "123456").await;
    a.assert_error(502, "upstream_rejected");
    assert_eq!(a.json["error"]["upstream"]["code"], "isv.AMOUNT_NOT_ENOUGH");
    assert_eq!(a.json["error"]["upstream"]["request_id"], "MOCK-0003-REQ");
    assert!(!a.json.to_string().contains("mock says"), "Aliyun's message never reaches a caller: {:#}", a.json);
    assert_eq!(mock.sent(), 3, "each refusal was one request, none retried");

    // Nothing was sent for the account's reason: the number's quota came back, the next send goes out.
    assert_eq!(send(&gw, "+8613800138003", "123456").await.status, 200);
    assert_eq!(mock.sent(), 4);
}

/// Answers after which the SMS may have gone out are `maybe_sent`, never a failure (a caller would retry into
/// a second SMS), each one request at the mock, the number's quota kept.
#[tokio::test]
async fn answers_that_may_have_sent_are_maybe_sent_never_failures() {
    let (mock, gw) = setup("", "").await;
    let replies = [
        AliyunReply::Error(200, "isp.SYSTEM_ERROR"),
        AliyunReply::Error(500, "InternalError"),
        AliyunReply::Raw(502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        AliyunReply::Truncated,
    ];
    assert_maybe_sent_once_each(&mock, &gw, &replies).await;
}

/// The request was read whole by Aliyun, then the connection dropped, or no answer came within the deadline:
/// it may have gone out, so `maybe_sent`, one request only.
///
/// Found by this test: SendSms's body is empty, and `net::proxy::WrittenBody` marked a request written only
/// when its body was polled, which hyper never does for a body that `is_end_stream()` from the start: a
/// connection dropped after Aliyun read the request was retried (two SMS), and a silent Aliyun ended in 504
/// `upstream_timeout` with the quota given back.
#[tokio::test]
async fn regression_a_dropped_or_unanswered_request_is_maybe_sent_and_never_sent_again() {
    let (mock, gw) = setup("", "").await;
    assert_maybe_sent_once_each(&mock, &gw, &[AliyunReply::Drop, AliyunReply::Slow(Duration::from_secs(3))]).await;
}

async fn assert_maybe_sent_once_each(mock: &MockAliyun, gw: &TestGateway, replies: &[AliyunReply]) {
    for (i, reply) in replies.iter().enumerate() {
        mock.reply(reply.clone());
        let phone = format!("+861380013800{i}");
        let a = send(gw, &phone, "123456").await;
        assert_eq!((a.status, a.json["status"].as_str()), (200, Some("maybe_sent")), "{reply:?}: {:#}", a.json);
        assert!(a.json.get("upstream").is_none(), "no receipt: {:#}", a.json);
        assert_eq!(mock.sent(), i + 1, "{reply:?}: exactly one request, never sent again");
        // The quota it took is kept: it may have gone out.
        send(gw, &phone, "654321").await.assert_error(429, "rate_limited");
    }
    let m = metrics(gw).await;
    let maybe_sent = r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="maybe_sent"}"#;
    assert_eq!(sample(&m, maybe_sent), replies.len() as f64, "{m}");
}

#[tokio::test]
async fn api_throttling_is_retried_with_a_fresh_signature() {
    let (mock, gw) = setup("      max_attempts: 2", "").await;
    mock.reply(AliyunReply::Error(503, "Throttling.User"));
    let a = send(&gw, "+8613800138000", "123456").await;
    assert_eq!((a.status, a.json["status"].as_str()), (200, Some("sent")), "{:#}", a.json);
    assert_eq!(a.json["upstream"]["serial_no"], "100000^0");
    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "the throttled request and its retry");
    assert!(seen.iter().all(|s| s.signature_valid), "{seen:#?}");
    assert_eq!(seen[0].raw_query, seen[1].raw_query, "the same message");
    assert_ne!(seen[0].header("x-acs-signature-nonce"), seen[1].header("x-acs-signature-nonce"), "a fresh nonce");
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_upstream_retries_total{reason="throttled"}"#), 1.0, "{m}");

    // Throttled on every attempt: nothing was sent, 503, and the attempts stop at max_attempts.
    mock.reply(AliyunReply::Error(503, "Throttling.User"));
    mock.reply(AliyunReply::Error(503, "Throttling.Api"));
    mock.reply(AliyunReply::Ok);
    send(&gw, "+8613800138001", "123456").await.assert_error(503, "upstream_unavailable");
    assert_eq!(mock.sent(), 4);
}

#[tokio::test]
async fn dry_run_sends_nothing_and_logs_neither_the_code_nor_the_number() {
    let captured = crate::common::logs::capture();
    let (mock, gw) = setup("      dry_run: true", "").await;
    let a = send(&gw, "+8613800138000", "987654").await;
    assert_eq!((a.status, a.json["status"].as_str()), (200, Some("dry_run")), "{:#}", a.json);
    assert_eq!(a.json["template_id"], SIGN_IN_CHINA);
    assert!(a.json.get("upstream").is_none(), "{:#}", a.json);
    assert_eq!(mock.sent(), 0, "nothing reaches Aliyun");

    let log = captured.text();
    let line = log.lines().find(|l| l.contains("dry run: signed, not sent")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("provider=aliyun"), "{line}");
    assert!(line.contains("TemplateParam=***"), "{line}");
    assert!(line.contains(&format!("TemplateCode={SIGN_IN_CHINA}")), "{line}");
    assert!(line.contains("PhoneNumbers=13800****00"), "{line}");
    for secret in ["987654", "13800138000", SECRET_KEY] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn explain_shows_the_aliyun_route_and_request_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    // Two providers routed by country: mainland China numbers go to Aliyun, Tencent takes the rest.
    let tencent = format!(
        "    tencent:\n      accessKeyId: {SECRET_ID}\n      accessKeySecret: ${{ACME_SECRET}}\n      signName: 腾讯云\n      \
         sdkAppId: \"1400006666\"\n      region: ap-guangzhou\n      templates: [{{ usageType: Generic, templateCode: \"1113\" }}]\n      \
         endpoint: http://127.0.0.1:9\n    routes:\n      - {{ countries: [CN], via: [aliyun, tencent] }}\n      \
         - {{ via: [tencent] }}"
    );
    std::fs::write(&path, yaml("http://127.0.0.1:9", "", &tencent)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["explain", "--config"])
        .arg(&path)
        .args(["--tenant", "acme", "--phone", "+8613800138000", "--usage", "SignIn", "--code", "654321"])
        .env("ACME_SECRET", SECRET_KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    let route = text.lines().find(|l| l.starts_with("route")).unwrap_or_else(|| panic!("no route line:\n{text}"));
    assert!(route.contains("routes[0], matched by") && route.ends_with("-> aliyun"), "{route}\n{text}");
    let sign_name: String = url::form_urlencoded::byte_serialize(SIGN_NAME.as_bytes()).collect();
    let expected = format!(
        "POST http://127.0.0.1:9/?PhoneNumbers=13800****00&SignName={sign_name}&TemplateCode={SIGN_IN_CHINA}\
         &TemplateParam=***"
    );
    assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    assert!(
        text.contains(&format!("authorization: ACS3-HMAC-SHA256 Credential={ALIYUN_KEY_ID},"))
            || text.contains(&format!("Authorization: ACS3-HMAC-SHA256 Credential={ALIYUN_KEY_ID},")),
        "{text}"
    );
    // The operator's own input is echoed on the normalize line; the request shown masks it.
    let request = text.split_once("\nupstream").unwrap_or_else(|| panic!("no upstream section:\n{text}")).1;
    assert!(!request.contains("13800138000"), "{text}");
    for secret in ["654321", SECRET_KEY] {
        assert!(!text.contains(secret), "{secret} in\n{text}");
    }

    // The rest of the world goes to Tencent, by the default route.
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["explain", "--config"])
        .arg(&path)
        .args(["--tenant", "acme", "--phone", "+14155550100", "--usage", "SignIn"])
        .env("ACME_SECRET", SECRET_KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let route = text.lines().find(|l| l.starts_with("route")).unwrap_or_else(|| panic!("no route line:\n{text}"));
    assert!(route.ends_with("-> tencent"), "{route}");
}

/// SmsReport pushes: a success naming a send's BizId is a delivery receipt, as Tencent's callback's are;
/// a wrong secret or a malformed push changes nothing; the same BizId pushed twice counts once.
#[tokio::test]
async fn sms_report_pushes_count_as_delivery_receipts() {
    let (mock, gw) = setup(&format!("      status_secret: {STATUS_SECRET}"), CONVERSION).await;
    let a = send(&gw, "+8613800138000", "123456").await;
    let b = send(&gw, "+85291234567", "123456").await;
    assert_eq!(
        (a.json["upstream"]["serial_no"].as_str(), b.json["upstream"]["serial_no"].as_str()),
        (Some("100000^0"), Some("100001^0")),
        "{:#} {:#}",
        a.json,
        b.json
    );
    assert_eq!(mock.sent(), 2);
    gw.clock.advance(Duration::from_secs(5));
    let entry = |phone: &str, success: bool, code: &str, biz_id: &str| {
        serde_json::json!({"phone_number": phone, "send_time": "2024-01-02 11:04:05",
            "report_time": "2024-01-02 11:04:10", "success": success, "err_code": code,
            "err_msg": if success { "用户接收成功" } else { "失败" }, "sms_size": "1", "biz_id": biz_id,
            "out_id": ""})
    };
    let push = serde_json::json!([
        entry("13800138000", true, "DELIVERED", "100000^0"),
        entry("85291234567", false, "MK:0001", "100001^0"),
        entry("13800138000", true, "DELIVERED", "777777^0"),
    ])
    .to_string();
    let door = format!("/v1/aliyun/status/{STATUS_SECRET}");
    assert_eq!(post_raw(&gw, &door, &push).await, (200, ACK.to_owned()));
    let success = r#"smsgate_delivery_reports_total{tenant="acme",country="CN",status="success"}"#;
    let fail = r#"smsgate_delivery_reports_total{tenant="acme",country="HK",status="fail"}"#;
    let unknown = r#"smsgate_delivery_reports_total{tenant="acme",country="",status="unknown_sid"}"#;
    let latency = r#"smsgate_receipt_latency_seconds_count{tenant="acme"}"#;
    let expected = [(success, 1.0), (fail, 1.0), (unknown, 1.0), (latency, 2.0)];
    let m = metrics(&gw).await;
    for (series, value) in expected {
        assert_eq!(sample(&m, series), value, "{series}\n{m}");
    }
    assert_eq!(sample(&m, r#"smsgate_receipt_latency_seconds_sum{tenant="acme"}"#), 10.0, "{m}");

    // Aliyun pushes again what it is not sure was taken: the same BizId counts once.
    let again = serde_json::json!([entry("13800138000", true, "DELIVERED", "100000^0")]).to_string();
    assert_eq!(post_raw(&gw, &door, &again).await, (200, ACK.to_owned()));
    // A wrong secret is an unknown route; malformed pushes are refused whole.
    let wrong = format!("/v1/aliyun/status/{}", STATUS_SECRET.replace("acme", "acmf"));
    assert_eq!(post_raw(&gw, &wrong, &again).await.0, 404);
    assert_eq!(post_raw(&gw, "/v1/tencent/status/aliyun-status-acme-0123456789", &again).await.0, 404);
    let too_many = format!("[{}]", vec![r#"{"biz_id":"100000^0","success":true}"#; 1001].join(","));
    assert!(too_many.len() < 65536, "under the body limit: refused for its count");
    let no_biz_id = serde_json::json!([{"phone_number": "13800138000", "success": true, "err_code": "DELIVERED"}]);
    for malformed in [
        entry("13800138000", true, "DELIVERED", "100000^0").to_string(),
        no_biz_id.to_string(),
        too_many,
        "[{\"biz_id\":\"100000^0\"".to_owned(),
    ] {
        let (status, text) = post_raw(&gw, &door, &malformed).await;
        assert_eq!(status, 400, "{text}: {}", &malformed[..malformed.len().min(80)]);
    }
    let after = metrics(&gw).await;
    for (series, value) in expected {
        assert_eq!(sample(&after, series), value, "{series}\n{after}");
    }
    let accepted = r#"smsgate_feedback_requests_total{route="aliyun_status",tenant="acme",outcome="accepted"}"#;
    let unknown_sid =
        r#"smsgate_feedback_requests_total{route="aliyun_status",tenant="acme",outcome="accepted_with_unknown_sid"}"#;
    assert_eq!((sample(&after, unknown_sid), sample(&after, accepted)), (1.0, 1.0), "{after}");
}

fn errors(yaml: &str) -> Vec<String> {
    match smsgate::config::Config::from_yaml(yaml, std::path::Path::new("gw.yaml"), &env()) {
        Ok(_) => panic!("config should fail:\n{yaml}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn check_refuses_bad_aliyun_sections() {
    // The base compiles, with receipts: each refusal below is its change's.
    compile(&yaml("http://127.0.0.1:9", &format!("      status_secret: {STATUS_SECRET}"), CONVERSION));

    for bad in ["SMS 154950909", "SMS-154950909", "短信模板"] {
        let errs = errors(&yaml("http://127.0.0.1:9", "", "").replace(GENERIC, &format!("\"{bad}\"")));
        assert_eq!(errs.len(), 1, "{bad}: {errs:#?}");
        assert!(
            errs[0].contains("tenants.acme.aliyun.templates[1].templateCode: expected an Aliyun TemplateCode"),
            "{bad}: {errs:#?}"
        );
    }
    let errs = errors(&yaml("http://127.0.0.1:9", "", "").replace(SIGN_IN_OVERSEAS, "\"SMS_1 \""));
    assert!(errs.iter().any(|e| e.contains("templates[0].templateCode")), "{errs:#?}");

    let no_provider = "tenants:\n  acme:\n    tokens: [\"test-token-acme-0001\"]\n    limits:\n      - { name: t, key: tenant, limit: 1, per: 1s }\n";
    let errs = errors(no_provider);
    assert!(errs.iter().any(|e| e.contains("configure at least one provider: tencent, aliyun or twilio")), "{errs:#?}");

    let errs = errors(&yaml("http://127.0.0.1:9", &format!("      status_secret: {STATUS_SECRET}"), ""));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("tenants.acme.aliyun.status_secret: delivery receipts need a `conversion:` block"),
        "{errs:#?}"
    );
    assert!(!errs[0].contains(STATUS_SECRET), "never echoed: {errs:#?}");

    let errs = errors(&yaml("http://127.0.0.1:9", "", "").replace("signName: 阿里云短信测试", "signName: \"\""));
    assert!(errs.iter().any(|e| e.contains("tenants.acme.aliyun.signName")), "{errs:#?}");
}
