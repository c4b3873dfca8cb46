//! `courier-test-client --target HOST:PORT --case NAME [--courier-server]
//!    [--tls-ca PATH --server-identity SPIFFE_ID [--tls-cert PATH --tls-key PATH]]`
//!
//! Runs interop cases with a Courier `Channel` against any server implementing
//! `courier.test.Test`. `--case all` runs every case; `--case demo` prints a short
//! transcript of a few calls. Exits 0 on success, 1 with "expected ..., got ..."
//! on the first failure of each case, 2 on bad usage.

use std::time::{Duration, Instant};

use courier_core::{Channel, ChannelConfig};
use courier_testpeer::cases::{self, Options, CASES};

const USAGE: &str = "usage: courier-test-client --target HOST:PORT --case NAME|all|demo [--courier-server] \
                     [--tls-ca PATH --server-identity SPIFFE_ID [--tls-cert PATH --tls-key PATH]]";

/// No case should take this long; a hang is reported as a failure.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let (mut target, mut case) = (None, None);
    let mut opts = Options::default();
    let (mut tls_ca, mut tls_cert, mut tls_key, mut server_identity) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--target" => target = Some(args.next().unwrap_or_else(|| usage("--target needs HOST:PORT"))),
            "--case" => case = Some(args.next().unwrap_or_else(|| usage("--case needs a name"))),
            "--courier-server" => opts.courier_server = true,
            "--tls-ca" => tls_ca = Some(args.next().unwrap_or_else(|| usage("--tls-ca needs a path"))),
            "--tls-cert" => tls_cert = Some(args.next().unwrap_or_else(|| usage("--tls-cert needs a path"))),
            "--tls-key" => tls_key = Some(args.next().unwrap_or_else(|| usage("--tls-key needs a path"))),
            "--server-identity" => server_identity = Some(args.next().unwrap_or_else(|| usage("--server-identity needs a SPIFFE ID"))),
            "--list" => {
                println!("{}", CASES.join("\n"));
                return;
            }
            "-h" | "--help" => {
                println!("{USAGE}\ncases: {}, all, demo", CASES.join(", "));
                return;
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let target = target.unwrap_or_else(|| usage("--target is required"));
    // Mutual TLS when a CA is given: the server is checked by its SPIFFE ID.
    let tls = tls_ca.map(|ca| {
        let id = server_identity.as_deref().unwrap_or_else(|| usage("--tls-ca needs --server-identity"));
        let expected = id.parse().unwrap_or_else(|e| usage(&format!("--server-identity: {e}")));
        let mut c = courier_core::ClientTlsConfig::new(ca, expected);
        if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
            c = c.with_client_cert(cert, key);
        }
        courier_core::ClientTls::new(c).unwrap_or_else(|e| usage(&e.to_string()))
    });
    let case = case.unwrap_or_else(|| usage("--case is required"));
    let names: Vec<&str> = match case.as_str() {
        "all" => CASES.to_vec(),
        "demo" => vec!["demo"],
        c if CASES.contains(&c) => vec![c],
        c => usage(&format!("unknown case {c:?}; cases: {}, all, demo", CASES.join(", "))),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("cannot start a runtime: {e}")));
    let failed = rt.block_on(async {
        let ch = match Channel::new(&target, &ChannelConfig { tls, ..ChannelConfig::default() }) {
            Ok(ch) => ch,
            Err(e) => usage(&e.to_string()),
        };
        let mut failed = 0;
        for name in &names {
            let t0 = Instant::now();
            let r = if *name == "demo" {
                let mut out = std::io::stdout();
                tokio::time::timeout(CASE_TIMEOUT, cases::demo(&ch, &mut out)).await
            } else {
                tokio::time::timeout(CASE_TIMEOUT, cases::run(&ch, name, &opts)).await
            };
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(Ok(())) => println!("ok   {name} ({ms:.0} ms)"),
                Ok(Err(e)) => {
                    failed += 1;
                    println!("FAIL {name}: {e}");
                }
                Err(_) => {
                    failed += 1;
                    println!("FAIL {name}: did not finish within {} s", CASE_TIMEOUT.as_secs());
                }
            }
        }
        failed
    });
    if names.len() > 1 {
        println!("{} passed, {} failed", names.len() - failed, failed);
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

fn usage(msg: &str) -> ! {
    eprintln!("courier-test-client: {msg}\n{USAGE}");
    std::process::exit(2)
}
