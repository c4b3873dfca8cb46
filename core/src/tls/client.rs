//! The client side: config from files, rotation, and the connector a
//! `Channel` dials through (TCP, then the TLS handshake with ALPN h2).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption};
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::identity::{identity_of_cert, ExpectedIdentity};
use super::reload::{watch, Reloadable};
use super::stats::{count_error, count_handshake, Side};
use super::verify::SpiffeServerVerifier;
use super::{check_own_identity, classify, load_certs, load_key, load_roots, provider, KeyExchange, TlsError, TLS_VERSIONS};

/// Client TLS settings. [`ClientTlsConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ClientTlsConfig {
    /// Our certificate and key (PEM); `None` connects without a client certificate.
    pub cert_key: Option<(PathBuf, PathBuf)>,
    /// PEM CA certificate(s) the server's certificate must chain to.
    pub ca: PathBuf,
    /// The server we accept: `spiffe://domain/name`, or `spiffe://domain` for any
    /// identity in a trust domain.
    pub server_identity: ExpectedIdentity,
    pub key_exchange: KeyExchange,
    /// TLS sessions remembered per channel, for resumption on reconnect.
    pub session_cache_size: usize,
    /// How often the files are checked for changes; `None`: never.
    pub reload_interval: Option<Duration>,
}

impl ClientTlsConfig {
    pub fn new(ca: impl Into<PathBuf>, server_identity: ExpectedIdentity) -> Self {
        ClientTlsConfig {
            cert_key: None,
            ca: ca.into(),
            server_identity,
            key_exchange: KeyExchange::default(),
            session_cache_size: 32,
            reload_interval: Some(Duration::from_secs(1)),
        }
    }

    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_key = Some((cert.into(), key.into()));
        self
    }
}

struct Inner {
    cfg: ClientTlsConfig,
    current: ArcSwap<rustls::ClientConfig>,
}

/// Client TLS: a rustls config rebuilt when its files change. Cheap to clone;
/// each channel made with it keeps its own session cache.
#[derive(Clone)]
pub struct ClientTls(Arc<Inner>);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_identity", &self.0.cfg.server_identity)
            .field("cert", &self.0.cfg.cert_key.as_ref().map(|c| &c.0))
            .finish()
    }
}

fn build(cfg: &ClientTlsConfig) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(provider(cfg.key_exchange));
    let roots = Arc::new(load_roots(&cfg.ca)?);
    let verifier = Arc::new(SpiffeServerVerifier {
        roots,
        expected: cfg.server_identity.clone(),
        algs: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cc = match &cfg.cert_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = load_certs("certificate", cert)?;
            check_own_identity(cert, &certs)?;
            let k = load_key(key)?;
            builder
                .with_client_auth_cert(certs, k)
                .map_err(|e| TlsError::Config(format!("certificate {} with key {}: {e}", cert.display(), key.display())))?
        }
    };
    cc.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cc)
}

impl ClientTls {
    pub fn new(cfg: ClientTlsConfig) -> Result<ClientTls, TlsError> {
        let cc = build(&cfg)?;
        let interval = cfg.reload_interval;
        let inner = Arc::new(Inner { cfg, current: ArcSwap::from_pointee(cc) });
        if let Some(i) = interval {
            let mut paths = vec![inner.cfg.ca.clone()];
            if let Some((c, k)) = &inner.cfg.cert_key {
                paths.extend([c.clone(), k.clone()]);
            }
            let weak: Weak<dyn Reloadable> = Arc::downgrade(&inner) as Weak<dyn Reloadable>;
            watch(paths, i, weak);
        }
        Ok(ClientTls(inner))
    }

    /// Rebuilds from the files now; on error the current config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.0.current.store(Arc::new(build(&self.0.cfg)?));
        Ok(())
    }

    pub fn config(&self) -> &ClientTlsConfig {
        &self.0.cfg
    }

    /// The current rustls config with `store` as its session cache.
    pub fn rustls_config_with(&self, store: Arc<dyn ClientSessionStore>) -> Arc<rustls::ClientConfig> {
        let mut cc = (**self.0.current.load()).clone();
        cc.resumption = Resumption::store(store);
        Arc::new(cc)
    }
}

impl Reloadable for Inner {
    fn reload_from_files(&self) -> Result<(), String> {
        self.current.store(Arc::new(build(&self.cfg).map_err(|e| e.to_string())?));
        Ok(())
    }
    fn describe(&self) -> String {
        match &self.cfg.cert_key {
            Some((c, _)) => format!("client certificate {}", c.display()),
            None => format!("client CA {}", self.cfg.ca.display()),
        }
    }
}

/// A failed connection attempt, with the target and the precise cause.
#[derive(Debug, thiserror::Error)]
#[error("{what} {target} failed: {message}")]
pub struct ConnectError {
    what: &'static str,
    target: String,
    message: String,
}

/// Dials TCP, then TLS. One per channel: its session cache is the channel's.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    tls: ClientTls,
    store: Arc<dyn ClientSessionStore>,
}

impl TlsConnector {
    pub(crate) fn new(tls: ClientTls) -> TlsConnector {
        let store = Arc::new(ClientSessionMemoryCache::new(tls.0.cfg.session_cache_size.max(1)));
        TlsConnector { tls, store }
    }
}

impl tonic::codegen::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<Prefixed<tokio_rustls::client::TlsStream<TcpStream>>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.rustls_config_with(self.store.clone());
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(443);
            let target = format!("{host}:{port}");
            let fail = |what, message| ConnectError { what, target: target.clone(), message };
            let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| fail("connecting to", e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            // Only a session-cache key and SNI: the server is verified by SPIFFE ID.
            let name = ServerName::try_from(host.clone()).map_err(|e| fail("TLS handshake with", e.to_string()))?;
            let stream = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
                Ok(s) => s,
                Err(e) => {
                    let (reason, msg) = classify(&e);
                    count_error(Side::Client, reason, &msg);
                    tracing::warn!(target = %target, reason = reason.as_str(), "TLS handshake failed: {msg}");
                    return Err(fail("TLS handshake with", msg));
                }
            };
            let (_, conn) = stream.get_ref();
            let peer = conn.peer_certificates().and_then(|c| c.first()).and_then(|c| identity_of_cert(c).ok());
            let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
            let tls13 = conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
            count_handshake(Side::Client, peer.as_ref(), resumed);
            let mut stream = Prefixed { inner: stream, prefix: Bytes::new() };
            if tls13 && !resumed {
                // In TLS 1.3 the server judges our certificate (or its absence) after we think
                // the handshake is done: wait for its first bytes (tickets and
                // its HTTP/2 SETTINGS, sent at once) so that a refusal is
                // reported as what it is, not as a broken pipe on the first call.
                // Costs one round trip on a new full connection.
                let mut buf = vec![0u8; 16 * 1024];
                match tokio::time::timeout(FIRST_BYTES_WAIT, stream.inner.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err(fail("TLS handshake with", "the server closed the connection right after the handshake".into())),
                    Ok(Ok(n)) => {
                        buf.truncate(n);
                        stream.prefix = Bytes::from(buf);
                    }
                    Ok(Err(e)) => {
                        let (reason, msg) = classify(&e);
                        count_error(Side::Client, reason, &msg);
                        tracing::warn!(target = %target, reason = reason.as_str(), "TLS handshake failed: {msg}");
                        return Err(fail("TLS handshake with", msg));
                    }
                    // A server that waits for our preface: carry on.
                    Err(_) => {}
                }
            }
            Ok(TokioIo::new(stream))
        })
    }
}

/// How long a new TLS 1.3 connection waits for the server's first bytes.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(2);

/// A stream with bytes already read in front of it.
pub(crate) struct Prefixed<S> {
    inner: S,
    prefix: Bytes,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
