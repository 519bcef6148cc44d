//! The real binary: `check`, `explain`, and `serve` on the shipped gateway.yaml (dry-run demo tenant),
//! including a grep of everything it logged for secrets, tokens, codes and unmasked numbers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smsgate"));
    c.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("SMSGATE_CONFIG").env_remove("RUST_LOG");
    c
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml")
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = bin().arg("check").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gateway.yaml: ok"));
}

#[test]
fn check_reports_every_error_with_its_location_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(shipped()).unwrap().replace("per: 30s", "per: 30 seconds").replace(
        "accessKeySecret: ${DEMO_SECRET_KEY:-demo-secret-not-a-real-key}",
        "accessKeySecret: ${NOT_SET_ANYWHERE}",
    );
    std::fs::write(&path, text).unwrap();
    let out = bin().arg("check").arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines[0].starts_with(&format!("{}:", path.display())), "{stderr}");
    assert!(
        lines[0].contains(": tenants.demo.tencent.accessKeySecret: environment variable NOT_SET_ANYWHERE is not set"),
        "{stderr}"
    );
    assert!(lines[1].contains(": tenants.demo.limits[0].per: expected a duration"), "{stderr}");
    // file:line:col: on every error line.
    for line in &lines[..2] {
        let rest = line.strip_prefix(&format!("{}:", path.display())).unwrap();
        let mut parts = rest.splitn(3, ':');
        assert!(parts.next().unwrap().parse::<u32>().is_ok() && parts.next().unwrap().parse::<u32>().is_ok(), "{line}");
    }
}

#[test]
fn config_comes_from_smsgate_config_by_default() {
    let out = bin().arg("check").env("SMSGATE_CONFIG", "/nonexistent/gw.yaml").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gw.yaml: cannot read the config file"));
}

#[test]
fn explain_shows_each_stage_and_the_signed_request_without_the_secret() {
    let out = bin()
        .args(["explain", "--tenant", "demo", "--phone", "0086 138 0013 8000", "--usage", "MfaVerification"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "normalize  0086 138 0013 8000 -> +8613800138000 (country CN)",
        "template   MfaVerification -> 1113 (via Generic)",
        "policy     burst: 1 per 30s: allow",
        "protection prefix-conversion (shadow): key +861380: not blocked in this process",
        "X-TC-Region: ap-guangzhou",
        "Authorization: TC3-HMAC-SHA256 Credential=AKIDdemo/",
        r#""TemplateId":"1113""#,
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("demo-secret-not-a-real-key"));

    // The shipped demo tenant lists a test number: explain says it is not counted.
    let out =
        bin().args(["explain", "--tenant", "demo", "--phone", "13800000000", "--usage", "SignIn"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("policy     test number: not counted"));

    let out =
        bin().args(["explain", "--json", "--tenant", "demo", "--phone", "12", "--usage", "SignIn"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"]["code"], "invalid_phone");
}

#[test]
fn serve_answers_on_the_shipped_config_logs_nothing_secret_and_stops_on_sigterm() {
    let mut child = bin()
        .arg("serve")
        .env("SMSGATE_LISTEN", "127.0.0.1:0")
        .env("DEMO_TOKEN", "cli-test-token-abcdef")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exited early: {log}");
        log.push_str(&line);
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let statuses = runtime.block_on(async {
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        for body in [
            r#"{"phone":"+8613800138000","usage":"SignIn","code":"987654"}"#,
            r#"{"phone":"+8613800138000","usage":"SignIn","code":"987650"}"#,
            r#"{"phone":"garbage-13911112222","usage":"SignIn","code":"987654"}"#,
        ] {
            let r = http
                .post(format!("http://{addr}/v1/sms/send"))
                .bearer_auth("cli-test-token-abcdef")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        statuses
    });
    assert_eq!(statuses, vec![200, 429, 400]);

    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}\n{log}");
    assert!(log.contains("+86138****8000"), "numbers are logged masked:\n{log}");
    for secret in
        ["987654", "987650", "13800138000", "13911112222", "cli-test-token-abcdef", "demo-secret-not-a-real-key"]
    {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }
}

#[test]
fn check_reports_a_script_syntax_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/broken.lua"), "function on_send(req)\n  return {reject = }\nend\n")
        .unwrap();
    let path = dir.path().join("gw.yaml");
    let text = std::fs::read_to_string(shipped()).unwrap().replace("scripts/premium_block.lua", "scripts/broken.lua");
    std::fs::write(&path, text).unwrap();
    let out = bin().arg("check").arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(": tenants.demo.script: scripts/broken.lua:2: unexpected symbol near '}'"), "{stderr}");
}

#[test]
fn explain_shows_what_the_script_decided() {
    let out =
        bin().args(["explain", "--tenant", "demo", "--phone", "+19005550123", "--usage", "SignIn"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("script     scripts/premium_block.lua: rejected: This number cannot receive"), "{text}");
    assert!(text.contains("outcome    403 rejected"), "{text}");
    let out =
        bin().args(["explain", "--tenant", "demo", "--phone", "13800138000", "--usage", "SignIn"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("script     scripts/premium_block.lua: no change"));
}
