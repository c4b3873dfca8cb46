//! `Ctx`: what a call knows about itself (deadline, cancellation, peer, method,
//! request id, metadata) and what an outgoing call made with it propagates.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Notify;

/// Header carrying the request id across hops.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
/// W3C trace context headers, forwarded by outgoing calls.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The verified identity of a peer: a SPIFFE ID (`spiffe://<trust-domain>/<name>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The full SPIFFE ID.
    pub spiffe_id: String,
    /// The `<name>` part, used in config and stats.
    pub name: String,
}

/// Why a context was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CancelReason {
    /// The deadline passed.
    DeadlineExceeded = 1,
    /// The client went away or reset the stream, or the caller cancelled.
    Cancelled = 2,
    /// The server shut down before the call finished.
    Shutdown = 3,
}

/// A call context. Cheap to clone (one `Arc`); usable from any thread.
///
/// Server handlers receive one per call. Client calls take one: the effective
/// deadline of the outgoing call is the earliest of the ctx deadline and the
/// method default; request id and trace context travel with it.
#[derive(Clone)]
pub struct Ctx(Arc<Inner>);

struct Inner {
    deadline: Option<Instant>,
    parent: Option<Ctx>,
    cancel: AtomicU8,
    notify: Notify,
    method: Option<Arc<str>>,
    peer: Option<Arc<Identity>>,
    request_id: OnceLock<Box<str>>,
    metadata: HeaderMap,
    /// Response headers and trailers set by a server handler (rarely used: boxed).
    reply_meta: Mutex<Option<Box<(HeaderMap, HeaderMap)>>>,
    /// Set once `reply_meta` is: the server's take_* skip the lock without it.
    has_reply_meta: AtomicBool,
    /// Time the call waited in a queue before its handler started (ns + 1; 0: none).
    queue_wait_ns: AtomicU64,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("method", &self.method())
            .field("deadline", &self.0.deadline)
            .field("cancelled", &self.cancel_reason())
            .finish()
    }
}

impl Ctx {
    fn from_inner(inner: Inner) -> Ctx {
        Ctx(Arc::new(inner))
    }

    fn empty() -> Inner {
        Inner {
            deadline: None,
            parent: None,
            cancel: AtomicU8::new(0),
            notify: Notify::new(),
            method: None,
            peer: None,
            request_id: OnceLock::new(),
            metadata: HeaderMap::new(),
            reply_meta: Mutex::new(None),
            has_reply_meta: AtomicBool::new(false),
            queue_wait_ns: AtomicU64::new(0),
        }
    }

    /// A root context: no deadline, never cancelled by itself.
    pub fn background() -> Ctx {
        Ctx::from_inner(Ctx::empty())
    }

    /// The context of an incoming call (built by the server).
    pub(crate) fn for_server_call(
        method: Arc<str>,
        deadline: Option<Instant>,
        peer: Option<Arc<Identity>>,
        metadata: HeaderMap,
    ) -> Ctx {
        // The request id is read from the metadata on first use (most calls never ask).
        Ctx::from_inner(Inner { deadline, method: Some(method), peer, metadata, ..Ctx::empty() })
    }

    /// A child whose deadline is at most `timeout` from now. Cancelling the
    /// parent cancels the child; the child inherits request id, peer and metadata.
    pub fn with_timeout(&self, timeout: Duration) -> Ctx {
        self.with_deadline_instant(Instant::now().checked_add(timeout))
    }

    /// A child whose deadline is at most the given wall-clock time.
    pub fn with_deadline(&self, deadline: SystemTime) -> Ctx {
        let now_wall = SystemTime::now();
        let instant = match deadline.duration_since(now_wall) {
            Ok(ahead) => Instant::now().checked_add(ahead),
            Err(past) => Instant::now().checked_sub(past.duration()).or_else(|| Some(Instant::now())),
        };
        self.with_deadline_instant(instant)
    }

    /// A child that can be cancelled on its own ([`Ctx::cancel`]) without its parent.
    pub fn child(&self) -> Ctx {
        self.with_deadline_instant(None)
    }

    fn with_deadline_instant(&self, deadline: Option<Instant>) -> Ctx {
        let deadline = match (self.0.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Children share the id, so make it now if the parent has none yet.
        let request_id = OnceLock::new();
        let _ = request_id.set(self.request_id().into());
        Ctx::from_inner(Inner {
            deadline,
            parent: Some(self.clone()),
            method: self.0.method.clone(),
            peer: self.0.peer.clone(),
            request_id,
            metadata: self.0.metadata.clone(),
            ..Ctx::empty()
        })
    }

    /// The deadline as a monotonic instant, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    /// The deadline as wall-clock time (for leaving the RPC layer, e.g. into an SQL comment).
    pub fn deadline_wall(&self) -> Option<SystemTime> {
        let d = self.0.deadline?;
        let now = Instant::now();
        Some(if d >= now { SystemTime::now() + (d - now) } else { SystemTime::now() - (now - d) })
    }

    /// The deadline as seconds since the Unix epoch.
    pub fn deadline_unix(&self) -> Option<f64> {
        self.deadline_wall().map(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
    }

    /// Time left before the deadline (zero once passed); `None` without a deadline.
    pub fn time_remaining(&self) -> Option<Duration> {
        self.0.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True when the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.0.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Why this context (or an ancestor) was cancelled, or `None`. A passed
    /// deadline counts as cancellation even before any timer fires.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.explicit_cancel().or_else(|| self.is_expired().then_some(CancelReason::DeadlineExceeded))
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel_reason().is_some()
    }

    /// Cancels this context and its children. The first reason sticks.
    pub fn cancel(&self, reason: CancelReason) {
        if self.0.cancel.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.0.notify.notify_waiters();
        }
    }

    /// Resolves when this context or an ancestor is cancelled or its deadline passes.
    pub async fn cancelled(&self) -> CancelReason {
        match self.0.deadline {
            None => self.cancel_signal().await,
            Some(d) => tokio::select! {
                r = self.cancel_signal() => r,
                _ = tokio::time::sleep_until(d.into()) => CancelReason::DeadlineExceeded,
            },
        }
    }

    /// Resolves when [`Ctx::cancel`] is called on this context or an ancestor
    /// (or was before). Needs no timer, so any executor can poll it.
    pub async fn cancel_signal(&self) -> CancelReason {
        loop {
            // Register with every ancestor before checking, so no notify is missed.
            let mut chain = Vec::new();
            let mut cur = Some(self);
            while let Some(c) = cur {
                chain.push(Box::pin(c.0.notify.notified()));
                cur = c.0.parent.as_ref();
            }
            for n in chain.iter_mut() {
                n.as_mut().enable();
            }
            if let Some(r) = self.explicit_cancel() {
                return r;
            }
            futures_util::future::select_all(chain).await;
        }
    }

    fn explicit_cancel(&self) -> Option<CancelReason> {
        let mut cur = Some(self);
        while let Some(c) = cur {
            match c.0.cancel.load(Ordering::Acquire) {
                1 => return Some(CancelReason::DeadlineExceeded),
                2 => return Some(CancelReason::Cancelled),
                3 => return Some(CancelReason::Shutdown),
                _ => {}
            }
            cur = c.0.parent.as_ref();
        }
        None
    }

    /// The full method path (`/pkg.Service/Method`) on a server ctx.
    pub fn method(&self) -> Option<&str> {
        self.0.method.as_deref()
    }

    /// The verified peer identity on a server ctx (`None`: unauthenticated).
    pub fn peer_identity(&self) -> Option<&Identity> {
        self.0.peer.as_deref()
    }

    /// The request id: the caller's `x-request-id`, or one made on first use.
    pub fn request_id(&self) -> &str {
        self.0.request_id.get_or_init(|| match self.0.metadata.get(REQUEST_ID_NAME).and_then(|v| v.to_str().ok()) {
            Some(id) if !id.is_empty() => id.into(),
            _ => new_request_id(),
        })
    }

    /// How long the call waited in a queue before its handler started (server ctx).
    pub fn queue_wait(&self) -> Option<Duration> {
        match self.0.queue_wait_ns.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    /// Records the queue wait (set by whatever queue the call went through).
    pub fn set_queue_wait(&self, wait: Duration) {
        let n = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX - 1);
        self.0.queue_wait_ns.store(n.saturating_add(1), Ordering::Relaxed);
    }

    /// The incoming call's metadata (request headers) on a server ctx.
    pub fn metadata(&self) -> &HeaderMap {
        &self.0.metadata
    }

    /// Adds a response header (initial metadata) on a server ctx. Streaming calls
    /// send headers with their first message, so set them before that.
    pub fn append_reply_header(&self, name: HeaderName, value: HeaderValue) {
        self.with_reply_meta(|(h, _)| {
            h.append(name, value);
        })
    }

    /// Adds a response trailer (trailing metadata) on a server ctx.
    pub fn append_reply_trailer(&self, name: HeaderName, value: HeaderValue) {
        self.with_reply_meta(|(_, t)| {
            t.append(name, value);
        })
    }

    fn with_reply_meta(&self, f: impl FnOnce(&mut (HeaderMap, HeaderMap))) {
        let mut m = self.0.reply_meta.lock().unwrap_or_else(|e| e.into_inner());
        f(m.get_or_insert_with(Default::default));
        self.0.has_reply_meta.store(true, Ordering::Release);
    }

    /// Takes the response headers set so far.
    pub(crate) fn take_reply_headers(&self) -> Option<HeaderMap> {
        if !self.0.has_reply_meta.load(Ordering::Acquire) {
            return None;
        }
        let mut m = self.0.reply_meta.lock().unwrap_or_else(|e| e.into_inner());
        m.as_mut().map(|b| std::mem::take(&mut b.0)).filter(|h| !h.is_empty())
    }

    /// Takes the response trailers set so far.
    pub(crate) fn take_reply_trailers(&self) -> Option<HeaderMap> {
        if !self.0.has_reply_meta.load(Ordering::Acquire) {
            return None;
        }
        let mut m = self.0.reply_meta.lock().unwrap_or_else(|e| e.into_inner());
        m.as_mut().map(|b| std::mem::take(&mut b.1)).filter(|h| !h.is_empty())
    }
}

/// 128 random bits as 32 hex digits, from std's per-process random hash keys
/// (a request id needs uniqueness, not secrecy).
fn new_request_id() -> Box<str> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! { static KEYS: std::collections::hash_map::RandomState = Default::default(); }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (a, b) = KEYS.with(|k| {
        let mut h1 = k.build_hasher();
        h1.write_u64(n);
        let mut h2 = k.build_hasher();
        h2.write_u64(!n);
        (h1.finish(), h2.finish())
    });
    format!("{a:016x}{b:016x}").into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_deadline_is_the_earliest() {
        let root = Ctx::background();
        assert!(root.deadline().is_none() && root.time_remaining().is_none());
        let a = root.with_timeout(Duration::from_secs(10));
        let b = a.with_timeout(Duration::from_secs(100));
        assert_eq!(a.deadline(), b.deadline());
        let c = b.with_timeout(Duration::from_millis(10));
        assert!(c.deadline() < a.deadline());
        assert!(c.time_remaining().unwrap() <= Duration::from_millis(10));
    }

    #[test]
    fn wall_clock_deadline_round_trips() {
        let target = SystemTime::now() + Duration::from_secs(30);
        let c = Ctx::background().with_deadline(target);
        let back = c.deadline_wall().unwrap();
        let diff = back.duration_since(target).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(50), "{diff:?}");
        let past = Ctx::background().with_deadline(SystemTime::now() - Duration::from_secs(5));
        assert!(past.is_expired());
        assert_eq!(past.cancel_reason(), Some(CancelReason::DeadlineExceeded));
    }

    #[test]
    fn cancel_propagates_down_not_up() {
        let root = Ctx::background();
        let child = root.child();
        let grandchild = child.with_timeout(Duration::from_secs(5));
        child.cancel(CancelReason::Cancelled);
        assert!(!root.is_cancelled());
        assert_eq!(grandchild.cancel_reason(), Some(CancelReason::Cancelled));
        child.cancel(CancelReason::Shutdown);
        assert_eq!(child.cancel_reason(), Some(CancelReason::Cancelled), "first reason sticks");
    }

    #[tokio::test]
    async fn cancelled_future_wakes_on_parent_cancel_and_on_deadline() {
        let root = Ctx::background();
        let child = root.child().child();
        let waiter = tokio::spawn({
            let child = child.clone();
            async move { child.cancelled().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        root.cancel(CancelReason::Shutdown);
        assert_eq!(waiter.await.unwrap(), CancelReason::Shutdown);

        let timed = Ctx::background().with_timeout(Duration::from_millis(30));
        let t0 = Instant::now();
        assert_eq!(timed.cancelled().await, CancelReason::DeadlineExceeded);
        assert!(t0.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn request_id_is_taken_from_metadata_or_made_once() {
        let mut md = HeaderMap::new();
        md.insert(REQUEST_ID_HEADER, "abc-123".parse().unwrap());
        let c = Ctx::for_server_call("/a.B/C".into(), None, None, md);
        assert_eq!(c.request_id(), "abc-123");
        assert_eq!(c.child().request_id(), "abc-123");
        let d = Ctx::background();
        let id = d.request_id().to_string();
        assert_eq!(id.len(), 32);
        assert_eq!(d.request_id(), id);
        assert_ne!(Ctx::background().request_id(), id);
    }
}
