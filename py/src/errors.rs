//! The one place where Courier errors become Python exceptions.
//!
//! Statuses become `courier.RpcError` (defined in Python, `courier/_errors.py`,
//! so it is an ordinary, picklable, typed exception); setup errors become the
//! built-in exception a Python user expects (`OSError` for sockets,
//! `ValueError` for bad arguments, `RuntimeError` for lifecycle misuse).

use courier_core::{AppError, Code, ServerError, Status};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `courier._errors._from_status`: builds the RpcError (or the typed app error
/// that generated code declared for the status's app-error enum).
static RPC_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn rpc_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    RPC_ERROR.import(py, "courier._errors", "_from_status")
}

/// `courier.RpcError(code, details, app_error_enum, app_error)` for a status.
pub fn status_to_pyerr(py: Python<'_>, status: Status) -> PyErr {
    let (enum_name, value) = match status.app_error_value() {
        Some(a) => (Some(a.enum_name.clone()), Some(a.value)),
        None => (None, None),
    };
    let made = rpc_error_type(py)
        .and_then(|t| t.call1((status.code() as i32, status.message(), enum_name, value)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// A status from what a Python handler reported (code, details, app error).
pub fn status_from_parts(code: i32, details: String, app_error: Option<(String, i32)>) -> Status {
    let code = Code::from_i32(code);
    match app_error {
        Some((enum_name, value)) => Status::app_error(code, details, AppError { enum_name, value }),
        None => Status::new(code, details),
    }
}

pub fn server_error(e: ServerError) -> PyErr {
    match e {
        ServerError::Bind { .. } | ServerError::Thread(_) | ServerError::LimitsWatch(_) => PyOSError::new_err(e.to_string()),
        ServerError::DuplicateMethod(_) | ServerError::KindMismatch { .. } | ServerError::Limits(_) => {
            PyValueError::new_err(e.to_string())
        }
        ServerError::AlreadyStarted | ServerError::NoListener => PyRuntimeError::new_err(e.to_string()),
    }
}

pub fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// TLS setup errors: unreadable files are the matching `OSError` (e.g.
/// `FileNotFoundError`), bad contents and mismatches are `ValueError`.
pub fn tls_error(e: courier_core::TlsError) -> PyErr {
    use courier_core::TlsError as T;
    use std::io::ErrorKind;
    let msg = e.to_string();
    match &e {
        T::Read { source, .. } | T::Write { source, .. } => match source.kind() {
            ErrorKind::NotFound => pyo3::exceptions::PyFileNotFoundError::new_err(msg),
            ErrorKind::PermissionDenied => pyo3::exceptions::PyPermissionError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        _ => PyValueError::new_err(msg),
    }
}
