//! Criterion: one single-number send through each front door, in process (no socket, no network): the native
//! route (`Gateway::handle`: bearer token, body, parse, pipeline, dry-run signing, JSON answer) next to the
//! Tencent-compatible API (`Gateway::handle_tencent`: head, TC3 verification, body, SendSms parse, the batch
//! pipeline for one number, dry-run signing, SendStatusSet answer), each also through `Gateway::answer`, as
//! the listeners call it (the request histogram's cost). The tenant runs in dry run with no limits
//! and no de-duplication, so every iteration does the same work.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use smsgate::clock::{ManualClock, SharedClock};
use smsgate::config::Config;
use smsgate::providers::tencent::sign::{sign, Tc3Input};
use smsgate::server::Door;
use smsgate::Gateway;
use std::collections::HashMap;
use std::path::Path;

const NOW: i64 = 1_704_164_645;
const SDK_ID: &str = "AKIDbenchclient01";
const SDK_KEY: &str = "bench-client-key-0123456789";
const NATIVE: &str = r#"{"phone":"+8613800138000","usage":"SignIn","code":"123456"}"#;
const SEND_SMS: &str = r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400006666","TemplateId":"1110","SignName":"腾讯云","TemplateParamSet":["123456"]}"#;

fn config() -> Config {
    let yaml = format!(
        r#"
tenants:
  acme:
    tokens: ["bench-token-0123456789"]
    dedupe_window: 0s
    sdk_clients: [{{ secretId: {SDK_ID}, secretKey: {SDK_KEY} }}]
    tencent:
      accessKeyId: AKIDreal
      accessKeySecret: real-secret-key
      signName: 腾讯云
      sdkAppId: "1400006666"
      region: ap-guangzhou
      dry_run: true
      templates:
        - {{ usageType: SignIn, templateCode: "1110" }}
"#
    );
    Config::from_yaml(&yaml, Path::new("bench.yaml"), &HashMap::<String, String>::new()).expect("bench config")
}

fn native_request() -> http::Request<Full<Bytes>> {
    http::Request::post("/v1/sms/send")
        .header("authorization", "Bearer bench-token-0123456789")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(NATIVE.as_bytes())))
        .unwrap()
}

/// A request as the SDKs send it, signed once (the clock is fixed, so the signature stays valid).
fn tencent_request(authorization: &str) -> http::Request<Full<Bytes>> {
    http::Request::post("/")
        .header("host", "127.0.0.1:8081")
        .header("content-type", "application/json")
        .header("x-tc-action", "SendSms")
        .header("x-tc-version", "2021-01-11")
        .header("x-tc-region", "ap-guangzhou")
        .header("x-tc-timestamp", NOW.to_string())
        .header("authorization", authorization)
        .body(Full::new(Bytes::from_static(SEND_SMS.as_bytes())))
        .unwrap()
}

fn doors(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = runtime.enter();
    let clock: SharedClock = ManualClock::new(NOW);
    let gateway = Gateway::new(config(), clock);
    let authorization = sign(
        SDK_ID,
        SDK_KEY,
        &Tc3Input {
            service: "sms",
            host: "127.0.0.1:8081",
            content_type: "application/json",
            timestamp: NOW,
            body: SEND_SMS.as_bytes(),
        },
    )
    .authorization;

    // Both answer as sent (dry run) before anything is measured.
    let check = |response: http::Response<Full<Bytes>>| {
        let body = runtime.block_on(response.into_body().collect()).unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    };
    let native = check(runtime.block_on(gateway.handle(native_request())));
    assert!(native.contains("\"dry_run\""), "{native}");
    let tencent = check(runtime.block_on(gateway.handle_tencent(tencent_request(&authorization))));
    assert!(tencent.contains("\"Code\":\"Ok\""), "{tencent}");

    c.bench_function("door/native_single_send_dry_run", |b| {
        b.iter(|| runtime.block_on(gateway.handle(black_box(native_request()))))
    });
    c.bench_function("door/tencent_api_single_send_dry_run", |b| {
        b.iter(|| runtime.block_on(gateway.handle_tencent(black_box(tencent_request(&authorization)))))
    });
    // What the listeners call: the same, timed for smsgate_request_duration_seconds. The difference to the
    // two above is what the request histogram costs.
    c.bench_function("door/native_single_send_dry_run_timed", |b| {
        b.iter(|| runtime.block_on(gateway.answer(Door::Main, black_box(native_request()))))
    });
    c.bench_function("door/tencent_api_single_send_dry_run_timed", |b| {
        b.iter(|| runtime.block_on(gateway.answer(Door::Tencent, black_box(tencent_request(&authorization)))))
    });
}

criterion_group!(benches, doors);
criterion_main!(benches);
