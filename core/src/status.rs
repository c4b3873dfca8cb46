//! gRPC status codes, statuses with app errors, and how they travel in trailers.
//!
//! The boundary rule lives here: a [`Status`] that came from a downstream call
//! remembers that ([`Status::is_downstream`]); if a handler lets it escape, the
//! server sends [`Code::Unknown`] instead, so errors do not leak across API
//! boundaries.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The gRPC status codes, with the numbers of the gRPC spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a number; numbers outside 0..=16 are `Unknown`, as the spec says.
    pub fn from_i32(n: i32) -> Code {
        Code::ALL.get(n as usize).copied().filter(|_| n >= 0).unwrap_or(Code::Unknown)
    }

    /// The canonical name, such as `"NOT_FOUND"`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Parses a canonical name (`"NOT_FOUND"`); `None` for anything else.
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.name() == name)
    }

    fn header_value(self) -> HeaderValue {
        // Small integers: a static table avoids formatting on every response.
        const DIGITS: [&str; 17] =
            ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"];
        HeaderValue::from_static(DIGITS[self as usize])
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An application error: a value of a proto enum marked `(courier.rpc_error)`.
///
/// It travels in trailers as `courier-app-error: <enum full name>:<number>` next
/// to the mapped gRPC status, so clients of any language can rebuild the typed error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppError {
    /// Full name of the enum, e.g. `courier.test.TestError`.
    pub enum_name: String,
    /// The enum value's number.
    pub value: i32,
}

/// Trailer carrying [`AppError`].
pub const APP_ERROR_HEADER: &str = "courier-app-error";

// Header names as constants: built at compile time, not parsed per call.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub(crate) const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
const APP_ERROR_NAME: HeaderName = HeaderName::from_static(APP_ERROR_HEADER);

/// A gRPC status: code, message, optional binary details and app error.
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    details: Option<bytes::Bytes>,
    app_error: Option<AppError>,
    downstream: bool,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into(), details: None, app_error: None, downstream: false }
    }

    /// A status carrying an application error, sent with `code`.
    pub fn app_error(code: Code, message: impl Into<String>, app_error: AppError) -> Status {
        Status { app_error: Some(app_error), ..Status::new(code, message) }
    }

    pub fn cancelled(msg: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, msg)
    }
    pub fn unknown(msg: impl Into<String>) -> Status {
        Status::new(Code::Unknown, msg)
    }
    pub fn invalid_argument(msg: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, msg)
    }
    pub fn deadline_exceeded(msg: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Status {
        Status::new(Code::NotFound, msg)
    }
    pub fn resource_exhausted(msg: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, msg)
    }
    pub fn unimplemented(msg: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Status {
        Status::new(Code::Internal, msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, msg)
    }

    pub fn code(&self) -> Code {
        self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn details(&self) -> Option<&bytes::Bytes> {
        self.details.as_ref()
    }
    pub fn app_error_value(&self) -> Option<&AppError> {
        self.app_error.as_ref()
    }

    /// Attaches `grpc-status-details-bin` bytes (a serialized `google.rpc.Status`).
    pub fn with_details(mut self, details: bytes::Bytes) -> Status {
        self.details = Some(details);
        self
    }

    /// True when this status was received from a downstream call.
    pub fn is_downstream(&self) -> bool {
        self.downstream
    }

    /// Marks a status as received from a downstream call. The client does this;
    /// bindings do it when a host-language handler returns a status its own
    /// client call received, so the server applies [`Status::at_boundary`].
    pub fn into_downstream(mut self) -> Status {
        self.downstream = true;
        self
    }

    /// The status a server sends for what a handler returned: a downstream status
    /// that escaped becomes `UNKNOWN` (its details are not forwarded).
    pub fn at_boundary(self) -> Status {
        if self.downstream {
            Status::unknown(format!("unhandled error from a downstream call: {}", self.code))
        } else {
            self
        }
    }

    /// Writes `grpc-status`, `grpc-message` (percent-encoded), details and app
    /// error into `trailers`.
    pub fn write_trailers(&self, trailers: &mut HeaderMap) {
        trailers.insert(GRPC_STATUS, self.code.header_value());
        if !self.message.is_empty() {
            let encoded = utf8_percent_encode(&self.message, MESSAGE_ENCODE_SET).to_string();
            if let Ok(v) = HeaderValue::try_from(encoded) {
                trailers.insert(GRPC_MESSAGE, v);
            }
        }
        if let Some(details) = &self.details {
            if let Ok(v) = HeaderValue::try_from(base64_encode(details)) {
                trailers.insert(GRPC_STATUS_DETAILS, v);
            }
        }
        if let Some(app) = &self.app_error {
            if let Ok(v) = HeaderValue::try_from(format!("{}:{}", app.enum_name, app.value)) {
                trailers.insert(APP_ERROR_NAME, v);
            }
        }
    }

    /// Reads a status from trailers (or trailers-only headers). `None` when
    /// `grpc-status` is absent.
    pub fn from_trailers(trailers: &HeaderMap) -> Option<Status> {
        let code = trailers.get(GRPC_STATUS)?;
        let code = code.to_str().ok().and_then(|s| s.parse::<i32>().ok()).map(Code::from_i32).unwrap_or(Code::Unknown);
        let message = trailers
            .get(GRPC_MESSAGE)
            .map(|v| percent_decode_str(&String::from_utf8_lossy(v.as_bytes())).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        let mut status = Status::new(code, message);
        status.details = trailers
            .get(GRPC_STATUS_DETAILS)
            .and_then(|v| base64_decode(v.as_bytes()))
            .map(bytes::Bytes::from);
        status.app_error = trailers.get(APP_ERROR_NAME).and_then(|v| parse_app_error(v.to_str().ok()?));
        Some(status)
    }
}

fn parse_app_error(s: &str) -> Option<AppError> {
    let (name, value) = s.rsplit_once(':')?;
    Some(AppError { enum_name: name.to_string(), value: value.parse().ok()? })
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code).field("message", &self.message);
        if let Some(app) = &self.app_error {
            d.field("app_error", app);
        }
        if self.downstream {
            d.field("downstream", &true);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

/// The gRPC spec: percent-encode everything outside printable ASCII, and `%` itself.
const MESSAGE_ENCODE_SET: &AsciiSet = &CONTROLS.add(b'%').add(0x7f);

/// Conversions with tonic's status type, used by the client (built on tonic).
impl From<tonic::Status> for Status {
    fn from(s: tonic::Status) -> Status {
        let mut status = Status::new(Code::from_i32(s.code() as i32), s.message());
        if !s.details().is_empty() {
            status.details = Some(bytes::Bytes::copy_from_slice(s.details()));
        }
        status.app_error =
            s.metadata().get(APP_ERROR_HEADER).and_then(|v| v.to_str().ok()).and_then(parse_app_error);
        status
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// `-bin` headers are unpadded base64 on the wire (receivers must accept padding too).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub(crate) fn base64_decode(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data.iter().filter(|&&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_number_and_name() {
        for c in Code::ALL {
            assert_eq!(Code::from_i32(c as i32), c);
            assert_eq!(Code::from_name(c.name()), Some(c));
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::from_name("NOPE"), None);
    }

    #[test]
    fn message_is_percent_encoded_per_spec() {
        let s = Status::new(Code::NotFound, "100% not here\nnaïve");
        let mut t = HeaderMap::new();
        s.write_trailers(&mut t);
        assert_eq!(t["grpc-status"], "5");
        assert_eq!(t["grpc-message"], "100%25 not here%0Ana%C3%AFve");
        let back = Status::from_trailers(&t).unwrap();
        assert_eq!(back.code(), Code::NotFound);
        assert_eq!(back.message(), "100% not here\nnaïve");
    }

    #[test]
    fn app_error_and_details_travel_in_trailers() {
        let s = Status::app_error(
            Code::FailedPrecondition,
            "no",
            AppError { enum_name: "courier.test.TestError".into(), value: 3 },
        )
        .with_details(bytes::Bytes::from_static(b"\x01\x02\xff"));
        let mut t = HeaderMap::new();
        s.write_trailers(&mut t);
        assert_eq!(t[APP_ERROR_HEADER], "courier.test.TestError:3");
        assert_eq!(t["grpc-status-details-bin"], "AQL/");
        assert_eq!(Status::from_trailers(&t).unwrap(), s);
    }

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(base64_encode(&data).as_bytes()).unwrap(), data);
        }
        assert_eq!(base64_decode(b"AQL/"), base64_decode(b"AQL/"));
        assert_eq!(base64_decode(b"AQ=="), Some(vec![1]));
        assert_eq!(base64_decode(b"A*"), None);
    }

    #[test]
    fn garbage_status_is_unknown_and_missing_is_none() {
        let mut t = HeaderMap::new();
        assert!(Status::from_trailers(&t).is_none());
        t.insert("grpc-status", HeaderValue::from_static("abc"));
        assert_eq!(Status::from_trailers(&t).unwrap().code(), Code::Unknown);
    }

    #[test]
    fn downstream_status_becomes_unknown_at_boundary() {
        let s = Status::not_found("secret detail").into_downstream();
        let out = s.at_boundary();
        assert_eq!(out.code(), Code::Unknown);
        assert!(!out.message().contains("secret"));
        let own = Status::not_found("mine").at_boundary();
        assert_eq!(own.code(), Code::NotFound);
    }
}
