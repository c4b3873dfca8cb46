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

/// Ready calls for host threads. Clone it to share; all methods are thread-safe.
#[derive(Clone)]
pub struct HostQueue(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    notifier: Option<Notifier>,
}

struct State {
    calls: VecDeque<HostCall>,
    closed: bool,
    /// Host threads blocked in `next_batch`: a push signals only if any wait.
    waiting: usize,
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
            state: Mutex::new(State { calls: VecDeque::new(), closed: false, waiting: 0 }),
            ready: Condvar::new(),
            notifier,
        }))
    }

    /// Queues a call; gives it back when the queue is closed.
    pub(crate) fn push(&self, call: HostCall) -> Result<(), HostCall> {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed {
            return Err(call);
        }
        let was_empty = st.calls.is_empty();
        st.calls.push_back(call);
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.0.ready.notify_one();
        }
        if was_empty {
            if let Some(n) = &self.0.notifier {
                n();
            }
        }
        Ok(())
    }

    /// Up to `max` ready calls, blocking while none are ready (at most `timeout`,
    /// if given; then an empty batch). Calls whose client left or whose deadline
    /// passed while queued are dropped here, never started: their I/O side has
    /// answered already. `Err(Closed)` once the server stops and the queue is empty.
    pub fn next_batch(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<HostCall>, Closed> {
        let until = timeout.map(|t| Instant::now() + t);
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let batch = take_live(&mut st.calls, max);
            if !batch.is_empty() {
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

    /// Up to `max` ready calls without blocking.
    pub fn try_batch(&self, max: usize) -> Result<Vec<HostCall>, Closed> {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        let batch = take_live(&mut st.calls, max);
        if batch.is_empty() && st.closed {
            return Err(Closed);
        }
        Ok(batch)
    }

    /// Calls waiting in the queue.
    pub fn len(&self) -> usize {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue: queued calls are answered `UNAVAILABLE`, blocked host
    /// threads return `Err(Closed)`, new calls are refused.
    pub fn close(&self) {
        let pending = {
            let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            std::mem::take(&mut st.calls)
        };
        self.0.ready.notify_all();
        if let Some(n) = &self.0.notifier {
            n();
        }
        let mut batch = ReplyBatch::default();
        for call in pending {
            let status = Status::unavailable("server shutting down before the call started");
            match call.reply {
                Reply::Unary(r) => batch.push(r, Err(status)),
                Reply::Stream(s) => {
                    let _ = s.try_end(Err(status));
                }
            }
        }
        batch.flush();
    }
}

fn take_live(calls: &mut VecDeque<HostCall>, max: usize) -> Vec<HostCall> {
    let mut out = Vec::with_capacity(max.min(calls.len()));
    while out.len() < max {
        let Some(call) = calls.pop_front() else { break };
        if !call.ctx.is_cancelled() {
            out.push(call);
        }
    }
    out
}
