//! Mutual TLS end to end, Courier client to Courier server on loopback:
//! identities on the server ctx, server identity checks, resumption,
//! unauthenticated peers, certificate rotation.

mod tls_support;

use std::time::Duration;

use courier_core::tls::{tls_stats, Side};
use courier_core::*;
use tls_support::*;

#[tokio::test]
async fn mtls_identity_on_every_server_ctx() {
    let pki = Pki::new(TD);
    let s = pki.issue("server", "spiffe://example.org/e2e-server");
    let c = pki.issue("client", "spiffe://example.org/ns/prod/e2e-client");
    let (_server, addr) = start_server(ServerTls::new(server_tls_config(&pki, &s)).unwrap());
    for expected in ["spiffe://example.org/e2e-server", "spiffe://example.org"] {
        let ch = tls_channel(&addr, ClientTls::new(client_tls_config(&pki, Some(&c), expected)).unwrap());
        for _ in 0..3 {
            assert_eq!(whoami(&ch).await.unwrap(), "spiffe://example.org/ns/prod/e2e-client ns/prod/e2e-client");
        }
    }
    let st = tls_stats();
    assert_eq!(st.handshakes_with(Side::Server, "spiffe://example.org/ns/prod/e2e-client").0, 2, "{st:?}");
    assert!(st.handshakes_with(Side::Client, "spiffe://example.org/e2e-server").0 >= 2, "{st:?}");
}

#[tokio::test]
async fn reconnect_resumes_the_session() {
    let pki = Pki::new(TD);
    let s = pki.issue("server", "spiffe://example.org/resume-server");
    let c = pki.issue("client", "spiffe://example.org/resume-client");
    let tls = ServerTls::new(server_tls_config(&pki, &s)).unwrap();
    // Connections are sent away after 200 ms, so each call below reconnects.
    let mut cfg = ServerConfig { workers: 1, tls: Some(tls), ..Default::default() };
    cfg.http2.max_connection_age = Some(Duration::from_millis(200));
    cfg.http2.max_connection_age_grace = Duration::from_millis(50);
    let server = Server::new(cfg);
    server
        .register(
            whoami_desc(),
            Handler::unary(|ctx: Ctx, _| async move { Ok(bytes::Bytes::from(ctx.peer_identity().unwrap().name.clone())) }),
        )
        .unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap().to_string();
    server.start().unwrap();
    let ch = tls_channel(&addr, ClientTls::new(client_tls_config(&pki, Some(&c), "spiffe://example.org/resume-server")).unwrap());
    for _ in 0..4 {
        // A call may meet the GOAWAY; retry it once like any client would.
        let r = match whoami(&ch).await {
            Ok(r) => r,
            Err(_) => whoami(&ch).await.unwrap(),
        };
        assert_eq!(r, "resume-client");
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let st = tls_stats();
    let (full, resumed) = st.handshakes_with(Side::Server, "spiffe://example.org/resume-client");
    assert_eq!(full, 1, "one full handshake, then resumptions: {st:?}");
    assert!(resumed >= 3, "{st:?}");
    let (_, resumed) = st.handshakes_with(Side::Client, "spiffe://example.org/resume-server");
    assert!(resumed >= 3, "the resumed session still names the server: {st:?}");
}

#[tokio::test]
async fn unauthenticated_peers_admitted_only_when_asked() {
    let pki = Pki::new(TD);
    let s = pki.issue("server", "spiffe://example.org/open-server");
    let c = pki.issue("client", "spiffe://example.org/open-client");
    let mut cfg = server_tls_config(&pki, &s);
    cfg.require_client_cert = false;
    let (_server, addr) = start_server(ServerTls::new(cfg).unwrap());
    let anon = tls_channel(&addr, ClientTls::new(client_tls_config(&pki, None, "spiffe://example.org/open-server")).unwrap());
    assert_eq!(whoami(&anon).await.unwrap(), "unauthenticated");
    // A certificate, when sent, is still verified and its identity used.
    let with_cert = tls_channel(&addr, ClientTls::new(client_tls_config(&pki, Some(&c), "spiffe://example.org")).unwrap());
    assert_eq!(whoami(&with_cert).await.unwrap(), "spiffe://example.org/open-client open-client");
}

#[tokio::test]
async fn rsa_certificates_work_too() {
    let pki = Pki::new(TD);
    let mut r = courier_core::tls::devca::IssueRequest::new("spiffe://example.org/rsa-server");
    r.rsa = true;
    let s = pki.issue_req("server", &r);
    let mut r = courier_core::tls::devca::IssueRequest::new("spiffe://example.org/rsa-client");
    r.rsa = true;
    let c = pki.issue_req("client", &r);
    let (_server, addr) = start_server(ServerTls::new(server_tls_config(&pki, &s)).unwrap());
    let ch = tls_channel(&addr, ClientTls::new(client_tls_config(&pki, Some(&c), "spiffe://example.org/rsa-server")).unwrap());
    assert_eq!(whoami(&ch).await.unwrap(), "spiffe://example.org/rsa-client rsa-client");
}

#[tokio::test]
async fn rotation_swaps_certificates_and_refuses_broken_files() {
    let pki = Pki::new(TD);
    let s = pki.issue("server", "spiffe://example.org/rotate-v1");
    let c = pki.issue("client", "spiffe://example.org/rotate-client");
    let mut cfg = server_tls_config(&pki, &s);
    cfg.reload_interval = Some(Duration::from_millis(50));
    let tls = ServerTls::new(cfg).unwrap();
    let (_server, addr) = start_server(tls.clone());
    let expect = |id: &str| tls_channel(&addr, ClientTls::new(client_tls_config(&pki, Some(&c), id)).unwrap());
    assert!(whoami(&expect("spiffe://example.org/rotate-v1")).await.is_ok());

    // New files in place (as `courier ca issue` writes them: atomic renames).
    pki.issue("server", "spiffe://example.org/rotate-v2");
    eventually("the server picks up the new certificate", || tls.identity().spiffe_id == "spiffe://example.org/rotate-v2").await;
    assert!(whoami(&expect("spiffe://example.org/rotate-v2")).await.is_ok());
    let err = whoami(&expect("spiffe://example.org/rotate-v1")).await.unwrap_err();
    assert!(err.message().contains("expected spiffe://example.org/rotate-v1, got spiffe://example.org/rotate-v2"), "{err}");

    // A broken file is refused; the previous certificate stays in force.
    let failed_before = tls_stats().reloads_failed;
    std::fs::write(cert(&s), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    eventually("the broken file is refused", || tls_stats().reloads_failed > failed_before).await;
    assert!(tls_stats().last_reload_error.contains("cert.pem"), "{}", tls_stats().last_reload_error);
    assert!(tls.reload().is_err());
    assert_eq!(tls.identity().spiffe_id, "spiffe://example.org/rotate-v2");
    assert!(whoami(&expect("spiffe://example.org/rotate-v2")).await.is_ok());
}

#[test]
fn bad_files_are_refused_with_the_path() {
    let pki = Pki::new(TD);
    let s = pki.issue("server", "spiffe://example.org/files");
    let other = pki.issue("other", "spiffe://example.org/other");
    let e = ServerTls::new(ServerTlsConfig::new(s.join("missing.pem"), key(&s), pki.ca())).unwrap_err();
    assert!(e.to_string().starts_with("cannot read certificate file") && e.to_string().contains("missing.pem"), "{e}");
    let e = ServerTls::new(ServerTlsConfig::new(cert(&s), key(&other), pki.ca())).unwrap_err();
    assert!(e.to_string().contains("key"), "{e}");
    let e = ServerTls::new(ServerTlsConfig::new(cert(&s), key(&s), key(&s))).unwrap_err();
    assert!(e.to_string().contains("invalid CA file"), "{e}");
}

/// A client that presents `chain` but signs its CertificateVerify with `key`.
#[derive(Debug)]
struct StolenCert(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for StolenCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn pem_certs(p: &std::path::Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(p).unwrap().map(|c| c.unwrap()).collect()
}

/// Full TLS 1.3 handshake with a raw rustls client presenting `chain` and
/// signing with `key_dir`'s key; Ok when the server then talks HTTP/2 to it.
async fn raw_handshake(addr: &str, pki: &Pki, chain: &std::path::Path, key_dir: &std::path::Path) -> std::io::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = std::sync::Arc::new(courier_core::tls::provider(courier_core::tls::KeyExchange::Classical));
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key(key_dir)).unwrap();
    let signer = provider.key_provider.load_private_key(key).unwrap();
    let ck = std::sync::Arc::new(rustls::sign::CertifiedKey::new(pem_certs(&cert(chain)), signer));
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&pki.ca()) {
        roots.add(c).unwrap();
    }
    let mut cc = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(std::sync::Arc::new(StolenCert(ck)));
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cc)).connect(name, tcp).await?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await?;
    // The server judges our certificate after our Finished: its SETTINGS, or an alert.
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(0)) => Err(std::io::Error::other("closed")),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("no answer")),
    }
}

#[tokio::test]
async fn verified_chain_cache_skips_only_what_it_may() {
    use courier_core::tls::ErrorReason;
    let pki = Pki::new(TD);
    let other = Pki::new(TD);
    let s = pki.issue("server", "spiffe://example.org/cache-server");
    let c = pki.issue("client", "spiffe://example.org/cache-client");
    let thief = pki.issue("thief", "spiffe://example.org/cache-thief");
    let b = other.issue("b-client", "spiffe://example.org/cache-client");
    // The server's CA file is a copy, so it can rotate without touching the client's.
    let server_ca = pki.dir.path().join("server-ca.pem");
    std::fs::copy(pki.ca(), &server_ca).unwrap();
    let mut cfg = server_tls_config(&pki, &s);
    cfg.ca = server_ca.clone();
    let tls = ServerTls::new(cfg).unwrap();
    let (_server, addr) = start_server(tls.clone());

    // Two channels, two full handshakes with the same chain: the second hits.
    let before = tls_stats();
    raw_handshake(&addr, &pki, &c, &c).await.unwrap();
    raw_handshake(&addr, &pki, &c, &c).await.unwrap();
    let after = tls_stats();
    assert!(after.chain_cache_hits > before.chain_cache_hits, "{after:?}");

    // The cached chain with another key: CertificateVerify is still checked.
    let bad_before = tls_stats().errors_of(Side::Server, ErrorReason::BadCertificate);
    assert!(raw_handshake(&addr, &pki, &c, &thief).await.is_err());
    eventually("the forged CertificateVerify is counted", || {
        tls_stats().errors_of(Side::Server, ErrorReason::BadCertificate) > bad_before
    })
    .await;

    // A certificate of another CA (same SPIFFE ID) never passes.
    let unknown_before = tls_stats().errors_of(Side::Server, ErrorReason::UnknownCa);
    assert!(raw_handshake(&addr, &pki, &b, &b).await.is_err());
    eventually("the other CA's client is refused", || tls_stats().errors_of(Side::Server, ErrorReason::UnknownCa) > unknown_before).await;

    // CA rotation: the chain verified under the old CA is refused afterwards.
    std::fs::copy(other.ca(), &server_ca).unwrap();
    tls.reload().unwrap();
    let unknown_before = tls_stats().errors_of(Side::Server, ErrorReason::UnknownCa);
    assert!(raw_handshake(&addr, &pki, &c, &c).await.is_err(), "a chain cached under the old CA must not pass");
    eventually("the old CA's client is refused", || tls_stats().errors_of(Side::Server, ErrorReason::UnknownCa) > unknown_before).await;
    raw_handshake(&addr, &pki, &b, &b).await.unwrap();
}
