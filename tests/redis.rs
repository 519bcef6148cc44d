//! The redis backend with the real binary: two `smsgate serve` processes sharing one private
//! `redis-server` enforce one combined per-number quota; killing Redis mid-run follows `on_error` (local,
//! allow, deny) without crashing, and both modes switch back by themselves when Redis returns.

use crate::common::redis_server::RedisServer;
use crate::common::STORAGE_KEY;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "redis-test-token-0001";

/// One `smsgate serve` process on 127.0.0.1:0; its JSON log lines are collected; killed on drop.
struct Replica {
    child: Child,
    base: String,
    logs: Arc<Mutex<Vec<String>>>,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(redis_url: &str, on_error: &str, limits: &str) -> Replica {
        Replica::start_with(redis_url, on_error, limits, "    dedupe_window: 0s   # the tests repeat sends on purpose")
    }

    /// With tenant-level lines of its own (`tenant` replaces the default `dedupe_window: 0s`).
    fn start_with(redis_url: &str, on_error: &str, limits: &str, tenant: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            format!(
                r#"
server:
  listen: 127.0.0.1:0
limits_backend:
  kind: redis
  key: {STORAGE_KEY}
  url: {redis_url}
  on_error: {on_error}
  timeout: 200ms
tenants:
  demo:
    tokens: ["{TOKEN}"]
    tencent:
      accessKeyId: AKIDtest
      accessKeySecret: test-secret
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{{ usageType: Generic, templateCode: "1113" }}]
      dry_run: true
{tenant}
    limits:
{limits}
"#
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        // Keeps draining stderr for the whole run, so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if event["message"] == "smsgate listening" {
                        let _ = addr_tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(20)).expect("the replica starts listening");
        Replica { child, base: format!("http://{addr}"), logs, config, _dir: dir }
    }

    async fn send(&self, http: &reqwest::Client, phone: &str) -> (u16, Value) {
        self.send_code(http, phone, "123456").await.0
    }

    /// A send with this code; also returns whether the answer was a replay.
    async fn send_code(&self, http: &reqwest::Client, phone: &str, code: &str) -> ((u16, Value), bool) {
        let response = http
            .post(format!("{}/v1/sms/send", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::json!({"phone": phone, "usage": "SignIn", "code": code}).to_string())
            .send()
            .await
            .expect("the replica answers");
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        ((status, serde_json::from_str(&response.text().await.unwrap()).unwrap()), replayed)
    }

    async fn ready(&self, http: &reqwest::Client) -> (u16, Value) {
        let response = http.get(format!("{}/readyz", self.base)).send().await.expect("the replica answers");
        let status = response.status().as_u16();
        (status, serde_json::from_str(&response.text().await.unwrap()).unwrap())
    }

    /// Polls `/readyz` until the limiter reports `mode` (a deadline, not a sleep, decides the outcome).
    async fn wait_for_mode(&self, http: &reqwest::Client, mode: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, body) = self.ready(http).await;
            if body["limiter"] == mode {
                return;
            }
            assert!(Instant::now() < deadline, "limiter never reported {mode}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Whether a line containing `needle` is logged within 10 s (logs are written by a writer thread).
    async fn logs_within_deadline(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logged(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The limiter's per-(rule, key) TAT keys: not the tenant's admission counter (`…:seq`), give-back ledgers
/// (`…:g`), de-duplication or spend keys.
fn limiter_keys(c: &mut redis::Connection) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("smsgate:*").query(c).unwrap();
    let is_limiter = |k: &String| {
        let parts: Vec<&str> = k.split(':').collect();
        parts.len() == 4 && parts[2].len() == 16 && parts[2].bytes().all(|b| b.is_ascii_hexdigit())
    };
    let (limiter, other): (Vec<String>, Vec<String>) = keys.into_iter().partition(is_limiter);
    for key in other.iter().filter(|k| k.ends_with(":seq")) {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(c).unwrap();
        assert!(ttl > 0, "{key} expires");
    }
    limiter
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_replicas_sharing_redis_enforce_one_quota_per_number() {
    let Some(redis) = RedisServer::start() else { return };
    let limits = "      - { name: hourly, key: phone, limit: 3, per: 1h }";
    // deny: a Redis failure would show as 503, never as a silent local decision.
    let a = Replica::start(&redis.url(), "deny", limits);
    let b = Replica::start(&redis.url(), "deny", limits);
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let replica = if i % 2 == 0 { &a } else { &b };
        statuses.push(replica.send(&http, "+8613800138000").await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429], "one combined quota of 3");
    assert_eq!(b.send(&http, "+8613800138001").await.0, 200, "other numbers have their own quota");
    for replica in [&a, &b] {
        let (status, body) = replica.ready(&http).await;
        assert_eq!((status, body["limiter"].as_str()), (200, Some("redis")), "{body}");
    }
    // explain reads the shared counts (and writes nothing).
    let explain = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["explain", "--tenant", "demo", "--phone", "+8613800138000", "--usage", "SignIn", "--config"])
        .arg(&a.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("policy     hourly: 3 per 3600s: deny"), "{text}");
    let mut c = redis.connection();
    let keys = limiter_keys(&mut c);
    assert_eq!(keys.len(), 2, "one key per (rule, number): {keys:?}");
    for key in &keys {
        assert!(key.starts_with("smsgate:{demo}:"), "{key}");
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut c).unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "{key}: {ttl}");
    }
}

#[tokio::test]
async fn two_replicas_share_de_duplication_and_spend_caps() {
    let Some(redis) = RedisServer::start() else { return };
    let tenant = "    spend_caps: { daily: 3 }";
    let a = Replica::start_with(&redis.url(), "deny", "      []", tenant);
    let b = Replica::start_with(&redis.url(), "deny", "      []", tenant);
    let http = reqwest::Client::new();
    // The same send reaching the other replica is a repeat: the first answer, no second message.
    let ((status, first), replayed) = a.send_code(&http, "+8613800138000", "111111").await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let ((status, again), replayed) = b.send_code(&http, "+8613800138000", "111111").await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!((&again["status"], &again["template_id"]), (&first["status"], &first["template_id"]));
    // One cap of 3 messages shared by both replicas (the repeat used none).
    assert_eq!(b.send_code(&http, "+8613800138001", "1").await.0 .0, 200);
    assert_eq!(a.send_code(&http, "+8613800138002", "1").await.0 .0, 200);
    let ((status, body), _) = b.send_code(&http, "+8613800138003", "1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("spend_cap_reached")), "{body}");
    let ((status, _), _) = a.send_code(&http, "+8613800138004", "1").await;
    assert_eq!(status, 429);
    // No code or number can be read from the keys.
    let mut c = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("smsgate:*").query(&mut c).unwrap();
    assert!(keys.iter().any(|k| k.starts_with("smsgate:{demo}:dedupe:")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("smsgate:{demo}:spend:all:d")), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("111111") && !k.contains("13800138000")), "{keys:?}");
}

/// Kills Redis mid-run and checks what `on_error` promises, then restarts it (empty) on the same port and
/// checks the switch back: the replica's own record (`keys_after` keys: the number sent before the outage, the
/// one sent locally during it if any, and the new one) is in Redis again.
async fn outage(on_error: &str, during: [u16; 3], ready_during: (u16, &str), keys_after: usize) {
    let Some(mut redis) = RedisServer::start() else { return };
    let mut replica = Replica::start(&redis.url(), on_error, "      - { name: hourly, key: phone, limit: 2, per: 1h }");
    let http = reqwest::Client::new();
    assert_eq!(replica.send(&http, "+8613800138000").await.0, 200);
    assert_eq!(replica.ready(&http).await.1["limiter"], "redis");

    redis.kill();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (status, body) = replica.send(&http, "+8613800138001").await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "limiter_unavailable", "{body}");
        }
        seen.push(status);
    }
    assert_eq!(seen, during, "on_error: {on_error}");
    let (status, body) = replica.ready(&http).await;
    assert_eq!((status, body["limiter"].as_str().unwrap()), ready_during, "{body}");
    assert!(replica.logs_within_deadline("redis unavailable, switching mode").await, "the switch is logged");
    assert!(replica.alive());

    redis.restart();
    replica.wait_for_mode(&http, "redis").await;
    assert!(replica.logs_within_deadline("redis reachable again, switching back").await);
    let statuses = [
        replica.send(&http, "+8613800138002").await.0,
        replica.send(&http, "+8613800138002").await.0,
        replica.send(&http, "+8613800138002").await.0,
    ];
    assert_eq!(statuses, [200, 200, 429], "limits are enforced by Redis again");
    let mut c = redis.connection();
    let keys = limiter_keys(&mut c);
    assert_eq!(keys.len(), keys_after, "the state lives in Redis: {keys:?}");
    assert!(replica.alive());
    assert!(!replica.logged("8613800138001"), "numbers are never logged unmasked");
}

#[tokio::test]
async fn redis_down_with_on_error_local_falls_back_to_memory_and_recovers() {
    outage("local", [200, 200, 429], (200, "local-fallback"), 3).await;
}

#[tokio::test]
async fn redis_down_with_on_error_allow_sends_unlimited_and_recovers() {
    outage("allow", [200, 200, 200], (200, "unlimited"), 2).await;
}

#[tokio::test]
async fn redis_down_with_on_error_deny_refuses_with_503_and_recovers() {
    outage("deny", [503, 503, 503], (503, "unavailable"), 2).await;
}

#[tokio::test]
async fn a_stalled_redis_times_out_into_the_fallback_and_recovers() {
    let Some(redis) = RedisServer::start() else { return };
    let mut replica = Replica::start(&redis.url(), "local", "      - { name: hourly, key: phone, limit: 1, per: 1h }");
    let http = reqwest::Client::new();
    assert_eq!(replica.send(&http, "+8613800138000").await.0, 200);
    redis.signal("-STOP");
    // The call times out (200ms in this config) instead of hanging: answered by the local fallback, which
    // remembers what this replica admitted through Redis.
    let (status, body) = replica.send(&http, "+8613800138000").await;
    assert_eq!(status, 429, "the replica's own record has this number: {body}");
    assert_eq!(replica.ready(&http).await.1["limiter"], "local-fallback");
    assert_eq!(replica.send(&http, "+8613800138002").await.0, 200);
    assert_eq!(replica.send(&http, "+8613800138002").await.0, 429);
    redis.signal("-CONT");
    replica.wait_for_mode(&http, "redis").await;
    // The number sent during the stall was written into Redis before it was trusted again.
    let keys = limiter_keys(&mut redis.connection());
    assert_eq!(keys.len(), 2, "the number sent before the stall and the one sent during it: {keys:?}");
    // Redis kept its state through the stall: the number's first send still counts there.
    assert_eq!(replica.send(&http, "+8613800138000").await.0, 429);
    assert_eq!(replica.send(&http, "+8613800138001").await.0, 200);
    assert!(replica.alive());
}

/// Whether Redis answers PING within 100 ms (false while it sleeps in `DEBUG SLEEP`). A raw socket: a client
/// library's connection handshake would itself wait for the sleeping server.
fn answers_quickly(redis: &RedisServer) -> bool {
    use std::io::{Read, Write};
    let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", redis.port)) else { return false };
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut pong = [0u8; 7];
    socket.write_all(b"PING\r\n").is_ok() && socket.read_exact(&mut pong).is_ok() && &pong == b"+PONG\r\n"
}

/// After Redis was restarted empty, slept (`DEBUG SLEEP`) or flushed, numbers judged locally during the
/// outage got a full bucket again: up to 4 SMS per number per hour on a 1/h rule across 7 outage cycles. Each
/// replica now keeps its own record of what it admitted, judges with it during an outage, and writes it into
/// Redis before trusting Redis again. Two replicas, one 1-per-hour rule, three outage cycles and a FLUSHALL:
/// the number is admitted once, plus once by the replica that had never seen it while Redis was down (the
/// documented per-replica allowance during an outage), never once per cycle.
#[tokio::test]
async fn regression_redis_recovery_does_not_hand_out_fresh_quota() {
    let debug = RedisServer::major_version() >= 7;
    let args: &[&str] = if debug { &["--enable-debug-command", "local"] } else { &[] };
    let Some(mut redis) = RedisServer::start_with(args) else { return };
    let limits = "      - { name: hourly, key: phone, limit: 1, per: 1h }";
    let a = Replica::start(&redis.url(), "local", limits);
    let b = Replica::start(&redis.url(), "local", limits);
    let http = reqwest::Client::new();
    let x = "+8613800138000";
    let mut admitted = 0;
    let mut send = |status: u16| {
        admitted += usize::from(status == 200);
        status
    };

    assert_eq!(send(a.send(&http, x).await.0), 200, "the number's one send, through Redis");
    assert_eq!(send(b.send(&http, x).await.0), 429);

    // 1. Redis dies and comes back empty.
    redis.kill();
    assert_eq!(send(a.send(&http, x).await.0), 429, "A remembers what it admitted through Redis");
    assert_eq!(send(b.send(&http, x).await.0), 200, "B never saw the number: its one send during an outage");
    assert_eq!(send(b.send(&http, x).await.0), 429);
    let y = "+8613800138001";
    assert_eq!(send(a.send(&http, y).await.0), 200, "a new number, judged by A alone");
    redis.restart();
    a.wait_for_mode(&http, "redis").await;
    b.wait_for_mode(&http, "redis").await;
    for replica in [&a, &b] {
        assert_eq!(send(replica.send(&http, x).await.0), 429, "the empty Redis got both replicas' records");
    }
    assert_eq!(send(b.send(&http, y).await.0), 429, "B learns of A's decision from Redis");
    let mut c = redis.connection();
    for key in limiter_keys(&mut c) {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
        assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{key}: the TTL of the later TAT, {ttl} ms");
    }

    // 2. Redis stalls (DEBUG SLEEP): every call times out into the local fallback.
    if debug {
        let switches = |r: &Replica| r.logs.lock().unwrap().iter().filter(|l| l.contains("switching mode")).count();
        let (a_before, b_before) = (switches(&a), switches(&b));
        let mut c = redis.connection();
        let sleeper = std::thread::spawn(move || redis::cmd("DEBUG").arg("SLEEP").arg(6).query::<String>(&mut c));
        let deadline = Instant::now() + Duration::from_secs(20);
        while answers_quickly(&redis) {
            assert!(!sleeper.is_finished(), "DEBUG SLEEP failed: {:?}", sleeper.join());
            assert!(Instant::now() < deadline, "DEBUG SLEEP did not start");
        }
        let z = "+8613800138002";
        assert_eq!(send(a.send(&http, x).await.0), 429);
        assert_eq!(send(b.send(&http, x).await.0), 429, "B's record now has the number too");
        assert_eq!(send(a.send(&http, z).await.0), 200, "judged by A alone while Redis sleeps");
        // Logs reach us through the gateway's writer thread: wait for the lines, with a deadline.
        let logged_by = Instant::now() + Duration::from_secs(10);
        while switches(&a) == a_before || switches(&b) == b_before {
            assert!(Instant::now() < logged_by, "both replicas fell back while Redis slept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sleeper.join().unwrap().unwrap();
        a.wait_for_mode(&http, "redis").await;
        b.wait_for_mode(&http, "redis").await;
        assert_eq!(send(b.send(&http, z).await.0), 429, "A wrote its decision into Redis when it woke");
        assert_eq!(send(a.send(&http, x).await.0), 429);
    } else {
        eprintln!("note: redis-server older than 7 (no --enable-debug-command): skipping the DEBUG SLEEP cycle");
    }

    // 3. Dies and comes back empty again.
    redis.kill();
    for replica in [&a, &b] {
        assert_eq!(send(replica.send(&http, x).await.0), 429);
    }
    redis.restart();
    a.wait_for_mode(&http, "redis").await;
    b.wait_for_mode(&http, "redis").await;
    for replica in [&a, &b] {
        assert_eq!(send(replica.send(&http, x).await.0), 429);
    }

    // 4. FLUSHALL while the connections stay up: the gateway cannot see it. Each replica still judges a key
    // Redis lost against its own record, so neither sends the number again...
    let w = "+8613800138003";
    assert_eq!(send(a.send(&http, w).await.0), 200, "a number only A has admitted");
    redis::cmd("FLUSHALL").query::<String>(&mut redis.connection()).unwrap();
    for replica in [&a, &b] {
        assert_eq!(send(replica.send(&http, x).await.0), 429, "the replicas' own records stand in for Redis");
    }
    // ... but what only the other replica admitted is gone from Redis (docs/limits-and-policy.md, "What remains").
    let extra = usize::from(b.send(&http, w).await.0 == 200);
    assert_eq!(extra, 1, "after FLUSHALL, B does not know A's number");
    assert_eq!(a.send(&http, w).await.0, 429);

    let expected = if debug { 5 } else { 4 };
    assert_eq!(admitted, expected, "x twice (once per replica), y once, z once (DEBUG SLEEP), w once");
}

/// The tenant's daily spend counter in Redis (messages), None when Redis holds none.
fn spend_messages(redis: &RedisServer) -> Option<u64> {
    let mut c = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("smsgate:{demo}:spend:all:d*").query(&mut c).unwrap();
    let key = keys.first()?;
    redis::cmd("HGET").arg(key).arg("m").query::<Option<u64>>(&mut c).unwrap()
}

/// Sends to `count` fresh numbers (from `first`) and returns how many were admitted; every refusal must be
/// the spend cap.
async fn spend_sends(replica: &Replica, http: &reqwest::Client, first: u64, count: u64) -> usize {
    let mut admitted = 0;
    for n in first..first + count {
        let (status, body) = replica.send(http, &format!("+86139{n:08}")).await;
        if status == 200 {
            admitted += 1;
        } else {
            assert_eq!((status, body["error"]["code"].as_str()), (429, Some("spend_cap_reached")), "{body}");
        }
    }
    admitted
}

/// A daily cap of 5 sent 15: 5 through Redis, 5 more while Redis was paused (the fallback counted from
/// zero), 5 more after Redis restarted empty (nothing had been written back). The fallback now counts from
/// what Redis admitted, and what it counted is written into Redis before Redis is trusted again.
#[tokio::test]
async fn regression_spend_cap_overshoots_across_a_paused_then_emptied_redis() {
    let Some(mut redis) = RedisServer::start() else { return };
    let tenant = "    dedupe_window: 0s\n    spend_caps: { daily: 5 }";
    let replica = Replica::start_with(&redis.url(), "local", "      []", tenant);
    let http = reqwest::Client::new();
    let mut admitted = spend_sends(&replica, &http, 0, 6).await;
    assert_eq!(admitted, 5, "the cap, through Redis");
    assert_eq!(spend_messages(&redis), Some(5));

    redis.signal("-STOP");
    admitted += spend_sends(&replica, &http, 100, 5).await;
    assert_eq!(replica.ready(&http).await.1["limiter"], "local-fallback");
    assert_eq!(admitted, 5, "the fallback starts from what Redis admitted");

    redis.restart();
    replica.wait_for_mode(&http, "redis").await;
    assert_eq!(spend_messages(&redis), Some(5), "the mirror was written into the empty Redis");
    admitted += spend_sends(&replica, &http, 200, 5).await;
    assert_eq!(admitted, 5, "a cap of 5 sends 5 across the outage");
}

/// The same class by other shapes: what the fallback admits during an outage is written back into a Redis
/// that came back empty (so the cap holds after it), and a counter Redis lost while the gateway never saw an
/// error (FLUSHALL) is restored from the replica's mirror by the next reservation.
#[tokio::test]
async fn spend_decided_during_an_outage_reaches_redis_and_a_flushed_counter_is_restored() {
    let Some(mut redis) = RedisServer::start() else { return };
    let tenant = "    dedupe_window: 0s\n    spend_caps: { daily: 4 }";
    let replica = Replica::start_with(&redis.url(), "local", "      []", tenant);
    let http = reqwest::Client::new();
    let mut admitted = spend_sends(&replica, &http, 0, 2).await;
    redis.kill();
    admitted += spend_sends(&replica, &http, 100, 3).await;
    assert_eq!(admitted, 4, "two through Redis, two by the fallback, then the cap");
    redis.restart();
    replica.wait_for_mode(&http, "redis").await;
    assert_eq!(spend_messages(&redis), Some(4), "the fallback's two reached Redis");
    admitted += spend_sends(&replica, &http, 200, 2).await;
    assert_eq!(admitted, 4);

    redis::cmd("FLUSHALL").query::<String>(&mut redis.connection()).unwrap();
    admitted += spend_sends(&replica, &http, 300, 2).await;
    assert_eq!(admitted, 4, "the mirror stands in for the lost counter");
    assert_eq!(spend_messages(&redis), Some(4), "and is written back into Redis");
}

/// Rate-limit keys held numbers in reversible hex (`smsgate:{t}:…:7d5952f7c48` = 8613912345672) while the
/// de-duplication and feedback keys were HMACs. Every key part a caller chooses (a number, a prefix) is now a
/// keyed hash under `limits_backend.key`, as long as the hex was; the tenant stays the Cluster hash tag.
#[tokio::test]
async fn regression_numbers_sit_in_redis_limit_keys_in_reversible_hex() {
    let Some(redis) = RedisServer::start() else { return };
    let limits = "      - { name: hourly, key: phone, limit: 1, per: 1h }\n      - { name: range, key: { phone_prefix: 7 }, limit: 50, per: 1h }";
    let replica = Replica::start(&redis.url(), "deny", limits);
    let http = reqwest::Client::new();
    assert_eq!(replica.send(&http, "+8613912345672").await.0, 200);
    assert_eq!(replica.send(&http, "+8613912345672").await.0, 429, "the hashed key still counts");
    let mut c = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("smsgate:*").query(&mut c).unwrap();
    let limiter = limiter_keys(&mut c);
    assert_eq!(limiter.len(), 2, "the number's key and its prefix's: {keys:?}");
    for key in &limiter {
        assert!(key.starts_with("smsgate:{demo}:"), "{key}");
        let hashed = key.rsplit(':').next().unwrap();
        assert_eq!(hashed.len(), format!("{:x}", 8_613_912_345_672u64).len(), "{key}: as long as the hex was");
    }
    for shown in [format!("{:x}", 8_613_912_345_672u64), format!("{:x}", 8_613_912u64), "13912345672".into()] {
        assert!(keys.iter().all(|k| !k.contains(&shown)), "{shown} in {keys:?}");
    }
}

/// The documented failover bound with two replicas: while Redis is away each counts on from what Redis last
/// told it (so together they send at most what each had not yet seen the other send, at most R x N in all),
/// and when Redis returns empty both write their counts back, the second on top of the first.
#[tokio::test]
async fn two_replicas_keep_a_spend_cap_within_the_failover_bound() {
    let Some(mut redis) = RedisServer::start() else { return };
    let tenant = "    dedupe_window: 0s\n    spend_caps: { daily: 4 }";
    let a = Replica::start_with(&redis.url(), "local", "      []", tenant);
    let b = Replica::start_with(&redis.url(), "local", "      []", tenant);
    let http = reqwest::Client::new();
    let mut admitted = spend_sends(&a, &http, 0, 2).await;
    admitted += spend_sends(&b, &http, 100, 1).await;
    assert_eq!((admitted, spend_messages(&redis)), (3, Some(3)), "A last saw 2, B 3");
    redis.kill();
    let during = [spend_sends(&a, &http, 200, 4).await, spend_sends(&b, &http, 300, 4).await];
    assert_eq!(during, [2, 1], "each counts on from what Redis last told it");
    admitted += during.iter().sum::<usize>();
    assert!(admitted <= 2 * 4, "at most R x N: {admitted}");
    redis.restart();
    a.wait_for_mode(&http, "redis").await;
    b.wait_for_mode(&http, "redis").await;
    // 6 were sent; from counters alone the replicas' overlap is unknown, so the empty Redis gets at least the
    // larger replica's count (5: A's 2 + 2 then B's 3 + 1 on top of it), all of it when B writes first.
    let restored = spend_messages(&redis).unwrap();
    assert!((5..=6).contains(&restored), "{restored}");
    admitted += spend_sends(&a, &http, 400, 2).await + spend_sends(&b, &http, 500, 2).await;
    assert_eq!(admitted, 6, "nothing more after the recovery: within R x N");
}
