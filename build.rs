//! Names the commit the binary is built from, for `smsgate --version` (and `smsgate::COMMIT`): the
//! `SMSGATE_COMMIT` environment variable when set (a build from a source tarball or a container stage),
//! else `git rev-parse` of the checkout, else `unknown` (no git, no .git). Re-run when HEAD moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SMSGATE_COMMIT");
    let commit = match std::env::var("SMSGATE_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
    };
    // HEAD, the branch it points at, and packed refs: only the files that exist (a missing one would
    // re-run this script, and rebuild the crate, at every build).
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--git-path", "packed-refs"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=SMSGATE_COMMIT={commit}");
}
