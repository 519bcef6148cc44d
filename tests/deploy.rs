//! The operator files under deploy/ checked with the real tools: the alert rules' promtool unit tests, every
//! alert and Grafana expression parsed by promtool (loaded as recording rules) and naming only metrics the
//! gateway exposes, and a real Prometheus scraping the real binary's admin listener. promtool and prometheus come from
//! Debian's `prometheus` package (installed by .ci/run); without them these tests are skipped with a note,
//! unless SMSGATE_REQUIRE_PROMETHEUS=1 (as in .ci/run), which makes a missing tool a failure.

use crate::common::process::Server;
use crate::common::redis_server::free_port;
use crate::common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The tool on PATH, or None (after a note) when it is missing and not required.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert_ne!(
            std::env::var("SMSGATE_REQUIRE_PROMETHEUS").as_deref(),
            Ok("1"),
            "{name} is not installed and SMSGATE_REQUIRE_PROMETHEUS=1 (apt-get install prometheus)"
        );
        eprintln!("note: {name} is not installed; skipping (apt-get install prometheus)");
    }
    found
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the tool runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// Every expression of the alert rules and of the dashboard's panels, with Grafana's variables replaced by
/// values Prometheus accepts.
fn expressions() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let rules = std::fs::read_to_string(repo("deploy/prometheus/alerts.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&rules).unwrap();
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            found.push((format!("alert {name}"), rule["expr"].as_str().unwrap().to_owned()));
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/smsgate.json")).unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$tenant", ".*")
                .replace("$job", ".*");
            assert!(!expr.contains('$'), "a Grafana variable left in {expr}");
            found.push((format!("panel {:?}", panel["title"]), expr));
        }
    }
    found
}

/// The metric names an expression reads: identifiers that are not functions, keywords, label names
/// (matchers, `by`/`without`/`on`/`ignoring`/`group_*` lists), strings, numbers or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut last_word) = (0, String::new());
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c == '('
            && ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&last_word.as_str())
        {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            last_word.clear();
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let keyword = [
                "and",
                "or",
                "unless",
                "offset",
                "bool",
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
                "inf",
                "nan",
            ]
            .contains(&word.to_ascii_lowercase().as_str());
            // `sum by (x) (...)`: an aggregation whose grouping comes first.
            let rest: String = chars[i..].iter().collect::<String>().trim_start().to_owned();
            let grouped = ["by", "without"]
                .iter()
                .any(|g| rest.strip_prefix(g).is_some_and(|after| after.trim_start().starts_with('(')));
            if !keyword && !grouped && next != Some(&'(') {
                names.insert(word.clone());
            }
            last_word = word;
        } else {
            if !c.is_whitespace() {
                last_word.clear();
            }
            i += 1;
        }
    }
    names
}

/// Every series name the gateway's /metrics can hold, from its `# TYPE` lines (counters add `_total`,
/// histograms `_bucket`, `_sum`, `_count`).
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => drop(names.insert(format!("{name}_total"))),
            "histogram" => names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
            _ => drop(names.insert(name.to_owned())),
        }
    }
    names
}

#[test]
fn the_metric_name_scanner_finds_names_and_nothing_else() {
    let names = metric_names(
        r#"sum by (tenant, le) (rate(smsgate_a_total{code=~"x|y", le="+Inf"}[5m] offset 1d)) / on (tenant) group_left (country) smsgate_b and time() - process_c > 0.5 * 1e3"#,
    );
    assert_eq!(names, BTreeSet::from(["smsgate_a_total".into(), "smsgate_b".into(), "process_c".into()]));
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = tool("promtool") else { return };
    let dir = repo("deploy/prometheus");
    run(Command::new(&promtool).current_dir(&dir).args(["check", "rules", "alerts.yaml"]));
    run(Command::new(&promtool).current_dir(&dir).args(["test", "rules", "alerts.test.yaml", "alerts.week.test.yaml"]));
}

#[tokio::test]
async fn every_alert_and_dashboard_expression_parses_and_reads_only_exposed_metrics() {
    let Some(promtool) = tool("promtool") else { return };
    let gw = TestGateway::start(compile(&config_yaml("http://127.0.0.1:9", PHONE_LIMITS, ""))).await;
    let exposed = exposed(&reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap());
    assert!(exposed.contains("smsgate_requests_total") && exposed.contains("process_open_fds"), "{exposed:?}");

    let expressions = expressions();
    assert!(expressions.len() > 30, "{} expressions", expressions.len());
    let mut unknown = Vec::new();
    let mut rules = String::from("groups:\n  - name: expressions\n    rules:\n");
    for (i, (place, expr)) in expressions.iter().enumerate() {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        unknown.extend(names.into_iter().filter(|n| !exposed.contains(n)).map(|n| format!("{place}: {n}")));
        rules.push_str(&format!("      - record: check:expression_{i}\n        expr: {}\n", serde_json::json!(expr)));
    }
    assert!(unknown.is_empty(), "metrics the gateway does not expose: {unknown:#?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("expressions.yaml"), &rules).unwrap();
    let checked = run(Command::new(&promtool).current_dir(dir.path()).args(["check", "rules", "expressions.yaml"]));
    assert!(checked.contains(&format!("SUCCESS: {} rules found", expressions.len())), "{checked}");
}

/// A Prometheus server on a free loopback port, with its data in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_gateway() {
    let Some(prometheus) = tool("prometheus") else { return };
    // Scraped on the admin listener, as deploy/kubernetes does.
    let yaml = config_yaml("http://127.0.0.1:9", PHONE_LIMITS, "")
        .replace("  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n");
    let mut server = Server::spawn(&yaml, &[("ACME_SECRET", SECRET_KEY)]);
    let line = server.wait_for_log("admin listening");
    let admin = serde_json::from_str::<serde_json::Value>(&line).unwrap()["addr"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{}]\nscrape_configs:\n  - job_name: smsgate\n    static_configs: [{{ targets: ['{}'] }}]\n",
        repo("deploy/prometheus/alerts.yaml").display(),
        admin
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prometheus = Prometheus { child, port, _dir: dir };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let query = |q: &str| -> serde_json::Value {
        runtime.block_on(async {
            let url = format!("http://127.0.0.1:{}/api/v1/query", prometheus.port);
            match reqwest::Client::new().get(url).query(&[("query", q)]).send().await {
                Ok(answer) => serde_json::from_str(&answer.text().await.unwrap_or_default()).unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            }
        })
    };
    // Until Prometheus has started, scraped the target and can answer for it (a few scrape intervals).
    let deadline = Instant::now() + Duration::from_secs(90);
    let up = loop {
        let answer = query("up{job=\"smsgate\"}");
        if answer["data"]["result"][0]["value"][1] == "1" {
            break answer;
        }
        assert!(Instant::now() < deadline, "the target never came up: {answer}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(up["data"]["result"][0]["metric"]["instance"], admin.as_str());
    let info = query("smsgate_build_info");
    let series = &info["data"]["result"][0];
    assert_eq!(series["metric"]["version"], env!("CARGO_PKG_VERSION"), "{info}");
    assert_eq!(series["value"][1], "1");
    let open = query("process_open_fds{job=\"smsgate\"}");
    assert!(open["data"]["result"][0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{open}");
    // The alert rules loaded and evaluate against the live gateway: none fires on an idle one.
    let rules = runtime.block_on(async {
        let url = format!("http://127.0.0.1:{}/api/v1/rules", prometheus.port);
        serde_json::from_str::<serde_json::Value>(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap()
    });
    let loaded = rules["data"]["groups"][0]["rules"].as_array().map_or(0, Vec::len);
    let alerts = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yaml"));
    assert_eq!(loaded, alerts.unwrap().matches("- alert: ").count(), "{rules}");
    assert!(!rules.to_string().contains("\"state\":\"firing\""), "{rules}");
}

#[test]
fn the_kubernetes_example_config_compiles() {
    // The gateway.yaml inside deploy/kubernetes/configmap.yaml, with the variables its Secret provides.
    let manifest = std::fs::read_to_string(repo("deploy/kubernetes/configmap.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&manifest).unwrap();
    let yaml = docs[0]["data"]["gateway.yaml"].as_str().expect("data.gateway.yaml");
    let env: std::collections::HashMap<String, String> = [
        ("LOGTO_SMS_TOKEN", "logto-sms-token-0123456789abcdef"),
        ("TENCENT_SECRET_ID", "AKIDexample"),
        ("TENCENT_SECRET_KEY", "example-secret-key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = smsgate::Config::from_yaml(yaml, Path::new("configmap/gateway.yaml"), &env)
        .unwrap_or_else(|e| panic!("deploy/kubernetes/configmap.yaml: {e}"));
    assert!(config.tenant("logto").is_some());
}
