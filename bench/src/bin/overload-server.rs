//! The overload benchmark's server: `/bench.Echo/Echo` whose handler takes
//! `--handler-ms` (default 20) of wall time, under a limits file (`--limits`).
//! Prints `PORT <n>`, then `RSS_KIB <n>` lines every second on stderr.

use std::time::Duration;

use bytes::Bytes;
use courier_bench::{announce_port, arg_value, port_arg, usage, METHOD};
use courier_core::{DeadlinePolicy, Handler, MethodDesc, MethodKind, Server, ServerConfig};

fn main() {
    let handler_ms: u64 = arg_value("--handler-ms").map(|v| v.parse().unwrap_or_else(|_| usage("--handler-ms takes ms"))).unwrap_or(20);
    let limits = arg_value("--limits").unwrap_or_else(|| usage("--limits FILE is required"));
    let config = ServerConfig { workers: 1, limits_path: Some(limits.into()), ..Default::default() };
    let server = Server::new(config);
    let desc = MethodDesc::new(METHOD, MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(10))).expect("valid path");
    let handler = Handler::unary(move |_ctx, req: Bytes| async move {
        tokio::time::sleep(Duration::from_millis(handler_ms)).await;
        Ok(req)
    });
    server.register(desc, handler).expect("register");
    let addr = server.listen(&format!("127.0.0.1:{}", port_arg())).expect("listen");
    server.start().unwrap_or_else(|e| usage(&e.to_string()));
    announce_port(addr.port());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(l) = status.lines().find(|l| l.starts_with("VmRSS:")) {
            eprintln!("RSS_KIB {}", l.split_whitespace().nth(1).unwrap_or("0"));
        }
    }
}
