//! A test service on real sockets: every call kind, Rust-native and host-served.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier_core::*;

pub fn desc(path: &str, kind: MethodKind) -> MethodDesc {
    MethodDesc::new(path, kind, DeadlinePolicy::Default(Duration::from_secs(10))).unwrap()
}

/// Request protocol of the Rust test service: the first byte is a command.
/// `e` echo, `s<ms>` sleep then echo, `p` panic, `f<code>` fail with code,
/// `d` return a downstream status, `m` echo the `x-test` header in a reply header
/// and trailer (`mf`: then fail NOT_FOUND), `c` wait for cancellation and report
/// it on `flag`.
pub fn unary_handler(flag: Arc<std::sync::Mutex<Option<CancelReason>>>) -> Handler {
    Handler::unary(move |ctx: Ctx, req: Bytes| {
        let flag = flag.clone();
        async move {
            match req.first() {
                Some(b's') => {
                    let ms: u64 = std::str::from_utf8(&req[1..]).unwrap().parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(req)
                }
                Some(b'p') => panic!("boom"),
                Some(b'f') => {
                    let code: i32 = std::str::from_utf8(&req[1..]).unwrap().parse().unwrap();
                    Err(Status::new(Code::from_i32(code), "failed as asked: 100% sure"))
                }
                Some(b'a') => Err(Status::app_error(
                    Code::FailedPrecondition,
                    "app error",
                    AppError { enum_name: "courier.test.TestError".into(), value: 2 },
                )),
                Some(b'd') => {
                    // A status from a "downstream" call, let escape.
                    let ch = Channel::new("127.0.0.1:1", &ChannelConfig::default()).unwrap();
                    let r = ch.unary(&ctx, &desc("/x.Y/Z", MethodKind::Unary), req.clone(), &Default::default()).await;
                    r.map(|r| r.message)
                }
                Some(b'm') => {
                    let v = ctx.metadata().get("x-test").cloned().unwrap_or(http::HeaderValue::from_static("none"));
                    ctx.append_reply_header("x-reply-header".parse().unwrap(), v.clone());
                    ctx.append_reply_trailer("x-reply-trailer".parse().unwrap(), v);
                    if &req[1..] == b"f" {
                        return Err(Status::new(Code::NotFound, "metadata, then a failure"));
                    }
                    Ok(Bytes::from(ctx.request_id().to_string()))
                }
                Some(b'c') => {
                    // Hyper drops the handler's future when the call ends early;
                    // a thread holding the ctx reports what it saw.
                    let seen = ctx.clone();
                    std::thread::spawn(move || loop {
                        if let Some(r) = seen.explicit_cancel_for_test() {
                            *flag.lock().unwrap() = Some(r);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    });
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(req)
                }
                Some(b't') => {
                    // Report the remaining deadline in ms.
                    let left = ctx.time_remaining().map(|d| d.as_millis() as i64).unwrap_or(-1);
                    Ok(Bytes::from(left.to_string()))
                }
                _ => Ok(req),
            }
        }
    })
}

pub struct TestServer {
    pub server: Server,
    pub addr: String,
    pub cancelled: Arc<std::sync::Mutex<Option<CancelReason>>>,
    pub host: HostQueue,
}

/// Starts a server on 127.0.0.1 serving `/courier.test.Test/*` natively and
/// `/courier.test.Host/*` through a host queue (served by `host_threads` threads).
pub fn start(config: ServerConfig, host_threads: usize) -> TestServer {
    let server = Server::new(config);
    let cancelled = Arc::new(std::sync::Mutex::new(None));
    server.register(desc("/courier.test.Test/UnaryUnary", MethodKind::Unary), unary_handler(cancelled.clone())).unwrap();
    // Same handler, 100 ms server-side default deadline.
    let short = MethodDesc::new("/courier.test.Test/Short", MethodKind::Unary, DeadlinePolicy::Default(Duration::from_millis(100))).unwrap();
    server.register(short, unary_handler(cancelled.clone())).unwrap();
    server
        .register(
            desc("/courier.test.Test/UnaryStream", MethodKind::ServerStreaming),
            Handler::server_streaming(|_ctx, req: Bytes, tx: ResponseSender| async move {
                let n: usize = std::str::from_utf8(&req).unwrap_or("0").parse().unwrap_or(0);
                for i in 0..n {
                    tx.send(Bytes::from(i.to_string())).await?;
                }
                Ok(())
            }),
        )
        .unwrap();
    server
        .register(
            desc("/courier.test.Test/StreamUnary", MethodKind::ClientStreaming),
            Handler::client_streaming(|_ctx, mut rx: RequestStream| async move {
                let mut total = Vec::new();
                while let Some(m) = rx.message().await? {
                    total.extend_from_slice(&m);
                }
                Ok(Bytes::from(total))
            }),
        )
        .unwrap();
    server
        .register(
            desc("/courier.test.Test/StreamStream", MethodKind::BidiStreaming),
            Handler::bidi_streaming(|_ctx, mut rx: RequestStream, tx: ResponseSender| async move {
                while let Some(m) = rx.message().await? {
                    if &m[..] == b"fail" {
                        return Err(Status::aborted_for_test());
                    }
                    tx.send(m).await?;
                }
                Ok(())
            }),
        )
        .unwrap();
    let host = HostQueue::new();
    for (name, kind) in [
        ("UnaryUnary", MethodKind::Unary),
        ("UnaryStream", MethodKind::ServerStreaming),
        ("StreamUnary", MethodKind::ClientStreaming),
        ("StreamStream", MethodKind::BidiStreaming),
    ] {
        server.register(desc(&format!("/courier.test.Host/{name}"), kind), Handler::Host(host.clone())).unwrap();
    }
    for _ in 0..host_threads {
        let q = host.clone();
        std::thread::spawn(move || host_worker(q));
    }
    let addr = server.listen("127.0.0.1:0").unwrap().to_string();
    server.start().unwrap();
    TestServer { server, addr, cancelled, host }
}

trait CtxForTest {
    fn explicit_cancel_for_test(&self) -> Option<CancelReason>;
}
impl CtxForTest for Ctx {
    /// Only cancellations signalled by the server (not a merely passed deadline).
    fn explicit_cancel_for_test(&self) -> Option<CancelReason> {
        futures_util::FutureExt::now_or_never(self.cancel_signal())
    }
}

trait ForTest {
    fn aborted_for_test() -> Status;
}
impl ForTest for Status {
    fn aborted_for_test() -> Status {
        Status::new(Code::Aborted, "asked to fail")
    }
}

/// A host thread: pulls batches, answers unary ones in one reply batch.
/// Unary `s<ms>` sleeps (blocking the thread, as a host handler would).
pub fn host_worker(q: HostQueue) {
    while let Ok(batch) = q.next_batch(64, None) {
        let mut replies = ReplyBatch::with_capacity(batch.len());
        for call in batch {
            let (ctx, method, req, reply) = call.into_parts();
            match (req, reply) {
                (HostRequest::Message(m), HostReply::Unary(r)) => {
                    if m.first() == Some(&b's') {
                        let ms: u64 = std::str::from_utf8(&m[1..]).unwrap().parse().unwrap();
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                    let res = if &m[..] == b"drop" {
                        drop(r);
                        continue;
                    } else if m.first() == Some(&b'f') {
                        Err(Status::new(Code::NotFound, "host says no"))
                    } else {
                        Ok(m)
                    };
                    replies.push(r, res);
                }
                (HostRequest::Stream(mut rx), HostReply::Unary(r)) => {
                    let mut total = Vec::new();
                    let res = loop {
                        match rx.blocking_message() {
                            Ok(Some(m)) => total.extend_from_slice(&m),
                            Ok(None) => break Ok(Bytes::from(total)),
                            Err(e) => break Err(e),
                        }
                    };
                    replies.push(r, res);
                }
                (HostRequest::Message(m), HostReply::Stream(tx)) => {
                    let n: usize = std::str::from_utf8(&m).unwrap_or("0").parse().unwrap_or(0);
                    std::thread::spawn(move || {
                        for i in 0..n {
                            if tx.blocking_send(Bytes::from(i.to_string())).is_err() {
                                return;
                            }
                        }
                        tx.blocking_finish(Ok(()));
                    });
                }
                (HostRequest::Stream(mut rx), HostReply::Stream(tx)) => {
                    let _ = (&ctx, &method);
                    std::thread::spawn(move || {
                        let r = loop {
                            match rx.blocking_message() {
                                Ok(Some(m)) => {
                                    if tx.blocking_send(m).is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => break Ok(()),
                                Err(e) => break Err(e),
                            }
                        };
                        tx.blocking_finish(r);
                    });
                }
            }
        }
        replies.flush();
    }
}

pub fn channel(addr: &str) -> Channel {
    Channel::new(addr, &ChannelConfig::default()).unwrap()
}
