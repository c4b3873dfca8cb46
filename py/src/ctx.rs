//! `courier._core.Context`: the native call context (deadline, cancellation,
//! peer identity, request id, metadata).

use std::time::{Duration, UNIX_EPOCH};

use courier_core::metadata::{self, MetaValue};
use courier_core::{CancelReason, Ctx};
use http::HeaderMap;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::value_error;

#[pyclass(name = "Context", module = "courier._core", frozen)]
pub struct Context {
    pub(crate) inner: Ctx,
}

impl Context {
    pub(crate) fn new(inner: Ctx) -> Context {
        Context { inner }
    }
}

fn seconds(s: f64, what: &str) -> PyResult<Duration> {
    if !s.is_finite() {
        return Err(value_error(format!("{what} must be a finite number of seconds, got {s}")));
    }
    Ok(Duration::from_secs_f64(s.max(0.0)))
}

#[pymethods]
impl Context {
    /// A root context: no deadline, never cancelled by itself.
    #[staticmethod]
    fn background() -> Context {
        Context::new(Ctx::background())
    }

    /// A child context whose deadline is at most `seconds` from now.
    fn with_timeout(&self, seconds: f64) -> PyResult<Context> {
        Ok(Context::new(self.inner.with_timeout(self::seconds(seconds, "timeout")?)))
    }

    /// A child context whose deadline is at most `unix_seconds` (wall clock).
    fn with_deadline(&self, unix_seconds: f64) -> PyResult<Context> {
        let at = UNIX_EPOCH + seconds(unix_seconds, "deadline")?;
        Ok(Context::new(self.inner.with_deadline(at)))
    }

    /// A child context that can be cancelled on its own.
    fn child(&self) -> Context {
        Context::new(self.inner.child())
    }

    /// The deadline as seconds since the Unix epoch, or None.
    #[getter]
    fn deadline(&self) -> Option<f64> {
        self.inner.deadline_unix()
    }

    /// Seconds left before the deadline (0.0 once passed), or None without one.
    fn time_remaining(&self) -> Option<f64> {
        self.inner.time_remaining().map(|d| d.as_secs_f64())
    }

    /// True once the call was cancelled or its deadline passed.
    #[getter]
    fn cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Cancels this context and its children (and calls made with them).
    fn cancel(&self) {
        self.inner.cancel(CancelReason::Cancelled);
    }

    /// The verified peer identity (full SPIFFE ID), or None when unauthenticated.
    #[getter]
    fn peer_identity(&self) -> Option<String> {
        self.inner.peer_identity().map(|i| i.spiffe_id.clone())
    }

    /// The short name of the peer identity (`<name>` of `spiffe://<domain>/<name>`).
    #[getter]
    fn peer_name(&self) -> Option<String> {
        self.inner.peer_identity().map(|i| i.name.clone())
    }

    #[getter]
    fn request_id(&self) -> &str {
        self.inner.request_id()
    }

    /// The incoming call's metadata as (key, value) pairs; `-bin` values are bytes.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> Vec<(String, Bound<'py, PyAny>)> {
        pairs_to_py(py, self.inner.metadata())
    }

    /// The full method path, `/package.Service/Method`, on a server context.
    #[getter]
    fn method(&self) -> Option<&str> {
        self.inner.method()
    }

    /// Adds a response header (initial metadata) to this call's reply.
    fn add_reply_header(&self, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut h = HeaderMap::new();
        append_py_pair(&mut h, key, value)?;
        for (k, v) in h {
            if let Some(k) = k {
                self.inner.append_reply_header(k, v);
            }
        }
        Ok(())
    }

    /// Adds a response trailer (trailing metadata) to this call's reply.
    fn add_reply_trailer(&self, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut h = HeaderMap::new();
        append_py_pair(&mut h, key, value)?;
        for (k, v) in h {
            if let Some(k) = k {
                self.inner.append_reply_trailer(k, v);
            }
        }
        Ok(())
    }

    /// Ends the current call with `code` and `details` (raises AbortError).
    fn abort(&self, py: Python<'_>, code: i32, details: String) -> PyResult<()> {
        let exc = py.import("courier._errors")?.getattr("AbortError")?.call1((code, details))?;
        Err(PyErr::from_value(exc))
    }

    fn __repr__(&self) -> String {
        format!(
            "Context(method={:?}, deadline={:?}, cancelled={})",
            self.inner.method(),
            self.inner.deadline_unix(),
            self.inner.is_cancelled()
        )
    }
}

pub(crate) fn pairs_to_py<'py>(py: Python<'py>, h: &HeaderMap) -> Vec<(String, Bound<'py, PyAny>)> {
    metadata::to_pairs(h)
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                MetaValue::Text(t) => PyString::new(py, &t).into_any(),
                MetaValue::Binary(b) => PyBytes::new(py, &b).into_any(),
            };
            (k, v)
        })
        .collect()
}

pub(crate) fn append_py_pair(h: &mut HeaderMap, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let v = if let Ok(b) = value.cast::<PyBytes>() {
        MetaValue::Binary(b.as_bytes().to_vec())
    } else {
        MetaValue::Text(value.extract::<String>().map_err(|_| value_error(format!("metadata value for {key:?} must be str or bytes")))?)
    };
    metadata::append_pair(h, key, v).map_err(value_error)
}

/// Metadata from an optional sequence of (key, value) pairs.
pub(crate) fn metadata_from_py(pairs: Option<Vec<(String, Bound<'_, PyAny>)>>) -> PyResult<HeaderMap> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs.unwrap_or_default() {
        append_py_pair(&mut h, &k, &v)?;
    }
    Ok(h)
}
