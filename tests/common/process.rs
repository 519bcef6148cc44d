//! The real `smsgate serve` binary as a child process: a temp config, JSON logs captured from stderr,
//! signals, and the address it bound (the config listens on 127.0.0.1:0).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct Server {
    pub child: Child,
    pub addr: String,
    pub config_path: PathBuf,
    pub log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Writes `config` to a temp dir and serves it; returns once the gateway logged its address.
    pub(crate) fn spawn(config: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_smsgate"));
        command
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = Server { child, addr: String::new(), config_path, log, _dir: dir };
        let line = server.wait_for_log("smsgate listening");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        server.addr = event["addr"].as_str().unwrap().to_owned();
        server
    }

    /// The `addr` field of the first log line containing `needle` (another listener's address).
    pub(crate) fn logged_addr(&mut self, needle: &str) -> String {
        let line = self.wait_for_log(needle);
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        event["addr"].as_str().unwrap().to_owned()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A native send with the acme token, its answer read whole.
    pub(crate) async fn send(&self, http: &reqwest::Client, phone: &str, code: &str) -> super::Answer {
        let request = http.post(self.url("/v1/sms/send")).bearer_auth(super::TOKEN);
        let response = request
            .header("content-type", "application/json")
            .body(super::native(phone, "SignIn", code))
            .send()
            .await
            .unwrap();
        super::Answer::from(response).await
    }

    /// The first log line containing `needle`, waiting for it up to 20 s.
    pub(crate) fn wait_for_log(&mut self, needle: &str) -> String {
        self.wait_for_nth_log(needle, 1)
    }

    /// The `n`th log line containing `needle`, waiting for it up to 20 s.
    pub(crate) fn wait_for_nth_log(&mut self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.log.lock().unwrap().lines().filter(|l| l.contains(needle)).nth(n - 1) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("smsgate exited ({status}) before logging {needle:?}:\n{}", self.log.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    pub(crate) fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).unwrap();
    }

    /// Waits for the process to exit, up to 20 s.
    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "smsgate did not exit:\n{}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
