//! TLS benchmark processes, driven by `bench/tls/run.py` (which pins them to
//! cores and measures the server's CPU time from /proc).
//!
//!   pki --out DIR                     an ECDSA P-256 dev CA with ECDSA and RSA server
//!                                     identities and an ECDSA client; an RSA 2048 CA
//!                                     with an RSA server and an RSA client
//!   hs-server --pki DIR --mode M --cert ecdsa|rsa [--ca ecdsa|rsa] [--tickets N]
//!             [--no-client-auth] [--chain-cache N] [--kx hybrid|x25519]
//!        M = courier: Courier's ServerTls (policy, SPIFFE checks, counters)
//!            rustls-aws / rustls-ring: the same policy built on each provider,
//!            plain webpki client verification (the provider comparison)
//!   hs-client --addr A --pki DIR --version 12|13 --resume none|ticket|session-id
//!             --kx hybrid|x25519 [--ca ecdsa|rsa] [--no-cert] [--conns 8] [--secs 5] [--warmup 1]
//!        --ca rsa: trust the RSA CA and present the RSA client certificate
//!        (the all-RSA deployment); default: the ECDSA CA and ECDSA client
//!   rpc-server --pki DIR [--tls]      Courier server, Rust unary echo, one I/O thread
//!   rpc-client --addr A --pki DIR [--tls] [--conns 4] [--concurrency 32] [--secs 5]
//!
//! Servers print `PORT <n>` and run until stdin closes. Clients print `GO`
//! after the warm-up and one JSON line of counts for the measured window.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_core::tls::devca::{self, IssueRequest};
use courier_core::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Args = HashMap<String, String>;

fn parse_args(v: &[String]) -> Args {
    let mut m = HashMap::new();
    let mut i = 0;
    while i < v.len() {
        let k = v[i].trim_start_matches("--").to_string();
        if i + 1 < v.len() && !v[i + 1].starts_with("--") {
            m.insert(k, v[i + 1].clone());
            i += 2;
        } else {
            m.insert(k, "1".into());
            i += 1;
        }
    }
    m
}

fn arg<'a>(a: &'a Args, k: &str, default: &'a str) -> &'a str {
    a.get(k).map(String::as_str).unwrap_or(default)
}

fn num<T: std::str::FromStr>(a: &Args, k: &str, default: T) -> T {
    a.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let Some(cmd) = argv.get(1) else {
        eprintln!("usage: courier-bench-tls pki|hs-server|hs-client|rpc-server|rpc-client [--flags]");
        std::process::exit(2);
    };
    let a = parse_args(&argv[2..]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match cmd.as_str() {
        "pki" => pki(Path::new(arg(&a, "out", "pki"))),
        "hs-server" => rt.block_on(hs_server(&a)),
        "hs-client" => rt.block_on(hs_client(&a)),
        "rpc-server" => rpc_server(&a),
        "rpc-client" => rt.block_on(rpc_client(&a)),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(2);
        }
    }
}

fn pki(out: &Path) {
    let ca = out.join("ca");
    if !ca.join(devca::CA_KEY).exists() {
        devca::init_ca("bench.example", &ca, 30).unwrap();
    }
    for (dir, id, rsa) in [
        ("server-ecdsa", "spiffe://bench.example/server", false),
        ("server-rsa", "spiffe://bench.example/server", true),
        ("client", "spiffe://bench.example/client", false),
    ] {
        let mut r = IssueRequest::new(id);
        r.dns = vec!["localhost".into()];
        r.rsa = rsa;
        devca::issue(&ca, &r, &out.join(dir)).unwrap();
    }
    // The all-RSA deployment: RSA CA, RSA server, RSA client.
    let ca_rsa = out.join("ca-rsa");
    if !ca_rsa.join(devca::CA_KEY).exists() {
        devca::init_ca_with_key("bench.example", &ca_rsa, 30, true).unwrap();
    }
    for (dir, id) in [("rsaca-server-rsa", "spiffe://bench.example/server"), ("rsaca-client", "spiffe://bench.example/client")] {
        let mut r = IssueRequest::new(id);
        r.dns = vec!["localhost".into()];
        r.rsa = true;
        devca::issue(&ca_rsa, &r, &out.join(dir)).unwrap();
    }
    println!("pki in {}", out.display());
}

fn certs(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p).unwrap().map(|c| c.unwrap()).collect()
}

fn key(p: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(p).unwrap()
}

/// The CA file of a `--ca` choice.
fn ca_file(pki: &Path, a: &Args) -> PathBuf {
    match arg(a, "ca", "ecdsa") {
        "ecdsa" => pki.join("ca/ca.pem"),
        "rsa" => pki.join("ca-rsa/ca.pem"),
        other => panic!("unknown ca {other}"),
    }
}

fn roots(pki: &Path) -> Arc<rustls::RootCertStore> {
    roots_of(&pki.join("ca/ca.pem"))
}

fn roots_of(ca: &Path) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    for c in certs(ca) {
        r.add(c).unwrap();
    }
    Arc::new(r)
}

/// Prints the port, then returns a flag that turns true when stdin closes.
fn announce(port: u16) -> Arc<AtomicBool> {
    println!("PORT {port}");
    std::io::stdout().flush().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        while std::io::stdin().lock().read_line(&mut s).map(|n| n > 0).unwrap_or(false) {}
        d.store(true, Ordering::Relaxed);
        std::process::exit(0);
    });
    done
}

/// The Courier policy (suites, versions, order, ALPN, resumption) on a given
/// provider, with rustls' plain webpki client verifier.
fn rustls_server_config(pki: &Path, cert_dir: &str, provider: rustls::crypto::CryptoProvider, tickets: usize) -> Arc<rustls::ServerConfig> {
    let courier = tls::provider(tls::KeyExchange::default());
    let ids: Vec<_> = courier.cipher_suites.iter().map(|s| s.suite()).collect();
    let mut suites: Vec<_> = provider.cipher_suites.iter().copied().filter(|s| ids.contains(&s.suite())).collect();
    suites.sort_by_key(|s| ids.iter().position(|i| *i == s.suite()));
    let kx_ids: Vec<_> = courier.kx_groups.iter().map(|g| g.name()).collect();
    let kx = provider.kx_groups.iter().copied().filter(|g| kx_ids.contains(&g.name())).collect();
    let provider = Arc::new(rustls::crypto::CryptoProvider { cipher_suites: suites, kx_groups: kx, ..provider });
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(pki), provider.clone()).build().unwrap();
    let dir = pki.join(cert_dir);
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&dir.join("cert.pem")), key(&dir.join("key.pem")))
        .unwrap();
    sc.ignore_client_order = true;
    sc.alpn_protocols = vec![b"h2".to_vec()];
    sc.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    sc.send_tls13_tickets = tickets;
    Arc::new(sc)
}

fn ticketer(sc: &mut Arc<rustls::ServerConfig>, t: Arc<dyn rustls::server::ProducesTickets>) {
    Arc::get_mut(sc).unwrap().ticketer = t;
}

async fn hs_server(a: &Args) {
    let pki = PathBuf::from(arg(a, "pki", "pki"));
    let rsa_ca = arg(a, "ca", "ecdsa") == "rsa";
    let cert_dir = format!("{}server-{}", if rsa_ca { "rsaca-" } else { "" }, arg(a, "cert", "ecdsa"));
    let tickets: usize = num(a, "tickets", 1);
    let mode = arg(a, "mode", "courier");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _done = announce(l.local_addr().unwrap().port());
    enum Acc {
        Courier(ServerTls),
        Plain(tokio_rustls::TlsAcceptor),
    }
    let acc = Arc::new(match mode {
        "courier" => {
            let d = pki.join(&cert_dir);
            let mut c = ServerTlsConfig::new(d.join("cert.pem"), d.join("key.pem"), ca_file(&pki, a));
            c.tls13_tickets = tickets;
            c.reload_interval = None;
            c.require_client_cert = !a.contains_key("no-client-auth");
            c.verified_chain_cache = num(a, "chain-cache", c.verified_chain_cache);
            if let Some(kx) = a.get("kx") {
                c.key_exchange = match kx.as_str() {
                    "hybrid" => tls::KeyExchange::Hybrid,
                    "x25519" => tls::KeyExchange::Classical,
                    other => panic!("unknown kx {other}"),
                };
            }
            Acc::Courier(ServerTls::new(c).unwrap())
        }
        "rustls-aws" => {
            let mut sc = rustls_server_config(&pki, &cert_dir, rustls::crypto::aws_lc_rs::default_provider(), tickets);
            ticketer(&mut sc, rustls::crypto::aws_lc_rs::Ticketer::new().unwrap());
            Acc::Plain(tokio_rustls::TlsAcceptor::from(sc))
        }
        #[cfg(feature = "ring")]
        "rustls-ring" => {
            let mut sc = rustls_server_config(&pki, &cert_dir, rustls::crypto::ring::default_provider(), tickets);
            ticketer(&mut sc, rustls::crypto::ring::Ticketer::new().unwrap());
            Acc::Plain(tokio_rustls::TlsAcceptor::from(sc))
        }
        other => panic!("unknown mode {other} (rustls-ring needs --features ring)"),
    });
    loop {
        let (tcp, _) = l.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        let acc = acc.clone();
        tokio::spawn(async move {
            match &*acc {
                Acc::Courier(t) => {
                    if let Some((mut s, _peer)) = t.accept(tcp).await {
                        let _ = s.write_all(b"k").await;
                        let _ = s.read(&mut [0u8; 64]).await;
                    }
                }
                Acc::Plain(t) => {
                    if let Ok(mut s) = t.accept(tcp).await {
                        let _ = s.write_all(b"k").await;
                        let _ = s.read(&mut [0u8; 64]).await;
                    }
                }
            }
        });
    }
}

fn client_config(a: &Args, pki: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::crypto::aws_lc_rs::kx_group::{SECP256R1, X25519, X25519MLKEM768};
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = match arg(a, "kx", "hybrid") {
        "hybrid" => vec![X25519MLKEM768, X25519, SECP256R1],
        "x25519" => vec![X25519, SECP256R1],
        other => panic!("unknown kx {other}"),
    };
    let version = match arg(a, "version", "13") {
        "13" => &rustls::version::TLS13,
        "12" => &rustls::version::TLS12,
        other => panic!("unknown version {other}"),
    };
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots_of(&ca_file(pki, a)));
    let client_dir = pki.join(if arg(a, "ca", "ecdsa") == "rsa" { "rsaca-client" } else { "client" });
    let mut cc = if a.contains_key("no-cert") {
        b.with_no_client_auth()
    } else {
        b.with_client_auth_cert(certs(&client_dir.join("cert.pem")), key(&client_dir.join("key.pem"))).unwrap()
    };
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let store = Arc::new(rustls::client::ClientSessionMemoryCache::new(1024));
    cc.resumption = match arg(a, "resume", "none") {
        "none" => rustls::client::Resumption::disabled(),
        "ticket" => rustls::client::Resumption::store(store),
        "session-id" => rustls::client::Resumption::store(store).tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly),
        other => panic!("unknown resume {other}"),
    };
    Arc::new(cc)
}

#[derive(Default)]
struct Counts {
    full: AtomicU64,
    resumed: AtomicU64,
    errors: AtomicU64,
}

async fn hs_client(a: &Args) {
    let pki = PathBuf::from(arg(a, "pki", "pki"));
    let addr = arg(a, "addr", "").to_string();
    let conns: usize = num(a, "conns", 8);
    let secs: f64 = num(a, "secs", 5.0);
    let warmup: f64 = num(a, "warmup", 1.0);
    let connector = tokio_rustls::TlsConnector::from(client_config(a, &pki));
    let counts = Arc::new(Counts::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (connector, counts, measuring, stop, addr) = (connector.clone(), counts.clone(), measuring.clone(), stop.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let name = ServerName::try_from("localhost").unwrap();
            while !stop.load(Ordering::Relaxed) {
                let r: std::io::Result<bool> = async {
                    let tcp = TcpStream::connect(&addr).await?;
                    tcp.set_nodelay(true)?;
                    let mut s = connector.connect(name.clone(), tcp).await?;
                    let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                    // The server's byte comes after its tickets: they are stored.
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    s.shutdown().await?;
                    Ok(resumed)
                }
                .await;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match r {
                    Ok(true) => counts.resumed.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => counts.full.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let elapsed = measure_window(warmup, secs, &measuring).await;
    println!(
        "{{\"full\": {}, \"resumed\": {}, \"errors\": {}, \"secs\": {elapsed:.3}}}",
        counts.full.load(Ordering::Relaxed),
        counts.resumed.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
}

const ECHO: &str = "/bench.Echo/Unary";

fn echo_desc() -> MethodDesc {
    MethodDesc::new(ECHO, MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(10))).unwrap()
}

fn rpc_server(a: &Args) {
    let pki = PathBuf::from(arg(a, "pki", "pki"));
    let tls = a.contains_key("tls").then(|| {
        let d = pki.join("server-ecdsa");
        let mut c = ServerTlsConfig::new(d.join("cert.pem"), d.join("key.pem"), pki.join("ca/ca.pem"));
        c.reload_interval = None;
        ServerTls::new(c).unwrap()
    });
    let server = Server::new(ServerConfig { workers: 1, tls, ..Default::default() });
    server.register(echo_desc(), Handler::unary(|_ctx: Ctx, req: Bytes| async move { Ok(req) })).unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap();
    server.start().unwrap();
    let _ = announce(addr.port());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

async fn rpc_client(a: &Args) {
    let pki = PathBuf::from(arg(a, "pki", "pki"));
    let addr = arg(a, "addr", "").to_string();
    let conns: usize = num(a, "conns", 4);
    let concurrency: usize = num(a, "concurrency", 32);
    let secs: f64 = num(a, "secs", 5.0);
    let warmup: f64 = num(a, "warmup", 1.0);
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let msg = Bytes::from_static(b"\x0a\x0dhello, world!\x12\x01x");
    for _ in 0..conns {
        let tls = a.contains_key("tls").then(|| {
            let c = ClientTlsConfig::new(pki.join("ca/ca.pem"), "spiffe://bench.example/server".parse().unwrap())
                .with_client_cert(pki.join("client/cert.pem"), pki.join("client/key.pem"));
            ClientTls::new(ClientTlsConfig { reload_interval: None, ..c }).unwrap()
        });
        let ch = Channel::new(&addr, &ChannelConfig { tls, ..Default::default() }).unwrap();
        for _ in 0..concurrency {
            let (ch, calls, errors, measuring, msg) = (ch.clone(), calls.clone(), errors.clone(), measuring.clone(), msg.clone());
            tokio::spawn(async move {
                let desc = echo_desc();
                let md = http::HeaderMap::new();
                let ctx = Ctx::background();
                loop {
                    let r = ch.unary(&ctx, &desc, msg.clone(), &md).await;
                    if measuring.load(Ordering::Relaxed) {
                        match r {
                            Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }
            });
        }
    }
    let elapsed = measure_window(warmup, secs, &measuring).await;
    println!(
        "{{\"calls\": {}, \"errors\": {}, \"secs\": {elapsed:.3}}}",
        calls.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().unwrap();
    std::process::exit(0);
}

/// After `warmup` s, tells the driver "GO" and counts for `secs` s (workers
/// count only while `measuring` is set); returns the measured seconds.
async fn measure_window(warmup: f64, secs: f64, measuring: &AtomicBool) -> f64 {
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    println!("GO");
    std::io::stdout().flush().unwrap();
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    t0.elapsed().as_secs_f64()
}
