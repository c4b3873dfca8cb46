//! Courier's engine serving a unary echo at `/bench.Echo/Echo` on its normal
//! path (method table, ctx, mandatory deadline: a 10 s method default).
//!
//! `--workers N`: I/O threads (default 1).
//! `--no-deadline`: register the method with `DeadlinePolicy::NoDeadline` (no timer
//! per call; for measuring what the mandatory deadline costs, not the normal path).
//! `--host`: the method is served through a `HostQueue` by one Rust thread that
//! pulls batches (`next_batch(64, None)`) and answers with one `ReplyBatch` per
//! batch: the boundary a host-language binding uses, without a host language.

use std::time::Duration;

use bytes::Bytes;
use courier_bench::{announce_port, arg_value, has_flag, port_arg, usage, METHOD};
use courier_core::{
    Ctx, DeadlinePolicy, Handler, HostQueue, HostReply, HostRequest, MethodDesc, MethodKind, ReplyBatch, Server,
    ServerConfig, Status,
};

fn main() {
    let port = port_arg();
    let workers: usize =
        arg_value("--workers").map(|w| w.parse().unwrap_or_else(|_| usage("--workers takes a number"))).unwrap_or(1);
    let host = has_flag("--host");
    let server = Server::new(ServerConfig { workers, ..ServerConfig::default() });
    let policy = if has_flag("--no-deadline") {
        DeadlinePolicy::NoDeadline
    } else {
        DeadlinePolicy::Default(Duration::from_secs(10))
    };
    let desc = MethodDesc::new(METHOD, MethodKind::Unary, policy).expect("path");
    if host {
        let q = HostQueue::new();
        server.register(desc, Handler::Host(q.clone())).expect("register");
        std::thread::Builder::new().name("host".into()).spawn(move || host_thread(q)).expect("thread");
    } else {
        server
            .register(desc, Handler::unary(|_ctx: Ctx, req: Bytes| async move { Ok::<_, Status>(req) }))
            .expect("register");
    }
    let addr = server.listen(&format!("127.0.0.1:{port}")).unwrap_or_else(|e| usage(&e.to_string()));
    server.start().unwrap_or_else(|e| usage(&e.to_string()));
    announce_port(addr.port());
    loop {
        std::thread::park();
    }
}

fn host_thread(q: HostQueue) {
    while let Ok(batch) = q.next_batch(64, None) {
        let mut replies = ReplyBatch::with_capacity(batch.len());
        for call in batch {
            let (_ctx, _method, req, reply) = call.into_parts();
            match (req, reply) {
                (HostRequest::Message(m), HostReply::Unary(r)) => replies.push(r, Ok(m)),
                (_, HostReply::Unary(r)) => replies.push(r, Err(Status::unimplemented("unary only"))),
                (_, HostReply::Stream(_)) => {}
            }
        }
        replies.flush();
    }
}
