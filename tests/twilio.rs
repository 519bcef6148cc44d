//! Twilio through the real path: a gateway on 127.0.0.1:0 sending to the mock Twilio Messages API (which
//! checks Basic credentials and decodes the form with code of its own), Twilio's answers end to end, dry runs
//! and `explain`, the status callbacks signed by the official `twilio` package's `RequestValidator`, and the
//! config refusals of `smsgate check`.

use crate::common::python::interpreter;
use crate::common::twilio_mock::{MockTwilio, TwilioReply};
use crate::common::*;
use base64::Engine as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const OTHER_ACCOUNT_SID: &str = "ACfedcba9876543210fedcba9876543210";
const AUTH_TOKEN: &str = "twilio-auth-token-never-logged-01";
const SERVICE_SID: &str = "MGfedcba9876543210fedcba9876543210";
const STATUS_SECRET: &str = "twilio-status-acme-0123456789abcdef";
const PUBLIC_URL: &str = "https://sms.example.com";
const PHONE: &str = "+14155550100";
/// Logto's SignIn template, with text that needs percent-encoding; Generic with the spaced placeholder.
const SIGN_IN: &str = "Your sign-in code is {{code}} & valid 5 min. 验证码";
const GENERIC: &str = "Code: {{ code }}";

/// Tenant `acme` with only a `twilio:` section against `endpoint`; `twilio_extra` are lines of the section
/// (6 spaces), `tenant_extra` tenant-level lines (4 spaces).
fn yaml(endpoint: &str, twilio_extra: &str, tenant_extra: &str) -> String {
    let text = r#"
server:
  listen: 127.0.0.1:0
  max_body_bytes: 4096
tenants:
  acme:
    tokens: ["@TOKEN@"]
    default_country: US
    twilio:
      accountSID: @ACCOUNT@
      authToken: @AUTH@
      fromMessagingServiceSID: @SERVICE@
      templates:
        - { usageType: SignIn, content: "@SIGN_IN@" }
        - { usageType: Generic, content: "@GENERIC@" }
      endpoint: @ENDPOINT@
      timeout: 2s
@TWILIO_EXTRA@
    limits:
      - { name: tenant, key: tenant, limit: 100, per: 1s }
@TENANT_EXTRA@
"#;
    text.replace("@TOKEN@", TOKEN)
        .replace("@ACCOUNT@", ACCOUNT_SID)
        .replace("@AUTH@", AUTH_TOKEN)
        .replace("@SERVICE@", SERVICE_SID)
        .replace("@SIGN_IN@", SIGN_IN)
        .replace("@GENERIC@", GENERIC)
        .replace("@ENDPOINT@", endpoint)
        .replace("@TWILIO_EXTRA@", twilio_extra)
        .replace("@TENANT_EXTRA@", tenant_extra)
}

/// The lines that turn on status callbacks (with the conversion loop they feed).
fn callbacks() -> (String, &'static str) {
    (format!("      status_secret: {STATUS_SECRET}\n      public_url: {PUBLIC_URL}"), "    conversion: { window: 1m }")
}

async fn setup(twilio_extra: &str, tenant_extra: &str) -> (MockTwilio, TestGateway) {
    let mock = MockTwilio::start(ACCOUNT_SID, AUTH_TOKEN).await;
    let gw = TestGateway::start(compile(&yaml(&mock.endpoint(), twilio_extra, tenant_extra))).await;
    (mock, gw)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn answered(a: &Answer) -> (u16, Option<&str>) {
    (a.status, a.json["status"].as_str())
}

#[tokio::test]
async fn a_native_send_reaches_twilio_with_logtos_form_and_basic_auth() {
    let (mock, gw) = setup("", "").await;
    let a = gw.post("/v1/sms/send", &native("(415) 555-0100", "SignIn", "123456")).await;
    assert_eq!(answered(&a), (200, Some("sent")), "{:#}", a.json);
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(s.auth_valid, "Basic credentials verify independently: {:?}", s.header("authorization"));
    assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", mock.messages_path().as_str()));
    assert!(s.header("content-type").starts_with("application/x-www-form-urlencoded"), "{:?}", s.headers);
    assert_eq!(s.header("host"), mock.addr.to_string());
    assert_eq!(
        s.form,
        pairs(&[
            ("To", PHONE),
            ("MessagingServiceSid", SERVICE_SID),
            ("Body", "Your sign-in code is 123456 & valid 5 min. 验证码"),
            ("RiskCheck", "enable"),
        ]),
        "exactly Logto's fields, in Logto's order; no StatusCallback without public_url and status_secret"
    );
    // Byte for byte what Logto's connector (URLSearchParams) writes.
    let expected = format!(
        "To=%2B14155550100&MessagingServiceSid={SERVICE_SID}\
         &Body=Your+sign-in+code+is+123456+%26+valid+5+min.+%E9%AA%8C%E8%AF%81%E7%A0%81&RiskCheck=enable"
    );
    assert_eq!(String::from_utf8_lossy(&s.body), expected);
    // The receipt is Twilio's: the message SID and the request id it answered with.
    let sid = s.sid.clone().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(a.json["upstream"]["serial_no"], sid.as_str(), "{:#}", a.json);
    assert_eq!(a.json["upstream"]["fee"], 1);
    assert!(a.json["upstream"]["request_id"].as_str().unwrap().starts_with("RQ"), "{:#}", a.json);
    assert_eq!(a.json["tenant"], "acme");

    // A second send gets a SID of its own, and Generic's spaced placeholder is filled too.
    let b = gw.post("/v1/sms/send", &native(PHONE, "ForgotPassword", "777888")).await;
    assert_eq!(answered(&b), (200, Some("sent")), "{:#}", b.json);
    let second = &mock.seen()[1];
    assert_eq!(second.field("Body"), Some("Code: 777888"));
    assert_ne!(b.json["upstream"]["serial_no"], a.json["upstream"]["serial_no"]);
    assert_eq!(b.json["upstream"]["serial_no"], second.sid.as_deref().unwrap());
}

#[tokio::test]
async fn a_logto_connector_request_sends_the_same_message() {
    let (mock, gw) = setup("", "").await;
    let body = r#"{"to":"14155550100","type":"SignIn","payload":{"code":"654321","locale":"en"},"ip":"203.0.113.7"}"#;
    let a = gw.post("/v1/logto/sms", body).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    let s = &mock.seen()[0];
    assert!(s.auth_valid);
    assert_eq!(
        s.form,
        pairs(&[
            ("To", PHONE),
            ("MessagingServiceSid", SERVICE_SID),
            ("Body", "Your sign-in code is 654321 & valid 5 min. 验证码"),
            ("RiskCheck", "enable"),
        ])
    );
}

#[tokio::test]
async fn disable_risk_check_and_status_callbacks_are_sent_as_configured() {
    let (lines, conversion) = callbacks();
    let (mock, gw) = setup(&format!("      disableRiskCheck: true\n{lines}"), conversion).await;
    let a = gw.post("/v1/sms/send", &native(PHONE, "SignIn", "123456")).await;
    assert_eq!(answered(&a), (200, Some("sent")), "{:#}", a.json);
    let s = &mock.seen()[0];
    assert_eq!(
        s.names(),
        ["To", "MessagingServiceSid", "Body", "RiskCheck", "StatusCallback"],
        "Logto's order, then the callback"
    );
    assert_eq!(s.field("RiskCheck"), Some("disable"));
    let callback = format!("{PUBLIC_URL}/v1/twilio/status/{STATUS_SECRET}");
    assert_eq!(s.field("StatusCallback"), Some(callback.as_str()));
}

#[tokio::test]
async fn a_wrong_auth_token_is_refused_by_twilio_as_the_operators_problem() {
    let mock = MockTwilio::start(ACCOUNT_SID, "another-token-than-the-gateways").await;
    let gw = TestGateway::start(compile(&yaml(&mock.endpoint(), "", ""))).await;
    let a = gw.post("/v1/sms/send", &native(PHONE, "SignIn", "123456")).await;
    a.assert_error(502, "upstream_rejected");
    assert_eq!(mock.seen().len(), 1);
    assert!(!mock.seen()[0].auth_valid, "the mock's check is real");
    assert!(mock.sent().is_empty());
    // A lenient mock takes the same request: the refusal above was the credentials'.
    mock.lenient_auth();
    let b = gw.post("/v1/sms/send", &native("+14155550101", "SignIn", "123456")).await;
    assert_eq!(answered(&b), (200, Some("sent")), "{:#}", b.json);
    assert_eq!((mock.sent().len(), mock.seen()[1].auth_valid), (1, false));
}

#[tokio::test]
async fn twilio_refusals_become_the_gateways_errors() {
    let (mock, gw) = setup("      max_attempts: 3", "").await;
    // 21211: not a valid phone number; 21408: the country is not enabled (the operator's Geo Permissions).
    mock.reply(TwilioReply::Error(400, 21211));
    gw.post("/v1/sms/send", &native(PHONE, "SignIn", "1")).await.assert_error(400, "invalid_phone");
    mock.reply(TwilioReply::Error(400, 21408));
    let a = gw.post("/v1/sms/send", &native("+14155550101", "SignIn", "1")).await;
    a.assert_error(502, "upstream_rejected");
    assert_eq!(mock.seen().len(), 2, "refusals are not retried");
    assert!(mock.sent().is_empty());
    let m = metrics(&gw).await;
    assert!(!m.contains("mock Twilio says"), "Twilio's text never reaches a metric");
    assert!(!a.json.to_string().contains("mock Twilio says"), "nor the caller: {:#}", a.json);
}

#[tokio::test]
async fn a_throttled_account_is_retried_and_then_sent() {
    let (mock, gw) = setup("      max_attempts: 2", "").await;
    mock.reply(TwilioReply::THROTTLED);
    let a = gw.post("/v1/sms/send", &native(PHONE, "SignIn", "123456")).await;
    assert_eq!(answered(&a), (200, Some("sent")), "{:#}", a.json);
    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "the 429 (code 20429, never processed) was retried once");
    assert_eq!((seen[0].sid.as_deref(), seen[0].form == seen[1].form), (None, true), "the same message again");
    assert_eq!(a.json["upstream"]["serial_no"], seen[1].sid.as_deref().unwrap());

    // Throttled every time: nothing was sent, the caller may try again.
    mock.reply(TwilioReply::THROTTLED);
    mock.reply(TwilioReply::THROTTLED);
    gw.post("/v1/sms/send", &native("+14155550101", "SignIn", "1")).await.assert_error(503, "upstream_unavailable");
    assert_eq!(mock.seen().len(), 4, "max_attempts: 2 attempts, no more");
}

/// classify.rs: 30450 (SMS Pumping Protection blocked the destination) is `RecipientThrottle`, answered 429
/// `upstream_rate_limited` with Retry-After at the end of its documented 30-minute window, whether Twilio
/// refuses the create with it or creates the message already `failed` with it.
#[tokio::test]
async fn a_pumping_protection_block_is_upstream_rate_limited_for_its_window() {
    let (mock, gw) = setup("      max_attempts: 3", "").await;
    mock.reply(TwilioReply::Error(400, 30450));
    let a = gw.post("/v1/sms/send", &native(PHONE, "SignIn", "1")).await;
    a.assert_error(429, "upstream_rate_limited");
    assert_eq!(a.header("retry-after"), Some("1800"), "{:?}", a.headers);
    mock.reply(TwilioReply::CreatedAs("failed", Some(30450)));
    let b = gw.post("/v1/sms/send", &native("+14155550101", "SignIn", "1")).await;
    b.assert_error(429, "upstream_rate_limited");
    assert_eq!(b.header("retry-after"), Some("1800"));
    assert_eq!(mock.seen().len(), 2, "not retried inside the send");
}

#[tokio::test]
async fn answers_that_may_hide_a_sent_message_are_maybe_sent_never_failures() {
    let (mock, gw) = setup("      max_attempts: 3", "").await;
    for (i, reply) in [
        TwilioReply::Raw(500, "text/html", "<html><body>Internal Server Error</body></html>"),
        TwilioReply::Drop,
        TwilioReply::Truncated,
        TwilioReply::Slow(Duration::from_secs(4)),
        TwilioReply::Error(503, 20503),
    ]
    .into_iter()
    .enumerate()
    {
        let before = mock.seen().len();
        mock.reply(reply.clone());
        let a = gw.post("/v1/sms/send", &native(&format!("+1415555010{i}"), "SignIn", "123456")).await;
        assert_eq!(answered(&a), (200, Some("maybe_sent")), "{reply:?}: {:#}", a.json);
        assert!(a.json.get("upstream").is_none(), "no receipt to show: {:#}", a.json);
        assert_eq!(mock.seen().len(), before + 1, "{reply:?}: one request, never sent again");
    }
}

#[tokio::test]
async fn a_dry_run_reaches_nothing() {
    let (mock, gw) = setup("      dry_run: true", "").await;
    let a = gw.post("/v1/sms/send", &native(PHONE, "SignIn", "123456")).await;
    assert_eq!(answered(&a), (200, Some("dry_run")), "{:#}", a.json);
    assert!(a.json.get("upstream").is_none(), "{:#}", a.json);
    let b = gw.post("/v1/logto/sms", r#"{"to":"14155550100","type":"SignIn","payload":{"code":"1"}}"#).await;
    assert_eq!(b.status, 200, "{:#}", b.json);
    assert!(mock.seen().is_empty(), "nothing reached Twilio: {:?}", mock.seen());
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smsgate"));
    c.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("SMSGATE_CONFIG").env_remove("RUST_LOG");
    c
}

/// Writes `yaml` to a temporary folder: the folder (kept alive by the caller) and the file.
fn config_file(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

#[test]
fn explain_shows_the_twilio_request_without_credentials_or_code() {
    let endpoint = "http://127.0.0.1:9";
    let (lines, conversion) = callbacks();
    let (_dir, path) = config_file(&yaml(endpoint, &lines, conversion));
    let run = |json: bool| {
        let mut command = bin();
        command.arg("explain").arg("--config").arg(&path);
        command.args(["--tenant", "acme", "--phone", "4155550100", "--usage", "SignIn", "--code", "804713"]);
        if json {
            command.arg("--json");
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let text = run(false);
    let messages = format!("POST {endpoint}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json");
    for expected in [
        "normalize  4155550100 -> +14155550100 (country US)",
        messages.as_str(),
        "Authorization: Basic **REDACTED**",
        "Content-Type: application/x-www-form-urlencoded",
        "Body=***",
        &format!("MessagingServiceSid={SERVICE_SID}"),
        "RiskCheck=enable",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let body = text.lines().find(|l| l.starts_with("To=")).unwrap_or_else(|| panic!("a form body line in\n{text}"));
    assert!(!body.contains("5550100"), "the number masked in the body: {body}");
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    assert_eq!(json["provider"], "twilio", "{json:#}");
    assert_eq!(json["request"]["headers"]["Authorization"], "Basic **REDACTED**", "{json:#}");
    assert!(json["request"]["body"].as_str().unwrap().contains("Body=***"), "{json:#}");

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    let token_b64 = base64::engine::general_purpose::STANDARD.encode(AUTH_TOKEN);
    for output in [&text, &json.to_string()] {
        for secret in [AUTH_TOKEN, basic.as_str(), token_b64.as_str(), "804713"] {
            assert!(!output.contains(secret), "{secret:?} shown in\n{output}");
        }
    }
}

/// `smsgate check` on one mistake each: the file fails, naming the key to fix, and never echoes the token.
#[test]
fn check_refuses_a_bad_twilio_section() {
    let base = yaml("https://api.twilio.com", "", "");
    let (lines, conversion) = callbacks();
    let cases = [
        (
            base.replace(ACCOUNT_SID, "AC0123456789abcdef"),
            "tenants.acme.twilio.accountSID: expected a Twilio SID: AC and 32 letters or digits",
        ),
        (base.replace(ACCOUNT_SID, SERVICE_SID), "tenants.acme.twilio.accountSID: expected a Twilio SID: AC"),
        (
            base.replace(SIGN_IN, "Your sign-in code is {{token}}"),
            "tenants.acme.twilio.templates[0].content: the text must hold {{code}}",
        ),
        (
            yaml(
                "https://api.twilio.com",
                &lines.replace(&format!("\n      public_url: {PUBLIC_URL}"), ""),
                conversion,
            ),
            "tenants.acme.twilio.public_url: status callbacks need the URL Twilio reaches the gateway at",
        ),
    ];
    for (text, expected) in cases {
        assert_ne!(text, base, "the case changed the file");
        let (_dir, path) = config_file(&text);
        let out = bin().arg("check").arg("--config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(stderr.contains(expected), "missing {expected:?} in\n{stderr}");
        assert!(stderr.lines().next().unwrap().starts_with(&format!("{}:", path.display())), "{stderr}");
        assert!(!stderr.contains(AUTH_TOKEN), "{stderr}");
    }
    // The same file with callbacks configured whole passes: the refusals above were the mistakes.
    let (_dir, path) = config_file(&yaml("https://api.twilio.com", &lines, conversion));
    let out = bin().arg("check").arg("--config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The signature the official `twilio` package's `RequestValidator` computes for a POST of `params` to `url`
/// (tests/python/twilio_sign.py), or None when Python is not there (and not required).
fn python_signature(url: &str, params: &[(String, String)], auth_token: &str) -> Option<String> {
    let python = interpreter()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/twilio_sign.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!({"url": url, "params": params, "auth_token": auth_token}).to_string();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "twilio_sign.py: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// A form body as Twilio writes one, encoded here (every byte but unreserved ones as `%XX`).
fn form_body(params: &[(String, String)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// A status callback for message `sid` as Twilio posts it (field set and order of a real one).
fn callback(sid: &str, status: &str, account: &str, to: &str) -> Vec<(String, String)> {
    pairs(&[
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", to),
        ("MessagingServiceSid", SERVICE_SID),
        ("MessageSid", sid),
        ("AccountSid", account),
        ("From", "+15017122661"),
        ("ApiVersion", "2010-04-01"),
    ])
}

async fn post_callback(
    gw: &TestGateway,
    secret: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> (u16, String) {
    let mut request = gw
        .http
        .post(gw.url(&format!("/v1/twilio/status/{secret}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(params));
    if let Some(signature) = signature {
        request = request.header("x-twilio-signature", signature);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn error_code(text: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("JSON error, got {text:?}"));
    json["error"]["code"].as_str().unwrap_or("<none>").to_owned()
}

const DELIVERED: &str = r#"smsgate_delivery_reports_total{tenant="acme",country="US",status="success"}"#;
const FAILED: &str = r#"smsgate_delivery_reports_total{tenant="acme",country="US",status="fail"}"#;
const REPEATED: &str = r#"smsgate_delivery_reports_total{tenant="acme",country="US",status="repeated"}"#;
const UNKNOWN: &str = r#"smsgate_delivery_reports_total{tenant="acme",country="",status="unknown_sid"}"#;
const RECEIPTS: &str = r#"smsgate_receipt_latency_seconds_count{tenant="acme"}"#;

/// THE SDK PROOF: callbacks signed by the official `twilio` package over the configured callback URL are
/// accepted and counted as Tencent's receipts are; anything not signed so is refused and counts nothing.
#[tokio::test]
async fn status_callbacks_signed_by_the_twilio_package_count_as_deliveries() {
    if interpreter().is_none() {
        return;
    }
    let (lines, conversion) = callbacks();
    let (mock, gw) = setup(&lines, conversion).await;
    let a = gw.post("/v1/sms/send", &native(PHONE, "SignIn", "123456")).await;
    assert_eq!(answered(&a), (200, Some("sent")), "{:#}", a.json);
    let sid = a.json["upstream"]["serial_no"].as_str().unwrap().to_owned();
    assert_eq!(Some(sid.as_str()), mock.seen()[0].sid.as_deref());
    gw.clock.advance(Duration::from_secs(7));
    let url = format!("{PUBLIC_URL}/v1/twilio/status/{STATUS_SECRET}");
    let sign = |params: &[(String, String)], token: &str| python_signature(&url, params, token).unwrap();
    let delivered = callback(&sid, "delivered", ACCOUNT_SID, PHONE);
    let good = sign(&delivered, AUTH_TOKEN);

    // Refused, before anything is counted: one parameter changed after signing, another token, the URL the
    // request reached rather than the configured one, no signature.
    let mut tampered = delivered.clone();
    tampered[3].1 = "+14155550199".into();
    let local_url = gw.url(&format!("/v1/twilio/status/{STATUS_SECRET}"));
    let refusals = [
        (tampered.clone(), Some(good.clone())),
        (delivered.clone(), Some(sign(&delivered, "some-other-auth-token-0123456"))),
        (delivered.clone(), Some(python_signature(&local_url, &delivered, AUTH_TOKEN).unwrap())),
        (delivered.clone(), Some(format!("{}x", &good[..good.len() - 1]))),
        (delivered.clone(), None),
    ];
    for (params, signature) in &refusals {
        let (status, text) = post_callback(&gw, STATUS_SECRET, params, signature.as_deref()).await;
        assert_eq!((status, error_code(&text).as_str()), (401, "invalid_signature"), "{signature:?}: {text}");
    }
    // Validly signed, but for another account: not ours.
    let foreign = callback(&sid, "delivered", OTHER_ACCOUNT_SID, PHONE);
    let (status, text) = post_callback(&gw, STATUS_SECRET, &foreign, Some(&sign(&foreign, AUTH_TOKEN))).await;
    assert_eq!((status, error_code(&text).as_str()), (401, "invalid_signature"), "{text}");
    // A wrong secret is an unknown route, whatever it carries.
    let wrong = "twilio-status-acme-0123456789abcdeX";
    let signed_wrong = python_signature(&format!("{PUBLIC_URL}/v1/twilio/status/{wrong}"), &delivered, AUTH_TOKEN);
    let (status, _) = post_callback(&gw, wrong, &delivered, signed_wrong.as_deref()).await;
    assert_eq!(status, 404);
    let m = metrics(&gw).await;
    for series in [DELIVERED, FAILED, REPEATED, UNKNOWN, RECEIPTS] {
        assert_eq!(sample(&m, series), 0.0, "{series} counted by a refused callback\n{m}");
    }
    let refused = r#"smsgate_feedback_requests_total{route="twilio_status",tenant="acme",outcome="invalid_signature"}"#;
    assert_eq!(sample(&m, refused), 6.0, "{m}");

    // An intermediate status is accepted (Twilio would retry anything else) and not counted.
    let sent = callback(&sid, "sent", ACCOUNT_SID, PHONE);
    let (status, text) = post_callback(&gw, STATUS_SECRET, &sent, Some(&sign(&sent, AUTH_TOKEN))).await;
    assert_eq!((status, text.as_str()), (204, ""));
    let m = metrics(&gw).await;
    for series in [DELIVERED, FAILED, REPEATED, UNKNOWN, RECEIPTS] {
        assert_eq!(sample(&m, series), 0.0, "{series} counted by an intermediate status\n{m}");
    }

    // The genuine callback: 204, one delivery, its latency from the send.
    let (status, text) = post_callback(&gw, STATUS_SECRET, &delivered, Some(&good)).await;
    assert_eq!((status, text.as_str()), (204, ""));
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, DELIVERED), 1.0, "{m}");
    assert_eq!(sample(&m, RECEIPTS), 1.0, "{m}");
    assert_eq!(sample(&m, r#"smsgate_receipt_latency_seconds_sum{tenant="acme"}"#), 7.0, "{m}");
    let accepted = r#"smsgate_feedback_requests_total{route="twilio_status",tenant="acme",outcome="accepted"}"#;
    assert_eq!(sample(&m, accepted), 2.0, "{m}");
    // Twilio retries a callback: counted once.
    assert_eq!(post_callback(&gw, STATUS_SECRET, &delivered, Some(&good)).await.0, 204);
    let m = metrics(&gw).await;
    assert_eq!((sample(&m, DELIVERED), sample(&m, REPEATED)), (1.0, 1.0), "{m}");

    // A second message that failed (with Twilio's error code) counts as a failure.
    let b = gw.post("/v1/sms/send", &native("+14155550101", "SignIn", "222222")).await;
    let sid_b = b.json["upstream"]["serial_no"].as_str().unwrap().to_owned();
    let mut failed = callback(&sid_b, "undelivered", ACCOUNT_SID, "+14155550101");
    failed.push(("ErrorCode".into(), "30003".into()));
    let (status, _) = post_callback(&gw, STATUS_SECRET, &failed, Some(&sign(&failed, AUTH_TOKEN))).await;
    assert_eq!(status, 204);
    let m = metrics(&gw).await;
    assert_eq!((sample(&m, DELIVERED), sample(&m, FAILED)), (1.0, 1.0), "{m}");
    // A callback for a SID the gateway never sent is accepted and counted unknown.
    let stranger = callback("SM99999999999999999999999999999999", "delivered", ACCOUNT_SID, PHONE);
    let (status, _) = post_callback(&gw, STATUS_SECRET, &stranger, Some(&sign(&stranger, AUTH_TOKEN))).await;
    assert_eq!(status, 204);
    assert_eq!(sample(&metrics(&gw).await, UNKNOWN), 1.0);
}
