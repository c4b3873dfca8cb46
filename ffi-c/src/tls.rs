//! Mutual TLS settings loaded from PEM files (and reloaded when they change),
//! given to servers and channels through their options; and the dev CA.
//! Conversions only: everything lives in `courier_core::tls`.

use std::path::PathBuf;
use std::time::Duration;

use courier_core::tls::devca::{self, IssueRequest};
use courier_core::tls::ExpectedIdentity;
use courier_core::{ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig, TlsError};

use crate::{guard, guard_quiet, handle, str_arg, CourierError, CourierErrorKind, CourierStr};

fn tls_error(e: TlsError) -> CourierError {
    let kind = match e {
        TlsError::Read { .. } | TlsError::Write { .. } => CourierErrorKind::Io,
        _ => CourierErrorKind::InvalidArgument,
    };
    CourierError::new(kind, e.to_string())
}

unsafe fn path_arg(ptr: *const u8, len: usize, what: &str) -> Result<PathBuf, CourierError> {
    let s = str_arg(ptr, len, what)?;
    if s.is_empty() {
        return Err(CourierError::invalid(format!("{what} path is empty")));
    }
    Ok(PathBuf::from(s))
}

/// `ms` > 0: that long; 0: the default; negative: never (reloads) / invalid.
fn reload_interval(ms: i64, default: Option<Duration>) -> Option<Duration> {
    match ms {
        0 => default,
        ms if ms < 0 => None,
        ms => Some(Duration::from_millis(ms as u64)),
    }
}

/// A server's TLS settings. Immutable to callers (it reloads its files by
/// itself), thread-safe; free with `courier_server_tls_free` (servers made with
/// it keep their own reference).
pub struct CourierServerTls(pub(crate) ServerTls);

/// A client's TLS settings; as `CourierServerTls`.
pub struct CourierClientTls(pub(crate) ClientTls);

/// Loads server TLS settings from PEM files: certificate chain (leaf first,
/// carrying the server's SPIFFE ID), key, and the CA client certificates
/// must chain to. `require_client_cert` false admits clients without a
/// certificate as unauthenticated. `handshake_timeout_ms` 0: 10 s;
/// `reload_interval_ms` 0: check the files every second, negative: never;
/// `tls13_tickets` negative: the default (1). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_tls_from_files(
    cert: *const u8,
    cert_len: usize,
    key: *const u8,
    key_len: usize,
    ca: *const u8,
    ca_len: usize,
    require_client_cert: bool,
    handshake_timeout_ms: u64,
    reload_interval_ms: i64,
    tls13_tickets: i32,
    err: *mut *mut CourierError,
) -> *mut CourierServerTls {
    guard(err, std::ptr::null_mut(), || {
        let mut cfg = ServerTlsConfig::new(path_arg(cert, cert_len, "certificate")?, path_arg(key, key_len, "key")?, path_arg(ca, ca_len, "CA")?);
        cfg.require_client_cert = require_client_cert;
        if handshake_timeout_ms > 0 {
            cfg.handshake_timeout = Duration::from_millis(handshake_timeout_ms);
        }
        cfg.reload_interval = reload_interval(reload_interval_ms, cfg.reload_interval);
        if tls13_tickets >= 0 {
            cfg.tls13_tickets = tls13_tickets as usize;
        }
        Ok(Box::into_raw(Box::new(CourierServerTls(ServerTls::new(cfg).map_err(tls_error)?))))
    })
}

/// Frees server TLS settings. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it during or after this call
/// (servers made with it keep their own reference).
#[no_mangle]
pub unsafe extern "C" fn courier_server_tls_free(tls: *mut CourierServerTls) {
    guard_quiet((), || {
        if !tls.is_null() {
            drop(Box::from_raw(tls));
        }
    })
}

/// The server's own SPIFFE ID (from its current certificate), as a new owned
/// string (free with `courier_owned_str_free`); `*out` views it. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_tls_identity(tls: *const CourierServerTls, out: *mut CourierStr, err: *mut *mut CourierError) -> *mut CourierOwnedStr {
    guard(err, std::ptr::null_mut(), || {
        let t = handle(tls, "tls")?;
        let s = CourierOwnedStr(t.0.identity().spiffe_id);
        let b = Box::into_raw(Box::new(s));
        if !out.is_null() {
            *out = CourierStr::of((*b).0.as_bytes());
        }
        Ok(b)
    })
}

/// Re-reads the files now; on error the current certificates stay. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_server_tls_reload(tls: *const CourierServerTls, err: *mut *mut CourierError) -> bool {
    guard(err, false, || {
        handle(tls, "tls")?.0.reload().map_err(tls_error)?;
        Ok(true)
    })
}

/// Loads client TLS settings: the CA the server's certificate must chain to,
/// the server identity accepted (`spiffe://domain/name`, or `spiffe://domain`
/// for any identity of a trust domain; checked instead of host names), and
/// the client's certificate and key (both of length 0: none).
/// `reload_interval_ms` as for servers. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_client_tls_from_files(
    ca: *const u8,
    ca_len: usize,
    server_identity: *const u8,
    server_identity_len: usize,
    cert: *const u8,
    cert_len: usize,
    key: *const u8,
    key_len: usize,
    reload_interval_ms: i64,
    err: *mut *mut CourierError,
) -> *mut CourierClientTls {
    guard(err, std::ptr::null_mut(), || {
        let expected: ExpectedIdentity = str_arg(server_identity, server_identity_len, "server identity")?
            .parse()
            .map_err(|e| CourierError::invalid(format!("{e}")))?;
        let mut cfg = ClientTlsConfig::new(path_arg(ca, ca_len, "CA")?, expected);
        cfg = match (cert_len, key_len) {
            (0, 0) => cfg,
            (_, 0) | (0, _) => return Err(CourierError::invalid("give both a client certificate and its key, or neither")),
            _ => cfg.with_client_cert(path_arg(cert, cert_len, "certificate")?, path_arg(key, key_len, "key")?),
        };
        cfg.reload_interval = reload_interval(reload_interval_ms, cfg.reload_interval);
        Ok(Box::into_raw(Box::new(CourierClientTls(ClientTls::new(cfg).map_err(tls_error)?))))
    })
}

/// Frees client TLS settings. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it during or after this call
/// (channels made with it keep their own reference).
#[no_mangle]
pub unsafe extern "C" fn courier_client_tls_free(tls: *mut CourierClientTls) {
    guard_quiet((), || {
        if !tls.is_null() {
            drop(Box::from_raw(tls));
        }
    })
}

/// Re-reads the files now; on error the current certificates stay. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_client_tls_reload(tls: *const CourierClientTls, err: *mut *mut CourierError) -> bool {
    guard(err, false, || {
        handle(tls, "tls")?.0.reload().map_err(tls_error)?;
        Ok(true)
    })
}

/// An owned string (free with `courier_owned_str_free`).
pub struct CourierOwnedStr(String);

/// Frees an owned string. NULL is ignored.
/// Thread safety: callable from any thread, but it must be the last use of
/// the handle: no other thread may use it (or anything borrowed from it)
/// during or after this call.
#[no_mangle]
pub unsafe extern "C" fn courier_owned_str_free(s: *mut CourierOwnedStr) {
    guard_quiet((), || {
        if !s.is_null() {
            drop(Box::from_raw(s));
        }
    })
}

/// Creates a development CA for `trust_domain` in directory `out` (ca.pem,
/// ca.key). For tests and local setups, not production. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_devca_init(
    trust_domain: *const u8,
    trust_domain_len: usize,
    out: *const u8,
    out_len: usize,
    days: u32,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let td = str_arg(trust_domain, trust_domain_len, "trust domain")?;
        devca::init_ca(td, &path_arg(out, out_len, "output directory")?, if days == 0 { 3650 } else { days }).map_err(tls_error)?;
        Ok(true)
    })
}

/// Issues a certificate for `spiffe_id` from the dev CA in `ca_dir` into
/// `out` (cert.pem, key.pem; replaced if present), valid `days` (0: 365),
/// with the DNS name `dns` when not empty (for peers that check host names).
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn courier_devca_issue(
    ca_dir: *const u8,
    ca_dir_len: usize,
    out: *const u8,
    out_len: usize,
    spiffe_id: *const u8,
    spiffe_id_len: usize,
    dns: *const u8,
    dns_len: usize,
    days: i64,
    err: *mut *mut CourierError,
) -> bool {
    guard(err, false, || {
        let mut req = IssueRequest::new(str_arg(spiffe_id, spiffe_id_len, "SPIFFE ID")?);
        let dns = str_arg(dns, dns_len, "DNS name")?;
        if !dns.is_empty() {
            req.dns.push(dns.to_string());
        }
        if days != 0 {
            req.days = days;
        }
        devca::issue(&path_arg(ca_dir, ca_dir_len, "CA directory")?, &req, &path_arg(out, out_len, "output directory")?).map_err(tls_error)?;
        Ok(true)
    })
}
