//! `courier-ffi`: Courier's C ABI.
//!
//! It binds the same language-neutral boundary of `courier-core` the Python
//! binding uses, and only converts: handles in, handles out. Servers hand calls
//! to host threads that pull them in batches (`courier_server_next_batch`) and
//! return unary replies in batches (`CourierReplyBatch`); streaming calls use
//! blocking recv/send/finish; clients call out through `CourierChannel`. Every
//! rule (deadlines, metadata validation, status mapping, the boundary rule)
//! lives in the core.
//!
//! The conventions (handles, errors, panics, thread safety) are in the header
//! comment of `include/courier.h` (see `cbindgen.toml`).

#![allow(clippy::missing_safety_doc)]

use std::panic::{catch_unwind, AssertUnwindSafe};

/// mimalloc for the Rust side of the library (the host program's own
/// allocations are unaffected), as in the Python binding: request buffers
/// are allocated on an I/O thread and freed on a host thread, replies the
/// other way round, which glibc's per-thread caches take badly (a Go echo
/// server spent 5-6% of its samples in `_int_malloc`/`_int_free`/
/// `malloc_consolidate`). Memory the library hands out is freed by the
/// library (`courier_*_free`), never by the host's `free`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod channel;
pub mod ctx;
pub mod server;
pub mod tls;

pub use channel::*;
pub use ctx::*;
pub use server::*;
pub use tls::*;

use courier_core::{AppError, Code, Status};

/// What kind of failure a `CourierError` reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CourierErrorKind {
    /// A gRPC status of a call: `courier_error_code` is its code (never OK).
    Status = 1,
    /// An argument was invalid (bad UTF-8, method path, metadata, kind...).
    InvalidArgument = 2,
    /// An operating-system error, such as a port that cannot be bound.
    Io = 3,
    /// The object is in the wrong state (e.g. the server started already, a
    /// call answered twice).
    State = 4,
    /// A panic inside the library was caught at the boundary (a bug in Courier).
    Panic = 5,
}

/// An error: kind, gRPC code, message, and for statuses the app error, the
/// details and whether it came from a downstream call. Owned by the caller that
/// received it; free with `courier_error_free`. Immutable: readable from any thread.
pub struct CourierError {
    kind: CourierErrorKind,
    status: Status,
}

impl CourierError {
    pub(crate) fn new(kind: CourierErrorKind, message: impl Into<String>) -> CourierError {
        let code = match kind {
            CourierErrorKind::InvalidArgument => Code::InvalidArgument,
            CourierErrorKind::State => Code::FailedPrecondition,
            CourierErrorKind::Io => Code::Unavailable,
            _ => Code::Internal,
        };
        CourierError { kind, status: Status::new(code, message) }
    }
    pub(crate) fn invalid(message: impl Into<String>) -> CourierError {
        CourierError::new(CourierErrorKind::InvalidArgument, message)
    }
    pub(crate) fn state(message: impl Into<String>) -> CourierError {
        CourierError::new(CourierErrorKind::State, message)
    }
    pub(crate) fn status(status: Status) -> CourierError {
        CourierError { kind: CourierErrorKind::Status, status }
    }
}

/// A borrowed string or byte string: `len` bytes at `ptr` (no NUL terminator).
/// Valid as long as the object it was read from, as documented per function.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CourierStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl CourierStr {
    pub(crate) fn of(b: &[u8]) -> CourierStr {
        CourierStr { ptr: b.as_ptr(), len: b.len() }
    }
    pub(crate) const EMPTY: CourierStr = CourierStr { ptr: std::ptr::null(), len: 0 };
}

/// Stores `e` in `*err` when the caller asked for errors.
pub(crate) unsafe fn set_err(err: *mut *mut CourierError, e: CourierError) {
    if !err.is_null() {
        *err = Box::into_raw(Box::new(e));
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Runs an entry point: errors go to `*err`, a panic becomes a `Panic` error,
/// and `fallback` is returned in both cases.
pub(crate) fn guard<T>(err: *mut *mut CourierError, fallback: T, f: impl FnOnce() -> Result<T, CourierError>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            // SAFETY: `err` is the caller's out-parameter (NULL or writable).
            unsafe { set_err(err, e) };
            fallback
        }
        Err(p) => {
            let e = CourierError::new(CourierErrorKind::Panic, format!("panic in courier-ffi: {}", panic_message(p)));
            // SAFETY: as above.
            unsafe { set_err(err, e) };
            fallback
        }
    }
}

/// Runs an entry point without an error out-parameter: a panic returns `fallback`.
pub(crate) fn guard_quiet<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// A (pointer, length) argument as bytes; NULL is only allowed with length 0.
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], CourierError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(CourierError::invalid(format!("{what}: NULL pointer with length {len}")));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// A (pointer, length) argument as UTF-8 text.
pub(crate) unsafe fn str_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, CourierError> {
    std::str::from_utf8(bytes_arg(ptr, len, what)?).map_err(|_| CourierError::invalid(format!("{what} is not valid UTF-8")))
}

/// A handle argument that must not be NULL.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, CourierError> {
    p.as_ref().ok_or_else(|| CourierError::invalid(format!("{what} is NULL")))
}

/// A status from what a host handler reported: a non-OK code, a message, an
/// optional app error (enum name non-empty), and whether the host got it from
/// a downstream call (the core then applies the boundary rule).
pub(crate) unsafe fn status_arg(
    code: i32,
    message: *const u8,
    message_len: usize,
    app_error_enum: *const u8,
    app_error_enum_len: usize,
    app_error_value: i32,
    downstream: bool,
) -> Result<Status, CourierError> {
    if code == 0 {
        return Err(CourierError::invalid("an error status needs a non-OK code"));
    }
    let message = String::from_utf8_lossy(bytes_arg(message, message_len, "status message")?).into_owned();
    let enum_name = str_arg(app_error_enum, app_error_enum_len, "app error enum")?;
    let code = Code::from_i32(code);
    let status = if enum_name.is_empty() {
        Status::new(code, message)
    } else {
        Status::app_error(code, message, AppError { enum_name: enum_name.to_string(), value: app_error_value })
    };
    Ok(if downstream { status.into_downstream() } else { status })
}

// ---------------------------------------------------------------- errors

/// Frees an error. NULL is ignored. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_error_free(err: *mut CourierError) {
    guard_quiet((), || {
        if !err.is_null() {
            drop(Box::from_raw(err));
        }
    })
}

/// The error's kind. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_error_kind(err: *const CourierError) -> CourierErrorKind {
    guard_quiet(CourierErrorKind::Panic, || err.as_ref().map_or(CourierErrorKind::InvalidArgument, |e| e.kind))
}

/// The gRPC status code (0..=16): the status of a call for
/// `COURIER_ERROR_KIND_STATUS`, INVALID_ARGUMENT / FAILED_PRECONDITION /
/// UNAVAILABLE / INTERNAL for the other kinds. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_error_code(err: *const CourierError) -> i32 {
    guard_quiet(Code::Internal as i32, || err.as_ref().map_or(Code::Internal as i32, |e| e.status.code() as i32))
}

/// The error message (UTF-8), borrowed from `err`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_error_message(err: *const CourierError) -> CourierStr {
    guard_quiet(CourierStr::EMPTY, || err.as_ref().map_or(CourierStr::EMPTY, |e| CourierStr::of(e.status.message().as_bytes())))
}

/// The app error of a status, if any: stores the enum's full name (borrowed
/// from `err`) and the value, and returns true. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_error_app_error(err: *const CourierError, enum_name: *mut CourierStr, value: *mut i32) -> bool {
    guard_quiet(false, || {
        let Some(app) = err.as_ref().and_then(|e| e.status.app_error_value()) else { return false };
        if !enum_name.is_null() {
            *enum_name = CourierStr::of(app.enum_name.as_bytes());
        }
        if !value.is_null() {
            *value = app.value;
        }
        true
    })
}

/// The status details (`grpc-status-details-bin`, a serialized
/// `google.rpc.Status`), borrowed from `err`; empty when absent. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_error_details(err: *const CourierError) -> CourierStr {
    guard_quiet(CourierStr::EMPTY, || {
        err.as_ref().and_then(|e| e.status.details()).map_or(CourierStr::EMPTY, |d| CourierStr::of(d))
    })
}

/// True when the status was received from a downstream call (a client call).
/// A handler that returns such a status unchanged has its caller answered
/// UNKNOWN (pass `downstream = true` back when completing a call with it).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_error_is_downstream(err: *const CourierError) -> bool {
    guard_quiet(false, || err.as_ref().is_some_and(|e| e.status.is_downstream()))
}

/// The library version, a static string. Thread-safe.
#[no_mangle]
pub extern "C" fn courier_version() -> CourierStr {
    CourierStr::of(env!("CARGO_PKG_VERSION").as_bytes())
}


/// Debug builds only, and not in the header (a test hook, not part of the
/// ABI): panics inside the boundary's guard, so that a host's test can check
/// that a panic comes back as a `COURIER_ERROR_KIND_PANIC` error instead of
/// unwinding into C. Returns false. Thread-safe.
/// cbindgen:ignore
#[cfg(debug_assertions)]
#[no_mangle]
pub unsafe extern "C" fn courier_debug_panic(err: *mut *mut CourierError) -> bool {
    guard(err, false, || panic!("courier_debug_panic called"))
}
