//! Config errors point at the file, line, column and key path to fix, and never echo a secret.

use crate::common::STORAGE_KEY;
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
    assert_eq!(acme.tencent.as_ref().unwrap().sdk_app_id, "1400006666", "an unquoted number reads as text");
    assert_eq!(acme.tencent.as_ref().unwrap().credentials[0].secret_key.expose(), "s3cr3t-value-xyz");
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
        ("signName: Sig", "signName: Sig\n      sign_name: typo", "gw.yaml:9:7: tenants.acme.tencent.sign_name: unknown key `sign_name`, expected one of `accessKeyId`, `accessKeySecret`"),
        ("${SECRET}", "${MISSING_SECRET}", "gw.yaml:7:24: tenants.acme.tencent.accessKeySecret: environment variable MISSING_SECRET is not set"),
        ("token-for-acme-00001", "short", "gw.yaml:3:14: tenants.acme.tokens[0]: tokens need at least 16 characters and no spaces"),
        ("tenants:", "tenant:", "gw.yaml:1:1: tenant: unknown key `tenant`, expected one of `server`"),
        ("    limits:", "    limits: 5\n    x:", "gw.yaml:13:13: tenants.acme.limits: invalid type: integer, expected a sequence"),
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
    let errs = errors(&format!(
        "limits_backend:\n  kind: redis\n  key: {STORAGE_KEY}\n  on_error: maybe\n  timeout: 1m\n{GOOD}"
    ));
    assert!(errs[0].starts_with("gw.yaml:4:13: limits_backend.on_error: expected local, allow or deny"), "{errs:#?}");
    assert!(errs[1].starts_with("gw.yaml:5:12: limits_backend.timeout: must be between 1ms and 10s"), "{errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: memory\n  on_error: deny\n{GOOD}"));
    assert!(errs[0].ends_with("limits_backend.on_error: applies to kind: redis only"), "{errs:#?}");
    let errs =
        errors(&format!("limits_backend:\n  kind: redis\n  key: {STORAGE_KEY}\n  url: \"http://:hunter2@x\"\n{GOOD}"));
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
fn redis_cluster_sentinel_and_tls_keys_are_checked() {
    use smsgate::config::{LimitsBackend, RedisTarget};
    let backend = |body: &str| format!("limits_backend:\n  kind: redis\n  key: {STORAGE_KEY}\n{body}{GOOD}");
    let errs = errors(&backend("  url: redis://a:1\n  cluster: [\"redis://b:1\"]\n"));
    assert!(
        errs.iter().any(|e| e.ends_with("limits_backend: give exactly one of url, cluster and sentinel")),
        "{errs:#?}"
    );
    let errs =
        errors(&backend("  cluster: [\"redis://:hunter2@a:1\", \"rediss://:hunter2@b:1\", \"http://:hunter2@c\"]\n"));
    assert!(errs.iter().any(|e| e.ends_with("limits_backend.cluster[2]: expected a URL like redis://127.0.0.1:6379 or rediss://…")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.ends_with("limits_backend.cluster: mixes redis:// and rediss://: use one scheme for every node")), "{errs:#?}");
    assert!(errs.iter().all(|e| !e.contains("hunter2")), "URLs may hold passwords: {errs:#?}");
    let errs = errors(&backend("  cluster: []\n"));
    assert!(errs[0].ends_with("limits_backend.cluster: must name at least one node"), "{errs:#?}");
    let errs = errors(&backend("  cluster: [\"redis+unix:///tmp/r.sock\"]\n"));
    assert!(errs[0].contains("limits_backend.cluster[0]: expected a URL"), "{errs:#?}");
    let errs = errors(&backend("  sentinel: { master: mymaster, nodes: [\"redis://s1:26379\"], color: red }\n"));
    assert!(errs.iter().any(|e| e.contains("limits_backend.sentinel.color: unknown key")), "{errs:#?}");
    let errs = errors(&backend("  sentinel: { master: \"\", nodes: [\"redis://s1:26379\"] }\n"));
    assert!(errs[0].ends_with("limits_backend.sentinel.master: must not be empty"), "{errs:#?}");
    let errs = errors(&backend("  url: redis://a:1\n  tls: { ca_file: /nonexistent/ca.pem }\n"));
    assert!(errs.iter().any(|e| e.ends_with("limits_backend.tls: applies to rediss:// URLs only")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("limits_backend.tls.ca_file: cannot read the CA file")), "{errs:#?}");
    let errs = errors(&backend("  url: rediss://a:1\n  tls: { ca_file: /etc/hostname, verify: no }\n"));
    assert!(errs.iter().any(|e| e.contains("limits_backend.tls.verify: unknown key")), "{errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: memory\n  cluster: [\"redis://a:1\"]\n{GOOD}"));
    assert!(errs[0].ends_with("limits_backend.cluster: applies to kind: redis only"), "{errs:#?}");

    let config = Config::from_yaml(
        &backend(
            "  sentinel: { master: mymaster, nodes: [\"redis://s1:26379\", \"redis://s2:26379\"], password: pw }\n",
        ),
        Path::new("gw.yaml"),
        &env(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let LimitsBackend::Redis { connect, .. } = &config.limits_backend else { panic!() };
    let RedisTarget::Sentinel { master, nodes, password, .. } = &connect.target else { panic!("{connect:?}") };
    assert_eq!((master.as_str(), nodes.len(), password.as_ref().map(|p| p.expose())), ("mymaster", 2, Some("pw")));
    assert!(!format!("{connect:?}").contains("s1:26379"), "URLs are secrets in Debug too");
    let config =
        Config::from_yaml(&backend("  cluster: [\"redis://a:1\", \"redis://b:1\"]\n"), Path::new("gw.yaml"), &env())
            .unwrap_or_else(|e| panic!("{e}"));
    let LimitsBackend::Redis { connect, .. } = &config.limits_backend else { panic!() };
    assert!(matches!(&connect.target, RedisTarget::Cluster(seeds) if seeds.len() == 2));
}

/// Numbers in Redis keys are hashed under `limits_backend.key`: required with the redis backend (every
/// replica must name a number's keys alike), long enough, and only there.
#[test]
fn the_redis_backend_requires_a_storage_key() {
    let errs = errors(&format!("limits_backend:\n  kind: redis\n{GOOD}"));
    assert!(errs.iter().any(|e| e.contains("limits_backend.key: required with kind: redis")), "{errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: redis\n  key: short-key-hunter2\n{GOOD}"));
    assert!(
        errs.iter().any(|e| e.ends_with("limits_backend.key: needs at least 32 characters and no spaces")),
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| !e.contains("hunter2")), "the key is never echoed: {errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: memory\n  key: {STORAGE_KEY}\n{GOOD}"));
    assert!(errs[0].ends_with("limits_backend.key: applies to kind: redis only"), "{errs:#?}");
    // Not a provider's secret (here the tenant's Tencent secret, from the environment) nor a tenant token.
    let errs = errors(&format!("limits_backend:\n  kind: redis\n  key: ${{SECRET}}\n{GOOD}"));
    let own = "limits_backend.key: must be the deployment's own key, not a tenant's provider secret or token";
    assert!(errs.iter().any(|e| e.ends_with(own)), "{errs:#?}");
    let errs = errors(&format!("limits_backend:\n  kind: redis\n  key: token-for-acme-00001\n{GOOD}"));
    assert!(errs.iter().any(|e| e.ends_with(own)), "{errs:#?}");
    assert!(errs.iter().all(|e| !e.contains("token-for-acme")), "never echoed: {errs:#?}");
}

#[test]
fn redis_backend_and_test_numbers_compile() {
    use smsgate::config::{LimitsBackend, OnError, RedisTarget};
    let yaml = format!(
        "limits_backend:\n  kind: redis\n  key: {STORAGE_KEY}\n  url: redis://127.0.0.1:6390\n  on_error: deny\n  timeout: 20ms\n{GOOD}    test_numbers: {{\"+8613800000000\": \"123456\"}}\n"
    );
    let config = Config::from_yaml(&yaml, Path::new("gw.yaml"), &env()).unwrap_or_else(|e| panic!("{e}"));
    match &config.limits_backend {
        LimitsBackend::Redis { connect, on_error, timeout, key } => {
            assert_eq!(key.expose(), STORAGE_KEY);
            assert!(!format!("{:?}", config.limits_backend).contains(STORAGE_KEY), "the key is a secret in Debug");
            let RedisTarget::Node(url) = &connect.target else { panic!("{connect:?}") };
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
    assert!(demo.tencent.as_ref().unwrap().upstream.dry_run, "the demo tenant must never transmit");
    assert!(config.tenant_for_token("demo-token-0123456789").is_some(), "the README's token works");
}

#[test]
fn the_operating_error_class_table_matches_the_code() {
    use smsgate::providers::tencent::classify::{Class, EXACT, FAMILIES};
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operating.md")).unwrap();
    let row = |code: &str, class: Class| {
        let (name, answer) = class.describe();
        format!("| `{code}` | {name} | {answer} |")
    };
    for (code, class) in EXACT {
        assert!(doc.contains(&row(code, *class)), "docs/operating.md lacks {}", row(code, *class));
    }
    for (prefix, _, class) in FAMILIES {
        assert!(doc.contains(&row(&format!("{prefix}*"), *class)), "docs/operating.md lacks {prefix}*");
    }
    let (name, answer) = Class::Unknown.describe();
    assert!(doc.contains(&format!("| any other code | {name} | {answer} |")));
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
    assert!(!acme.tencent.as_ref().unwrap().upstream.dry_run);
    assert!(acme.conversion.as_ref().is_some_and(|c| c.report_to_tencent && c.logto_webhook_secret.is_some()));
    assert_eq!(acme.protection.len(), 2);
    assert!(config
        .tenant_for_status_secret(smsgate::sms::ProviderId::Tencent, "TENCENT_STATUS_SECRET-value-0123456789")
        .is_some());
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

/// Every key the config has, one scalar per line, so that tests can put something hostile in each value.
const RICH: &str = r#"server:
  listen: 127.0.0.1:0
  max_body_bytes: 2048
  shutdown_grace: 5s
limits_backend:
  kind: memory
tenants:
  acme:
    tokens:
      - token-for-acme-00001
    default_country: CN
    tencent:
      accessKeyId: AKIDx
      accessKeySecret: s3cr3t-value-xyz
      signName: Sig
      sdkAppId: 1400006666
      region: ap-guangzhou
      templates:
        - usageType: SignIn
          templateCode: 1110
      endpoint: https://sms.tencentcloudapi.com
      timeout: 5s
      dry_run: true
      max_attempts: 3
      retry_maybe_sent: false
      fallback_endpoints:
        - https://sms.ap-guangzhou.tencentcloudapi.com
      next_credentials:
        accessKeyId: AKIDy
        accessKeySecret: other-secret-abc
      international_templates:
        - usageType: Generic
          templateCode: 2110
      international_sign_name: Intl
    limits:
      - name: burst
        key: phone
        limit: 1
        per: 30s
        usage:
          - SignIn
        shadow: false
    test_numbers:
      "+8613800000000": "123456"
    countries:
      deny:
        - KP
    blocked_prefixes:
      - "+1900"
    dedupe_window: 5m
    spend_caps:
      utc_offset: "+08:00"
      daily: 10
      countries:
        US:
          daily: 5
"#;

fn env_with(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn errors_in(yaml: &str, env: &HashMap<String, String>) -> Vec<String> {
    match Config::from_yaml(yaml, Path::new("gw.yaml"), env) {
        Ok(_) => panic!("config should fail:\n{yaml}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// `tokens: ["${ACME_TOKEN:-${FALLBACK_TOKEN_VALUE}}"]` compiled to the literal token
/// `${FALLBACK_TOKEN_VALUE}`: guessable, and the intended token was refused.
#[test]
fn regression_nested_default_is_not_a_literal_token() {
    let nested = GOOD.replace("token-for-acme-00001", "${ACME_TOKEN:-${FALLBACK_TOKEN_VALUE}}");
    let fallback = env_with(&[("SECRET", "s3cr3t-value-xyz"), ("FALLBACK_TOKEN_VALUE", "fallback-token-0123456789")]);
    let config = Config::from_yaml(&nested, Path::new("gw.yaml"), &fallback).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.tenant_for_token("fallback-token-0123456789").is_some(), "the default's variable is used");
    assert!(config.tenant_for_token("${FALLBACK_TOKEN_VALUE}").is_none());
    assert!(config.tenant_for_token("${FALLBACK_TOKEN_VALUE}}").is_none());
    // Set, the outer variable wins and the default is not even looked up.
    let both = env_with(&[("SECRET", "s3cr3t-value-xyz"), ("ACME_TOKEN", "acme-token-from-env-0001")]);
    let config = Config::from_yaml(&nested, Path::new("gw.yaml"), &both).unwrap();
    assert!(config.tenant_for_token("acme-token-from-env-0001").is_some());

    // Neither set: an error at the token's line that names the variable, never a literal token.
    let errs = errors_in(&nested, &env_with(&[("SECRET", "s3cr3t-value-xyz")]));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0]
            .starts_with("gw.yaml:3:14: tenants.acme.tokens[0]: environment variable FALLBACK_TOKEN_VALUE is not set"),
        "{errs:#?}"
    );

    // Secrets, not just tokens: nested, mixed with text, and three levels deep.
    for (written, expected) in [
        ("${UNSET_A:-${SECRET}}", "s3cr3t-value-xyz"),
        ("${UNSET_A:-pre-${SECRET}-post}", "pre-s3cr3t-value-xyz-post"),
        ("${UNSET_A:-${UNSET_B:-${SECRET}}}", "s3cr3t-value-xyz"),
        ("${UNSET_A:-${UNSET_B:-lit}}$${NOT_A_REF}", "lit${NOT_A_REF}"),
    ] {
        // Dry run: a secret's literal default is refused for a tenant that sends (see
        // literal_defaults_of_secrets_are_refused_unless_nothing_is_sent).
        let yaml = GOOD
            .replace("${SECRET}", &format!("\"{written}\""))
            .replace("      region: ap-guangzhou\n", "      region: ap-guangzhou\n      dry_run: true\n");
        let config =
            Config::from_yaml(&yaml, Path::new("gw.yaml"), &env()).unwrap_or_else(|e| panic!("{written}: {e}"));
        let secret = &config.tenant("acme").unwrap().tencent.as_ref().unwrap().credentials[0].secret_key;
        assert_eq!(secret.expose(), expected, "{written}");
    }
    // A value from the environment is used verbatim: it cannot smuggle in a reference.
    let injected = env_with(&[("SECRET", "${OTHER_SECRET}")]);
    let config = Config::from_yaml(GOOD, Path::new("gw.yaml"), &injected).unwrap();
    assert_eq!(
        config.tenant("acme").unwrap().tencent.as_ref().unwrap().credentials[0].secret_key.expose(),
        "${OTHER_SECRET}"
    );

    // Anything that is not a complete reference is an error naming the key and no value.
    for bad in ["${UNSET_A:-${SECRET}", "${UNSET_A:-x", "${SECRET:?hunter2-message}", "${SECRET-hunter2}", "${ }"] {
        let yaml = GOOD.replace("${SECRET}", &format!("\"{bad}\""));
        let errs = errors_in(&yaml, &env());
        assert_eq!(errs.len(), 1, "{bad}: {errs:#?}");
        assert!(errs[0].starts_with("gw.yaml:7:24: tenants.acme.tencent.accessKeySecret: "), "{bad}: {errs:#?}");
        assert!(!errs[0].contains("s3cr3t") && !errs[0].contains("hunter2"), "{bad}: {errs:#?}");
    }
}

/// The mechanism, not the example: a nested reference to an unset variable in any value of any key is an
/// error at that line, whatever the key's type; none compiles to a literal `${`.
#[test]
fn no_reference_survives_in_any_value() {
    let env = env();
    Config::from_yaml(RICH, Path::new("gw.yaml"), &env).unwrap_or_else(|e| panic!("RICH must compile: {e}"));
    let lines: Vec<&str> = RICH.lines().collect();
    let mut tried = 0;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let value_at = match (trimmed.find(": "), trimmed.strip_prefix("- ")) {
            (Some(at), _) => line.len() - trimmed.len() + at + 2,
            (None, Some(_)) => line.len() - trimmed.len() + 2,
            _ => continue,
        };
        let hostile = format!("{}\"${{UNSET_OUTER:-${{UNSET_INNER}}}}\"", &line[..value_at]);
        let yaml = lines.iter().enumerate().map(|(j, l)| if j == i { hostile.as_str() } else { l }).collect::<Vec<_>>();
        let errs = errors_in(&(yaml.join("\n") + "\n"), &env);
        let at_line = format!("gw.yaml:{}:", i + 1);
        assert!(
            errs.iter().any(|e| e.starts_with(&at_line) && (e.contains("UNSET_INNER") || e.contains("`${…}`"))),
            "line {}: {hostile}\n{errs:#?}",
            i + 1
        );
        tried += 1;
    }
    assert!(tried >= 37, "every value line was tried: {tried}");
    // Keys are names, never interpolated: a reference there is an error too.
    for (from, to) in [("  acme:", "  \"${TENANT}\":"), ("\"+8613800000000\"", "\"${TEST_NUMBER}\"")] {
        let errs = errors_in(&RICH.replace(from, to), &env);
        assert!(errs.iter().any(|e| e.contains("`${…}` is not expanded in keys")), "{errs:#?}");
    }
}

/// Two `acme:` tenants: check said "ok (1 tenant(s))" and the first tenant's tokens and limits vanished.
#[test]
fn regression_duplicate_tenant_is_an_error_with_both_locations() {
    let two = format!("{GOOD}  acme:\n{}", GOOD.lines().skip(2).collect::<Vec<_>>().join("\n"));
    let errs = errors(&two);
    assert_eq!(errs, vec!["gw.yaml:15:3: tenants.acme: duplicate key `acme` (first at line 2, column 3)"]);

    // Any mapping: test numbers (quoted or not), spend-cap countries, struct keys, flow mappings, the top.
    let cases: &[(&str, &str, &str)] = &[
        (
            "test_numbers:\n      \"+8613800000000\": \"123456\"\n      +8613800000000: \"654321\"",
            "tenants.acme.test_numbers.+8613800000000: duplicate key `+8613800000000`",
            "first at line 16, column 7",
        ),
        (
            "spend_caps:\n      countries:\n        US: { daily: 5 }\n        CN: { daily: 5 }\n        US: { daily: 500 }",
            "tenants.acme.spend_caps.countries.US: duplicate key `US`",
            "first at line 17, column 9",
        ),
        ("limits_again: 1\n    limits: []", "tenants.acme.limits: duplicate key `limits`", "first at line 13, column 5"),
        ("dedupe_window: 1m\n    dedupe_window: 0s", "tenants.acme.dedupe_window: duplicate key", "first at line 15, column 5"),
    ];
    for (extra, expected, first) in cases {
        let yaml = format!("{GOOD}    {extra}\n");
        let errs = errors(&yaml);
        assert!(errs.iter().any(|e| e.contains(expected) && e.ends_with(&format!("({first})"))), "{extra}\n{errs:#?}");
    }
    let errs = errors(&GOOD.replace("{ name: burst, key: phone,", "{ name: burst, key: phone, key: ip,"));
    assert!(
        errs.iter().any(|e| e.starts_with("gw.yaml:14:") && e.contains("limits[0].key: duplicate key `key`")),
        "{errs:#?}"
    );
    let errs = errors(&format!("{GOOD}tenants: {{}}\n"));
    assert!(
        errs.iter().any(|e| e.contains("tenants: duplicate key `tenants` (first at line 1, column 1)")),
        "{errs:#?}"
    );
}

/// A 1 MiB scalar referenced 3,000 times took `check` to 3.3 GB.
#[test]
fn regression_alias_bomb_is_refused() {
    let bomb = format!(
        "x-blob: &blob {}\ntenants:\n  acme:\n    tokens: [{}]\n",
        "b".repeat(1 << 20),
        vec!["*blob"; 3000].join(", ")
    );
    let errs = errors(&bomb);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("gw.yaml:4:"), "refused at the first alias over the budget: {errs:#?}");
    assert!(errs[0].contains("tenants.acme.tokens[8]: aliases expand to more than"), "{errs:#?}");

    // Nested aliases multiply (a billion laughs in 12 lines), and mappings count like scalars.
    let mut laughs = String::from("l0: &l0 {a: lol, b: lol, c: lol, d: lol, e: lol, f: lol, g: lol, h: lol}\n");
    for i in 1..10 {
        laughs.push_str(&format!("l{i}: &l{i} [{}]\n", vec![format!("*l{}", i - 1); 10].join(", ")));
    }
    let errs = errors(&format!("{laughs}{GOOD}"));
    assert!(errs[0].contains("aliases expand to more than"), "{errs:#?}");

    // Aliases the way a config uses them are fine: limits and templates defined by the first tenant and
    // shared by 200 others.
    let mut shared = String::from("tenants:\n");
    for i in 0..200 {
        let (limits, templates) = match i {
            0 => (
                "&limits [{ name: burst, key: phone, limit: 1, per: 30s }, { name: hourly, key: phone, limit: 5, per: 1h }]",
                "&templates [{ usageType: SignIn, templateCode: \"1110\" }]",
            ),
            _ => ("*limits", "*templates"),
        };
        shared.push_str(&format!(
            "  t{i}:\n    tokens: [\"token-for-tenant-{i:05}\"]\n    tencent: {{ accessKeyId: AKID, accessKeySecret: \"${{SECRET}}\", sdkAppId: 1400006666, region: ap-guangzhou, templates: {templates} }}\n    limits: {limits}\n"
        ));
    }
    let config = Config::from_yaml(&shared, Path::new("gw.yaml"), &env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.tenants.len(), 200);
    assert_eq!(config.tenant("t199").unwrap().limits.len(), 2);
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{GOOD}    x: {}{}\n", "[".repeat(100), "]".repeat(100));
    let errs = errors(&deep);
    assert!(errs[0].contains("nodes nest more than 64 levels deep"), "{errs:#?}");
}

/// `check` stopped at the first unknown key although it promises every error.
#[test]
fn regression_check_reports_every_unknown_key() {
    let yaml = RICH
        .replace("  shutdown_grace: 5s", "  shutdown_grace: 5s\n  listen_backlog: 10")
        .replace("    default_country: CN", "    default_country: CN\n    defualt_country: CN")
        .replace("      signName: Sig", "      signName: Sig\n      sign_name: Sig")
        .replace("        per: 30s", "        per: 30s\n        burst: 2")
        .replace("          daily: 5", "          daily: 5\n          weekly: 9")
        .replace("      accessKeySecret: other-secret-abc", "      accessKeySecret: other-secret-abc\n        token: x")
        .replace("dedupe_window: 5m", "dedupe_window: 5 minutes")
        + "extra_top: 1\n";
    let errs = errors_in(&yaml, &env());
    let expected = [
        ("server.listen_backlog", "unknown key `listen_backlog`"),
        ("tenants.acme.defualt_country", "unknown key `defualt_country`"),
        ("tenants.acme.tencent.sign_name", "unknown key `sign_name`"),
        ("tenants.acme.tencent.next_credentials.token", "unknown key `token`"),
        ("tenants.acme.limits[0].burst", "unknown key `burst`"),
        ("tenants.acme.dedupe_window", "expected a duration"),
        ("tenants.acme.spend_caps.countries.US.weekly", "unknown key `weekly`"),
        ("extra_top", "unknown key `extra_top`"),
    ];
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    for ((path, message), e) in expected.iter().zip(&errs) {
        assert!(e.contains(&format!(": {path}: {message}")), "{path}: {e}");
        let mut parts = e.splitn(4, ':');
        parts.next();
        assert!(parts.next().unwrap().parse::<u32>().is_ok() && parts.next().unwrap().parse::<u32>().is_ok(), "{e}");
    }
    // Unknown keys and a duplicate and an unset variable, all at once, in file order.
    let yaml = GOOD
        .replace("signName: Sig", "signName: Sig\n      signName: Sig2\n      sign: x")
        .replace("${SECRET}", "${NOPE}");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].contains("accessKeySecret: environment variable NOPE is not set"), "{errs:#?}");
    assert!(errs[1].contains("tencent.signName: duplicate key `signName` (first at line 8"), "{errs:#?}");
    assert!(errs[2].contains("tencent.sign: unknown key `sign`"), "{errs:#?}");
}

fn load_errors(path: &Path) -> Vec<String> {
    match Config::load(path, &env()) {
        Ok(_) => panic!("{} should not load", path.display()),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// A script path of `/dev/zero` took `check` to 10 GB; a FIFO blocked until written.
#[test]
fn regression_config_and_script_reads_are_bounded_and_regular_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    let big_script = dir.path().join("scripts/big.lua");
    std::fs::write(&big_script, format!("-- {}\nfunction on_send(req) end\n", "x".repeat(1 << 20))).unwrap();
    let not_text = dir.path().join("scripts/bin.lua");
    std::fs::write(&not_text, [0xff, 0xfe, 0x00]).unwrap();
    for (script, reason) in [
        ("/dev/zero", "it is a device, not a regular file"),
        (fifo.to_str().unwrap(), "it is a FIFO, not a regular file"),
        ("scripts", "it is a directory, not a regular file"),
        ("scripts/big.lua", "it is larger than 1048576 bytes"),
        ("scripts/bin.lua", "it is not UTF-8 text"),
        ("scripts/missing.lua", "no such file"),
    ] {
        let yaml = format!("{GOOD}    script: {script}\n");
        let errs = match Config::from_yaml(&yaml, &dir.path().join("gw.yaml"), &env()) {
            Ok(_) => panic!("{script} loaded"),
            Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].ends_with(&format!("tenants.acme.script: cannot read {script}: {reason}")), "{errs:#?}");
    }

    // The config file itself.
    let large = dir.path().join("large.yaml");
    let mut text = GOOD.to_owned();
    text.push_str(&format!("# {}\n", "x".repeat(8 << 20)));
    std::fs::write(&large, text).unwrap();
    for (path, reason) in [
        (fifo.as_path(), "it is a FIFO, not a regular file"),
        (Path::new("/dev/zero"), "it is a device, not a regular file"),
        (dir.path(), "it is a directory, not a regular file"),
        (large.as_path(), "it is larger than 8388608 bytes"),
    ] {
        let errs = load_errors(path);
        assert_eq!(errs, vec![format!("{}: cannot read the config file: {reason}", path.display())]);
    }
    // At the cap is fine.
    let at_cap = dir.path().join("at_cap.yaml");
    let mut text = GOOD.to_owned();
    text.push_str("# ");
    text.push_str(&"x".repeat((8 << 20) - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), 8 << 20);
    std::fs::write(&at_cap, text).unwrap();
    Config::load(&at_cap, &env()).unwrap_or_else(|e| panic!("{e}"));
}

/// Two tenants, `a` and `b`, and an admin token, with room for extra lines: `a_tencent` (a's tencent block,
/// 6 spaces), `a_extra` and `b_extra` (tenant level, 4 spaces).
fn two_tenants(a_tencent: &str, a_extra: &str, b_extra: &str) -> String {
    let tenant = |name: &str, app: &str, tencent: &str, extra: &str| {
        format!(
            "  {name}:\n    tokens: [\"token-for-{name}-0000001\"]\n    tencent:\n      accessKeyId: AKID{name}\n      \
             accessKeySecret: real-tencent-key-of-{name}-0001\n      sdkAppId: {app}\n      region: ap-guangzhou\n      \
             templates: [{{ usageType: Generic, templateCode: \"1\" }}]\n{tencent}\n{extra}\n"
        )
    };
    format!(
        "server:\n  admin_tokens: [\"admin-token-0123456789\"]\ntenants:\n{}{}",
        tenant("a", "1400006666", a_tencent, a_extra),
        tenant("b", "1400007777", "", b_extra)
    )
}

/// Issue 19: `check` accepted configs that read safe and compiled weaker: one Supabase secret for two
/// tenants, an SDK client key equal to a real Tencent key, a token or an admin token, a status secret equal
/// to the admin token, a webhook URL whose password is never sent or whose host is the metadata service,
/// and real sends over plain http. Each is an error at its key, naming no value.
#[test]
fn regression_check_accepted_configs_that_weaken_security_silently() {
    assert!(Config::from_yaml(&two_tenants("", "", ""), Path::new("gw.yaml"), &env()).is_ok());
    let hook = "    supabase: { secret: \"v1,whsec_c21zZ2F0ZS1zdXBhYmFzZS10ZXN0LWtleS0x\" }";
    let sdk = |key: &str| format!("    sdk_clients: [{{ secretId: AKIDcaller01, secretKey: {key} }}]");
    let feedback = "    conversion: { window: 1m }";
    let webhook = |url: &str, extra: &str| {
        format!(
            "{feedback}\n    webhook: {{ url: \"{url}\", secret: whsec_c21zZ2F0ZS13ZWJob29rLWtleS0xMjM0NQ=={extra} }}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (two_tenants("", hook, hook), "tenants.b.supabase.secret: this secret is already used by tenant a"),
        (
            two_tenants("", "", &sdk("real-tencent-key-of-a-0001")),
            "tenants.b.sdk_clients[0].secretKey: must differ from tenant a's real provider secret",
        ),
        (
            two_tenants("", "", &sdk("token-for-a-0000001")),
            "tenants.b.sdk_clients[0].secretKey: must differ from a token of tenant a",
        ),
        (
            two_tenants("", "", &sdk("admin-token-0123456789")),
            "tenants.b.sdk_clients[0].secretKey: must differ from an admin token",
        ),
        (
            two_tenants("      status_secret: admin-token-0123456789", feedback, ""),
            "tenants.a.tencent.status_secret: must differ from an admin token",
        ),
        (
            two_tenants("", &webhook("https://:hunter2-pass@hooks.example.com/x", ""), ""),
            "tenants.a.webhook.url: credentials in the URL are never sent",
        ),
        (
            two_tenants("", &webhook("http://169.254.169.254/latest/meta-data", ""), ""),
            "tenants.a.webhook.url: a link-local or cloud-metadata address",
        ),
        (
            two_tenants("", &webhook("http://[fe80::1]:8080/x", ""), ""),
            "tenants.a.webhook.url: a link-local or cloud-metadata address",
        ),
        (
            two_tenants("      endpoint: http://sms.tencentcloudapi.com", "", ""),
            "tenants.a.tencent.endpoint: real sends over plain http",
        ),
    ];
    for (yaml, expected) in cases {
        let errs = errors(&yaml);
        assert!(errs.iter().any(|e| e.contains(expected)), "{expected}:\n{errs:#?}");
        for secret in ["hunter2", "real-tencent-key", "token-for-a", "admin-token-0123"] {
            assert!(errs.iter().all(|e| !e.contains(secret)), "{secret} echoed: {errs:#?}");
        }
    }
    // Where a legitimate use exists, an explicit allow (or a loopback endpoint, or a dry run) compiles.
    for yaml in [
        two_tenants("", &webhook("http://169.254.169.254/x", ", allow_link_local: true"), ""),
        two_tenants("      endpoint: http://sms.internal:8080\n      allow_plain_http: true", "", ""),
        two_tenants("      endpoint: http://127.0.0.1:9000", "", ""),
        two_tenants("      endpoint: http://sms.tencentcloudapi.com\n      dry_run: true", "", ""),
    ] {
        Config::from_yaml(&yaml, Path::new("gw.yaml"), &env()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
}

/// The same class by another shape: a literal default makes the config's own text the secret whenever the
/// variable is unset; refused for every secret key (tokens, admin tokens, Tencent and SDK keys), except for
/// a tenant that only dry-runs (the shipped demo).
#[test]
fn literal_defaults_of_secrets_are_refused_unless_nothing_is_sent() {
    let cases = [
        ("token-for-a-0000001", "${A_TOKEN:-token-for-a-0000001}", "tenants.a.tokens[0]"),
        ("admin-token-0123456789", "${ADMIN:-admin-token-0123456789}", "server.admin_tokens[0]"),
        ("real-tencent-key-of-a-0001", "${A_KEY:-real-tencent-key-of-a-0001}", "tenants.a.tencent.accessKeySecret"),
    ];
    for (plain, defaulted, key) in cases {
        let yaml = two_tenants("", "", "").replace(plain, defaulted);
        let errs = errors(&yaml);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains(&format!("{key}: a secret must not have a literal default")), "{errs:#?}");
        assert!(!errs[0].contains(plain), "{errs:#?}");
    }
    // A default that is itself a variable is no literal; a dry-run tenant may keep a demo default.
    let yaml = two_tenants("", "", "").replace("token-for-a-0000001", "${A_TOKEN:-${SECRET}}");
    Config::from_yaml(&yaml, Path::new("gw.yaml"), &env()).unwrap_or_else(|e| panic!("{e}"));
    let yaml =
        two_tenants("      dry_run: true", "", "").replace("token-for-a-0000001", "${A_TOKEN:-demo-token-0123456789}");
    Config::from_yaml(&yaml, Path::new("gw.yaml"), &env()).unwrap_or_else(|e| panic!("{e}"));
}

/// Issue 19: `supabase.usage: Generic` with no Generic template compiled, and every hook call then failed
/// 422. Every usage a door takes from the config resolves to a template, for every kind of number.
#[test]
fn regression_check_accepted_a_supabase_usage_without_a_template() {
    let hook = |usage: &str| {
        format!("    supabase: {{ secret: \"v1,whsec_c21zZ2F0ZS1zdXBhYmFzZS10ZXN0LWtleS0x\", usage: {usage} }}")
    };
    let only_sign_in = GOOD.to_owned() + &hook("Generic");
    let errs = errors(&only_sign_in);
    assert!(errs.iter().any(|e| e.contains("tenants.acme.supabase.usage: no template serves Generic")), "{errs:#?}");
    Config::from_yaml(&(GOOD.to_owned() + &hook("signin")), Path::new("gw.yaml"), &env())
        .unwrap_or_else(|e| panic!("SignIn has a template, in any spelling: {e}"));
    // Another shape: the mainland set serves it, the international set does not.
    let international = GOOD.replace(
        "      templates:\n",
        "      international_templates: [{ usageType: Register, templateCode: \"9\" }]\n      templates:\n",
    ) + &hook("SignIn");
    let errs = errors(&international);
    assert!(errs.iter().any(|e| e.contains("tenants.acme.supabase.usage: no template serves SignIn")), "{errs:#?}");
}
