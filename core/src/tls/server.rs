//! The server side: config from files, rotation, and the accept path (handshake
//! under a timeout, peer identity, counters).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::HandshakeKind;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::chain_cache::VerifiedChains;
use super::identity::IdentityCache;
use super::reload::{watch, Reloadable};
use super::stats::{count_error, count_handshake, Side};
use super::verify::SpiffeClientVerifier;
use super::{check_own_identity, classify, load_certs, load_key, load_roots, provider, KeyExchange, TlsError, TLS_VERSIONS};
use crate::context::Identity;

/// Server TLS settings. [`ServerTlsConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first; the leaf carries our SPIFFE ID.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to.
    pub ca: PathBuf,
    /// Refuse clients without a certificate (default). `false` admits them as
    /// `unauthenticated` (for migrations); a certificate sent is still verified.
    pub require_client_cert: bool,
    /// A handshake that has not finished by then is dropped (default 10 s).
    pub handshake_timeout: Duration,
    /// TLS 1.3 tickets sent after each handshake (see bench/tls/README.md).
    pub tls13_tickets: usize,
    /// TLS 1.2 sessions remembered for session-id resumption.
    pub session_cache_size: usize,
    pub key_exchange: KeyExchange,
    /// How often the files are checked for changes; `None`: never.
    pub reload_interval: Option<Duration>,
    /// Client certificate chains remembered as verified (default 4096; 0 turns
    /// the cache off). A client presenting the same chain again skips the CA
    /// signature check (one ECDSA verification, ~20% of a full mutual-TLS
    /// handshake); expiry, the CA in force and the client's CertificateVerify
    /// signature are still checked every time. Emptied when the files change.
    pub verified_chain_cache: usize,
    /// Longest time a verified chain is reused before it is verified again
    /// (default 5 minutes).
    pub verified_chain_max_age: Duration,
}

impl ServerTlsConfig {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>, ca: impl Into<PathBuf>) -> Self {
        ServerTlsConfig {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            require_client_cert: true,
            handshake_timeout: Duration::from_secs(10),
            tls13_tickets: 1,
            session_cache_size: 4096,
            key_exchange: KeyExchange::default(),
            reload_interval: Some(Duration::from_secs(1)),
            verified_chain_cache: 4096,
            verified_chain_max_age: Duration::from_secs(300),
        }
    }
}

struct Inner {
    cfg: ServerTlsConfig,
    identities: Arc<IdentityCache>,
    current: ArcSwap<rustls::ServerConfig>,
    identity: ArcSwap<Identity>,
}

/// Server TLS: a rustls config rebuilt when its files change. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls(Arc<Inner>);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("identity", &self.0.identity.load().spiffe_id)
            .field("cert", &self.0.cfg.cert)
            .field("require_client_cert", &self.0.cfg.require_client_cert)
            .finish()
    }
}

fn build(cfg: &ServerTlsConfig, identities: &Arc<IdentityCache>) -> Result<(rustls::ServerConfig, Identity), TlsError> {
    let provider = Arc::new(provider(cfg.key_exchange));
    let certs = load_certs("certificate", &cfg.cert)?;
    let own = check_own_identity(&cfg.cert, &certs)?;
    let key = load_key(&cfg.key)?;
    let roots = Arc::new(load_roots(&cfg.ca)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let builder = if cfg.require_client_cert { builder } else { builder.allow_unauthenticated() };
    let inner = builder.build().map_err(|e| TlsError::Config(format!("CA {}: {e}", cfg.ca.display())))?;
    // A new cache per build: chains verified under a previous CA (or any
    // previous file set) are not reused.
    let verified = VerifiedChains::new(cfg.verified_chain_cache, cfg.verified_chain_max_age);
    let verifier = Arc::new(SpiffeClientVerifier { inner, identities: identities.clone(), verified });
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("certificate {} with key {}: {e}", cfg.cert.display(), cfg.key.display())))?;
    sc.ignore_client_order = true;
    sc.alpn_protocols = vec![b"h2".to_vec()];
    // Fresh resumption state per build: a rotated CA must not let sessions
    // established under the old one resume.
    sc.session_storage = ServerSessionMemoryCache::new(cfg.session_cache_size.max(1));
    sc.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    sc.send_tls13_tickets = cfg.tls13_tickets;
    Ok((sc, own))
}

impl ServerTls {
    /// Loads the files and starts watching them (when `reload_interval` is set).
    pub fn new(cfg: ServerTlsConfig) -> Result<ServerTls, TlsError> {
        let identities = Arc::new(IdentityCache::default());
        let (sc, own) = build(&cfg, &identities)?;
        let interval = cfg.reload_interval;
        let inner = Arc::new(Inner { cfg, identities, current: ArcSwap::from_pointee(sc), identity: ArcSwap::from_pointee(own) });
        if let Some(i) = interval {
            let paths = vec![inner.cfg.cert.clone(), inner.cfg.key.clone(), inner.cfg.ca.clone()];
            let weak: Weak<dyn Reloadable> = Arc::downgrade(&inner) as Weak<dyn Reloadable>;
            watch(paths, i, weak);
        }
        Ok(ServerTls(inner))
    }

    /// Rebuilds from the files now; on error the current config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (sc, own) = build(&self.0.cfg, &self.0.identities)?;
        self.0.current.store(Arc::new(sc));
        self.0.identity.store(Arc::new(own));
        Ok(())
    }

    /// Our own identity (from the current certificate).
    pub fn identity(&self) -> Identity {
        (**self.0.identity.load()).clone()
    }

    pub fn config(&self) -> &ServerTlsConfig {
        &self.0.cfg
    }

    /// The rustls config new connections use now.
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        self.0.current.load_full()
    }

    /// The server handshake, bounded by the handshake timeout. `None` when it
    /// failed: the reason is logged and counted, and the socket is closed.
    pub async fn accept(&self, tcp: TcpStream) -> Option<(TlsStream<TcpStream>, Option<Arc<Identity>>)> {
        // Formatted only if the handshake fails.
        let peer_addr = PeerAddr(tcp.peer_addr().ok());
        let acceptor = tokio_rustls::TlsAcceptor::from(self.0.current.load_full());
        let timeout = self.0.cfg.handshake_timeout;
        let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let (reason, msg) = classify(&e);
                // Counted before logged: the peer has the alert already, and a
                // log line to stderr can take longer than its reaction.
                count_error(Side::Server, reason, &msg);
                tracing::warn!(peer = %peer_addr, reason = reason.as_str(), "TLS handshake failed: {msg}");
                return None;
            }
            Err(_) => {
                let msg = format!("the TLS handshake did not finish within {timeout:?}");
                count_error(Side::Server, super::ErrorReason::Timeout, &msg);
                tracing::warn!(peer = %peer_addr, reason = "timeout", "TLS handshake failed: {msg}");
                return None;
            }
        };
        let (_, conn) = stream.get_ref();
        let peer = match conn.peer_certificates().and_then(|c| c.first()) {
            None => None,
            // Verified already (the verifier checked the same certificate).
            Some(c) => match self.0.identities.identity(c) {
                Ok(id) => Some(id),
                Err(e) => {
                    count_error(Side::Server, super::ErrorReason::NoSpiffeId, &e.to_string());
                    return None;
                }
            },
        };
        count_handshake(Side::Server, peer.as_deref(), conn.handshake_kind() == Some(HandshakeKind::Resumed));
        Some((stream, peer))
    }
}

struct PeerAddr(Option<std::net::SocketAddr>);

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("?"),
        }
    }
}

impl Reloadable for Inner {
    fn reload_from_files(&self) -> Result<(), String> {
        let (sc, own) = build(&self.cfg, &self.identities).map_err(|e| e.to_string())?;
        self.current.store(Arc::new(sc));
        self.identity.store(Arc::new(own));
        Ok(())
    }
    fn describe(&self) -> String {
        format!("server certificate {}", self.cfg.cert.display())
    }
}
