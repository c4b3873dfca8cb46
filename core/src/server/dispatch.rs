//! One HTTP/2 stream = one call: validate, build the ctx, run the handler under
//! its deadline, answer with a status. Nothing here ever panics on bad input.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{ReplyBody, StreamBody};
use super::{Entry, Shared};
use crate::admission::{Permit, Rejection};
use crate::call::{BoxFuture, Handler, RequestStream, ResponseSender, StreamItem};
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
    pub(crate) fn finish(self, code: Code) {
        self.finish_at(code, None)
    }

    /// [`CallGuard::finish`], at `end` if the caller has just read the time.
    fn finish_at(mut self, code: Code, end: Option<Instant>) {
        if let Some(o) = self.obs.take() {
            match end {
                Some(end) => o.finish_at(code, self.ctx.as_ref(), end),
                None => o.finish(code, self.ctx.as_ref()),
            }
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

/// The future of one call (what the service returns to hyper).
pub(crate) enum CallFuture {
    /// Answered before any await (bad request, unknown method, rejected...).
    Ready(Option<Response<ReplyBody>>),
    /// A Rust-native unary call admitted without waiting: the common case,
    /// kept small and free of timers unless it has to wait.
    Unary(UnaryCall),
    /// Everything else: queued admission, streaming, host-language calls.
    Other(Pin<Box<dyn Future<Output = Response<ReplyBody>> + Send>>),
}

impl Future for CallFuture {
    type Output = Result<Response<ReplyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            CallFuture::Ready(r) => Poll::Ready(Ok(r.take().expect("CallFuture polled after completion"))),
            CallFuture::Unary(u) => Pin::new(u).poll(cx).map(Ok),
            CallFuture::Other(f) => f.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Validates the request, builds the ctx and admits the call, all without
/// awaiting; then returns the future that reads the request and runs the
/// handler (or the answer, when the call ends here).
pub(crate) fn dispatch(shared: &Arc<Shared>, conn: &ConnInfo, req: Request<Incoming>) -> CallFuture {
    let early = |body, resp| CallFuture::Ready(Some(answer_early(body, resp)));
    if req.method() != http::Method::POST {
        return early(req.into_body(), http_error(StatusCode::METHOD_NOT_ALLOWED, "gRPC requests must be POST"));
    }
    // One pass over the request headers instead of a hashed lookup per name
    // (the first value of each, as `HeaderMap::get` gives).
    let (mut ct, mut encoding, mut timeout) = (None, None, None);
    for (name, value) in req.headers() {
        if *name == CONTENT_TYPE {
            ct = ct.or(Some(value));
        } else if *name == GRPC_TIMEOUT {
            timeout = timeout.or(Some(value));
        } else if *name == GRPC_ENCODING {
            encoding = encoding.or(Some(value));
        }
    }
    let Some(ct) = ct else {
        return early(req.into_body(), http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "missing content-type"));
    };
    if !is_grpc_content_type(ct.as_bytes()) {
        let resp = http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type is not application/grpc");
        return early(req.into_body(), resp);
    }
    let Some(entry) = shared.router.get(req.uri().path()) else {
        let resp = trailers_only(None, Status::unimplemented(format!("unknown method {}", req.uri().path())));
        return early(req.into_body(), resp);
    };
    if let Some(enc) = encoding {
        if enc.as_bytes() != b"identity" {
            let enc = String::from_utf8_lossy(enc.as_bytes()).into_owned();
            let mut resp = trailers_only(None, Status::unimplemented(format!("message encoding {enc:?} is not supported")));
            resp.headers_mut().insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            return early(req.into_body(), resp);
        }
    }
    let now = Instant::now();
    let caller_deadline = match timeout {
        None => None,
        Some(v) => match parse_grpc_timeout(v.as_bytes()) {
            Ok(d) => Some(now.checked_add(d).unwrap_or(now + std::time::Duration::from_secs(100 * 365 * 86400))),
            Err(e) => return early(req.into_body(), trailers_only(None, Status::internal(e))),
        },
    };
    let deadline = entry.desc.effective_deadline(now, caller_deadline);
    let (mut parts, body) = req.into_parts();
    let obs = crate::stats::ServerCall::start(&entry.desc, conn.peer.as_ref(), Some(&conn.obs), &mut parts.headers, now);
    let ctx = Ctx::for_server_call(entry.desc.path_arc().clone(), deadline, conn.peer.clone(), parts.headers);
    if deadline.is_some_and(|d| now >= d) {
        obs.finish(Code::DeadlineExceeded, Some(&ctx));
        let resp = trailers_only(Some(&ctx), Status::deadline_exceeded("deadline exceeded before the call started"));
        return early(body, resp);
    }
    let mut guard = CallGuard { ctx: Some(ctx.clone()), shared: shared.clone(), permit: None, obs: Some(obs) };
    // Admission comes before a byte of the request is read: ACL, rate limit,
    // then a slot; without a free slot, the call waits in the method's queue
    // (at most until the deadline).
    match entry.gate.try_admit(&ctx) {
        Ok(Some(p)) => {
            crate::stats::QueueWait::none(&entry.desc, &ctx);
            guard.permit = Some(p);
        }
        Err(r) => {
            crate::stats::QueueWait::none(&entry.desc, &ctx);
            let s = rejected(entry, &ctx, r);
            return early(body, unary_response(guard, &ctx, Err(s)));
        }
        Ok(None) => return CallFuture::Other(Box::pin(queued(shared.clone(), entry.clone(), ctx, body, guard))),
    }
    let requests = RequestStream::new(body, shared.config.max_recv_message_size);
    let unary = match &entry.handler {
        Handler::Unary(_) => true,
        Handler::Host(_) => entry.desc.kind() == crate::method::MethodKind::Unary,
        _ => false,
    };
    if unary {
        CallFuture::Unary(UnaryCall {
            running: None,
            entry: entry.clone(),
            requests,
            first: None,
            timer: None,
            far: None,
            guard: Some(guard),
            ctx,
        })
    } else {
        let entry = entry.clone();
        CallFuture::Other(Box::pin(async move { run(&entry, ctx, requests, guard).await }))
    }
}

/// Counts an admission refusal and gives the status the client gets.
fn rejected(entry: &Entry, ctx: &Ctx, r: Rejection) -> Status {
    crate::stats::record_rejection(&entry.desc, ctx.peer_identity(), r.reason());
    r.status(entry.desc.path(), ctx.peer_identity())
}

/// A call that found no free slot: waits in the method's queue (at most until
/// its deadline), then runs.
async fn queued(shared: Arc<Shared>, entry: Arc<Entry>, ctx: Ctx, body: Incoming, mut guard: CallGuard) -> Response<ReplyBody> {
    let queued = crate::stats::QueueWait::enter(&entry.desc);
    let admitted =
        under_deadline(&ctx, async { entry.gate.wait_for_slot().await.map_err(|r| rejected(&entry, &ctx, r)) }).await;
    queued.leave(&ctx);
    match admitted {
        Ok(p) => guard.permit = Some(p),
        Err(s) => return answer_early(body, unary_response(guard, &ctx, Err(s))),
    }
    let requests = RequestStream::new(body, shared.config.max_recv_message_size);
    run(&entry, ctx, requests, guard).await
}

/// A unary call admitted at once: reads the one request message, runs the
/// handler (Rust-native, or a host language's through its queue), answers. The
/// deadline timer is created only if the call has to wait (request bytes not
/// there yet, a handler that suspends, a host call).
pub(crate) struct UnaryCall {
    // Dropped in this order if the client goes away: handler, request, then
    // the guard (which cancels the ctx).
    running: Option<Running>,
    /// Its handler: Rust-native, or a host language's queue.
    entry: Arc<Entry>,
    requests: RequestStream,
    first: Option<Bytes>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Its deadline while that is far off (see `far_deadlines`).
    far: Option<super::far_deadlines::FarWatch>,
    guard: Option<CallGuard>,
    ctx: Ctx,
}

enum Running {
    Native(BoxFuture<Result<Bytes, Status>>),
    Host(tokio::sync::oneshot::Receiver<crate::host::UnaryResult>),
}

impl UnaryCall {
    fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, Status>> {
        if self.running.is_none() {
            let msg = match std::task::ready!(self.requests.poll_single(&mut self.first, cx)) {
                Ok(m) => m,
                Err(s) => return Poll::Ready(Err(s)),
            };
            let ctx = &self.ctx;
            match &self.entry.handler {
                Handler::Unary(h) => match std::panic::catch_unwind(AssertUnwindSafe(|| h(ctx.clone(), msg))) {
                    Ok(f) => self.running = Some(Running::Native(f)),
                    Err(panic) => return Poll::Ready(Err(panic_status(ctx, panic))),
                },
                Handler::Host(queue) => match queue_host_call(queue, &self.entry, ctx, HostRequest::Message(msg)) {
                    Ok(rx) => self.running = Some(Running::Host(rx)),
                    Err(s) => return Poll::Ready(Err(s)),
                },
                // Not made for other kinds (see `dispatch`).
                _ => return Poll::Ready(Err(Status::internal("not a unary handler"))),
            }
        }
        match self.running.as_mut().expect("set above") {
            Running::Native(fut) => match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(p) => p,
                Err(panic) => Poll::Ready(Err(panic_status(&self.ctx, panic))),
            },
            Running::Host(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or_else(|_| Err(dropped_without_reply()))),
        }
    }

    fn answer(&mut self, r: Result<Bytes, Status>, end: Option<Instant>) -> Poll<Response<ReplyBody>> {
        self.running = None;
        self.timer = None;
        self.far = None;
        let guard = self.guard.take().expect("UnaryCall polled after completion");
        Poll::Ready(unary_response_at(guard, &self.ctx, r, end))
    }
}

/// Hands a call with a unary reply to its host language's queue; the receiver
/// gets the reply. Out of line: it keeps the Rust-native path's code small.
#[inline(never)]
fn queue_host_call(
    queue: &crate::host::HostQueue,
    entry: &Entry,
    ctx: &Ctx,
    request: HostRequest,
) -> Result<tokio::sync::oneshot::Receiver<crate::host::UnaryResult>, Status> {
    let (reply, rx) = UnaryReply::new(super::local_mailbox());
    let call = HostCall { ctx: ctx.clone(), method: entry.desc.clone(), request, reply: Reply::Unary(reply) };
    queue.push(call).map_err(|_| shutting_down())?;
    Ok(rx)
}

impl Future for UnaryCall {
    type Output = Response<ReplyBody>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ReplyBody>> {
        let this = self.get_mut();
        match this.poll_call(cx) {
            // A result that comes after the deadline (the handler saw its
            // ctx expire before a timer fired) is still too late.
            Poll::Ready(r) => {
                let now = Instant::now();
                let r = if this.ctx.deadline().is_some_and(|d| now >= d) { Err(deadline_expired(&this.ctx)) } else { r };
                this.answer(r, Some(now))
            }
            Poll::Pending => {
                if let Some(d) = this.ctx.deadline() {
                    if this.timer.is_none() {
                        if d.saturating_duration_since(Instant::now()) > super::far_deadlines::NEAR {
                            super::far_deadlines::watch(&mut this.far, d, cx.waker());
                            return Poll::Pending;
                        }
                        this.far = None;
                    }
                    let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(d.into())));
                    if timer.as_mut().poll(cx).is_ready() {
                        let s = deadline_expired(&this.ctx);
                        return this.answer(Err(s), None);
                    }
                }
                Poll::Pending
            }
        }
    }
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
            if kind.server_streams() {
                let (tx, rx) = ResponseSender::channel();
                let call = HostCall { ctx: ctx.clone(), method: entry.desc.clone(), request, reply: Reply::Stream(tx) };
                if queue.push(call).is_err() {
                    return unary_response(guard, &ctx, Err(shutting_down()));
                }
                stream_response(guard, ctx, rx, None).await
            } else {
                let rx = match queue_host_call(queue, entry, &ctx, request) {
                    Ok(rx) => rx,
                    Err(s) => return unary_response(guard, &ctx, Err(s)),
                };
                let r = under_deadline(&ctx, async { rx.await.unwrap_or_else(|_| Err(dropped_without_reply())) }).await;
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

fn dropped_without_reply() -> Status {
    Status::internal("the handler dropped the call without replying")
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
    unary_response_at(guard, ctx, r, None)
}

/// [`unary_response`] of a call that ended at `end` (if the caller has just read the time).
fn unary_response_at(guard: CallGuard, ctx: &Ctx, r: Result<Bytes, Status>, end: Option<Instant>) -> Response<ReplyBody> {
    let code = match &r {
        Ok(_) => Code::Ok,
        Err(s) if s.is_downstream() => Code::Unknown,
        Err(s) => s.code(),
    };
    guard.finish_at(code, end);
    match r {
        Ok(msg) => {
            let trailers = reply_trailers(ctx, &Status::new(Code::Ok, ""));
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

/// The trailers of a response: any the handler set, then the status.
pub(crate) fn reply_trailers(ctx: &Ctx, status: &Status) -> HeaderMap {
    // Sized for the status alone (`HeaderMap::new()` would make room for 6 on
    // the first insert), or the handler's map, reused.
    let mut out = ctx.take_reply_trailers().unwrap_or_else(|| HeaderMap::with_capacity(1));
    status.write_trailers(&mut out);
    out
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
            let trailers = reply_trailers(ctx, &status);
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
/// the call answered `DEADLINE_EXCEEDED`. The timer is only created if `fut`
/// does not finish on its first poll.
async fn under_deadline<T>(ctx: &Ctx, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    let Some(d) = ctx.deadline() else { return fut.await };
    let mut fut = std::pin::pin!(fut);
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            // A result that comes after the deadline (the handler saw its
            // ctx expire before our timer fired) is still too late.
            return Poll::Ready(if Instant::now() >= d { Err(deadline_expired(ctx)) } else { r });
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep_until(d.into())));
        }
        match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(deadline_expired(ctx))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// The deadline passed: cancels the ctx; the status the call ends with.
fn deadline_expired(ctx: &Ctx) -> Status {
    ctx.cancel(CancelReason::DeadlineExceeded);
    Status::deadline_exceeded("deadline exceeded")
}

/// A panic in a handler is `INTERNAL` for that call only; it is logged.
async fn catch_panic<T>(ctx: &Ctx, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => Err(panic_status(ctx, panic)),
    }
}

/// Logs a handler's panic; the status its call ends with.
fn panic_status(ctx: &Ctx, panic: Box<dyn std::any::Any + Send>) -> Status {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    tracing::error!(method = ctx.method().unwrap_or(""), panic = %what, "handler panicked");
    Status::internal(format!("handler panicked: {what}"))
}
