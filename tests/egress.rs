//! Egress through an HTTP proxy, with a real proxy on loopback (tests/common/proxy.rs) in front of the mock
//! Tencent: CONNECT tunnels to an https mock (a test CA trusted through `tencent.ca_file`, TLS end to end),
//! absolute-form requests to an http one, `HTTPS_PROXY` / `NO_PROXY` from the environment, and proxies that
//! are down, refuse or say nothing: a connect failure (`upstream_unavailable`, nothing sent), never a hang.

use crate::common::mock::MockTencent;
use crate::common::proxy::{Mode, TestProxy};
use crate::common::tls::TestCa;
use crate::common::*;
use std::collections::HashMap;
use std::path::Path;

const AUTH: &str = "Basic dXNlcjpwdw=="; // user:pw

fn compile_with(yaml: &str, extra_env: &[(&str, &str)]) -> smsgate::Config {
    let mut env = env();
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    smsgate::Config::from_yaml(yaml, Path::new("test.yaml"), &env).unwrap_or_else(|e| panic!("config: {e}"))
}

fn tencent_keys(keys: &[(&str, String)]) -> String {
    keys.iter().map(|(k, v)| format!("      {k}: \"{v}\"\n")).collect()
}

#[tokio::test]
async fn send_goes_through_a_connect_tunnel_with_tls_end_to_end() {
    let ca = TestCa::new();
    let mock = MockTencent::start_tls(SECRET_KEY, &ca).await;
    let proxy = TestProxy::start(Mode::Relay, Some(AUTH)).await;
    let extra = tencent_keys(&[
        ("proxy", format!("http://user:pw@{}", proxy.addr)),
        ("ca_file", ca.pem_path.display().to_string()),
    ]);
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, &extra))).await;

    let answer = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    assert_eq!((answer.status, answer.json["status"].as_str()), (200, Some("sent")), "{:#}", answer.json);

    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].signature_valid, "signed for the endpoint's own host, through the tunnel");
    assert_eq!(seen[0].header("host"), mock.addr.to_string());
    let asked = proxy.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].request_line, format!("CONNECT {} HTTP/1.1", mock.addr));
    assert_eq!(asked[0].proxy_authorization.as_deref(), Some(AUTH));
    // The proxy carried the TLS session, never the request in clear.
    let carried = proxy.carried();
    assert!(carried.len() > 100, "the request went through the tunnel");
    for clear in [&b"SendSms"[..], b"13800138000", b"123456", SECRET_ID.as_bytes()] {
        assert!(
            !carried.windows(clear.len()).any(|w| w == clear),
            "{} crossed the proxy in clear",
            String::from_utf8_lossy(clear)
        );
    }
}

#[tokio::test]
async fn https_endpoint_without_the_test_ca_is_refused_by_tls() {
    // The test CA is trusted only through ca_file: without it the handshake fails, and nothing is sent.
    let ca = TestCa::new();
    let mock = MockTencent::start_tls(SECRET_KEY, &ca).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, ""))).await;
    let answer = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    answer.assert_error(503, "upstream_unavailable");
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn plain_http_endpoint_goes_in_absolute_form_with_the_proxy_credentials() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let proxy = TestProxy::start(Mode::Relay, Some(AUTH)).await;
    let extra = tencent_keys(&[("proxy", format!("http://user:pw@{}", proxy.addr))]);
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, &extra))).await;
    let answer = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    assert_eq!(answer.status, 200, "{:#}", answer.json);
    let asked = proxy.asked();
    assert_eq!(asked[0].request_line, format!("POST http://{}/ HTTP/1.1", mock.addr));
    assert_eq!(asked[0].proxy_authorization.as_deref(), Some(AUTH));
    assert!(mock.seen()[0].signature_valid);
    assert_eq!(mock.seen()[0].header("proxy-authorization"), AUTH, "a plain-http request carries it itself");
}

#[tokio::test]
async fn https_proxy_from_the_environment_and_no_proxy() {
    let ca = TestCa::new();
    let mock = MockTencent::start_tls(SECRET_KEY, &ca).await;
    let proxy = TestProxy::start(Mode::Relay, None).await;
    let extra = tencent_keys(&[("ca_file", ca.pem_path.display().to_string())]);
    let yaml = config_yaml(&mock.endpoint(), PHONE_LIMITS, &extra);

    let via_env = compile_with(&yaml, &[("https_proxy", &proxy.url())]);
    let acme = via_env.tenant("acme").unwrap();
    assert_eq!(acme.tencent.as_ref().unwrap().upstream.endpoints[0].proxy.as_ref().unwrap().source, "https_proxy");
    let gw = TestGateway::start(via_env).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await.status, 200);
    assert_eq!(proxy.asked().len(), 1);
    assert_eq!(mock.seen().len(), 1);

    // NO_PROXY lists the endpoint's host: straight to it, the proxy is not asked.
    let bypass = compile_with(&yaml, &[("HTTPS_PROXY", &proxy.url()), ("NO_PROXY", "example.org, 127.0.0.1")]);
    let gw = TestGateway::start(bypass).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "123456")).await.status, 200);
    assert_eq!(proxy.asked().len(), 1, "NO_PROXY bypasses the proxy");
    assert_eq!(mock.seen().len(), 2);

    // An explicit `direct` ignores the environment.
    let direct = tencent_keys(&[("ca_file", ca.pem_path.display().to_string()), ("proxy", "direct".into())]);
    let config = compile_with(&config_yaml(&mock.endpoint(), PHONE_LIMITS, &direct), &[("HTTPS_PROXY", &proxy.url())]);
    assert!(config.tenant("acme").unwrap().tencent.as_ref().unwrap().upstream.endpoints[0].proxy.is_none());
}

#[tokio::test]
async fn regression_proxy_down_is_upstream_unavailable_and_gives_the_quota_back() {
    let mock = MockTencent::start(SECRET_KEY).await;
    // A port that was just closed: connection refused.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let caps = "    spend_caps: { daily: 1 }\n";
    let limits = format!("{PHONE_LIMITS}\n{caps}");
    let extra = tencent_keys(&[("proxy", format!("http://{dead}"))]);
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), &limits, &extra))).await;

    let answer = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    answer.assert_error(503, "upstream_unavailable");
    assert!(mock.seen().is_empty());
    let metrics = gw.gateway.metrics().render();
    assert!(metrics.contains(r#"smsgate_upstream_retries_total{reason="connect"}"#), "retried as a connect failure");

    // The day's one message and the number's one send per 30 s were given back: once the proxy is fixed,
    // the same send goes out.
    let proxy = TestProxy::start(Mode::Relay, None).await;
    let fixed = tencent_keys(&[("proxy", proxy.url())]);
    gw.gateway.reload(compile(&config_yaml(&mock.endpoint(), &limits, &fixed)));
    let answer = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    assert_eq!(answer.status, 200, "{:#}", answer.json);
    assert_eq!(mock.seen().len(), 1);
}

/// Regression (breakers were keyed by the endpoint's URL alone): a tenant whose proxy is down opened the
/// breaker of every tenant reaching the same URL, and theirs skipped it. A breaker is now per way to an
/// endpoint: `acme`'s dead proxy opens `<url> via <proxy>`, and `beta`, reaching the URL directly, still
/// sends to it rather than to its fallback.
#[tokio::test]
async fn a_tenants_dead_proxy_opens_its_own_breaker_not_another_tenants() {
    let (mock, fallback) = (MockTencent::start(SECRET_KEY).await, MockTencent::start(SECRET_KEY).await);
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let extra = tencent_keys(&[("proxy", format!("http://proxy-user:proxy-password@{dead}"))]);
    let beta_endpoint = format!("endpoint: {}\n    limits:", mock.endpoint());
    let yaml = config_yaml(&mock.endpoint(), PHONE_LIMITS, &extra).replace(
        &beta_endpoint,
        &format!("endpoint: {}\n      fallback_endpoints: [\"{}\"]\n    limits:", mock.endpoint(), fallback.endpoint()),
    );
    assert!(yaml.contains("fallback_endpoints"), "{yaml}");
    let gw = TestGateway::start(compile(&yaml)).await;
    for i in 0..3 {
        let answer = gw.post("/v1/sms/send", &native(&format!("+861380013800{i}"), "SignIn", "123456")).await;
        answer.assert_error(503, "upstream_unavailable");
    }
    let metrics = gw.gateway.metrics().render();
    let url = mock.endpoint();
    let url = url.trim_end_matches('/');
    let proxied = format!(r#"smsgate_upstream_breaker_open{{endpoint="{url}/ via http://{dead}/"}} 1"#);
    assert!(metrics.contains(&proxied), "{metrics}");
    assert!(!metrics.contains(&format!(r#"smsgate_upstream_breaker_open{{endpoint="{url}/"}} 1"#)), "{metrics}");
    assert!(!metrics.contains("proxy-password") && !metrics.contains("proxy-user"), "the way names no credentials");
    let answer = gw.post_as("/v1/sms/send", &native("+8613800138000", "SignIn", "123456"), Some(OTHER_TOKEN)).await;
    assert_eq!(answer.status, 200, "{:#}", answer.json);
    assert_eq!((mock.seen().len(), fallback.seen().len()), (1, 0), "beta's primary, not its fallback");
}

#[tokio::test]
async fn proxy_refusing_the_tunnel_is_a_connect_failure() {
    for status in [403, 407, 502] {
        let ca = TestCa::new();
        let mock = MockTencent::start_tls(SECRET_KEY, &ca).await;
        let proxy = TestProxy::start(Mode::Refuse(status), None).await;
        let extra = tencent_keys(&[("proxy", proxy.url()), ("ca_file", ca.pem_path.display().to_string())]);
        let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, &extra))).await;
        let answer = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
        answer.assert_error(503, "upstream_unavailable");
        assert!(mock.seen().is_empty(), "{status}: nothing reached Tencent");
        assert!(!proxy.asked().is_empty());
    }
}

#[tokio::test]
async fn silent_proxy_ends_as_a_connect_failure_not_a_hang() {
    let ca = TestCa::new();
    let mock = MockTencent::start_tls(SECRET_KEY, &ca).await;
    let proxy = TestProxy::start(Mode::Silent, None).await;
    // The tenant's deadline is above the 3 s connect timeout, so the CONNECT's own bound decides.
    let extra = format!(
        "{}      max_attempts: 1\n",
        tencent_keys(&[("proxy", proxy.url()), ("ca_file", ca.pem_path.display().to_string())])
    );
    let yaml = config_yaml(&mock.endpoint(), PHONE_LIMITS, &extra).replace("timeout: 1s", "timeout: 10s");
    let gw = TestGateway::start(compile(&yaml)).await;
    let answer = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    answer.assert_error(503, "upstream_unavailable");
    assert!(mock.seen().is_empty());
}

#[test]
fn proxy_keys_are_checked_and_never_echoed() {
    let yaml = config_yaml(
        "http://127.0.0.1:9",
        PHONE_LIMITS,
        "      proxy: \"socks5://u:hunter2@p:1\"\n      ca_file: /nonexistent/ca.pem\n",
    );
    let errors = smsgate::Config::from_yaml(&yaml, Path::new("t.yaml"), &env()).unwrap_err().to_string();
    assert!(errors.contains("tenants.acme.tencent.proxy: expected an http:// proxy URL"), "{errors}");
    assert!(errors.contains("tenants.acme.tencent.ca_file: cannot read the CA file: no such file"), "{errors}");
    assert!(!errors.contains("hunter2"), "{errors}");

    let env: HashMap<String, String> =
        env().into_iter().chain([("HTTPS_PROXY".into(), "ftp://u:hunter2@p:1".into())]).collect();
    let yaml = config_yaml("https://sms.tencentcloudapi.com", PHONE_LIMITS, "");
    let errors = smsgate::Config::from_yaml(&yaml, Path::new("t.yaml"), &env).unwrap_err().to_string();
    assert!(errors.contains("HTTPS_PROXY"), "{errors}");
    assert!(!errors.contains("hunter2"), "{errors}");

    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let yaml = config_yaml("http://127.0.0.1:9", PHONE_LIMITS, &format!("      ca_file: {}\n", not_pem.display()));
    let errors = smsgate::Config::from_yaml(&yaml, Path::new("t.yaml"), &crate::common::env()).unwrap_err().to_string();
    assert!(errors.contains("tenants.acme.tencent.ca_file: the CA file holds no certificate"), "{errors}");
}

#[test]
fn the_real_binary_reads_https_proxy_from_its_environment() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = TestCa::new();
    let (mock, proxy) = runtime.block_on(async {
        (MockTencent::start_tls(SECRET_KEY, &ca).await, TestProxy::start(Mode::Relay, Some(AUTH)).await)
    });
    let extra = tencent_keys(&[("ca_file", ca.pem_path.display().to_string())]);
    let config = config_yaml(&mock.endpoint(), PHONE_LIMITS, &extra);
    let proxy_url = format!("http://user:pw@{}", proxy.addr);
    let server =
        crate::common::process::Server::spawn(&config, &[("ACME_SECRET", SECRET_KEY), ("HTTPS_PROXY", &proxy_url)]);
    let answer = runtime.block_on(server.send(&reqwest::Client::new(), "+8613800138000", "123456"));
    assert_eq!(answer.status, 200, "{}", server.log_text());
    assert_eq!(proxy.asked()[0].proxy_authorization.as_deref(), Some(AUTH));
    assert!(mock.seen()[0].signature_valid);
    assert!(!server.log_text().contains("dXNlcjpwdw"), "proxy credentials never reach the log");
}

#[test]
fn the_host_trust_store_is_trusted_besides_the_built_in_roots() {
    // A CA in the host's trust store (here named by SSL_CERT_FILE, as OpenSSL reads it; in the container
    // image, /etc/ssl/certs/ca-certificates.crt) is trusted without any ca_file; without it, refused.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = TestCa::new();
    let mock = runtime.block_on(MockTencent::start_tls(SECRET_KEY, &ca));
    let config = config_yaml(&mock.endpoint(), PHONE_LIMITS, "");
    let ca_path = ca.pem_path.display().to_string();
    let server =
        crate::common::process::Server::spawn(&config, &[("ACME_SECRET", SECRET_KEY), ("SSL_CERT_FILE", &ca_path)]);
    let answer = runtime.block_on(server.send(&reqwest::Client::new(), "+8613800138000", "123456"));
    assert_eq!(answer.status, 200, "{}", server.log_text());
    assert!(mock.seen()[0].signature_valid);

    let other = TestCa::new();
    let other_path = other.pem_path.display().to_string();
    let server =
        crate::common::process::Server::spawn(&config, &[("ACME_SECRET", SECRET_KEY), ("SSL_CERT_FILE", &other_path)]);
    let answer = runtime.block_on(server.send(&reqwest::Client::new(), "+8613800138000", "123456"));
    assert_eq!(answer.status, 503, "another CA in the store does not vouch for the mock");
    assert_eq!(mock.seen().len(), 1, "nothing more reached the mock");
}

/// Aliyun's and Twilio's clients take the same egress as Tencent's (`net::transport`): through the tenant's
/// proxy, with its credentials, signed for the endpoint's own host.
#[tokio::test]
async fn every_provider_goes_through_the_configured_proxy() {
    use crate::common::aliyun_mock::{MockAliyun, ALIYUN_KEY_ID};
    use crate::common::twilio_mock::MockTwilio;
    let aliyun = MockAliyun::start("aliyun-test-secret-0001").await;
    let twilio = MockTwilio::start("AC0123456789abcdef0123456789abcdef", "twilio-test-token-0001").await;
    let proxy = TestProxy::start(Mode::Relay, Some(AUTH)).await;
    let proxy_url = format!("http://user:pw@{}", proxy.addr);
    let yaml = format!(
        r#"
server:
  listen: 127.0.0.1:0
tenants:
  acme:
    tokens: ["{TOKEN}"]
    aliyun:
      accessKeyId: {ALIYUN_KEY_ID}
      accessKeySecret: aliyun-test-secret-0001
      signName: Sig
      templates: [{{ usageType: Generic, templateCode: SMS_154950913 }}]
      endpoint: {aliyun}
      proxy: "{proxy_url}"
    twilio:
      accountSID: AC0123456789abcdef0123456789abcdef
      authToken: twilio-test-token-0001
      fromMessagingServiceSID: MG0123456789abcdef0123456789abcdef
      templates: [{{ usageType: Generic, content: "Code {{{{code}}}}" }}]
      endpoint: {twilio}
      proxy: "{proxy_url}"
    routes:
      - {{ countries: [CN], via: [aliyun] }}
      - {{ via: [twilio] }}
"#,
        aliyun = aliyun.endpoint(),
        twilio = twilio.endpoint(),
    );
    let gw = TestGateway::start(compile(&yaml)).await;
    for (phone, provider) in [("+8613800138000", "aliyun"), ("+14155550100", "twilio")] {
        let answer = gw.post("/v1/sms/send", &native(phone, "SignIn", "123456")).await;
        assert_eq!((answer.status, &answer.json["provider"]), (200, &provider.into()), "{:#}", answer.json);
    }
    assert!(aliyun.seen()[0].signature_valid, "signed for Aliyun's own host, through the proxy");
    assert_eq!(twilio.sent().len(), 1);
    let asked = proxy.asked();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked[0].request_line.starts_with(&format!("POST http://{}/?", aliyun.addr)), "{asked:?}");
    assert!(
        asked[1].request_line.starts_with(&format!("POST http://{}/2010-04-01/Accounts/", twilio.addr)),
        "{asked:?}"
    );
    assert!(asked.iter().all(|a| a.proxy_authorization.as_deref() == Some(AUTH)), "{asked:?}");
}
