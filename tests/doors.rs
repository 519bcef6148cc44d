//! What an anonymous caller costs at the doors whose signature covers the body (Supabase's hook, the
//! Tencent-compatible API, Logto's webhook), through raw sockets so the bytes arrive as an attacker sends
//! them: its bodies are read within a budget of their own (per door, per source address, bytes for all
//! doors), never from a tenant's reading slots; a request without its signature header is answered unread;
//! and one anonymous call costs at most one HMAC per key of one tenant, whatever the number of tenants.

use crate::common::mock::MockTencent;
use crate::common::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOOK_SECRET: &str = "v1,whsec_c21zZ2F0ZS1zdXBhYmFzZS10ZXN0LWtleS0x";
const SDK_ID: &str = "AKIDsdkclient0001";
const SDK_KEY: &str = "sdk-client-key-0123456789";
const LOGTO_KEY: &str = "logto-signing-key-acme-0123456789";

/// acme with the Supabase hook, an SDK client and a Logto key; `max_body_readers: 2` so that two held bodies
/// fill the tenant's own slots; `server_extra` lines at server level.
fn yaml(endpoint: &str, server_extra: &str) -> String {
    let tenant = format!(
        "{PHONE_LIMITS}\n    supabase: {{ secret: \"{HOOK_SECRET}\" }}\n    sdk_clients: [{{ secretId: {SDK_ID}, secretKey: {SDK_KEY} }}]\n    conversion: {{ logto_webhook_secret: {LOGTO_KEY} }}"
    );
    config_yaml(endpoint, &tenant, "").replace(
        "  max_body_bytes: 1024",
        &format!("  max_body_bytes: 1024\n  body_timeout: 30s\n  max_body_readers: 2\n{server_extra}"),
    )
}

/// A connection to `to` from the loopback address `from` (127.0.0.0/8 is all local on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Everything the server writes until it closes the connection, or what it wrote within 5 s.
async fn answer_of(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn hook_payload(phone: &str) -> String {
    serde_json::json!({"user": {"id": "u1", "phone": phone}, "sms": {"otp": "123456"}}).to_string()
}

/// A Supabase hook request head: fresh timestamp, `signature` (a real one or any), `length` declared.
fn hook_head(signature: &str, length: usize) -> String {
    format!(
        "POST /v1/supabase/sms HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nwebhook-id: msg_1\r\n\
         webhook-timestamp: {START_UNIX}\r\nwebhook-signature: {signature}\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// The Standard Webhooks signature of `body` under the hook's secret, as Supabase computes it.
fn hook_signature(body: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(HOOK_SECRET.trim_start_matches("v1,whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("msg_1.{START_UNIX}.{body}").as_bytes());
    format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
}

const ANY_SIGNATURE: &str = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Opens `n` anonymous connections from `from` that send a head and part of a body, then hold.
async fn hold_hook_bodies(gw: &TestGateway, from: [u8; 4], n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = connect_from(from, gw.addr).await;
        s.write_all(format!("{}{{\"sms\":", hook_head(ANY_SIGNATURE, 200)).as_bytes()).await.unwrap();
        held.push(s);
    }
    held
}

/// Sends anonymous hook requests with a whole body from `from` until one is refused `503` for want of a
/// reading slot: then every held body has been taken by the server (a wait for the server, not for time).
async fn until_busy(gw: &TestGateway, from: [u8; 4]) -> String {
    let body = hook_payload("8613800138000");
    for _ in 0..1000 {
        let mut s = connect_from(from, gw.addr).await;
        s.write_all(format!("{}{body}", hook_head(ANY_SIGNATURE, body.len())).as_bytes()).await.unwrap();
        let answer = answer_of(&mut s).await;
        if status_of(&answer) == 503 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the held bodies never filled a budget");
}

/// Issue 19, item 1: 256 anonymous connections holding Supabase hook bodies made the tenant's own
/// authenticated native sends answer 503 server_busy: the hook read bodies into the tenant's slots before
/// the signature was checked.
#[tokio::test]
async fn regression_anonymous_hook_bodies_took_the_tenants_native_slots() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&yaml(&mock.endpoint(), ""))).await;
    let _held = hold_hook_bodies(&gw, [127, 0, 0, 1], 8).await;
    let busy = until_busy(&gw, [127, 0, 0, 1]).await;
    assert!(busy.to_ascii_lowercase().contains("connection: close"), "{busy}");

    // The tenant's authenticated sends keep their slots.
    let sent = gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "111111")).await;
    assert_eq!(sent.status, 200, "{:#}", sent.json);
    // A signed hook from another address (Supabase's) still passes: the bound is per source address.
    let body = hook_payload("8613800138002");
    let mut supabase = connect_from([127, 0, 0, 2], gw.addr).await;
    supabase.write_all(format!("{}{body}", hook_head(&hook_signature(&body), body.len())).as_bytes()).await.unwrap();
    let answer = answer_of(&mut supabase).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.ends_with("{}"), "sent: {answer}");
    assert_eq!(mock.seen().len(), 2, "the native send and the signed hook; nothing anonymous");
}

/// The Tencent-compatible API door: a request head for a SecretId, with any signature.
fn tc3_head(secret_id: &str, length: usize, now: i64) -> String {
    let date = smsgate::providers::tencent::sign::utc_date(now);
    format!(
        "POST / HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json; charset=utf-8\r\nX-TC-Action: SendSms\r\n\
         X-TC-Version: 2021-01-11\r\nX-TC-Timestamp: {now}\r\nX-TC-Region: ap-guangzhou\r\nAuthorization: \
         TC3-HMAC-SHA256 Credential={secret_id}/{date}/sms/tc3_request, SignedHeaders=content-type;host, \
         Signature={}\r\nContent-Length: {length}\r\n\r\n",
        "0".repeat(64)
    )
}

/// Item 1 by another door: anonymous SDK calls naming the tenant's SecretId with any signature, held
/// mid-body, took the tenant's slots too (its native sends got 503); now they take the door's own budget.
#[tokio::test]
async fn regression_anonymous_sdk_bodies_took_the_tenants_native_slots() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&yaml(&mock.endpoint(), "")), START_UNIX).await;
    let door = gw.tencent_addr.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = connect_from([127, 0, 0, 1], door).await;
        s.write_all(format!("{}{{\"PhoneNumberSet\":", tc3_head(SDK_ID, 300, START_UNIX)).as_bytes()).await.unwrap();
        held.push(s);
    }
    // Wait until the server holds them all: a ninth is refused for want of a slot.
    let mut refused = String::new();
    for _ in 0..1000 {
        let mut s = connect_from([127, 0, 0, 1], door).await;
        s.write_all(format!("{}{{}}", tc3_head(SDK_ID, 2, START_UNIX)).as_bytes()).await.unwrap();
        refused = answer_of(&mut s).await;
        if refused.contains("RequestLimitExceeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused.contains("RequestLimitExceeded"), "{refused}");
    let sent = gw.post("/v1/sms/send", &native("+8613800138001", "SignIn", "111111")).await;
    assert_eq!(sent.status, 200, "{:#}", sent.json);
    assert_eq!(mock.seen().len(), 1);
}

/// Asks the Tencent door from `from` with a declared body of `length` bytes (sent whole when `send`, else
/// none) until whether it is refused `RequestLimitExceeded` is `busy_wanted` (a wait for the server to take
/// or give back what other connections hold, not for time); the last answer.
async fn sdk_answer(gw: &TestGateway, from: [u8; 4], length: usize, send: bool, busy_wanted: bool) -> String {
    let mut answer = String::new();
    for _ in 0..1000 {
        let mut s = connect_from(from, gw.tencent_addr.unwrap()).await;
        let body = if send { format!("{{\"x\":\"{}\"}}", "a".repeat(length - 8)) } else { String::new() };
        s.write_all(format!("{}{body}", tc3_head(SDK_ID, length, START_UNIX)).as_bytes()).await.unwrap();
        answer = answer_of(&mut s).await;
        if answer.contains("RequestLimitExceeded") == busy_wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answer
}

/// Bodies read before verification share a small byte budget, whatever `max_body_bytes` (1 MiB here): one
/// address may hold an eighth of it, so eight addresses holding their share fill it, and then a ninth
/// address's small body is refused unread (another door, the same budget); once they end, bytes come back.
#[tokio::test]
async fn unverified_bodies_share_one_byte_budget_whatever_max_body_bytes() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let config = yaml(&mock.endpoint(), "  max_unverified_bytes: 1048576")
        .replace("  max_body_bytes: 1024", "  max_body_bytes: 1048576");
    let gw = TestGateway::start_doors(compile(&config), START_UNIX).await;
    // One address alone cannot take more than its eighth (128 KiB), even with the budget free.
    let alone = sdk_answer(&gw, [127, 0, 0, 9], 200 << 10, false, true).await;
    assert!(alone.contains("RequestLimitExceeded"), "{alone}");
    assert!(alone.to_ascii_lowercase().contains("connection: close"), "{alone}");
    let mut held = Vec::new();
    for i in 0..8u8 {
        let mut s = connect_from([127, 0, 0, 10 + i], gw.addr).await;
        s.write_all(format!("{}{{\"sms\":", hook_head(ANY_SIGNATURE, 128 << 10)).as_bytes()).await.unwrap();
        held.push(s);
    }
    let refused = sdk_answer(&gw, [127, 0, 0, 20], 2048, false, true).await;
    assert!(refused.contains("RequestLimitExceeded"), "{refused}");
    drop(held);
    // Their bytes are back: a 100 KiB body is read whole and refused for its signature, not the budget.
    let answer = sdk_answer(&gw, [127, 0, 0, 20], 100 << 10, true, false).await;
    assert!(answer.contains("AuthFailure.SignatureFailure"), "{answer}");
    assert!(mock.seen().is_empty());
}

/// A request without its signature header is answered before its body is read: the head alone, with a
/// declared body that never comes, gets its answer at once (each door).
#[tokio::test]
async fn requests_without_their_signature_header_are_answered_unread() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start_doors(compile(&yaml(&mock.endpoint(), "")), START_UNIX).await;
    let heads = [
        (gw.addr, "POST /v1/logto/webhook/acme HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", 401),
        (gw.addr, "POST /v1/logto/webhook/acme HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nlogto-signature-sha-256: abc\r\nContent-Length: 100\r\n\r\n", 401),
        (gw.addr, "POST /v1/logto/webhook HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", 401),
        (gw.addr, "POST /v1/supabase/sms HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nwebhook-id: m\r\nContent-Length: 100\r\n\r\n", 401),
    ];
    for (addr, head, status) in heads {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let answer = answer_of(&mut s).await;
        assert_eq!(status_of(&answer), status, "{head}\n{answer}");
        assert!(answer.contains("invalid_signature"), "{answer}");
    }
    // The doors with a token or a path secret: without it, answered from the head too.
    for (path, code) in [
        ("/v1/sms/send", "unauthorized"),
        ("/v1/logto/sms", "unauthorized"),
        ("/v1/sms/verified", "unauthorized"),
        ("/v1/tencent/status/not-a-secret-of-anyone", "not_found"),
    ] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let answer = answer_of(&mut s).await;
        assert!(answer.contains(code), "{path}: {answer}");
    }
    let mut s = TcpStream::connect(gw.tencent_addr.unwrap()).await.unwrap();
    let head = tc3_head(SDK_ID, 100, START_UNIX);
    let unsigned: String = head.split_inclusive("\r\n").filter(|l| !l.starts_with("Authorization")).collect();
    s.write_all(unsigned.as_bytes()).await.unwrap();
    let answer = answer_of(&mut s).await;
    assert!(answer.contains("AuthFailure.InvalidAuthorization"), "{answer}");
    assert!(mock.seen().is_empty());
}

/// `tenants` tenants, each with a Logto key and a Supabase hook; the shared Logto route as given.
fn many_tenants(endpoint: &str, tenants: usize, shared: bool) -> String {
    let mut yaml = format!("server:\n  listen: 127.0.0.1:0\n  shared_logto_webhook: {shared}\ntenants:\n");
    let engine = base64::engine::general_purpose::STANDARD;
    for i in 0..tenants {
        let hook_secret = format!("v1,whsec_{}", engine.encode(format!("smsgate-supabase-key-{i:04}")));
        yaml.push_str(&format!(
            "  t{i}:\n    tokens: [\"tenant-token-{i:04}-abcdef\"]\n    tencent:\n      accessKeyId: {SECRET_ID}\n      \
             accessKeySecret: ${{ACME_SECRET}}\n      sdkAppId: \"1400006666\"\n      region: ap-guangzhou\n      \
             templates: [{{ usageType: Generic, templateCode: \"1113\" }}]\n      endpoint: {endpoint}\n    \
             conversion: {{ logto_webhook_secret: logto-signing-key-{i:04}-0123456789 }}\n    \
             supabase: {{ secret: \"{hook_secret}\" }}\n"
        ));
    }
    yaml
}

fn signature_checks(gw: &TestGateway, door: &str) -> u64 {
    let metrics = gw.gateway.metrics().render();
    let series = format!("smsgate_signature_checks_total{{door=\"{door}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).map_or(0, |v| v.trim().parse().unwrap())
}

fn logto_hmac(key: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Issue 19, item 2: any 64-hex signature made smsgate compute an HMAC of the body under every tenant's Logto
/// key (25 ms of CPU per anonymous request with 2,000 tenants). Now the tenant is found first, from the
/// path: one HMAC, and the tenant-less route is off once more than a few tenants have a key.
#[tokio::test]
async fn regression_anonymous_logto_webhook_cost_one_hmac_per_tenant() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&many_tenants(&mock.endpoint(), 200, false))).await;
    let body = r#"{"event":"PostSignIn","user":{"primaryPhone":"8613800138000"}}"#;
    let forged = "ab".repeat(32);
    for _ in 0..10 {
        let (status, _) = post(&gw, "/v1/logto/webhook/t150", body, &forged).await;
        assert_eq!(status, 401);
    }
    assert_eq!(signature_checks(&gw, "logto_webhook"), 10, "one HMAC per anonymous call, not 200");
    // The tenant-less route is off here: 404 unread, no HMAC.
    let (status, _) = post(&gw, "/v1/logto/webhook", body, &forged).await;
    assert_eq!(status, 404);
    // An unknown tenant in the path: 404, no HMAC.
    let (status, _) = post(&gw, "/v1/logto/webhook/nobody", body, &forged).await;
    assert_eq!(status, 404);
    assert_eq!(signature_checks(&gw, "logto_webhook"), 10);
    // Signed by the named tenant's key: verified (no recent send: 204 and ignored).
    let (status, text) =
        post(&gw, "/v1/logto/webhook/t150", body, &logto_hmac("logto-signing-key-0150-0123456789", body)).await;
    assert_eq!(status, 204, "{text}");
    // Signed by another tenant's key: refused, one HMAC.
    let (status, _) =
        post(&gw, "/v1/logto/webhook/t150", body, &logto_hmac("logto-signing-key-0151-0123456789", body)).await;
    assert_eq!(status, 401);
    assert_eq!(signature_checks(&gw, "logto_webhook"), 12);
}

async fn post(gw: &TestGateway, path: &str, body: &str, signature: &str) -> (u16, String) {
    let response = gw
        .http
        .post(gw.url(path))
        .header("content-type", "application/json")
        .header("logto-signature-sha-256", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Item 2 by another shape: the tenant-less route, kept while at most 8 tenants have a key, costs at most 8
/// HMACs; a config with more refuses to compile with the way out; and the Supabase door with 200 tenants
/// costs one HMAC per key of the one tenant named in the path.
#[tokio::test]
async fn anonymous_cost_does_not_grow_with_tenants_on_the_shared_route_or_the_hook() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let errors = smsgate::config::Config::from_yaml(
        &many_tenants(&mock.endpoint(), 9, true),
        std::path::Path::new("test.yaml"),
        &env(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("t8.conversion.logto_webhook_secret") && errors.contains("/v1/logto/webhook/<tenant>"),
        "{errors}"
    );

    let gw = TestGateway::start(compile(&many_tenants(&mock.endpoint(), 8, true))).await;
    let body = r#"{"event":"PostSignIn","user":{"primaryPhone":"8613800138000"}}"#;
    let (status, _) = post(&gw, "/v1/logto/webhook", body, &"ab".repeat(32)).await;
    assert_eq!(status, 401);
    assert_eq!(signature_checks(&gw, "logto_webhook"), 8);
    let (status, _) =
        post(&gw, "/v1/logto/webhook", body, &logto_hmac("logto-signing-key-0003-0123456789", body)).await;
    assert_eq!(status, 204, "the shared route still serves existing configs");

    let gw = TestGateway::start(compile(&many_tenants(&mock.endpoint(), 200, false))).await;
    let body = hook_payload("8613800138000");
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let head = hook_head(ANY_SIGNATURE, body.len()).replace("/v1/supabase/sms ", "/v1/supabase/sms/t7 ");
    s.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    assert_eq!(status_of(&answer_of(&mut s).await), 401);
    assert_eq!(signature_checks(&gw, "supabase"), 1);
    assert!(mock.seen().is_empty());
}
