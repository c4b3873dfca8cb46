//! `courier-bench req FILE`: writes the benchmark request (a gRPC frame) for `h2load -d`.
//! `courier-bench check PORT`: calls the echo method once with a Courier channel and
//! checks the server answered OK with the same message.
//! `courier-bench stream ADDR SECS SIZE [WINDOW]`: one Courier channel reads the
//! endless server stream of `courier-echo` (`/bench.Echo/Stream`, messages of SIZE
//! bytes) for SECS seconds; WINDOW `adaptive` (HTTP/2 windows grown from the
//! measured bandwidth-delay product) or a fixed window in bytes for stream and
//! connection. Prints the bytes received in each second, then one JSON line.

use std::time::Duration;

use bytes::Bytes;
use courier_bench::{message, request_frame, usage, METHOD, REQ_MESSAGE, STREAM_METHOD};
use courier_core::{Channel, ChannelConfig, Ctx, DeadlinePolicy, MethodDesc, MethodKind};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("req"), Some(path)) => {
            std::fs::write(path, request_frame()).unwrap_or_else(|e| usage(&format!("cannot write {path}: {e}")));
        }
        (Some("check"), Some(port)) => check(port),
        (Some("stream"), Some(addr)) => stream(addr, &args[3..]),
        _ => usage("usage: courier-bench req FILE | check PORT | stream ADDR SECS SIZE [adaptive|WINDOW]"),
    }
}

fn check(port: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = Channel::new(&format!("127.0.0.1:{port}"), &ChannelConfig::default())
            .unwrap_or_else(|e| usage(&format!("channel: {e}")));
        let desc =
            MethodDesc::new(METHOD, MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(5))).expect("path");
        for _ in 0..3 {
            match ch.unary(&Ctx::background(), &desc, Bytes::from_static(REQ_MESSAGE), &Default::default()).await {
                Ok(r) if &r.message[..] == REQ_MESSAGE => {}
                Ok(r) => usage(&format!("wrong reply {:?}", r.message)),
                Err(s) => usage(&format!("call failed: {s:?}")),
            }
        }
        println!("OK");
    });
}

fn stream(addr: &str, rest: &[String]) {
    let secs: u64 = rest.first().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage("stream ADDR SECS SIZE [WINDOW]"));
    let size: usize = rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(65536);
    let window = rest.get(2).map(String::as_str).unwrap_or("adaptive");
    let mut config = ChannelConfig { max_recv_message_size: size + 1024, ..ChannelConfig::default() };
    if window == "adaptive" {
        config.http2_adaptive_window = true;
    } else {
        let w: u32 = window.parse().unwrap_or_else(|_| usage("WINDOW is adaptive or a number of bytes"));
        config.initial_stream_window_size = Some(w);
        config.initial_connection_window_size = Some(w);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let ch = Channel::new(addr, &config).unwrap_or_else(|e| usage(&format!("channel: {e}")));
        let desc = MethodDesc::new(STREAM_METHOD, MethodKind::ServerStreaming, DeadlinePolicy::NoDeadline).expect("path");
        let mut s = ch
            .server_streaming(&Ctx::background(), &desc, Bytes::from(message(2, size)), &Default::default())
            .await
            .unwrap_or_else(|e| usage(&format!("call failed: {e:?}")));
        let t0 = std::time::Instant::now();
        let end = t0 + Duration::from_secs(secs);
        let mut per_sec = vec![0u64; secs as usize];
        while std::time::Instant::now() < end {
            match tokio::time::timeout_at(end.into(), s.message()).await {
                Ok(Ok(Some(m))) => {
                    let i = (t0.elapsed().as_secs() as usize).min(per_sec.len() - 1);
                    per_sec[i] += m.len() as u64;
                }
                Ok(Ok(None)) => usage("stream ended"),
                Ok(Err(e)) => usage(&format!("stream failed: {e:?}")),
                Err(_) => break,
            }
        }
        let total: u64 = per_sec.iter().sum();
        let half = &per_sec[per_sec.len() / 2..];
        println!(
            "{{\"bytes\": {total}, \"secs\": {secs}, \"mbps\": {:.2}, \"second_half_mbps\": {:.2}, \"per_sec\": {:?}}}",
            total as f64 / secs as f64 / 1e6,
            half.iter().sum::<u64>() as f64 / half.len().max(1) as f64 / 1e6,
            per_sec
        );
        std::process::exit(0);
    });
}
