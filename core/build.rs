//! Build facts shown by the debug server's `/info`: git hash, build time, rustc.
//!
//! The script deliberately does not re-run on every commit (that would rebuild
//! the core and everything above it after each `git commit`): an incremental
//! build shows the hash of the tree it was configured in. Set
//! `COURIER_GIT_HASH` to force a value (release builds, CI).

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=COURIER_GIT_HASH");
    let hash = std::env::var("COURIER_GIT_HASH")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| run("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=COURIER_GIT_HASH={hash}");
    println!("cargo:rustc-env=COURIER_BUILD_UNIX={secs}");
    println!("cargo:rustc-env=COURIER_RUSTC_VERSION={rustc_version}");
}
