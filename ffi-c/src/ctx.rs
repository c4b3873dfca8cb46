//! Contexts (deadline, cancellation, peer identity, request id, metadata),
//! metadata lists, and cancellation events for hosts that cannot block a
//! thread per context (`courier_ctx_watch` + `courier_events_next`).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use courier_core::client::client_runtime;
use courier_core::metadata::{self, MetaValue};
use courier_core::{CancelReason, Ctx};
use http::HeaderMap;

use crate::{bytes_arg, guard, guard_quiet, handle, str_arg, CourierError, CourierStr};

/// A call context. Immutable but for cancellation: every function on it is
/// thread-safe. Free each handle with `courier_ctx_free`.
pub struct CourierCtx(pub(crate) Ctx);

fn boxed(c: Ctx) -> *mut CourierCtx {
    Box::into_raw(Box::new(CourierCtx(c)))
}

/// A root context: no deadline, never cancelled by itself. Thread-safe.
#[no_mangle]
pub extern "C" fn courier_ctx_background() -> *mut CourierCtx {
    guard_quiet(std::ptr::null_mut(), || boxed(Ctx::background()))
}

/// Another handle to the same context. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_clone(ctx: *const CourierCtx) -> *mut CourierCtx {
    guard_quiet(std::ptr::null_mut(), || ctx.as_ref().map_or(std::ptr::null_mut(), |c| boxed(c.0.clone())))
}

/// Frees a context handle. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// this handle: no other thread may use it (or a string borrowed from it)
/// during or after this call; other handles to the context stay valid.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_free(ctx: *mut CourierCtx) {
    guard_quiet((), || {
        if !ctx.is_null() {
            drop(Box::from_raw(ctx));
        }
    })
}

/// A child whose deadline is at most `timeout_ns` from now (the earlier of it
/// and the parent's). Cancelling the parent cancels the child; the child keeps
/// request id, peer and metadata. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_with_timeout(ctx: *const CourierCtx, timeout_ns: i64) -> *mut CourierCtx {
    guard_quiet(std::ptr::null_mut(), || match ctx.as_ref() {
        Some(c) => boxed(c.0.with_timeout(Duration::from_nanos(timeout_ns.max(0) as u64))),
        None => std::ptr::null_mut(),
    })
}

/// A child whose deadline is at most the wall-clock time `unix_ns`
/// (nanoseconds since the Unix epoch). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_with_deadline(ctx: *const CourierCtx, unix_ns: i64) -> *mut CourierCtx {
    guard_quiet(std::ptr::null_mut(), || match ctx.as_ref() {
        Some(c) => {
            let at = if unix_ns >= 0 {
                UNIX_EPOCH + Duration::from_nanos(unix_ns as u64)
            } else {
                UNIX_EPOCH - Duration::from_nanos(unix_ns.unsigned_abs())
            };
            boxed(c.0.with_deadline(at))
        }
        None => std::ptr::null_mut(),
    })
}

/// A child that can be cancelled on its own, without its parent. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_child(ctx: *const CourierCtx) -> *mut CourierCtx {
    guard_quiet(std::ptr::null_mut(), || ctx.as_ref().map_or(std::ptr::null_mut(), |c| boxed(c.0.child())))
}

/// The deadline as wall-clock nanoseconds since the Unix epoch: stores it in
/// `*unix_ns` and returns true, or returns false without a deadline. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_deadline(ctx: *const CourierCtx, unix_ns: *mut i64) -> bool {
    guard_quiet(false, || {
        let Some(w) = ctx.as_ref().and_then(|c| c.0.deadline_wall()) else { return false };
        let ns = match w.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        };
        if !unix_ns.is_null() {
            *unix_ns = ns;
        }
        true
    })
}

/// Time left before the deadline (0 once passed): stores nanoseconds in
/// `*ns` and returns true, or returns false without a deadline. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_remaining(ctx: *const CourierCtx, ns: *mut i64) -> bool {
    guard_quiet(false, || {
        let Some(d) = ctx.as_ref().and_then(|c| c.0.time_remaining()) else { return false };
        if !ns.is_null() {
            *ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        }
        true
    })
}

/// Why a context is cancelled.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CourierCancel {
    /// Not cancelled.
    None = 0,
    /// The deadline passed.
    DeadlineExceeded = 1,
    /// The client went away or reset the stream, or the context was cancelled.
    Cancelled = 2,
    /// The server shut down before the call finished.
    Shutdown = 3,
}

fn cancel_code(r: Option<CancelReason>) -> CourierCancel {
    match r {
        None => CourierCancel::None,
        Some(CancelReason::DeadlineExceeded) => CourierCancel::DeadlineExceeded,
        Some(CancelReason::Cancelled) => CourierCancel::Cancelled,
        Some(CancelReason::Shutdown) => CourierCancel::Shutdown,
    }
}

/// Whether (and why) the context or an ancestor is cancelled; a passed
/// deadline counts. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_cancelled(ctx: *const CourierCtx) -> CourierCancel {
    guard_quiet(CourierCancel::None, || cancel_code(ctx.as_ref().and_then(|c| c.0.cancel_reason())))
}

/// Cancels the context and its children (and calls made with them). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_cancel(ctx: *const CourierCtx) {
    guard_quiet((), || {
        if let Some(c) = ctx.as_ref() {
            c.0.cancel(CancelReason::Cancelled);
        }
    })
}

/// The verified peer identity of a server context: stores the full SPIFFE ID
/// and its short name (both borrowed from the handle) and returns true;
/// false when the peer is unauthenticated. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_peer_identity(ctx: *const CourierCtx, spiffe_id: *mut CourierStr, name: *mut CourierStr) -> bool {
    guard_quiet(false, || {
        let Some(id) = ctx.as_ref().and_then(|c| c.0.peer_identity()) else { return false };
        if !spiffe_id.is_null() {
            *spiffe_id = CourierStr::of(id.spiffe_id.as_bytes());
        }
        if !name.is_null() {
            *name = CourierStr::of(id.name.as_bytes());
        }
        true
    })
}

/// The request id (the caller's `x-request-id`, or one made on first use),
/// borrowed from the handle. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_request_id(ctx: *const CourierCtx) -> CourierStr {
    guard_quiet(CourierStr::EMPTY, || ctx.as_ref().map_or(CourierStr::EMPTY, |c| CourierStr::of(c.0.request_id().as_bytes())))
}

/// The full method path of a server context (empty otherwise), borrowed from
/// the handle. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_method(ctx: *const CourierCtx) -> CourierStr {
    guard_quiet(CourierStr::EMPTY, || {
        ctx.as_ref().and_then(|c| c.0.method()).map_or(CourierStr::EMPTY, |m| CourierStr::of(m.as_bytes()))
    })
}

/// The incoming call's metadata (request headers, transport headers hidden),
/// as a new list (free with `courier_metadata_free`). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_metadata(ctx: *const CourierCtx) -> *mut CourierMetadata {
    guard_quiet(std::ptr::null_mut(), || match ctx.as_ref() {
        Some(c) => Box::into_raw(Box::new(CourierMetadata::from_map(c.0.metadata().clone()))),
        None => std::ptr::null_mut(),
    })
}

unsafe fn meta_value(key: &str, value: *const u8, value_len: usize) -> Result<MetaValue, CourierError> {
    let v = bytes_arg(value, value_len, "metadata value")?;
    Ok(if key.ends_with("-bin") {
        MetaValue::Binary(v.to_vec())
    } else {
        MetaValue::Text(std::str::from_utf8(v).map_err(|_| CourierError::invalid(format!("value of metadata key {key:?} is not valid UTF-8")))?.to_string())
    })
}

unsafe fn reply_meta(
    ctx: *const CourierCtx,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    trailer: bool,
) -> Result<bool, CourierError> {
    let c = handle(ctx, "ctx")?;
    let key = str_arg(key, key_len, "metadata key")?;
    let mut h = HeaderMap::new();
    metadata::append_pair(&mut h, key, meta_value(key, value, value_len)?).map_err(CourierError::invalid)?;
    for (k, v) in h {
        if let Some(k) = k {
            if trailer {
                c.0.append_reply_trailer(k, v);
            } else {
                c.0.append_reply_header(k, v);
            }
        }
    }
    Ok(true)
}

/// Adds a response header (initial metadata) to the call of a server context.
/// Keys ending in `-bin` take bytes, others printable ASCII; the core
/// validates both. Streaming calls send headers with their first message.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_add_reply_header(
    ctx: *const CourierCtx,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || reply_meta(ctx, key, key_len, value, value_len, false))
}

/// Adds a response trailer (trailing metadata) to the call of a server
/// context; as `courier_ctx_add_reply_header`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_add_reply_trailer(
    ctx: *const CourierCtx,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || reply_meta(ctx, key, key_len, value, value_len, true))
}

// ---------------------------------------------------------------- metadata

/// A list of metadata pairs: read from a context or a reply, or built for an
/// outgoing call. Reading is thread-safe; appending needs exclusive use.
pub struct CourierMetadata {
    pub(crate) map: HeaderMap,
    pairs: OnceLock<Vec<(String, MetaValue)>>,
}

impl CourierMetadata {
    pub(crate) fn from_map(map: HeaderMap) -> CourierMetadata {
        CourierMetadata { map, pairs: OnceLock::new() }
    }
    fn pairs(&self) -> &[(String, MetaValue)] {
        self.pairs.get_or_init(|| metadata::to_pairs(&self.map))
    }
}

/// A new, empty list for an outgoing call. Thread-safe.
#[no_mangle]
pub extern "C" fn courier_metadata_new() -> *mut CourierMetadata {
    guard_quiet(std::ptr::null_mut(), || Box::into_raw(Box::new(CourierMetadata::from_map(HeaderMap::new()))))
}

/// Frees a list. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it (or anything borrowed from it)
/// during or after this call.
#[no_mangle]
pub unsafe extern "C" fn courier_metadata_free(md: *mut CourierMetadata) {
    guard_quiet((), || {
        if !md.is_null() {
            drop(Box::from_raw(md));
        }
    })
}

/// Appends a pair, validated by the core (lowercase key, not reserved; `-bin`
/// keys take bytes, others printable ASCII). Not thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_metadata_append(
    md: *mut CourierMetadata,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let m = md.as_mut().ok_or_else(|| CourierError::invalid("metadata is NULL"))?;
        let key = str_arg(key, key_len, "metadata key")?;
        metadata::append_pair(&mut m.map, key, meta_value(key, value, value_len)?).map_err(CourierError::invalid)?;
        m.pairs = OnceLock::new();
        Ok(true)
    })
}

/// The number of pairs. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_metadata_len(md: *const CourierMetadata) -> usize {
    guard_quiet(0, || md.as_ref().map_or(0, |m| m.pairs().len()))
}

/// Pair `i`: key and value borrowed from the list (binary values decoded from
/// base64 for `-bin` keys, flagged in `*binary`). False when out of range.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_metadata_get(
    md: *const CourierMetadata,
    i: usize,
    key: *mut CourierStr,
    value: *mut CourierStr,
    binary: *mut bool,
) -> bool {
    guard_quiet(false, || {
        let Some((k, v)) = md.as_ref().and_then(|m| m.pairs().get(i)) else { return false };
        if !key.is_null() {
            *key = CourierStr::of(k.as_bytes());
        }
        let (bytes, bin) = match v {
            MetaValue::Text(t) => (t.as_bytes(), false),
            MetaValue::Binary(b) => (b.as_slice(), true),
        };
        if !value.is_null() {
            *value = CourierStr::of(bytes);
        }
        if !binary.is_null() {
            *binary = bin;
        }
        true
    })
}

// ---------------------------------------------------------------- cancellation events

struct Events {
    queue: Mutex<VecDeque<u64>>,
    ready: Condvar,
}

fn events() -> &'static Events {
    static E: OnceLock<Events> = OnceLock::new();
    E.get_or_init(|| Events { queue: Mutex::new(VecDeque::new()), ready: Condvar::new() })
}

fn post(token: u64) {
    let e = events();
    e.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(token);
    e.ready.notify_one();
}

/// A registration made by `courier_ctx_watch`.
pub struct CourierWatch(Option<tokio::task::AbortHandle>);

/// Asks for `token` to be posted to the process-wide event queue
/// (`courier_events_next`) once the context is cancelled or its deadline
/// passes (at once if it already is). Free the watch with `courier_watch_free`
/// when no longer interested (it is then never posted). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_ctx_watch(ctx: *const CourierCtx, token: u64) -> *mut CourierWatch {
    guard_quiet(std::ptr::null_mut(), || {
        let Some(c) = ctx.as_ref() else { return std::ptr::null_mut() };
        if c.0.is_cancelled() {
            post(token);
            return Box::into_raw(Box::new(CourierWatch(None)));
        }
        let ctx = c.0.clone();
        let task = client_runtime().spawn(async move {
            ctx.cancelled().await;
            post(token);
        });
        Box::into_raw(Box::new(CourierWatch(Some(task.abort_handle()))))
    })
}

/// Ends a watch (its token is not posted after this returns, unless it was
/// already) and frees it. NULL is ignored. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_watch_free(watch: *mut CourierWatch) {
    guard_quiet((), || {
        if !watch.is_null() {
            if let Some(t) = Box::from_raw(watch).0 {
                t.abort();
            }
        }
    })
}

/// Takes up to `max` posted tokens into `out`, blocking while none are posted
/// (at most `timeout_ms`; negative: no limit). Returns how many (0 after a
/// timeout). Thread-safe; typically one host thread loops on it.
#[no_mangle]
pub unsafe extern "C" fn courier_events_next(out: *mut u64, max: usize, timeout_ms: i64) -> isize {
    guard_quiet(0, || {
        if out.is_null() || max == 0 {
            return 0;
        }
        let e = events();
        let until = u64::try_from(timeout_ms).ok().map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut q = e.queue.lock().unwrap_or_else(|p| p.into_inner());
        while q.is_empty() {
            q = match until {
                None => e.ready.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(u) => {
                    let left = u.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return 0;
                    }
                    e.ready.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        let n = q.len().min(max);
        for (i, t) in q.drain(..n).enumerate() {
            out.add(i).write(t);
        }
        n as isize
    })
}

/// Wakes one thread blocked in `courier_events_next` by posting `token`
/// (e.g. a sentinel that tells it to stop). Thread-safe.
#[no_mangle]
pub extern "C" fn courier_events_post(token: u64) {
    guard_quiet((), || post(token))
}

