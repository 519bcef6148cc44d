//! Config errors point at the file, line, column and key path to fix, and never echo a secret.

mod common;

use smsgate::config::Config;
use std::collections::HashMap;
use std::path::Path;

const GOOD: &str = r#"tenants:
  acme:
    tokens: ["token-for-acme-00001"]
    default_country: CN
    tencent:
      accessKeyId: AKIDx
      accessKeySecret: ${SECRET}
      signName: Sig
      sdkAppId: 1400006666
      region: ap-guangzhou
      templates:
        - { usageType: SignIn, templateCode: "1110" }
    limits:
      - { name: burst, key: phone, limit: 1, per: 30s }
"#;

fn env() -> HashMap<String, String> {
    HashMap::from([("SECRET".to_owned(), "s3cr3t-value-xyz".to_owned())])
}

fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml, Path::new("gw.yaml"), &env()) {
        Ok(_) => panic!("config should fail:\n{yaml}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_good_config_compiles() {
    let config = Config::from_yaml(GOOD, Path::new("gw.yaml"), &env()).unwrap();
    let acme = config.tenant("acme").unwrap();
    assert_eq!(acme.tencent.sdk_app_id, "1400006666", "an unquoted number reads as text");
    assert_eq!(acme.tencent.credentials[0].secret_key.expose(), "s3cr3t-value-xyz");
    assert_eq!(config.server.max_body_bytes, 16384);
    assert!(config.tenant_for_token("token-for-acme-00001").is_some());
}

#[test]
fn errors_name_file_line_column_and_key_path() {
    let cases: &[(&str, &str, &str)] = &[
        ("per: 30s", "per: 30x", "gw.yaml:14:51: tenants.acme.limits[0].per: expected a duration like 500ms, 30s, 10m, 1h or 1d, found `30x`"),
        ("limit: 1,", "limit: 0,", "gw.yaml:14:43: tenants.acme.limits[0].limit: must be between 1 and 1000000"),
        ("key: phone", "key: phon", "gw.yaml:14:29: tenants.acme.limits[0].key: unknown variant `phon`, expected one of `phone`, `tenant`, `ip`, `country`, `phone_prefix`"),
        ("region: ap-guangzhou", "region: Guangzhou", "gw.yaml:10:15: tenants.acme.tencent.region: expected a Tencent Cloud region such as ap-guangzhou"),
        ("default_country: CN", "default_country: China", "gw.yaml:4:22: tenants.acme.default_country: expected an ISO 3166 country code such as CN or US"),
        ("templateCode: \"1110\"", "templateCode: \"T-1\"", "gw.yaml:12:46: tenants.acme.tencent.templates[0].templateCode: expected a numeric Tencent TemplateId"),
        ("signName: Sig", "signName: Sig\n      sign_name: typo", "gw.yaml:9:7: tenants.acme.tencent.sign_name: unknown field `sign_name`, expected one of `accessKeyId`, `accessKeySecret`"),
        ("${SECRET}", "${MISSING_SECRET}", "gw.yaml:7:24: tenants.acme.tencent.accessKeySecret: environment variable MISSING_SECRET is not set"),
        ("token-for-acme-00001", "short", "gw.yaml:3:14: tenants.acme.tokens[0]: tokens need at least 16 characters and no spaces"),
        ("tenants:", "tenant:", "gw.yaml:1:1: tenant: unknown field `tenant`, expected one of `server`"),
        ("    limits:", "    limits: 5\n    x:", "gw.yaml:13:13: tenants.acme.limits: invalid type: integer `5`, expected a sequence"),
    ];
    for (from, to, expected) in cases {
        assert!(GOOD.contains(from), "{from}");
        let yaml = GOOD.replacen(from, to, 1);
        let errs = errors(&yaml);
        // Prefixes: lists of expected keys grow as the config does.
        assert!(errs.first().is_some_and(|e| e.starts_with(expected)), "replacing {from:?}: {errs:#?}");
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let yaml = GOOD.replace("per: 30s", "per: 1y").replace("region: ap-guangzhou", "region: nowhere");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("gw.yaml:10:15: tenants.acme.tencent.region"), "{errs:#?}");
    assert!(errs[1].starts_with("gw.yaml:14:51: tenants.acme.limits[0].per"), "{errs:#?}");
}

#[test]
fn cross_tenant_and_range_checks() {
    let two = format!("{GOOD}  beta:\n{}", GOOD.lines().skip(2).collect::<Vec<_>>().join("\n"));
    let errs = errors(&two);
    assert!(
        errs.iter().any(|e| e.contains("tenants.beta.tokens[0]: this token is already used by tenant acme")),
        "{errs:#?}"
    );
    let errs = errors(&GOOD.replace("per: 30s", "per: 500ms"));
    assert!(errs[0].ends_with("must be between 1s and 30d"), "{errs:#?}");
    let errs = errors(&format!("server:\n  listen: nowhere\n  max_body_bytes: 10\n{GOOD}"));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("gw.yaml:2:11: server.listen"), "{errs:#?}");
    let errs = errors("tenants: {}\n");
    assert!(errs[0].contains("define at least one tenant"), "{errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: redis\n  on_error: maybe\n  timeout: 1m\n{GOOD}"));
    assert!(errs[0].starts_with("gw.yaml:3:13: limits_backend.on_error: expected local, allow or deny"), "{errs:#?}");
    assert!(errs[1].starts_with("gw.yaml:4:12: limits_backend.timeout: must be between 1ms and 10s"), "{errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: memory\n  on_error: deny\n{GOOD}"));
    assert!(errs[0].ends_with("limits_backend.on_error: applies to kind: redis only"), "{errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: redis\n  url: \"http://:hunter2@x\"\n{GOOD}"));
    assert!(
        errs[0].ends_with("limits_backend.url: expected a URL like redis://127.0.0.1:6379 or rediss://…"),
        "{errs:#?}"
    );
    assert!(!errs[0].contains("hunter2"), "the URL may hold a password: {errs:#?}");
    // More than one per millisecond cannot be represented by the limiter's millisecond arithmetic.
    let errs = errors(&GOOD.replace("limit: 1, per: 30s", "limit: 5000, per: 1s"));
    assert!(errs[0].ends_with("limits[0].limit: more than one per millisecond: lower limit or raise per"), "{errs:#?}");
}

#[test]
fn redis_backend_and_test_numbers_compile() {
    use smsgate::config::{LimitsBackend, OnError};
    let yaml = format!(
        "limits_backend:\n  kind: redis\n  url: redis://127.0.0.1:6390\n  on_error: deny\n  timeout: 20ms\n{GOOD}    test_numbers: {{\"+8613800000000\": \"123456\"}}\n"
    );
    let config = Config::from_yaml(&yaml, Path::new("gw.yaml"), &env()).unwrap_or_else(|e| panic!("{e}"));
    match &config.limits_backend {
        LimitsBackend::Redis { url, on_error, timeout } => {
            assert_eq!(url.expose(), "redis://127.0.0.1:6390");
            assert_eq!((*on_error, timeout.as_millis()), (OnError::Deny, 20));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(config.tenant("acme").unwrap().test_numbers.get(&8613800000000).map(String::as_str), Some("123456"));
    let bad = GOOD.to_owned() + "    test_numbers: {\"13800000000\": \"12-34\"}\n";
    let errs = errors(&bad);
    assert!(errs[0].ends_with("expected a valid E.164 number such as +8613800000000"), "{errs:#?}");
    let bad = GOOD.to_owned() + "    test_numbers: {\"+8613800000000\": \"12-34\"}\n";
    let errs = errors(&bad);
    assert!(errs[0].ends_with("a code is 1 to 12 letters or digits"), "{errs:#?}");
}

#[test]
fn syntax_errors_have_a_location() {
    let errs = errors("tenants:\n  acme: [\n");
    assert!(errs[0].starts_with("gw.yaml:"), "{errs:#?}");
    assert!(errs[0].split(':').nth(1).unwrap().parse::<u32>().is_ok(), "{errs:#?}");
}

#[test]
fn errors_never_echo_secrets() {
    // The secret's value is in the file and the environment; a broken config around it must not print it.
    let yaml = GOOD.replace("accessKeyId: AKIDx", "accessKeyId: \"\"").replace("${SECRET}", "${SECRET}-plus");
    for e in errors(&yaml) {
        assert!(!e.contains("s3cr3t"), "{e}");
    }
    let yaml = GOOD.replace("tokens: [\"token-for-acme-00001\"]", "tokens: [\"secret token with spaces\"]");
    for e in errors(&yaml) {
        assert!(!e.contains("secret token"), "{e}");
    }
    // A secret written where a list belongs: serde would quote it in its message.
    let errs = errors(&GOOD.replace("tokens: [\"token-for-acme-00001\"]", "tokens: \"token-for-acme-00001\""));
    assert_eq!(errs, vec!["gw.yaml:3:13: tenants.acme.tokens: invalid type: string, expected a sequence"]);
}

#[test]
fn the_shipped_gateway_yaml_compiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml");
    let config = Config::load(&path, &HashMap::<String, String>::new()).unwrap_or_else(|e| panic!("{e}"));
    let demo = config.tenant("demo").expect("a demo tenant");
    assert!(demo.tencent.dry_run, "the demo tenant must never transmit");
    assert!(config.tenant_for_token("demo-token-0123456789").is_some(), "the README's token works");
}

#[test]
fn the_readme_error_class_table_matches_the_code() {
    use smsgate::tencent::classify::{Class, EXACT, PREFIXES};
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let row = |code: &str, class: Class| {
        let (name, answer) = class.describe();
        format!("| `{code}` | {name} | {answer} |")
    };
    for (code, class) in EXACT {
        assert!(readme.contains(&row(code, *class)), "README lacks {}", row(code, *class));
    }
    for (prefix, class) in PREFIXES {
        assert!(readme.contains(&row(&format!("{prefix}*"), *class)), "README lacks {prefix}*");
    }
    let (name, answer) = Class::Unknown.describe();
    assert!(readme.contains(&format!("| any other code | {name} | {answer} |")));
}

#[test]
fn the_commented_production_tenant_compiles_once_uncommented() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml")).unwrap();
    let start = text.find("  # acme:").expect("a commented production tenant");
    let uncommented: String = text[..start].to_owned()
        + &text[start..].lines().map(|l| l.replacen("  # ", "  ", 1) + "\n").collect::<String>();
    let env = HashMap::from(
        ["ACME_TOKEN", "TENCENT_SECRET_ID", "TENCENT_SECRET_KEY", "LOGTO_WEBHOOK_SIGNING_KEY", "TENCENT_STATUS_SECRET"]
            .map(|k| (k.to_owned(), format!("{k}-value-0123456789"))),
    );
    let config = Config::from_yaml(&uncommented, Path::new("gateway.yaml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let acme = config.tenant("acme").unwrap();
    assert!(!acme.tencent.dry_run);
    assert!(acme.conversion.as_ref().is_some_and(|c| c.report_to_tencent && c.logto_webhook_secret.is_some()));
    assert_eq!(acme.protection.len(), 2);
    assert!(config.tenant_for_status_secret("TENCENT_STATUS_SECRET-value-0123456789").is_some());
}

/// The feedback loop's keys: what each refuses, at its key path, never echoing a secret.
#[test]
fn feedback_keys_are_checked() {
    let with = |extra: &str| format!("{GOOD}{extra}");
    let conversion = "    conversion: { window: 10m, logto_webhook_secret: logto-key-0123456789 }\n";
    let rule = |fields: &str| format!("{conversion}    protection:\n      - {{ {fields} }}\n");
    let ok = "name: p, key: { phone_prefix: 6 }, window: 1h, min_sends: 30, min_conversion: 0.2, block_for: 1h";
    let config = Config::from_yaml(&with(&rule(ok)), Path::new("gw.yaml"), &env()).unwrap();
    let acme = config.tenant("acme").unwrap();
    assert_eq!(
        (acme.protection[0].min_conversion_ppm, acme.conversion.as_ref().unwrap().remember_for.as_secs()),
        (200_000, 3600)
    );
    let cases: Vec<(String, &str)> = vec![
        (with("    protection:\n      - { name: p, key: country, window: 1h, min_sends: 1, min_conversion: 0.2, block_for: 1h }\n"),
         "tenants.acme.protection: needs a `conversion:` block"),
        (with(&rule(&ok.replace("window: 1h", "window: 10m"))), "tenants.acme.protection[0].window: must be longer than conversion.window (10m)"),
        (with(&rule(&ok.replace("{ phone_prefix: 6 }", "phone"))), "tenants.acme.protection[0].key: protection keys are country or { phone_prefix: N }"),
        (with(&rule(&ok.replace("phone_prefix: 6", "phone_prefix: 13"))), "tenants.acme.protection[0].key.phone_prefix: a prefix has 1 to 12 digits"),
        (with(&rule(&ok.replace("min_conversion: 0.2", "min_conversion: 0"))), "tenants.acme.protection[0].min_conversion: a share of verified sends"),
        (with(&rule(&ok.replace("min_sends: 30", "min_sends: 0"))), "tenants.acme.protection[0].min_sends: must be between 1 and 1000000"),
        (with(&rule(&ok.replace("block_for: 1h", "block_for: 1y"))), "tenants.acme.protection[0].block_for: expected a duration"),
        (with("    conversion: { window: 0s }\n"), "tenants.acme.conversion.window: must be between 1s and 1d"),
        (with("    conversion: { window: 2h, remember_for: 1h }\n"), "tenants.acme.conversion.remember_for: must be at least conversion.window"),
        (with("    conversion: { logto_webhook_secret: short }\n"), "tenants.acme.conversion.logto_webhook_secret: needs at least 16 characters"),
        (GOOD.replace("      region: ap-guangzhou", "      region: ap-guangzhou\n      status_secret: status-secret-0123456789"),
         "tenants.acme.tencent.status_secret: delivery receipts need a `conversion:` block"),
        (with(conversion).replace("      region: ap-guangzhou", "      region: ap-guangzhou\n      status_secret: status/secret/0123456789"),
         "tenants.acme.tencent.status_secret: a path secret uses letters, digits"),
        (GOOD.replace("      region: ap-guangzhou", "      region: ap-guangzhou\n      report_conversion: true"),
         "tenants.acme.tencent.report_conversion: needs a `conversion:` block"),
        (with(&format!("{conversion}    webhook: {{ url: \"https://hooks.example.com/x\", secret: not-whsec-0123456789 }}\n")),
         "tenants.acme.webhook.secret: expected whsec_ and the base64 of 24 to 64 random bytes"),
        (with(&format!("{conversion}    webhook: {{ url: \"ftp://hooks.example.com/x\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw }}\n")),
         "tenants.acme.webhook.url: expected an http(s) URL"),
        (format!("server: {{ admin_tokens: [\"token-for-acme-00001\"] }}\n{GOOD}"), "server.admin_tokens[0]: an admin token must differ from every tenant token"),
        (format!("server: {{ max_remembered_sends: 10 }}\n{GOOD}"), "server.max_remembered_sends: must be between 1000 and 100000000"),
    ];
    for (yaml, expected) in cases {
        let errs = errors(&yaml);
        assert!(errs.iter().any(|e| e.contains(expected)), "{expected:?} not in {errs:#?}");
        for secret in
            ["logto-key-0123456789", "status/secret/0123456789", "not-whsec-0123456789", "token-for-acme-00001"]
        {
            assert!(errs.iter().all(|e| !e.contains(secret)), "{secret} echoed in {errs:#?}");
        }
    }
    // One Logto signing key names one tenant.
    let beta = GOOD.replace("  acme:", "  beta:").replace("token-for-acme-00001", "token-for-beta-00001");
    let two = format!("{}{}", with(conversion), beta.trim_start_matches("tenants:\n").to_owned() + conversion);
    let errs = errors(&two);
    assert!(
        errs.iter().any(|e| e.contains("logto_webhook_secret: this signing key is already used by tenant")),
        "{errs:#?}"
    );
}
