//! Courier's engine serving a unary echo at `/bench.Echo/Echo` on its normal
//! path (method table, ctx, mandatory deadline: a 10 s method default), and a
//! server-streaming `/bench.Echo/Stream` that sends the request message back
//! again and again until the client cancels (the throughput benchmark).
//!
//! `--workers N`: I/O threads (default 1).
//! `--no-deadline`: register the method with `DeadlinePolicy::NoDeadline` (no timer
//! per call; for measuring what the mandatory deadline costs, not the normal path).
//! `--keepalive SECS|off`: the server's HTTP/2 keepalive interval (default: `ServerConfig`'s).
//! `--host`: the method is served through a `HostQueue` by one Rust thread that
//! pulls batches (`next_batch(64, None)`) and answers with one `ReplyBatch` per
//! batch: the boundary a host-language binding uses, without a host language.
//! `--limits FILE`: the limits file (admission: ACL, rate limit, queue, workpool).
//! `--tls DIR`: mutual TLS with DIR/server-ecdsa/{cert,key}.pem and DIR/ca/ca.pem
//! (the layout `courier-bench-tls pki` writes).
//! `--adaptive-window`: HTTP/2 windows grown from the measured BDP.
//! `--bind ADDR`: listen address (default 127.0.0.1; the high-BDP run binds a veth address).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use courier_bench::{announce_port, arg_value, has_flag, port_arg, usage, METHOD, STREAM_METHOD};
use courier_core::{
    Ctx, DeadlinePolicy, Handler, HostQueue, HostReply, HostRequest, MethodDesc, MethodKind, ReplyBatch,
    ResponseSender, Server, ServerConfig, ServerTls, ServerTlsConfig, Status,
};

fn main() {
    let port = port_arg();
    let workers: usize =
        arg_value("--workers").map(|w| w.parse().unwrap_or_else(|_| usage("--workers takes a number"))).unwrap_or(1);
    let host = has_flag("--host");
    let tls = arg_value("--tls").map(|dir| {
        let d = PathBuf::from(dir);
        let mut c = ServerTlsConfig::new(
            d.join("server-ecdsa/cert.pem"),
            d.join("server-ecdsa/key.pem"),
            d.join("ca/ca.pem"),
        );
        c.reload_interval = None;
        ServerTls::new(c).unwrap_or_else(|e| usage(&format!("tls: {e}")))
    });
    let mut config = ServerConfig { workers, tls, limits_path: arg_value("--limits").map(PathBuf::from), ..ServerConfig::default() };
    if has_flag("--adaptive-window") {
        config.http2.adaptive_window = true;
        // core's serve_h2 sets the fixed windows after `adaptive_window`, and hyper's
        // `initial_*_window_size(Some(_))` turns adaptive windows off again: clear them.
        config.http2.initial_stream_window_size = None;
        config.http2.initial_connection_window_size = None;
    }
    if let Some(k) = arg_value("--keepalive") {
        config.http2.keepalive_interval = match k.as_str() {
            "off" => None,
            s => Some(Duration::from_secs(s.parse().unwrap_or_else(|_| usage("--keepalive takes seconds or off")))),
        };
    }
    let server = Server::new(config);
    let policy = if has_flag("--no-deadline") {
        DeadlinePolicy::NoDeadline
    } else {
        DeadlinePolicy::Default(Duration::from_secs(10))
    };
    let desc = MethodDesc::new(METHOD, MethodKind::Unary, policy.clone()).expect("path");
    if host {
        let q = HostQueue::new();
        server.register(desc, Handler::Host(q.clone())).expect("register");
        std::thread::Builder::new().name("host".into()).spawn(move || host_thread(q)).expect("thread");
    } else {
        server
            .register(desc, Handler::unary(|_ctx: Ctx, req: Bytes| async move { Ok::<_, Status>(req) }))
            .expect("register");
    }
    // The stream runs until the client goes away: no deadline on it.
    let stream = MethodDesc::new(STREAM_METHOD, MethodKind::ServerStreaming, DeadlinePolicy::NoDeadline).expect("path");
    server.register(stream, Handler::server_streaming(repeat)).expect("register");
    let bind = arg_value("--bind").unwrap_or_else(|| "127.0.0.1".into());
    let addr = server.listen(&format!("{bind}:{port}")).unwrap_or_else(|e| usage(&e.to_string()));
    server.start().unwrap_or_else(|e| usage(&e.to_string()));
    announce_port(addr.port());
    loop {
        std::thread::park();
    }
}

/// Sends the request message back until the call ends (the client cancels).
async fn repeat(_ctx: Ctx, req: Bytes, tx: ResponseSender) -> Result<(), Status> {
    while tx.send(req.clone()).await.is_ok() {}
    Ok(())
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
