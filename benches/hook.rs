//! Cost of the Lua hook: one `on_send` call for each shipped example script (and an empty hook, the fixed
//! cost of a call), made on the calling thread with the whole budget, dispatched as the gateway does
//! (inline first, within a slice of the budget; the dispatch cost is the difference), the most a hostile
//! script holds an async worker in one inline slice, and the in-process pipeline (`Services::plan`:
//! normalize, script, template, policy, signing) with and without a hook.
//! Run: `cargo bench --bench hook -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smsgate::clock::SystemClock;
use smsgate::phone::Phone;
use smsgate::pipeline::{Services, Trail};
use smsgate::policy::{Limiter, MemoryStore};
use smsgate::providers::Providers;
use smsgate::script::{HookInput, OnScriptError, RawVerdict, ScriptHook, ScriptLimits, Settings, SliceOutcome};
use smsgate::sms::{PhoneInput, SendRequest};
use smsgate::Runtime;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn settings() -> Settings {
    Settings {
        name: "bench".into(),
        default_country: None,
        sign_name: Some("腾讯云".into()),
        region: Some("ap-guangzhou".into()),
        sdk_app_id: Some("1400006666".into()),
        templates: [("SignIn", "1110"), ("Generic", "1113"), ("SignIn_intl", "2110"), ("SignIn_en", "3110")]
            .iter()
            .map(|(u, id)| (u.to_string(), id.to_string()))
            .collect(),
    }
}

fn hook(script: &str) -> ScriptHook {
    ScriptHook::load(script, &crate_dir().join(script), settings(), ScriptLimits::default(), OnScriptError::Reject)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn hook_calls(c: &mut Criterion) {
    let cn = Phone::from_e164("+8613800138000").unwrap();
    let us = Phone::from_e164("+14155550100").unwrap();
    let params = vec!["123456".to_owned()];
    let input = |phone, raw_phone, locale| HookInput {
        tenant: "bench",
        phone,
        raw_phone,
        usage: "SignIn",
        code: Some("123456"),
        params: &params,
        providers: None,
        ip: None,
        locale,
        request_id: Some("bench"),
        log_budget: None,
    };
    let empty = ScriptHook::from_source(
        "empty.lua",
        "function on_send(req) end".into(),
        settings(),
        ScriptLimits::default(),
        OnScriptError::Reject,
    )
    .unwrap();
    // Each input takes its script's main path: a rewrite, a reroute, a full scan of the prefix list, a
    // template pick.
    let cases = [
        ("empty", empty, input(Some(&cn), "+8613800138000", None)),
        ("mainland (E.164, unchanged)", hook("scripts/mainland.lua"), input(Some(&cn), "+8613800138000", None)),
        // The number as written did not parse (a tenant without default_country): the hook repairs it.
        ("mainland (bare 11 digits, rewritten)", hook("scripts/mainland.lua"), input(None, "13800138000", None)),
        ("international (US number)", hook("scripts/international.lua"), input(Some(&us), "+14155550100", None)),
        ("premium_block (allowed)", hook("scripts/premium_block.lua"), input(Some(&cn), "+8613800138000", None)),
        ("locale (en-US)", hook("scripts/locale.lua"), input(Some(&cn), "+8613800138000", Some("en-US"))),
    ];
    let mut group = c.benchmark_group("hook_call");
    group.throughput(Throughput::Elements(1));
    // For scale: one number validation by the phonenumber crate, which `smsgate.parse_phone` (and the
    // gateway's own normalize stage) costs.
    group.bench_function("reference: one phone number parse", |b| {
        b.iter(|| black_box(Phone::from_e164(black_box("+8613800138000")).unwrap()))
    });
    for (name, hook, input) in &cases {
        if name.contains("rewritten") {
            assert!(matches!(hook.call(input), Ok(RawVerdict::Proceed { phone: Some(_), .. })), "{name} must rewrite");
        }
        group.bench_function(*name, |b| b.iter(|| black_box(hook.call(black_box(input)).unwrap())));
    }
    // The worst case a runaway script costs a hook thread: a call that exhausts the default budget.
    let runaway = ScriptHook::from_source(
        "runaway.lua",
        "function on_send(req) while true do end end".into(),
        settings(),
        ScriptLimits::default(),
        OnScriptError::Reject,
    )
    .unwrap();
    let runaway_input = input(Some(&cn), "+8613800138000", None);
    group.bench_function("runaway (exhausts 200000 instructions, the state is rebuilt)", |b| {
        b.iter(|| black_box(runaway.call(black_box(&runaway_input)).unwrap_err()))
    });
    group.finish();

    // The most a hostile script holds an async worker: one inline attempt until the slice cuts it off
    // (the cut-off state is freed in the measured time too; the gateway frees it on a hook thread). Each
    // keeps 30 KB (under the 64 KiB a script may keep and still go inline) and spends the slice on the
    // costliest single instructions the count does not see, or on charged library calls.
    let slices = [
        ("spin (while true do end)", "while true do end"),
        ("compare 30 KB strings", "local O = S:sub(1, -2) .. 'b' while true do local _ = S < O end"),
        ("concatenate 30 KB strings", "while true do local s = S .. 'x' end"),
        ("plain find in 30 KB", "while true do S:find('b', 1, true) end"),
        ("xpcall handler loop", "xpcall(error, function() while true do end end)"),
    ];
    let ready_params = vec!["ready".to_owned()];
    let ready = HookInput { params: &ready_params, ..input(Some(&cn), "+8613800138000", None) };
    let mut sliced = c.benchmark_group("hook_inline_slice_cut_off");
    for (name, body) in slices {
        let source = format!(
            "local S = ('a'):rep(30000)\nfunction on_send(req) if req.params[1] == 'ready' then return end {body} end"
        );
        let hook = ScriptHook::from_source(name, source, settings(), ScriptLimits::default(), OnScriptError::Reject)
            .unwrap_or_else(|e| panic!("{e}"));
        let hostile = input(Some(&cn), "+8613800138000", None);
        sliced.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..iters {
                    // A ready state, as the pool keeps one (built outside the measured time).
                    hook.call(&ready).unwrap();
                    let started = Instant::now();
                    let outcome = hook.call_inline(black_box(&hostile));
                    spent += started.elapsed();
                    assert!(matches!(outcome, SliceOutcome::CutOff(_)), "{name}: {outcome:?}");
                }
                spent
            })
        });
    }
    sliced.finish();

    // The same calls as the gateway makes them: inline first (a fast hook never leaves this thread),
    // otherwise handed to a hook thread and awaited (a current-thread runtime here: the awaiting thread
    // parks until the hook thread answers).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut dispatched = c.benchmark_group("hook_dispatch");
    dispatched.throughput(Throughput::Elements(1));
    for (name, hook, input) in &cases {
        let mut request = Some(SendRequest {
            phone: PhoneInput::Native(input.raw_phone.to_owned()),
            usage: input.usage.to_owned(),
            params: input.params.to_vec(),
            code: input.code.map(str::to_owned),
            ip: None,
            locale: input.locale.map(str::to_owned),
            idempotency_key: None,
            vouched: false,
        });
        let phone = input.phone.cloned();
        dispatched.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    let sent = request.take().unwrap();
                    let (verdict, back) = runtime
                        .block_on(hook.dispatch(
                            sent,
                            phone.clone(),
                            None,
                            "bench",
                            &smsgate::script::LogBudget::default(),
                        ))
                        .unwrap();
                    black_box(verdict.unwrap());
                    request = Some(back);
                }
                started.elapsed()
            })
        });
    }
    dispatched.finish();
}

const YAML: &str = r#"
tenants:
  plain:
    tokens: ["bench-token-plain-0001"]
    default_country: CN
    tencent: &tencent
      accessKeyId: AKIDbench
      accessKeySecret: bench-secret
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - { usageType: SignIn, templateCode: "1110" }
        - { usageType: SignIn_intl, templateCode: "2110" }
        - { usageType: SignIn_en, templateCode: "3110" }
    limits:
      - { name: burst, key: phone, limit: 1, per: 30s }
      - { name: tenant, key: tenant, limit: 50, per: 1s }
  hooked:
    tokens: ["bench-token-hook-0001"]
    default_country: CN
    tencent: *tencent
    limits:
      - { name: burst, key: phone, limit: 1, per: 30s }
      - { name: tenant, key: tenant, limit: 50, per: 1s }
    script: scripts/premium_block.lua
"#;

fn pipeline(c: &mut Criterion) {
    let built = Runtime::from_yaml(YAML, &crate_dir().join("bench.yaml"), &HashMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let clock = SystemClock::shared();
    let services = Services::new(
        Limiter::new(Arc::new(MemoryStore::default()), clock.clone()),
        Providers::new(clock.clone(), Default::default()),
        clock,
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let request = SendRequest {
        phone: PhoneInput::Native("13800138000".into()),
        usage: "SignIn".into(),
        params: vec!["123456".into()],
        code: Some("123456".into()),
        ip: None,
        locale: None,
        idempotency_key: None,
        vouched: false,
    };
    let mut group = c.benchmark_group("pipeline_plan");
    group.throughput(Throughput::Elements(1));
    for tenant in ["plain", "hooked"] {
        let tenant = built.tenant(tenant).unwrap().clone();
        let name = if tenant.script.is_some() { "with hook (premium_block)" } else { "without hook" };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut trail = Trail::default();
                // plan judges quota without consuming it, so every iteration does the same work.
                black_box(runtime.block_on(services.plan(&tenant, black_box(request.clone()), &mut trail)).is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hook_calls, pipeline);
criterion_main!(benches);
