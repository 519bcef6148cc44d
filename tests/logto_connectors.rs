//! Logto's real SMS connector configs pass `smsgate check` as Logto's admin console shows them. The configs
//! come from Logto's own packages (`tests/node/package.json`: `@logto/connector-aliyun-sms`,
//! `-twilio-sms`, `-tencent-sms`): `tests/node/logto_config.mjs` builds each from the package's metadata
//! (its form items' defaults, placeholders filled with test values) and validates it with the package's own
//! config guard, the one Logto runs when the admin saves. The JSON is pasted under `aliyun:`, `twilio:` or
//! `tencent:` unchanged (YAML is a superset of JSON), and the real binary checks the file.

use crate::common::node;
use std::path::Path;
use std::process::{Command, Output};

const TOKEN: &str = "test-token-acme-0001";

/// `smsgate check --config <file>` on `yaml`, in a temporary folder.
fn check(yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SMSGATE_CONFIG")
        .env_remove("RUST_LOG")
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A file with the one tenant `acme`: its token, then `blocks` (`provider: {json}` lines, `routes:`...),
/// each indented under the tenant.
fn tenant_yaml(blocks: &[String]) -> String {
    let mut yaml = format!("tenants:\n  acme:\n    tokens: [\"{TOKEN}\"]\n");
    for block in blocks {
        for line in block.lines() {
            yaml.push_str("    ");
            yaml.push_str(line);
            yaml.push('\n');
        }
    }
    yaml
}

/// `provider: <Logto's JSON>`, the JSON as the package's script printed it.
fn block(provider: &str, json: &str) -> String {
    format!("{provider}: {json}")
}

fn assert_passes(yaml: &str) {
    let out = check(yaml);
    assert!(out.status.success(), "smsgate check refused:\n{}\n--- the file:\n{yaml}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"), "{}", text(&out));
}

fn logto(node: &Path, connector: &str, flags: &[&str]) -> String {
    node::logto_config(node, connector, flags)
}

#[test]
fn logto_aliyun_config_passes_check_in_both_template_forms() {
    let Some(node) = node::node() else { return };
    // As saved (a string templateCode; Logto's {china, overseas} form), and as the package's guard returns
    // it (`--parsed`: zod's default `type: 2` on every template), which an operator may paste too.
    for flags in [&[][..], &["--overseas"], &["--parsed"], &["--overseas", "--parsed"]] {
        let json = logto(&node, "aliyun", flags);
        if flags.contains(&"--overseas") {
            assert!(json.contains(r#""templateCode":{"china":"#), "{json}");
        }
        assert_passes(&tenant_yaml(&[block("aliyun", &json)]));
    }
}

#[test]
fn logto_twilio_config_passes_check() {
    let Some(node) = node::node() else { return };
    let json = logto(&node, "twilio", &[]);
    assert!(json.contains("{{code}}"), "{json}");
    assert_passes(&tenant_yaml(&[block("twilio", &json)]));
}

#[test]
fn logto_tencent_config_passes_check() {
    let Some(node) = node::node() else { return };
    assert_passes(&tenant_yaml(&[block("tencent", &logto(&node, "tencent", &[]))]));
}

#[test]
fn aliyun_and_twilio_need_a_default_route() {
    let Some(node) = node::node() else { return };
    let aliyun = block("aliyun", &logto(&node, "aliyun", &[]));
    let twilio = block("twilio", &logto(&node, "twilio", &[]));

    let routes = "routes:\n  - { countries: [CN], via: [aliyun, twilio] }\n  - { via: [twilio, aliyun] }";
    assert_passes(&tenant_yaml(&[aliyun.clone(), twilio.clone(), routes.to_owned()]));

    // Without the route that has neither countries nor prefixes, a number outside CN has no provider.
    let yaml = tenant_yaml(&[aliyun, twilio, "routes:\n  - { countries: [CN], via: [aliyun, twilio] }".to_owned()]);
    let out = check(&yaml);
    assert!(!out.status.success(), "check accepted routes without a default route:\n{yaml}");
    assert!(text(&out).contains("routes"), "the error names routes:\n{}", text(&out));
}

#[test]
fn tencent_aliyun_and_twilio_in_one_tenant_pass_check() {
    let Some(node) = node::node() else { return };
    let routes = "routes:\n  - { countries: [CN], via: [tencent, aliyun] }\n  - { via: [twilio, tencent] }";
    // Aliyun in both of Logto's templateCode forms.
    for aliyun_flags in [&[][..], &["--overseas"]] {
        let yaml = tenant_yaml(&[
            block("tencent", &logto(&node, "tencent", &[])),
            block("aliyun", &logto(&node, "aliyun", aliyun_flags)),
            block("twilio", &logto(&node, "twilio", &[])),
            routes.to_owned(),
        ]);
        assert_passes(&yaml);
    }
}
