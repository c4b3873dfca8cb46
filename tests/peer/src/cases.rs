//! Interop cases: a Courier [`Channel`] against any server implementing
//! `courier.test.Test` (Courier, stock grpcio, ...). Each case returns `Err`
//! with a precise "expected ..., got ..." message on the first mismatch.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_core::{AppError, Channel, Code, Ctx, Reply, ReplyStream, Status};
use futures_util::StreamExt;
use http::HeaderMap;
use prost::Message;

use crate::proto::{TestError, TestRequest, TestResponse, TEST_ERROR_ENUM};
use crate::service::{method_desc, ECHO_HEADER, ECHO_TRAILER};

/// Every case `--case all` runs, in order (`demo` is not one of them).
pub const CASES: &[&str] = &[
    "unary",
    "server_streaming",
    "client_streaming",
    "bidi_streaming",
    "deadline_exceeded",
    "deadline_propagated",
    "status_codes",
    "app_error",
    "metadata",
    "large_message",
    "oversize_request",
];

/// How a case run is configured.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The server is a Courier server: it must send the `courier-app-error` trailer.
    pub courier_server: bool,
}

/// Runs one case by name.
pub async fn run(ch: &Channel, case: &str, opts: &Options) -> Result<(), String> {
    match case {
        "unary" => unary(ch).await,
        "server_streaming" => server_streaming(ch).await,
        "client_streaming" => client_streaming(ch).await,
        "bidi_streaming" => bidi_streaming(ch).await,
        "deadline_exceeded" => deadline_exceeded(ch).await,
        "deadline_propagated" => deadline_propagated(ch).await,
        "status_codes" => status_codes(ch).await,
        "app_error" => app_error(ch, opts).await,
        "metadata" => metadata(ch).await,
        "large_message" => large_message(ch).await,
        "oversize_request" => oversize_request(ch).await,
        other => Err(format!("unknown case {other:?}; cases: {}, all, demo", CASES.join(", "))),
    }
}

// ---------------------------------------------------------------- helpers

fn check<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want:?}, got {got:?}"))
    }
}

fn ensure(what: &str, ok: bool, got: impl Debug) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}"))
    }
}

fn call_failed(what: &str, s: Status) -> String {
    format!("{what}: expected success, got status {} {:?}", s.code(), s.message())
}

fn expect_status<T: Debug>(what: &str, r: Result<T, Status>, code: Code) -> Result<Status, String> {
    match r {
        Ok(v) => Err(format!("{what}: expected status {code}, got success {v:?}")),
        Err(s) if s.code() == code => Ok(s),
        Err(s) => Err(format!("{what}: expected status {code}, got {} {:?}", s.code(), s.message())),
    }
}

fn decode(what: &str, b: &[u8]) -> Result<TestResponse, String> {
    TestResponse::decode(b).map_err(|e| format!("{what}: response is not a TestResponse: {e}"))
}

fn enc(r: &TestRequest) -> Bytes {
    Bytes::from(r.encode_to_vec())
}

fn req(s: &str) -> TestRequest {
    TestRequest { s: s.into(), ..Default::default() }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn call_unary(ch: &Channel, ctx: &Ctx, r: &TestRequest, md: &HeaderMap) -> Result<Reply, Status> {
    ch.unary(ctx, &method_desc("UnaryUnary"), enc(r), md).await
}

async fn unary_ok(what: &str, ch: &Channel, ctx: &Ctx, r: &TestRequest, md: &HeaderMap) -> Result<(TestResponse, Reply), String> {
    let reply = call_unary(ch, ctx, r, md).await.map_err(|s| call_failed(what, s))?;
    Ok((decode(what, &reply.message)?, reply))
}

/// Reads a stream to its end: the messages, then the final status.
async fn drain(what: &str, st: &mut ReplyStream) -> (Vec<TestResponse>, Result<(), Status>) {
    let mut out = Vec::new();
    loop {
        match st.message().await {
            Ok(Some(m)) => match TestResponse::decode(&m[..]) {
                Ok(r) => out.push(r),
                Err(e) => return (out, Err(Status::internal(format!("{what}: bad TestResponse: {e}")))),
            },
            Ok(None) => return (out, Ok(())),
            Err(s) => return (out, Err(s)),
        }
    }
}

/// A pattern that makes misplaced bytes visible.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn no_md() -> HeaderMap {
    HeaderMap::new()
}

/// A request stream fed by hand (for ping-pong bidi calls).
fn feed() -> (tokio::sync::mpsc::UnboundedSender<Bytes>, impl futures_util::Stream<Item = Bytes> + Send + 'static) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (tx, stream)
}

// ---------------------------------------------------------------- cases

async fn unary(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    let r = TestRequest { s: "hello, Courier".into(), payload: (0..=255u8).collect(), ..Default::default() };
    let (resp, _) = unary_ok("UnaryUnary", ch, &ctx, &r, &no_md()).await?;
    check("UnaryUnary s", resp.s.as_str(), "hello, Courier")?;
    check("UnaryUnary payload", &resp.payload, &r.payload)?;
    check("UnaryUnary index", resp.index, 0)?;
    check("UnaryUnary deadline_ms (not asked)", resp.deadline_ms, 0)?;
    check("UnaryUnary request_id (the ctx's, sent as x-request-id)", resp.request_id.as_str(), ctx.request_id())?;
    // An empty request is a valid message too.
    let (resp, _) = unary_ok("UnaryUnary (empty request)", ch, &ctx, &TestRequest::default(), &no_md()).await?;
    check("UnaryUnary (empty request) s", resp.s.as_str(), "")?;
    check("UnaryUnary (empty request) payload", resp.payload.len(), 0)
}

async fn server_streaming(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    let m = method_desc("UnaryStream");
    let r = TestRequest { s: "tick".into(), payload: vec![7, 7], count: 5, ..Default::default() };
    let mut st = ch.server_streaming(&ctx, &m, enc(&r), &no_md()).await.map_err(|s| call_failed("UnaryStream count=5", s))?;
    let (msgs, end) = drain("UnaryStream count=5", &mut st).await;
    end.map_err(|s| call_failed("UnaryStream count=5 final status", s))?;
    check("UnaryStream count=5 indexes", msgs.iter().map(|m| m.index).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4])?;
    for m in &msgs {
        check("UnaryStream s", m.s.as_str(), "tick")?;
        check("UnaryStream payload", m.payload.as_slice(), &[7u8, 7][..])?;
    }
    ensure("UnaryStream trailers after the end", st.trailers().is_some(), st.trailers())?;

    let r = TestRequest { count: 0, ..req("none") };
    let mut st = ch.server_streaming(&ctx, &m, enc(&r), &no_md()).await.map_err(|s| call_failed("UnaryStream count=0", s))?;
    let (msgs, end) = drain("UnaryStream count=0", &mut st).await;
    end.map_err(|s| call_failed("UnaryStream count=0 final status", s))?;
    check("UnaryStream count=0 messages", msgs.len(), 0)?;

    // An error after some messages arrives as the final status.
    let r = TestRequest { count: 2, fail_code: Code::Aborted as i32, fail_message: "stop after two".into(), ..req("x") };
    let (msgs, end) = match ch.server_streaming(&ctx, &m, enc(&r), &no_md()).await {
        Ok(mut st) => drain("UnaryStream count=2 then ABORTED", &mut st).await,
        Err(s) => (Vec::new(), Err(s)),
    };
    check("UnaryStream count=2 then ABORTED: messages before the error", msgs.len(), 2)?;
    let s = expect_status("UnaryStream count=2 then ABORTED", end, Code::Aborted)?;
    check("UnaryStream error message", s.message(), "stop after two")
}

async fn client_streaming(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    let m = method_desc("StreamUnary");
    let parts = [("al", vec![1u8]), ("pha", vec![2, 3]), ("bet", vec![])];
    let reqs: Vec<Bytes> =
        parts.iter().map(|(s, p)| enc(&TestRequest { s: (*s).into(), payload: p.clone(), ..Default::default() })).collect();
    let reply = ch
        .client_streaming(&ctx, &m, futures_util::stream::iter(reqs), &no_md())
        .await
        .map_err(|s| call_failed("StreamUnary 3 messages", s))?;
    let resp = decode("StreamUnary", &reply.message)?;
    check("StreamUnary concatenated s", resp.s.as_str(), "alphabet")?;
    check("StreamUnary concatenated payload", resp.payload.as_slice(), &[1u8, 2, 3][..])?;
    check("StreamUnary request_id", resp.request_id.as_str(), ctx.request_id())?;

    let reply = ch
        .client_streaming(&ctx, &m, futures_util::stream::iter(Vec::<Bytes>::new()), &no_md())
        .await
        .map_err(|s| call_failed("StreamUnary 0 messages", s))?;
    check("StreamUnary 0 messages s", decode("StreamUnary", &reply.message)?.s, String::new())?;

    // A failing message ends the call with its status.
    let reqs = vec![
        enc(&req("a")),
        enc(&TestRequest { fail_code: Code::InvalidArgument as i32, fail_message: "bad part".into(), ..req("b") }),
    ];
    let r = ch.client_streaming(&ctx, &m, futures_util::stream::iter(reqs), &no_md()).await;
    let s = expect_status("StreamUnary with a failing message", r, Code::InvalidArgument)?;
    check("StreamUnary failure message", s.message(), "bad part")
}

async fn bidi_streaming(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    let m = method_desc("StreamStream");
    // Ping-pong: each request is sent only after the previous answer arrived,
    // so the server must answer each message as it arrives.
    let (tx, requests) = feed();
    let ping = |i: i32| enc(&TestRequest { s: format!("ping {i}"), payload: vec![i as u8], ..Default::default() });
    tx.send(ping(0)).map_err(|_| "request stream closed".to_string())?;
    let mut st = ch.bidi_streaming(&ctx, &m, requests, &no_md()).await.map_err(|s| call_failed("StreamStream", s))?;
    for i in 0..4 {
        if i > 0 {
            tx.send(ping(i)).map_err(|_| "request stream closed".to_string())?;
        }
        let got = tokio::time::timeout(Duration::from_secs(5), st.message())
            .await
            .map_err(|_| format!("StreamStream: no answer to ping {i} within 5 s (server does not echo as messages arrive)"))?
            .map_err(|s| call_failed(&format!("StreamStream answer to ping {i}"), s))?
            .ok_or_else(|| format!("StreamStream: stream ended before the answer to ping {i}"))?;
        let got = decode("StreamStream", &got)?;
        check(&format!("StreamStream answer {i} s"), got.s, format!("ping {i}"))?;
        check(&format!("StreamStream answer {i} index"), got.index, i)?;
        check(&format!("StreamStream answer {i} payload"), got.payload, vec![i as u8])?;
    }
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), st.message())
        .await
        .map_err(|_| "StreamStream: stream did not end within 5 s after the client half-closed".to_string())?;
    check("StreamStream end after half-close", end.map(|m| m.map(|b| b.len())), Ok(None))?;

    // A failing message ends the stream after the answers before it.
    let reqs = vec![
        enc(&req("one")),
        enc(&req("two")),
        enc(&TestRequest { fail_code: Code::Aborted as i32, fail_message: "third fails".into(), ..req("three") }),
        enc(&req("never answered")),
    ];
    let (msgs, end) = match ch.bidi_streaming(&ctx, &m, futures_util::stream::iter(reqs), &no_md()).await {
        Ok(mut st) => drain("StreamStream with a failing message", &mut st).await,
        Err(s) => (Vec::new(), Err(s)),
    };
    check("StreamStream answers before the failure", msgs.iter().map(|m| m.s.as_str()).collect::<Vec<_>>(), vec!["one", "two"])?;
    let s = expect_status("StreamStream with a failing message", end, Code::Aborted)?;
    check("StreamStream failure message", s.message(), "third fails")
}

async fn deadline_exceeded(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background().with_timeout(Duration::from_millis(100));
    let r = TestRequest { sleep_ms: 2000, ..req("slow") };
    let t0 = Instant::now();
    let res = call_unary(ch, &ctx, &r, &no_md()).await;
    let took = t0.elapsed();
    expect_status("UnaryUnary sleep 2000 ms with a 100 ms deadline", res.map(|r| r.message), Code::DeadlineExceeded)?;
    ensure("DEADLINE_EXCEEDED within 1 s (took)", took < Duration::from_secs(1), took)?;
    // The same over a stream.
    let ctx = Ctx::background().with_timeout(Duration::from_millis(100));
    let r = TestRequest { sleep_ms: 2000, count: 1, ..req("slow stream") };
    let t0 = Instant::now();
    let end = match ch.server_streaming(&ctx, &method_desc("UnaryStream"), enc(&r), &no_md()).await {
        Ok(mut st) => drain("UnaryStream sleep 2000 ms", &mut st).await.1,
        Err(s) => Err(s),
    };
    let took = t0.elapsed();
    expect_status("UnaryStream sleep 2000 ms with a 100 ms deadline", end, Code::DeadlineExceeded)?;
    ensure("streaming DEADLINE_EXCEEDED within 1 s (took)", took < Duration::from_secs(1), took)?;
    // The server is still fine.
    unary_ok("UnaryUnary after the deadline cases", ch, &Ctx::background(), &req("after"), &no_md()).await.map(|_| ())
}

async fn deadline_propagated(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background().with_timeout(Duration::from_secs(3));
    let r = TestRequest { report_deadline: true, ..req("budget") };
    let (resp, _) = unary_ok("UnaryUnary report_deadline with a 3 s deadline", ch, &ctx, &r, &no_md()).await?;
    ensure(
        "server-side remaining deadline with a 3 s client deadline: expected 2000..=3000 ms",
        (2000..=3000).contains(&resp.deadline_ms),
        resp.deadline_ms,
    )?;
    // Without a ctx deadline the method default (10 s) is sent.
    let (resp, _) = unary_ok("UnaryUnary report_deadline, no ctx deadline", ch, &Ctx::background(), &r, &no_md()).await?;
    ensure(
        "server-side remaining deadline with the 10 s method default: expected 9000..=10000 ms",
        (9000..=10_000).contains(&resp.deadline_ms),
        resp.deadline_ms,
    )?;
    // A child ctx of a handler-like ctx sends what is left of the parent's budget.
    let parent = Ctx::background().with_timeout(Duration::from_millis(2500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (resp, _) = unary_ok("UnaryUnary report_deadline, 2.5 s budget 0.5 s spent", ch, &parent.child(), &r, &no_md()).await?;
    ensure(
        "server-side remaining deadline, 2.5 s budget of which 0.5 s spent: expected 1000..=2000 ms",
        (1000..=2000).contains(&resp.deadline_ms),
        resp.deadline_ms,
    )
}

/// The message of `status_codes` for a code: `%`, non-ASCII and a newline.
pub fn status_message(code: Code) -> String {
    format!("{}: 100% sure %41 naïve café ✓ 日本\nsecond line", code.name())
}

async fn status_codes(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    for code in Code::ALL.into_iter().skip(1) {
        let msg = status_message(code);
        let r = TestRequest { fail_code: code as i32, fail_message: msg.clone(), ..req("fail") };
        let what = format!("UnaryUnary fail_code={}", code.name());
        let s = expect_status(&what, call_unary(ch, &ctx, &r, &no_md()).await.map(|r| r.message), code)?;
        check(&format!("{what} message"), s.message(), msg.as_str())?;
    }
    Ok(())
}

async fn app_error(ch: &Channel, opts: &Options) -> Result<(), String> {
    let ctx = Ctx::background();
    for (value, fail_message, want_msg) in [
        (TestError::Gone as i32, "it is gone for good", "it is gone for good"),
        (TestError::NotReady as i32, "", "app error 1"),
    ] {
        let what = format!("UnaryUnary app_error={value}");
        let r = TestRequest { app_error: value, fail_message: fail_message.into(), ..req("app") };
        let s = expect_status(&what, call_unary(ch, &ctx, &r, &no_md()).await.map(|r| r.message), Code::FailedPrecondition)?;
        check(&format!("{what} message"), s.message(), want_msg)?;
        let want = AppError { enum_name: TEST_ERROR_ENUM.into(), value };
        match (s.app_error_value(), opts.courier_server) {
            (Some(got), _) => check(&format!("{what} courier-app-error"), got, &want)?,
            (None, true) => {
                return Err(format!("{what}: expected app error {TEST_ERROR_ENUM}:{value} in the courier-app-error trailer, got none"))
            }
            (None, false) => {}
        }
    }
    Ok(())
}

async fn metadata(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    let mut md = HeaderMap::new();
    md.insert("x-test-echo", "echo me: 42".parse().expect("valid header"));
    md.insert("x-request-id", "interop-request-1".parse().expect("valid header"));
    let r = TestRequest { echo_header: "x-test-echo".into(), ..req("meta") };
    let (resp, reply) = unary_ok("UnaryUnary echo_header", ch, &ctx, &r, &md).await?;
    check("UnaryUnary metadata_value (request header seen by the server)", resp.metadata_value.as_str(), "echo me: 42")?;
    check("UnaryUnary reply header x-echo-header", header(&reply.headers, ECHO_HEADER), Some("echo me: 42".into()))?;
    check("UnaryUnary reply trailer x-echo-trailer", header(&reply.trailers, ECHO_TRAILER), Some("echo me: 42".into()))?;
    check("UnaryUnary request_id (caller's x-request-id)", resp.request_id.as_str(), "interop-request-1")?;

    // A header the request does not carry: empty value, nothing set.
    let r = TestRequest { echo_header: "x-not-sent".into(), ..req("meta") };
    let (resp, reply) = unary_ok("UnaryUnary echo_header (absent)", ch, &ctx, &r, &no_md()).await?;
    check("absent header metadata_value", resp.metadata_value.as_str(), "")?;
    check("absent header reply header", header(&reply.headers, ECHO_HEADER), None)?;

    // Server streaming: the header comes with the first message, the trailer at the end.
    let r = TestRequest { echo_header: "x-test-echo".into(), count: 2, ..req("meta stream") };
    let mut st = ch
        .server_streaming(&ctx, &method_desc("UnaryStream"), enc(&r), &md)
        .await
        .map_err(|s| call_failed("UnaryStream echo_header", s))?;
    check("UnaryStream reply header x-echo-header", header(st.headers(), ECHO_HEADER), Some("echo me: 42".into()))?;
    let (msgs, end) = drain("UnaryStream echo_header", &mut st).await;
    end.map_err(|s| call_failed("UnaryStream echo_header final status", s))?;
    check("UnaryStream echo_header messages", msgs.iter().map(|m| m.metadata_value.as_str()).collect::<Vec<_>>(), vec!["echo me: 42"; 2])?;
    check(
        "UnaryStream reply trailer x-echo-trailer",
        st.trailers().and_then(|t| header(t, ECHO_TRAILER)),
        Some("echo me: 42".into()),
    )
}

/// Size of `large_message`'s payload.
pub const LARGE: usize = 3 * 1024 * 1024;
/// Size of `oversize_request`'s payload (over the 4 MiB default limit).
pub const OVERSIZE: usize = 5 * 1024 * 1024;

async fn large_message(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    let r = TestRequest { payload: pattern(LARGE), ..req("large") };
    let (resp, _) = unary_ok("UnaryUnary 3 MiB", ch, &ctx, &r, &no_md()).await?;
    check("UnaryUnary 3 MiB payload length", resp.payload.len(), LARGE)?;
    ensure("UnaryUnary 3 MiB payload intact", resp.payload == r.payload, "payload differs")?;
    // And through a bidi stream, twice.
    let reqs = vec![enc(&r), enc(&r)];
    let st = ch
        .bidi_streaming(&ctx, &method_desc("StreamStream"), futures_util::stream::iter(reqs), &no_md())
        .await
        .map_err(|s| call_failed("StreamStream 2 x 3 MiB", s))?;
    let got: Vec<Result<Bytes, Status>> = st.collect().await;
    check("StreamStream 2 x 3 MiB answers", got.len(), 2)?;
    for g in got {
        let m = g.map_err(|s| call_failed("StreamStream 3 MiB", s))?;
        let resp = decode("StreamStream 3 MiB", &m)?;
        ensure("StreamStream 3 MiB payload intact", resp.payload == r.payload, resp.payload.len())?;
    }
    Ok(())
}

async fn oversize_request(ch: &Channel) -> Result<(), String> {
    let ctx = Ctx::background();
    let r = TestRequest { payload: pattern(OVERSIZE), ..req("oversize") };
    let res = call_unary(ch, &ctx, &r, &no_md()).await.map(|r| r.message.len());
    expect_status("UnaryUnary with a 5 MiB request", res, Code::ResourceExhausted)?;
    // The connection and server survive it.
    let (resp, _) = unary_ok("UnaryUnary after the oversize request", ch, &ctx, &req("still here"), &no_md()).await?;
    check("UnaryUnary after the oversize request s", resp.s.as_str(), "still here")
}

// ---------------------------------------------------------------- demo

/// A short human-readable transcript of a few calls (what `make demo` shows).
pub async fn demo(ch: &Channel, out: &mut (dyn std::io::Write + Send)) -> Result<(), String> {
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(format!("Courier client -> {}", ch.target()));

    let ctx = Ctx::background();
    let t0 = Instant::now();
    let (resp, _) = unary_ok("UnaryUnary", ch, &ctx, &req("hello from Courier"), &no_md()).await?;
    say(format!(
        "  UnaryUnary   s={:?}  ->  s={:?} request_id={} ({:.1} ms)",
        "hello from Courier",
        resp.s,
        resp.request_id,
        t0.elapsed().as_secs_f64() * 1e3
    ));

    let r = TestRequest { count: 3, ..req("tick") };
    let mut st = ch
        .server_streaming(&ctx, &method_desc("UnaryStream"), enc(&r), &no_md())
        .await
        .map_err(|s| call_failed("UnaryStream", s))?;
    let (msgs, end) = drain("UnaryStream", &mut st).await;
    end.map_err(|s| call_failed("UnaryStream", s))?;
    say(format!("  UnaryStream  count=3  ->  indexes {:?}", msgs.iter().map(|m| m.index).collect::<Vec<_>>()));

    let parts: Vec<Bytes> = ["Cou", "ri", "er"].iter().map(|s| enc(&req(s))).collect();
    let reply = ch
        .client_streaming(&ctx, &method_desc("StreamUnary"), futures_util::stream::iter(parts), &no_md())
        .await
        .map_err(|s| call_failed("StreamUnary", s))?;
    say(format!("  StreamUnary  \"Cou\" \"ri\" \"er\"  ->  s={:?}", decode("StreamUnary", &reply.message)?.s));

    let dctx = Ctx::background().with_timeout(Duration::from_secs(3));
    let r = TestRequest { report_deadline: true, ..req("budget") };
    let (resp, _) = unary_ok("UnaryUnary", ch, &dctx, &r, &no_md()).await?;
    say(format!("  UnaryUnary   deadline 3 s  ->  server saw {} ms left", resp.deadline_ms));

    let r = TestRequest { fail_code: Code::NotFound as i32, fail_message: "no such thing: 100% naïve".into(), ..req("x") };
    let s = expect_status("UnaryUnary fail", call_unary(ch, &ctx, &r, &no_md()).await.map(|r| r.message), Code::NotFound)?;
    say(format!("  UnaryUnary   fail_code=NOT_FOUND  ->  {} {:?}", s.code(), s.message()));

    let r = TestRequest { app_error: TestError::Gone as i32, fail_message: "gone".into(), ..req("x") };
    let s = expect_status("UnaryUnary app error", call_unary(ch, &ctx, &r, &no_md()).await.map(|r| r.message), Code::FailedPrecondition)?;
    let app = s.app_error_value().map(|a| format!("{}:{}", a.enum_name, a.value)).unwrap_or_else(|| "(none)".into());
    say(format!("  UnaryUnary   app_error=GONE  ->  {} app error {app}", s.code()));

    let sctx = Ctx::background().with_timeout(Duration::from_millis(100));
    let r = TestRequest { sleep_ms: 2000, ..req("slow") };
    let t0 = Instant::now();
    let s = expect_status("UnaryUnary slow", call_unary(ch, &sctx, &r, &no_md()).await.map(|r| r.message), Code::DeadlineExceeded)?;
    say(format!("  UnaryUnary   sleep 2000 ms, deadline 100 ms  ->  {} after {} ms", s.code(), t0.elapsed().as_millis()));
    Ok(())
}
