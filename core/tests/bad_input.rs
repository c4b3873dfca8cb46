//! Bad input over real sockets: raw HTTP/2 clients (the `h2` crate) and raw TCP
//! against a real Courier server. Each case checks the precise gRPC status and
//! message, and that the server keeps serving afterwards, on a new connection
//! and (where it survived) on the same one.
//!
//! A panic hook records every panic on a server thread (`courier-*`) or on this
//! file's host threads; only panics inside the test service's handlers
//! (common/mod.rs) are allowed, everything else fails the test that looks next.

mod common;

use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::start;
use courier_core::*;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, SendStream};
use http::{HeaderMap, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Generous bound on anything that should take milliseconds.
const T: Duration = Duration::from_secs(5);

const GRPC: &[(&str, &str)] = &[("content-type", "application/grpc"), ("te", "trailers")];

// ---------------------------------------------------------------------------
// Panic watch

static IO_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HANDLER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

fn watch_panics() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("<unnamed>").to_string();
            if thread.starts_with("courier-") || thread.starts_with("bad-input-host") {
                let p = info.payload();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let line = format!("{thread}: {msg} at {:?}", info.location());
                // Handlers of the test service live in common/mod.rs; their panics are allowed.
                let in_handler = info.location().is_some_and(|l| l.file().ends_with("common/mod.rs"));
                if in_handler {
                    HANDLER_PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                } else {
                    IO_PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            }
            prev(info);
        }));
    });
}

fn assert_no_server_panics() {
    let p = IO_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(p.is_empty(), "server threads panicked: {p:#?}");
}

// ---------------------------------------------------------------------------
// Server: common's test service, host calls served by a recording host thread

/// Messages the host threads started handling, in order.
type Runs = Arc<Mutex<Vec<String>>>;

struct Srv {
    s: common::TestServer,
    runs: Runs,
}

impl Srv {
    fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }
    fn addr(&self) -> &str {
        &self.s.addr
    }
}

/// One I/O thread (so the bad connection and the good ones share it) and
/// `host_threads` recording host threads.
fn server(host_threads: usize) -> Srv {
    watch_panics();
    let s = start(ServerConfig { workers: 1, ..Default::default() }, 0);
    let runs: Runs = Default::default();
    for i in 0..host_threads {
        let (q, runs) = (s.host.clone(), runs.clone());
        std::thread::Builder::new()
            .name(format!("bad-input-host-{i}"))
            .spawn(move || recording_worker(q, runs))
            .unwrap();
    }
    Srv { s, runs }
}

/// Like common's host worker, but records each call it runs, and never
/// unwraps request bytes. Unary `s<ms>` blocks the thread for `ms`.
fn recording_worker(q: HostQueue, runs: Runs) {
    while let Ok(batch) = q.next_batch(64, None) {
        let mut replies = ReplyBatch::with_capacity(batch.len());
        for call in batch {
            let (_ctx, method, req, reply) = call.into_parts();
            match (req, reply) {
                (HostRequest::Message(m), HostReply::Unary(r)) => {
                    runs.lock().unwrap().push(String::from_utf8_lossy(&m).into_owned());
                    let ms = m.strip_prefix(b"s").and_then(|d| std::str::from_utf8(d).ok()?.parse::<u64>().ok());
                    if let Some(ms) = ms {
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                    replies.push(r, Ok(m));
                }
                (HostRequest::Stream(mut rx), HostReply::Unary(r)) => {
                    runs.lock().unwrap().push(format!("stream {}", method.path()));
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
                (_, HostReply::Stream(tx)) => {
                    runs.lock().unwrap().push(format!("stream {}", method.path()));
                    tx.blocking_finish(Err(Status::new(Code::Unimplemented, "not in this test")));
                }
            }
        }
        replies.flush();
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/2 client

struct Conn {
    send: SendRequest<Bytes>,
    driver: JoinHandle<Result<(), h2::Error>>,
}

async fn connect(addr: &str) -> Conn {
    let tcp = tokio::time::timeout(T, TcpStream::connect(addr)).await.expect("connect timed out").unwrap();
    let (send, conn) = tokio::time::timeout(T, h2::client::handshake(tcp)).await.expect("handshake timed out").unwrap();
    Conn { send, driver: tokio::spawn(conn) }
}

impl Conn {
    /// Drops the TCP connection (the driver task owns the socket).
    async fn kill(&mut self) {
        self.driver.abort();
        let _ = (&mut self.driver).await;
    }
}

/// A gRPC message frame: flag byte, big-endian length, bytes.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// A frame prefix with any flag and announced length.
fn prefix(flag: u8, len: u32) -> Vec<u8> {
    let mut v = vec![flag];
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Opens a stream: headers, then `body` as one DATA frame (`end` = END_STREAM).
async fn open(
    conn: &mut Conn,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    end: bool,
) -> (ResponseFuture, SendStream<Bytes>) {
    let mut b = Request::builder().method("POST").uri(format!("http://courier.test{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(()).unwrap();
    let mut send = tokio::time::timeout(T, conn.send.clone().ready()).await.expect("ready timed out").unwrap();
    let headers_end = end && body.is_empty();
    let (resp, mut stream) = send.send_request(req, headers_end).unwrap();
    if !body.is_empty() {
        stream.send_data(Bytes::copy_from_slice(body), end).unwrap();
    }
    (resp, stream)
}

#[derive(Debug)]
struct Resp {
    http: http::StatusCode,
    headers: HeaderMap,
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
}

impl Resp {
    /// The gRPC status: from the trailers, or from the headers of a trailers-only response.
    fn grpc(&self) -> (Code, String) {
        let h = self.trailers.as_ref().unwrap_or(&self.headers);
        let code = h.get("grpc-status").unwrap_or_else(|| panic!("no grpc-status in {self:?}"));
        let code = Code::from_i32(code.to_str().unwrap().parse().unwrap());
        let msg = h.get("grpc-message").map(|m| m.to_str().unwrap()).unwrap_or("");
        (code, percent_encoding::percent_decode_str(msg).decode_utf8_lossy().into_owned())
    }

    /// Asserts the status code and that the message contains `needle`.
    #[track_caller]
    fn expect(&self, code: Code, needle: &str) {
        assert_eq!(self.http, 200, "{self:?}");
        let (c, m) = self.grpc();
        assert_eq!(c, code, "message {m:?}; {self:?}");
        assert!(m.contains(needle), "{m:?} does not contain {needle:?}");
    }

    #[track_caller]
    fn expect_ok(&self, msg: &[u8]) {
        assert_eq!(self.grpc(), (Code::Ok, String::new()), "{self:?}");
        assert_eq!(self.data, frame(msg), "{self:?}");
    }
}

async fn read(resp: ResponseFuture) -> Result<Resp, h2::Error> {
    tokio::time::timeout(T, async {
        let (parts, mut body) = resp.await?.into_parts();
        let mut data = Vec::new();
        while let Some(d) = body.data().await {
            let d = d?;
            let _ = body.flow_control().release_capacity(d.len());
            data.extend_from_slice(&d);
        }
        let trailers = body.trailers().await?;
        Ok(Resp { http: parts.status, headers: parts.headers, data, trailers })
    })
    .await
    .expect("no response in time")
}

/// One whole call: headers, body, END_STREAM, response.
async fn call(conn: &mut Conn, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let (resp, _stream) = open(conn, path, headers, body, true).await;
    read(resp).await.unwrap_or_else(|e| panic!("{path}: {e:?}"))
}

async fn good_call(conn: &mut Conn, svc: &str) {
    let r = call(conn, &format!("/courier.test.{svc}/UnaryUnary"), GRPC, &frame(b"egood")).await;
    r.expect_ok(b"egood");
}

/// The server still serves: a good call on a new connection (native and, if
/// there are host threads, host), and on `same` if that connection survived.
async fn still_serving(srv: &Srv, same: Option<&mut Conn>, host: bool) {
    let svcs: &[&str] = if host { &["Test", "Host"] } else { &["Test"] };
    let mut fresh = connect(srv.addr()).await;
    for svc in svcs {
        good_call(&mut fresh, svc).await;
    }
    if let Some(c) = same {
        for svc in svcs {
            good_call(c, svc).await;
        }
    }
    assert_no_server_panics();
}

async fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < T, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const UNARY: [&str; 2] = ["/courier.test.Test/UnaryUnary", "/courier.test.Host/UnaryUnary"];
const CLIENT_STREAMING: [&str; 2] = ["/courier.test.Test/StreamUnary", "/courier.test.Host/StreamUnary"];

// ---------------------------------------------------------------------------
// Message framing

#[tokio::test]
async fn truncated_frame_is_internal() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let mut body = prefix(0, 10);
    body.extend_from_slice(b"abc");
    for path in UNARY.iter().chain(&CLIENT_STREAMING) {
        let r = call(&mut c, path, GRPC, &body).await;
        r.expect(Code::Internal, "stream ended inside a message frame (8 bytes of an incomplete frame)");
    }
    // Bidi: one good message goes through, then the truncated one ends the call in trailers.
    let mut body = frame(b"x");
    body.extend(prefix(0, 10));
    let r = call(&mut c, "/courier.test.Test/StreamStream", GRPC, &body).await;
    assert_eq!(r.data, frame(b"x"), "{r:?}");
    assert!(r.trailers.is_some(), "status comes in trailers after a message: {r:?}");
    r.expect(Code::Internal, "incomplete frame");
    // The host threads never ran the unary calls; they saw the streams.
    assert!(!srv.runs().iter().any(|m| !m.starts_with("stream")), "{:?}", srv.runs());
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn compressed_flag_without_grpc_encoding_is_internal() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let mut body = prefix(1, 2);
    body.extend_from_slice(b"zz");
    for path in UNARY.iter().chain(&CLIENT_STREAMING) {
        let r = call(&mut c, path, GRPC, &body).await;
        r.expect(Code::Internal, "compressed flag set on a message but no grpc-encoding was negotiated");
    }
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn invalid_flag_byte_is_internal() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    for flag in [7u8, 2, 0x80, 0xff] {
        let mut body = prefix(flag, 2);
        body.extend_from_slice(b"zz");
        for path in UNARY.iter().chain(&CLIENT_STREAMING) {
            let r = call(&mut c, path, GRPC, &body).await;
            r.expect(Code::Internal, &format!("invalid message frame flag {flag:#04x}"));
        }
    }
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn unary_with_no_message_or_two_messages_is_internal() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let mut two = frame(b"eone");
    two.extend(frame(b"etwo"));
    let paths = UNARY.iter().chain(&["/courier.test.Test/UnaryStream", "/courier.test.Host/UnaryStream"]);
    for path in paths {
        // END_STREAM on the headers, no DATA at all.
        let r = call(&mut c, path, GRPC, b"").await;
        r.expect(Code::Internal, "client sent no request message");
        // An empty DATA frame with END_STREAM: still no message.
        let (resp, mut st) = open(&mut c, path, GRPC, b"", false).await;
        st.send_data(Bytes::new(), true).unwrap();
        read(resp).await.unwrap().expect(Code::Internal, "client sent no request message");
        let r = call(&mut c, path, GRPC, &two).await;
        r.expect(Code::Internal, "client sent more than one request message for a unary request");
    }
    // A zero-length message is a message.
    let r = call(&mut c, UNARY[0], GRPC, &frame(b"")).await;
    r.expect_ok(b"");
    assert_eq!(srv.runs(), Vec::<String>::new(), "no host handler ran");
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn oversized_prefix_is_refused_before_the_body_arrives() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let paths = UNARY.iter().chain(&CLIENT_STREAMING).chain(&["/courier.test.Test/StreamStream"]);
    for path in paths {
        // Announce 100 MiB, send three bytes, keep the stream open: the answer
        // cannot wait for (or buffer) the rest.
        let mut body = prefix(0, 100 * 1024 * 1024);
        body.extend_from_slice(b"abc");
        let (resp, st) = open(&mut c, path, GRPC, &body, false).await;
        let r = read(resp).await.unwrap();
        r.expect(Code::ResourceExhausted, "received message larger than max (104857600 vs. 4194304)");
        drop(st);
    }
    // Just over the limit, also refused from the prefix alone.
    let (resp, _st) = open(&mut c, UNARY[0], GRPC, &prefix(0, 4 * 1024 * 1024 + 1), false).await;
    read(resp).await.unwrap().expect(Code::ResourceExhausted, "4194305 vs. 4194304");
    still_serving(&srv, Some(&mut c), true).await;
}

// ---------------------------------------------------------------------------
// Headers

#[tokio::test]
async fn grpc_encoding_gzip_is_unimplemented_with_accept_encoding() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let gz = [GRPC, &[("grpc-encoding", "gzip")]].concat();
    let mut body = prefix(1, 2);
    body.extend_from_slice(b"zz");
    for path in UNARY {
        let r = call(&mut c, path, &gz, &body).await;
        r.expect(Code::Unimplemented, "message encoding \"gzip\" is not supported");
        assert_eq!(r.headers.get("grpc-accept-encoding").map(|v| v.to_str().unwrap()), Some("identity"), "{r:?}");
    }
    // `identity` is fine.
    let id = [GRPC, &[("grpc-encoding", "identity")]].concat();
    call(&mut c, UNARY[0], &id, &frame(b"eid")).await.expect_ok(b"eid");
    assert_eq!(srv.runs(), Vec::<String>::new());
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn malformed_grpc_timeout_is_internal_and_valid_edges_work() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    for bad in ["", "1x", "123456789S", "-1S", "1.5S", "S", "10", " 1S", "1s"] {
        let h = [GRPC, &[("grpc-timeout", bad)]].concat();
        for path in UNARY {
            let r = call(&mut c, path, &h, &frame(b"ebad")).await;
            r.expect(Code::Internal, "grpc-timeout");
        }
    }
    assert_eq!(srv.runs(), Vec::<String>::new(), "no host handler ran");
    // Edges that are valid: 8 digits of nanoseconds (0.1 s), 8 digits of hours.
    for ok in ["99999999n", "99999999H", "1H"] {
        let h = [GRPC, &[("grpc-timeout", ok)]].concat();
        for path in UNARY {
            call(&mut c, path, &h, &frame(b"eedge")).await.expect_ok(b"eedge");
        }
    }
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn zero_grpc_timeout_is_deadline_exceeded_without_running_the_handler() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    for zero in ["0m", "0n", "0S"] {
        let h = [GRPC, &[("grpc-timeout", zero)]].concat();
        // `c` would record a DeadlineExceeded cancellation if the native handler ran.
        for path in UNARY {
            let r = call(&mut c, path, &h, &frame(b"c")).await;
            r.expect(Code::DeadlineExceeded, "deadline exceeded before the call started");
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*srv.s.cancelled.lock().unwrap(), None, "native handler ran");
    assert_eq!(srv.runs(), Vec::<String>::new(), "host handler ran");
    assert_eq!(srv.s.host.len(), 0, "nothing was queued");
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_http_415() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("content-type", "text/plain"), ("te", "trailers")], "content-type is not application/grpc"),
        (&[("content-type", "application/grpcx"), ("te", "trailers")], "content-type is not application/grpc"),
        (&[("te", "trailers")], "missing content-type"),
    ];
    for (h, why) in cases {
        for path in UNARY {
            let r = call(&mut c, path, h, &frame(b"ect")).await;
            assert_eq!(r.http, http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
            assert_eq!(r.headers.get("x-courier-error").map(|v| v.to_str().unwrap()), Some(why), "{r:?}");
        }
    }
    // Suffixed gRPC content types are gRPC.
    for ct in ["application/grpc+proto", "application/grpc;charset=utf-8"] {
        let r = call(&mut c, UNARY[0], &[("content-type", ct), ("te", "trailers")], &frame(b"esfx")).await;
        r.expect_ok(b"esfx");
    }
    assert_eq!(srv.runs(), Vec::<String>::new());
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn non_post_requests_are_http_405() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    for method in ["GET", "PUT", "DELETE"] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://courier.test{}", UNARY[0]))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut send = tokio::time::timeout(T, c.send.clone().ready()).await.expect("ready timed out").unwrap();
        let (resp, _stream) = send.send_request(req, true).unwrap();
        let r = read(resp).await.unwrap();
        assert_eq!(r.http, http::StatusCode::METHOD_NOT_ALLOWED, "{method}: {r:?}");
        assert_eq!(r.headers.get("x-courier-error").map(|v| v.to_str().unwrap()), Some("gRPC requests must be POST"));
    }
    assert_eq!(srv.runs(), Vec::<String>::new());
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn unknown_method_and_unknown_service_are_unimplemented() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    for path in
        ["/courier.test.Test/Nope", "/no.Such/Method", "/courier.test.Test", "/", "/courier.test.Test/UnaryUnary/extra"]
    {
        let r = call(&mut c, path, GRPC, &frame(b"e")).await;
        r.expect(Code::Unimplemented, &format!("unknown method {path}"));
    }
    still_serving(&srv, Some(&mut c), true).await;
}

/// Not bad input, but a wire-level check this file's raw client can make: reply
/// headers a handler set before failing go out as response headers, the status
/// and the handler's trailers in trailers (as grpc-go and grpc-core servers send
/// them); a failure without reply headers stays trailers-only.
#[tokio::test]
async fn reply_headers_of_a_failed_call_are_headers_not_trailers() {
    let srv = server(0);
    let mut c = connect(srv.addr()).await;
    let md = [GRPC[0], GRPC[1], ("x-test", "v1")];
    let r = call(&mut c, "/courier.test.Test/UnaryUnary", &md, &frame(b"mf")).await;
    r.expect(Code::NotFound, "metadata, then a failure");
    assert_eq!(r.headers["x-reply-header"], "v1", "{r:?}");
    assert!(r.headers.get("grpc-status").is_none(), "{r:?}");
    assert!(r.data.is_empty(), "{r:?}");
    let trailers = r.trailers.as_ref().expect("the status comes in trailers");
    assert_eq!(trailers["x-reply-trailer"], "v1", "{r:?}");
    assert!(trailers.get("x-reply-header").is_none(), "{r:?}");

    let r = call(&mut c, "/courier.test.Test/UnaryUnary", GRPC, &frame(b"f5")).await;
    r.expect(Code::NotFound, "failed as asked");
    assert!(r.trailers.is_none() && r.headers.get("grpc-status").is_some(), "trailers-only: {r:?}");
    still_serving(&srv, Some(&mut c), false).await;
}

// ---------------------------------------------------------------------------
// Clients that go away

#[tokio::test]
async fn client_reset_cancels_the_native_handler() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let (resp, mut st) = open(&mut c, UNARY[0], GRPC, &frame(b"c"), true).await;
    // Give the handler time to start (it has no start signal); not a timing assertion.
    tokio::time::sleep(Duration::from_millis(250)).await;
    st.send_reset(Reason::CANCEL);
    poll_until("the handler's ctx to be cancelled", || srv.s.cancelled.lock().unwrap().is_some()).await;
    assert_eq!(*srv.s.cancelled.lock().unwrap(), Some(CancelReason::Cancelled));
    // Our side sees its own reset.
    let e = read(resp).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::CANCEL), "{e:?}");
    still_serving(&srv, Some(&mut c), true).await;
}

/// One host thread busy with `s500`; a second call waits in the queue; its
/// client goes away (stream reset, or the whole connection dropped).
async fn queued_host_call_of_a_departed_client(drop_connection: bool) {
    let srv = server(1);
    let mut a = connect(srv.addr()).await;
    let (busy, _busy_st) = open(&mut a, UNARY[1], GRPC, &frame(b"s500"), true).await;
    poll_until("the host thread to take s500", || srv.runs() == ["s500"]).await;

    let mut b = connect(srv.addr()).await;
    let (queued, mut queued_st) = open(&mut b, UNARY[1], GRPC, &frame(b"equeued"), true).await;
    poll_until("the second call to be queued", || srv.s.host.len() == 1).await;
    if drop_connection {
        drop((queued, queued_st));
        b.kill().await;
    } else {
        queued_st.send_reset(Reason::CANCEL);
        assert_eq!(read(queued).await.unwrap_err().reason(), Some(Reason::CANCEL));
    }

    // The busy call completes normally; the host thread then drops the
    // cancelled call at pull time instead of running it.
    read(busy).await.unwrap().expect_ok(b"s500");
    poll_until("the queue to be empty", || srv.s.host.is_empty()).await;
    assert_eq!(srv.runs(), ["s500"], "the queued call of a departed client ran");

    // The same thread serves a fresh call, on a new connection and on the busy one's.
    let same = if drop_connection { None } else { Some(&mut b) };
    still_serving(&srv, same, true).await;
    good_call(&mut a, "Host").await;
    assert!(!srv.runs().iter().any(|m| m == "equeued"), "{:?}", srv.runs());
    assert_eq!(srv.s.host.len(), 0);
}

#[tokio::test]
async fn queued_host_call_of_a_reset_stream_never_runs() {
    queued_host_call_of_a_departed_client(false).await;
}

#[tokio::test]
async fn queued_host_call_of_a_dropped_connection_never_runs() {
    queued_host_call_of_a_departed_client(true).await;
}

#[tokio::test]
async fn client_disconnect_while_a_host_call_runs() {
    let srv = server(1);
    let mut a = connect(srv.addr()).await;
    let (resp, st) = open(&mut a, UNARY[1], GRPC, &frame(b"s300"), true).await;
    poll_until("the host thread to take s300", || srv.runs() == ["s300"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop((resp, st));
    a.kill().await;
    // The host thread finishes and replies into the void; then serves others.
    still_serving(&srv, None, true).await;
    assert_eq!(srv.runs(), ["s300", "egood"]);
    assert_eq!(srv.s.host.len(), 0);
}

#[tokio::test]
async fn client_disconnect_while_a_native_handler_runs() {
    let srv = server(0);
    let mut a = connect(srv.addr()).await;
    let (_resp, _st) = open(&mut a, UNARY[0], GRPC, &frame(b"c"), true).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    a.kill().await;
    poll_until("the handler's ctx to be cancelled", || srv.s.cancelled.lock().unwrap().is_some()).await;
    assert_eq!(*srv.s.cancelled.lock().unwrap(), Some(CancelReason::Cancelled));
    still_serving(&srv, None, false).await;
}

// ---------------------------------------------------------------------------
// Transport-level garbage

/// Reads until the server closes the connection (EOF or reset).
async fn until_closed(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(T, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server kept a connection open after a bad preface");
}

#[tokio::test]
async fn garbage_instead_of_the_http2_preface_closes_the_connection() {
    let srv = server(1);
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42],
    ];
    for g in garbage {
        let mut tcp = TcpStream::connect(srv.addr()).await.unwrap();
        let _ = tcp.write_all(g).await;
        until_closed(&mut tcp).await;
    }
    // A valid preface followed by a garbage frame (DATA on stream 0).
    let mut tcp = TcpStream::connect(srv.addr()).await.unwrap();
    let mut bad = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bad.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    bad.extend([0, 0, 4, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]); // DATA on stream 0
    let _ = tcp.write_all(&bad).await;
    until_closed(&mut tcp).await;
    still_serving(&srv, None, true).await;
}

#[tokio::test]
async fn silent_and_stalled_clients_do_not_block_others() {
    let srv = server(1);
    // One connection that sends nothing, one that stalls mid-preface, one
    // that stalls mid-frame; all on the server's only I/O thread.
    let _silent = TcpStream::connect(srv.addr()).await.unwrap();
    let mut half = TcpStream::connect(srv.addr()).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut mid = TcpStream::connect(srv.addr()).await.unwrap();
    mid.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0\0\0\x40\x01").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        still_serving(&srv, None, true).await;
    }
    // A half-sent request body (prefix announces 10 bytes, 3 sent, stream open)
    // occupies only its own stream.
    let mut c = connect(srv.addr()).await;
    let mut body = prefix(0, 10);
    body.extend_from_slice(b"abc");
    let (_resp, _st) = open(&mut c, UNARY[0], GRPC, &body, false).await;
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn rapid_reset_of_many_streams() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    // 200 streams, each reset right after its headers (the "rapid reset" pattern).
    for _ in 0..200 {
        let Ok(mut send) = c.send.clone().ready().await else { break };
        let Ok((_resp, mut st)) = send.send_request(
            Request::post("http://courier.test/courier.test.Test/UnaryUnary")
                .header("content-type", "application/grpc")
                .body(())
                .unwrap(),
            false,
        ) else {
            break;
        };
        st.send_reset(Reason::CANCEL);
    }
    // What h2 does: streams reset before the server accepted them count against
    // `max_pending_accept_reset_streams` (20 by default; the server does not
    // change it); past it the server sends GOAWAY(ENHANCE_YOUR_CALM,
    // "too_many_resets") and closes that connection. That is what happens in
    // practice; since it depends on how the resets batch up in reads, the test
    // also accepts the same connection serving on.
    let same = tokio::time::timeout(T, async {
        let mut send = c.send.clone().ready().await?;
        let req = Request::post("http://courier.test/courier.test.Test/UnaryUnary")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, mut st) = send.send_request(req, false)?;
        st.send_data(Bytes::from(frame(b"egood")), true)?;
        read(resp).await
    })
    .await
    .expect("the same connection hung");
    match same {
        Ok(r) => {
            r.expect_ok(b"egood");
            eprintln!("rapid reset: the same connection kept serving");
        }
        Err(e) => {
            assert!(e.is_go_away() || e.is_remote() || e.is_io(), "{e:?}");
            let driver = tokio::time::timeout(T, &mut c.driver).await.expect("connection did not end").unwrap();
            let err = driver.expect_err("connection ended cleanly");
            // Usually the GOAWAY is read; sometimes the server's close (with our
            // later frames still unread) resets the socket under our writes first.
            assert!((err.is_go_away() && err.reason() == Some(Reason::ENHANCE_YOUR_CALM)) || err.is_io(), "{err:?}");
            eprintln!("rapid reset: the server ended the connection with {err:?}");
        }
    }
    still_serving(&srv, None, true).await;
    // The reset streams ran nothing that is left behind.
    assert_eq!(srv.s.host.len(), 0);
}

// ---------------------------------------------------------------------------
// Panics

#[tokio::test]
async fn a_panicking_handler_is_internal_and_the_detector_sees_it() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    let r = call(&mut c, UNARY[0], GRPC, &frame(b"p")).await;
    r.expect(Code::Internal, "handler panicked: boom");
    // The panic hook saw it (so it would also see an I/O-thread panic).
    assert!(
        HANDLER_PANICS.lock().unwrap().iter().any(|p| p.starts_with("courier-io-") && p.contains("boom")),
        "{:?}",
        HANDLER_PANICS.lock().unwrap()
    );
    // A bad `s` argument panics inside the handler too: INTERNAL, not a crash.
    let r = call(&mut c, UNARY[0], GRPC, &frame(b"snot-a-number")).await;
    r.expect(Code::Internal, "handler panicked");
    still_serving(&srv, Some(&mut c), true).await;
}

// ---------------------------------------------------------------------------
// Odd but legal, and oversized headers

#[tokio::test]
async fn request_trailers_are_ignored() {
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    for path in UNARY.iter().chain(&CLIENT_STREAMING) {
        let (resp, mut st) = open(&mut c, path, GRPC, &frame(b"etrl"), false).await;
        let mut t = HeaderMap::new();
        t.insert("x-request-trailer", "1".parse().unwrap());
        st.send_trailers(t).unwrap();
        read(resp).await.unwrap().expect_ok(b"etrl");
    }
    still_serving(&srv, Some(&mut c), true).await;
}

#[tokio::test]
async fn oversized_request_headers() {
    // hyper's server advertises SETTINGS_MAX_HEADER_LIST_SIZE = 16 KiB.
    let srv = server(1);
    let mut c = connect(srv.addr()).await;
    // Over the limit: h2 answers that stream HTTP 431 and the connection lives on.
    let big = "x".repeat(20 * 1024);
    let h = [GRPC, &[("x-big", big.as_str())]].concat();
    let (resp, _st) = open(&mut c, UNARY[0], &h, &frame(b"ebig"), true).await;
    match read(resp).await {
        Ok(r) => assert_eq!(r.http, http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{r:?}"),
        Err(e) => assert_eq!(e.reason(), Some(Reason::REFUSED_STREAM), "{e:?}"),
    }
    assert_eq!(srv.runs(), Vec::<String>::new());
    still_serving(&srv, Some(&mut c), true).await;

    // Far over it (h2's abuse limit): GOAWAY(ENHANCE_YOUR_CALM) for that connection.
    let huge = "x".repeat(256 * 1024);
    let h = [GRPC, &[("x-big", huge.as_str())]].concat();
    let (resp, _st) = open(&mut c, UNARY[0], &h, &frame(b"ehuge"), true).await;
    let e = read(resp).await.unwrap_err();
    assert!(e.is_go_away() || e.is_io(), "{e:?}");
    if e.is_go_away() {
        assert_eq!(e.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{e:?}");
    }
    assert!(!srv.runs().iter().any(|m| m == "ehuge" || m == "ebig"), "{:?}", srv.runs());
    still_serving(&srv, None, true).await;
}
