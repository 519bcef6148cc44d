//! The listeners of the real binary: `server.admin_listen` (metrics and the admin API only there), TLS on
//! every listener (https, mutual TLS, plain HTTP to a TLS port, certificates rotated by SIGHUP while an open
//! connection keeps working), `check` on bad certificate files, and the drain on SIGTERM.

use crate::common::mock::MockTencent;
use crate::common::process::Server;
use crate::common::tls::TestCa;
use crate::common::*;
use std::path::Path;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// The common test config with `server_extra` lines added under `server:`.
fn yaml(endpoint: &str, server_extra: &str) -> String {
    config_yaml(endpoint, PHONE_LIMITS, "")
        .replace("  max_body_bytes: 1024", &format!("  max_body_bytes: 1024\n  drain_delay: 0s\n{server_extra}"))
}

fn env_pairs() -> Vec<(&'static str, &'static str)> {
    vec![("ACME_SECRET", SECRET_KEY)]
}

fn send_request(http: &reqwest::Client, base: &str, phone: &str) -> reqwest::RequestBuilder {
    http.post(format!("{base}/v1/sms/send"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(native(phone, "SignIn", "123456"))
}

async fn status(http: &reqwest::Client, url: String, token: Option<&str>) -> u16 {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_serves_metrics_and_the_admin_api_only_there() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let extra =
        format!("  admin_listen: 127.0.0.1:0\n  tencent_listen: 127.0.0.1:0\n  admin_tokens: [\"{ADMIN_TOKEN}\"]\n");
    let mut server = Server::spawn(&yaml(&mock.endpoint(), &extra), &env_pairs());
    let admin = format!("http://{}", server.logged_addr("admin listening"));
    let tencent = format!("http://{}", server.logged_addr("Tencent-compatible API listening"));
    let main = server.url("");
    let http = reqwest::Client::new();
    let protection = "/admin/v1/tenants/acme/protection";

    // The send port: probes and sends, no metrics, no admin API (404, as for any unknown path).
    assert_eq!(status(&http, format!("{main}/healthz"), None).await, 200);
    assert_eq!(status(&http, format!("{main}/readyz"), None).await, 200);
    let r = http.get(format!("{main}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("smsgate_"));
    assert_eq!(status(&http, format!("{main}{protection}"), Some(ADMIN_TOKEN)).await, 404);
    let sent = Answer::from(send_request(&http, &main, "+8613800138000").send().await.unwrap()).await;
    assert_eq!(sent.status, 200, "{:#}", sent.json);

    // The Tencent-compatible port serves neither.
    let r = http.get(format!("{tencent}/metrics")).send().await.unwrap();
    assert!(!r.text().await.unwrap().contains("smsgate_"));
    let r = http.get(format!("{tencent}{protection}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert!(!r.text().await.unwrap().contains("rules"));

    // The admin port: probes, metrics (counting the send made on the other port), the admin API; no sends.
    assert_eq!(status(&http, format!("{admin}/healthz"), None).await, 200);
    assert_eq!(status(&http, format!("{admin}/readyz"), None).await, 200);
    let metrics = http.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="sent"} 1"#), "{metrics}");
    assert_eq!(status(&http, format!("{admin}{protection}"), Some(ADMIN_TOKEN)).await, 200);
    assert_eq!(status(&http, format!("{admin}{protection}"), Some(TOKEN)).await, 401);
    let r = send_request(&http, &admin, "+8613800138001").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(mock.seen().len(), 1, "only the send on the send port went upstream");
}

/// Certificate files in a folder of their own, re-writable for a rotation.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new(ca: &TestCa) -> TlsFiles {
        let files = TlsFiles { dir: tempfile::tempdir().unwrap() };
        files.write(ca);
        files
    }

    /// A fresh server certificate for 127.0.0.1 signed by `ca` at `server.crt` / `server.key`.
    fn write(&self, ca: &TestCa) {
        ca.server_files(self.dir.path());
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn block(&self, client_ca: Option<&Path>) -> String {
        let mut block = format!("{{ cert_file: {}, key_file: {}", self.path("server.crt"), self.path("server.key"));
        if let Some(ca) = client_ca {
            block.push_str(&format!(", client_ca_file: {}", ca.display()));
        }
        block + " }"
    }
}

fn https_client(ca: &TestCa, identity: Option<Vec<u8>>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_on_every_listener_and_plain_http_to_a_tls_port_is_refused_cleanly() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca);
    let block = files.block(None);
    let extra = format!(
        "  tls: {block}\n  admin_listen: 127.0.0.1:0\n  admin_tls: {block}\n  tencent_listen: 127.0.0.1:0\n  tencent_tls: {block}\n"
    );
    let mut server = Server::spawn(&yaml(&mock.endpoint(), &extra), &env_pairs());
    let main = format!("https://{}", server.addr);
    let admin = format!("https://{}", server.logged_addr("admin listening"));
    let tencent = server.logged_addr("Tencent-compatible API listening");
    let http = https_client(&ca, None);

    let sent = Answer::from(send_request(&http, &main, "+8613800138000").send().await.unwrap()).await;
    assert_eq!((sent.status, sent.json["status"].as_str()), (200, Some("sent")), "{:#}", sent.json);
    assert_eq!(status(&http, format!("{admin}/metrics"), None).await, 200);
    let r = http.post(format!("https://{tencent}/")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200, "the Tencent-compatible API answers in its envelope over TLS");
    assert!(r.text().await.unwrap().contains("\"Error\""));

    // Plain HTTP to each TLS port: a readable 400 naming the mistake, nothing sent, and the port still serves.
    let plain = reqwest::Client::new();
    for addr in [server.addr.clone(), tencent.clone()] {
        let refused = plain.post(format!("http://{addr}/v1/sms/send")).bearer_auth(TOKEN).body("{}").send().await;
        let answer = Answer::from(refused.unwrap()).await;
        assert_eq!((answer.status, answer.error_code()), (400, "tls_required"), "{:#}", answer.json);
        assert_eq!(answer.header("connection"), Some("close"));
    }
    // A client that sends nothing, and one that sends garbage: neither holds the port nor stops the gateway.
    let idle = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut garbage = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut garbage, &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0]).await.unwrap();
    let again = Answer::from(send_request(&http, &main, "+8613800138001").send().await.unwrap()).await;
    assert_eq!(again.status, 200, "{:#}", again.json);
    drop((idle, garbage));
    assert_eq!(mock.seen().len(), 2, "only the two https sends went upstream");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_a_client_of_the_ca_and_refuses_others() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let (ca, clients, strangers) = (TestCa::new(), TestCa::new(), TestCa::new());
    let files = TlsFiles::new(&ca);
    let extra = format!("  tls: {}\n", files.block(Some(&clients.pem_path)));
    let server = Server::spawn(&yaml(&mock.endpoint(), &extra), &env_pairs());
    let main = format!("https://{}", server.addr);

    let trusted = https_client(&ca, Some(clients.client_identity_pem("logto")));
    let sent = Answer::from(send_request(&trusted, &main, "+8613800138000").send().await.unwrap()).await;
    assert_eq!(sent.status, 200, "{:#}", sent.json);

    let anonymous = https_client(&ca, None);
    assert!(send_request(&anonymous, &main, "+8613800138001").send().await.is_err(), "no client certificate");
    let stranger = https_client(&ca, Some(strangers.client_identity_pem("logto")));
    assert!(send_request(&stranger, &main, "+8613800138002").send().await.is_err(), "another CA's certificate");
    assert_eq!(mock.seen().len(), 1, "refused clients sent nothing");
    assert_eq!(status(&trusted, format!("{main}/healthz"), None).await, 200);
}

/// A raw TLS connection that trusts only `ca`, as a hyper client: requests on one connection.
async fn connect(addr: &str, ca: &TestCa) -> (hyper::client::conn::http1::SendRequest<String>, Vec<u8>) {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    (sender, leaf)
}

async fn healthz(sender: &mut hyper::client::conn::http1::SendRequest<String>) -> u16 {
    let request = http::Request::get("/healthz").header("host", "127.0.0.1").body(String::new()).unwrap();
    sender.send_request(request).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_certificate_for_new_connections_and_keeps_open_ones() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let files = TlsFiles::new(&old_ca);
    let config = yaml(&mock.endpoint(), &format!("  tls: {}\n", files.block(None)));
    let mut server = Server::spawn(&config, &env_pairs());
    let (mut open, old_leaf) = connect(&server.addr, &old_ca).await;
    assert_eq!(healthz(&mut open).await, 200);

    files.write(&new_ca);
    server.signal("HUP");
    server.wait_for_log("config reloaded");
    let (mut fresh, new_leaf) = connect(&server.addr, &new_ca).await;
    assert_ne!(old_leaf, new_leaf, "a new connection gets the new certificate");
    assert_eq!(healthz(&mut fresh).await, 200);
    assert_eq!(healthz(&mut open).await, 200, "the connection opened before the reload still serves");

    // A broken rotation (a key that is not the certificate's) keeps the certificate in force.
    std::fs::copy(TlsFiles::new(&old_ca).path("server.key"), files.path("server.key")).unwrap();
    server.signal("HUP");
    server.wait_for_log("config reload failed");
    assert!(server.log_text().contains("is not the key of the certificate"), "{}", server.log_text());
    let (mut after, leaf) = connect(&server.addr, &new_ca).await;
    assert_eq!((healthz(&mut after).await, leaf), (200, new_leaf));
}

/// What an anonymous connection costs on a TLS port: one that sends nothing, one that sends half a
/// handshake record, and one that sends a head in plain text byte by byte are all closed by the gateway
/// (`header_timeout` bounds the handshake), and the port keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_port_closes_connections_that_never_finish_a_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockTencent::start(SECRET_KEY).await;
    let ca = TestCa::new();
    let files = TlsFiles::new(&ca);
    let extra = format!("  header_timeout: 300ms\n  tls: {}\n", files.block(None));
    let server = Server::spawn(&yaml(&mock.endpoint(), &extra), &env_pairs());
    let mut idle = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    trickle.write_all(b"P").await.unwrap();
    for (name, stream) in [("idle", &mut idle), ("half a record", &mut half), ("plain trickle", &mut trickle)] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{name}: the gateway closed the connection");
    }
    let http = https_client(&ca, None);
    assert_eq!(status(&http, format!("https://{}/healthz", server.addr), None).await, 200);
}

fn check(config: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["check", "--config"])
        .arg(&path)
        .env("ACME_SECRET", SECRET_KEY)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_refuses_unreadable_and_mismatched_certificate_files() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let files = TlsFiles::new(&ca);
    let dir = tempfile::tempdir().unwrap();
    let base = yaml("http://127.0.0.1:9", "");
    let with = |extra: &str| base.replace("  drain_delay: 0s\n", &format!("  drain_delay: 0s\n{extra}"));

    assert!(check(&with(&format!("  tls: {}\n", files.block(None))), dir.path()).0, "the good files pass");

    let missing =
        format!("  tls: {{ cert_file: {}/nope.crt, key_file: {} }}\n", dir.path().display(), files.path("server.key"));
    let (ok, err) = check(&with(&missing), dir.path());
    assert!(!ok && err.contains("server.tls.cert_file") && err.contains("no such file"), "{err}");

    let mismatched = TlsFiles::new(&other);
    let block = format!("{{ cert_file: {}, key_file: {} }}", files.path("server.crt"), mismatched.path("server.key"));
    let (ok, err) = check(&with(&format!("  tls: {block}\n")), dir.path());
    assert!(!ok && err.contains("server.tls.key_file") && err.contains("is not the key of the certificate"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "no key material in the message: {err}");

    let (ok, err) =
        check(&with(&format!("  tls: {{ cert_file: {0}, key_file: {0} }}\n", files.path("server.crt"))), dir.path());
    assert!(!ok && err.contains("no PEM private key"), "{err}");

    let (ok, err) = check(&with(&format!("  admin_tls: {}\n", files.block(None))), dir.path());
    assert!(!ok && err.contains("server.admin_tls") && err.contains("needs server.admin_listen"), "{err}");

    let same = with("  admin_listen: 127.0.0.1:18080\n").replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:18080");
    let (ok, err) = check(&same, dir.path());
    assert!(!ok && err.contains("server.admin_listen: must differ"), "{err}");

    let key_as_ca = files.block(Some(Path::new(&files.path("server.key"))));
    let (ok, err) = check(&with(&format!("  tls: {key_as_ca}\n")), dir.path());
    assert!(!ok && err.contains("server.tls.client_ca_file"), "{err}");
}

/// SIGTERM as Kubernetes sends it: `/readyz` says 503 at once while sends are still served (with
/// `Connection: close`), for `drain_delay`; a second SIGTERM ends the drain early, then the port closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_readyz_503_while_requests_are_served_then_closes() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let config = yaml(&mock.endpoint(), "").replace("  drain_delay: 0s", "  drain_delay: 300s");
    let mut server = Server::spawn(&config, &env_pairs());
    let http = reqwest::Client::new();
    let main = server.url("");
    assert_eq!(status(&http, format!("{main}/readyz"), None).await, 200);

    server.signal("TERM");
    server.wait_for_log("draining");
    let readyz = Answer::from(http.get(format!("{main}/readyz")).send().await.unwrap()).await;
    assert_eq!((readyz.status, readyz.json["status"].as_str()), (503, Some("draining")));
    assert_eq!(status(&http, format!("{main}/healthz"), None).await, 200, "alive while draining");
    let sent = Answer::from(send_request(&http, &main, "+8613800138000").send().await.unwrap()).await;
    assert_eq!((sent.status, sent.header("connection")), (200, Some("close")), "{:#}", sent.json);
    assert!(tokio::net::TcpStream::connect(&server.addr).await.is_ok(), "the port is open during the drain");

    server.signal("TERM");
    server.wait_for_log("shutting down");
    assert!(tokio::net::TcpStream::connect(&server.addr).await.is_err(), "closed after the drain");
    assert!(server.wait_exit().success());
    assert_eq!(mock.seen().len(), 1);
}

/// The access log: every request's line carries its route and HTTP status, and durations are plain numbers
/// in milliseconds rounded to the microsecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_route_status_and_numeric_durations() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let extra = format!("  admin_listen: 127.0.0.1:0\n  admin_tokens: [\"{ADMIN_TOKEN}\"]\n");
    let mut server = Server::spawn(&yaml(&mock.endpoint(), &extra), &env_pairs());
    let admin = format!("http://{}", server.logged_addr("admin listening"));
    let (http, main) = (reqwest::Client::new(), server.url(""));
    assert_eq!(send_request(&http, &main, "+8613800138000").send().await.unwrap().status(), 200);
    let again = send_request(&http, &main, "+8613800138000").body(native("+8613800138000", "SignIn", "654321"));
    assert_eq!(again.send().await.unwrap().status(), 429);
    let verified =
        http.post(format!("{main}/v1/sms/verified")).bearer_auth(TOKEN).header("content-type", "application/json");
    let r = verified.body(r#"{"phone":"+8613900139000"}"#).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(status(&http, format!("{admin}/admin/v1/tenants/acme/protection"), Some(ADMIN_TOKEN)).await, 200);

    server.wait_for_log("admin request");
    server.wait_for_log("feedback signal");
    server.wait_for_nth_log("\"send request\"", 2);
    let log = server.log_text();
    let event = |message: &str, n: usize| -> serde_json::Value {
        let line = log.lines().filter(|l| l.contains(&format!("\"message\":\"{message}\""))).nth(n);
        serde_json::from_str(line.unwrap_or_else(|| panic!("no {message} #{n}:\n{log}"))).unwrap()
    };
    let (sent, limited) = (event("send request", 0), event("send request", 1));
    assert_eq!((&sent["route"], &sent["status"], &sent["outcome"]), (&"native".into(), &200.into(), &"sent".into()));
    assert_eq!((&limited["status"], &limited["outcome"]), (&429.into(), &"rate_limited".into()));
    for field in ["latency_ms", "upstream_ms"] {
        let ms = sent[field].as_f64().unwrap_or_else(|| panic!("{field} is a number: {sent}"));
        assert!(ms >= 0.0 && ((ms * 1000.0).round() - ms * 1000.0).abs() < 1e-6, "{field}={ms}: microseconds at most");
    }
    let signal = event("feedback signal", 0);
    assert_eq!((&signal["route"], &signal["status"]), (&"verified".into(), &404.into()));
    let admin = event("admin request", 0);
    assert_eq!((&admin["route"], &admin["status"]), (&"admin_protection".into(), &200.into()));
}

/// A `RUST_LOG` that does not parse stops `serve` with a message, instead of silently logging at `info`.
#[test]
fn an_invalid_rust_log_is_reported_and_serve_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml("http://127.0.0.1:9", "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("ACME_SECRET", SECRET_KEY)
        .env("RUST_LOG", "smsgate=loudest")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("RUST_LOG: ") && !stderr.contains("listening"), "{stderr}");
}
