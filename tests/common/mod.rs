//! Test harness: a mock Tencent SendSms server that checks every TC3 signature with its own implementation
//! and records what it received, and a gateway started on 127.0.0.1:0 against it.

pub(crate) mod aliyun_mock;
pub(crate) mod aliyun_verify;
pub(crate) mod hooks;
pub(crate) mod logs;
pub(crate) mod mock;
pub(crate) mod node;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod python;
pub(crate) mod redis_server;
pub(crate) mod tls;
pub(crate) mod twilio_mock;
pub(crate) mod twilio_verify;

use smsgate::clock::{ManualClock, SharedClock};
use smsgate::config::Config;
use smsgate::Gateway;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub(crate) const TOKEN: &str = "test-token-acme-0001";
pub(crate) const OTHER_TOKEN: &str = "test-token-beta-0001";
pub(crate) const SECRET_ID: &str = "AKIDtestsecretid";
pub(crate) const SECRET_KEY: &str = "test-secret-key-never-logged";
/// 2024-01-02 03:04:05 UTC.
pub(crate) const START_UNIX: i64 = 1704164645;
/// `limits_backend.key` of the tests' redis backends.
pub(crate) const STORAGE_KEY: &str = "test-storage-key-0123456789abcdef0123";

/// A gateway config with tenant `acme` (templates SignIn and Generic, limits as given) pointed at `endpoint`,
/// and tenant `beta` without a Generic template.
pub(crate) fn config_yaml(endpoint: &str, limits: &str, extra_tencent: &str) -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:0
  max_body_bytes: 1024
tenants:
  acme:
    tokens: ["{TOKEN}"]
    default_country: CN
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - {{ usageType: SignIn, templateCode: "1110" }}
        - {{ usageType: Generic, templateCode: "1113" }}
      endpoint: {endpoint}
      timeout: 1s
{extra_tencent}
    limits:
{limits}
  beta:
    tokens: ["{OTHER_TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: Beta
      sdkAppId: "1400007777"
      region: ap-beijing
      templates:
        - {{ usageType: SignIn, templateCode: "2220" }}
      endpoint: {endpoint}
    limits:
      - {{ name: all, key: tenant, limit: 1, per: 1h }}
"#
    )
}

pub(crate) const PHONE_LIMITS: &str = "      - { name: burst, key: phone, limit: 1, per: 30s }\n      - { name: tenant, key: tenant, limit: 100, per: 1s }";

pub(crate) fn env() -> HashMap<String, String> {
    HashMap::from([("ACME_SECRET".to_owned(), SECRET_KEY.to_owned())])
}

pub(crate) fn compile(yaml: &str) -> Config {
    Config::from_yaml(yaml, Path::new("test.yaml"), &env()).unwrap_or_else(|e| panic!("config: {e}"))
}

/// A gateway serving on an ephemeral port; shut down when dropped.
pub(crate) struct TestGateway {
    pub addr: SocketAddr,
    /// The Tencent-compatible API's listener, when started with [`TestGateway::start_doors`].
    pub tencent_addr: Option<SocketAddr>,
    pub gateway: Gateway,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl TestGateway {
    pub(crate) async fn start(config: Config) -> TestGateway {
        TestGateway::start_at(config, START_UNIX).await
    }

    /// With the injected clock starting at `unix` seconds (tests whose peers check wall-clock timestamps).
    pub(crate) async fn start_at(config: Config, unix: i64) -> TestGateway {
        TestGateway::serve(config, unix, false).await
    }

    /// Also serving the Tencent-compatible API on a second ephemeral port.
    pub(crate) async fn start_doors(config: Config, unix: i64) -> TestGateway {
        TestGateway::serve(config, unix, true).await
    }

    async fn serve(config: Config, unix: i64, tencent: bool) -> TestGateway {
        let clock = ManualClock::new(unix);
        let shared: SharedClock = clock.clone();
        let gateway = Gateway::new(config, shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut doors = vec![(smsgate::server::Door::Main, listener)];
        let mut tencent_addr = None;
        if tencent {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tencent_addr = Some(listener.local_addr().unwrap());
            doors.push((smsgate::server::Door::Tencent, listener));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        tokio::spawn(async move {
            serving
                .serve_doors(doors, async move {
                    let _ = stopped.await;
                })
                .await
        });
        TestGateway { addr, tencent_addr, gateway, clock, http: reqwest::Client::new(), stop: Some(stop) }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a JSON body with the acme token.
    pub(crate) async fn post(&self, path: &str, body: &str) -> Answer {
        self.post_as(path, body, Some(TOKEN)).await
    }

    pub(crate) async fn post_as(&self, path: &str, body: &str, token: Option<&str>) -> Answer {
        let mut request =
            self.http.post(self.url(path)).header("content-type", "application/json").body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::from(request.send().await.expect("gateway answers")).await
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A gateway answer, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

impl Answer {
    pub(crate) async fn from(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"));
        Answer { status, headers, json }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("<none>")
    }

    /// Asserts an error answer's status and code, and the contract every error shares.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.error_code()), (status, code), "{:#}", self.json);
        let id = self.header("x-request-id").expect("X-Request-Id on every answer");
        assert_eq!(self.json["error"]["request_id"], id);
        let message = self.json["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && message.len() < 120, "short message: {message}");
    }
}

pub(crate) fn native(phone: &str, usage: &str, code: &str) -> String {
    serde_json::json!({"phone": phone, "usage": usage, "code": code}).to_string()
}

/// The gateway's `/metrics` text.
pub(crate) async fn metrics(gw: &TestGateway) -> String {
    gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of the sample whose line starts with `series` (name and labels), or 0.
pub(crate) fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Polls the metrics until `series` reaches `value` (background workers), up to 20 s.
pub(crate) async fn wait_for_sample(gw: &TestGateway, series: &str, value: f64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(gw).await;
        if sample(&text, series) == value {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{series} never reached {value}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
