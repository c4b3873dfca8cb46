//! `courier.test.Test` served by Rust-native handlers.
//!
//! Semantics (the proto comments, made precise; the Python grpcio servicer of the
//! interop tests does the same). For each request message, in this order:
//!
//! 1. `echo_header`: the named request header's value goes to `metadata_value`,
//!    and is set as reply header `x-echo-header` (only effective before the first
//!    response message of a stream) and reply trailer `x-echo-trailer`; a missing
//!    header gives `""` and sets nothing.
//! 2. `sleep_ms`: sleep (ends early if the call is cancelled).
//! 3. `app_error` != 0: fail with `FAILED_PRECONDITION`, message `fail_message`
//!    (or `"app error <n>"` when empty), app error `courier.test.TestError:<n>`.
//! 4. `fail_code` != 0: fail with that code and `fail_message`, exactly.
//! 5. Reply `s` and `payload` echoed, `deadline_ms` if `report_deadline`
//!    (remaining ms, -1 without a deadline), `request_id` from the ctx.
//!
//! Per method: `UnaryUnary` answers one response (index 0). `UnaryStream` sends
//! `count` responses (index 0..count), then ends with the failure of steps 3-4 if
//! any (errors after messages). `StreamUnary` applies steps 1-4 to every message as
//! it arrives and answers one response whose `s` and `payload` are the
//! concatenation of all requests'. `StreamStream` answers each request as it
//! arrives (index = its position), ending the stream at the first failure.

use std::time::Duration;

use bytes::Bytes;
use courier_core::{
    AppError, Code, Ctx, DeadlinePolicy, Handler, MethodDesc, MethodKind, RequestStream, ResponseSender, Server,
    ServerError, Status,
};
use http::HeaderName;
use prost::Message;

use crate::proto::{TestRequest, TestResponse, TEST_ERROR_ENUM};

/// Full name of the service.
pub const SERVICE: &str = "courier.test.Test";

/// Default deadline of every method of the table.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Reply header and trailer set for `echo_header`.
pub const ECHO_HEADER: &str = "x-echo-header";
pub const ECHO_TRAILER: &str = "x-echo-trailer";

/// The method table entry of `Test/<name>`: 10 s default deadline, app errors of `TestError`.
pub fn method_desc(name: &str) -> MethodDesc {
    let kind = match name {
        "UnaryUnary" => MethodKind::Unary,
        "UnaryStream" => MethodKind::ServerStreaming,
        "StreamUnary" => MethodKind::ClientStreaming,
        "StreamStream" => MethodKind::BidiStreaming,
        // Unknown names still make a valid (unary) descriptor: used to call missing methods.
        _ => MethodKind::Unary,
    };
    MethodDesc::new(&format!("/{SERVICE}/{name}"), kind, DeadlinePolicy::Default(DEFAULT_DEADLINE))
        .expect("valid method path")
        .with_app_error_enum(TEST_ERROR_ENUM)
}

/// Registers the four methods of `courier.test.Test` on `server`.
pub fn register(server: &Server) -> Result<(), ServerError> {
    server.register(method_desc("UnaryUnary"), Handler::unary(unary_unary))?;
    server.register(method_desc("UnaryStream"), Handler::server_streaming(unary_stream))?;
    server.register(method_desc("StreamUnary"), Handler::client_streaming(stream_unary))?;
    server.register(method_desc("StreamStream"), Handler::bidi_streaming(stream_stream))?;
    Ok(())
}

fn decode(b: &[u8]) -> Result<TestRequest, Status> {
    TestRequest::decode(b).map_err(|e| Status::invalid_argument(format!("bad TestRequest: {e}")))
}

fn encode(r: &TestResponse) -> Bytes {
    Bytes::from(r.encode_to_vec())
}

/// What steps 1-4 produce for one request: the metadata value, or the failure.
struct Applied {
    metadata_value: String,
    failure: Option<Status>,
}

/// Steps 1-4 of the module doc. A failure is returned, not raised, so that
/// `UnaryStream` can send its messages first.
async fn apply(ctx: &Ctx, req: &TestRequest) -> Result<Applied, Status> {
    let mut metadata_value = String::new();
    if !req.echo_header.is_empty() {
        if let Some(v) = ctx.metadata().get(req.echo_header.to_ascii_lowercase().as_str()) {
            metadata_value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            ctx.append_reply_header(HeaderName::from_static(ECHO_HEADER), v.clone());
            ctx.append_reply_trailer(HeaderName::from_static(ECHO_TRAILER), v.clone());
        }
    }
    if req.sleep_ms > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(req.sleep_ms as u64)) => {}
            reason = ctx.cancelled() => {
                return Err(match reason {
                    courier_core::CancelReason::DeadlineExceeded => Status::deadline_exceeded("deadline exceeded while sleeping"),
                    r => Status::cancelled(format!("cancelled while sleeping ({r:?})")),
                });
            }
        }
    }
    let failure = if req.app_error != 0 {
        let msg = if req.fail_message.is_empty() { format!("app error {}", req.app_error) } else { req.fail_message.clone() };
        Some(Status::app_error(
            Code::FailedPrecondition,
            msg,
            AppError { enum_name: TEST_ERROR_ENUM.into(), value: req.app_error },
        ))
    } else if req.fail_code != 0 {
        Some(Status::new(Code::from_i32(req.fail_code), req.fail_message.clone()))
    } else {
        None
    };
    Ok(Applied { metadata_value, failure })
}

fn response(ctx: &Ctx, req: &TestRequest, applied: &Applied, index: i32) -> TestResponse {
    TestResponse {
        s: req.s.clone(),
        payload: req.payload.clone(),
        index,
        metadata_value: applied.metadata_value.clone(),
        deadline_ms: deadline_ms(ctx, req.report_deadline),
        request_id: ctx.request_id().to_string(),
    }
}

fn deadline_ms(ctx: &Ctx, report: bool) -> i64 {
    if !report {
        return 0;
    }
    ctx.time_remaining().map(|d| d.as_millis() as i64).unwrap_or(-1)
}

async fn unary_unary(ctx: Ctx, msg: Bytes) -> Result<Bytes, Status> {
    let req = decode(&msg)?;
    let applied = apply(&ctx, &req).await?;
    if let Some(f) = applied.failure {
        return Err(f);
    }
    Ok(encode(&response(&ctx, &req, &applied, 0)))
}

async fn unary_stream(ctx: Ctx, msg: Bytes, tx: ResponseSender) -> Result<(), Status> {
    let req = decode(&msg)?;
    let applied = apply(&ctx, &req).await?;
    for i in 0..req.count.max(0) {
        tx.send(encode(&response(&ctx, &req, &applied, i))).await?;
    }
    match applied.failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

async fn stream_unary(ctx: Ctx, mut rx: RequestStream) -> Result<Bytes, Status> {
    let mut out = TestResponse { request_id: ctx.request_id().to_string(), ..Default::default() };
    while let Some(msg) = rx.message().await? {
        let req = decode(&msg)?;
        let applied = apply(&ctx, &req).await?;
        if let Some(f) = applied.failure {
            return Err(f);
        }
        out.s.push_str(&req.s);
        out.payload.extend_from_slice(&req.payload);
        if !req.echo_header.is_empty() {
            out.metadata_value = applied.metadata_value;
        }
        if req.report_deadline {
            out.deadline_ms = deadline_ms(&ctx, true);
        }
    }
    Ok(encode(&out))
}

async fn stream_stream(ctx: Ctx, mut rx: RequestStream, tx: ResponseSender) -> Result<(), Status> {
    let mut index = 0;
    while let Some(msg) = rx.message().await? {
        let req = decode(&msg)?;
        let applied = apply(&ctx, &req).await?;
        if let Some(f) = applied.failure {
            return Err(f);
        }
        tx.send(encode(&response(&ctx, &req, &applied, index))).await?;
        index += 1;
    }
    Ok(())
}
