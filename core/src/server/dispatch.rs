//! One HTTP/2 stream = one call: validate, build the ctx, run the handler under
//! its deadline, answer with a status. Nothing here ever panics on bad input.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{ReplyBody, StreamBody};
use super::{Entry, Shared};
use crate::admission::Permit;
use crate::call::{Handler, RequestStream, ResponseSender, StreamItem};
use crate::context::{CancelReason, Ctx, Identity};
use crate::host::{HostCall, HostRequest, Reply, UnaryReply};
use crate::status::{Code, Status};
use crate::wire::parse_grpc_timeout;

const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");
// Header names as constants: built at compile time, not parsed per call.
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const COURIER_ERROR: HeaderName = HeaderName::from_static("x-courier-error");

/// Per-connection facts every call on it shares.
pub(crate) struct ConnInfo {
    pub(crate) peer: Option<Arc<Identity>>,
    /// This connection in `/rpcz` (stream counts, peer).
    pub(crate) obs: Arc<crate::stats::ConnStats>,
}

/// Cancels the call's ctx if dropped before the call finished: hyper drops the
/// call's future when the client resets the stream or the connection dies.
/// Holds the call's workpool slot for exactly as long.
pub(crate) struct CallGuard {
    ctx: Option<Ctx>,
    shared: Arc<Shared>,
    permit: Option<Permit>,
    /// Stats and trace span of the call, ended with the status sent.
    obs: Option<crate::stats::ServerCall>,
}

impl CallGuard {
    /// The call was answered with `code`.
    pub(crate) fn finish(mut self, code: Code) {
        if let Some(o) = self.obs.take() {
            o.finish(code, self.ctx.as_ref());
        }
        self.ctx = None;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            let reason = if self.shared.is_hard_stopping() {
                CancelReason::Shutdown
            } else if ctx.is_expired() {
                CancelReason::DeadlineExceeded
            } else {
                CancelReason::Cancelled
            };
            ctx.cancel(reason);
            if let Some(o) = self.obs.take() {
                let code = if reason == CancelReason::DeadlineExceeded { Code::DeadlineExceeded } else { Code::Cancelled };
                o.finish(code, Some(&ctx));
            }
        }
    }
}

pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    if req.method() != http::Method::POST {
        return Ok(answer_early(req.into_body(), http_error(StatusCode::METHOD_NOT_ALLOWED, "gRPC requests must be POST")));
    }
    let Some(ct) = req.headers().get(CONTENT_TYPE) else {
        return Ok(answer_early(req.into_body(), http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "missing content-type")));
    };
    if !is_grpc_content_type(ct.as_bytes()) {
        let resp = http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type is not application/grpc");
        return Ok(answer_early(req.into_body(), resp));
    }
    let Some(entry) = shared.router.get(req.uri().path()) else {
        let resp = trailers_only(None, Status::unimplemented(format!("unknown method {}", req.uri().path())));
        return Ok(answer_early(req.into_body(), resp));
    };
    if let Some(enc) = req.headers().get(GRPC_ENCODING) {
        if enc.as_bytes() != b"identity" {
            let enc = String::from_utf8_lossy(enc.as_bytes()).into_owned();
            let mut resp = trailers_only(None, Status::unimplemented(format!("message encoding {enc:?} is not supported")));
            resp.headers_mut().insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            return Ok(answer_early(req.into_body(), resp));
        }
    }
    let now = Instant::now();
    let caller_deadline = match req.headers().get(GRPC_TIMEOUT) {
        None => None,
        Some(v) => match parse_grpc_timeout(v.as_bytes()) {
            Ok(d) => Some(now.checked_add(d).unwrap_or(now + std::time::Duration::from_secs(100 * 365 * 86400))),
            Err(e) => return Ok(answer_early(req.into_body(), trailers_only(None, Status::internal(e)))),
        },
    };
    let deadline = entry.desc.effective_deadline(now, caller_deadline);
    let (mut parts, body) = req.into_parts();
    let obs = crate::stats::ServerCall::start(&entry.desc, conn.peer.as_ref(), Some(&conn.obs), &mut parts.headers, now);
    let ctx = Ctx::for_server_call(entry.desc.path_arc().clone(), deadline, conn.peer.clone(), parts.headers);
    if ctx.is_expired() {
        obs.finish(Code::DeadlineExceeded, Some(&ctx));
        let resp = trailers_only(Some(&ctx), Status::deadline_exceeded("deadline exceeded before the call started"));
        return Ok(answer_early(body, resp));
    }
    let mut guard = CallGuard { ctx: Some(ctx.clone()), shared: shared.clone(), permit: None, obs: Some(obs) };
    // Admission comes before a byte of the request is read: ACL, rate limit,
    // then a slot, waiting in the method's queue at most until the deadline.
    let queued = crate::stats::QueueWait::enter(&entry.desc);
    let admitted = under_deadline(&ctx, async {
        entry.gate.admit(&ctx).await.map_err(|r| {
            crate::stats::record_rejection(&entry.desc, ctx.peer_identity(), r.reason());
            r.status(entry.desc.path(), ctx.peer_identity())
        })
    })
    .await;
    queued.leave(&ctx);
    match admitted {
        Ok(p) => guard.permit = Some(p),
        Err(s) => return Ok(answer_early(body, unary_response(guard, &ctx, Err(s)))),
    }
    let requests = RequestStream::new(body, shared.config.max_recv_message_size);
    Ok(run(entry, ctx, requests, guard).await)
}

async fn run(entry: &Entry, ctx: Ctx, requests: RequestStream, guard: CallGuard) -> Response<ReplyBody> {
    match &entry.handler {
        Handler::Unary(h) => {
            let r = under_deadline(&ctx, async {
                let msg = requests.single().await?;
                catch_panic(&ctx, h(ctx.clone(), msg)).await
            })
            .await;
            unary_response(guard, &ctx, r)
        }
        Handler::ClientStreaming(h) => {
            let r = under_deadline(&ctx, catch_panic(&ctx, h(ctx.clone(), requests))).await;
            unary_response(guard, &ctx, r)
        }
        Handler::ServerStreaming(h) => {
            let h = h.clone();
            let r = under_deadline(&ctx, requests.single()).await;
            match r {
                Err(s) => unary_response(guard, &ctx, Err(s)),
                Ok(msg) => spawn_streaming(guard, ctx, move |c, tx| h(c, msg, tx)).await,
            }
        }
        Handler::BidiStreaming(h) => {
            let h = h.clone();
            spawn_streaming(guard, ctx, move |c, tx| h(c, requests, tx)).await
        }
        Handler::Host(queue) => {
            let kind = entry.desc.kind();
            let request = if kind.client_streams() {
                HostRequest::Stream(requests)
            } else {
                match under_deadline(&ctx, requests.single()).await {
                    Ok(m) => HostRequest::Message(m),
                    Err(s) => return unary_response(guard, &ctx, Err(s)),
                }
            };
            let method = entry.desc.clone();
            if kind.server_streams() {
                let (tx, rx) = ResponseSender::channel();
                let call = HostCall { ctx: ctx.clone(), method, request, reply: Reply::Stream(tx) };
                if queue.push(call).is_err() {
                    return unary_response(guard, &ctx, Err(shutting_down()));
                }
                stream_response(guard, ctx, rx, None).await
            } else {
                let (reply, rx) = UnaryReply::new(super::local_mailbox());
                let call = HostCall { ctx: ctx.clone(), method, request, reply: Reply::Unary(reply) };
                if queue.push(call).is_err() {
                    return unary_response(guard, &ctx, Err(shutting_down()));
                }
                let r = under_deadline(&ctx, async {
                    rx.await.unwrap_or_else(|_| Err(Status::internal("the handler dropped the call without replying")))
                })
                .await;
                unary_response(guard, &ctx, r)
            }
        }
    }
}

/// Most request bytes a call answered early is drained of, and for how long.
const DRAIN_BYTES: usize = 256 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A call answered before its request was read: reads (and discards, never
/// decodes) what the client sends until it half-closes, so the stream ends
/// without a RST_STREAM from us. h2 counts such resets for the lifetime of a
/// connection and ends it (GOAWAY ENHANCE_YOUR_CALM) after 1024: without this,
/// a client that is rate limited or calls an unknown method in a loop would
/// lose its connection. Past the byte or time bound the stream is reset.
fn answer_early(body: Incoming, resp: Response<ReplyBody>) -> Response<ReplyBody> {
    use http_body::Body as _;
    if !body.is_end_stream() {
        tokio::spawn(async move {
            let mut body = body;
            let mut left = DRAIN_BYTES;
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while let Some(Ok(frame)) = body.frame().await {
                    let n = frame.data_ref().map_or(0, |d| d.len());
                    if n >= left {
                        return;
                    }
                    left -= n;
                }
            })
            .await;
        });
    }
    resp
}

fn shutting_down() -> Status {
    Status::unavailable("server shutting down")
}

/// Runs a Rust-native streaming handler on its own task; the response body
/// relays its messages and ends with its status.
async fn spawn_streaming<F, Fut>(guard: CallGuard, ctx: Ctx, f: F) -> Response<ReplyBody>
where
    F: FnOnce(Ctx, ResponseSender) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, rx) = ResponseSender::channel();
    let c = ctx.clone();
    let task = tokio::spawn(async move {
        let end = tx.clone();
        let r = catch_panic(&c, f(c.clone(), tx)).await;
        end.finish(r).await;
    });
    stream_response(guard, ctx, rx, Some(task.abort_handle())).await
}

/// Waits for the first item (so handler-set headers go out with it, and an
/// early error becomes a trailers-only response), then streams the rest.
async fn stream_response(
    guard: CallGuard,
    ctx: Ctx,
    mut rx: tokio::sync::mpsc::Receiver<StreamItem>,
    task: Option<tokio::task::AbortHandle>,
) -> Response<ReplyBody> {
    let first = under_deadline(&ctx, async {
        match rx.recv().await {
            Some(StreamItem::End(Err(s))) => Err(s),
            Some(item) => Ok(item),
            None => Err(Status::internal("handler ended the stream without a status")),
        }
    })
    .await;
    let first = match first {
        Ok(item) => item,
        Err(s) => {
            if let Some(t) = task {
                t.abort();
            }
            return unary_response(guard, &ctx, Err(s));
        }
    };
    let mut resp = Response::new(ReplyBody::Empty);
    resp.headers_mut().insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
    if let Some(h) = ctx.take_reply_headers() {
        resp.headers_mut().extend(h);
    }
    *resp.body_mut() = ReplyBody::Stream(Box::new(StreamBody {
        deadline: ctx.deadline().map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
        ctx,
        first: Some(first),
        rx,
        pending: None,
        task,
        guard: Some(guard),
        done: false,
    }));
    resp
}

fn unary_response(guard: CallGuard, ctx: &Ctx, r: Result<bytes::Bytes, Status>) -> Response<ReplyBody> {
    guard.finish(match &r {
        Ok(_) => Code::Ok,
        Err(s) if s.is_downstream() => Code::Unknown,
        Err(s) => s.code(),
    });
    match r {
        Ok(msg) => {
            let mut trailers = HeaderMap::new();
            write_reply_trailers(ctx, &Status::new(Code::Ok, ""), &mut trailers);
            let mut resp = Response::new(ReplyBody::unary(msg, trailers));
            resp.headers_mut().insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
            if let Some(h) = ctx.take_reply_headers() {
                resp.headers_mut().extend(h);
            }
            resp
        }
        Err(s) => trailers_only(Some(ctx), s.at_boundary()),
    }
}

/// Status (and any trailers the handler set) into `out`.
pub(crate) fn write_reply_trailers(ctx: &Ctx, status: &Status, out: &mut HeaderMap) {
    if let Some(t) = ctx.take_reply_trailers() {
        out.extend(t);
    }
    status.write_trailers(out);
}

/// A response with no message: trailers-only (the status in the headers), or,
/// when the handler set reply headers, those headers and then the status in
/// trailers, as stock gRPC servers send them (in a trailers-only response a
/// client would see the handler's headers as trailing metadata).
fn trailers_only(ctx: Option<&Ctx>, status: Status) -> Response<ReplyBody> {
    let mut resp = Response::new(ReplyBody::Empty);
    resp.headers_mut().insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
    let Some(ctx) = ctx else {
        status.write_trailers(resp.headers_mut());
        return resp;
    };
    match ctx.take_reply_headers() {
        Some(headers) => {
            resp.headers_mut().extend(headers);
            let mut trailers = HeaderMap::new();
            write_reply_trailers(ctx, &status, &mut trailers);
            *resp.body_mut() = ReplyBody::trailers(trailers);
        }
        None => write_reply_trailers(ctx, &status, resp.headers_mut()),
    }
    resp
}

fn http_error(code: StatusCode, why: &'static str) -> Response<ReplyBody> {
    let mut resp = Response::new(ReplyBody::Empty);
    *resp.status_mut() = code;
    resp.headers_mut().insert(COURIER_ERROR, HeaderValue::from_static(why));
    resp
}

fn is_grpc_content_type(ct: &[u8]) -> bool {
    ct == b"application/grpc"
        || ct.strip_prefix(b"application/grpc").is_some_and(|rest| rest.starts_with(b"+") || rest.starts_with(b";"))
}

/// Runs `fut` until the ctx deadline; at the deadline the ctx is cancelled and
/// the call answered `DEADLINE_EXCEEDED`.
async fn under_deadline<T>(ctx: &Ctx, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match ctx.deadline() {
        None => fut.await,
        Some(d) => {
            let expired = || {
                ctx.cancel(CancelReason::DeadlineExceeded);
                Err(Status::deadline_exceeded("deadline exceeded"))
            };
            tokio::select! {
                biased;
                // A result that comes after the deadline (the handler saw its
                // ctx expire before our timer fired) is still too late.
                r = fut => if std::time::Instant::now() >= d { expired() } else { r },
                _ = tokio::time::sleep_until(d.into()) => expired(),
            }
        }
    }
}

/// A panic in a handler is `INTERNAL` for that call only; it is logged.
async fn catch_panic<T>(ctx: &Ctx, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(method = ctx.method().unwrap_or(""), panic = %what, "handler panicked");
            Err(Status::internal(format!("handler panicked: {what}")))
        }
    }
}
