//! Helpers of the TLS tests: dev CAs in temporary directories (no key is
//! checked in), a server whose one method answers with the peer identity it
//! saw, and channels.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use courier_core::tls::devca::{self, IssueRequest};
use courier_core::tls::ExpectedIdentity;
use courier_core::*;

pub const TD: &str = "example.org";

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "courier-tls-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A dev CA plus identities issued from it, all under one temp dir.
pub struct Pki {
    pub dir: TempDir,
    pub ca_dir: PathBuf,
}

impl Pki {
    pub fn new(trust_domain: &str) -> Pki {
        let dir = TempDir::new("pki");
        let ca_dir = dir.path().join("ca");
        devca::init_ca(trust_domain, &ca_dir, 30).unwrap();
        Pki { dir, ca_dir }
    }
    pub fn ca(&self) -> PathBuf {
        self.ca_dir.join(devca::CA_CERT)
    }
    /// Issues `req` into `<tmp>/<sub>`; returns that directory.
    pub fn issue_req(&self, sub: &str, req: &IssueRequest) -> PathBuf {
        let out = self.dir.path().join(sub);
        devca::issue(&self.ca_dir, req, &out).unwrap();
        out
    }
    /// An ECDSA identity valid for 127.0.0.1 and localhost too.
    pub fn issue(&self, sub: &str, id: &str) -> PathBuf {
        let mut r = IssueRequest::new(id);
        r.dns = vec!["localhost".into()];
        r.ips = vec!["127.0.0.1".parse::<IpAddr>().unwrap()];
        self.issue_req(sub, &r)
    }
}

pub fn cert(dir: &Path) -> PathBuf {
    dir.join(devca::CERT)
}
pub fn key(dir: &Path) -> PathBuf {
    dir.join(devca::KEY)
}

pub fn server_tls_config(pki: &Pki, dir: &Path) -> ServerTlsConfig {
    let mut c = ServerTlsConfig::new(cert(dir), key(dir), pki.ca());
    c.reload_interval = None;
    c
}

pub fn client_tls_config(pki: &Pki, dir: Option<&Path>, server_identity: &str) -> ClientTlsConfig {
    let mut c = ClientTlsConfig::new(pki.ca(), server_identity.parse::<ExpectedIdentity>().unwrap());
    if let Some(d) = dir {
        c = c.with_client_cert(cert(d), key(d));
    }
    c.reload_interval = None;
    c
}

pub const WHOAMI: &str = "/courier.test.Tls/WhoAmI";

pub fn whoami_desc() -> MethodDesc {
    MethodDesc::new(WHOAMI, MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(10))).unwrap()
}

/// A server with one method that answers `<spiffe id> <name>` of the peer, or
/// `unauthenticated`.
pub fn start_server(tls: ServerTls) -> (Server, String) {
    let server = Server::new(ServerConfig { workers: 1, tls: Some(tls), ..Default::default() });
    server
        .register(
            whoami_desc(),
            Handler::unary(|ctx: Ctx, _req: Bytes| async move {
                Ok(Bytes::from(match ctx.peer_identity() {
                    Some(p) => format!("{} {}", p.spiffe_id, p.name),
                    None => "unauthenticated".to_string(),
                }))
            }),
        )
        .unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap().to_string();
    server.start().unwrap();
    (server, addr)
}

pub fn tls_channel(addr: &str, tls: ClientTls) -> Channel {
    Channel::new(addr, &ChannelConfig { tls: Some(tls), connect_timeout: Duration::from_secs(5), ..Default::default() }).unwrap()
}

pub async fn whoami(ch: &Channel) -> Result<String, Status> {
    let ctx = Ctx::background().with_timeout(Duration::from_secs(5));
    let r = ch.unary(&ctx, &whoami_desc(), Bytes::from_static(b"?"), &Default::default()).await?;
    Ok(String::from_utf8(r.message.to_vec()).unwrap())
}

/// Waits until `f` holds (counters are updated by the server's I/O thread).
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}
