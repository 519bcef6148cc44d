//! The feedback loop with the redis backend: two gateways sharing one private `redis-server` share
//! remembered sends, conversions and blocks (and an operator's lift); a send never waits on Redis for the
//! feedback loop; `smsgate explain` shows a shared block.

use crate::common::mock::MockTencent;
use crate::common::redis_server::RedisServer;
use crate::common::*;
use std::time::Duration;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

fn yaml(endpoint: &str, redis_url: &str, timeout: &str) -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:0
  admin_tokens: ["{ADMIN_TOKEN}"]
limits_backend: {{ kind: redis, url: "{redis_url}", timeout: {timeout}, key: {STORAGE_KEY} }}
tenants:
  acme:
    tokens: ["{TOKEN}"]
    dedupe_window: 0s
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{{ usageType: Generic, templateCode: "1113" }}]
      endpoint: {endpoint}
    conversion: {{ window: 1m }}
    protection:
      - {{ name: prefix, key: {{ phone_prefix: 6 }}, window: 1h, min_sends: 3, min_conversion: 0.5, block_for: 30m }}
"#
    )
}

fn real_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn number(i: u32) -> String {
    format!("+86138001380{i:02}")
}

async fn send(gw: &TestGateway, i: u32) -> Answer {
    gw.post("/v1/sms/send", &native(&number(i), "SignIn", "123456")).await
}

async fn verified(gw: &TestGateway, i: u32) -> u16 {
    let body = format!(r#"{{"phone":"{}"}}"#, number(i));
    gw.http
        .post(gw.url("/v1/sms/verified"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn refresh(gw: &TestGateway) {
    let services = gw.gateway.services();
    services.feedback.refresh(&gw.gateway.config(), &services.limiter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_conversions_and_blocks() {
    let Some(redis) = RedisServer::start() else { return };
    let mock = MockTencent::start(SECRET_KEY).await;
    let config = yaml(&mock.endpoint(), &redis.url(), "2s");
    // Both clocks start at the real time (and move together), so the real binary's explain sees the block.
    let now = real_now();
    let a = TestGateway::start_at(compile(&config), now).await;
    let b = TestGateway::start_at(compile(&config), now).await;

    for i in 0..3 {
        assert_eq!(send(&a, i).await.status, 200);
    }
    a.gateway.services().feedback.settled().await;
    // B converts a send A made: remembered sends are shared.
    assert_eq!(verified(&b, 0).await, 204);
    assert_eq!(verified(&b, 9).await, 404);

    // Past the conversion window and a Redis step: one of three converted, below half. The next send,
    // recorded and judged in Redis after its answer, trips the prefix there; B refuses at once.
    for gw in [&a, &b] {
        gw.clock.advance(Duration::from_secs(120));
    }
    assert_eq!(send(&b, 3).await.status, 200);
    b.gateway.services().feedback.settled().await;
    send(&b, 4).await.assert_error(403, "suspected_pumping");
    // A learns the block at its next refresh (every second in the background; run here directly).
    refresh(&a).await;
    send(&a, 5).await.assert_error(403, "suspected_pumping");
    assert_eq!(mock.seen_action("SendSms").len(), 4);

    // The real binary's explain reads the shared block (and writes nothing).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["explain", "--tenant", "acme", "--phone", &number(7), "--usage", "SignIn", "--config"])
        .arg(&path)
        .env("ACME_SECRET", SECRET_KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("protection prefix: key +861380: BLOCKED until"), "{text}");
    assert!(text.contains("403 suspected_pumping"), "{text}");

    // An operator lifts it through A; B follows at its next refresh.
    let lifted =
        a.http.delete(a.url("/admin/v1/tenants/acme/protection/prefix/+861380")).bearer_auth(ADMIN_TOKEN).send().await;
    assert_eq!(lifted.unwrap().status(), 204);
    assert_eq!(send(&a, 6).await.status, 200);
    refresh(&b).await;
    assert_eq!(send(&b, 7).await.status, 200);
    let listed = b.http.get(b.url("/admin/v1/tenants/acme/protection")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed.text().await.unwrap()).unwrap();
    assert_eq!(listed["blocks"], serde_json::json!([]));

    // Redis holds HMACs of numbers, never the numbers.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis.connection()).unwrap();
    assert!(keys.iter().all(|k| k.starts_with("smsgate:{acme}:")), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("13800138")), "{keys:?}");
    let mut dump = String::new();
    for key in keys.iter().filter(|k| k.contains(":fb:n:")) {
        let items: Vec<String> = redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(&mut redis.connection()).unwrap();
        dump.push_str(&items.join("\n"));
    }
    assert!(!dump.is_empty() && !dump.contains("13800138"), "{dump}");
}

/// With Redis frozen, a send still gets its answer: the feedback loop's record of it is still waiting on
/// Redis when the answer arrives (the tenant has no limits, spend caps or de-duplication, the other users
/// of Redis on the send path), then lands when Redis thaws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_send_never_waits_on_redis_for_the_feedback_loop() {
    let Some(redis) = RedisServer::start() else { return };
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&yaml(&mock.endpoint(), &redis.url(), "10s"))).await;
    assert_eq!(send(&gw, 0).await.status, 200);
    gw.gateway.services().feedback.settled().await;

    redis.signal("-STOP");
    assert_eq!(send(&gw, 1).await.status, 200);
    assert_eq!(gw.gateway.services().feedback.pending(), 1, "the record is still waiting on Redis");
    redis.signal("-CONT");
    gw.gateway.services().feedback.settled().await;
    assert_eq!(verified(&gw, 1).await, 204, "and it landed in Redis");
    assert_eq!(gw.gateway.services().feedback.remembered(), 0, "in Redis, not in this process's memory");
}
