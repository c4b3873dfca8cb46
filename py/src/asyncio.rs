//! Bridges core futures to asyncio: the future runs on the core's client
//! runtime; its result is set on the asyncio future from the loop's own thread
//! (`call_soon_threadsafe`), and cancelling the asyncio future aborts it.

use std::future::Future;

use courier_core::client::client_runtime;
use courier_core::Status;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::task::AbortHandle;

use crate::errors::status_to_pyerr;

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Aborts the Rust side when its asyncio future is cancelled.
#[pyclass(module = "courier._core", frozen)]
pub struct AbortOnCancel(AbortHandle);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}

/// Runs `fut` on the client runtime; returns an asyncio future of `loop` that
/// resolves to `convert(result)`, or raises `RpcError` for a status.
pub(crate) fn spawn_future<'py, T, F, C>(
    py: Python<'py>,
    event_loop: &Bound<'py, PyAny>,
    fut: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Status>> + Send + 'static,
    C: for<'a> FnOnce(Python<'a>, T) -> PyResult<Bound<'a, PyAny>> + Send + 'static,
{
    let resolve = RESOLVE.import(py, "courier._aio_support", "resolve")?.clone().unbind();
    let pyfut = event_loop.call_method0("create_future")?;
    let fut_ref = pyfut.clone().unbind();
    let loop_ref = event_loop.clone().unbind();
    let handle = client_runtime().spawn(async move {
        let r = fut.await;
        Python::attach(|py| {
            let (ok, value) = match r.map_err(|s| status_to_pyerr(py, s)).and_then(|v| convert(py, v)) {
                Ok(v) => (true, v.unbind()),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            // Fails only when the loop is closed: nobody waits for the result then.
            let _ = loop_ref.call_method1(py, "call_soon_threadsafe", (resolve, fut_ref, ok, value));
        });
    });
    pyfut.call_method1("add_done_callback", (Py::new(py, AbortOnCancel(handle.abort_handle()))?,))?;
    Ok(pyfut)
}
