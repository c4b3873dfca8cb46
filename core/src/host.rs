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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Wakes the stall watchdog (see [`STALL`]).
    stall: Condvar,
    notifier: Option<Notifier>,
}

struct State {
    calls: VecDeque<(Instant, HostCall)>,
    closed: bool,
    /// Host threads blocked in `next_batch`, each on its own condvar, the
    /// most recently idle last: it is woken first. Its stack and the host's
    /// state for it (Python's thread state) are still in the cache; waking
    /// threads round-robin cost 10% of the throughput of a Python echo.
    idle: Vec<Arc<Condvar>>,
    /// Host threads that took calls and have not asked for more yet.
    active: usize,
    /// When a host thread last took a batch: the busy threads' progress.
    last_take: Instant,
    watchdog: bool,
    /// The watchdog waits with no timeout: nothing to watch.
    watchdog_parked: bool,
    /// When the watchdog last looked at the held batches' progress.
    held_scan: Instant,
    /// When a batch was last put under watch (see `next_held`).
    held_last: Instant,
    /// Batches taken with [`HostQueue::next_held`] that still have calls
    /// not started: the watchdog hands them to idle threads when their
    /// owner is stuck in a handler.
    held: Vec<Arc<Held>>,
}

/// The calls of a [`HeldBatch`] not started yet, and how far its thread got.
struct Held {
    rest: Mutex<VecDeque<HostCall>>,
    /// Calls of the batch started so far: a counter, not a clock read per
    /// call. The watchdog calls a thread stuck when it has not moved on
    /// between two of its ticks, [`STALL`] apart.
    started: AtomicU64,
    /// `started` as the watchdog saw it at its last tick (watchdog only).
    seen: AtomicU64,
}

impl Held {
    fn rest(&self) -> std::sync::MutexGuard<'_, VecDeque<HostCall>> {
        self.rest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the calls not started yet back to `queue` for other threads.
    fn hand_back(&self, queue: &HostQueue) {
        let rest: Vec<HostCall> = self.rest().drain(..).collect();
        queue.requeue_front(rest);
    }
}

/// A batch a host thread runs one call after another. The calls it has not
/// started yet stay visible to the queue's watchdog: if the thread is stuck
/// in one handler (a sleep, a database call) for [`STALL`] while other host
/// threads are idle, those take them. A batch of fast calls is still taken
/// and answered by one thread, with one wake-up. Dropping it hands the calls
/// not started back to the queue.
pub struct HeldBatch {
    queue: HostQueue,
    held: Arc<Held>,
    started: u64,
    /// In the queue's `held` list (a batch of more than one call).
    watched: bool,
}

impl HeldBatch {
    /// The next call of the batch, counted as started; None when the batch
    /// is done (or was handed to other threads).
    pub fn next(&mut self) -> Option<HostCall> {
        let call = self.held.rest().pop_front();
        if call.is_some() {
            self.started += 1;
            self.held.started.store(self.started, Ordering::Relaxed);
        }
        call
    }

    /// Gives the calls not started yet back to the queue for other threads.
    pub fn hand_back(&mut self) {
        self.held.hand_back(&self.queue);
    }
}

impl Drop for HeldBatch {
    fn drop(&mut self) {
        self.hand_back();
        if self.watched {
            CURRENT.with(|c| c.borrow_mut().retain(|(_, h)| !Arc::ptr_eq(h, &self.held)));
            let mut st = self.queue.lock();
            if let Some(i) = st.held.iter().position(|h| Arc::ptr_eq(h, &self.held)) {
                st.held.swap_remove(i);
            }
        }
    }
}

thread_local! {
    /// The held batches of more than one call this thread is running (see
    /// [`hand_back_held`]).
    static CURRENT: std::cell::RefCell<Vec<(HostQueue, Arc<Held>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands the calls not started yet of the batches this thread runs back to
/// their queues, at once. For a handler about to wait on another call (which
/// may be served by the same server): nothing of its batch waits behind it.
pub fn hand_back_held() {
    let current: Vec<(HostQueue, Arc<Held>)> = CURRENT.with(|c| c.borrow().clone());
    for (queue, held) in current {
        held.hand_back(&queue);
    }
}

thread_local! {
    /// Queues that got calls on this I/O thread whose host threads are not
    /// woken yet (see [`HostQueue::defer_wake`]), and how many times they were
    /// woken: a backstop only wakes the round it was started for.
    static DEFERRED: std::cell::RefCell<Deferred> = const { std::cell::RefCell::new(Deferred { queues: Vec::new(), round: 0, backstop: None }) };
}

struct Deferred {
    queues: Vec<HostQueue>,
    round: u64,
    /// The backstop task of this round, aborted (with its timer) once the
    /// thread parks.
    backstop: Option<tokio::task::AbortHandle>,
}

/// True on a Courier I/O thread: inside a `current_thread` runtime.
fn in_io_turn() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    Handle::try_current().is_ok_and(|rt| rt.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

/// How long the watchdog keeps ticking after the last batch it watched,
/// before it parks (see `HostQueue::watchdog`).
const IDLE_WATCH: Duration = Duration::from_millis(100);

/// How long an I/O thread that never runs out of work may keep the calls it
/// queued before they are handed over anyway (see `defer_wake`).
const BACKSTOP: Duration = Duration::from_millis(1);

impl HostQueue {
    /// On an I/O thread the host side is woken when the thread runs out of
    /// work and is about to block for I/O ([`io_thread_idle`], its runtime's
    /// park hook), not as soon as a call is queued: a host thread on the same
    /// core would preempt the I/O thread and take one call at a time (measured
    /// at first: a context switch per call each way, 19 µs of server CPU per
    /// Python call against 12 µs). Woken when the I/O thread would block, it
    /// takes everything the connections had ready, with no preemption (6
    /// interleaved rounds of a sync Python echo: 127.0k calls/s, against 123.8k
    /// for a wake-up at the end of the runtime's turn: within the noise, but
    /// never worse). A backstop task wakes them after [`BACKSTOP`] if the
    /// thread never gets to block.
    fn defer_wake(&self) {
        let started = DEFERRED.with(|d| {
            let d = &mut *d.borrow_mut();
            let first = d.queues.is_empty();
            if !d.queues.iter().any(|x| Arc::ptr_eq(&x.0, &self.0)) {
                d.queues.push(self.clone());
            }
            first.then_some(d.round)
        });
        if let Some(round) = started {
            // A timer, not `yield_now`: a runtime with yielded tasks polls its
            // driver without parking, so the park hook would never run.
            // Dropped unpolled (runtime shutting down), it still wakes the hosts.
            let guard = WakeDeferred(round);
            let task = tokio::spawn(async move {
                tokio::time::sleep(BACKSTOP).await;
                drop(guard)
            });
            DEFERRED.with(|d| d.borrow_mut().backstop = Some(task.abort_handle()));
        }
    }
}

/// Wakes the host threads of every queue that got calls on this I/O thread.
/// Installed as the I/O runtimes' `on_thread_park` hook.
pub(crate) fn io_thread_idle() {
    if let Some(backstop) = wake_deferred_round(None) {
        backstop.abort();
    }
}

/// Wakes the deferred queues, if `round` (when given) is still the current
/// one; gives back that round's backstop task.
fn wake_deferred_round(round: Option<u64>) -> Option<tokio::task::AbortHandle> {
    let (queues, backstop) = DEFERRED.with(|d| {
        let d = &mut *d.borrow_mut();
        if d.queues.is_empty() || round.is_some_and(|x| x != d.round) {
            return (Vec::new(), None);
        }
        d.round += 1;
        (std::mem::take(&mut d.queues), d.backstop.take())
    });
    for q in queues {
        q.wake_deferred();
    }
    backstop
}

struct WakeDeferred(u64);

impl Drop for WakeDeferred {
    fn drop(&mut self) {
        // Its own task: nothing to abort.
        let _ = wake_deferred_round(Some(self.0));
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
                idle: Vec::new(),
                active: 0,
                last_take: Instant::now(),
                watchdog: false,
                watchdog_parked: false,
                held_scan: Instant::now(),
                held_last: Instant::now(),
                held: Vec::new(),
            }),
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
    fn wake_one(&self, st: std::sync::MutexGuard<'_, State>) {
        if st.idle.is_empty() {
            return;
        }
        if st.active == 0 {
            wake_idle(st);
            return;
        }
        self.rouse_watchdog(st);
    }

    /// Starts the watchdog, or wakes it if it waits with nothing to watch.
    fn rouse_watchdog(&self, mut st: std::sync::MutexGuard<'_, State>) {
        self.ensure_watchdog(&mut st);
        if !st.watchdog {
            // No watchdog thread: fall back to waking a thread per push.
            wake_idle(st);
        }
    }

    fn ensure_watchdog(&self, st: &mut State) {
        if !st.watchdog {
            let q = self.clone();
            // It waits for the lock we hold.
            let spawned = std::thread::Builder::new().name("courier-host-watchdog".into()).spawn(move || q.watchdog());
            st.watchdog = spawned.is_ok();
        } else if st.watchdog_parked {
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
            let now = Instant::now();
            let mut due: Option<Instant> = None;
            if !st.idle.is_empty() {
                // Stalled: calls have waited, and no busy thread took a batch, for STALL.
                if let Some(t) = st.calls.iter().map(|(t, _)| *t).min() {
                    let d = t.max(st.last_take) + STALL;
                    if now >= d {
                        if let Some(w) = st.idle.pop() {
                            w.notify_one();
                        }
                    } else {
                        due = Some(d);
                    }
                }
                // A thread stuck in one handler since the last tick (STALL
                // ago): its batch's other calls go to the idle threads.
                let mut stolen = Vec::new();
                if now >= st.held_scan + STALL {
                    st.held_scan = now;
                    for h in &st.held {
                        let started = h.started.load(Ordering::Relaxed);
                        let seen = h.seen.swap(started, Ordering::Relaxed);
                        if started != 0 && started == seen {
                            stolen.extend(h.rest().drain(..));
                        }
                    }
                }
                if !stolen.is_empty() {
                    let at = now.checked_sub(STALL).unwrap_or(now);
                    for call in stolen.into_iter().rev() {
                        st.calls.push_front((at, call));
                    }
                    // One thread: it takes them as a batch. Were its first
                    // call slow too, the next one is woken after STALL; a
                    // herd of threads woken at once would only fight for
                    // the host's lock (the GIL).
                    if let Some(w) = st.idle.pop() {
                        w.notify_one();
                    }
                    if let Some(n) = &self.0.notifier {
                        n();
                    }
                    continue;
                }
            }
            // While threads run batches, tick every STALL (which is also how
            // they are watched) rather than park, and keep ticking for
            // IDLE_WATCH after the last one (between two batches none is
            // held for a moment): a busy server would otherwise rouse a
            // parked watchdog (a futex wake-up and a context switch) for
            // every batch it takes.
            let watching = !st.held.is_empty() || now < st.held_last + IDLE_WATCH;
            let tick = watching.then(|| st.held_scan + STALL);
            let due = match (due, tick) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            st.watchdog_parked = due.is_none();
            st = match due {
                Some(d) => self.0.stall.wait_timeout(st, d.saturating_duration_since(now).max(STALL / 4)).unwrap_or_else(|e| e.into_inner()).0,
                None => self.0.stall.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
            st.watchdog_parked = false;
        }
    }

    /// [`HostQueue::next_batch`] as a [`HeldBatch`]: the calls a handler stuck
    /// for [`STALL`] would hold up go to idle threads instead.
    pub fn next_held(&self, max: usize, timeout: Option<Duration>) -> Result<HeldBatch, Closed> {
        let batch = self.next_batch(max, timeout)?;
        let many = batch.len() > 1;
        let held = Arc::new(Held { rest: Mutex::new(batch.into()), started: AtomicU64::new(0), seen: AtomicU64::new(0) });
        if many {
            CURRENT.with(|c| c.borrow_mut().push((self.clone(), held.clone())));
            let mut st = self.lock();
            st.held.push(held.clone());
            st.held_last = Instant::now();
            if !st.idle.is_empty() {
                self.rouse_watchdog(st);
            }
        }
        Ok(HeldBatch { queue: self.clone(), held, started: 0, watched: many })
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
            let me = WAITER.with(Arc::clone);
            st.idle.push(me.clone());
            if !st.held.is_empty() {
                // Now there is a thread to give a stuck thread's batch to.
                self.ensure_watchdog(&mut st);
            }
            st = match until {
                None => me.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(u) => {
                    let left = u.saturating_duration_since(Instant::now());
                    me.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            // Woken, we were taken off the stack; timed out (or spurious), not.
            if let Some(i) = st.idle.iter().rposition(|w| Arc::ptr_eq(w, &me)) {
                st.idle.remove(i);
            }
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
        wake_idle(st);
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
        let (pending, idle) = {
            let mut st = self.lock();
            st.closed = true;
            (std::mem::take(&mut st.calls), std::mem::take(&mut st.idle))
        };
        for w in idle {
            w.notify_one();
        }
        self.0.stall.notify_all();
        self.notify();
        for (_, call) in pending {
            reject(call);
        }
    }
}

thread_local! {
    /// What this host thread blocks on in `next_batch` (see `State::idle`).
    static WAITER: Arc<Condvar> = Arc::new(Condvar::new());
}

/// Wakes the most recently idle host thread, if any.
fn wake_idle(mut st: std::sync::MutexGuard<'_, State>) {
    let w = st.idle.pop();
    drop(st);
    if let Some(w) = w {
        w.notify_one();
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

    fn counting_queue() -> (HostQueue, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let q = HostQueue::with_notifier(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        (q, wakes)
    }

    fn io_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().on_thread_park(io_thread_idle).build().unwrap()
    }

    /// A task that stays runnable (keeps the I/O thread from parking) for
    /// `polls` polls or until `stop` says so; returns how many it took.
    async fn busy(polls: usize, stop: impl Fn() -> bool) -> usize {
        let mut n = 0;
        std::future::poll_fn(|cx| {
            n += 1;
            if n >= polls || stop() {
                return std::task::Poll::Ready(n);
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
        .await
    }

    /// Calls queued on an I/O thread wake the host once, when the thread runs
    /// out of work, so it takes them as one batch (see `defer_wake`).
    #[test]
    fn one_wake_up_when_the_io_thread_runs_out_of_work() {
        let (q, wakes) = counting_queue();
        io_runtime().block_on(async {
            let mailbox = Mailbox::spawn_local();
            for _ in 0..3 {
                assert!(q.push(call(&mailbox)).is_ok());
            }
            assert_eq!(wakes.load(Ordering::SeqCst), 0, "woken while the I/O thread had work");
            // Still busy: the host keeps waiting.
            tokio::spawn(busy(20, || false)).await.unwrap();
            assert!(q.push(call(&mailbox)).is_ok());
            assert_eq!(wakes.load(Ordering::SeqCst), 0, "woken while the I/O thread had work");
            // Out of work: the thread parks and the host is woken, once.
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(wakes.load(Ordering::SeqCst), 1);
            assert_eq!(q.try_batch(64).unwrap().len(), 4);
        });

        // Off the I/O threads (no runtime) a push wakes the host at once.
        let mailbox = io_runtime().block_on(async { Mailbox::spawn_local() });
        let q2 = q.clone();
        std::thread::spawn(move || assert!(q2.push(call(&mailbox)).is_ok())).join().unwrap();
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }

    /// An I/O thread that never runs out of work still hands its calls over,
    /// after [`BACKSTOP`] (see `defer_wake`).
    #[test]
    fn a_busy_io_thread_wakes_the_host_anyway() {
        let (q, wakes) = counting_queue();
        io_runtime().block_on(async {
            let mailbox = Mailbox::spawn_local();
            assert!(q.push(call(&mailbox)).is_ok());
            let w = wakes.clone();
            let polls = tokio::spawn(busy(1_000_000, move || w.load(Ordering::SeqCst) > 0)).await.unwrap();
            assert_eq!(wakes.load(Ordering::SeqCst), 1, "never woken while the I/O thread was busy");
            assert!(polls < 1_000_000);
        });
    }

    /// A thread stuck in one call of its batch: an idle thread takes the
    /// rest after about STALL, long before the stuck call ends.
    #[test]
    fn an_idle_thread_takes_the_rest_of_a_stuck_batch() {
        let q = HostQueue::new();
        let mailbox = io_runtime().block_on(async { Mailbox::spawn_local() });
        for _ in 0..3 {
            assert!(q.push(call(&mailbox)).is_ok());
        }
        let mut batch = q.next_held(8, None).unwrap();
        assert!(batch.next().is_some());
        // Stuck in that call: another thread comes for work.
        let q2 = q.clone();
        let t0 = Instant::now();
        let other = std::thread::spawn(move || q2.next_batch(8, Some(Duration::from_secs(5))).map(|b| b.len()));
        assert_eq!(other.join().unwrap(), Ok(2));
        assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
        assert!(batch.next().is_none(), "the stolen calls are gone from the batch");
        // Between calls (or done) a thread's batch is its own: nothing stolen.
        for _ in 0..2 {
            assert!(q.push(call(&mailbox)).is_ok());
        }
        drop(batch);
        let mut batch = q.next_held(8, None).unwrap();
        let q3 = q.clone();
        let idle = std::thread::spawn(move || q3.next_batch(8, Some(Duration::from_millis(50))).map(|b| b.len()));
        assert_eq!(idle.join().unwrap(), Ok(0));
        assert!(batch.next().is_some() && batch.next().is_some());
        q.close();
    }

    /// The most recently idle host thread is woken first: its caches are warm.
    #[test]
    fn the_last_thread_to_go_idle_is_woken_first() {
        let q = HostQueue::new();
        let mailbox = io_runtime().block_on(async { Mailbox::spawn_local() });
        let idle = |n: usize| {
            while q.lock().idle.len() < n {
                std::thread::yield_now();
            }
        };
        let waiter = |name: &'static str| {
            let q = q.clone();
            std::thread::spawn(move || q.next_batch(8, None).map(|b| (name, b.len())))
        };
        let first = waiter("first");
        idle(1);
        let last = waiter("last");
        idle(2);
        assert!(q.push(call(&mailbox)).is_ok());
        assert_eq!(last.join().unwrap(), Ok(("last", 1)));
        q.close();
        assert_eq!(first.join().unwrap(), Err(Closed));
    }
}
