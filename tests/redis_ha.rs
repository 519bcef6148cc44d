//! The redis backend on production-shaped Redis: a 6-node Cluster (two gateways share one quota per number
//! across tenants spread over the slots, through a slot moved mid-load and a primary SIGKILLed mid-load), a
//! Sentinel set (the primary SIGKILLed mid-load, the gateways follow the promoted replica) and TLS
//! (`rediss://` with a CA generated here). Gateways are in-process servers on real sockets with a frozen
//! clock, so every admitted count is exact; `on_error: deny` makes any Redis failure a visible 503, never a
//! silent local decision. The time-out (1 s) is generous so that a slow CI machine shows no spurious
//! time-outs; failures during a failover come from refused connections, not from it.

use crate::common::redis_server::{wait_until, RedisCluster, RedisSentinel, RedisServer};
use crate::common::{compile, TestGateway, STORAGE_KEY};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: u32 = 12;
const TENANTS: usize = 12;

fn token(tenant: usize) -> String {
    format!("token-for-tenant-{tenant:04}")
}

/// Tenants `t0`..`t11`, each limiting a number to `LIMIT` an hour, on the given `limits_backend` body.
fn config(backend: &str) -> smsgate::config::Config {
    compile(&yaml(backend))
}

fn yaml(backend: &str) -> String {
    let mut yaml = format!(
        "limits_backend:\n  kind: redis\n  key: {STORAGE_KEY}\n  on_error: deny\n  timeout: 1s\n{backend}tenants:\n"
    );
    for t in 0..TENANTS {
        yaml.push_str(&format!(
            r#"  t{t}:
    tokens: ["{token}"]
    dedupe_window: 0s
    tencent: {{ accessKeyId: AKIDtest, accessKeySecret: test-secret-{t}, sdkAppId: "1400006666", region: ap-guangzhou,
               templates: [{{ usageType: Generic, templateCode: "1113" }}], dry_run: true }}
    limits:
      - {{ name: hourly, key: phone, limit: {LIMIT}, per: 1h }}
"#,
            token = token(t)
        ));
    }
    yaml
}

/// `smsgate explain` (the real binary) for tenant `t`'s flooded number: it reads the live shared counts.
/// One run is one connection attempt (a failure makes it answer as `on_error` does: 503 with `deny`), so it
/// is polled until it reads Redis, within a deadline: right after a Sentinel failover a first attempt was
/// seen to fail now and then (left to the lead: explain does not log why).
fn explain(backend: &str, t: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml(backend).replace("timeout: 1s", "timeout: 3s")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsgate"))
            .args([
                "explain",
                "--tenant",
                &format!("t{t}"),
                "--phone",
                "+8613800138000",
                "--usage",
                "SignIn",
                "--config",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("limiter_unavailable") || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A gateway whose frozen clock reads the wall clock's now, so `smsgate explain` (on the real clock) reads
/// the same live counts seconds later.
async fn start(config: smsgate::config::Config) -> TestGateway {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    TestGateway::start_at(config, now).await
}

fn list(urls: &[String]) -> String {
    urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ")
}

/// Sends one request for `tenant`'s flooded number; the status.
async fn send(gateway: &TestGateway, tenant: usize) -> u16 {
    let body = crate::common::native("+8613800138000", "SignIn", "123456");
    gateway.post_as("/v1/sms/send", &body, Some(&token(tenant))).await.status
}

async fn mode(gateway: &TestGateway) -> String {
    let response = gateway.http.get(gateway.url("/readyz")).send().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    body["limiter"].as_str().unwrap_or_default().to_owned()
}

async fn gauge(gateway: &TestGateway) -> String {
    let text = gateway.http.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("smsgate_limiter_mode{") && l.ends_with(" 1"))
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .join(",")
}

async fn wait_for_mode(gateway: &TestGateway, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while mode(gateway).await != want {
        assert!(Instant::now() < deadline, "the limiter never reported {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The load: rounds in which both gateways send for every tenant at once; counts each tenant's 200s.
struct Load {
    admitted: Vec<u32>,
    unavailable: u32,
    sent: Arc<AtomicUsize>,
}

impl Load {
    fn new() -> Load {
        Load { admitted: vec![0; TENANTS], unavailable: 0, sent: Arc::new(AtomicUsize::new(0)) }
    }

    async fn round(&mut self, a: &TestGateway, b: &TestGateway) {
        let mut tasks = Vec::new();
        for t in 0..TENANTS {
            tasks.push(async move { (t, send(a, t).await, send(b, t).await) });
        }
        let mut all = Vec::new();
        for task in tasks {
            all.push(task);
        }
        for (t, x, y) in futures_join(all).await {
            for status in [x, y] {
                match status {
                    200 => self.admitted[t] += 1,
                    429 => {}
                    503 => self.unavailable += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
        }
        self.sent.fetch_add(2 * TENANTS, Ordering::SeqCst);
    }

    /// Rounds while a failover is under way (until `done` is finished): each answered within 5 s.
    async fn through_failover<T>(&mut self, a: &TestGateway, b: &TestGateway, done: &tokio::task::JoinHandle<T>) {
        while !done.is_finished() {
            let started = Instant::now();
            self.round(a, b).await;
            assert!(started.elapsed() < Duration::from_secs(5), "a round took {:?}", started.elapsed());
        }
    }

    /// After a failover: both gateways back in `redis` mode, then rounds until every tenant is within the
    /// bound of its limit (or enough was sent to get there), and two more to show nothing more is admitted.
    async fn until_the_limit(&mut self, a: &TestGateway, b: &TestGateway) {
        for gateway in [a, b] {
            wait_for_mode(gateway, "redis").await;
        }
        while self.admitted.iter().any(|&n| n < LIMIT - 2) && self.sent.load(Ordering::SeqCst) < 2 * TENANTS * 60 {
            self.round(a, b).await;
            for gateway in [a, b] {
                wait_for_mode(gateway, "redis").await;
            }
        }
        for _ in 0..2 {
            self.round(a, b).await;
        }
    }
}

/// Runs the futures concurrently (on this task) and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).map(Some).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in pinned.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        out[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.unwrap()).collect()
}

/// Tenant keys land in several slots owned by every primary.
fn spread(cluster: &RedisCluster) -> HashMap<usize, Vec<usize>> {
    let mut by_owner: HashMap<usize, Vec<usize>> = HashMap::new();
    for t in 0..TENANTS {
        by_owner.entry(cluster.owner(cluster.slot(&format!("smsgate:{{t{t}}}:seq")))).or_default().push(t);
    }
    by_owner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_gateways_share_quotas_through_a_slot_move() {
    let Some(cluster) = RedisCluster::start() else { return };
    let cluster = Arc::new(cluster);
    let by_owner = spread(&cluster);
    assert_eq!(by_owner.len(), 3, "tenants spread over the 3 primaries: {by_owner:?}");
    // Two seeds: the rest of the topology is discovered.
    let backend = format!("  cluster: [{}]\n", list(&cluster.seeds()[..2]));
    let a = start(config(&backend)).await;
    let b = start(config(&backend)).await;
    let mut load = Load::new();
    for _ in 0..3 {
        load.round(&a, &b).await;
    }
    assert_eq!(load.unavailable, 0);
    assert_eq!((mode(&a).await, mode(&b).await), ("redis".into(), "redis".into()));
    assert!(gauge(&a).await.contains("mode=\"redis\""), "{}", gauge(&a).await);

    // Move tenant t0's slot to another primary while both gateways keep sending.
    let slot = cluster.slot("smsgate:{t0}:seq");
    let from = cluster.owner(slot);
    let to = *by_owner.keys().find(|&&o| o != from).unwrap();
    let sent = load.sent.clone();
    let mover = cluster.clone();
    let moving = tokio::task::spawn_blocking(move || {
        mover.move_slot(slot, to, || {
            // Each step waits for load to pass through the half-moved slot (progress, not time).
            let seen = sent.load(Ordering::SeqCst);
            wait_until("load during the move", Duration::from_secs(20), || sent.load(Ordering::SeqCst) > seen);
        })
    });
    while !moving.is_finished() {
        load.round(&a, &b).await;
    }
    moving.await.unwrap();
    assert_eq!(cluster.owner(slot), to);
    for gateway in [&a, &b] {
        wait_for_mode(gateway, "redis").await;
    }
    while load.admitted.iter().any(|&n| n < LIMIT) && load.sent.load(Ordering::SeqCst) < 2 * TENANTS * 40 {
        load.round(&a, &b).await;
        // A round refused during the move (TRYAGAIN beyond the retries) switches to deny until the probe
        // finds Redis again.
        for gateway in [&a, &b] {
            wait_for_mode(gateway, "redis").await;
        }
    }
    // Refusals during the move prove the script did not run: every number gets exactly its quota.
    assert_eq!(load.admitted, vec![LIMIT; TENANTS], "503s during the move: {}", load.unavailable);
    let one_more: Vec<u16> = futures_join((0..TENANTS).map(|t| send(&a, t)).collect()).await;
    assert!(one_more.iter().all(|&s| s == 429), "{one_more:?}");
    for t in [0, 7] {
        let text = explain(&backend, t);
        assert!(text.contains(&format!("policy     hourly: {LIMIT} per 3600s: deny")), "{text}");
    }
    // The moved tenant's keys live on the new primary now.
    let keys: Vec<String> = cluster.nodes[to].query(&["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "10"]).unwrap();
    assert!(keys.iter().any(|k| k.starts_with("smsgate:{t0}:")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_killed_mid_load_fails_over_within_the_bound() {
    let Some(mut cluster) = RedisCluster::start() else { return };
    let by_owner = spread(&cluster);
    let backend = format!("  cluster: [{}]\n", list(&cluster.seeds()));
    let a = start(config(&backend)).await;
    let b = start(config(&backend)).await;
    let mut load = Load::new();
    for _ in 0..3 {
        load.round(&a, &b).await;
    }
    let slot = cluster.slot("smsgate:{t0}:seq");
    let victim = cluster.owner(slot);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.kill_and_wait_failover(victim, slot);
        cluster
    });
    // Load goes on during the failover: refused (deny), never hung past the time-out.
    load.through_failover(&a, &b, &cluster).await;
    let cluster = cluster.await.unwrap();
    assert_eq!(cluster.nodes.iter().filter(|n| n.is_running()).count(), 5);
    assert!(load.unavailable > 0, "the primary's death was seen");
    for gateway in [&a, &b] {
        wait_for_mode(gateway, "redis").await;
        assert!(gauge(gateway).await.contains("mode=\"redis\""), "{}", gauge(gateway).await);
    }
    load.until_the_limit(&a, &b).await;
    // Tenants on the surviving primaries: exact. On the failed-over shard: a decision in flight when the
    // primary died may have been applied (and replicated) without an answer (counted, refused), or answered
    // without reaching the replica (lost): at most one either way per gateway in flight, so ±2.
    let killed: &Vec<usize> = &by_owner[&victim];
    for t in 0..TENANTS {
        if killed.contains(&t) {
            assert!(load.admitted[t].abs_diff(LIMIT) <= 2, "tenant t{t}: {} admitted", load.admitted[t]);
        } else {
            assert_eq!(load.admitted[t], LIMIT, "tenant t{t} on a surviving primary");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_primary_killed_mid_load_gateways_follow_the_promoted_replica() {
    let Some(mut set) = RedisSentinel::start() else { return };
    let backend = format!("  sentinel: {{ master: {}, nodes: [{}] }}\n", RedisSentinel::MASTER, list(&set.urls()));
    let a = start(config(&backend)).await;
    let b = start(config(&backend)).await;
    let mut load = Load::new();
    for _ in 0..3 {
        load.round(&a, &b).await;
    }
    assert_eq!(load.unavailable, 0);
    let replica_port = set.replica.port;
    set.primary.kill();
    let set = Arc::new(set);
    let watcher = set.clone();
    let promoted = tokio::task::spawn_blocking(move || {
        wait_until("the sentinels to promote the replica", Duration::from_secs(30), || {
            watcher.primary_port() == Some(replica_port)
        })
    });
    load.through_failover(&a, &b, &promoted).await;
    promoted.await.unwrap();
    assert!(load.unavailable > 0, "the primary's death was seen");
    load.until_the_limit(&a, &b).await;
    for t in 0..TENANTS {
        assert!(load.admitted[t].abs_diff(LIMIT) <= 2, "tenant t{t}: {} admitted", load.admitted[t]);
    }
    // explain reads the live count: spent, or within the bound of it. It connects once, through the first
    // sentinel that answers: wait until every sentinel names the promoted replica.
    wait_until("every sentinel to name the promoted replica", Duration::from_secs(30), || {
        set.sentinels.iter().all(|s| {
            s.query::<(String, u16)>(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", RedisSentinel::MASTER])
                .is_ok_and(|(_, port)| port == replica_port)
        })
    });
    let text = explain(&backend, 4);
    let policy =
        text.lines().find(|l| l.starts_with("policy     hourly: 12 per 3600s: ")).unwrap_or_else(|| panic!("{text}"));
    let left = policy.split(", ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<u32>().ok());
    assert!(policy.ends_with(": deny") || left.is_some_and(|n| n < 2), "{policy}");
    // The promoted replica holds the state now.
    let keys: Vec<String> = set.replica.query(&["KEYS", "smsgate:*"]).unwrap();
    assert!(keys.iter().any(|k| k.starts_with("smsgate:{t3}:")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_configured_ca_and_refused_without_it() {
    let ca = crate::common::tls::TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = RedisServer::start_tls(&ca, dir.path()) else { return };
    assert!(server.url().starts_with("rediss://"));
    let backend = format!("  url: {}\n  tls: {{ ca_file: \"{}\" }}\n", server.url(), ca.pem_path.display());
    let a = start(config(&backend)).await;
    let b = start(config(&backend)).await;
    let mut load = Load::new();
    for _ in 0..(LIMIT / 2 + 1) {
        load.round(&a, &b).await;
    }
    assert_eq!((load.admitted, load.unavailable), (vec![LIMIT; TENANTS], 0));
    let keys: Vec<String> = server.query(&["KEYS", "smsgate:{t5}:*"]).unwrap();
    assert!(!keys.is_empty());
    // Without the CA the server's certificate is not trusted: no Redis, so `deny` refuses.
    let untrusted = start(config(&format!("  url: {}\n", server.url()))).await;
    assert_eq!(send(&untrusted, 1).await, 503);
    assert_eq!(mode(&untrusted).await, "unavailable");
}
