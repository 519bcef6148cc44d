//! Python test clients: the interpreter of `$CARGO_MANIFEST_DIR/.venv` (made by `.ci/run` from
//! `tests/requirements.txt`), or `SMSGATE_TEST_PYTHON`. When it is missing the test is skipped with a note,
//! unless `SMSGATE_REQUIRE_PYTHON=1` (set by `.ci/run`), which makes a missing interpreter a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The interpreter, or None (after printing why) when it is missing and not required.
pub(crate) fn interpreter() -> Option<PathBuf> {
    let path = std::env::var_os("SMSGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("SMSGATE_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!(
            "no Python at {} and SMSGATE_REQUIRE_PYTHON=1 (run .ci/run, or set SMSGATE_TEST_PYTHON)",
            path.display()
        );
    }
    eprintln!(
        "note: no Python at {}; skipping this test (python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt)",
        path.display()
    );
    None
}

/// A Python script from `tests/python/` running as a child process; its stdout lines are collected. Killed
/// on drop.
pub(crate) struct PythonProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PythonProcess {
    pub(crate) fn spawn(python: &Path, script: &str, args: &[&str]) -> PythonProcess {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
        let mut child = Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} {}: {e}", python.display(), script.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        PythonProcess { child, lines }
    }

    /// The next line the script printed, parsed as JSON, waiting up to 30 s.
    pub(crate) fn next_json(&mut self) -> serde_json::Value {
        match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON line, got {line:?}")),
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                panic!("the Python script printed nothing more (exit status: {status:?})")
            }
        }
    }
}

impl Drop for PythonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
