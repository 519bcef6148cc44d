//! Operating the real binary: SIGHUP reload (good and broken configs), SIGTERM while a send is in flight,
//! `/metrics` counts, and logs that never carry a secret, token, code or unmasked number.

mod common;

use common::mock::{MockTencent, Reply};
use common::process::Server;
use common::*;
use std::time::{Duration, Instant};

fn yaml(endpoint: &str, template: &str) -> String {
    config_yaml(endpoint, PHONE_LIMITS, "")
        .replace(r#"templateCode: "1110""#, &format!(r#"templateCode: "{template}""#))
}

fn env_pairs() -> Vec<(&'static str, &'static str)> {
    vec![("ACME_SECRET", SECRET_KEY)]
}

async fn send(http: &reqwest::Client, server: &Server, phone: &str, code: &str) -> Answer {
    let r = http
        .post(server.url("/v1/sms/send"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(native(phone, "SignIn", code))
        .send()
        .await
        .unwrap();
    Answer::from(r).await
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
    let mut server = Server::spawn(&yaml(&mock.endpoint(), "1110"), &env_pairs());
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
        r#"smsgate_upstream_results_total{tenant="acme",code="Ok"} 1"#,
        r#"smsgate_upstream_results_total{tenant="acme",code="FailedOperation.TemplateIncorrectOrUnapproved"} 1"#,
        r#"smsgate_upstream_duration_seconds_count{tenant="acme"} 2"#,
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
