//! Build script: the commit the binary is built from, as `SMSGATE_COMMIT` (`smsgate_build_info{commit}`).
//! `SMSGATE_COMMIT` in the build environment wins (a source tarball, a build without .git); else
//! `git rev-parse --short=12 HEAD`; else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SMSGATE_COMMIT");
    let commit = std::env::var("SMSGATE_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        // Rebuild when HEAD moves: the HEAD file (a branch switch) and the branch's ref (a commit).
        // Only paths that exist: cargo reruns a build script at every build while one it watches is missing.
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
            if let Some(p) = git(&["rev-parse", "--git-path", path]).filter(|p| std::path::Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=SMSGATE_COMMIT={}", commit.unwrap_or_else(|| "unknown".to_owned()));
}
