//! `courier-load`: the gRPC load that h2load cannot make, on the `h2` crate
//! (+ rustls with a client certificate for mutual TLS). Every mode prints `GO`
//! when its measured window starts and one JSON line of results at the end, so
//! the harness (bench/harness) reads the server's CPU time exactly over the window.
//!
//!   unary  --addr A --path P [--size 32] [--field 1] [--conns 16] [--streams 8]
//!          [--secs 5] [--warmup 1] [--rate R] [--tls PKI]
//!          closed loop (conns x streams calls in flight), or open loop at R calls/s
//!          in total (latency from the scheduled start: no coordinated omission)
//!   stream --addr A --path P [--size 65536] [--conns 1] [--streams 4] [--secs 5] [--warmup 1] [--tls PKI]
//!          server streaming: each stream sends one request and counts the bytes of
//!          the endless reply
//!   storm  --addr A --path P --clients 1000 --tls PKI [--resume]
//!          that many clients, each with its own TLS session cache, connect at once:
//!          TLS + HTTP/2 handshake, one unary call, close. `--resume` runs a priming
//!          storm first (not measured) so every client holds a ticket.
//!
//! PKI is the directory `courier-bench-tls pki` writes (ca/, client/).
//! The message is one length-delimited protobuf field (`--field 1`: `string s`;
//! 2: `bytes payload`) of `--size` bytes in total.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_bench::{arg_value, frame, has_flag, message, usage};
use h2::client::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type BoxErr = Box<dyn Error + Send + Sync>;

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg_value(name).map(|v| v.parse().unwrap_or_else(|_| usage(&format!("{name}: bad value {v}")))).unwrap_or(default)
}

struct Opts {
    addr: String,
    uri: http::Uri,
    conns: usize,
    streams: usize,
    secs: f64,
    warmup: f64,
    tls: Option<PathBuf>,
    window: u32,
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let addr = arg_value("--addr").unwrap_or_else(|| usage("--addr HOST:PORT"));
    let path = arg_value("--path").unwrap_or_else(|| usage("--path /pkg.Svc/Method"));
    let tls = arg_value("--tls").map(PathBuf::from);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let o = Opts {
        uri: format!("{scheme}://localhost{path}").parse().unwrap_or_else(|_| usage("bad --path")),
        addr,
        conns: num("--conns", if mode == "stream" { 1 } else { 16 }),
        streams: num("--streams", if mode == "stream" { 4 } else { 8 }),
        secs: num("--secs", 5.0),
        warmup: num("--warmup", 1.0),
        tls,
        window: num("--window", 8 << 20),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let r = match mode.as_str() {
        "unary" => {
            let f = Bytes::from(frame(&message(num("--field", 1), num("--size", 32))));
            match arg_value("--rate") {
                Some(r) => rt.block_on(open_loop(&o, f, r.parse().unwrap_or_else(|_| usage("--rate")))),
                None => rt.block_on(closed_loop(&o, f)),
            }
        }
        "stream" => rt.block_on(stream(&o, Bytes::from(frame(&message(num("--field", 2), num("--size", 65536)))))),
        "storm" => rt.block_on(storm(&o, num("--clients", 1000), has_flag("--resume"))),
        _ => usage("usage: courier-load unary|stream|storm --addr A --path P [options]"),
    };
    match r {
        Ok(json) => {
            println!("{json}");
            let _ = std::io::stdout().flush();
            std::process::exit(0)
        }
        Err(e) => usage(&format!("{mode}: {e}")),
    }
}

fn go() {
    println!("GO");
    let _ = std::io::stdout().flush();
}

fn pem_certs(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p)
        .unwrap_or_else(|e| usage(&format!("{}: {e}", p.display())))
        .map(|c| c.expect("certificate"))
        .collect()
}

fn connector(pki: &Path, resume: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&pki.join("ca/ca.pem")) {
        roots.add(c).expect("CA");
    }
    let key = PrivateKeyDer::from_pem_file(pki.join("client/key.pem")).expect("client key");
    let mut cc = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(pem_certs(&pki.join("client/cert.pem")), key)
        .expect("client certificate");
    cc.alpn_protocols = vec![b"h2".to_vec()];
    cc.resumption = if resume {
        rustls::client::Resumption::in_memory_sessions(8)
    } else {
        rustls::client::Resumption::disabled()
    };
    TlsConnector::from(Arc::new(cc))
}

/// One HTTP/2 connection; the connection task runs until it closes.
/// Returns whether TLS resumed a session.
async fn connect(o: &Opts, tls: Option<&TlsConnector>) -> Result<(SendRequest<Bytes>, bool), BoxErr> {
    let tcp = TcpStream::connect(&o.addr).await?;
    tcp.set_nodelay(true)?;
    let mut b = h2::client::Builder::new();
    b.initial_window_size(o.window).initial_connection_window_size(o.window.saturating_mul(2));
    match tls {
        Some(c) => {
            let s = c.connect(ServerName::try_from("localhost")?, tcp).await?;
            let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let (sr, conn) = b.handshake(s).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok((sr, resumed))
        }
        None => {
            let (sr, conn) = b.handshake(tcp).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok((sr, false))
        }
    }
}

async fn connections(o: &Opts) -> Result<Vec<SendRequest<Bytes>>, BoxErr> {
    let c = o.tls.as_deref().map(|p| connector(p, false));
    let mut v = Vec::new();
    for _ in 0..o.conns {
        v.push(connect(o, c.as_ref()).await?.0);
    }
    Ok(v)
}

/// Starts a call with the gRPC frame as its whole request body.
async fn start(sr: &SendRequest<Bytes>, uri: &http::Uri, body: Bytes) -> Result<h2::RecvStream, BoxErr> {
    let mut sr = sr.clone().ready().await?;
    let req = http::Request::post(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (resp, mut tx) = sr.send_request(req, false)?;
    tx.send_data(body, true)?;
    let resp = resp.await?;
    let (parts, body) = resp.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(format!("HTTP {}", parts.status).into());
    }
    if let Some(s) = parts.headers.get("grpc-status") {
        if s != "0" {
            return Err(format!("grpc-status {s:?}").into());
        }
    }
    Ok(body)
}

/// One unary call: the reply's bytes (gRPC frames included).
async fn call(sr: &SendRequest<Bytes>, uri: &http::Uri, body: Bytes) -> Result<usize, BoxErr> {
    let mut rx = start(sr, uri, body).await?;
    let mut n = 0;
    while let Some(d) = rx.data().await {
        let d = d?;
        n += d.len();
        let _ = rx.flow_control().release_capacity(d.len());
    }
    match rx.trailers().await? {
        Some(t) if t.get("grpc-status").is_some_and(|s| s == "0") => Ok(n),
        Some(t) => Err(format!("grpc-status {:?} {:?}", t.get("grpc-status"), t.get("grpc-message")).into()),
        None if n == 0 => Ok(0), // trailers-only OK (checked in `start`)
        None => Err("no trailers".into()),
    }
}

#[derive(Default)]
struct Tally {
    lat_us: Vec<u32>,
    ok: u64,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, r: Result<usize, BoxErr>, lat: Duration) {
        match r {
            Ok(n) => {
                self.ok += 1;
                self.bytes += n as u64;
                self.lat_us.push(lat.as_micros().min(u32::MAX as u128) as u32);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    fn json(mut self, secs: f64, extra: &str) -> String {
        self.lat_us.sort_unstable();
        let q = |p: f64| -> u32 {
            if self.lat_us.is_empty() {
                0
            } else {
                self.lat_us[((p * self.lat_us.len() as f64) as usize).min(self.lat_us.len() - 1)]
            }
        };
        format!(
            "{{\"calls\": {}, \"errors\": {}, \"bytes\": {}, \"secs\": {secs:.3}, \"reqps\": {:.1}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}, \"first_error\": {:?}{extra}}}",
            self.ok,
            self.errors,
            self.bytes,
            self.ok as f64 / secs,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            self.lat_us.last().copied().unwrap_or(0),
            self.first_error.unwrap_or_default(),
        )
    }
}

/// conns x streams calls in flight, each issued as soon as the previous one ends.
async fn closed_loop(o: &Opts, body: Bytes) -> Result<String, BoxErr> {
    let conns = connections(o).await?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for sr in &conns {
        for _ in 0..o.streams {
            let (sr, uri, body, measuring, stop) = (sr.clone(), o.uri.clone(), body.clone(), measuring.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let r = call(&sr, &uri, body.clone()).await;
                    if measuring.load(Ordering::Relaxed) {
                        t.add(r, t0.elapsed());
                    }
                }
                t
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    go();
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in tasks {
        if let Ok(Ok(t)) = tokio::time::timeout(Duration::from_secs(10), t).await {
            all.lat_us.extend(t.lat_us);
            all.ok += t.ok;
            all.errors += t.errors;
            all.bytes += t.bytes;
            if all.first_error.is_none() {
                all.first_error = t.first_error;
            }
        }
    }
    Ok(all.json(secs, &format!(", \"mode\": \"closed\", \"in_flight\": {}", o.conns * o.streams)))
}

/// `rate` calls per second in total, round-robin over the connections, each
/// started at its scheduled time whether or not earlier ones have finished;
/// latency counts from the scheduled time.
async fn open_loop(o: &Opts, body: Bytes, rate: f64) -> Result<String, BoxErr> {
    let conns = connections(o).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let outstanding = Arc::new(AtomicU64::new(0));
    let mut dropped = 0u64;
    let t0 = tokio::time::Instant::now();
    let measure_from = t0 + Duration::from_secs_f64(o.warmup);
    let end = measure_from + Duration::from_secs_f64(o.secs);
    let mut said_go = false;
    let mut i = 0u64;
    loop {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        if !said_go && due >= measure_from {
            go();
            said_go = true;
        }
        i += 1;
        // More than 10k calls outstanding: the server is far behind; count, don't pile on.
        if outstanding.load(Ordering::Relaxed) > 10_000 {
            if due >= measure_from {
                dropped += 1;
            }
            continue;
        }
        let (sr, uri, body, tally, outstanding) =
            (conns[(i as usize) % conns.len()].clone(), o.uri.clone(), body.clone(), tally.clone(), outstanding.clone());
        outstanding.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let r = call(&sr, &uri, body).await;
            let lat = due.elapsed();
            if due >= measure_from {
                tally.lock().unwrap().add(r, lat);
            }
            outstanding.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut t = std::mem::take(&mut *tally.lock().unwrap());
    t.errors += dropped + outstanding.load(Ordering::Relaxed);
    Ok(t.json(o.secs, &format!(", \"mode\": \"open\", \"rate\": {rate}, \"dropped\": {dropped}")))
}

/// conns x streams server-streaming calls, each reading its endless reply.
async fn stream(o: &Opts, body: Bytes) -> Result<String, BoxErr> {
    let conns = connections(o).await?;
    let bytes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    for sr in &conns {
        for _ in 0..o.streams {
            let (sr, uri, body, bytes, errors) = (sr.clone(), o.uri.clone(), body.clone(), bytes.clone(), errors.clone());
            tokio::spawn(async move {
                let r: Result<(), BoxErr> = async {
                    let mut rx = start(&sr, &uri, body).await?;
                    while let Some(d) = rx.data().await {
                        let d = d?;
                        bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                        let _ = rx.flow_control().release_capacity(d.len());
                    }
                    Err("stream ended".into())
                }
                .await;
                if let Err(e) = r {
                    errors.lock().unwrap().push(e.to_string());
                }
            });
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let b0 = bytes.load(Ordering::Relaxed);
    go();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(o.secs)).await;
    let b = bytes.load(Ordering::Relaxed) - b0;
    let secs = t0.elapsed().as_secs_f64();
    let errors = errors.lock().unwrap();
    Ok(format!(
        "{{\"bytes\": {b}, \"secs\": {secs:.3}, \"mbps\": {:.1}, \"streams\": {}, \"errors\": {}, \"first_error\": {:?}}}",
        b as f64 / secs / 1e6,
        o.conns * o.streams,
        errors.len(),
        errors.first().cloned().unwrap_or_default()
    ))
}

/// `clients` clients connect at once, make one call each and close.
async fn storm(o: &Opts, clients: usize, resume: bool) -> Result<String, BoxErr> {
    let pki = o.tls.clone().ok_or("storm needs --tls PKI")?;
    let connectors: Vec<TlsConnector> = (0..clients).map(|_| connector(&pki, resume)).collect();
    let body = Bytes::from(frame(&message(1, 32)));
    let o = Arc::new(Opts { uri: o.uri.clone(), addr: o.addr.clone(), tls: None, window: 1 << 20, ..*o });
    let run = |connectors: Vec<TlsConnector>| {
        let (o, body) = (o.clone(), body.clone());
        async move {
            let tasks: Vec<_> = connectors
                .into_iter()
                .map(|c| {
                    let (o, body) = (o.clone(), body.clone());
                    tokio::spawn(async move {
                        let (sr, resumed) = connect(&o, Some(&c)).await?;
                        call(&sr, &o.uri, body).await?;
                        Ok::<_, BoxErr>(resumed)
                    })
                })
                .collect();
            let (mut ok, mut resumed, mut errors, mut first) = (0u64, 0u64, 0u64, String::new());
            for t in tasks {
                match t.await {
                    Ok(Ok(r)) => {
                        ok += 1;
                        resumed += r as u64;
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        if first.is_empty() {
                            first = e.to_string();
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first = e.to_string();
                    }
                }
            }
            (ok, resumed, errors, first)
        }
    };
    if resume {
        run(connectors.clone()).await;
        // Let the closes of the priming storm settle before the measured one.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    go();
    let t0 = Instant::now();
    let (ok, resumed, errors, first) = run(connectors).await;
    let secs = t0.elapsed().as_secs_f64();
    // Give the server a moment to see the closes (its CPU is read after this line).
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!(
        "{{\"clients\": {clients}, \"ok\": {ok}, \"resumed\": {resumed}, \"errors\": {errors}, \"secs\": {secs:.3}, \"first_error\": {first:?}}}"
    ))
}
