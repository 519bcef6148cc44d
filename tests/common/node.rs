//! Logto's real SMS connector packages under Node: `node` (on `PATH`, or `SMSGATE_TEST_NODE`) and
//! `$CARGO_MANIFEST_DIR/tests/node/node_modules` (made by `.ci/run` with `npm ci --prefix tests/node` from
//! `tests/node/package-lock.json`). When either is missing the test is skipped with a note, unless
//! `SMSGATE_REQUIRE_NODE=1` (set by `.ci/run`), which makes it a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The packages `tests/node/logto_config.mjs` imports.
const PACKAGES: [&str; 3] =
    ["@logto/connector-aliyun-sms", "@logto/connector-twilio-sms", "@logto/connector-tencent-sms"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// The Node binary, or None (after printing why) when it or the installed packages are missing and not
/// required.
pub(crate) fn node() -> Option<PathBuf> {
    let node = std::env::var_os("SMSGATE_TEST_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from);
    let runs = Command::new(&node).arg("--version").stdin(Stdio::null()).output().is_ok_and(|out| out.status.success());
    let modules = dir().join("node_modules");
    let missing = if !runs {
        Some(format!("no Node at {}", node.display()))
    } else {
        PACKAGES
            .iter()
            .find(|p| !modules.join(p).join("package.json").is_file())
            .map(|p| format!("{p} is not installed in {}", modules.display()))
    };
    let Some(missing) = missing else { return Some(node) };
    if std::env::var("SMSGATE_REQUIRE_NODE").as_deref() == Ok("1") {
        panic!("{missing} and SMSGATE_REQUIRE_NODE=1 (run .ci/run, or npm ci --prefix tests/node; or set SMSGATE_TEST_NODE)");
    }
    eprintln!("note: {missing}; skipping this test (npm ci --prefix tests/node)");
    None
}

/// Runs a script of `tests/node/` to its end; its stdout, trimmed. Panics with its stderr when it fails.
pub(crate) fn run(node: &Path, script: &str, args: &[&str]) -> String {
    let script = dir().join(script);
    let out = Command::new(node)
        .arg(&script)
        .args(args)
        .current_dir(dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} {}: {e}", node.display(), script.display()));
    assert!(
        out.status.success(),
        "{} {} {args:?} failed ({}):\n{}",
        node.display(),
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output").trim().to_owned()
}

/// The config Logto's admin console saves for a connector (`aliyun`, `twilio` or `tencent`), built from the
/// package's own metadata and validated by the package's own config guard: one JSON object, as printed.
pub(crate) fn logto_config(node: &Path, connector: &str, flags: &[&str]) -> String {
    let mut args = vec![connector];
    args.extend_from_slice(flags);
    let json = run(node, "logto_config.mjs", &args);
    let value: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("logto_config.mjs {args:?}: not JSON ({e}): {json}"));
    assert!(value.is_object() && !json.contains('\n'), "one JSON object on one line: {json}");
    json
}
