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
fn regression_a_port_in_use_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = bin().arg("serve").env("SMSGATE_LISTEN", addr.to_string()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
}

#[test]
fn config_comes_from_smsgate_config_by_default() {
    let out = bin().arg("check").env("SMSGATE_CONFIG", "/nonexistent/gw.yaml").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gw.yaml: cannot read the config file"));
}

/// Regression: `smsgate explain … | head` panicked on the closed pipe. A reader that went away ends the
/// output quietly, with success, for every command that prints.
#[test]
fn regression_a_closed_stdout_ends_the_output_quietly() {
    let explain = ["explain", "--tenant", "demo", "--phone", "+8613800138000", "--usage", "SignIn"];
    for args in [
        &explain[..],
        &["schema"],
        &["check", "--print"],
        &["explain", "--json", "--tenant", "demo", "--phone", "+8613800138000", "--usage", "SignIn"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin().args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("panicked"), "{args:?}: {:?} {stderr}", out.status);
    }
}

#[test]
fn explain_shows_each_stage_and_the_signed_request_without_the_secret() {
    let out = bin()
        .args(["explain", "--tenant", "demo", "--phone", "0086 138 0013 8000", "--usage", "MfaVerification"])
        .args(["--code", "654321"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "normalize  0086 138 0013 8000 -> +8613800138000 (country CN)",
        "type       mobile: allowed (number_types)",
        "template   MfaVerification -> 1113 (no template of its own: sent and limited as Generic)",
        "policy     burst: 1 per 30s: allow",
        "protection prefix-conversion: key +861380: not blocked in this process",
        "X-TC-Region: ap-guangzhou",
        "Authorization: TC3-HMAC-SHA256 Credential=AKIDdemo/",
        r#""TemplateId":"1113""#,
        r#""TemplateParamSet":["***"]"#,
        // The memory backend's counts live in the serving process: explain says it cannot see them.
        "memory backend: the running gateway's counts live in its own process",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // `--code` promises `***`: the code is never printed (regression: it was, inside TemplateParamSet).
    assert!(!text.contains("demo-secret-not-a-real-key") && !text.contains("654321"), "{text}");

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
        .env("SMSGATE_ADMIN_LISTEN", "127.0.0.1:0")
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

/// Runs `smsgate check` on `path`; a check that has not finished after 30 s is killed and fails the test
/// (a FIFO used to block it forever).
fn check(path: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = bin();
    command.arg("check").arg("--config").arg(path).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("check on {} did not finish", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// The shipped config, edited, written to `dir` beside a copy of its script.
fn shipped_with(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let scripts = dir.join("scripts");
    if !scripts.exists() {
        std::fs::create_dir(&scripts).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/premium_block.lua");
        std::fs::copy(script, scripts.join("premium_block.lua")).unwrap();
    }
    let path = dir.join("gw.yaml");
    std::fs::write(&path, edit(std::fs::read_to_string(shipped()).unwrap())).unwrap();
    path
}

#[test]
fn regression_nested_default_is_not_a_literal_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = shipped_with(dir.path(), |text| {
        text.replace("${DEMO_TOKEN:-demo-token-0123456789}", "${ACME_TOKEN:-${FALLBACK_TOKEN_VALUE}}")
            .replace("${DEMO_SECRET_KEY:-demo-secret-not-a-real-key}", "${ACME_SECRET:-x-${FALLBACK_SECRET}}")
    });
    let out = check(&path, &[]);
    assert_eq!(out.status.code(), Some(2), "check must fail: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    let shipped_text = std::fs::read_to_string(shipped()).unwrap();
    let line = 1 + shipped_text.lines().position(|l| l.contains("${DEMO_TOKEN:-")).unwrap();
    let expected = format!(":{line}:14: tenants.demo.tokens[0]: environment variable FALLBACK_TOKEN_VALUE is not set");
    assert!(lines[0].contains(&expected), "{stderr}");
    assert!(
        lines[1].contains(": tenants.demo.tencent.accessKeySecret: environment variable FALLBACK_SECRET is not set")
    );
    assert!(lines[2].ends_with("gw.yaml: 2 error(s)"), "{stderr}");

    // With the defaults' variables set, the config is fine (and explain signs with the nested secret).
    let env = [("FALLBACK_TOKEN_VALUE", "fallback-token-0123456789"), ("FALLBACK_SECRET", "s3cr3t")];
    let out = check(&path, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn regression_check_reports_every_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = shipped_with(dir.path(), |text| {
        text.replace("  shutdown_grace: 30s", "  shutdown_grace: 30s\n  read_timeout: 5s")
            .replace("    default_country: CN", "    default_country: CN\n    default_countries: [CN]")
            .replace("      dry_run: true", "      dry_run: true\n      dryrun: false")
            .replace("script: scripts/premium_block.lua", "script: scripts/premium_block.lua\n    scripts: []")
            + "logging: { level: debug }\n"
    });
    let out = check(&path, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        "server.read_timeout: unknown key `read_timeout`",
        "tenants.demo.default_countries: unknown key `default_countries`",
        "tenants.demo.tencent.dryrun: unknown key `dryrun`",
        "tenants.demo.scripts: unknown key `scripts`",
        "logging: unknown key `logging`",
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{stderr}");
    for (line, expected) in lines.iter().zip(expected) {
        let rest = line.strip_prefix(&format!("{}:", path.display())).unwrap_or_else(|| panic!("{line}"));
        let mut parts = rest.splitn(3, ':');
        assert!(parts.next().unwrap().parse::<u32>().is_ok() && parts.next().unwrap().parse::<u32>().is_ok(), "{line}");
        assert!(parts.next().unwrap().starts_with(&format!(" {expected}")), "{line}");
    }
    assert!(lines[expected.len()].ends_with("gw.yaml: 5 error(s)"), "{stderr}");
}

/// Peak resident memory of a finished child, from GNU time's report; None where /usr/bin/time is missing.
fn peak_rss_kib(report: &str) -> Option<u64> {
    report.lines().find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): ")?.parse().ok())
}

/// A 1 MiB scalar referenced 3,000 times took `check` to 3.3 GB.
#[test]
fn regression_alias_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.yaml");
    let bomb = format!(
        "tenants:\n  acme:\n    tokens: &blob [{}]\n    x: [{}]\n",
        "b".repeat(1 << 20),
        vec!["*blob"; 3000].join(", ")
    );
    std::fs::write(&path, bomb).unwrap();
    let time = Path::new("/usr/bin/time");
    let out = if time.exists() {
        Command::new(time).arg("-v").arg(env!("CARGO_BIN_EXE_smsgate")).arg("check").arg("--config").arg(&path).output()
    } else {
        bin().arg("check").arg("--config").arg(&path).output()
    }
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bomb.yaml:4:65: tenants.acme.x[8]: aliases expand to more than"), "{stderr}");
    match peak_rss_kib(&stderr) {
        // Without the cap this took gigabytes; the refusal reads the file once.
        Some(kib) => assert!(kib < 200 << 10, "peak RSS {kib} KiB"),
        None => eprintln!("note: /usr/bin/time is not installed; peak memory not measured"),
    }
}

/// A config or script that is a FIFO blocked `check` until someone wrote to it; `/dev/zero` ran it out of
/// memory.
#[test]
fn regression_check_refuses_fifos_devices_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for (config, reason) in
        [(fifo.as_path(), "a FIFO"), (Path::new("/dev/zero"), "a device"), (dir.path(), "a directory")]
    {
        let out = check(config, &[]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!("{}: cannot read the config file: it is {reason}, not a regular file", config.display());
        assert!(stderr.starts_with(&expected), "{stderr}");
    }
    for (script, reason) in [(fifo.to_str().unwrap(), "a FIFO"), ("/dev/zero", "a device"), ("/tmp", "a directory")] {
        let path = shipped_with(dir.path(), |text| text.replace("scripts/premium_block.lua", script));
        let out = check(&path, &[]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!(": tenants.demo.script: cannot read {script}: it is {reason}, not a regular file");
        assert!(stderr.lines().next().unwrap().ends_with(&expected), "{stderr}");
    }
}

/// A config with every kind of secret the parser reads, each a marker that must not be printed.
const EVERY_SECRET: &str = r#"
server:
  listen: 127.0.0.1:0
  admin_tokens: ["ADMINTOKENzz0123456789"]
limits_backend:
  kind: redis
  url: redis://:REDISPASSzz0123@127.0.0.1:6379
  key: STORAGEKEYzz0123456789abcdef0123456789
tenants:
  acme:
    tokens: ["TENANTTOKENzz0123456789"]
    tencent:
      accessKeyId: AKIDvisible
      accessKeySecret: TENCENTKEYzz0123456789
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - { usageType: SignIn, templateCode: "1110" }
        - { usageType: Generic, templateCode: "1113" }
      next_credentials: { accessKeyId: AKIDnext, accessKeySecret: NEXTKEYzz0123456789 }
      status_secret: STATUSSECRETzz0123456789
      proxy: http://user:PROXYPASSzz@proxy.internal:3128
    test_numbers:
      "+8613800000000": "TESTCODE77"
    conversion: { window: 10m, logto_webhook_secret: LOGTOKEYzz0123456789 }
    webhook: { url: "https://hooks.example.com/x", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw }
    supabase: { secret: "v1,whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", usage: SignIn }
    sdk_clients:
      - { secretId: AKIDclientvisible, secretKey: "${SDK_KEY}" }
"#;

/// `check --print` (as `nginx -T`): the config as read, `${VAR}` expanded, with no secret in it; the output
/// is itself a config that compiles to the same tenants once the secrets are put back.
#[test]
fn check_print_shows_the_config_with_every_secret_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, EVERY_SECRET).unwrap();
    let out = bin().args(["check", "--print", "-c"]).arg(&path).env("SDK_KEY", "SDKKEYzz0123456789").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for secret in [
        "ADMINTOKEN",
        "REDISPASS",
        "STORAGEKEY",
        "TENANTTOKEN",
        "TENCENTKEY",
        "NEXTKEY",
        "STATUSSECRET",
        "PROXYPASS",
        "TESTCODE77",
        "LOGTOKEY",
        "MfKQ9r8G",
        "QUJDREVG",
        "SDKKEY",
        "SDK_KEY",
    ] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}");
    }
    for shown in ["AKIDvisible", "AKIDnext", "AKIDclientvisible", "ap-guangzhou", "window: 10m", "usageType: SignIn"] {
        assert!(stdout.contains(shown), "{shown} missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("**REDACTED**").count(), 14, "{stdout}");
    // A broken config prints nothing but its errors.
    std::fs::write(&path, EVERY_SECRET.replace("window: 10m", "window: soon")).unwrap();
    let out = bin().args(["check", "--print", "-c"]).arg(&path).env("SDK_KEY", "SDKKEYzz0123456789").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && String::from_utf8_lossy(&out.stderr).contains("conversion.window"));
}

/// `smsgate schema` is derived from the parser's types: the committed gateway.schema.json (which the
/// modeline of gateway.yaml points editors at) is its output, and an independent validator (PyPI
/// `jsonschema`) accepts the shipped config and every example and refuses a typo.
#[test]
fn the_schema_is_committed_and_validates_the_shipped_config() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(root.join("gateway.schema.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed, "regenerate: smsgate schema > gateway.schema.json");
    let text = std::fs::read_to_string(shipped()).unwrap();
    assert!(text.starts_with("# yaml-language-server: $schema=./gateway.schema.json\n"));

    let Some(python) = crate::common::python::interpreter() else { return };
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, text.replace("  max_body_bytes:", "  max_body_byte:")).unwrap();
    let every = dir.path().join("every.yaml");
    std::fs::write(&every, EVERY_SECRET).unwrap();
    let mut examples: Vec<std::path::PathBuf> = vec![shipped(), every];
    for folder in ["examples", "deploy"] {
        examples.extend(yaml_files(&root.join(folder)));
    }
    let validate = |files: &[std::path::PathBuf]| {
        Command::new(&python)
            .arg(root.join("tests/python/validate_config.py"))
            .arg(root.join("gateway.schema.json"))
            .args(files)
            .output()
            .unwrap()
    };
    let out = validate(&examples);
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && report.contains("ok ") && !report.contains("invalid"), "{report}");
    let out = validate(&[typo]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && report.contains("max_body_byte"), "{report}");
}

/// Every .yaml/.yml file under `dir`, recursively (none when it does not exist).
fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
    found
}

/// `-c` is `--config`; `--version` names the commit (`build.rs`), and `explain --help` documents its flags.
#[test]
fn cli_conventions_short_config_version_commit_and_documented_flags() {
    let out = bin().args(["check", "-c"]).arg(shipped()).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("gateway.yaml: ok"));

    let version = String::from_utf8_lossy(&bin().arg("--version").output().unwrap().stdout).into_owned();
    let head =
        Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    let expected = match head {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    };
    // Built from this checkout: its HEAD (a commit made after the build would differ; tests build first).
    assert!(version.starts_with(&format!("smsgate {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains(&expected) || std::env::var_os("SMSGATE_COMMIT").is_some(), "{version} vs {expected}");

    let help = String::from_utf8_lossy(&bin().args(["explain", "--help"]).output().unwrap().stdout).into_owned();
    for flag in
        ["--tenant <TENANT>  ", "--phone <PHONE>  ", "--usage <USAGE>  ", "--code <CODE>  ", "--logto  ", "--json  "]
    {
        let line = help.lines().find(|l| l.contains(flag)).unwrap_or_else(|| panic!("{flag} in:\n{help}"));
        assert!(line.trim().len() > flag.trim().len() + 10, "{flag} has a description: {line}");
    }
}
