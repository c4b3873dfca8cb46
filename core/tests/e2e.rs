//! Courier client against Courier server over real loopback sockets.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use courier_core::*;
use futures_util::StreamExt;
use http::HeaderMap;

fn no_md() -> HeaderMap {
    HeaderMap::new()
}

async fn unary(ch: &Channel, ctx: &Ctx, svc: &str, msg: &'static [u8]) -> Result<Reply, Status> {
    ch.unary(ctx, &desc(&format!("/courier.test.{svc}/UnaryUnary"), MethodKind::Unary), Bytes::from_static(msg), &no_md()).await
}

#[tokio::test]
async fn all_four_kinds_native_and_host() {
    let s = start(ServerConfig { workers: 2, ..Default::default() }, 2);
    let ch = channel(&s.addr);
    let ctx = Ctx::background();
    for svc in ["Test", "Host"] {
        let r = unary(&ch, &ctx, svc, b"ehello").await.unwrap();
        assert_eq!(&r.message[..], b"ehello", "{svc}");

        let mut st = ch
            .server_streaming(&ctx, &desc(&format!("/courier.test.{svc}/UnaryStream"), MethodKind::ServerStreaming), Bytes::from_static(b"5"), &no_md())
            .await
            .unwrap();
        let mut got = vec![];
        while let Some(m) = st.message().await.unwrap() {
            got.push(String::from_utf8(m.to_vec()).unwrap());
        }
        assert_eq!(got, ["0", "1", "2", "3", "4"], "{svc}");

        let parts = futures_util::stream::iter(["ab", "cd", "ef"].map(|s: &'static str| Bytes::from_static(s.as_bytes())));
        let r = ch
            .client_streaming(&ctx, &desc(&format!("/courier.test.{svc}/StreamUnary"), MethodKind::ClientStreaming), parts, &no_md())
            .await
            .unwrap();
        assert_eq!(&r.message[..], b"abcdef", "{svc}");

        let parts = futures_util::stream::iter(["x", "y", "z"].map(|s: &'static str| Bytes::from_static(s.as_bytes())));
        let st = ch
            .bidi_streaming(&ctx, &desc(&format!("/courier.test.{svc}/StreamStream"), MethodKind::BidiStreaming), parts, &no_md())
            .await
            .unwrap();
        let got: Vec<_> = st.map(|m| m.unwrap()).collect().await;
        assert_eq!(got, ["x", "y", "z"].map(|s: &'static str| Bytes::from_static(s.as_bytes())), "{svc}");
    }
    // Zero-message server stream ends OK.
    let mut st = ch
        .server_streaming(&ctx, &desc("/courier.test.Test/UnaryStream", MethodKind::ServerStreaming), Bytes::from_static(b"0"), &no_md())
        .await
        .unwrap();
    assert!(st.message().await.unwrap().is_none());
}

#[tokio::test]
async fn statuses_messages_and_app_errors() {
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 1);
    let ch = channel(&s.addr);
    let ctx = Ctx::background();
    for code in Code::ALL.into_iter().skip(1) {
        let msg: &'static [u8] = Box::leak(format!("f{}", code as i32).into_bytes().into_boxed_slice());
        let e = unary(&ch, &ctx, "Test", msg).await.unwrap_err();
        assert_eq!(e.code(), code);
        assert_eq!(e.message(), "failed as asked: 100% sure");
        assert!(e.is_downstream());
    }
    let e = unary(&ch, &ctx, "Test", b"a").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.app_error_value(), Some(&AppError { enum_name: "courier.test.TestError".into(), value: 2 }));

    // A downstream status that escapes a handler becomes UNKNOWN.
    let e = unary(&ch, &ctx, "Test", b"d").await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown, "{e:?}");

    // A panic is INTERNAL for that call only.
    let e = unary(&ch, &ctx, "Test", b"p").await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("boom"));
    assert_eq!(&unary(&ch, &ctx, "Test", b"eafter").await.unwrap().message[..], b"eafter");

    // Host errors, and a host that drops a call without replying.
    assert_eq!(unary(&ch, &ctx, "Host", b"f").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(unary(&ch, &ctx, "Host", b"drop").await.unwrap_err().code(), Code::Internal);

    // Unknown method and service.
    let e = ch.unary(&ctx, &desc("/courier.test.Test/Nope", MethodKind::Unary), Bytes::new(), &no_md()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    let e = ch.unary(&ctx, &desc("/no.Such/Method", MethodKind::Unary), Bytes::new(), &no_md()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);

    // A streaming handler's error after some messages arrives as the final status.
    let parts = futures_util::stream::iter(["ok", "fail"].map(|s: &'static str| Bytes::from_static(s.as_bytes())));
    let mut st = ch
        .bidi_streaming(&ctx, &desc("/courier.test.Test/StreamStream", MethodKind::BidiStreaming), parts, &no_md())
        .await
        .unwrap();
    assert_eq!(&st.message().await.unwrap().unwrap()[..], b"ok");
    assert_eq!(st.message().await.unwrap_err().code(), Code::Aborted);
}

#[tokio::test]
async fn metadata_both_ways_and_request_id() {
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 0);
    let ch = channel(&s.addr);
    let mut md = HeaderMap::new();
    md.insert("x-test", "v1".parse().unwrap());
    md.insert("x-request-id", "rid-42".parse().unwrap());
    let r = ch.unary(&Ctx::background(), &desc("/courier.test.Test/UnaryUnary", MethodKind::Unary), Bytes::from_static(b"m"), &md).await.unwrap();
    assert_eq!(&r.message[..], b"rid-42");
    assert_eq!(r.headers["x-reply-header"], "v1");
    assert_eq!(r.trailers["x-reply-trailer"], "v1");
    // Without one, the ctx's request id is sent and seen by the server.
    let ctx = Ctx::background();
    let r = ch.unary(&ctx, &desc("/courier.test.Test/UnaryUnary", MethodKind::Unary), Bytes::from_static(b"m"), &no_md()).await.unwrap();
    assert_eq!(std::str::from_utf8(&r.message).unwrap(), ctx.request_id());
}

#[tokio::test]
async fn deadlines_client_set_method_default_and_propagated() {
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 1);
    let ch = channel(&s.addr);

    // Client deadline shorter than the handler: DEADLINE_EXCEEDED near the deadline.
    let ctx = Ctx::background().with_timeout(Duration::from_millis(100));
    let t0 = Instant::now();
    let e = unary(&ch, &ctx, "Test", b"s2000").await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t0.elapsed() < Duration::from_millis(1000), "{:?}", t0.elapsed());

    // The server sees the caller's budget (not the 10 s method default).
    let ctx = Ctx::background().with_timeout(Duration::from_millis(3000));
    let r = unary(&ch, &ctx, "Test", b"t").await.unwrap();
    let left: i64 = std::str::from_utf8(&r.message).unwrap().parse().unwrap();
    assert!((2000..=3000).contains(&left), "{left}");

    // No caller deadline: the method default (10 s here) applies on the server.
    let r = unary(&ch, &Ctx::background(), "Test", b"t").await.unwrap();
    let left: i64 = std::str::from_utf8(&r.message).unwrap().parse().unwrap();
    assert!((9000..=10_000).contains(&left), "{left}");

    // The client applies its method default too: a 50 ms default ends the call.
    let short = MethodDesc::new("/courier.test.Test/UnaryUnary", MethodKind::Unary, DeadlinePolicy::Default(Duration::from_millis(50))).unwrap();
    let e = ch.unary(&Ctx::background(), &short, Bytes::from_static(b"s1000"), &no_md()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");

    // An expired ctx never sends.
    let past = Ctx::background().with_timeout(Duration::ZERO);
    assert_eq!(unary(&ch, &past, "Test", b"e").await.unwrap_err().code(), Code::DeadlineExceeded);

    // A handler still running at its (server-side default) deadline sees its ctx cancelled.
    let e = ch.unary(&Ctx::background(), &desc("/courier.test.Test/Short", MethodKind::Unary), Bytes::from_static(b"c"), &no_md()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*s.cancelled.lock().unwrap(), Some(CancelReason::DeadlineExceeded));
}

#[tokio::test]
async fn deadline_expired_while_queued_never_runs_host_handler() {
    // One host thread, busy 300 ms; a call with a 100 ms deadline waits behind it.
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 1);
    let ch = channel(&s.addr);
    let busy = tokio::spawn({
        let ch = ch.clone();
        async move { unary(&ch, &Ctx::background(), "Host", b"s300").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ctx = Ctx::background().with_timeout(Duration::from_millis(100));
    let e = unary(&ch, &ctx, "Host", b"s1").await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    busy.await.unwrap().unwrap();
    // The queue no longer holds it (it was dropped at pull time, not run).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.host.len(), 0);
}

#[tokio::test]
async fn client_cancellation_reaches_the_handler() {
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 0);
    let ch = channel(&s.addr);
    let ctx = Ctx::background().child();
    let call = tokio::spawn({
        let (ch, ctx) = (ch.clone(), ctx.clone());
        async move { unary(&ch, &ctx, "Test", b"c").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    ctx.cancel(CancelReason::Cancelled);
    assert_eq!(call.await.unwrap().unwrap_err().code(), Code::Cancelled);
    for _ in 0..50 {
        if s.cancelled.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*s.cancelled.lock().unwrap(), Some(CancelReason::Cancelled));
}

#[tokio::test]
async fn large_and_oversize_messages() {
    let s = start(ServerConfig { workers: 1, max_recv_message_size: 4 * 1024 * 1024, ..Default::default() }, 1);
    let ch = channel(&s.addr);
    let ctx = Ctx::background();
    let mut big = vec![b'e'];
    big.extend(std::iter::repeat_n(7u8, 3 * 1024 * 1024));
    let big = Bytes::from(big);
    for svc in ["Test", "Host"] {
        let r = ch.unary(&ctx, &desc(&format!("/courier.test.{svc}/UnaryUnary"), MethodKind::Unary), big.clone(), &no_md()).await.unwrap();
        assert_eq!(r.message, big);
    }
    let over = Bytes::from(vec![b'e'; 4 * 1024 * 1024 + 1]);
    let e = ch.unary(&ctx, &desc("/courier.test.Test/UnaryUnary", MethodKind::Unary), over, &no_md()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("larger than max"), "{}", e.message());
    // The client's own limit: a reply bigger than it accepts.
    let small = Channel::new(&s.addr, &ChannelConfig { max_recv_message_size: 1024, ..Default::default() }).unwrap();
    let e = small.unary(&ctx, &desc("/courier.test.Test/UnaryUnary", MethodKind::Unary), Bytes::from(vec![b'e'; 2048]), &no_md()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
}

#[tokio::test]
async fn health_service_reports_and_watches() {
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 0);
    let ch = channel(&s.addr);
    let check = desc("/grpc.health.v1.Health/Check", MethodKind::Unary);
    let ctx = Ctx::background();
    // HealthCheckRequest{service: "courier.test.Test"} = field 1, length-delimited.
    let req = |name: &str| {
        let mut v = vec![0x0a, name.len() as u8];
        v.extend_from_slice(name.as_bytes());
        Bytes::from(v)
    };
    let r = ch.unary(&ctx, &check, req("courier.test.Test"), &no_md()).await.unwrap();
    assert_eq!(&r.message[..], &[0x08, 0x01], "SERVING");
    let r = ch.unary(&ctx, &check, Bytes::new(), &no_md()).await.unwrap();
    assert_eq!(&r.message[..], &[0x08, 0x01], "server as a whole");
    let e = ch.unary(&ctx, &check, req("nope"), &no_md()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let mut watch = ch
        .server_streaming(&ctx, &desc("/grpc.health.v1.Health/Watch", MethodKind::ServerStreaming), req("courier.test.Test"), &no_md())
        .await
        .unwrap();
    assert_eq!(&watch.message().await.unwrap().unwrap()[..], &[0x08, 0x01]);
    s.server.health().set_serving("courier.test.Test", ServingStatus::NotServing);
    assert_eq!(&watch.message().await.unwrap().unwrap()[..], &[0x08, 0x02]);
}

#[tokio::test]
async fn many_concurrent_calls_on_one_channel() {
    init_logs();
    let s = start(ServerConfig { workers: 2, ..Default::default() }, 2);
    let ch = channel(&s.addr);
    let mut tasks = vec![];
    for i in 0..400 {
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let svc = if i % 2 == 0 { "Test" } else { "Host" };
            let msg = Bytes::from(format!("e{i}"));
            let r = ch.unary(&Ctx::background(), &desc(&format!("/courier.test.{svc}/UnaryUnary"), MethodKind::Unary), msg.clone(), &no_md()).await.unwrap();
            assert_eq!(r.message, msg);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn early_answers_never_exhaust_the_connection() {
    // h2 ends a connection after 1024 streams the server reset; calls answered
    // before their request is read must not count (the server drains them).
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 0);
    let ch = channel(&s.addr);
    let nope = desc("/courier.test.Test/Nope", MethodKind::Unary);
    for _ in 0..2000 {
        let e = ch.unary(&Ctx::background(), &nope, Bytes::from_static(b"x"), &no_md()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    }
    assert_eq!(&unary(&ch, &Ctx::background(), "Test", b"esame").await.unwrap().message[..], b"esame");
}

#[tokio::test]
async fn reconnects_after_server_restart() {
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 0);
    let addr = s.addr.clone();
    let ch = channel(&addr);
    unary(&ch, &Ctx::background(), "Test", b"e1").await.unwrap();
    tokio::task::spawn_blocking(move || s.server.shutdown(Duration::from_millis(100))).await.unwrap();
    let e = unary(&ch, &Ctx::background(), "Test", b"e2").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // A new server on the same port: the same channel connects again.
    let server = Server::new(ServerConfig { workers: 1, ..Default::default() });
    server.register(desc("/courier.test.Test/UnaryUnary", MethodKind::Unary), unary_handler(Default::default())).unwrap();
    server.listen(&addr).unwrap();
    server.start().unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if unary(&ch, &Ctx::background(), "Test", b"e3").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "channel did not reconnect");
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_calls() {
    let s = start(ServerConfig { workers: 2, ..Default::default() }, 1);
    let ch = channel(&s.addr);
    let native = tokio::spawn({
        let ch = ch.clone();
        async move { unary(&ch, &Ctx::background(), "Test", b"s300").await }
    });
    let host = tokio::spawn({
        let ch = ch.clone();
        async move { unary(&ch, &Ctx::background(), "Host", b"s300").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let server = s.server;
    tokio::task::spawn_blocking(move || {
        server.shutdown(Duration::from_secs(5));
        server
    })
    .await
    .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "shutdown waited for the whole grace: {:?}", t0.elapsed());
    assert_eq!(&native.await.unwrap().unwrap().message[..], b"s300");
    assert_eq!(&host.await.unwrap().unwrap().message[..], b"s300");
}

#[tokio::test]
async fn shutdown_grace_expiry_cancels_running_calls() {
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 0);
    let ch = channel(&s.addr);
    let call = tokio::spawn({
        let ch = ch.clone();
        async move { unary(&ch, &Ctx::background(), "Test", b"c").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = s.server;
    let t0 = Instant::now();
    tokio::task::spawn_blocking(move || server.shutdown(Duration::from_millis(200))).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The connection closed under the call: UNAVAILABLE (as grpcio and grpc-go
    // report it), not tonic's UNKNOWN "transport error".
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    for _ in 0..100 {
        if s.cancelled.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*s.cancelled.lock().unwrap(), Some(CancelReason::Shutdown));
}

#[allow(dead_code)]
fn init_logs() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
}

/// The server's first SETTINGS frame, as (id, value) pairs, read off a raw socket.
async fn server_settings(addr: &str) -> Vec<(u16, u32)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 4, "first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    body.chunks(6).map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]]))).collect()
}

#[tokio::test]
async fn adaptive_window_is_not_overridden_by_the_fixed_windows() {
    const INITIAL_WINDOW_SIZE: u16 = 4;
    let fixed = start(ServerConfig::default(), 0);
    let s = server_settings(&fixed.addr).await;
    assert!(s.contains(&(INITIAL_WINDOW_SIZE, 1024 * 1024)), "{s:?}");

    // Adaptive windows start at the protocol default (65535) and grow with the
    // measured bandwidth-delay product; a fixed size set too would turn them off.
    let mut http2 = Http2Config { adaptive_window: true, ..Default::default() };
    http2.initial_stream_window_size = Some(4 * 1024 * 1024);
    let adaptive = start(ServerConfig { http2, ..Default::default() }, 0);
    let s = server_settings(&adaptive.addr).await;
    assert!(s.iter().all(|&(id, v)| id != INITIAL_WINDOW_SIZE || v == 65535), "{s:?}");
}
