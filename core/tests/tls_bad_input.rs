//! Bad peers, each with a precise error on both sides and a counter: expired
//! certificates, another CA, no SPIFFE ID, the wrong server, a client that
//! stalls mid-handshake, garbage instead of a ClientHello.
//!
//! The counters are process-wide, so the tests of this binary run one at a
//! time (SERIAL) and each checks the message of its own failure.

mod tls_support;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier_core::tls::devca::IssueRequest;
use courier_core::tls::{tls_stats, ErrorReason, Side};
use courier_core::*;
use tls_support::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// The latest failure of `side` for `reason`, once its count went past `before`.
fn failure(side: Side, reason: ErrorReason, before: u64) -> String {
    for _ in 0..300 {
        let st = tls_stats();
        if st.errors_of(side, reason) > before {
            return st.errors.iter().find(|e| e.side == side && e.reason == reason).unwrap().last_error.clone();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no {side:?} failure counted as {reason:?}: {:?}", tls_stats());
}

fn count(side: Side, reason: ErrorReason) -> u64 {
    tls_stats().errors_of(side, reason)
}

struct Setup {
    pki: Pki,
    server: Server,
    addr: String,
    server_id: &'static str,
}

fn setup(handshake_timeout: Duration) -> Setup {
    let pki = Pki::new(TD);
    let s = pki.issue("server", "spiffe://example.org/server");
    let mut cfg = server_tls_config(&pki, &s);
    cfg.handshake_timeout = handshake_timeout;
    let (server, addr) = start_server(ServerTls::new(cfg).unwrap());
    Setup { pki, server, addr, server_id: "spiffe://example.org/server" }
}

fn call_with(st: &Setup, client_pki: &Pki, client_dir: Option<&std::path::Path>, expect: &str) -> Result<String, Status> {
    let tls = ClientTls::new(client_tls_config(client_pki, client_dir, expect)).unwrap();
    block_on(whoami(&tls_channel(&st.addr, tls)))
}

#[test]
fn expired_client_certificate() {
    let _g = serial();
    let st = setup(Duration::from_secs(10));
    let mut r = IssueRequest::new("spiffe://example.org/expired-client");
    r.days = -1;
    let c = st.pki.issue_req("client", &r);
    let before = count(Side::Server, ErrorReason::Expired);
    let err = call_with(&st, &st.pki, Some(&c), st.server_id).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("our certificate has expired: received fatal alert CertificateExpired"), "client side: {err}");
    let msg = failure(Side::Server, ErrorReason::Expired, before);
    assert!(msg.contains("certificate expired"), "server side: {msg}");
    drop(st.server);
}

#[test]
fn expired_server_certificate() {
    let _g = serial();
    let pki = Pki::new(TD);
    let mut r = IssueRequest::new("spiffe://example.org/expired-server");
    r.days = -1;
    let s = pki.issue_req("server", &r);
    let c = pki.issue("client", "spiffe://example.org/client");
    let (_server, addr) = start_server(ServerTls::new(server_tls_config(&pki, &s)).unwrap());
    let (before_c, before_s) = (count(Side::Client, ErrorReason::Expired), count(Side::Server, ErrorReason::PeerRefused));
    let tls = ClientTls::new(client_tls_config(&pki, Some(&c), "spiffe://example.org")).unwrap();
    let err = block_on(whoami(&tls_channel(&addr, tls))).unwrap_err();
    assert!(err.message().contains("TLS handshake with 127.0.0.1") && err.message().contains("certificate expired"), "client side: {err}");
    assert!(failure(Side::Client, ErrorReason::Expired, before_c).contains("certificate expired"));
    let msg = failure(Side::Server, ErrorReason::PeerRefused, before_s);
    assert!(msg.contains("CertificateExpired"), "server side: {msg}");
}

#[test]
fn no_client_certificate_in_strict_mode() {
    let _g = serial();
    let st = setup(Duration::from_secs(10));
    let (before_c, before_s) = (count(Side::Client, ErrorReason::PeerRefused), count(Side::Server, ErrorReason::NoClientCert));
    let err = call_with(&st, &st.pki, None, st.server_id).unwrap_err();
    assert!(err.message().contains("the peer requires a client certificate: received fatal alert CertificateRequired"), "client side: {err}");
    failure(Side::Client, ErrorReason::PeerRefused, before_c);
    let msg = failure(Side::Server, ErrorReason::NoClientCert, before_s);
    assert_eq!(msg, "the client sent no certificate and this server requires one", "server side");
}

#[test]
fn client_certificate_from_another_ca() {
    let _g = serial();
    let st = setup(Duration::from_secs(10));
    let other = Pki::new(TD);
    let c = other.issue("client", "spiffe://example.org/intruder");
    let before = count(Side::Server, ErrorReason::UnknownCa);
    let err = call_with(&st, &st.pki, Some(&c), st.server_id).unwrap_err();
    assert!(err.message().contains("not from a CA the peer trusts: received fatal alert UnknownCA"), "client side: {err}");
    let msg = failure(Side::Server, ErrorReason::UnknownCa, before);
    assert!(msg.contains("UnknownIssuer"), "server side: {msg}");
}

#[test]
fn server_certificate_from_another_ca() {
    let _g = serial();
    let st = setup(Duration::from_secs(10));
    let other = Pki::new(TD);
    let c = other.issue("client", "spiffe://example.org/client");
    let (before_c, before_s) = (count(Side::Client, ErrorReason::UnknownCa), count(Side::Server, ErrorReason::PeerRefused));
    // The client trusts only the other CA: the server's chain does not verify.
    let err = call_with(&st, &other, Some(&c), st.server_id).unwrap_err();
    assert!(err.message().contains("UnknownIssuer"), "client side: {err}");
    failure(Side::Client, ErrorReason::UnknownCa, before_c);
    let msg = failure(Side::Server, ErrorReason::PeerRefused, before_s);
    assert!(msg.contains("UnknownCA"), "server side: {msg}");
}

#[test]
fn client_certificate_without_spiffe_id() {
    let _g = serial();
    let st = setup(Duration::from_secs(10));
    let mut r = IssueRequest::new("spiffe://example.org/unused");
    r.spiffe_id = None;
    r.dns = vec!["client.example.org".into()];
    let c = st.pki.issue_req("client", &r);
    // Our own client refuses to load such a certificate...
    let e = ClientTls::new(client_tls_config(&st.pki, Some(&c), st.server_id)).unwrap_err();
    assert!(e.to_string().contains("has no SPIFFE ID"), "{e}");
    // ...so present it with a plain rustls client.
    let before = count(Side::Server, ErrorReason::NoSpiffeId);
    let err = plain_rustls_handshake(&st.addr, &st.pki, &c).unwrap_err();
    assert!(err.contains("BadCertificate") || err.contains("CertificateUnknown"), "client side: {err}");
    let msg = failure(Side::Server, ErrorReason::NoSpiffeId, before);
    assert!(msg.contains("has no SPIFFE ID: expected a URI SAN spiffe://"), "server side: {msg}");
}

#[test]
fn server_without_spiffe_id() {
    let _g = serial();
    let pki = Pki::new(TD);
    let mut r = IssueRequest::new("spiffe://example.org/unused");
    r.spiffe_id = None;
    let s = pki.issue_req("server", &r);
    let e = ServerTls::new(server_tls_config(&pki, &s)).unwrap_err();
    assert!(e.to_string().contains("has no SPIFFE ID"), "a Courier server refuses to start with it: {e}");
    // A foreign server with such a certificate is refused by the client.
    let addr = plain_rustls_server(&pki, &s);
    let c = pki.issue("client", "spiffe://example.org/client");
    let before = count(Side::Client, ErrorReason::NoSpiffeId);
    let tls = ClientTls::new(client_tls_config(&pki, Some(&c), "spiffe://example.org")).unwrap();
    let err = block_on(whoami(&tls_channel(&addr, tls))).unwrap_err();
    assert!(err.message().contains("has no SPIFFE ID"), "client side: {err}");
    failure(Side::Client, ErrorReason::NoSpiffeId, before);
}

#[test]
fn wrong_server_identity() {
    let _g = serial();
    let st = setup(Duration::from_secs(10));
    let c = st.pki.issue("client", "spiffe://example.org/client");
    let (before_c, before_s) = (count(Side::Client, ErrorReason::IdentityMismatch), count(Side::Server, ErrorReason::PeerRefused));
    let err = call_with(&st, &st.pki, Some(&c), "spiffe://example.org/billing").unwrap_err();
    assert!(
        err.message().contains("server identity mismatch: expected spiffe://example.org/billing, got spiffe://example.org/server"),
        "client side: {err}"
    );
    let err = call_with(&st, &st.pki, Some(&c), "spiffe://other.org").unwrap_err();
    assert!(err.message().contains("expected any identity in spiffe://other.org, got spiffe://example.org/server"), "{err}");
    failure(Side::Client, ErrorReason::IdentityMismatch, before_c);
    let msg = failure(Side::Server, ErrorReason::PeerRefused, before_s);
    assert!(msg.contains("received fatal alert"), "server side: {msg}");
}

#[test]
fn stalled_handshake_times_out_and_holds_nothing() {
    let _g = serial();
    let st = setup(Duration::from_millis(300));
    let c = st.pki.issue("client", "spiffe://example.org/client");
    let before = count(Side::Server, ErrorReason::Timeout);
    // Half a record header, then nothing; and a connection that never speaks.
    let mut stalled: Vec<std::net::TcpStream> = (0..2).map(|_| std::net::TcpStream::connect(&st.addr).unwrap()).collect();
    stalled[0].write_all(&[0x16, 0x03, 0x01]).unwrap();
    // Other clients are served meanwhile.
    let t0 = Instant::now();
    assert_eq!(call_with(&st, &st.pki, Some(&c), st.server_id).unwrap(), "spiffe://example.org/client client");
    assert!(t0.elapsed() < Duration::from_millis(300), "served while the others stall");
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = Instant::now();
        let n = s.read(&mut [0u8; 64]).unwrap_or(0);
        assert_eq!(n, 0, "the server closes a stalled handshake");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    let msg = failure(Side::Server, ErrorReason::Timeout, before + 1);
    assert!(msg.contains("did not finish within 300ms"), "server side: {msg}");
}

#[test]
fn garbage_and_plaintext_clients_are_closed() {
    let _g = serial();
    let st = setup(Duration::from_secs(10));
    let before = count(Side::Server, ErrorReason::NotTls);
    let mut s = std::net::TcpStream::connect(&st.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    // At most a TLS alert record (content type 21), then the close.
    assert!(buf.is_empty() || buf[0] == 21, "{buf:?}");
    let msg = failure(Side::Server, ErrorReason::NotTls, before);
    assert!(msg.contains("not a TLS handshake"), "server side: {msg}");

    // A plaintext gRPC client (HTTP/2 preface) on the TLS port.
    let before = count(Side::Server, ErrorReason::NotTls);
    let ch = Channel::new(&st.addr, &ChannelConfig { connect_timeout: Duration::from_secs(5), ..Default::default() }).unwrap();
    let err = block_on(whoami(&ch)).unwrap_err();
    // It reads the server's TLS alert as HTTP/2 and gives up.
    assert!(matches!(err.code(), Code::Unavailable | Code::Internal | Code::Unknown), "client side: {err}");
    failure(Side::Server, ErrorReason::NotTls, before);
    // The server still serves.
    let c = st.pki.issue("client", "spiffe://example.org/client");
    assert!(call_with(&st, &st.pki, Some(&c), st.server_id).is_ok());
}

/// A stock rustls client (no Courier checks) presenting `dir`'s certificate;
/// returns the error of the first read after the handshake.
fn plain_rustls_handshake(addr: &str, pki: &Pki, dir: &std::path::Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca()).unwrap() {
            r.add(c.unwrap()).unwrap();
        }
        r
    };
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert(dir)).unwrap().map(|c| c.unwrap()).collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key(dir)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let _ = tls.write_all(b"x");
    let mut buf = [0u8; 16];
    match tls.read(&mut buf) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// A stock rustls server (no Courier checks) serving `dir`'s certificate.
fn plain_rustls_server(_pki: &Pki, dir: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert(dir)).unwrap().map(|c| c.unwrap()).collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key(dir)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { return };
            let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.complete_io(&mut s);
        }
    });
    addr
}
