//! Client calls: `CourierChannel` (one HTTP/2 connection to a target,
//! multiplexed, reconnecting), method descriptors, unary calls and streaming
//! call handles. Calls block the calling thread (never a host lock); their
//! futures run on the core's client runtime.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use courier_core::client::client_runtime;
use courier_core::{CancelReason, ChannelConfig, MethodDesc, ReplyStream, Status};
use http::HeaderMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ctx::{CourierCtx, CourierMetadata};
use crate::server::method_desc;
use crate::{bytes_arg, guard, guard_quiet, handle, str_arg, CourierError, CourierStr};

/// Channel settings; zero fields take the core's defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CourierChannelOptions {
    /// Largest response message accepted, bytes (default 4 MiB).
    pub max_recv_message_size: u64,
    /// Connect timeout, milliseconds (default 20 s).
    pub connect_timeout_ms: u64,
    /// Mutual TLS (NULL: plaintext); the channel keeps its own reference.
    pub tls: *const crate::tls::CourierClientTls,
}

/// A client channel to one `host:port` target. Thread-safe: share one per
/// target between threads.
pub struct CourierChannel(courier_core::Channel);

/// A method as a client calls it (path, kind, default deadline, app-error
/// enum). Immutable, thread-safe.
pub struct CourierMethod(MethodDesc);

/// Creates a channel to `target` (`host:port`, plaintext). It connects on
/// first use and reconnects after failures. `opts` may be NULL. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_channel_new(
    target: *const u8,
    target_len: usize,
    opts: *const CourierChannelOptions,
    err: *mut *mut CourierError,
) -> *mut CourierChannel {
    guard(err, std::ptr::null_mut(), || {
        let target = str_arg(target, target_len, "target")?;
        let opts = opts.as_ref().copied().unwrap_or(CourierChannelOptions { max_recv_message_size: 0, connect_timeout_ms: 0, tls: std::ptr::null() });
        let mut config = ChannelConfig::default();
        config.tls = opts.tls.as_ref().map(|t| t.0.clone());
        if opts.max_recv_message_size > 0 {
            config.max_recv_message_size = usize::try_from(opts.max_recv_message_size).unwrap_or(usize::MAX);
        }
        if opts.connect_timeout_ms > 0 {
            config.connect_timeout = std::time::Duration::from_millis(opts.connect_timeout_ms);
        }
        // Made outside any runtime: its connections run on the client runtime.
        let _g = client_runtime().enter();
        let ch = courier_core::Channel::new(target, &config).map_err(|e| CourierError::invalid(e.to_string()))?;
        Ok(Box::into_raw(Box::new(CourierChannel(ch))))
    })
}

/// Frees a channel (calls in progress on other handles keep its connection).
/// NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it during or after this call (calls
/// started on it keep their own reference).
#[no_mangle]
pub unsafe extern "C" fn courier_channel_free(channel: *mut CourierChannel) {
    guard_quiet((), || {
        if !channel.is_null() {
            drop(Box::from_raw(channel));
        }
    })
}

/// A method descriptor for client calls; arguments as for
/// `courier_server_register`. Free with `courier_method_free`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_method_new(
    path: *const u8,
    path_len: usize,
    kind: i32,
    default_deadline_ms: i64,
    app_error_enum: *const u8,
    app_error_enum_len: usize,
    err: *mut *mut CourierError,
) -> *mut CourierMethod {
    guard(err, std::ptr::null_mut(), || {
        let d = method_desc(path, path_len, kind, default_deadline_ms, app_error_enum, app_error_enum_len)?;
        Ok(Box::into_raw(Box::new(CourierMethod(d))))
    })
}

/// Frees a method descriptor. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it (or anything borrowed from it)
/// during or after this call.
#[no_mangle]
pub unsafe extern "C" fn courier_method_free(method: *mut CourierMethod) {
    guard_quiet((), || {
        if !method.is_null() {
            drop(Box::from_raw(method));
        }
    })
}

/// The reply of a unary or client-streaming call: message, headers,
/// trailers. Immutable, thread-safe; free with `courier_reply_free`.
pub struct CourierReply {
    message: Bytes,
    headers: CourierMetadata,
    trailers: CourierMetadata,
}

fn metadata_arg(md: *const CourierMetadata) -> HeaderMap {
    // SAFETY: the caller passes NULL or a live list.
    unsafe { md.as_ref() }.map(|m| m.map.clone()).unwrap_or_default()
}

/// A unary call, blocking this thread until the reply or the status.
/// The effective deadline is the earlier of the ctx's and the method's
/// default; request id and trace context travel with the ctx. `metadata` may
/// be NULL. Returns the reply, or NULL with the status in `err` (a status
/// error: `courier_error_is_downstream` is true). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_channel_unary(
    channel: *const CourierChannel,
    ctx: *const CourierCtx,
    method: *const CourierMethod,
    request: *const u8,
    request_len: usize,
    metadata: *const CourierMetadata,
    err: *mut *mut CourierError,
) -> *mut CourierReply {
    guard(err, std::ptr::null_mut(), || {
        let ch = handle(channel, "channel")?;
        let ctx = handle(ctx, "ctx")?;
        let m = handle(method, "method")?;
        let req = Bytes::copy_from_slice(bytes_arg(request, request_len, "request")?);
        let md = metadata_arg(metadata);
        let r = futures_executor::block_on(ch.0.unary(&ctx.0, &m.0, req, &md)).map_err(CourierError::status)?;
        Ok(Box::into_raw(Box::new(CourierReply {
            message: r.message,
            headers: CourierMetadata::from_map(r.headers),
            trailers: CourierMetadata::from_map(r.trailers),
        })))
    })
}

/// The reply message, borrowed from the reply. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_message(reply: *const CourierReply) -> CourierStr {
    guard_quiet(CourierStr::EMPTY, || reply.as_ref().map_or(CourierStr::EMPTY, |r| CourierStr::of(&r.message)))
}

/// The response headers, borrowed from the reply (do not free). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_headers(reply: *const CourierReply) -> *const CourierMetadata {
    guard_quiet(std::ptr::null(), || reply.as_ref().map_or(std::ptr::null(), |r| &r.headers as *const _))
}

/// The response trailers, borrowed from the reply (do not free). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_trailers(reply: *const CourierReply) -> *const CourierMetadata {
    guard_quiet(std::ptr::null(), || reply.as_ref().map_or(std::ptr::null(), |r| &r.trailers as *const _))
}

/// Frees a reply. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it (or anything borrowed from it)
/// during or after this call.
#[no_mangle]
pub unsafe extern "C" fn courier_reply_free(reply: *mut CourierReply) {
    guard_quiet((), || {
        if !reply.is_null() {
            drop(Box::from_raw(reply));
        }
    })
}

// ---------------------------------------------------------------- streaming calls

enum Replies {
    Starting(JoinHandle<Result<ReplyStream, Status>>),
    Open(ReplyStream),
    /// Taken by a recv in progress.
    Busy,
    Failed(Status),
}

/// A streaming call of any kind in progress: requests go through
/// `courier_client_call_send`/`_close_send`, replies come from
/// `courier_client_call_recv`. Thread-safe, with one send and one recv at a
/// time (they may run concurrently, from different threads).
pub struct CourierClientCall {
    ctx: courier_core::Ctx,
    tx: Mutex<Option<mpsc::Sender<Bytes>>>,
    state: Arc<Mutex<Replies>>,
    /// The last message received (what `recv` lends out).
    last: Mutex<Bytes>,
}

/// Starts a streaming call (server-streaming, client-streaming or bidi; a
/// unary method works too). The call gets a child of `ctx`, so
/// `courier_client_call_cancel` cancels only it. `metadata` may be NULL.
/// Returns NULL on invalid arguments. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_channel_stream(
    channel: *const CourierChannel,
    ctx: *const CourierCtx,
    method: *const CourierMethod,
    metadata: *const CourierMetadata,
    err: *mut *mut CourierError,
) -> *mut CourierClientCall {
    guard(err, std::ptr::null_mut(), || {
        let ch = handle(channel, "channel")?.0.clone();
        let call_ctx = handle(ctx, "ctx")?.0.child();
        let desc = handle(method, "method")?.0.clone();
        let md = metadata_arg(metadata);
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let requests = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let c = call_ctx.clone();
        let start = client_runtime().spawn(async move { ch.bidi_streaming(&c, &desc, requests, &md).await });
        Ok(Box::into_raw(Box::new(CourierClientCall {
            ctx: call_ctx,
            tx: Mutex::new(Some(tx)),
            state: Arc::new(Mutex::new(Replies::Starting(start))),
            last: Mutex::new(Bytes::new()),
        })))
    })
}

/// Sends one request message (copied), blocking while the server is behind.
/// Returns false once the call has ended (its status comes from recv), or with
/// `err` set when the request side was closed already.
/// Thread-safe, one send at a time per call (it may run concurrently with a
/// recv, close_send or cancel from another thread).
#[no_mangle]
pub unsafe extern "C" fn courier_client_call_send(
    call: *const CourierClientCall,
    data: *const u8,
    len: usize,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let c = handle(call, "call")?;
        let tx = c.tx.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| CourierError::state("the request stream is closed"))?;
        let msg = Bytes::copy_from_slice(bytes_arg(data, len, "message")?);
        Ok(tx.blocking_send(msg).is_ok())
    })
}

/// Half-closes the call: no more request messages. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_client_call_close_send(call: *const CourierClientCall) {
    guard_quiet((), || {
        if let Some(c) = call.as_ref() {
            c.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    })
}

/// Cancels the call (the server sees its ctx cancelled; recv returns CANCELLED).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_client_call_cancel(call: *const CourierClientCall) {
    guard_quiet((), || {
        if let Some(c) = call.as_ref() {
            c.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
            c.ctx.cancel(CancelReason::Cancelled);
        }
    })
}

async fn open(state: Replies) -> Result<ReplyStream, Status> {
    match state {
        Replies::Open(s) => Ok(s),
        Replies::Starting(h) => match h.await {
            Ok(r) => r,
            Err(e) => Err(Status::cancelled(format!("call aborted: {e}"))),
        },
        Replies::Failed(s) => Err(s),
        Replies::Busy => Err(Status::internal("another recv is in progress on this call")),
    }
}

async fn next(state: Arc<Mutex<Replies>>) -> Result<Option<Bytes>, Status> {
    let taken = std::mem::replace(&mut *state.lock().unwrap_or_else(|e| e.into_inner()), Replies::Busy);
    let mut stream = match open(taken).await {
        Ok(s) => s,
        Err(s) => {
            *state.lock().unwrap_or_else(|e| e.into_inner()) = Replies::Failed(s.clone());
            return Err(s);
        }
    };
    let r = stream.message().await;
    *state.lock().unwrap_or_else(|e| e.into_inner()) = match &r {
        Err(s) => Replies::Failed(s.clone()),
        Ok(_) => Replies::Open(stream),
    };
    r
}

/// The next reply message, blocking this thread. Returns 1 and stores the
/// message in `*msg` (borrowed from the call, valid until the next recv or
/// the free), 0 at the end of an OK stream, -1 with the call's status in `err`.
#[no_mangle]
pub unsafe extern "C" fn courier_client_call_recv(call: *const CourierClientCall, msg: *mut CourierStr, err: *mut *mut CourierError) -> i32 {
    guard(err, -1, || {
        let c = handle(call, "call")?;
        match futures_executor::block_on(next(c.state.clone())) {
            Ok(Some(m)) => {
                let mut last = c.last.lock().unwrap_or_else(|e| e.into_inner());
                *last = m;
                if !msg.is_null() {
                    *msg = CourierStr::of(&last);
                }
                Ok(1)
            }
            Ok(None) => Ok(0),
            Err(s) => Err(CourierError::status(s)),
        }
    })
}

/// The response headers once the first recv returned (a new list: free with
/// `courier_metadata_free`), or NULL before that or after a failure. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_client_call_headers(call: *const CourierClientCall) -> *mut CourierMetadata {
    guard_quiet(std::ptr::null_mut(), || {
        let Some(c) = call.as_ref() else { return std::ptr::null_mut() };
        match &*c.state.lock().unwrap_or_else(|e| e.into_inner()) {
            Replies::Open(s) => Box::into_raw(Box::new(CourierMetadata::from_map(s.headers().clone()))),
            _ => std::ptr::null_mut(),
        }
    })
}

/// The response trailers once recv returned 0 (a new list: free with
/// `courier_metadata_free`), or NULL. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_client_call_trailers(call: *const CourierClientCall) -> *mut CourierMetadata {
    guard_quiet(std::ptr::null_mut(), || {
        let Some(c) = call.as_ref() else { return std::ptr::null_mut() };
        match &*c.state.lock().unwrap_or_else(|e| e.into_inner()) {
            Replies::Open(s) => s.trailers().map_or(std::ptr::null_mut(), |t| Box::into_raw(Box::new(CourierMetadata::from_map(t.clone())))),
            _ => std::ptr::null_mut(),
        }
    })
}

/// Frees a streaming call; a call still running is cancelled. No other thread
/// may use it any more. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn courier_client_call_free(call: *mut CourierClientCall) {
    guard_quiet((), || {
        if !call.is_null() {
            let c = Box::from_raw(call);
            let st = c.state.lock().unwrap_or_else(|e| e.into_inner());
            let finished = match &*st {
                Replies::Failed(_) => true,
                Replies::Open(s) => s.trailers().is_some(),
                Replies::Starting(h) => {
                    h.abort();
                    false
                }
                Replies::Busy => false,
            };
            drop(st);
            if !finished {
                c.ctx.cancel(CancelReason::Cancelled);
            }
        }
    })
}
