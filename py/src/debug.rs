//! Observability glue: Python pages on the core's debug server (the core stays
//! language-neutral: these are registered handlers), tracing setup, and the
//! process's stats for tests and tools.

use std::sync::Arc;
use std::time::Duration;

use courier_core::debug::{DebugRequest, DebugResponse};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::value_error;

/// Adds a page at `path` to every debug server of the process. `handler` is
/// called (on a thread of the debug server, with the GIL) as
/// `handler(method, query, body, can_write) -> (status, content_type, body)`.
#[pyfunction]
pub fn register_debug_handler(path: &str, title: &str, handler: Py<PyAny>) -> PyResult<()> {
    if !path.starts_with('/') {
        return Err(value_error(format!("debug page path must start with '/': {path:?}")));
    }
    let handler = Arc::new(handler);
    courier_core::debug::register_handler(
        path,
        title,
        Arc::new(move |r: DebugRequest| {
            Python::attach(|py| {
                let body = PyBytes::new(py, &r.body);
                let out = handler.call1(py, (r.method.as_str(), r.query.as_str(), body, r.can_write)).and_then(|v| {
                    v.extract::<(u16, String, Vec<u8>)>(py)
                });
                match out {
                    Ok((status, ctype, body)) => DebugResponse { status, content_type: ctype, body },
                    Err(e) => {
                        let tb = e.traceback(py).and_then(|t| t.format().ok()).unwrap_or_default();
                        DebugResponse::text(500, format!("{tb}{e}\n"))
                    }
                }
            })
        }),
    );
    Ok(())
}

/// Names a language runtime loaded in this process (shown by `/info`).
#[pyfunction]
pub fn register_language(name: &str, version: &str) {
    courier_core::debug::register_language(name, version);
}

/// The process's stats as Prometheus text (what `/metrics` serves).
#[pyfunction]
pub fn metrics_text() -> String {
    courier_core::stats::render_prometheus()
}

/// Turns on tracing for this process: spans over OTLP/gRPC to `otlp_endpoint`.
#[pyfunction]
#[pyo3(signature = (otlp_endpoint, service_name, sampling_ratio=0.01, *, max_queue_size=2048, max_export_batch_size=512, scheduled_delay=1.0, export_timeout=10.0))]
#[allow(clippy::too_many_arguments)]
pub fn configure_tracing(
    py: Python<'_>,
    otlp_endpoint: String,
    service_name: String,
    sampling_ratio: f64,
    max_queue_size: usize,
    max_export_batch_size: usize,
    scheduled_delay: f64,
    export_timeout: f64,
) -> PyResult<()> {
    let secs = |name: &str, s: f64| {
        if s.is_finite() && s > 0.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(value_error(format!("{name} must be a positive number of seconds, got {s}")))
        }
    };
    let config = courier_core::trace::TraceConfig {
        otlp_endpoint,
        service_name,
        sampling_ratio,
        max_queue_size,
        max_export_batch_size,
        scheduled_delay: secs("scheduled_delay", scheduled_delay)?,
        export_timeout: secs("export_timeout", export_timeout)?,
    };
    py.detach(|| courier_core::trace::init(config)).map_err(value_error)
}

/// Sends every finished span now (blocks without the GIL).
#[pyfunction]
pub fn flush_tracing(py: Python<'_>) {
    py.detach(courier_core::trace::flush);
}

/// Flushes and turns tracing off.
#[pyfunction]
pub fn shutdown_tracing(py: Python<'_>) {
    py.detach(courier_core::trace::shutdown);
}

/// True while tracing is on.
#[pyfunction]
pub fn tracing_enabled() -> bool {
    courier_core::trace::enabled()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(register_debug_handler, m)?)?;
    m.add_function(wrap_pyfunction!(register_language, m)?)?;
    m.add_function(wrap_pyfunction!(metrics_text, m)?)?;
    m.add_function(wrap_pyfunction!(configure_tracing, m)?)?;
    m.add_function(wrap_pyfunction!(flush_tracing, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown_tracing, m)?)?;
    m.add_function(wrap_pyfunction!(tracing_enabled, m)?)?;
    Ok(())
}
