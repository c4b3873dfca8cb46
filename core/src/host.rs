//! The pull-based, batched boundary for host languages (Python, Go, Java).
//!
//! PERF-NOTES measured why it looks like this: a host thread that stays attached
//! and pulls *batches* of ready calls (blocking without any host lock while none
//! are ready), then hands all replies of a batch back with *one* wake-up of each
//! I/O thread, serves about twice the calls of a design that wakes the I/O side
//! once per reply, because the I/O thread then writes many responses per syscall.
//!
//! Event-loop hosts (asyncio) register a notifier instead of blocking: it is
//! called only when the queue turns from empty to non-empty, and the host drains
//! everything ready with [`HostQueue::try_batch`].

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::call::{RequestStream, ResponseSender};
use crate::context::Ctx;
use crate::method::MethodDesc;
use crate::status::Status;

/// Result of a unary (or client-streaming) host handler.
pub type UnaryResult = Result<Bytes, Status>;

/// A call waiting for, or taken by, a host thread.
pub struct HostCall {
    pub(crate) ctx: Ctx,
    pub(crate) method: Arc<MethodDesc>,
    pub(crate) request: HostRequest,
    pub(crate) reply: Reply,
}

/// The request side of a host call.
pub enum HostRequest {
    /// Unary and server-streaming: the one request message.
    Message(Bytes),
    /// Client-streaming and bidi: the stream of request messages.
    Stream(RequestStream),
}

/// How a host call is completed.
pub enum Reply {
    /// Unary and client-streaming: one message or a status, through a [`ReplyBatch`].
    Unary(UnaryReply),
    /// Server-streaming and bidi: messages, then [`ResponseSender::finish`].
    Stream(ResponseSender),
}

/// The completion slot of one unary host call.
pub struct UnaryReply {
    tx: oneshot::Sender<UnaryResult>,
    mailbox: Mailbox,
}

impl HostCall {
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
    pub fn method(&self) -> &Arc<MethodDesc> {
        &self.method
    }
    /// Splits the call into what the host handler needs.
    pub fn into_parts(self) -> (Ctx, Arc<MethodDesc>, HostRequest, Reply) {
        (self.ctx, self.method, self.request, self.reply)
    }
}

/// Replies collected by a host thread and handed back together: one message,
/// hence one wake-up, per I/O thread that owns any of the calls.
#[derive(Default)]
pub struct ReplyBatch {
    items: Vec<(UnaryReply, UnaryResult)>,
}

impl ReplyBatch {
    pub fn with_capacity(n: usize) -> ReplyBatch {
        ReplyBatch { items: Vec::with_capacity(n) }
    }

    pub fn push(&mut self, reply: UnaryReply, result: UnaryResult) {
        self.items.push((reply, result));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hands every reply to its I/O thread. Never blocks.
    pub fn flush(&mut self) {
        while let Some((first, _)) = self.items.first() {
            let target = first.mailbox.clone();
            let (mine, rest): (Vec<_>, Vec<_>) = self.items.drain(..).partition(|(r, _)| r.mailbox.same(&target));
            self.items = rest;
            target.deliver(mine.into_iter().map(|(r, res)| (r.tx, res)).collect());
        }
    }
}

impl Drop for ReplyBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

type Delivery = Vec<(oneshot::Sender<UnaryResult>, UnaryResult)>;

/// The reply inbox of one I/O thread: a task on that thread completes each
/// call's local oneshot, so all the responses of a batch are written together.
#[derive(Clone)]
pub(crate) struct Mailbox(Arc<mpsc::UnboundedSender<Delivery>>);

impl Mailbox {
    /// Starts the inbox task on the current runtime.
    pub(crate) fn spawn_local() -> Mailbox {
        let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                for (tx, res) in batch {
                    let _ = tx.send(res);
                }
            }
        });
        Mailbox(Arc::new(tx))
    }

    fn same(&self, other: &Mailbox) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn deliver(&self, batch: Delivery) {
        if let Err(mpsc::error::SendError(batch)) = self.0.send(batch) {
            // The I/O thread is gone (server stopped): nobody waits for these.
            drop(batch);
        }
    }
}

impl UnaryReply {
    pub(crate) fn new(mailbox: Mailbox) -> (UnaryReply, oneshot::Receiver<UnaryResult>) {
        let (tx, rx) = oneshot::channel();
        (UnaryReply { tx, mailbox }, rx)
    }

    /// True once nobody waits for the reply (client gone, deadline passed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The queue is closed: the server is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is shutting down")]
pub struct Closed;

type Notifier = Box<dyn Fn() + Send + Sync>;

/// How long the busy host threads may go without taking a batch, while calls
/// wait, before an idle thread is woken. A busy thread that keeps coming back
/// for batches is making progress: it takes the waiting calls itself, so fast
/// handlers keep one thread pulling big batches (no GIL ping-pong). A thread
/// stuck in a blocked handler stops coming back: the others are held up for
/// at most this long.
const STALL: Duration = Duration::from_millis(2);

/// Ready calls for host threads. Clone it to share; all methods are thread-safe.
#[derive(Clone)]
pub struct HostQueue(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    /// Wakes the stall watchdog (see [`STALL`]).
    stall: Condvar,
    notifier: Option<Notifier>,
}

struct State {
    calls: VecDeque<(Instant, HostCall)>,
    closed: bool,
    /// Host threads blocked in `next_batch`.
    waiting: usize,
    /// Host threads that took calls and have not asked for more yet.
    active: usize,
    /// When a host thread last took a batch: the busy threads' progress.
    last_take: Instant,
    watchdog: bool,
}

thread_local! {
    /// Queues that got calls in this turn of the I/O thread's runtime and whose
    /// host threads are not woken yet (see [`HostQueue::defer_wake`]).
    static DEFERRED: std::cell::RefCell<Vec<HostQueue>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// True on a Courier I/O thread: inside a `current_thread` runtime.
fn in_io_turn() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    Handle::try_current().is_ok_and(|rt| rt.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

impl HostQueue {
    /// On an I/O thread the wake-up of the host side waits until the end of the
    /// runtime's current turn: a task spawned behind the ones already ready.
    /// Woken at once, a host thread on the same core preempts the I/O thread and
    /// takes one call at a time (measured: one context switch per call each way,
    /// 19 µs of server CPU per Python call against 12 µs); woken at the end, it
    /// takes everything the turn made ready.
    fn defer_wake(&self) {
        let first = DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            let first = d.is_empty();
            if !d.iter().any(|x| Arc::ptr_eq(&x.0, &self.0)) {
                d.push(self.clone());
            }
            first
        });
        if first {
            // Dropped unpolled (runtime shutting down), it still wakes the hosts.
            let guard = WakeDeferred;
            tokio::spawn(async move { drop(guard) });
        }
    }
}

struct WakeDeferred;

impl Drop for WakeDeferred {
    fn drop(&mut self) {
        for q in DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut())) {
            q.wake_deferred();
        }
    }
}

thread_local! {
    /// Queues this thread holds a batch of (see `State::active`).
    static HELD: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Forgets this thread's batch of queue `id`; true if it held one.
fn drop_hold(id: usize) -> bool {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        h.iter().position(|&x| x == id).map(|i| h.swap_remove(i)).is_some()
    })
}

impl Default for HostQueue {
    fn default() -> Self {
        HostQueue::new()
    }
}

impl HostQueue {
    /// A queue for host threads that block in [`HostQueue::next_batch`].
    pub fn new() -> HostQueue {
        HostQueue::build(None)
    }

    /// A queue for an event loop: `notify` runs (on an I/O thread; keep it short,
    /// e.g. write an eventfd) whenever the queue turns non-empty.
    pub fn with_notifier(notify: impl Fn() + Send + Sync + 'static) -> HostQueue {
        HostQueue::build(Some(Box::new(notify)))
    }

    fn build(notifier: Option<Notifier>) -> HostQueue {
        HostQueue(Arc::new(Shared {
            state: Mutex::new(State {
                calls: VecDeque::new(),
                closed: false,
                waiting: 0,
                active: 0,
                last_take: Instant::now(),
                watchdog: false,
            }),
            ready: Condvar::new(),
            stall: Condvar::new(),
            notifier,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Queues a call; gives it back when the queue is closed.
    pub(crate) fn push(&self, call: HostCall) -> Result<(), HostCall> {
        let mut st = self.lock();
        if st.closed {
            return Err(call);
        }
        let was_empty = st.calls.is_empty();
        st.calls.push_back((Instant::now(), call));
        if in_io_turn() {
            drop(st);
            self.defer_wake();
            return Ok(());
        }
        self.wake_one(st);
        if was_empty {
            self.notify();
        }
        Ok(())
    }

    fn notify(&self) {
        if let Some(n) = &self.0.notifier {
            n();
        }
    }

    /// The deferred wake-up of [`HostQueue::push`]: runs once the I/O thread has
    /// queued everything its current turn made ready.
    fn wake_deferred(&self) {
        let st = self.lock();
        if st.calls.is_empty() {
            // The host took them meanwhile (a busy thread came back for more).
            return;
        }
        self.wake_one(st);
        self.notify();
    }

    /// After calls were queued: wake an idle thread now if none is busy, else
    /// leave them to the busy ones and let the watchdog wake one after [`STALL`].
    fn wake_one(&self, mut st: std::sync::MutexGuard<'_, State>) {
        if st.waiting == 0 {
            return;
        }
        if st.active == 0 {
            drop(st);
            self.0.ready.notify_one();
            return;
        }
        if !st.watchdog {
            st.watchdog = true;
            drop(st);
            let q = self.clone();
            let spawned = std::thread::Builder::new().name("courier-host-watchdog".into()).spawn(move || q.watchdog());
            if spawned.is_err() {
                // No watchdog: fall back to waking a thread per push.
                self.lock().watchdog = false;
                self.0.ready.notify_one();
            }
        } else {
            drop(st);
            self.0.stall.notify_one();
        }
    }

    fn watchdog(&self) {
        let mut st = self.lock();
        loop {
            if st.closed {
                st.watchdog = false;
                return;
            }
            // Stalled: calls have waited, and no busy thread took a batch, for STALL.
            let oldest = st.calls.iter().map(|(t, _)| *t).min();
            st = match oldest {
                Some(t) if st.waiting > 0 => {
                    let due = t.max(st.last_take) + STALL;
                    let now = Instant::now();
                    if now >= due {
                        self.0.ready.notify_one();
                        self.0.stall.wait_timeout(st, STALL).unwrap_or_else(|e| e.into_inner()).0
                    } else {
                        self.0.stall.wait_timeout(st, due - now).unwrap_or_else(|e| e.into_inner()).0
                    }
                }
                _ => self.0.stall.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Up to `max` ready calls, blocking while none are ready (at most `timeout`,
    /// if given; then an empty batch). Calls whose client left or whose deadline
    /// passed while queued are dropped here, never started: their I/O side has
    /// answered already. `Err(Closed)` once the server stops and the queue is empty.
    pub fn next_batch(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<HostCall>, Closed> {
        let until = timeout.map(|t| Instant::now() + t);
        let id = self.id();
        let held = drop_hold(id);
        let mut st = self.lock();
        if held {
            st.active -= 1;
        }
        loop {
            let batch = take_live(&mut st.calls, max);
            if !batch.is_empty() {
                st.active += 1;
                st.last_take = Instant::now();
                HELD.with(|h| h.borrow_mut().push(id));
                return Ok(batch);
            }
            if st.closed {
                return Err(Closed);
            }
            st.waiting += 1;
            st = match until {
                None => self.0.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(u) => {
                    let left = u.saturating_duration_since(Instant::now());
                    self.0.ready.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            st.waiting -= 1;
            if until.is_some_and(|u| Instant::now() >= u) && st.calls.is_empty() {
                return if st.closed { Err(Closed) } else { Ok(Vec::new()) };
            }
        }
    }

    /// Tells the queue this thread holds no batch any more (a host thread that
    /// stops pulling calls this, so idle threads are woken without delay).
    pub fn release(&self) {
        let held = drop_hold(self.id());
        if held {
            self.lock().active -= 1;
        }
    }

    /// Puts calls a host thread took but did not start back at the front of the
    /// queue (e.g. behind a handler that turned out slow), waking another thread.
    pub fn requeue_front(&self, calls: Vec<HostCall>) {
        if calls.is_empty() {
            return;
        }
        let mut st = self.lock();
        if st.closed {
            drop(st);
            for call in calls {
                reject(call);
            }
            return;
        }
        let now = Instant::now();
        for call in calls.into_iter().rev() {
            st.calls.push_front((now.checked_sub(STALL).unwrap_or(now), call));
        }
        // The thread giving them back is busy: wake another one right away.
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.0.ready.notify_one();
        }
        self.notify();
    }

    /// Up to `max` ready calls without blocking.
    pub fn try_batch(&self, max: usize) -> Result<Vec<HostCall>, Closed> {
        let mut st = self.lock();
        let batch = take_live(&mut st.calls, max);
        if batch.is_empty() && st.closed {
            return Err(Closed);
        }
        Ok(batch)
    }

    /// Calls waiting in the queue.
    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue: queued calls are answered `UNAVAILABLE`, blocked host
    /// threads return `Err(Closed)`, new calls are refused.
    pub fn close(&self) {
        let pending = {
            let mut st = self.lock();
            st.closed = true;
            std::mem::take(&mut st.calls)
        };
        self.0.ready.notify_all();
        self.0.stall.notify_all();
        self.notify();
        for (_, call) in pending {
            reject(call);
        }
    }
}

/// Answers a call that will never start: the server is shutting down.
fn reject(call: HostCall) {
    let status = Status::unavailable("server shutting down before the call started");
    match call.reply {
        Reply::Unary(r) => ReplyBatch { items: vec![(r, Err(status))] }.flush(),
        Reply::Stream(s) => {
            let _ = s.try_end(Err(status));
        }
    }
}

fn take_live(calls: &mut VecDeque<(Instant, HostCall)>, max: usize) -> Vec<HostCall> {
    let mut out = Vec::with_capacity(max.min(calls.len()));
    while out.len() < max {
        let Some((_, call)) = calls.pop_front() else { break };
        if !call.ctx.is_cancelled() {
            out.push(call);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::{DeadlinePolicy, MethodKind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn call(mailbox: &Mailbox) -> HostCall {
        let method = Arc::new(MethodDesc::new("/t.S/M", MethodKind::Unary, DeadlinePolicy::NoDeadline).unwrap());
        let (reply, _rx) = UnaryReply::new(mailbox.clone());
        HostCall { ctx: Ctx::background(), method, request: HostRequest::Message(Bytes::new()), reply: Reply::Unary(reply) }
    }

    /// Calls queued in one turn of an I/O thread wake the host once, after the
    /// turn, so it takes them as one batch (see `defer_wake`).
    #[tokio::test(flavor = "current_thread")]
    async fn one_wake_up_per_io_turn() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let q = HostQueue::with_notifier(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        let mailbox = Mailbox::spawn_local();
        for _ in 0..3 {
            assert!(q.push(call(&mailbox)).is_ok());
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 0, "woken before the turn ended");
        tokio::task::yield_now().await;
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert_eq!(q.try_batch(64).unwrap().len(), 3);

        // Off the I/O threads (no runtime) a push wakes the host at once.
        let q2 = q.clone();
        let m2 = mailbox.clone();
        std::thread::spawn(move || assert!(q2.push(call(&m2)).is_ok())).join().unwrap();
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }
}
