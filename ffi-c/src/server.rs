//! Servers whose handlers run in the host language: methods are registered
//! with a method id, host threads pull batches of calls
//! (`courier_server_next_batch`), complete unary calls through a
//! `CourierReplyBatch` (one wake-up of each I/O thread per batch) and stream
//! with blocking recv/send/finish.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_core::{
    DeadlinePolicy, Handler, HostCall, HostQueue, HostReply, HostRequest, MethodDesc, MethodKind, ReplyBatch,
    RequestStream, ResponseSender, Server, ServerConfig, ServerError, ServingStatus, Status, UnaryReply,
};

use crate::ctx::CourierCtx;
use crate::{bytes_arg, guard, guard_quiet, handle, status_arg, str_arg, CourierError, CourierErrorKind, CourierStr};

/// The default deadline value of a method declared without a deadline
/// (`(courier.method_no_deadline)`): it runs without one unless its caller sets one.
pub const COURIER_NO_DEADLINE: i64 = -1;

/// The four gRPC call kinds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CourierMethodKind {
    Unary = 0,
    ServerStreaming = 1,
    ClientStreaming = 2,
    BidiStreaming = 3,
}

impl CourierMethodKind {
    fn from_core(k: MethodKind) -> CourierMethodKind {
        match k {
            MethodKind::Unary => CourierMethodKind::Unary,
            MethodKind::ServerStreaming => CourierMethodKind::ServerStreaming,
            MethodKind::ClientStreaming => CourierMethodKind::ClientStreaming,
            MethodKind::BidiStreaming => CourierMethodKind::BidiStreaming,
        }
    }
}

/// Builds a method descriptor from C arguments. `kind` is an `int` so that an
/// out-of-range value from C is an error, not undefined behaviour.
pub(crate) unsafe fn method_desc(
    path: *const u8,
    path_len: usize,
    kind: i32,
    default_deadline_ms: i64,
    app_error_enum: *const u8,
    app_error_enum_len: usize,
) -> Result<MethodDesc, CourierError> {
    let path = str_arg(path, path_len, "method path")?;
    let kind = match kind {
        0 => MethodKind::Unary,
        1 => MethodKind::ServerStreaming,
        2 => MethodKind::ClientStreaming,
        3 => MethodKind::BidiStreaming,
        k => return Err(CourierError::invalid(format!("unknown method kind {k} for {path}"))),
    };
    let policy = match default_deadline_ms {
        COURIER_NO_DEADLINE => DeadlinePolicy::NoDeadline,
        ms if ms > 0 => DeadlinePolicy::Default(Duration::from_millis(ms as u64)),
        ms => {
            return Err(CourierError::invalid(format!(
                "default deadline of {path} must be a positive number of milliseconds or COURIER_NO_DEADLINE, got {ms}"
            )))
        }
    };
    let desc = MethodDesc::new(path, kind, policy).map_err(|e| CourierError::invalid(e.to_string()))?;
    let app = str_arg(app_error_enum, app_error_enum_len, "app error enum")?;
    Ok(if app.is_empty() { desc } else { desc.with_app_error_enum(app) })
}

fn server_error(e: ServerError) -> CourierError {
    let kind = match e {
        ServerError::Bind { .. } | ServerError::Thread(_) => CourierErrorKind::Io,
        ServerError::DuplicateMethod(_) | ServerError::KindMismatch { .. } => CourierErrorKind::InvalidArgument,
        ServerError::AlreadyStarted | ServerError::NoListener => CourierErrorKind::State,
        ServerError::Limits(_) => CourierErrorKind::InvalidArgument,
        ServerError::LimitsWatch(_) => CourierErrorKind::Io,
        // Kinds added to the core later: still an error with its message.
        #[allow(unreachable_patterns)]
        _ => CourierErrorKind::State,
    };
    CourierError::new(kind, e.to_string())
}

/// Server settings; zero fields take the core's defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CourierServerOptions {
    /// I/O threads (default: one per core).
    pub workers: u32,
    /// Largest request message accepted, bytes (default 4 MiB).
    pub max_recv_message_size: u64,
    /// Mutual TLS (NULL: plaintext); the server keeps its own reference.
    pub tls: *const crate::tls::CourierServerTls,
    /// Event-loop mode: the server signals an eventfd (`courier_server_notify_fd`)
    /// whenever its call queue turns non-empty, and hosts take calls with the
    /// non-blocking `courier_server_try_batch` instead of blocking in
    /// `courier_server_next_batch` (for runtimes whose threads should not block
    /// in foreign code, such as Go's).
    pub event_fd: bool,
    /// The limits file (ACLs, rate limits, queues; hot-reloaded), length 0:
    /// every method open with defaults.
    pub limits_path: *const u8,
    pub limits_path_len: usize,
    /// Workpool slots of methods whose limits set no `max_concurrency`: the
    /// host's handler threads (0: the core's default).
    pub host_concurrency: u32,
    /// The debug (admin) server: `127.0.0.1:PORT` or `unix:/path`; length 0: none.
    pub debug_addr: *const u8,
    pub debug_addr_len: usize,
}

/// A server whose methods are served by host threads.
pub struct CourierServer {
    server: Server,
    queue: HostQueue,
    wake: Option<std::sync::Arc<EventFd>>,
}

/// Wakes an event loop when calls arrive: an eventfd the host watches.
struct EventFd(libc::c_int);

impl EventFd {
    fn new() -> Result<EventFd, CourierError> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(CourierError::new(CourierErrorKind::Io, format!("eventfd: {}", std::io::Error::last_os_error())));
        }
        Ok(EventFd(fd))
    }
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd. EAGAIN (counter
        // full) is fine: the host is signalled already.
        unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// One call taken by `courier_server_next_batch`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CourierCallInfo {
    /// The call, owned by the host from now on (see `courier_call_free`).
    pub call: *mut CourierCall,
    /// The id given to `courier_server_register` for the call's method.
    pub method_id: u64,
    pub kind: CourierMethodKind,
    /// Whether the call has a deadline, and the time left before it
    /// (nanoseconds, measured when the batch was taken).
    pub has_deadline: bool,
    pub deadline_remaining_ns: i64,
}

/// Creates a server. `opts` may be NULL (defaults). Free with
/// `courier_server_free`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_new(opts: *const CourierServerOptions, err: *mut *mut CourierError) -> *mut CourierServer {
    guard(err, std::ptr::null_mut(), || {
        let opts = opts.as_ref().copied().unwrap_or(CourierServerOptions {
            workers: 0,
            max_recv_message_size: 0,
            tls: std::ptr::null(),
            event_fd: false,
            limits_path: std::ptr::null(),
            limits_path_len: 0,
            host_concurrency: 0,
            debug_addr: std::ptr::null(),
            debug_addr_len: 0,
        });
        let mut config = ServerConfig::default();
        let limits = str_arg(opts.limits_path, opts.limits_path_len, "limits path")?;
        if !limits.is_empty() {
            config.limits_path = Some(limits.into());
        }
        if opts.host_concurrency > 0 {
            config.host_concurrency = Some(opts.host_concurrency);
        }
        let debug = str_arg(opts.debug_addr, opts.debug_addr_len, "debug address")?;
        if !debug.is_empty() {
            config.debug_addr = Some(debug.to_string());
        }
        config.tls = opts.tls.as_ref().map(|t| t.0.clone());
        if opts.workers > 0 {
            config.workers = opts.workers as usize;
        }
        if opts.max_recv_message_size > 0 {
            config.max_recv_message_size = usize::try_from(opts.max_recv_message_size).unwrap_or(usize::MAX);
        }
        let (queue, wake) = if opts.event_fd {
            let efd = std::sync::Arc::new(EventFd::new()?);
            let w = efd.clone();
            (HostQueue::with_notifier(move || w.signal()), Some(efd))
        } else {
            (HostQueue::new(), None)
        };
        let s = CourierServer { server: Server::new(config), queue, wake };
        Ok(Box::into_raw(Box::new(s)))
    })
}

/// Stops the server (no grace period) if it is running and frees it. No other
/// thread may use the server any more. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn courier_server_free(server: *mut CourierServer) {
    guard_quiet((), || {
        if !server.is_null() {
            let s = Box::from_raw(server);
            s.server.shutdown(Duration::ZERO);
            drop(s);
        }
    })
}

/// Adds a method served by host threads, before `courier_server_start`.
/// `path` is `/package.Service/Method`; `kind` a `CourierMethodKind`;
/// `default_deadline_ms` > 0, or `COURIER_NO_DEADLINE`; `app_error_enum` the full
/// name of the method's `rpc_error` enum (length 0: none); `method_id` is what
/// its calls carry in `CourierCallInfo`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_register(
    server: *const CourierServer,
    path: *const u8,
    path_len: usize,
    kind: i32,
    default_deadline_ms: i64,
    app_error_enum: *const u8,
    app_error_enum_len: usize,
    method_id: u64,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let s = handle(server, "server")?;
        let desc = method_desc(path, path_len, kind, default_deadline_ms, app_error_enum, app_error_enum_len)?.with_host_id(method_id);
        s.server.register(desc, Handler::Host(s.queue.clone())).map_err(server_error)?;
        Ok(true)
    })
}

/// Binds a TCP address (`"127.0.0.1:0"` picks a port) before
/// `courier_server_start`; returns the bound port, or -1. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_listen(server: *const CourierServer, addr: *const u8, addr_len: usize, err: *mut *mut CourierError) -> i32 {
    guard(err, -1, || {
        let s = handle(server, "server")?;
        let addr = str_arg(addr, addr_len, "address")?;
        Ok(i32::from(s.server.listen(addr).map_err(server_error)?.port()))
    })
}

/// Starts serving. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_start(server: *const CourierServer, err: *mut *mut CourierError) -> bool {
    guard(err, false, || {
        handle(server, "server")?.server.start().map_err(server_error)?;
        Ok(true)
    })
}

/// Graceful shutdown: stops accepting, lets calls in flight finish for up to
/// `grace_ms`, then cancels the rest; blocks until the I/O threads are done.
/// Host threads blocked in `courier_server_next_batch` then get -1. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_shutdown(server: *const CourierServer, grace_ms: u64) {
    guard_quiet((), || {
        if let Some(s) = server.as_ref() {
            s.server.shutdown(Duration::from_millis(grace_ms));
        }
    })
}

/// Sets a service's status in the built-in `grpc.health.v1.Health` service
/// (`service` of length 0: the whole server). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_set_serving(server: *const CourierServer, service: *const u8, service_len: usize, serving: bool) {
    guard_quiet((), || {
        let (Some(s), Ok(name)) = (server.as_ref(), str_arg(service, service_len, "service")) else { return };
        let st = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        s.server.health().set_serving(name, st);
    })
}

/// Takes up to `max` ready calls into `out`, blocking while none are ready
/// (at most `timeout_ms`; negative: no limit). First flushes `flush` (a reply
/// batch of this thread; may be NULL), so a host thread returns its replies
/// and asks for more in one crossing. Returns the number of calls (0 after a
/// timeout), or -1 once the server has stopped and no call is left.
///
/// Thread-safe; call it from threads that stay the same OS thread between two
/// calls (e.g. a goroutine locked with `runtime.LockOSThread`): the queue
/// tracks which threads hold a batch. A thread that stops pulling calls
/// `courier_server_release`.
#[no_mangle]
pub unsafe extern "C" fn courier_server_next_batch(
    server: *const CourierServer,
    flush: *mut CourierReplyBatch,
    out: *mut CourierCallInfo,
    max: usize,
    timeout_ms: i64,
) -> isize {
    guard_quiet(-1, || {
        if let Some(b) = flush.as_mut() {
            b.0.flush();
        }
        let Some(s) = server.as_ref() else { return -1 };
        if out.is_null() || max == 0 {
            return 0;
        }
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let Ok(batch) = s.queue.next_batch(max, timeout) else { return -1 };
        write_infos(batch, out)
    })
}

/// The eventfd of an event-loop server (see `CourierServerOptions::event_fd`),
/// or -1. It stays open until `courier_server_free`; the host reads it (8
/// bytes) to reset it, or `dup`s it for its own poller. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_notify_fd(server: *const CourierServer) -> i32 {
    guard_quiet(-1, || server.as_ref().and_then(|s| s.wake.as_ref()).map_or(-1, |w| w.0))
}

/// Takes up to `max` ready calls into `out` without blocking, first flushing
/// `flush` (may be NULL). Returns how many (0: none ready; wait for the
/// eventfd), or -1 once the server has stopped and no call is left. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_try_batch(
    server: *const CourierServer,
    flush: *mut CourierReplyBatch,
    out: *mut CourierCallInfo,
    max: usize,
) -> isize {
    guard_quiet(-1, || {
        if let Some(b) = flush.as_mut() {
            b.0.flush();
        }
        let Some(s) = server.as_ref() else { return -1 };
        if out.is_null() || max == 0 {
            return 0;
        }
        let Ok(batch) = s.queue.try_batch(max) else { return -1 };
        write_infos(batch, out)
    })
}

/// Writes one `CourierCallInfo` per call of `batch` into `out` (room for at
/// least `batch.len()`, which the queue keeps within the caller's `max`).
unsafe fn write_infos(batch: Vec<HostCall>, out: *mut CourierCallInfo) -> isize {
    let n = batch.len();
    let now = Instant::now();
    for (i, hc) in batch.into_iter().enumerate() {
        out.add(i).write(call_info(hc, now, None));
    }
    n as isize
}

/// `now`: one clock read for the whole batch; `reuse`: the box of a call
/// answered in the same crossing (no allocation).
fn call_info(hc: HostCall, now: Instant, reuse: Option<Box<CourierCall>>) -> CourierCallInfo {
    let method_id = hc.method().host_id();
    let kind = CourierMethodKind::from_core(hc.method().kind());
    let remaining = hc.ctx().deadline().map(|d| d.saturating_duration_since(now));
    let ctx = CourierCtx(hc.ctx().clone());
    let fresh = CourierCall {
        ctx,
        state: Mutex::new(State::Queued(hc)),
        requests: Mutex::new(None),
        last: Mutex::new(Bytes::new()),
    };
    let call = match reuse {
        Some(mut b) => {
            *b = fresh;
            b
        }
        None => Box::new(fresh),
    };
    CourierCallInfo {
        call: Box::into_raw(call),
        method_id,
        kind,
        has_deadline: remaining.is_some(),
        deadline_remaining_ns: remaining.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
    }
}

/// A span of the `data` buffer passed to `courier_server_take`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CourierSpan {
    pub offset: usize,
    pub len: usize,
}

/// The answer to one started unary or client-streaming call, handed to
/// `courier_server_take`. Spans index its `data` buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CourierAnswer {
    /// The call, owned by the library from now on: freed once answered.
    pub call: *mut CourierCall,
    /// 0: OK and `data` is the reply message; otherwise the status code, and
    /// `data` its message, as for `courier_reply_batch_push_error`.
    pub code: i32,
    pub app_error_value: i32,
    pub downstream: bool,
    pub data: CourierSpan,
    /// The `rpc_error` enum of an app error (length 0: none).
    pub app_error_enum: CourierSpan,
}

/// One call taken and started by `courier_server_take`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CourierTakenCall {
    /// The call, owned by the host from now on: answer it (a unary or
    /// client-streaming call in a later `courier_server_take`, which frees it)
    /// or free it with `courier_call_free`.
    pub call: *mut CourierCall,
    /// The id given to `courier_server_register` for the call's method.
    pub method_id: u64,
    pub kind: CourierMethodKind,
    /// Whether the call has a deadline, and the time left before it
    /// (nanoseconds, measured when the batch was taken).
    pub has_deadline: bool,
    pub deadline_remaining_ns: i64,
    /// Unary and server-streaming: the request message, borrowed from the
    /// call (valid until the next `courier_call_recv` or the call's free).
    pub request: CourierStr,
    /// The call's context, borrowed from the call: valid until the call is
    /// freed (or answered through `courier_server_take`); never free it.
    pub ctx: *const CourierCtx,
}

/// The host's whole turn in one crossing: answers `replies` (`n_replies` of
/// them; their spans index `data`, which is copied once), flushes them and
/// `flush` (a reply batch of this thread; may be NULL) to the I/O threads,
/// then takes and starts up to `max` ready calls into `out` (`max` 0: only
/// answer). `timeout_ms` 0 does not block (event mode; wait for the eventfd
/// when 0 calls come back); negative blocks while none are ready, positive at
/// most that long (as `courier_server_next_batch`, and from a thread that
/// stays the same OS thread). Returns the number of calls taken, or -1 once
/// the server has stopped and no call is left (the replies are answered
/// either way). A reply that cannot be sent (a bad span, a call not awaiting
/// one) is dropped with its call, which answers it INTERNAL. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_take(
    server: *const CourierServer,
    flush: *mut CourierReplyBatch,
    replies: *const CourierAnswer,
    n_replies: usize,
    data: *const u8,
    data_len: usize,
    out: *mut CourierTakenCall,
    max: usize,
    timeout_ms: i64,
) -> isize {
    guard_quiet(-1, || {
        let mut own = ReplyBatch::with_capacity(0);
        let batch = match flush.as_mut() {
            Some(b) => &mut b.0,
            None => &mut own,
        };
        // Boxes of answered calls, for the calls taken below.
        let mut spare = Vec::new();
        if n_replies > 0 && !replies.is_null() {
            // One copy and one allocation for every message of the batch.
            let all = Bytes::copy_from_slice(bytes_arg(data, data_len, "reply data").unwrap_or(&[]));
            spare.reserve(n_replies.min(max));
            for r in std::slice::from_raw_parts(replies, n_replies) {
                if !r.call.is_null() {
                    let call = Box::from_raw(r.call);
                    if let Some((reply, result)) = reply_of(&call, r, &all) {
                        batch.push(reply, result);
                    }
                    if spare.len() < max {
                        // Dropped when reused (an unanswered call answers INTERNAL then).
                        spare.push(call);
                    }
                }
            }
        }
        batch.flush();
        let Some(s) = server.as_ref() else { return -1 };
        if out.is_null() || max == 0 {
            return 0;
        }
        let taken = if timeout_ms == 0 {
            s.queue.try_batch(max)
        } else {
            s.queue.next_batch(max, u64::try_from(timeout_ms).ok().map(Duration::from_millis))
        };
        let Ok(taken) = taken else { return -1 };
        let n = taken.len();
        let now = Instant::now();
        for (i, hc) in taken.into_iter().enumerate() {
            let info = call_info(hc, now, spare.pop());
            let c = &*info.call;
            // A queued call always starts; on the impossible error the host
            // sees an empty request and the call still answers.
            let request = c.start().unwrap_or(CourierStr::EMPTY);
            out.add(i).write(CourierTakenCall {
                call: info.call,
                method_id: info.method_id,
                kind: info.kind,
                has_deadline: info.has_deadline,
                deadline_remaining_ns: info.deadline_remaining_ns,
                request,
                ctx: &c.ctx,
            });
        }
        n as isize
    })
}

/// The reply slot and result of one `CourierAnswer`; None when the call awaits
/// no reply or a span is out of `all`.
fn reply_of(call: &CourierCall, r: &CourierAnswer, all: &Bytes) -> Option<(UnaryReply, Result<Bytes, Status>)> {
    let span = |s: CourierSpan| (s.offset.checked_add(s.len)? <= all.len()).then(|| all.slice(s.offset..s.offset + s.len));
    let result = if r.code == 0 {
        Ok(span(r.data)?)
    } else {
        let msg = span(r.data)?;
        let app = span(r.app_error_enum)?;
        // SAFETY: both spans are inside `all`.
        let st = unsafe { status_arg(r.code, msg.as_ptr(), msg.len(), app.as_ptr(), app.len(), r.app_error_value, r.downstream) }.ok()?;
        Err(st)
    };
    Some((call.take_unary().ok()?, result))
}

/// Tells the queue this thread holds no batch any more (a host thread that
/// stops pulling calls). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_release(server: *const CourierServer) {
    guard_quiet((), || {
        if let Some(s) = server.as_ref() {
            s.queue.release();
        }
    })
}

/// Puts calls that were taken but not started back at the front of the queue
/// (e.g. the rest of a batch behind a slow handler), so another thread takes
/// them. Takes ownership of the `n` call handles (started ones are freed
/// instead). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_requeue(server: *const CourierServer, calls: *const *mut CourierCall, n: usize) {
    guard_quiet((), || {
        let Some(s) = server.as_ref() else { return };
        if calls.is_null() {
            return;
        }
        let mut back = Vec::with_capacity(n);
        for i in 0..n {
            let c = *calls.add(i);
            if c.is_null() {
                continue;
            }
            let call = Box::from_raw(c);
            let st = std::mem::replace(&mut *call.state(), State::Done);
            if let State::Queued(hc) = st {
                back.push(hc);
            }
        }
        s.queue.requeue_front(back);
    })
}

/// Calls waiting in the queue. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_queued(server: *const CourierServer) -> usize {
    guard_quiet(0, || server.as_ref().map_or(0, |s| s.queue.len()))
}

// ---------------------------------------------------------------- calls

enum State {
    Queued(HostCall),
    Unary(Option<UnaryReply>),
    Stream(Option<ResponseSender>),
    Done,
}

/// One call handed to the host. Its functions are thread-safe, but at most
/// one `courier_call_recv` and one `courier_call_send` may run at a time.
pub struct CourierCall {
    /// A `CourierCtx` (not a bare `Ctx`) so that `courier_server_take` can lend
    /// it without a handle allocation per call.
    ctx: CourierCtx,
    state: Mutex<State>,
    /// Client-streaming and bidi: taken out while a recv waits.
    requests: Mutex<Option<RequestStream>>,
    /// The request message (unary, server-streaming) or the last received one.
    last: Mutex<Bytes>,
}

impl CourierCall {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_last(&self, b: Bytes) -> CourierStr {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = b;
        CourierStr::of(&last)
    }

    /// Moves a queued call to started: its reply slot out of the queue's
    /// `HostCall`, its request message (unary, server-streaming; borrowed from
    /// the call) or stream of them (empty string).
    fn start(&self) -> Result<CourierStr, CourierError> {
        let req = {
            let mut st = self.state();
            let State::Queued(_) = &*st else { return Err(CourierError::state("call already started")) };
            let State::Queued(hc) = std::mem::replace(&mut *st, State::Done) else { unreachable!("checked above") };
            let (_ctx, _method, req, reply) = hc.into_parts();
            *st = match reply {
                HostReply::Unary(r) => State::Unary(Some(r)),
                HostReply::Stream(s) => State::Stream(Some(s)),
            };
            req
        };
        Ok(match req {
            HostRequest::Message(m) => self.set_last(m),
            HostRequest::Stream(s) => {
                *self.requests.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                CourierStr::EMPTY
            }
        })
    }

    fn sender(&self) -> Result<ResponseSender, CourierError> {
        match &*self.state() {
            State::Stream(Some(s)) => Ok(s.clone()),
            _ => Err(CourierError::state("this call is not a started server-streaming or bidi call, or was finished")),
        }
    }

    fn take_unary(&self) -> Result<UnaryReply, CourierError> {
        match &mut *self.state() {
            State::Unary(r) => r.take(),
            _ => None,
        }
        .ok_or_else(|| CourierError::state("this call is not a started unary or client-streaming call, or was answered already"))
    }
}

/// Starts a call taken from `courier_server_next_batch`. For unary and
/// server-streaming calls stores the request message in `*request` (borrowed
/// from the call, valid until the next `courier_call_recv` or the free); for
/// client-streaming and bidi calls an empty string (read with
/// `courier_call_recv`). If `ctx` is not NULL, stores a new handle to the
/// call's context there (free it with `courier_ctx_free`). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_call_start(
    call: *const CourierCall,
    request: *mut CourierStr,
    ctx: *mut *mut CourierCtx,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let c = handle(call, "call")?;
        let msg = c.start()?;
        if !request.is_null() {
            *request = msg;
        }
        if !ctx.is_null() {
            *ctx = Box::into_raw(Box::new(CourierCtx(c.ctx.0.clone())));
        }
        Ok(true)
    })
}

/// A new handle to the call's context (free with `courier_ctx_free`). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_call_ctx(call: *const CourierCall) -> *mut CourierCtx {
    guard_quiet(std::ptr::null_mut(), || match call.as_ref() {
        Some(c) => Box::into_raw(Box::new(CourierCtx(c.ctx.0.clone()))),
        None => std::ptr::null_mut(),
    })
}

/// The call's full method path, borrowed from the call. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_call_method(call: *const CourierCall) -> CourierStr {
    guard_quiet(CourierStr::EMPTY, || {
        call.as_ref().and_then(|c| c.ctx.0.method()).map_or(CourierStr::EMPTY, |m| CourierStr::of(m.as_bytes()))
    })
}

/// The next request message of a client-streaming or bidi call, blocking
/// this thread until it arrives. Returns 1 and stores the message in `*msg`
/// (borrowed from the call, valid until the next recv or the free), 0 at the
/// end of the requests, -1 on error (`err`: the status, e.g. CANCELLED when
/// the client reset the stream). One recv at a time per call.
#[no_mangle]
pub unsafe extern "C" fn courier_call_recv(call: *const CourierCall, msg: *mut CourierStr, err: *mut *mut CourierError) -> i32 {
    guard(err, -1, || {
        let c = handle(call, "call")?;
        let mut rs = c
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| CourierError::state("this call has no request stream, or another recv is in progress"))?;
        let r = rs.blocking_message();
        *c.requests.lock().unwrap_or_else(|e| e.into_inner()) = Some(rs);
        match r {
            Ok(Some(m)) => {
                let s = c.set_last(m);
                if !msg.is_null() {
                    *msg = s;
                }
                Ok(1)
            }
            Ok(None) => Ok(0),
            Err(s) => Err(CourierError::status(s)),
        }
    })
}

/// Sends one response message of a server-streaming or bidi call, blocking
/// while the client is behind. Fails with CANCELLED once the call is over.
/// The bytes are copied. One send at a time per call.
/// Thread-safe, one send at a time per call (it may run concurrently with a
/// recv on another thread; not with `courier_call_finish`).
#[no_mangle]
pub unsafe extern "C" fn courier_call_send(call: *const CourierCall, data: *const u8, len: usize, err: *mut *mut CourierError) -> bool {
    guard(err, false, || {
        let c = handle(call, "call")?;
        let msg = Bytes::copy_from_slice(bytes_arg(data, len, "message")?);
        c.sender()?.blocking_send(msg).map_err(CourierError::status)?;
        Ok(true)
    })
}

/// Sends without blocking: 1 when queued, 0 when the client is behind (try
/// again, or use `courier_call_send`), -1 on error (CANCELLED once the call is
/// over). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_call_try_send(call: *const CourierCall, data: *const u8, len: usize, err: *mut *mut CourierError) -> i32 {
    guard(err, -1, || {
        let c = handle(call, "call")?;
        let msg = Bytes::copy_from_slice(bytes_arg(data, len, "message")?);
        match c.sender()?.try_send(msg) {
            Ok(None) => Ok(1),
            Ok(Some(_)) => Ok(0),
            Err(s) => Err(CourierError::status(s)),
        }
    })
}

/// Ends a server-streaming or bidi call: `code` 0 is OK (message and app
/// error ignored); otherwise the status as for `courier_reply_batch_push_error`.
/// Blocks while the client is behind. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_call_finish(
    call: *const CourierCall,
    code: i32,
    message: *const u8,
    message_len: usize,
    app_error_enum: *const u8,
    app_error_enum_len: usize,
    app_error_value: i32,
    downstream: bool,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let c = handle(call, "call")?;
        let result = if code == 0 {
            Ok(())
        } else {
            Err(status_arg(code, message, message_len, app_error_enum, app_error_enum_len, app_error_value, downstream)?)
        };
        let sender = match &mut *c.state() {
            State::Stream(s) => s.take(),
            _ => None,
        }
        .ok_or_else(|| CourierError::state("this call is not a started streaming call, or was finished already"))?;
        sender.blocking_finish(result);
        Ok(true)
    })
}

/// True once the call is over for its client (cancelled, reset, deadline
/// passed, server stopped). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_call_cancelled(call: *const CourierCall) -> bool {
    guard_quiet(false, || call.as_ref().is_some_and(|c| c.ctx.0.is_cancelled()))
}

/// Frees a call. A unary call that was never answered is answered INTERNAL
/// ("the handler dropped the call"); a stream never finished ends INTERNAL.
/// No other thread may use the call any more. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn courier_call_free(call: *mut CourierCall) {
    guard_quiet((), || {
        if !call.is_null() {
            drop(Box::from_raw(call));
        }
    })
}

// ---------------------------------------------------------------- reply batches

/// Unary replies collected by one host thread and handed to the I/O threads
/// together (one wake-up per I/O thread per flush). Not thread-safe: one
/// thread at a time (it may move between threads between uses).
pub struct CourierReplyBatch(ReplyBatch);

/// A new, empty reply batch. Free with `courier_reply_batch_free`. Thread-safe.
#[no_mangle]
pub extern "C" fn courier_reply_batch_new() -> *mut CourierReplyBatch {
    guard_quiet(std::ptr::null_mut(), || Box::into_raw(Box::new(CourierReplyBatch(ReplyBatch::with_capacity(64)))))
}

/// Flushes and frees a batch. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it (or anything borrowed from it)
/// during or after this call.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_batch_free(batch: *mut CourierReplyBatch) {
    guard_quiet((), || {
        if !batch.is_null() {
            drop(Box::from_raw(batch));
        }
    })
}

/// Completes a started unary or client-streaming call with a reply message
/// (copied); it is sent at the next flush of `batch`.
/// Not thread-safe for `batch` (one thread at a time, see
/// `CourierReplyBatch`); `call` may be answered from any thread, once.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_batch_push(
    batch: *mut CourierReplyBatch,
    call: *const CourierCall,
    data: *const u8,
    len: usize,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let b = batch.as_mut().ok_or_else(|| CourierError::invalid("reply batch is NULL"))?;
        let c = handle(call, "call")?;
        let msg = Bytes::copy_from_slice(bytes_arg(data, len, "reply")?);
        b.0.push(c.take_unary()?, Ok(msg));
        Ok(true)
    })
}

/// Completes a started unary or client-streaming call with an error status:
/// a non-OK `code`, a message, an app error (`app_error_enum` of length 0:
/// none) and `downstream` = true when the host got this status from a call
/// it made (the core then answers UNKNOWN: errors do not leak across API
/// boundaries). Sent at the next flush of `batch`.
/// Not thread-safe for `batch` (one thread at a time, see
/// `CourierReplyBatch`); `call` may be answered from any thread, once.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_batch_push_error(
    batch: *mut CourierReplyBatch,
    call: *const CourierCall,
    code: i32,
    message: *const u8,
    message_len: usize,
    app_error_enum: *const u8,
    app_error_enum_len: usize,
    app_error_value: i32,
    downstream: bool,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let b = batch.as_mut().ok_or_else(|| CourierError::invalid("reply batch is NULL"))?;
        let c = handle(call, "call")?;
        let status: Status = status_arg(code, message, message_len, app_error_enum, app_error_enum_len, app_error_value, downstream)?;
        b.0.push(c.take_unary()?, Err(status));
        Ok(true)
    })
}

/// Hands every reply of the batch to its I/O thread. Never blocks.
/// Not thread-safe: one thread at a time per batch.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_batch_flush(batch: *mut CourierReplyBatch) {
    guard_quiet((), || {
        if let Some(b) = batch.as_mut() {
            b.0.flush();
        }
    })
}

/// Replies waiting in the batch.
/// Not thread-safe: one thread at a time per batch.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_batch_len(batch: *const CourierReplyBatch) -> usize {
    guard_quiet(0, || batch.as_ref().map_or(0, |b| b.0.len()))
}
