//! `courier._core.Channel`, `Method` and `ClientCall`: calls from Python,
//! blocking (without the GIL) or as asyncio futures.

use std::sync::Mutex;

use bytes::Bytes;
use courier_core::client::client_runtime;
use courier_core::{ChannelConfig, MethodDesc, ReplyStream, Status};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::asyncio::spawn_future;
use crate::ctx::{metadata_from_py, pairs_to_py, Context};
use crate::errors::{status_to_pyerr, value_error};
use crate::server::method_desc;

type Pairs<'py> = Option<Vec<(String, Bound<'py, PyAny>)>>;

/// A method as a client calls it: path, kind, default deadline, app-error enum.
#[pyclass(module = "courier._core", frozen)]
pub struct Method {
    pub(crate) desc: MethodDesc,
}

#[pymethods]
impl Method {
    #[new]
    #[pyo3(signature = (path, kind, deadline, app_error_enum=None))]
    fn new(path: &str, kind: &str, deadline: Option<f64>, app_error_enum: Option<&str>) -> PyResult<Method> {
        Ok(Method { desc: method_desc(path, kind, deadline, app_error_enum)? })
    }

    #[getter]
    fn path(&self) -> &str {
        self.desc.path()
    }

    fn __repr__(&self) -> String {
        format!("Method({:?}, {:?}, {:?})", self.desc.path(), self.desc.kind(), self.desc.deadline_policy())
    }
}

#[pyclass(module = "courier._core", frozen)]
pub struct Channel {
    ch: courier_core::Channel,
}

#[pymethods]
impl Channel {
    #[new]
    #[pyo3(signature = (target, *, max_recv_message_size=None, tls=None))]
    fn new(target: &str, max_recv_message_size: Option<usize>, tls: Option<PyRef<'_, crate::tls::ClientTls>>) -> PyResult<Channel> {
        let mut config = ChannelConfig::default();
        if let Some(m) = max_recv_message_size {
            config.max_recv_message_size = m;
        }
        config.tls = tls.map(|t| t.inner.clone());
        // Made outside any runtime: connections run on the client runtime.
        let _g = client_runtime().enter();
        let ch = courier_core::Channel::new(target, &config).map_err(value_error)?;
        Ok(Channel { ch })
    }

    #[getter]
    fn target(&self) -> &str {
        self.ch.target()
    }

    /// A unary call; waits without the GIL. Returns (reply, headers, trailers).
    #[pyo3(signature = (ctx, method, request, metadata=None))]
    #[allow(clippy::type_complexity)]
    fn unary<'py>(
        &self,
        py: Python<'py>,
        ctx: &Context,
        method: &Method,
        request: &[u8],
        metadata: Pairs<'py>,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<(String, Bound<'py, PyAny>)>, Vec<(String, Bound<'py, PyAny>)>)> {
        let md = metadata_from_py(metadata)?;
        let req = Bytes::copy_from_slice(request);
        let (ch, c, desc) = (&self.ch, &ctx.inner, &method.desc);
        let r = py.detach(|| futures_executor::block_on(ch.unary(c, desc, req, &md)));
        match r {
            Ok(reply) => Ok((PyBytes::new(py, &reply.message), pairs_to_py(py, &reply.headers), pairs_to_py(py, &reply.trailers))),
            Err(s) => Err(status_to_pyerr(py, s)),
        }
    }

    /// A unary call as an asyncio future of `event_loop`, resolving to
    /// (reply, headers, trailers).
    #[pyo3(signature = (event_loop, ctx, method, request, metadata=None))]
    fn unary_async<'py>(
        &self,
        py: Python<'py>,
        event_loop: &Bound<'py, PyAny>,
        ctx: &Context,
        method: &Method,
        request: &[u8],
        metadata: Pairs<'py>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let md = metadata_from_py(metadata)?;
        let req = Bytes::copy_from_slice(request);
        let (ch, c, desc) = (self.ch.clone(), ctx.inner.clone(), method.desc.clone());
        spawn_future(py, event_loop, async move { ch.unary(&c, &desc, req, &md).await }, |py, reply| {
            let t = (PyBytes::new(py, &reply.message), pairs_to_py(py, &reply.headers), pairs_to_py(py, &reply.trailers));
            Ok(t.into_pyobject(py)?.into_any())
        })
    }

    /// Starts a streaming call of any kind; requests go through `send`/`close`,
    /// replies come from `recv`.
    #[pyo3(signature = (ctx, method, metadata=None))]
    fn stream<'py>(&self, ctx: &Context, method: &Method, metadata: Pairs<'py>) -> PyResult<ClientCall> {
        let md = metadata_from_py(metadata)?;
        // A child ctx per call, so cancelling one call cancels only it.
        let call_ctx = ctx.inner.child();
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let requests = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let (ch, c, desc) = (self.ch.clone(), call_ctx.clone(), method.desc.clone());
        let start = client_runtime().spawn(async move { ch.bidi_streaming(&c, &desc, requests, &md).await });
        Ok(ClientCall { ctx: call_ctx, tx: Mutex::new(Some(tx)), state: std::sync::Arc::new(Mutex::new(Replies::Starting(start))) })
    }
}

enum Replies {
    Starting(JoinHandle<Result<ReplyStream, Status>>),
    Open(ReplyStream),
    /// Taken by a `recv` in progress.
    Busy,
    Failed(Status),
}

/// A streaming call in progress, usable from any thread or an event loop.
#[pyclass(module = "courier._core", frozen)]
pub struct ClientCall {
    ctx: courier_core::Ctx,
    tx: Mutex<Option<mpsc::Sender<Bytes>>>,
    state: std::sync::Arc<Mutex<Replies>>,
}

/// Takes the reply stream (waiting for the call to start), or the failure.
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

fn take(state: &Mutex<Replies>) -> Replies {
    std::mem::replace(&mut *state.lock().unwrap_or_else(|e| e.into_inner()), Replies::Busy)
}

/// One step of reading: the next message, keeping the stream for the next step.
async fn next(state: std::sync::Arc<Mutex<Replies>>) -> Result<Option<Bytes>, Status> {
    let taken = take(&state);
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

impl ClientCall {
    fn sender(&self) -> PyResult<mpsc::Sender<Bytes>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| PyRuntimeError::new_err("the request stream is closed"))
    }
}

#[pymethods]
impl ClientCall {
    /// Sends one request message; waits without the GIL while the server is
    /// behind. False if the call already ended (its status comes from `recv`).
    fn send(&self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        let tx = self.sender()?;
        let msg = Bytes::copy_from_slice(data);
        Ok(py.detach(|| tx.blocking_send(msg)).is_ok())
    }

    /// `send` as an asyncio future resolving to a bool.
    fn send_async<'py>(&self, py: Python<'py>, event_loop: &Bound<'py, PyAny>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let tx = self.sender()?;
        let msg = Bytes::copy_from_slice(data);
        spawn_future(py, event_loop, async move { Ok(tx.send(msg).await.is_ok()) }, |py, ok| {
            Ok(pyo3::types::PyBool::new(py, ok).to_owned().into_any())
        })
    }

    /// Half-closes: no more request messages.
    fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The next reply message, None at the end of an OK stream; raises
    /// RpcError with the call's status otherwise. Waits without the GIL.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let state = self.state.clone();
        match py.detach(|| futures_executor::block_on(next(state))) {
            Ok(m) => Ok(m.map(|m| PyBytes::new(py, &m))),
            Err(s) => Err(status_to_pyerr(py, s)),
        }
    }

    /// `recv` as an asyncio future.
    fn recv_async<'py>(&self, py: Python<'py>, event_loop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let state = self.state.clone();
        spawn_future(py, event_loop, next(state), |py, m| {
            Ok(match m {
                Some(m) => PyBytes::new(py, &m).into_any(),
                None => py.None().into_bound(py),
            })
        })
    }

    /// Response headers once the call has started (after the first `recv`).
    fn headers<'py>(&self, py: Python<'py>) -> Option<Vec<(String, Bound<'py, PyAny>)>> {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            Replies::Open(s) => Some(pairs_to_py(py, s.headers())),
            _ => None,
        }
    }

    /// Response trailers once the stream has ended.
    fn trailers<'py>(&self, py: Python<'py>) -> Option<Vec<(String, Bound<'py, PyAny>)>> {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            Replies::Open(s) => s.trailers().map(|t| pairs_to_py(py, t)),
            _ => None,
        }
    }

    /// Cancels the call (the server sees its ctx cancelled).
    fn cancel(&self) {
        self.close();
        self.ctx.cancel(courier_core::CancelReason::Cancelled);
    }
}
