//! The Lua hook through the real HTTP path: each shipped example script's effect as the mock Tencent sees
//! it, rejections that send nothing, hostile scripts that fail fast while other requests go on, re-checked
//! changes, the fail policy, config errors, and a memory measure across many calls.

use crate::common::mock::MockTencent;
use crate::common::*;
use smsgate::config::{Config, ConfigErrors};
use smsgate::error::GatewayError;
use smsgate::pipeline::Trail;
use smsgate::sms::{PhoneInput, SendRequest};
use smsgate::Runtime;
use std::path::{Path, PathBuf};

/// A tenant `hooked` running `script` (relative to the config file in `dir`), plus anything in `extra`
/// at tenant level. Templates: SignIn 1110, Generic 1113, SignIn_intl 2110, Generic_intl 2113, SignIn_en 3110.
/// Unless `extra` sets `script_limits`, calls get a 1 s deadline: these tests are not about time, and a
/// debug build on a busy machine can take a hook call past the 10 ms default.
fn hooked_yaml(endpoint: &str, script: &str, extra: &str) -> String {
    let extra = if extra.contains("script_limits") {
        extra.to_owned()
    } else {
        format!("{extra}\n    script_limits: {{ time: 1s }}")
    };
    format!(
        r#"
tenants:
  hooked:
    tokens: ["{TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - {{ usageType: SignIn, templateCode: "1110" }}
        - {{ usageType: Generic, templateCode: "1113" }}
        - {{ usageType: SignIn_intl, templateCode: "2110" }}
        - {{ usageType: Generic_intl, templateCode: "2113" }}
        - {{ usageType: SignIn_en, templateCode: "3110" }}
      endpoint: {endpoint}
      timeout: 1s
    script: {script}
    dedupe_window: 0s   # these tests repeat sends on purpose
{extra}
"#
    )
}

fn load(yaml: &str, dir: &Path) -> Result<Config, ConfigErrors> {
    Config::from_yaml(yaml, &dir.join("gateway.yaml"), &env())
}

/// [`load`], then the runtime built (scripts compiled).
fn build(yaml: &str, dir: &Path) -> Result<Runtime, ConfigErrors> {
    Runtime::from_yaml(yaml, &dir.join("gateway.yaml"), &env())
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A gateway whose tenant runs one of the shipped `scripts/`.
async fn shipped(script: &str) -> (MockTencent, TestGateway) {
    let mock = MockTencent::start(SECRET_KEY).await;
    let config = load(&hooked_yaml(&mock.endpoint(), script, ""), &crate_dir()).unwrap_or_else(|e| panic!("{e}"));
    (mock, TestGateway::start(config).await)
}

/// A gateway whose tenant runs `source`, written to a temporary folder as `scripts/test.lua`.
async fn inline(source: &str, extra: &str) -> (MockTencent, TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/test.lua"), source).unwrap();
    let mock = MockTencent::start(SECRET_KEY).await;
    let config =
        load(&hooked_yaml(&mock.endpoint(), "scripts/test.lua", extra), dir.path()).unwrap_or_else(|e| panic!("{e}"));
    (mock, TestGateway::start(config).await, dir)
}

fn logto(to: &str, locale: Option<&str>) -> String {
    serde_json::json!({"to": to, "type": "SignIn", "payload": {"code": "123456", "locale": locale}}).to_string()
}

fn with_params(phone: &str, params: &[&str]) -> String {
    serde_json::json!({"phone": phone, "usage": "SignIn", "params": params}).to_string()
}

fn native_request(phone: &str, params: &[&str]) -> SendRequest {
    SendRequest {
        phone: PhoneInput::Native(phone.into()),
        usage: "SignIn".into(),
        params: params.iter().map(|p| p.to_string()).collect(),
        code: None,
        ip: None,
        locale: None,
        idempotency_key: None,
        vouched: false,
    }
}

#[tokio::test]
async fn mainland_script_reads_bare_and_0086_numbers_as_mainland_mobiles() {
    let (mock, gw) = shipped("scripts/mainland.lua").await;
    for to in ["13800138000", "008613800138000", "8613800138000"] {
        let a = gw.post("/v1/logto/sms", &logto(to, None)).await;
        assert_eq!(a.status, 200, "{to}: {:#}", a.json);
    }
    // A US number written properly is left alone.
    assert_eq!(gw.post("/v1/logto/sms", &logto("14155550100", None)).await.status, 200);
    let numbers: Vec<_> = mock.seen().iter().map(|s| s.body["PhoneNumberSet"][0].clone()).collect();
    assert_eq!(numbers, ["+8613800138000", "+8613800138000", "+8613800138000", "+14155550100"]);
    assert!(mock.seen().iter().all(|s| s.signature_valid));
}

#[tokio::test]
async fn international_script_routes_non_mainland_numbers_to_international_templates() {
    let (mock, gw) = shipped("scripts/international.lua").await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await.status, 200);
    let a = gw.post("/v1/sms/send", &native("+14155550100", "SignIn", "123456")).await;
    assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some("2110")), "{:#}", a.json);
    assert_eq!(gw.post("/v1/sms/send", &native("+447911123456", "Register", "123456")).await.status, 200);
    let seen = mock.seen();
    let sent: Vec<_> = seen.iter().map(|s| (s.body["TemplateId"].clone(), s.body["SignName"].clone())).collect();
    assert_eq!(sent[0], ("1110".into(), "腾讯云".into()));
    assert_eq!(sent[1], ("2110".into(), "Acme".into()));
    assert_eq!(sent[2], ("2113".into(), "Acme".into()), "Register falls back to Generic_intl");
}

#[tokio::test]
async fn premium_block_script_rejects_with_403_and_nothing_reaches_tencent() {
    let (mock, gw) = shipped("scripts/premium_block.lua").await;
    let a = gw.post("/v1/sms/send", &native("+19005550123", "SignIn", "123456")).await;
    a.assert_error(403, "rejected");
    assert_eq!(a.json["error"]["message"], "This number cannot receive verification codes.");
    assert!(mock.seen().is_empty(), "a rejected request sends nothing");
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await.status, 200);
    assert_eq!(mock.seen().len(), 1);
    let metrics = gw.gateway.metrics().render();
    for expected in [
        r#"smsgate_script_results_total{tenant="hooked",result="rejected"} 1"#,
        r#"smsgate_script_results_total{tenant="hooked",result="unchanged"} 1"#,
        r#"smsgate_script_duration_seconds_count{tenant="hooked"} 2"#,
    ] {
        assert!(metrics.contains(expected), "missing {expected}\n{metrics}");
    }
    // A one-line hook is answered inline, on the async worker, with no hand-off to the hook threads.
    let tenant = gw.gateway.runtime().tenant("hooked").unwrap().clone();
    let paths = tenant.script.as_ref().unwrap().call_paths();
    assert!(paths.inline >= 1 && paths.inline + paths.pooled == 2, "{paths:?}");
}

#[tokio::test]
async fn locale_script_picks_the_template_for_the_language() {
    let (mock, gw) = shipped("scripts/locale.lua").await;
    for (locale, template) in [(Some("en-US"), "3110"), (Some("zh-CN"), "1110"), (None, "1110"), (Some("fr"), "1110")] {
        let a = gw.post("/v1/logto/sms", &logto("8613800138000", locale)).await;
        assert_eq!((a.status, a.json["template_id"].as_str()), (200, Some(template)), "{locale:?}: {:#}", a.json);
        assert_eq!(mock.seen().last().unwrap().body["TemplateId"], template);
    }
}

const HOSTILE: &str = r#"
function on_send(req)
  local which = req.params[1]
  if which == "loop" then while true do end end
  if which == "memory" then local s = "x" for i = 1, 100 do s = s .. string.rep("y", 1 << 16) end end
  if which == "io" then io.open("/etc/passwd") end
  if which == "os" then os.execute("touch /tmp/smsgate-pwned") end
  if which == "require" then require("socket") end
  if which == "error" then error("boom") end
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_fail_with_script_error_while_a_parallel_request_succeeds() {
    let (mock, gw, _dir) = inline(HOSTILE, "").await;
    for which in ["loop", "memory", "io", "os", "require", "error"] {
        let bad = with_params("+8613800138000", &[which]);
        let good = with_params("+8613800138001", &["fine"]);
        let (bad, good) = tokio::join!(gw.post("/v1/sms/send", &bad), gw.post("/v1/sms/send", &good));
        bad.assert_error(500, "script_error");
        assert_eq!(bad.json["error"]["message"], "Internal error. Try again later.", "no detail to the caller");
        assert_eq!(good.status, 200, "{which}: {:#}", good.json);
    }
    assert_eq!(mock.seen().len(), 6, "only the good requests were sent");
    assert!(!Path::new("/tmp/smsgate-pwned").exists());
}

#[tokio::test]
async fn script_errors_name_the_file_and_line() {
    let (_mock, gw, _dir) = inline(HOSTILE, "").await;
    let tenant = gw.gateway.runtime().tenant("hooked").unwrap().clone();
    let expect = [
        ("loop", "scripts/test.lua:4: instruction budget exhausted"),
        ("memory", "scripts/test.lua: memory limit exceeded"),
        ("io", "scripts/test.lua:6: attempt to index a nil value (global 'io')"),
        ("os", "scripts/test.lua:7: attempt to index a nil value (global 'os')"),
        ("require", "scripts/test.lua:8: attempt to call a nil value (global 'require')"),
        ("error", "scripts/test.lua:9: boom"),
    ];
    for (which, start) in expect {
        let mut trail = Trail::default();
        match gw.gateway.services().plan(&tenant, native_request("+8613800138000", &[which]), &mut trail).await {
            Err(GatewayError::ScriptError(detail)) => assert!(detail.starts_with(start), "{which}: {detail}"),
            other => panic!("{which}: {:?}", other.err()),
        }
        assert_eq!(trail.script.unwrap().summary(), "failed");
    }
}

#[tokio::test]
async fn hook_changes_are_checked_again() {
    let source = r#"
function on_send(req)
  local which = req.params[1]
  if which == "template" then req.template_id = "9999" end
  if which == "phone" then req.phone = "+86123" end
  if which == "usage" then req.usage = "Sign In!" end
  if which == "region" then req.region = "Mars" end
  if which == "return" then return "yes" end
  if which == "ok" then req.phone = "+14155550100" req.region = "ap-singapore" req.params = {"42", 5} end
end
"#;
    let (mock, gw, _dir) = inline(source, "").await;
    for which in ["template", "phone", "usage", "region", "return"] {
        gw.post("/v1/sms/send", &with_params("+8613800138000", &[which])).await.assert_error(500, "script_error");
    }
    // A failed repair of a number that was invalid to begin with stays the caller's fault.
    gw.post("/v1/sms/send", &with_params("12", &["phone"])).await.assert_error(400, "invalid_phone");
    assert!(mock.seen().is_empty());
    let a = gw.post("/v1/sms/send", &with_params("+8613800138000", &["ok"])).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    let seen = &mock.seen()[0];
    assert_eq!(seen.body["PhoneNumberSet"][0], "+14155550100");
    assert_eq!(seen.body["TemplateParamSet"], serde_json::json!(["42", "5"]));
    assert_eq!(seen.header("x-tc-region"), "ap-singapore");
    assert!(seen.signature_valid);
}

#[tokio::test]
async fn limits_key_on_the_number_the_hook_chose() {
    let source = "function on_send(req) req.phone = '+8613900139000' end";
    let (mock, gw, _dir) = inline(source, "    limits:\n      - { name: burst, key: phone, limit: 1, per: 30s }").await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await.status, 200);
    gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "123456")).await.assert_error(429, "rate_limited");
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(mock.seen()[0].body["PhoneNumberSet"][0], "+8613900139000");
}

#[tokio::test]
async fn on_script_error_skip_goes_on_as_if_there_were_no_hook() {
    let source = "function on_send(req) req.template_id = '2110' error('broken') end";
    let (mock, gw, _dir) = inline(source, "    on_script_error: skip").await;
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    assert_eq!(a.status, 200, "{:#}", a.json);
    assert_eq!(mock.seen()[0].body["TemplateId"], "1110", "the failed hook's changes are dropped");
    // A number that did not parse stays invalid when the hook that might have repaired it fails.
    gw.post("/v1/sms/send", &native("12", "SignIn", "123456")).await.assert_error(400, "invalid_phone");
}

#[tokio::test]
async fn globals_of_one_request_never_reach_the_next() {
    let source = r#"
function on_send(req)
  if last_phone ~= nil then return {reject = "leaked " .. last_phone} end
  last_phone = req.phone
end
"#;
    let (mock, gw, _dir) = inline(source, "").await;
    for i in 0..6 {
        let a = gw.post("/v1/sms/send", &native(&format!("+861380013800{i}"), "SignIn", "123456")).await;
        assert_eq!(a.status, 200, "{:#}", a.json);
    }
    assert_eq!(mock.seen().len(), 6);
}

#[tokio::test]
async fn hook_memory_does_not_grow_across_10000_calls() {
    let (_mock, gw) = shipped("scripts/mainland.lua").await;
    let tenant = gw.gateway.runtime().tenant("hooked").unwrap().clone();
    let hook = tenant.script.as_ref().unwrap();
    let run = |n: u32| {
        let (gw, tenant) = (&gw, &tenant);
        async move {
            for i in 0..n {
                let mut trail = Trail::default();
                let request = native_request(&format!("1380013{:04}", i % 10_000), &["123456"]);
                gw.gateway.services().plan(tenant, request, &mut trail).await.unwrap();
            }
        }
    };
    run(100).await; // settle caches and the pool
    let before = hook.used_memory();
    run(10_000).await;
    let after = hook.used_memory();
    assert!(after <= before + 4096, "Lua memory grew from {before} to {after} bytes across 10,000 calls");
}

#[test]
fn config_errors_for_scripts_point_at_the_key_and_the_script_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/bad.lua"), "function on_send(req)\n  if then\nend\n").unwrap();
    std::fs::write(dir.path().join("scripts/none.lua"), "local x = 1\n").unwrap();
    let errors = |script: &str, extra: &str| -> Vec<String> {
        match build(&hooked_yaml("http://127.0.0.1:9", script, extra), dir.path()) {
            Ok(_) => panic!("{script} should fail"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    };
    let file = dir.path().join("gateway.yaml").display().to_string();
    let e = errors("scripts/bad.lua", "");
    assert!(e[0].starts_with(&format!("{file}:19:13: tenants.hooked.script: scripts/bad.lua:2: ")), "{e:#?}");
    let e = errors("scripts/missing.lua", "");
    assert!(e[0].ends_with("tenants.hooked.script: cannot read scripts/missing.lua: no such file"), "{e:#?}");
    let e = errors("scripts/none.lua", "");
    assert!(e[0].ends_with("scripts/none.lua: the script must define function on_send(req)"), "{e:#?}");
    let e = errors(
        "scripts/none.lua",
        "    on_script_error: ignore\n    script_limits: { instructions: 10, memory: 1GiB }",
    );
    assert!(e.iter().any(|e| e.contains("tenants.hooked.on_script_error: expected reject or skip")), "{e:#?}");
    assert!(e.iter().any(|e| e.contains("script_limits.instructions: must be between 1000 and 100000000")), "{e:#?}");
    assert!(e.iter().any(|e| e.contains("script_limits.memory: expected a size like 1MiB")), "{e:#?}");
}

#[test]
fn script_limits_apply() {
    let yaml = hooked_yaml(
        "http://127.0.0.1:9",
        "scripts/locale.lua",
        "    script_limits: { instructions: 50000, memory: 512KiB }\n    on_script_error: skip",
    );
    let runtime = build(&yaml, &crate_dir()).unwrap_or_else(|e| panic!("{e}"));
    let hook = runtime.tenant("hooked").unwrap().script.as_ref().unwrap();
    assert_eq!((hook.limits.instructions, hook.limits.memory), (50_000, 512 << 10));
    assert_eq!(hook.on_error, smsgate::script::OnScriptError::Skip);
    assert_eq!(hook.path(), "scripts/locale.lua");
}

#[tokio::test]
async fn reload_compiles_the_new_script_and_keeps_the_old_one_on_a_syntax_error() {
    let (mock, gw, dir) = inline("function on_send(req) end", "").await;
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, hooked_yaml(&mock.endpoint(), "scripts/test.lua", "")).unwrap();
    let script = dir.path().join("scripts/test.lua");

    std::fs::write(&script, "function on_send(req) return {reject = 'closed for maintenance'} end").unwrap();
    assert!(smsgate::server::reload_from(&gw.gateway, &path, &env()));
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    a.assert_error(403, "rejected");
    assert_eq!(a.json["error"]["message"], "closed for maintenance");

    std::fs::write(&script, "function on_send(req)\n  return {reject = }\nend").unwrap();
    assert!(!smsgate::server::reload_from(&gw.gateway, &path, &env()), "a script that does not compile is refused");
    let a = gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "123456")).await;
    assert_eq!(a.json["error"]["message"], "closed for maintenance", "the old script keeps serving");
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn explain_shows_what_the_hook_changed() {
    let yaml = hooked_yaml("http://127.0.0.1:9", "scripts/international.lua", "");
    let runtime = build(&yaml, &crate_dir()).unwrap_or_else(|e| panic!("{e}"));
    let input = smsgate::explain::Input {
        tenant: "hooked".into(),
        phone: "+14155550100".into(),
        usage: "SignIn".into(),
        code: "123456".into(),
        logto: false,
    };
    let report = smsgate::explain::explain(runtime, smsgate::clock::SystemClock::shared(), &input).await.unwrap();
    let text = report.to_string();
    for expected in [
        "normalize  +14155550100 -> +14155550100 (country US)",
        "script     scripts/international.lua: template_id -> 2110",
        "script     scripts/international.lua: sign_name 腾讯云 -> Acme",
        "template   SignIn -> 2110",
        r#""SignName":"Acme""#,
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let json = report.to_json();
    assert_eq!(json["script"]["outcome"], "ran");
    assert_eq!(json["script"]["changes"][0]["field"], "template_id");
}
