//! TLS counters: handshakes per peer identity (full vs resumed), handshake
//! failures by reason (with the last message, for debugging and tests), and
//! certificate reloads. Process-wide, read with [`tls_stats`]; the stats
//! module exports them as `courier_tls_handshakes_total` and friends.
//!
//! Counted once per connection, not per call: a read-locked map and atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use crate::context::Identity;

/// Which end of the connection counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Server,
    Client,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// Peer label of a connection without a client certificate.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// Why a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ErrorReason {
    /// The handshake did not finish within the handshake timeout.
    Timeout = 0,
    /// The bytes received are not TLS (garbage, or a plaintext client).
    NotTls,
    /// The peer offers only protocol versions we refuse (below TLS 1.2).
    ProtocolVersion,
    /// No cipher suite, key exchange group or signature scheme in common.
    NoCommonParameters,
    /// Strict mode and the client sent no certificate.
    NoClientCert,
    /// The peer's certificate does not chain to our CA.
    UnknownCa,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate carries no (valid) SPIFFE ID.
    NoSpiffeId,
    /// The server is not the identity the client expects.
    IdentityMismatch,
    /// Any other certificate problem (bad signature, bad encoding, wrong usage).
    BadCertificate,
    /// The peer refused the handshake with an alert (it rejected our certificate,
    /// our versions or our suites); the message says which alert.
    PeerRefused,
    /// The connection failed or closed during the handshake.
    Io,
    Other,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 14] = [
        ErrorReason::Timeout,
        ErrorReason::NotTls,
        ErrorReason::ProtocolVersion,
        ErrorReason::NoCommonParameters,
        ErrorReason::NoClientCert,
        ErrorReason::UnknownCa,
        ErrorReason::Expired,
        ErrorReason::NotYetValid,
        ErrorReason::NoSpiffeId,
        ErrorReason::IdentityMismatch,
        ErrorReason::BadCertificate,
        ErrorReason::PeerRefused,
        ErrorReason::Io,
        ErrorReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Timeout => "timeout",
            ErrorReason::NotTls => "not_tls",
            ErrorReason::ProtocolVersion => "protocol_version",
            ErrorReason::NoCommonParameters => "no_common_parameters",
            ErrorReason::NoClientCert => "no_client_cert",
            ErrorReason::UnknownCa => "unknown_ca",
            ErrorReason::Expired => "expired",
            ErrorReason::NotYetValid => "not_yet_valid",
            ErrorReason::NoSpiffeId => "no_spiffe_id",
            ErrorReason::IdentityMismatch => "identity_mismatch",
            ErrorReason::BadCertificate => "bad_certificate",
            ErrorReason::PeerRefused => "peer_refused",
            ErrorReason::Io => "io",
            ErrorReason::Other => "other",
        }
    }
}

const N_REASONS: usize = ErrorReason::ALL.len();

#[derive(Default)]
struct ErrorSlot {
    count: AtomicU64,
    last: Mutex<String>,
}

/// [full, resumed] handshakes with one peer.
type PeerCounts = Arc<[AtomicU64; 2]>;

struct Registry {
    /// (side, peer SPIFFE ID or "unauthenticated") -> counts.
    handshakes: RwLock<HashMap<(Side, Box<str>), PeerCounts>>,
    errors: [[ErrorSlot; N_REASONS]; 2],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_error: Mutex<String>,
    chain_cache_hits: AtomicU64,
    chain_cache_misses: AtomicU64,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    handshakes: RwLock::new(HashMap::new()),
    errors: Default::default(),
    reloads_ok: AtomicU64::new(0),
    reloads_failed: AtomicU64::new(0),
    last_reload_error: Mutex::new(String::new()),
    chain_cache_hits: AtomicU64::new(0),
    chain_cache_misses: AtomicU64::new(0),
});

/// A client chain found verified in the cache (`hit`) or verified in full.
pub(crate) fn count_chain_cache(hit: bool) {
    let c = if hit { &REGISTRY.chain_cache_hits } else { &REGISTRY.chain_cache_misses };
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn count_handshake(side: Side, peer: Option<&Identity>, resumed: bool) {
    let label = peer.map_or(UNAUTHENTICATED, |p| p.spiffe_id.as_str());
    let i = resumed as usize;
    let reg = &*REGISTRY;
    if let Some(c) = reg.handshakes.read().unwrap_or_else(|e| e.into_inner()).get(&(side, label.into())) {
        c[i].fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut w = reg.handshakes.write().unwrap_or_else(|e| e.into_inner());
    w.entry((side, label.into())).or_default()[i].fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn count_error(side: Side, reason: ErrorReason, message: &str) {
    let slot = &REGISTRY.errors[side as usize][reason as usize];
    slot.count.fetch_add(1, Ordering::Relaxed);
    let mut last = slot.last.lock().unwrap_or_else(|e| e.into_inner());
    last.clear();
    last.push_str(message);
}

pub(crate) fn count_reload(result: Result<(), &str>) {
    match result {
        Ok(()) => {
            REGISTRY.reloads_ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            REGISTRY.reloads_failed.fetch_add(1, Ordering::Relaxed);
            *REGISTRY.last_reload_error.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
        }
    }
}

/// Handshakes that completed with one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeCount {
    pub side: Side,
    /// The peer's SPIFFE ID, or `"unauthenticated"`.
    pub peer: String,
    pub full: u64,
    pub resumed: u64,
}

/// Handshakes that failed for one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeErrorCount {
    pub side: Side,
    pub reason: ErrorReason,
    pub count: u64,
    /// The message of the latest such failure.
    pub last_error: String,
}

/// A snapshot of the process's TLS counters.
#[derive(Clone, Debug, Default)]
pub struct TlsStats {
    pub handshakes: Vec<HandshakeCount>,
    /// Only reasons that happened at least once.
    pub errors: Vec<HandshakeErrorCount>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload_error: String,
    /// Client certificate chains found already verified (server side; see
    /// `ServerTlsConfig::verified_chain_cache`), and verified in full.
    pub chain_cache_hits: u64,
    pub chain_cache_misses: u64,
}

impl TlsStats {
    /// Failures of `side` for `reason`, 0 if none.
    pub fn errors_of(&self, side: Side, reason: ErrorReason) -> u64 {
        self.errors.iter().find(|e| e.side == side && e.reason == reason).map_or(0, |e| e.count)
    }

    /// (full, resumed) handshakes of `side` with `peer`.
    pub fn handshakes_with(&self, side: Side, peer: &str) -> (u64, u64) {
        self.handshakes.iter().find(|h| h.side == side && h.peer == peer).map_or((0, 0), |h| (h.full, h.resumed))
    }
}

/// Reads every TLS counter of this process.
pub fn tls_stats() -> TlsStats {
    let reg = &*REGISTRY;
    let mut handshakes: Vec<HandshakeCount> = reg
        .handshakes
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|((side, peer), c)| HandshakeCount {
            side: *side,
            peer: peer.to_string(),
            full: c[0].load(Ordering::Relaxed),
            resumed: c[1].load(Ordering::Relaxed),
        })
        .collect();
    handshakes.sort_by(|a, b| (a.side, &a.peer).cmp(&(b.side, &b.peer)));
    let mut errors = Vec::new();
    for side in [Side::Server, Side::Client] {
        for reason in ErrorReason::ALL {
            let slot = &reg.errors[side as usize][reason as usize];
            let count = slot.count.load(Ordering::Relaxed);
            if count > 0 {
                let last_error = slot.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                errors.push(HandshakeErrorCount { side, reason, count, last_error });
            }
        }
    }
    TlsStats {
        handshakes,
        errors,
        reloads_ok: reg.reloads_ok.load(Ordering::Relaxed),
        reloads_failed: reg.reloads_failed.load(Ordering::Relaxed),
        last_reload_error: reg.last_reload_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        chain_cache_hits: reg.chain_cache_hits.load(Ordering::Relaxed),
        chain_cache_misses: reg.chain_cache_misses.load(Ordering::Relaxed),
    }
}
