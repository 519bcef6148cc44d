//! Routing among a tenant's providers (issue 21): the route is chosen by the number's country or E.164
//! prefix after the hook ran (the default route last), the hook reads the candidates and may choose one
//! first, and `check` refuses routes a send could not take. These sends are dry runs: the answer names the
//! provider that would have sent. Failover across live providers is in `failover.rs`.

use crate::common::{compile, native, TestGateway, TOKEN};
use smsgate::config::Config;
use std::path::Path;

/// A tenant with all three providers (each in dry run) and `routes`, plus `extra` tenant keys.
fn yaml(routes: &str, extra: &str) -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:0
tenants:
  acme:
    tokens: ["{TOKEN}"]
    tencent:
      accessKeyId: AKIDtestsecretid
      accessKeySecret: ${{ACME_SECRET}}
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - {{ usageType: SignIn, templateCode: "1110" }}
        - {{ usageType: Generic, templateCode: "1113" }}
      dry_run: true
    aliyun:
      accessKeyId: LTAI5tTestKeyId
      accessKeySecret: aliyun-test-secret-0001
      signName: 阿里云短信测试
      templates:
        - {{ usageType: SignIn, templateCode: {{ china: SMS_154950909, overseas: SMS_465320000 }} }}
        - {{ usageType: Generic, templateCode: SMS_154950913 }}
      dry_run: true
    twilio:
      accountSID: AC0123456789abcdef0123456789abcdef
      authToken: twilio-test-token-0001
      fromMessagingServiceSID: MG0123456789abcdef0123456789abcdef
      templates:
        - {{ usageType: Generic, content: "Your code is {{{{code}}}}" }}
      dry_run: true
{routes}{extra}"#
    )
}

const ROUTES: &str = r#"    routes:
      - { countries: [CN], via: [tencent, aliyun] }
      - { prefixes: ["+8529"], via: [aliyun] }
      - { via: [twilio, tencent] }
"#;

fn errors(yaml: &str) -> String {
    let env = crate::common::env();
    Config::from_yaml(yaml, Path::new("gw.yaml"), &env).expect_err("check refuses it").to_string()
}

#[tokio::test]
async fn a_number_takes_the_first_route_its_country_or_prefix_matches_else_the_default() {
    let gw = TestGateway::start(compile(&yaml(ROUTES, ""))).await;
    for (phone, provider, template) in [
        ("+8613800138000", "tencent", "1110"),
        ("+85291234567", "aliyun", "SMS_465320000"),
        // Hong Kong, but outside +8529: the default route.
        // Twilio has no SignIn text: its Generic one is sent (the send is still judged as SignIn).
        ("+85261234567", "twilio", "Generic"),
        ("+14155550100", "twilio", "Generic"),
    ] {
        let answer = gw.post("/v1/sms/send", &native(phone, "SignIn", "123456")).await;
        assert_eq!(answer.status, 200, "{phone}: {:#}", answer.json);
        assert_eq!(answer.json["status"], "dry_run", "{phone}");
        assert_eq!(answer.json["provider"], provider, "{phone}: {:#}", answer.json);
        assert_eq!(answer.json["template_id"], template, "{phone}: {:#}", answer.json);
    }
}

#[tokio::test]
async fn a_tenant_with_one_provider_and_no_routes_sends_everything_through_it() {
    let yaml = r#"
server:
  listen: 127.0.0.1:0
tenants:
  acme:
    tokens: ["test-token-acme-0001"]
    aliyun:
      accessKeyId: LTAI5tTestKeyId
      accessKeySecret: aliyun-test-secret-0001
      signName: 阿里云短信测试
      templates:
        - { usageType: Generic, templateCode: SMS_154950913 }
      dry_run: true
"#;
    let gw = TestGateway::start(compile(yaml)).await;
    for phone in ["+8613800138000", "+14155550100"] {
        let answer = gw.post("/v1/sms/send", &native(phone, "SignIn", "123456")).await;
        assert_eq!((answer.status, &answer.json["provider"]), (200, &"aliyun".into()), "{:#}", answer.json);
        assert_eq!(answer.json["template_id"], "SMS_154950913");
    }
}

#[tokio::test]
async fn the_hook_reads_the_candidates_and_may_choose_one_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("route.lua"),
        r#"
function on_send(req)
  if req.params[1] == "list" then return { reject = table.concat(req.providers, ",") } end
  if req.params[1] == "aliyun" then req.provider = "aliyun" end
  if req.params[1] == "nope" then req.provider = "nope" end
  if req.params[1] == "write" then req.providers = { "twilio" } end
  return req
end
"#,
    )
    .unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml(ROUTES, "    script: route.lua\n    on_script_error: reject\n")).unwrap();
    let config = Config::load(&file, &crate::common::env()).unwrap_or_else(|e| panic!("{e}"));
    let gw = TestGateway::start(config).await;
    let send = |which: &'static str| {
        let body = serde_json::json!({"phone": "+8613800138000", "usage": "SignIn", "params": [which]}).to_string();
        let gw = &gw;
        async move { gw.post("/v1/sms/send", &body).await }
    };
    let listed = send("list").await;
    listed.assert_error(403, "rejected");
    assert_eq!(listed.json["error"]["message"], "tencent,aliyun", "the CN route's providers, in order");
    let chosen = send("aliyun").await;
    assert_eq!((chosen.status, &chosen.json["provider"]), (200, &"aliyun".into()), "{:#}", chosen.json);
    assert_eq!(chosen.json["template_id"], "SMS_154950909", "Aliyun's mainland template");
    let unchanged = send("keep").await;
    assert_eq!(unchanged.json["provider"], "tencent");
    send("nope").await.assert_error(500, "script_error");
    send("write").await.assert_error(500, "script_error");
}

#[tokio::test]
async fn explain_names_the_route_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, yaml(ROUTES, "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["explain", "--config"])
        .arg(&file)
        .args(["--tenant", "acme", "--phone", "+85291234567", "--usage", "SignIn", "--code", "654321"])
        .env("ACME_SECRET", crate::common::SECRET_KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("route      routes[1], matched by +8529: via aliyun -> aliyun"), "{text}");
    assert!(text.contains("TemplateParam=***") && !text.contains("654321"), "the code stays hidden: {text}");
}

#[test]
fn check_refuses_routes_a_send_could_not_take() {
    let cases = [
        (
            "    routes:\n      - { countries: [CN], via: [tencent, aliyun] }\n",
            "tenants.acme.routes: with more than one provider, the last route is the default one",
        ),
        ("", "tenants.acme.routes: with more than one provider, list routes ending with a default one"),
        (
            "    routes:\n      - { via: [twilio] }\n      - { countries: [CN], via: [tencent] }\n",
            "tenants.acme.routes[0]: a route without countries or prefixes takes every number: it must be the last one",
        ),
        (
            "    routes:\n      - { via: [twillio] }\n",
            "tenants.acme.routes[0].via[0]: expected tencent, aliyun or twilio",
        ),
        ("    routes:\n      - { via: [aliyun, aliyun] }\n", "tenants.acme.routes[0].via[1]: aliyun is listed twice"),
        (
            "    routes:\n      - { countries: [XX], via: [aliyun] }\n      - { via: [tencent] }\n",
            "tenants.acme.routes[0].countries[0]",
        ),
        (
            "    routes:\n      - { prefixes: [\"8529\"], via: [aliyun] }\n      - { via: [tencent] }\n",
            "tenants.acme.routes[0].prefixes[0]: expected an E.164 prefix",
        ),
    ];
    for (routes, expected) in cases {
        let e = errors(&yaml(routes, ""));
        assert!(e.contains(expected), "{routes}\nwanted {expected}\ngot {e}");
    }
}

#[test]
fn check_refuses_a_route_through_a_provider_without_the_tenants_usages_or_section() {
    // Twilio has no SignIn template and no Generic either: a SignIn send routed there could not be sent.
    let without_generic = yaml(ROUTES, "").replace(
        r#"{ usageType: Generic, content: "Your code is {{code}}" }"#,
        r#"{ usageType: Register, content: "Your code is {{code}}" }"#,
    );
    let e = errors(&without_generic);
    assert!(e.contains("tenants.acme.routes[2].via[0]: twilio has no template for usage type"), "{e}");
    assert!(e.contains("SignIn"), "{e}");
    // A provider the tenant does not configure.
    let start = without_generic.find("    twilio:").unwrap();
    let end = without_generic.find("    routes:").unwrap();
    let no_twilio = format!("{}{}", &without_generic[..start], &without_generic[end..]);
    let e = errors(&no_twilio);
    assert!(e.contains("tenants.acme.routes[2].via[0]: the tenant has no `twilio:` section"), "{e}");
    // No provider at all.
    let none = "tenants:\n  acme:\n    tokens: [\"test-token-acme-0001\"]\n";
    assert!(errors(none).contains("configure at least one provider"), "{}", errors(none));
}
