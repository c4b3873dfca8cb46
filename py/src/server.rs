//! `courier._core.Server` and `Call`: the host side of the core's pull-based,
//! batched call boundary. Python worker threads (or the asyncio loop) pull
//! batches of ready calls; unary replies collect in a per-thread batch and go
//! back to the I/O threads together (`flush_replies`).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_core::{
    DeadlinePolicy, HostCall, HostQueue, HostReply, HostRequest, MethodDesc, MethodKind, ReplyBatch, RequestStream,
    ResponseSender, ServerConfig, ServingStatus, Status, UnaryReply,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::asyncio::spawn_future;
use crate::ctx::Context;
use crate::errors::{server_error, status_from_parts, status_to_pyerr, value_error};

pub(crate) fn parse_kind(kind: &str) -> PyResult<MethodKind> {
    Ok(match kind {
        "unary" => MethodKind::Unary,
        "server_streaming" => MethodKind::ServerStreaming,
        "client_streaming" => MethodKind::ClientStreaming,
        "bidi_streaming" => MethodKind::BidiStreaming,
        other => {
            return Err(value_error(format!(
                "unknown method kind {other:?}: expected unary, server_streaming, client_streaming or bidi_streaming"
            )))
        }
    })
}

/// `deadline`: seconds, or None for a method declared without a deadline.
pub(crate) fn method_desc(path: &str, kind: &str, deadline: Option<f64>, app_error_enum: Option<&str>) -> PyResult<MethodDesc> {
    let policy = match deadline {
        None => DeadlinePolicy::NoDeadline,
        Some(s) if s.is_finite() && s > 0.0 => DeadlinePolicy::Default(Duration::from_secs_f64(s)),
        Some(s) => return Err(value_error(format!("default deadline of {path} must be a positive number of seconds, got {s}"))),
    };
    let desc = MethodDesc::new(path, parse_kind(kind)?, policy).map_err(value_error)?;
    Ok(match app_error_enum {
        Some(e) => desc.with_app_error_enum(e),
        None => desc,
    })
}

/// Wakes an event loop when calls arrive: an eventfd the loop watches.
struct EventFd(libc::c_int);

impl EventFd {
    fn new() -> PyResult<EventFd> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(EventFd(fd))
    }
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd. EAGAIN (counter
        // full) is fine: the loop is signalled already.
        unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
    }
    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking fd.
        unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

#[pyclass(module = "courier._core", frozen)]
pub struct Server {
    server: courier_core::Server,
    queue: HostQueue,
    wake: Option<Arc<EventFd>>,
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (*, workers=None, max_recv_message_size=None, event_loop=false, limits=None, host_concurrency=None, debug_addr=None, tls=None))]
    fn new(
        workers: Option<usize>,
        max_recv_message_size: Option<usize>,
        event_loop: bool,
        limits: Option<std::path::PathBuf>,
        host_concurrency: Option<u32>,
        debug_addr: Option<String>,
        tls: Option<PyRef<'_, crate::tls::ServerTls>>,
    ) -> PyResult<Server> {
        let mut config = ServerConfig { limits_path: limits, host_concurrency, debug_addr, ..ServerConfig::default() };
        if let Some(w) = workers {
            if w == 0 {
                return Err(value_error("workers must be at least 1"));
            }
            config.workers = w;
        }
        if let Some(m) = max_recv_message_size {
            config.max_recv_message_size = m;
        }
        config.tls = tls.map(|t| t.inner.clone());
        let (queue, wake) = if event_loop {
            let efd = Arc::new(EventFd::new()?);
            let w = efd.clone();
            (HostQueue::with_notifier(move || w.signal()), Some(efd))
        } else {
            (HostQueue::new(), None)
        };
        Ok(Server { server: courier_core::Server::new(config), queue, wake })
    }

    /// Adds a method served by Python; `method_id` is what calls carry back.
    #[pyo3(signature = (path, kind, deadline, method_id, app_error_enum=None))]
    fn register(&self, path: &str, kind: &str, deadline: Option<f64>, method_id: usize, app_error_enum: Option<&str>) -> PyResult<()> {
        let desc = method_desc(path, kind, deadline, app_error_enum)?.with_host_id(method_id as u64);
        self.server.register(desc, courier_core::Handler::Host(self.queue.clone())).map_err(server_error)

    }

    /// Binds an address (`"127.0.0.1:0"` picks a port); returns the port.
    fn listen(&self, addr: &str) -> PyResult<u16> {
        Ok(self.server.listen(addr).map_err(server_error)?.port())
    }

    fn start(&self) -> PyResult<()> {
        self.server.start().map_err(server_error)
    }

    /// Graceful shutdown within `grace` seconds; blocks without the GIL.
    fn shutdown(&self, py: Python<'_>, grace: f64) {
        let grace = Duration::from_secs_f64(if grace.is_finite() { grace.max(0.0) } else { 0.0 });
        py.detach(|| self.server.shutdown(grace));
    }

    /// The debug server's address once started (`127.0.0.1:PORT` or `unix:/path`).
    #[getter]
    fn debug_addr(&self) -> Option<String> {
        self.server.debug_addr()
    }

    #[getter]
    fn running(&self) -> bool {
        self.server.is_running()
    }

    /// Sets a service's health (`""`: the whole server).
    fn set_serving(&self, service: &str, serving: bool) {
        let s = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.server.health().set_serving(service, s);
    }

    /// Takes up to `max` ready calls, waiting (without the GIL) at most
    /// `timeout` seconds, or forever if None, and runs them on this thread:
    /// `runners[method_id]` is called as `runner(ctx, request_bytes)` for a
    /// unary call and returns the reply bytes or a status tuple
    /// `(code, details, app_error)`; for the other kinds as `runner(call)`.
    /// Once the batch has run for [`SLOW_BATCH`], the calls not started yet go
    /// back to the queue for an idle thread. Unary replies are sent with this
    /// thread's batch. False once the server has stopped.
    ///
    /// The loop is here rather than in Python: a unary call then costs one
    /// Python call and one object (its ctx), not a `Call` and three method calls.
    #[pyo3(signature = (max, runners, timeout=None))]
    fn run_batch(&self, py: Python<'_>, max: usize, runners: &Bound<'_, PyList>, timeout: Option<f64>) -> PyResult<bool> {
        // Flush this thread's replies before waiting: nobody else will.
        flush_replies();
        let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let Ok(mut batch) = py.detach(|| self.queue.next_held(max.max(1), timeout)) else { return Ok(false) };
        let started = Instant::now();
        let mut first = true;
        loop {
            if !first && started.elapsed() > SLOW_BATCH {
                batch.hand_back();
                break;
            }
            let Some(hc) = batch.next() else { break };
            first = false;
            if let Err(e) = run_call(py, runners, hc) {
                // Not an Exception (the runners catch those): stop this thread,
                // as an uncaught BaseException would; the rest go to the others.
                drop(batch);
                self.queue.release();
                return Err(e);
            }
        }
        Ok(true)
    }

    /// The event-loop twin of `run_batch`: resets the eventfd, then runs every
    /// ready call (in batches of up to `max`) on this thread without waiting.
    /// A unary runner is called as `runner(ctx, request_bytes)` and returns
    /// the reply bytes, a status tuple, or, when the handler suspended, an
    /// object `spawn(call, pending)` is called with: `call` is the `Call` to
    /// complete later (`reply`/`reply_error`). The other kinds get
    /// `runner(call)`. Replies of calls finished here go back as one batch.
    /// False once the server has stopped.
    ///
    /// In Rust for the reason `run_batch` is: one Python call per unary call.
    fn run_ready(&self, py: Python<'_>, max: usize, runners: &Bound<'_, PyList>, spawn: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Some(w) = &self.wake {
            w.drain();
        }
        let open = loop {
            let batch = match self.queue.try_batch(max.max(1)) {
                Ok(b) if b.is_empty() => break true,
                Ok(b) => b,
                Err(_) => break false,
            };
            let mut calls = batch.into_iter();
            while let Some(hc) = calls.next() {
                // Anything but an Exception escaping a runner ends the drain
                // (the event loop reports it); that call was answered INTERNAL
                // and the rest go back to the queue, which signals the loop again.
                if let Err(e) = run_ready_call(py, runners, spawn, hc) {
                    flush_replies();
                    self.queue.requeue_front(calls.collect());
                    return Err(e);
                }
            }
        };
        flush_replies();
        Ok(open)
    }

    /// The eventfd an event loop watches (event_loop servers only).
    fn notify_fd(&self) -> Option<i32> {
        self.wake.as_ref().map(|w| w.0)
    }

    /// The limits file in force as JSON (path, limits, last reload), or None.
    fn limits_json(&self) -> Option<String> {
        self.server.limits_file().map(|f| f.to_json().to_string())
    }

    /// Calls waiting in the queue.
    fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// How long a batch may run on one thread before its calls not started yet
/// are handed back (a handler turned out slow; see `Server::run_batch`).
const SLOW_BATCH: Duration = Duration::from_millis(2);

/// Runs one call of a batch with its method's runner (see `Server::run_batch`).
/// Errs only with what the runner let escape (not an `Exception`); the call
/// is answered INTERNAL then.
fn run_call(py: Python<'_>, runners: &Bound<'_, PyList>, hc: HostCall) -> PyResult<()> {
    let Some((runner, ctx, request, reply)) = start_call(py, runners, hc)? else { return Ok(()) };
    answer_unary(reply, Py::new(py, Context::new(ctx)).and_then(|ctx| runner.call1((ctx, request))))
}

/// Answers a unary call with what its runner returned (reply bytes or a
/// status tuple), or INTERNAL if it let something escape, which is given back.
fn answer_unary(reply: UnaryReply, result: PyResult<Bound<'_, PyAny>>) -> PyResult<()> {
    let (answer, escaped) = match result {
        Ok(v) => (reply_of(&v), Ok(())),
        Err(e) => (Err(Status::internal("handler raised an exception that is not an Exception")), Err(e)),
    };
    REPLIES.with(|r| r.borrow_mut().push(reply, answer));
    escaped
}

/// Runs one call for an event loop (see `Server::run_ready`).
fn run_ready_call(py: Python<'_>, runners: &Bound<'_, PyList>, spawn: &Bound<'_, PyAny>, hc: HostCall) -> PyResult<()> {
    let method_id = hc.method().host_id() as usize;
    let Some((runner, ctx, request, reply)) = start_call(py, runners, hc)? else { return Ok(()) };
    let ctx = Py::new(py, Context::new(ctx))?;
    match runner.call1((ctx.clone_ref(py), request)) {
        Ok(pending) if !pending.is_instance_of::<PyBytes>() && !pending.is_instance_of::<pyo3::types::PyTuple>() => {
            // The handler suspended: its task completes this call later.
            let state = Mutex::new(State::Unary(Some(reply)));
            let call = Bound::new(py, Call { method_id, ctx, state, requests: Mutex::new(None) })?;
            spawn.call1((call, pending)).map(drop)
        }
        result => answer_unary(reply, result),
    }
}

/// Finds a call's runner. A streaming call is run here (`runner(call)`),
/// giving None; a unary one is split into what its runner and reply need.
#[allow(clippy::type_complexity)]
fn start_call<'py>(
    py: Python<'py>,
    runners: &Bound<'py, PyList>,
    hc: HostCall,
) -> PyResult<Option<(Bound<'py, PyAny>, courier_core::Ctx, Bound<'py, PyBytes>, UnaryReply)>> {
    let runner = match runners.get_item(hc.method().host_id() as usize) {
        Ok(r) => r,
        Err(_) => return Err(PyRuntimeError::new_err(format!("no runner for method {}", hc.method().path()))),
    };
    if hc.method().kind() != MethodKind::Unary {
        let call = wrap_call(py, hc)?;
        return runner.call1((call,)).map(|_| None);
    }
    let (ctx, _method, request, reply) = hc.into_parts();
    let (HostRequest::Message(request), HostReply::Unary(reply)) = (request, reply) else {
        unreachable!("a unary call has one request message and a unary reply")
    };
    Ok(Some((runner, ctx, PyBytes::new(py, &request), reply)))
}

/// A unary runner's result: reply bytes, or a status `(code, details, app_error)`.
fn reply_of(v: &Bound<'_, PyAny>) -> Result<Bytes, Status> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    match v.extract::<(i32, String, Option<(String, i32)>)>() {
        Ok((code, details, app)) if code != 0 => Err(status_from_parts(code, details, app)),
        _ => Err(Status::internal("handler runner returned neither bytes nor a status")),
    }
}

fn wrap_call<'py>(py: Python<'py>, hc: HostCall) -> PyResult<Bound<'py, Call>> {
    let method_id = hc.method().host_id() as usize;
    let ctx = Py::new(py, Context::new(hc.ctx().clone()))?;
    Bound::new(py, Call { method_id, ctx, state: Mutex::new(State::Queued(hc)), requests: Mutex::new(None) })
}

enum State {
    Queued(HostCall),
    Unary(Option<UnaryReply>),
    Stream(Option<ResponseSender>),
    Done,
}

thread_local! {
    /// Replies of unary calls completed on this thread, sent back together.
    static REPLIES: RefCell<ReplyBatch> = RefCell::new(ReplyBatch::with_capacity(64));
}

/// Sends the replies this thread collected to the I/O threads, in one wake-up each.
#[pyfunction]
pub fn flush_replies() {
    REPLIES.with(|r| r.borrow_mut().flush());
}

/// Gives the calls this thread took in its batch and has not started back to
/// the queue, for other threads (a handler about to wait on another call).
#[pyfunction]
pub fn hand_back_held() {
    courier_core::hand_back_held();
}

/// One call handed to Python.
#[pyclass(module = "courier._core", frozen)]
pub struct Call {
    #[pyo3(get)]
    method_id: usize,
    #[pyo3(get)]
    ctx: Py<Context>,
    state: Mutex<State>,
    /// Client-streaming and bidi calls: taken out while a `recv` waits.
    requests: Mutex<Option<RequestStream>>,
}

impl Call {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_requests(&self) -> PyResult<RequestStream> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this call has no request stream, or another recv is in progress"))
    }

    fn put_requests(&self, r: RequestStream) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }

    fn sender(&self) -> PyResult<ResponseSender> {
        match &*self.state() {
            State::Stream(Some(s)) => Ok(s.clone()),
            _ => Err(PyRuntimeError::new_err("this call is not a started streaming call")),
        }
    }

    fn complete_unary(&self, result: Result<Bytes, Status>) -> PyResult<()> {
        let reply = match &mut *self.state() {
            State::Unary(r) => r.take(),
            _ => None,
        };
        let reply = reply.ok_or_else(|| PyRuntimeError::new_err("this call is not a started unary call, or was answered already"))?;
        REPLIES.with(|r| r.borrow_mut().push(reply, result));
        Ok(())
    }

}

fn end_result(code: i32, details: String, app_error: Option<(String, i32)>) -> Result<(), Status> {
    if code == 0 {
        Ok(())
    } else {
        Err(status_from_parts(code, details, app_error))
    }
}

#[pymethods]
impl Call {
    /// Starts the call: returns the request message for unary and
    /// server-streaming calls, None for client-streaming and bidi (use `recv`).
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut st = self.state();
        let State::Queued(_) = &*st else { return Err(PyRuntimeError::new_err("call already started")) };
        let State::Queued(hc) = std::mem::replace(&mut *st, State::Done) else { unreachable!("checked above") };
        let (_ctx, _method, request, reply) = hc.into_parts();
        *st = match reply {
            HostReply::Unary(r) => State::Unary(Some(r)),
            HostReply::Stream(s) => State::Stream(Some(s)),
        };
        drop(st);
        match request {
            HostRequest::Message(m) => Ok(Some(PyBytes::new(py, &m))),
            HostRequest::Stream(s) => {
                self.put_requests(s);
                Ok(None)
            }
        }
    }

    /// The next request message of a streaming call, None at its end. Waits
    /// without the GIL; raises RpcError if the client cancelled.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut rs = self.take_requests()?;
        let r = py.detach(|| rs.blocking_message());
        self.put_requests(rs);
        match r {
            Ok(Some(m)) => Ok(Some(PyBytes::new(py, &m))),
            Ok(None) => Ok(None),
            Err(s) => Err(status_to_pyerr(py, s)),
        }
    }

    /// Completes a unary call with a reply message (sent with this thread's batch).
    fn reply(&self, data: &[u8]) -> PyResult<()> {
        self.complete_unary(Ok(Bytes::copy_from_slice(data)))
    }

    /// Completes a unary call with an error status.
    #[pyo3(signature = (code, details, app_error=None))]
    fn reply_error(&self, code: i32, details: String, app_error: Option<(String, i32)>) -> PyResult<()> {
        if code == 0 {
            return Err(value_error("reply_error needs a non-OK code"));
        }
        self.complete_unary(Err(status_from_parts(code, details, app_error)))
    }

    /// Sends one message of a streaming reply; waits without the GIL while the
    /// client is behind. Raises RpcError(CANCELLED) once the call is over.
    fn send(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let s = self.sender()?;
        let msg = Bytes::copy_from_slice(data);
        py.detach(|| s.blocking_send(msg)).map_err(|e| status_to_pyerr(py, e))
    }

    /// Sends without waiting: True if queued, False if the client is behind.
    fn try_send(&self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        let s = self.sender()?;
        match s.try_send(Bytes::copy_from_slice(data)) {
            Ok(None) => Ok(true),
            Ok(Some(_)) => Ok(false),
            Err(e) => Err(status_to_pyerr(py, e)),
        }
    }

    /// Ends a streaming reply with a status (code 0: OK).
    #[pyo3(signature = (code=0, details=String::new(), app_error=None))]
    fn finish(&self, py: Python<'_>, code: i32, details: String, app_error: Option<(String, i32)>) -> PyResult<()> {
        let s = match &mut *self.state() {
            State::Stream(s) => s.take(),
            _ => None,
        };
        let s = s.ok_or_else(|| PyRuntimeError::new_err("this call is not a started streaming call, or was finished already"))?;
        let r = end_result(code, details, app_error);
        py.detach(|| s.blocking_finish(r));
        Ok(())
    }

    /// `recv` as an asyncio future of `event_loop`.
    fn recv_async<'py>(slf: &Bound<'py, Self>, event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let mut rs = slf.get().take_requests()?;
        let call: Py<Call> = slf.clone().unbind();
        let fut = async move {
            let r = rs.message().await;
            call.get().put_requests(rs);
            r
        };
        spawn_future(py, event_loop, fut, |py, m| {
            Ok(match m {
                Some(m) => PyBytes::new(py, &m).into_any(),
                None => py.None().into_bound(py),
            })
        })
    }

    /// `send` as an asyncio future (use `try_send` first: it rarely waits).
    fn send_async<'py>(&self, py: Python<'py>, event_loop: &Bound<'py, PyAny>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let s = self.sender()?;
        let msg = Bytes::copy_from_slice(data);
        spawn_future(py, event_loop, async move { s.send(msg).await }, |py, ()| Ok(py.None().into_bound(py)))
    }

    /// `finish` as an asyncio future.
    #[pyo3(signature = (event_loop, code=0, details=String::new(), app_error=None))]
    fn finish_async<'py>(
        &self,
        py: Python<'py>,
        event_loop: &Bound<'py, PyAny>,
        code: i32,
        details: String,
        app_error: Option<(String, i32)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = match &mut *self.state() {
            State::Stream(s) => s.take(),
            _ => None,
        };
        let s = s.ok_or_else(|| PyRuntimeError::new_err("this call is not a started streaming call, or was finished already"))?;
        let r = end_result(code, details, app_error);
        spawn_future(py, event_loop, async move { Ok(s.finish(r).await) }, |py, ()| Ok(py.None().into_bound(py)))
    }

    /// True once the call is over for the client (cancelled, deadline passed).
    #[getter]
    fn cancelled(&self) -> bool {
        self.ctx.get().inner.is_cancelled()
    }
}
