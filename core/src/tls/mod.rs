//! Mutual TLS with SPIFFE service identity (rustls 0.23, aws-lc-rs).
//!
//! Policy (DESIGN.md, "Identity"): TLS 1.2 and 1.3 only; forward-secret
//! (EC)DHE key exchange and AEAD suites only, the server's order wins, with
//! `ECDHE-ECDSA-AES128-GCM-SHA256` first on 1.2. The server asks for a client
//! certificate and (by default) requires one; a verified client's SPIFFE ID
//! (its one URI SAN) becomes the [`Identity`](crate::Identity) on every server
//! ctx. The client verifies the server's chain against its CA and then the
//! server's SPIFFE ID (exact, or trust domain): never a DNS name.
//!
//! Session resumption is on: TLS 1.3 tickets and a TLS 1.2 session cache on
//! the server, a session cache per channel on the client. Certificate, key and
//! CA files are watched and swapped in without a restart; a broken new file is
//! refused (logged and counted) and the old ones stay. Handshakes and their
//! failures are counted per peer and per reason ([`tls_stats`]).
//!
//! The figures behind the provider, key-exchange groups and ticket count are
//! in `bench/tls/README.md`.

mod chain_cache;
mod client;
pub mod devca;
mod identity;
mod reload;
mod server;
mod stats;
mod verify;

use std::path::{Path, PathBuf};

use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, RootCertStore, SupportedCipherSuite};

pub use client::{ClientTls, ClientTlsConfig};
pub(crate) use client::TlsConnector;
pub use identity::{identity_of_cert, parse_spiffe_id, ExpectedIdentity, IdentityError};
pub use server::{ServerTls, ServerTlsConfig};
pub use stats::{tls_stats, ErrorReason, HandshakeCount, HandshakeErrorCount, Side, TlsStats, UNAUTHENTICATED};

/// Errors of loading TLS files and building configs.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} file {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("invalid {what} file {path}: {why}")]
    Invalid { what: &'static str, path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Config(String),
}

/// The key exchange groups offered (client) and accepted (server), in order of
/// preference. All are ephemeral (EC)DHE: forward secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyExchange {
    /// X25519MLKEM768 (post-quantum hybrid) first, then X25519, P-256, P-384.
    Hybrid,
    /// X25519, P-256, P-384: no post-quantum protection; the server spends
    /// about 7% less CPU on a full mutual-TLS handshake and 16% less on a
    /// resumed TLS 1.3 one (bench/tls/README.md).
    Classical,
}

impl Default for KeyExchange {
    /// Hybrid: see bench/tls/README.md for the measured price and why it is paid.
    fn default() -> Self {
        KeyExchange::Hybrid
    }
}

/// Forward-secret AEAD suites only, in the server's order of preference.
/// rustls implements no CBC, RC4 or static-RSA suites at all, so nothing
/// weaker can be negotiated even by a misconfiguration.
static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

static TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider with Courier's policy: aws-lc-rs (measured against
/// ring in bench/tls: faster RSA and P-256, and it has ML-KEM), our suites,
/// and the chosen groups.
pub fn provider(kx: KeyExchange) -> CryptoProvider {
    use aws_lc_rs::kx_group::{SECP256R1, SECP384R1, X25519, X25519MLKEM768};
    let kx_groups: Vec<&'static dyn SupportedKxGroup> = match kx {
        KeyExchange::Hybrid => vec![X25519MLKEM768, X25519, SECP256R1, SECP384R1],
        KeyExchange::Classical => vec![X25519, SECP256R1, SECP384R1],
    };
    CryptoProvider { cipher_suites: CIPHER_SUITES.to_vec(), kx_groups, ..aws_lc_rs::default_provider() }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

fn invalid(what: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid { what, path: path.to_path_buf(), why: why.to_string() }
}

/// Every certificate in a PEM file (leaf first for a chain).
pub(crate) fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&data).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(what, path, e))?;
    if certs.is_empty() {
        return Err(invalid(what, path, "no PEM CERTIFICATE block"));
    }
    Ok(certs)
}

pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = read_file("private key", path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| invalid("private key", path, format!("no usable PEM private key ({e})")))
}

pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs("CA", path)? {
        roots.add(c).map_err(|e| invalid("CA", path, e))?;
    }
    Ok(roots)
}

/// Our own certificate must carry a SPIFFE ID: peers verify it.
fn check_own_identity(cert_path: &Path, certs: &[CertificateDer<'_>]) -> Result<crate::Identity, TlsError> {
    identity_of_cert(&certs[0]).map_err(|e| invalid("certificate", cert_path, e))
}

pub(crate) fn count_client_error(reason: ErrorReason, msg: &str) {
    stats::count_error(Side::Client, reason, msg);
}

/// The cause of a failed handshake, as a reason and a message.
pub(crate) fn classify(e: &std::io::Error) -> (ErrorReason, String) {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => classify_tls(tls),
        None => (ErrorReason::Io, e.to_string()),
    }
}

/// A TLS failure inside an error chain from the HTTP/2 layer. In TLS 1.3 the
/// server judges the client's certificate after the client considers the
/// handshake done, so a refusal arrives as an alert on the first read.
pub(crate) fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<(ErrorReason, String)> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(classify_tls(t));
        }
        if let Some(t) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Some(classify_tls(t));
        }
        cur = e.source();
    }
    None
}

/// What a fatal alert from the peer most likely means.
fn alert_hint(a: rustls::AlertDescription) -> &'static str {
    use rustls::AlertDescription as A;
    match a {
        A::CertificateExpired => "our certificate has expired",
        A::UnknownCA => "our certificate is not from a CA the peer trusts",
        A::BadCertificate | A::CertificateUnknown | A::UnsupportedCertificate => "the peer rejected our certificate",
        A::CertificateRequired => "the peer requires a client certificate",
        A::ProtocolVersion => "no TLS version in common",
        A::HandshakeFailure | A::InsufficientSecurity => "no cipher suite or key exchange in common",
        A::NoApplicationProtocol => "no ALPN protocol in common (Courier speaks h2)",
        A::DecryptError => "the peer could not verify a signature",
        _ => "the peer refused the handshake",
    }
}

fn classify_tls(tls: &rustls::Error) -> (ErrorReason, String) {
    use rustls::Error as E;
    let reason = match tls {
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            ErrorReason::NotTls
        }
        E::PeerIncompatible(p) => {
            let d = format!("{p:?}");
            // A ClientHello without signature_algorithms (new in TLS 1.2) is
            // TLS 1.1 or older: rustls trips over that before the version.
            if d.contains("Tls12NotOffered") || d.contains("Version") || d.contains("SignatureAlgorithmsExtensionRequired") {
                ErrorReason::ProtocolVersion
            } else {
                ErrorReason::NoCommonParameters
            }
        }
        E::NoCertificatesPresented => ErrorReason::NoClientCert,
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => ErrorReason::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => ErrorReason::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => ErrorReason::NotYetValid,
            CertificateError::Other(o) => match o.0.downcast_ref::<IdentityError>() {
                Some(IdentityError::Mismatch { .. }) => ErrorReason::IdentityMismatch,
                Some(_) => ErrorReason::NoSpiffeId,
                None => ErrorReason::BadCertificate,
            },
            _ => ErrorReason::BadCertificate,
        },
        E::AlertReceived(_) => ErrorReason::PeerRefused,
        _ => ErrorReason::Other,
    };
    let msg = match (reason, tls) {
        (ErrorReason::NotTls, _) => format!("not a TLS handshake (garbage, or a plaintext client on a TLS port): {tls}"),
        (ErrorReason::ProtocolVersion, _) => format!("the client offers no TLS 1.2 or 1.3 (only those are accepted): {tls}"),
        (ErrorReason::NoClientCert, _) => "the client sent no certificate and this server requires one".to_string(),
        (ErrorReason::PeerRefused, E::AlertReceived(a)) => format!("{}: received fatal alert {a:?}", alert_hint(*a)),
        (_, E::InvalidCertificate(CertificateError::Other(o))) => format!("invalid peer certificate: {}", o.0),
        _ => tls.to_string(),
    };
    (reason, msg)
}
