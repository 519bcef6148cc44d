//! Criterion benches for the request path before the network: TC3 signing of a typical SendSms body,
//! request parsing and number normalization for both routes, and the whole in-process pipeline up to (not
//! including) the send.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use smsgate::clock::{ManualClock, SharedClock};
use smsgate::phone::Phone;
use smsgate::pipeline::{Services, Trail};
use smsgate::policy::Limiter;
use smsgate::providers::tencent::sign::{sign, Tc3Input};
use smsgate::providers::Providers;
use smsgate::server::doors::{logto::parse_logto, native::parse_native};
use smsgate::Runtime;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const NATIVE: &[u8] = br#"{"phone":"+8613800138000","usage":"SignIn","code":"123456"}"#;
const LOGTO: &[u8] = br#"{"to":"8613800138000","type":"SignIn","payload":{"code":"123456","locale":"zh-CN","uiLocales":"zh-CN en"},"ip":"203.0.113.7"}"#;

fn signing(c: &mut Criterion) {
    let body = r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400006666","TemplateId":"1110","SignName":"腾讯云","TemplateParamSet":["123456"]}"#;
    c.bench_function("sign/tc3_sendsms", |b| {
        b.iter(|| {
            sign(
                black_box("AKIDexample"),
                black_box("secret-key-example"),
                &Tc3Input {
                    service: "sms",
                    host: "sms.tencentcloudapi.com",
                    content_type: "application/json; charset=utf-8",
                    timestamp: black_box(1_700_000_000),
                    body: black_box(body.as_bytes()),
                },
            )
        })
    });
}

fn parsing(c: &mut Criterion) {
    Phone::warm_up();
    c.bench_function("ingress/native_parse_and_normalize", |b| {
        b.iter(|| {
            let r = parse_native(black_box(NATIVE)).unwrap();
            let smsgate::sms::PhoneInput::Native(text) = &r.phone else { unreachable!() };
            Phone::from_native(text, None).unwrap()
        })
    });
    c.bench_function("ingress/logto_parse_and_normalize", |b| {
        b.iter(|| {
            let r = parse_logto(black_box(LOGTO)).unwrap();
            let smsgate::sms::PhoneInput::Logto(to) = &r.phone else { unreachable!() };
            Phone::from_logto(to).unwrap()
        })
    });
    c.bench_function("phone/from_e164_repeated_number_cached", |b| {
        b.iter(|| Phone::from_e164(black_box("+8613800138000")).unwrap())
    });
    // Distinct numbers: every parse misses the cache and runs the metadata parser.
    let mut n = 0u64;
    c.bench_function("phone/from_e164_distinct_numbers", |b| {
        b.iter(|| {
            n += 1;
            Phone::from_e164(&format!("+86139{:08}", n % 100_000_000)).unwrap()
        })
    });
}

fn pipeline(c: &mut Criterion) {
    let yaml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml")).unwrap();
    // The demo tenant as shipped (with its Lua hook), and the same tenant without the hook.
    let unhooked: String = yaml
        .lines()
        .filter(|l| !["script", "on_script_error"].iter().any(|k| l.trim_start().starts_with(k)))
        .collect::<Vec<_>>()
        .join("\n");
    for (name, yaml) in
        [("pipeline/native_to_signed_request", yaml.as_str()), ("pipeline/native_to_signed_request_no_hook", &unhooked)]
    {
        let built = Runtime::from_yaml(yaml, Path::new("gateway.yaml"), &HashMap::<String, String>::new()).unwrap();
        let config = built.config();
        let tenant = built.tenant("demo").unwrap().clone();
        assert_eq!(tenant.script.is_some(), !name.ends_with("no_hook"));
        let clock = ManualClock::new(1_700_000_000);
        let shared: SharedClock = clock.clone();
        let services = Services::new(
            Limiter::from_backend(&config.limits_backend, shared.clone()).unwrap(),
            Providers::new(shared.clone(), Default::default()),
            shared,
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Distinct numbers so every request is allowed and the limiter does real work (3 phone rules + tenant).
        let mut n = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                clock.advance(Duration::from_millis(25)); // stay under the demo tenant's 50/s
                let body = format!(r#"{{"phone":"+86138{:08}","usage":"SignIn","code":"123456"}}"#, n % 100_000_000);
                let request = parse_native(body.as_bytes()).unwrap();
                let mut trail = Trail::default();
                runtime.block_on(services.plan(&tenant, request, &mut trail)).unwrap()
            })
        });
    }
}

/// The stages that consume nothing (normalize, destination rules, route, template) for a Tencent-only tenant and
/// for a tenant with three providers and three routes, the number in the last (default) route: the difference
/// is what choosing a provider costs.
fn routing(c: &mut Criterion) {
    let tencent = r#"
    tencent:
      accessKeyId: AKIDexample
      accessKeySecret: secret-key-example-0001
      signName: Sig
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{ usageType: SignIn, templateCode: "1110" }, { usageType: Generic, templateCode: "1113" }]
      dry_run: true
"#;
    let others = r#"
    aliyun:
      accessKeyId: LTAI5tTestKeyId
      accessKeySecret: aliyun-secret-example-0001
      signName: Sig
      templates: [{ usageType: SignIn, templateCode: SMS_1 }, { usageType: Generic, templateCode: SMS_2 }]
      dry_run: true
    twilio:
      accountSID: AC0123456789abcdef0123456789abcdef
      authToken: twilio-token-example-0001
      fromMessagingServiceSID: MG0123456789abcdef0123456789abcdef
      templates: [{ usageType: Generic, content: "Your code is {{code}}" }]
      dry_run: true
    routes:
      - { countries: [CN], via: [tencent, aliyun] }
      - { prefixes: ["+8529"], via: [aliyun] }
      - { via: [twilio, tencent] }
"#;
    for (name, providers) in [
        ("routing/check_tencent_only", tencent.to_owned()),
        ("routing/check_three_routes", format!("{tencent}{others}")),
    ] {
        let yaml = format!("tenants:\n  acme:\n    tokens: [\"bench-token-0123456789\"]\n{providers}");
        let built = Runtime::from_yaml(&yaml, Path::new("gateway.yaml"), &HashMap::<String, String>::new()).unwrap();
        let tenant = built.tenant("acme").unwrap().clone();
        let shared: SharedClock = ManualClock::new(1_700_000_000);
        let services = Services::new(
            Limiter::from_backend(&built.config().limits_backend, shared.clone()).unwrap(),
            Providers::new(shared.clone(), Default::default()),
            shared,
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Phone::warm_up();
        c.bench_function(name, |b| {
            b.iter(|| {
                let request = parse_native(br#"{"phone":"+14155550100","usage":"SignIn","code":"123456"}"#).unwrap();
                let mut trail = Trail::default();
                runtime.block_on(services.check(&tenant, black_box(request), &mut trail)).unwrap()
            })
        });
    }
}

criterion_group!(benches, signing, parsing, pipeline, routing);
criterion_main!(benches);
