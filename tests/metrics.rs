//! The operational metrics: `smsgate_build_info`, the `process_*` family of the real binary, the request
//! duration histogram by route and status class (a closed label set whatever the path), Tencent's fee units
//! by tenant and country, and the last successful reload. Scraped over a real socket, as Prometheus does.

use crate::common::mock::{MockTencent, Reply};
use crate::common::process::Server;
use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// The value of the sample `name{labels}` (labels written as the exposition writes them), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

async fn scrape(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Every value the label `label` takes in family `family`.
fn label_values(text: &str, family: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(family))
        .filter_map(|l| {
            let start = l.find(&needle)? + needle.len();
            Some(l[start..start + l[start..].find('"')?].to_owned())
        })
        .collect()
}

const ROUTES: &[&str] = &[
    "native",
    "logto",
    "supabase",
    "verified",
    "logto_webhook",
    "tencent_status",
    "admin",
    "healthz",
    "readyz",
    "metrics",
    "tencent_api",
    "other",
];

#[tokio::test]
async fn request_durations_by_route_and_status_class_with_closed_labels() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, ""))).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await.status, 200);
    gw.post_as("/v1/sms/send", &native("+8613800138001", "SignIn", "123456"), None)
        .await
        .assert_error(401, "unauthorized");
    gw.post("/v1/logto/sms", "{").await.assert_error(400, "invalid_request");
    assert_eq!(reqwest::get(gw.url("/healthz")).await.unwrap().status(), 200);
    // Hostile paths: caller-chosen text never becomes a label value, and the status callback's path secret
    // never appears.
    for path in ["/v1/tencent/status/secret-in-the-path-0001", "/x\"y", "/admin/v1/whatever", "/%2e%2e/etc/passwd"] {
        let answer = gw.http.post(gw.url(path)).body("{}").send().await.unwrap();
        assert!(answer.status().is_client_error(), "{path}: {}", answer.status());
    }
    let text = scrape(&gw.url("/metrics")).await;
    let count = |route: &str, class: &str| {
        sample(&text, &format!("smsgate_request_duration_seconds_count{{route=\"{route}\",class=\"{class}\"}}"))
    };
    assert_eq!(count("native", "2xx"), Some(1.0), "{text}");
    assert_eq!(count("native", "4xx"), Some(1.0));
    assert_eq!(count("logto", "4xx"), Some(1.0));
    assert_eq!(count("healthz", "2xx"), Some(1.0));
    assert_eq!(count("tencent_status", "4xx"), Some(1.0));
    assert_eq!(count("other", "4xx"), Some(3.0), "/x\"y, the dot-dot path, an admin path no admin route has");
    assert_eq!(count("admin", "4xx"), None);
    assert!(!text.contains("secret-in-the-path"), "the path secret never reaches the metrics");
    let routes = label_values(&text, "smsgate_request_duration_seconds", "route");
    assert!(routes.iter().all(|r| ROUTES.contains(&r.as_str())), "{routes:?}");
    let classes = label_values(&text, "smsgate_request_duration_seconds", "class");
    assert!(classes.iter().all(|c| ["2xx", "3xx", "4xx", "5xx"].contains(&c.as_str())), "{classes:?}");
    // The bucket bounds hold the one successful send.
    let inf = sample(&text, "smsgate_request_duration_seconds_bucket{le=\"+Inf\",route=\"native\",class=\"2xx\"}")
        .or_else(|| {
            sample(&text, "smsgate_request_duration_seconds_bucket{route=\"native\",class=\"2xx\",le=\"+Inf\"}")
        });
    assert_eq!(inf, Some(1.0), "{text}");
}

#[tokio::test]
async fn tencent_fee_units_are_counted_by_tenant_and_country() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, ""))).await;
    for phone in ["+8613800138000", "+8613800138001", "+14155550100"] {
        assert_eq!(gw.post("/v1/sms/send", &native(phone, "SignIn", "123456")).await.status, 200, "{phone}");
    }
    // A refusal Tencent answered (nothing billed) and a repeat answered by de-duplication count nothing.
    mock.reply(Reply::PerNumber("LimitExceeded.PhoneNumberDailyLimit"));
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138002", "SignIn", "123456")).await.status, 429);
    gw.clock.advance(Duration::from_secs(60));
    let replay = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let text = scrape(&gw.url("/metrics")).await;
    let fees = |country: &str| {
        sample(&text, &format!("smsgate_upstream_fee_units_total{{tenant=\"acme\",country=\"{country}\"}}"))
    };
    assert_eq!((fees("CN"), fees("US")), (Some(2.0), Some(1.0)), "{text}");
    assert_eq!(mock.seen().len(), 4);
}

/// Each spend cap's use is a ratio at every scrape (the alert SmsgateSpendCapNearlyUsed reads it), so an
/// operator hears of a filling cap before it refuses sends; a new period reads from nothing again.
#[tokio::test]
async fn spend_cap_use_shows_as_a_ratio_before_the_cap_refuses() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let caps = "    spend_caps: { daily: 4, countries: { US: { monthly: 2 } } }";
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), &format!("      []\n{caps}"), ""))).await;
    for phone in ["+8613800138000", "+8613800138001", "+8613800138002", "+14155550100"] {
        assert_eq!(gw.post("/v1/sms/send", &native(phone, "SignIn", "123456")).await.status, 200, "{phone}");
    }
    let used = |text: &str, scope: &str, period: &str| {
        let labels = format!("tenant=\"acme\",scope=\"{scope}\",period=\"{period}\",kind=\"messages\"");
        sample(text, &format!("smsgate_spend_cap_used_ratio{{{labels}}}"))
    };
    let text = scrape(&gw.url("/metrics")).await;
    assert_eq!((used(&text, "all", "daily"), used(&text, "US", "monthly")), (Some(1.0), Some(0.5)), "{text}");
    assert_eq!(label_values(&text, "smsgate_spend_cap_used_ratio", "kind"), BTreeSet::from(["messages".to_owned()]));
    // The gauge said so: the next send is refused.
    gw.post("/v1/sms/send", &native("+8613800138003", "SignIn", "123456")).await.assert_error(429, "spend_cap_reached");
    // The next day in China time: the daily cap is unused again, the month's use stays.
    gw.clock.advance(Duration::from_secs(86_400));
    let text = scrape(&gw.url("/metrics")).await;
    assert_eq!((used(&text, "all", "daily"), used(&text, "US", "monthly")), (Some(0.0), Some(0.5)), "{text}");
}

#[tokio::test]
async fn last_successful_reload_time_follows_the_injected_clock() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let yaml = config_yaml(&mock.endpoint(), PHONE_LIMITS, "");
    let gw = TestGateway::start(compile(&yaml)).await;
    let read = |text: &str| {
        (
            sample(text, "smsgate_config_last_reload_success_timestamp_seconds"),
            sample(text, "smsgate_config_last_reload_successful"),
        )
    };
    assert_eq!(read(&scrape(&gw.url("/metrics")).await), (Some(START_UNIX as f64), Some(1.0)), "start-up counts");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    gw.clock.advance(Duration::from_secs(100));
    assert!(smsgate::server::reload_from(&gw.gateway, &path, &env()));
    assert_eq!(read(&scrape(&gw.url("/metrics")).await), (Some((START_UNIX + 100) as f64), Some(1.0)));

    std::fs::write(&path, "tenants: {").unwrap();
    gw.clock.advance(Duration::from_secs(100));
    assert!(!smsgate::server::reload_from(&gw.gateway, &path, &env()));
    let text = scrape(&gw.url("/metrics")).await;
    assert_eq!(read(&text), (Some((START_UNIX + 100) as f64), Some(0.0)), "a failed reload keeps the time");
    assert_eq!(sample(&text, "smsgate_config_reloads_total{result=\"error\"}"), Some(1.0));
}

#[test]
fn the_real_binary_exposes_build_info_and_process_metrics() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let server = Server::spawn(&config_yaml("http://127.0.0.1:9", PHONE_LIMITS, ""), &[("ACME_SECRET", SECRET_KEY)]);
    let first = runtime.block_on(scrape(&server.url("/metrics")));

    let info = first.lines().find(|l| l.starts_with("smsgate_build_info{")).expect("build_info");
    assert!(info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{info}");
    assert!(info.ends_with("} 1"), "{info}");
    let commit = label_values(&first, "smsgate_build_info", "commit").into_iter().next().unwrap();
    if Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists() {
        assert!(commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()), "commit {commit:?}");
    }

    let start = sample(&first, "process_start_time_seconds").unwrap();
    assert!(start >= before.floor() - 1.0 && start <= before + 30.0, "started {start}, test at {before}");
    let rss = sample(&first, "process_resident_memory_bytes").unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(rss > kb * 1024.0 / 2.0 && rss < kb * 1024.0 * 2.0, "rss {rss} vs VmRSS {kb} kB");
    assert!(sample(&first, "process_virtual_memory_bytes").unwrap() >= rss);
    assert!(sample(&first, "process_max_fds").unwrap() >= 64.0);
    let cpu = sample(&first, "process_cpu_seconds_total").unwrap();

    // 20 more connections held open: 20 more descriptors in the gateway.
    let open = sample(&first, "process_open_fds").unwrap();
    let held: Vec<_> = (0..20).map(|_| std::net::TcpStream::connect(&server.addr).unwrap()).collect();
    let mut now_open = 0.0;
    for _ in 0..100 {
        now_open = sample(&runtime.block_on(scrape(&server.url("/metrics"))), "process_open_fds").unwrap();
        if now_open >= open + 20.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20)); // until the gateway has accepted them all
    }
    assert!(now_open >= open + 20.0, "{open} then {now_open} with 20 connections held");
    drop(held);
    let last = runtime.block_on(scrape(&server.url("/metrics")));
    assert!(sample(&last, "process_cpu_seconds_total").unwrap() >= cpu, "a counter never goes down");
    assert_eq!(sample(&last, "process_start_time_seconds"), Some(start));
}

#[tokio::test]
async fn an_open_breaker_shows_until_its_endpoint_answers_again() {
    let fallback = MockTencent::start(SECRET_KEY).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yaml = config_yaml(
        &format!("http://{dead}"),
        "      []",
        &format!("      fallback_endpoints: [\"{}\"]", fallback.endpoint()),
    );
    let gw = TestGateway::start(compile(&yaml)).await;
    let series = format!("smsgate_upstream_breaker_open{{endpoint=\"http://{dead}/\"}}");
    for i in 0..3 {
        assert_eq!(sample(&scrape(&gw.url("/metrics")).await, &series), None, "closed before failure {i}");
        assert_eq!(gw.post("/v1/sms/send", &native(&format!("+86138001380{i:02}"), "SignIn", "1")).await.status, 200);
    }
    assert_eq!(sample(&scrape(&gw.url("/metrics")).await, &series), Some(1.0), "open after 3 connect failures");

    // The endpoint comes back; after the cool-down a send tries it, and it answers: closed.
    let revived = MockTencent::start_on(dead.port(), SECRET_KEY).await;
    gw.clock.advance(Duration::from_secs(31));
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138099", "SignIn", "1")).await.status, 200);
    assert_eq!(revived.seen().len(), 1);
    assert_eq!(sample(&scrape(&gw.url("/metrics")).await, &series), Some(0.0));
}
