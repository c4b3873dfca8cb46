//! `courier-bench req FILE`: writes the benchmark request (a gRPC frame) for `h2load -d`.
//! `courier-bench check PORT`: calls the echo method once with a Courier channel and
//! checks the server answered OK with the same message.

use std::time::Duration;

use bytes::Bytes;
use courier_bench::{request_frame, usage, METHOD, REQ_MESSAGE};
use courier_core::{Channel, ChannelConfig, Ctx, DeadlinePolicy, MethodDesc, MethodKind};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("req"), Some(path)) => {
            std::fs::write(path, request_frame()).unwrap_or_else(|e| usage(&format!("cannot write {path}: {e}")));
        }
        (Some("check"), Some(port)) => check(port),
        _ => usage("usage: courier-bench req FILE | check PORT"),
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
