//! The Rust-native unary echo of `bench/src/bin/courier-echo.rs` (`/bench.Echo/Echo`,
//! 10 s method default deadline), with observability switched on or off:
//!
//! `--obs off`: per-call stats off (`stats::set_enabled(false)`), tracing off.
//! `--obs on`:  stats on (the default of every Courier server), tracing on with
//!              sampling ratio `--ratio` (default 0.01) and OTLP export to
//!              `--otlp` (default `http://127.0.0.1:4317`; a closed port is fine:
//!              spans are still made, batched and their export attempted).
//! `--obs stats`, `--obs trace`: one of the two only.
//! `--debug-addr A`: also start the debug server (scrapes are not part of the bench).
//! `--workers N`: I/O threads (default 1).

use std::time::Duration;

use bytes::Bytes;
use courier_bench::{announce_port, arg_value, port_arg, usage, METHOD};
use courier_core::{Ctx, DeadlinePolicy, Handler, MethodDesc, MethodKind, Server, ServerConfig, Status};

fn main() {
    let port = port_arg();
    let workers: usize = arg_value("--workers").map(|w| w.parse().unwrap_or_else(|_| usage("--workers takes a number"))).unwrap_or(1);
    let (stats, tracing) = match arg_value("--obs").as_deref() {
        Some("on") => (true, true),
        Some("off") => (false, false),
        Some("stats") => (true, false),
        Some("trace") => (false, true),
        _ => usage("--obs on|off|stats|trace is required"),
    };
    courier_core::stats::set_enabled(stats);
    if tracing {
        let ratio: f64 = arg_value("--ratio").map(|r| r.parse().unwrap_or_else(|_| usage("--ratio takes a number"))).unwrap_or(0.01);
        let endpoint = arg_value("--otlp").unwrap_or_else(|| "http://127.0.0.1:4317".into());
        courier_core::trace::init(courier_core::trace::TraceConfig {
            otlp_endpoint: endpoint,
            service_name: "obs-echo".into(),
            sampling_ratio: ratio,
            ..Default::default()
        })
        .unwrap_or_else(|e| usage(&e.to_string()));
    }
    let server = Server::new(ServerConfig { workers, debug_addr: arg_value("--debug-addr"), ..ServerConfig::default() });
    let desc = MethodDesc::new(METHOD, MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(10))).expect("path");
    server.register(desc, Handler::unary(|_ctx: Ctx, req: Bytes| async move { Ok::<_, Status>(req) })).expect("register");
    let addr = server.listen(&format!("127.0.0.1:{port}")).unwrap_or_else(|e| usage(&e.to_string()));
    server.start().unwrap_or_else(|e| usage(&e.to_string()));
    announce_port(addr.port());
    // Under valgrind the bench stops the server with SIGTERM; exit cleanly so
    // callgrind writes its profile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [libc_sigterm(), libc_sigint()] {
        let s = stop.clone();
        let _ = signal_flag(sig, s);
    }
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    server.shutdown(Duration::from_millis(200));
    if tracing {
        courier_core::trace::shutdown();
    }
}

fn libc_sigterm() -> i32 {
    15
}
fn libc_sigint() -> i32 {
    2
}

/// Sets `flag` when signal `sig` arrives (a plain handler: one atomic store).
fn signal_flag(sig: i32, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<(), ()> {
    use std::sync::atomic::{AtomicPtr, Ordering};
    static FLAG: AtomicPtr<std::sync::atomic::AtomicBool> = AtomicPtr::new(std::ptr::null_mut());
    extern "C" fn on_signal(_: i32) {
        let p = FLAG.load(Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: the pointer comes from an Arc leaked below, never freed.
            unsafe { (*p).store(true, Ordering::Relaxed) };
        }
    }
    extern "C" {
        fn signal(sig: i32, handler: extern "C" fn(i32)) -> usize;
    }
    FLAG.store(std::sync::Arc::into_raw(flag) as *mut _, Ordering::Relaxed);
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe { signal(sig, on_signal) };
    Ok(())
}
