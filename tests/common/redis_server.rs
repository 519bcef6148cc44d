//! A private `redis-server` per test, on a free loopback port, without persistence, killed on drop. When the
//! binary is missing the test is skipped with a note, unless `SMSGATE_REQUIRE_REDIS=1` (set by `.ci/run`),
//! which makes a missing Redis a failure instead.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    binary: PathBuf,
    /// Extra command-line arguments, kept for restarts.
    args: Vec<String>,
    child: Option<Child>,
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A port nothing listens on right now (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server, or returns None (after printing why) when Redis is not installed and not required.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(&[])
    }

    /// The same with extra `redis-server` arguments, such as `--enable-debug-command local`.
    pub fn start_with(args: &[&str]) -> Option<RedisServer> {
        let Some(binary) = find_binary() else {
            if std::env::var("SMSGATE_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("redis-server is not installed and SMSGATE_REQUIRE_REDIS=1");
            }
            eprintln!("note: redis-server not found on PATH; skipping this Redis test");
            return None;
        };
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut server = RedisServer { port: free_port(), binary, args, child: None };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, with empty state, and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
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
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open but nothing answers, as with
    /// a Redis stuck in a long command or a network stall.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// The installed server's major version (`redis-server --version`), 0 when it cannot be read.
    pub fn major_version() -> u32 {
        let Some(binary) = find_binary() else { return 0 };
        let out = Command::new(binary).arg("--version").output().map(|o| o.stdout).unwrap_or_default();
        let text = String::from_utf8_lossy(&out);
        text.split("v=").nth(1).and_then(|v| v.split('.').next()).and_then(|m| m.parse().ok()).unwrap_or(0)
    }

    /// A synchronous connection for assertions on keys.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
