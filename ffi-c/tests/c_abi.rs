//! The C ABI from C, without Go: `tests/c/roundtrip.c` includes
//! `include/courier.h`, is compiled with the system `cc` and linked twice,
//! against `libcourier_ffi.a` and against `libcourier_ffi.so` (found at run
//! time through its rpath), and run: servers with unary and server-streaming
//! methods served by a host thread pulling calls, one with
//! `courier_server_take`, one with `courier_server_next_batch`,
//! `courier_call_start` and a `CourierReplyBatch`, called through the ABI's
//! channel (replies, app errors, UNIMPLEMENTED,
//! UNAVAILABLE after shutdown), invalid arguments and NULL handles, and (debug
//! builds) a panic inside the boundary returned as COURIER_ERROR_KIND_PANIC.
//!
//! The libraries are the ones cargo built for this test, beside the test
//! binary in `<target>/<profile>/deps/`: cargo builds every crate type of the
//! library in one compilation before the tests (and copies them up to
//! `<target>/<profile>/` only for `cargo build`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The native libraries Rust's standard library needs in a static link
/// (`cargo rustc -- --print native-static-libs`), as go-cgo's buildlib.
const NATIVE_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// The directory holding `libcourier_ffi.{a,so}` of this build.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("<target>/<profile>/deps/<test>").to_path_buf();
    for lib in ["libcourier_ffi.a", "libcourier_ffi.so"] {
        assert!(dir.join(lib).is_file(), "{} not built next to the test binary", dir.join(lib).display());
    }
    dir
}

fn build(name: &str, link: &[String]) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("courier-c-{name}-{}", std::process::id()));
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-pthread", "-g"])
        .arg("-I")
        .arg(manifest.join("include"))
        .arg(manifest.join("tests/c/roundtrip.c"))
        .arg("-o")
        .arg(&out);
    if cfg!(debug_assertions) {
        // The library is built in the same profile: it has the panic hook.
        cc.arg("-DCOURIER_DEBUG_PANIC");
    }
    cc.args(link);
    let res = cc.output().unwrap_or_else(|e| panic!("cannot run cc: {e}"));
    assert!(res.status.success(), "cc ({name}) failed:\n{}", String::from_utf8_lossy(&res.stderr));
    out
}

fn run(exe: &Path) -> String {
    // cargo runs tests with LD_LIBRARY_PATH naming <target>/<profile>, whose
    // libcourier_ffi.so is whatever `cargo build` last copied there: without
    // it the program finds the library through its rpath alone.
    let res = Command::new(exe).env_remove("LD_LIBRARY_PATH").output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    assert!(
        res.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        exe.display(),
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    let _ = std::fs::remove_file(exe);
    let mut checks: Vec<String> = [
        "ok NULL server",
        "ok bad UTF-8 target",
        "ok unknown method kind",
        "ok NULL handles",
        "ok duplicate method",
        "ok bad UTF-8 method path",
        "ok bad listen address",
        "ok second start",
        "ok done",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for host in ["take", "next_batch"] {
        for check in [
            "unary reply round-trips",
            "200 unary calls",
            "app error status: no such thing",
            "missing method",
            "server streaming",
            "call after shutdown",
            "shutdown",
        ] {
            checks.push(format!("ok {host}: {check}"));
        }
    }
    for check in &checks {
        assert!(stdout.contains(check.as_str()), "{}: no `{check}` in its output:\n{stdout}", exe.display());
    }
    if cfg!(debug_assertions) {
        assert!(stdout.contains("ok panic: panic in courier-ffi: courier_debug_panic called"), "no panic check:\n{stdout}");
    }
    stdout
}

#[test]
fn c_program_against_static_library() {
    let dir = lib_dir();
    let mut link = vec![dir.join("libcourier_ffi.a").display().to_string()];
    link.extend(NATIVE_LIBS.iter().map(|s| s.to_string()));
    let exe = build("static", &link);
    let out = run(&exe);
    println!("{out}");
}

#[test]
fn c_program_against_shared_library() {
    let dir = lib_dir().display().to_string();
    let exe = build("shared", &[format!("-L{dir}"), "-l:libcourier_ffi.so".into(), format!("-Wl,-rpath,{dir}")]);
    // It needs the shared library at run time (and does not carry the core).
    let ldd = Command::new("ldd").arg(&exe).env_remove("LD_LIBRARY_PATH").output().expect("ldd");
    let deps = String::from_utf8_lossy(&ldd.stdout);
    assert!(deps.contains(&format!("libcourier_ffi.so => {dir}/libcourier_ffi.so")), "ldd {}:\n{deps}", exe.display());
    let out = run(&exe);
    println!("{out}");
}
