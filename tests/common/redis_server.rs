//! A private `redis-server` per test, on a free loopback port, without persistence, killed on drop. When the
//! binary is missing the test is skipped with a note, unless `SMSGATE_REQUIRE_REDIS=1` (set by `.ci/run`),
//! which makes a missing Redis a failure instead. Also a 6-node Cluster (3 primaries, 3 replicas), a Sentinel
//! set (primary, replica, 3 sentinels) and a TLS server (`--tls-port`); readiness is polled, never slept for.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct RedisServer {
    pub port: u16,
    binary: PathBuf,
    /// Arguments before `--port` (a sentinel's config file), kept for restarts.
    leading: Vec<String>,
    /// Extra command-line arguments, kept for restarts.
    args: Vec<String>,
    /// The CA (PEM) of a TLS server: it listens on `port` with TLS only.
    tls_ca: Option<Vec<u8>>,
    child: Option<Child>,
    /// Its working directory: a replica's full sync writes an RDB file there, never into the crate.
    dir: tempfile::TempDir,
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A port nothing listens on right now (bound, read, released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server, or returns None (after printing why) when Redis is not installed and not required.
    pub(crate) fn start() -> Option<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// The same with extra `redis-server` arguments, such as `--enable-debug-command local`.
    pub(crate) fn start_with(args: &[&str]) -> Option<RedisServer> {
        let binary = required_binary()?;
        Some(RedisServer::spawn(binary, free_port(), Vec::new(), args.iter().map(|a| a.to_string()).collect(), None))
    }

    fn spawn(binary: PathBuf, port: u16, leading: Vec<String>, args: Vec<String>, tls_ca: Option<Vec<u8>>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = RedisServer { port, binary, leading, args, tls_ca, child: None, dir };
        server.restart();
        server
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 signed by `ca` (clients need not
    /// present one).
    pub(crate) fn start_tls(ca: &super::tls::TestCa, dir: &std::path::Path) -> Option<RedisServer> {
        let binary = required_binary()?;
        let (cert, key) = ca.server_files(dir);
        let port = free_port();
        let args = [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-key-file".to_owned(),
            key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            ca.pem_path.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let pem = std::fs::read(&ca.pem_path).unwrap();
        Some(RedisServer::spawn(binary, port, Vec::new(), args.to_vec(), Some(pem)))
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Client {
        match &self.tls_ca {
            Some(pem) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            )
            .unwrap(),
            None => redis::Client::open(self.url()).unwrap(),
        }
    }

    /// One command on a fresh connection (for set-up and assertions).
    pub(crate) fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let mut c = self.client().get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut c)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts (again) on the same port, with empty state, and waits until it answers PING.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.binary)
            .args(&self.leading)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients, as in a crash).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open but nothing answers, as with
    /// a Redis stuck in a long command or a network stall.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// The installed server's major version (`redis-server --version`), 0 when it cannot be read.
    pub(crate) fn major_version() -> u32 {
        let Some(binary) = find_binary() else { return 0 };
        let out = Command::new(binary).arg("--version").output().map(|o| o.stdout).unwrap_or_default();
        let text = String::from_utf8_lossy(&out);
        text.split("v=").nth(1).and_then(|v| v.split('.').next()).and_then(|m| m.parse().ok()).unwrap_or(0)
    }

    /// A synchronous connection for assertions on keys.
    pub(crate) fn connection(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }
}

fn required_binary() -> Option<PathBuf> {
    let binary = find_binary();
    if binary.is_none() {
        if std::env::var("SMSGATE_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("redis-server is not installed and SMSGATE_REQUIRE_REDIS=1");
        }
        eprintln!("note: redis-server not found on PATH; skipping this Redis test");
    }
    binary
}

/// Polls `ready` until it holds, failing the test with `what` after `within`.
pub(crate) fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_owned()))
}

/// A Redis Cluster of 6 nodes on loopback: 3 primaries with one replica each, node timeout 500 ms.
pub(crate) struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub(crate) fn start() -> Option<RedisCluster> {
        let binary = required_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..6 {
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir(&node_dir).unwrap();
            // The bus port is given: port + 10000 (the default) may not exist above an ephemeral port.
            let bus = free_port().to_string();
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "500",
                "--dir",
                node_dir.to_str().unwrap(),
                "--cluster-config-file",
                "nodes.conf",
            ];
            nodes.push(RedisServer::spawn(
                binary.clone(),
                free_port(),
                Vec::new(),
                args.iter().map(|a| a.to_string()).collect(),
                None,
            ));
        }
        let cli = binary.with_file_name("redis-cli");
        let cli = if cli.is_file() { cli } else { PathBuf::from("redis-cli") };
        let mut create = Command::new(cli);
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create.args(["--cluster-replicas", "1", "--cluster-yes"]).output().expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_ready();
        Some(cluster)
    }

    pub(crate) fn seeds(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.is_running()).map(|n| n.url()).collect()
    }

    /// Until every running node sees the cluster ok with every slot served, and every replica is in sync.
    pub(crate) fn wait_ready(&self) {
        wait_until("the cluster to be ok", Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let Ok(info) = n.query::<String>(&["CLUSTER", "INFO"]) else { return false };
                let Ok(replication) = n.query::<String>(&["INFO", "replication"]) else { return false };
                info_field(&info, "cluster_state").as_deref() == Some("ok")
                    && info_field(&info, "cluster_slots_ok").as_deref() == Some("16384")
                    && (info_field(&replication, "role").as_deref() == Some("master")
                        || info_field(&replication, "master_link_status").as_deref() == Some("up"))
            })
        });
    }

    fn id(&self, node: usize) -> String {
        self.nodes[node].query(&["CLUSTER", "MYID"]).unwrap()
    }

    /// The slot of `key`.
    pub(crate) fn slot(&self, key: &str) -> u16 {
        let node = self.nodes.iter().find(|n| n.is_running()).unwrap();
        node.query::<u16>(&["CLUSTER", "KEYSLOT", key]).unwrap()
    }

    /// The index of the node that serves `slot` now (as the first running node sees it).
    pub(crate) fn owner(&self, slot: u16) -> usize {
        let node = self.nodes.iter().find(|n| n.is_running()).unwrap();
        let slots: redis::Value = node.query(&["CLUSTER", "SLOTS"]).unwrap();
        let redis::Value::Array(ranges) = slots else { panic!("CLUSTER SLOTS: {slots:?}") };
        for range in ranges {
            let redis::Value::Array(parts) = range else { continue };
            let number = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                _ => -1,
            };
            if number(&parts[0]) <= i64::from(slot) && i64::from(slot) <= number(&parts[1]) {
                let redis::Value::Array(primary) = &parts[2] else { panic!("{parts:?}") };
                let port = number(&primary[1]) as u16;
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("slot {slot} is not served");
    }

    /// The index of a replica of primary `node`.
    pub(crate) fn replica_of(&self, node: usize) -> usize {
        let id = self.id(node);
        (0..self.nodes.len())
            .find(|&i| {
                self.nodes[i].is_running()
                    && self.nodes[i]
                        .query::<String>(&["INFO", "replication"])
                        .is_ok_and(|r| info_field(&r, "master_port") == Some(self.nodes[node].port.to_string()))
            })
            .unwrap_or_else(|| panic!("no replica of {id}"))
    }

    /// Moves `slot` from its primary to primary `to` as `redis-cli --cluster reshard` does: IMPORTING /
    /// MIGRATING, `MIGRATE` of its keys in batches, then `SETSLOT NODE` everywhere. `between` runs after each
    /// batch (so a test can send while the slot is half moved).
    pub(crate) fn move_slot(&self, slot: u16, to: usize, mut between: impl FnMut()) {
        let from = self.owner(slot);
        assert_ne!(from, to);
        let (from_id, to_id, slot) = (self.id(from), self.id(to), slot.to_string());
        self.nodes[to].query::<()>(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).unwrap();
        self.nodes[from].query::<()>(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).unwrap();
        between();
        loop {
            let keys: Vec<String> = self.nodes[from].query(&["CLUSTER", "GETKEYSINSLOT", &slot, "2"]).unwrap();
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            self.nodes[from].query::<()>(&args).unwrap();
            between();
        }
        for node in [to, from] {
            self.nodes[node].query::<()>(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).unwrap();
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if i != to && i != from && node.is_running() {
                // Replicas refuse SETSLOT; they learn the new owner from their primary.
                let _ = node.query::<()>(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
            }
        }
        wait_until("every node to agree on the slot's owner", Duration::from_secs(10), || {
            self.owner_everywhere(&slot, to)
        });
    }

    fn owner_everywhere(&self, slot: &str, to: usize) -> bool {
        let port = self.nodes[to].port;
        self.nodes.iter().filter(|n| n.is_running()).all(|n| {
            n.query::<String>(&["CLUSTER", "NODES"]).is_ok_and(|nodes| {
                nodes.lines().any(|l| {
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    fields.get(1).is_some_and(|a| a.starts_with(&format!("127.0.0.1:{port}@")))
                        && fields[8..].iter().any(|range| {
                            let (a, b) = range.split_once('-').unwrap_or((range, range));
                            let s: u16 = slot.parse().unwrap();
                            a.parse::<u16>().is_ok_and(|a| a <= s) && b.parse::<u16>().is_ok_and(|b| s <= b)
                        })
                })
            })
        })
    }

    /// SIGKILL node `node` (a crash) and wait until its replica serves its slots and the cluster is ok again.
    pub(crate) fn kill_and_wait_failover(&mut self, node: usize, slot: u16) {
        let replica = self.replica_of(node);
        self.nodes[node].kill();
        wait_until("the replica to take over", Duration::from_secs(30), || {
            self.nodes[replica]
                .query::<String>(&["INFO", "replication"])
                .is_ok_and(|r| info_field(&r, "role").as_deref() == Some("master"))
        });
        wait_until("the cluster to be ok after the failover", Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.query::<String>(&["CLUSTER", "INFO"])
                    .is_ok_and(|info| info_field(&info, "cluster_state").as_deref() == Some("ok"))
            }) && self.owner(slot) == replica
        });
    }
}

/// A primary and its replica watched by 3 sentinels (`mymaster`, down after 500 ms, quorum 2).
pub(crate) struct RedisSentinel {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub(crate) const MASTER: &'static str = "mymaster";

    pub(crate) fn start() -> Option<RedisSentinel> {
        let binary = required_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let primary = RedisServer::spawn(binary.clone(), free_port(), Vec::new(), Vec::new(), None);
        let replica = RedisServer::spawn(
            binary.clone(),
            free_port(),
            Vec::new(),
            vec!["--replicaof".into(), "127.0.0.1".into(), primary.port.to_string()],
            None,
        );
        wait_until("the replica to sync", Duration::from_secs(20), || {
            replica
                .query::<String>(&["INFO", "replication"])
                .is_ok_and(|r| info_field(&r, "master_link_status").as_deref() == Some("up"))
        });
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor {m} 127.0.0.1 {p} 2\nsentinel down-after-milliseconds {m} 500\n\
                     sentinel failover-timeout {m} 3000\nsentinel parallel-syncs {m} 1\n",
                    m = Self::MASTER,
                    p = primary.port
                ),
            )
            .unwrap();
            sentinels.push(RedisServer::spawn(
                binary.clone(),
                free_port(),
                vec![conf.display().to_string(), "--sentinel".into()],
                Vec::new(),
                None,
            ));
        }
        let set = RedisSentinel { primary, replica, sentinels, _dir: dir };
        wait_until("the sentinels to know each other and the replica", Duration::from_secs(30), || {
            set.sentinels.iter().all(|s| {
                let Ok(master) = s.query::<Vec<String>>(&["SENTINEL", "MASTER", Self::MASTER]) else { return false };
                let field = |name: &str| master.iter().position(|f| f == name).and_then(|i| master.get(i + 1)).cloned();
                field("num-other-sentinels").as_deref() == Some("2") && field("num-slaves").as_deref() == Some("1")
            })
        });
        Some(set)
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The primary's port as the running sentinels report it.
    pub(crate) fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().filter(|s| s.is_running()).find_map(|s| {
            s.query::<(String, u16)>(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER]).ok().map(|(_, p)| p)
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
