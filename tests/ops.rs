//! Operating the real binary: SIGHUP reload (good and broken configs), SIGTERM while a send is in flight,
//! `/metrics` counts, and logs that never carry a secret, token, code or unmasked number.

use crate::common::mock::{MockTencent, Reply};
use crate::common::process::Server;
use crate::common::*;
use std::time::{Duration, Instant};

/// No drain delay: these tests stop the gateway at once (tests/listeners.rs tests the drain).
fn yaml(endpoint: &str, template: &str) -> String {
    config_yaml(endpoint, PHONE_LIMITS, "")
        .replace("  max_body_bytes: 1024", "  max_body_bytes: 1024\n  drain_delay: 0s")
        .replace(r#"templateCode: "1110""#, &format!(r#"templateCode: "{template}""#))
}

fn env_pairs() -> Vec<(&'static str, &'static str)> {
    vec![("ACME_SECRET", SECRET_KEY)]
}

async fn send(http: &reqwest::Client, server: &Server, phone: &str, code: &str) -> Answer {
    server.send(http, phone, code).await
}

async fn metrics(http: &reqwest::Client, server: &Server) -> String {
    http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_config_and_keeps_the_old_one_when_broken() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let mut server = Server::spawn(&yaml(&mock.endpoint(), "1110"), &env_pairs());
    let http = reqwest::Client::new();
    assert_eq!(send(&http, &server, "+8613800138001", "111111").await.status, 200);

    server.write_config(&yaml(&mock.endpoint(), "4444"));
    server.signal("HUP");
    server.wait_for_log("config reloaded");
    assert_eq!(send(&http, &server, "+8613800138002", "222222").await.json["template_id"], "4444");

    // The unchanged burst rule kept its state across the reload: the first number is still limited.
    send(&http, &server, "+8613800138001", "333333").await.assert_error(429, "rate_limited");

    server.write_config(&yaml(&mock.endpoint(), "4444").replace("per: 30s", "per: forever"));
    server.signal("HUP");
    server.wait_for_log("config reload failed");
    let a = send(&http, &server, "+8613800138003", "444444").await;
    assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some("4444")), "old config keeps serving");

    let m = metrics(&http, &server).await;
    assert!(m.contains(r#"smsgate_config_reloads_total{result="ok"} 1"#), "{m}");
    assert!(m.contains(r#"smsgate_config_reloads_total{result="error"} 1"#), "{m}");
    let bodies: Vec<_> = mock.seen().iter().map(|s| s.body["TemplateId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(bodies, vec!["1110", "4444", "4444"]);

    server.signal("TERM");
    assert!(server.wait_exit().success());
    let log = server.log_text();
    assert!(log.contains("per: expected a duration") || log.contains(".per: expected a duration"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_send_finish_and_refuses_new_connections() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.reply(Reply::Slow(Duration::from_millis(800)));
    // A short drain: the port closes by itself once it is over (tests/listeners.rs tests the drain itself).
    let config = yaml(&mock.endpoint(), "1110").replace("drain_delay: 0s", "drain_delay: 100ms");
    let mut server = Server::spawn(&config, &env_pairs());
    let http = reqwest::Client::new();
    let url = server.url("/v1/sms/send");
    let in_flight = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(native("+8613800138000", "SignIn", "123456"))
            .send()
            .await
            .unwrap();
        Answer::from(r).await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.seen().is_empty() {
        assert!(Instant::now() < deadline, "the send never reached the mock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("TERM");
    server.wait_for_log("shutting down");
    assert!(server.log_text().contains("drain delay over"), "{}", server.log_text());
    let refused = tokio::net::TcpStream::connect(&server.addr).await;
    assert!(refused.is_err(), "new connections are refused while draining");

    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status, answer.json["status"].as_str()), (200, Some("sent")), "{:#}", answer.json);
    assert!(server.wait_exit().success());
    assert!(server.log_text().contains("all requests finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_requests_made_and_logs_hold_no_secrets() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let mut server = Server::spawn(&yaml(&mock.endpoint(), "1110"), &env_pairs());
    let http = reqwest::Client::new();
    assert_eq!(send(&http, &server, "+8613800138000", "918273").await.status, 200);
    send(&http, &server, "+8613800138000", "918274").await.assert_error(429, "rate_limited");
    mock.reply(Reply::Envelope(200, "FailedOperation.TemplateIncorrectOrUnapproved"));
    send(&http, &server, "+8613800138009", "918275").await.assert_error(502, "upstream_rejected");
    send(&http, &server, "+86 garbage", "918276").await.assert_error(400, "invalid_phone");
    let r = http.post(server.url("/v1/sms/send")).bearer_auth("wrong-token-but-long").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);

    let m = metrics(&http, &server).await;
    for expected in [
        r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="sent"} 1"#,
        r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="rate_limited"} 1"#,
        r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="upstream_rejected"} 1"#,
        r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="invalid_phone"} 1"#,
        r#"smsgate_requests_total{tenant="",usage="",code="unauthorized"} 1"#,
        r#"smsgate_rate_limit_denials_total{tenant="acme",rule="burst",shadow="false"} 1"#,
        r#"smsgate_upstream_results_total{tenant="acme",code="Ok",provider="tencent"} 1"#,
        r#"smsgate_upstream_results_total{tenant="acme",code="FailedOperation.TemplateIncorrectOrUnapproved",provider="tencent"} 1"#,
        r#"smsgate_upstream_duration_seconds_count{tenant="acme",provider="tencent"} 2"#,
    ] {
        assert!(m.contains(expected), "missing {expected}\n{m}");
    }

    server.signal("TERM");
    assert!(server.wait_exit().success());
    let log = server.log_text();
    // One structured event per request, with the number masked.
    let events: Vec<serde_json::Value> =
        log.lines().filter(|l| l.contains("\"send request\"")).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 5, "{log}");
    assert_eq!(events[0]["phone"], "+86138****8000");
    assert_eq!(events[0]["outcome"], "sent");
    assert_eq!(events[2]["upstream_code"], "FailedOperation.TemplateIncorrectOrUnapproved");
    for secret in ["918273", "918274", "918275", "918276", "13800138000", SECRET_KEY, TOKEN, "wrong-token-but-long"] {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_off_by_the_shutdown_grace_is_logged_as_unknown() {
    let mock = MockTencent::start(SECRET_KEY).await;
    mock.reply(Reply::Slow(Duration::from_secs(5)));
    let config =
        yaml(&mock.endpoint(), "1110").replace("max_body_bytes: 1024", "max_body_bytes: 1024\n  shutdown_grace: 100ms");
    let mut server = Server::spawn(&config, &env_pairs());
    let url = server.url("/v1/sms/send");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(native("+8613800138000", "SignIn", "123456"))
            .send()
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.seen().is_empty() {
        assert!(Instant::now() < deadline, "the send never reached the mock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("TERM");
    assert!(server.wait_exit().success());
    assert!(in_flight.await.unwrap().is_err(), "the caller's connection was closed");
    let log = server.log_text();
    let line = log.lines().find(|l| l.contains("outcome unknown")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("+86138****8000"), "{line}");
}

/// With one endpoint and it down: the breaker logs when it opens (once, not at every failure), and once open
/// each send makes one attempt instead of `max_attempts` against an endpoint known to be down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_dead_single_endpoint_is_logged_once_and_tried_once_per_send() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut server = Server::spawn(&yaml(&format!("http://{dead}"), "1110"), &env_pairs());
    let http = reqwest::Client::new();
    for i in 0..5 {
        send(&http, &server, &format!("+86138001380{i:02}"), "123456").await.assert_error(503, "upstream_unavailable");
    }
    let m = metrics(&http, &server).await;
    // The first send's three attempts open the breaker (two retries); the next four try once each.
    assert!(m.contains(r#"smsgate_upstream_retries_total{reason="connect"} 2"#), "{m}");
    // The log is written in order by one thread: once the fifth request's line is there, so is every earlier one.
    server.wait_for_nth_log("\"send request\"", 5);
    let log = server.log_text();
    assert_eq!(log.lines().filter(|l| l.contains("endpoint unreachable")).count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_replayed_send_says_so_in_its_log_line() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let mut server = Server::spawn(&yaml(&mock.endpoint(), "1110"), &env_pairs());
    let http = reqwest::Client::new();
    let first = send(&http, &server, "+8613800138000", "123456").await;
    let again = send(&http, &server, "+8613800138000", "123456").await;
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(mock.seen().len(), 1);
    server.wait_for_nth_log("\"send request\"", 2);
    let log = server.log_text();
    let events: Vec<serde_json::Value> =
        log.lines().filter(|l| l.contains("\"send request\"")).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0].get("replayed"), None, "{log}");
    assert_eq!(events[1]["replayed"], true, "{log}");
}

/// The gateway's reload log events, in order: ("started" | "reloaded" | "failed", tenants or error text).
fn reload_events(server: &Server) -> Vec<(String, String)> {
    server
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| {
            let kind = match event["message"].as_str()? {
                "config reload started" => "started",
                "config reloaded" => "reloaded",
                m if m.starts_with("config reload failed") => "failed",
                _ => return None,
            };
            let detail = match kind {
                "reloaded" => event["tenants"].to_string(),
                "failed" => event["error"].as_str().unwrap_or_default().to_owned(),
                _ => String::new(),
            };
            Some((kind.to_owned(), detail))
        })
        .collect()
}

/// Waits (up to `secs`) until the reload events satisfy `done`.
async fn wait_for_reloads(server: &Server, secs: u64, done: impl Fn(&[(String, String)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done(&reload_events(server)) {
        assert!(Instant::now() < deadline, "reloads: {:#?}\n{}", reload_events(server), server.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replaces the config file in one step, so a reload reads the old file or the new one, never half of one.
fn replace_config(server: &Server, text: &str) {
    let next = server.config_path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, &server.config_path).unwrap();
}

fn with_script(config: &str, script: &str) -> String {
    config.replacen("  beta:\n", &format!("    script: {script}\n  beta:\n"), 1)
}

/// A SIGHUP whose script was a FIFO stopped every answer, /healthz included, until the FIFO was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_script_path_fifo_does_not_block_reload() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let server = Server::spawn(&yaml(&mock.endpoint(), "1110"), &env_pairs());
    let http = reqwest::Client::new();
    let dir = server.config_path.parent().unwrap().to_owned();
    let fifo = dir.join("hook.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::create_dir(dir.join("hooks")).unwrap();

    let doors = [
        (fifo.to_str().unwrap().to_owned(), "it is a FIFO, not a regular file"),
        ("/dev/zero".to_owned(), "it is a device, not a regular file"),
        ("hooks".to_owned(), "it is a directory, not a regular file"),
    ];
    let mut failures = 0;
    for (i, (script, reason)) in doors.iter().enumerate() {
        replace_config(&server, &with_script(&yaml(&mock.endpoint(), "4444"), script));
        server.signal("HUP");
        failures += 1;
        wait_for_reloads(&server, 60, |events| events.iter().filter(|(k, _)| k == "failed").count() == failures).await;
        let error = reload_events(&server).into_iter().rfind(|(k, _)| k == "failed").unwrap().1;
        assert!(error.ends_with(&format!("tenants.acme.script: cannot read {script}: {reason}")), "{error}");
        // Nobody wrote to the FIFO: the reload was refused on its own, and the old config keeps serving.
        let health = http.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let a = send(&http, &server, &format!("+861380013810{i}"), "111111").await;
        assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some("1110")), "{:#}", a.json);
    }
    // The config file itself turned into a FIFO.
    std::fs::remove_file(&server.config_path).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&server.config_path).status().unwrap().success());
    server.signal("HUP");
    failures += 1;
    wait_for_reloads(&server, 60, |events| events.iter().filter(|(k, _)| k == "failed").count() == failures).await;
    let error = reload_events(&server).into_iter().rfind(|(k, _)| k == "failed").unwrap().1;
    assert!(error.ends_with("cannot read the config file: it is a FIFO, not a regular file"), "{error}");
    assert_eq!(send(&http, &server, "+8613800138109", "111111").await.json["template_id"], "1110");

    // The reloader is not stuck: a good config still goes in.
    std::fs::remove_file(&server.config_path).unwrap();
    replace_config(&server, &yaml(&mock.endpoint(), "4444"));
    server.signal("HUP");
    wait_for_reloads(&server, 60, |events| events.iter().any(|(k, _)| k == "reloaded")).await;
    assert_eq!(send(&http, &server, "+8613800138110", "111111").await.json["template_id"], "4444");
    let m = metrics(&http, &server).await;
    assert!(m.contains(r#"smsgate_config_reloads_total{result="error"} 4"#), "{m}");
    assert!(m.contains(r#"smsgate_config_reloads_total{result="ok"} 1"#), "{m}");
}

/// A valid reload of 10,000 tenants with scripts delayed every other request by 6.5 s: the compile ran on an
/// async worker. Now it runs on a blocking thread, one at a time, and hangups during it coalesce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_reload_of_a_large_config_does_not_stall_requests() {
    const TENANTS: usize = 1000;
    // The loop below sends as fast as answers come while the reload runs: the tenant's rule (100 per second)
    // would refuse some of them (429), which says nothing about stalls. Each number is sent once.
    let yaml = |endpoint: &str, template: &str| {
        let tenant_rule = "\n      - { name: tenant, key: tenant, limit: 100, per: 1s }";
        let text = yaml(endpoint, template);
        assert!(text.contains(tenant_rule));
        text.replace(tenant_rule, "")
    };
    let mock = MockTencent::start(SECRET_KEY).await;
    let server = Server::spawn(&yaml(&mock.endpoint(), "1110"), &env_pairs());
    let http = reqwest::Client::new();
    let dir = server.config_path.parent().unwrap().to_owned();
    std::fs::write(dir.join("hook.lua"), "function on_send(req) end\n").unwrap();
    let mut large = yaml(&mock.endpoint(), "4444");
    for i in 0..TENANTS {
        large.push_str(&format!(
            "  t{i}:\n    tokens: [\"token-for-tenant-{i:06}\"]\n    tencent: {{ accessKeyId: AKID, accessKeySecret: x, sdkAppId: 1400006666, region: ap-guangzhou, templates: [{{ usageType: SignIn, templateCode: \"1110\" }}], dry_run: true }}\n    script: hook.lua\n"
        ));
    }
    replace_config(&server, &large);
    server.signal("HUP");
    wait_for_reloads(&server, 60, |events| !events.is_empty()).await;

    // While the large config compiles, /healthz and sends are answered on the config in force.
    let mut answered_during = 0;
    for i in 0.. {
        let health = http.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let finished_before = reload_events(&server).len() > 1;
        let a = send(&http, &server, &format!("+86138001{i:05}"), "222222").await;
        // The config in force answers: the old one until the reload finished (it may finish meanwhile), then
        // the large one, or already the last one (5555) when the coalesced reload after it was quick to finish.
        let expected: &[&str] = if finished_before { &["4444", "5555"] } else { &["1110", "4444", "5555"] };
        assert_eq!(a.status, 200, "{:#}", a.json);
        assert!(expected.contains(&a.json["template_id"].as_str().unwrap_or_default()), "{:#}", a.json);
        if finished_before || reload_events(&server).len() > 1 {
            break;
        }
        answered_during += 1;
        if answered_during == 1 {
            // Hangups during the reload: five in one `kill`, after the final config is in place.
            replace_config(&server, &yaml(&mock.endpoint(), "5555"));
            let pid = server.child.id().to_string();
            let status = std::process::Command::new("kill").arg("-HUP").args([&pid, &pid, &pid, &pid, &pid]).status();
            assert!(status.unwrap().success());
        }
    }
    assert!(answered_during >= 1, "requests were answered while the reload ran: {:#?}", reload_events(&server));

    // The five hangups coalesced into one more reload, which read the file as it was then: the last one wins.
    wait_for_reloads(&server, 120, |events| events.iter().any(|(k, t)| k == "reloaded" && t == "2")).await;
    let events = reload_events(&server);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, vec!["started", "reloaded", "started", "reloaded"], "never two at once: {events:#?}");
    assert_eq!(events[1].1, (TENANTS + 2).to_string());
    assert_eq!(send(&http, &server, "+8613900139000", "333333").await.json["template_id"], "5555");
}

/// Two `acme:` tenants were accepted, the last one winning; now `serve` refuses to start on them and a
/// reload keeps the config in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_duplicate_tenant_is_refused_by_serve_and_reload() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let good = yaml(&mock.endpoint(), "1110");
    let acme = &good[good.find("  acme:\n").unwrap()..good.find("  beta:\n").unwrap()];
    let duplicated = good.replacen("  beta:\n", &format!("{}  beta:\n", acme.replace("1110", "4444")), 1);
    let first = good[..good.find("  acme:\n").unwrap()].lines().count() + 1;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.yaml");
    std::fs::write(&path, &duplicated).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .envs(env_pairs())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(": tenants.acme: duplicate key `acme` (first at line {first}, column 3)")),
        "{stderr}"
    );

    let server = Server::spawn(&good, &env_pairs());
    let http = reqwest::Client::new();
    replace_config(&server, &duplicated);
    server.signal("HUP");
    wait_for_reloads(&server, 60, |events| events.iter().any(|(k, _)| k == "failed")).await;
    let error = reload_events(&server).into_iter().find(|(k, _)| k == "failed").unwrap().1;
    assert!(
        error.contains(&format!("tenants.acme: duplicate key `acme` (first at line {first}, column 3)")),
        "{error}"
    );
    assert_eq!(send(&http, &server, "+8613800138000", "111111").await.json["template_id"], "1110");
}

/// `server.workers: 1` runs a single-threaded runtime: sends, a reload (compiled on a blocking thread) and
/// a graceful stop all still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_worker_serves_reloads_and_stops() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let one = |template: &str| {
        yaml(&mock.endpoint(), template).replace("max_body_bytes: 1024", "max_body_bytes: 1024\n  workers: 1")
    };
    let mut server = Server::spawn(&one("1110"), &env_pairs());
    let http = reqwest::Client::new();
    assert_eq!(send(&http, &server, "+8613800138001", "111111").await.json["template_id"], "1110");
    server.write_config(&one("4444"));
    server.signal("HUP");
    server.wait_for_log("config reloaded");
    assert_eq!(send(&http, &server, "+8613800138002", "222222").await.json["template_id"], "4444");
    server.signal("TERM");
    assert!(server.wait_exit().success());
}
