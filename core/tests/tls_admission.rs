//! Admission rules by verified identity, over mutual TLS with dev-CA
//! certificates: exact identity (short name and full SPIFFE ID) over
//! `authenticated`, denied identities, per-identity rate limits, and peers
//! without a certificate on a server that admits them.

mod tls_support;

use std::time::Duration;

use courier_core::tls::{ClientTls, ServerTls};
use courier_core::*;
use tls_support::*;

fn limited_server(pki: &Pki, limits: &str, require_client_cert: bool) -> (Server, String, TempDir) {
    let dir = TempDir::new("adm");
    let file = dir.path().join("limits.yaml");
    std::fs::write(&file, limits).unwrap();
    let srv = pki.issue("srv", "spiffe://example.org/server");
    let mut tls = server_tls_config(pki, &srv);
    tls.require_client_cert = require_client_cert;
    let config = ServerConfig { workers: 1, tls: Some(ServerTls::new(tls).unwrap()), limits_path: Some(file), ..Default::default() };
    let server = Server::new(config);
    server
        .register(
            whoami_desc(),
            Handler::unary(|ctx: Ctx, _req: bytes::Bytes| async move {
                Ok(bytes::Bytes::from(ctx.peer_identity().map_or("unauthenticated".to_string(), |p| p.name.clone())))
            }),
        )
        .unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap().to_string();
    server.start().unwrap();
    (server, addr, dir)
}

fn client(pki: &Pki, addr: &str, name: Option<&str>) -> Channel {
    let dir = name.map(|n| pki.issue(n, &format!("spiffe://example.org/{n}")));
    tls_channel(addr, ClientTls::new(client_tls_config(pki, dir.as_deref(), "spiffe://example.org/server")).unwrap())
}

const LIMITS: &str = "
limits:
  courier.test.Tls:
    default:
      rate_acls:
        ocr: -1
        spiffe://example.org/web: -1
        batch: 3
        banned: 0
        authenticated: 0
        unauthenticated: -1
";

#[tokio::test]
async fn identities_are_judged_by_the_acl() {
    let pki = Pki::new(TD);
    let (_server, addr, _dir) = limited_server(&pki, LIMITS, false);
    assert_eq!(whoami(&client(&pki, &addr, Some("ocr"))).await.unwrap(), "ocr", "short name");
    assert_eq!(whoami(&client(&pki, &addr, Some("web"))).await.unwrap(), "web", "full SPIFFE ID");
    let e = whoami(&client(&pki, &addr, Some("banned"))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("spiffe://example.org/banned may not call /courier.test.Tls/WhoAmI"), "{e:?}");
    let e = whoami(&client(&pki, &addr, Some("stranger"))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "falls to `authenticated: 0`");
    assert_eq!(whoami(&client(&pki, &addr, None)).await.unwrap(), "unauthenticated");
}

#[tokio::test]
async fn rate_limits_are_per_identity() {
    let pki = Pki::new(TD);
    let (_server, addr, _dir) = limited_server(&pki, LIMITS, false);
    let batch = client(&pki, &addr, Some("batch"));
    for _ in 0..3 {
        whoami(&batch).await.unwrap();
    }
    let e = whoami(&batch).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("spiffe://example.org/batch is over its rate limit"), "{e:?}");
    // Another identity is not affected; the bucket refills at 3/s.
    assert_eq!(whoami(&client(&pki, &addr, Some("ocr"))).await.unwrap(), "ocr");
    tokio::time::sleep(Duration::from_millis(400)).await;
    whoami(&batch).await.unwrap();
}

#[tokio::test]
async fn unauthenticated_peers_denied_when_the_acl_says_so() {
    let pki = Pki::new(TD);
    let limits = LIMITS.replace("unauthenticated: -1", "unauthenticated: 0");
    let (_server, addr, _dir) = limited_server(&pki, &limits, false);
    let e = whoami(&client(&pki, &addr, None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(whoami(&client(&pki, &addr, Some("ocr"))).await.unwrap(), "ocr");
}
