//! `courier-test-server [--listen 127.0.0.1:0] [--workers N] [--ignore-stdin]`
//!
//! Serves `courier.test.Test` (and the built-in health service), prints
//! `PORT <n>` on stdout once listening, and shuts down gracefully (1 s grace)
//! on SIGTERM, SIGINT, or when stdin reaches end-of-file (so a test harness that
//! dies takes the server with it; `--ignore-stdin` turns that off).

use std::io::Write;
use std::time::Duration;

use courier_core::{Server, ServerConfig};

const USAGE: &str = "usage: courier-test-server [--listen HOST:PORT] [--workers N] [--ignore-stdin]";

fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut config = ServerConfig::default();
    let mut watch_stdin = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().unwrap_or_else(|| die("--listen needs HOST:PORT")),
            "--workers" => {
                let n = args.next().unwrap_or_else(|| die("--workers needs a number"));
                config.workers = n.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| die(&format!("bad --workers {n:?}")));
            }
            "--ignore-stdin" => watch_stdin = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    // Signal handlers go in before the PORT line: a harness may signal right after it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| die(&e.to_string()));
    let stop = {
        let _g = rt.enter();
        stop_signal(watch_stdin)
    };

    let server = Server::new(config);
    courier_testpeer::register(&server).unwrap_or_else(|e| die(&format!("cannot register: {e}")));
    let addr = server.listen(&listen).unwrap_or_else(|e| die(&e.to_string()));
    server.start().unwrap_or_else(|e| die(&format!("cannot start: {e}")));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "PORT {}", addr.port());
        let _ = out.flush();
    }

    let why = rt.block_on(stop);
    rt.shutdown_background();
    eprintln!("courier-test-server: {why}, shutting down");
    server.shutdown(Duration::from_secs(1));
}

/// Registers the stop conditions now; the future resolves when one happens.
fn stop_signal(watch_stdin: bool) -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).unwrap_or_else(|e| die(&format!("cannot watch SIGTERM: {e}")));
    let mut int = signal(SignalKind::interrupt()).unwrap_or_else(|e| die(&format!("cannot watch SIGINT: {e}")));
    // A plain thread reads stdin: tokio's stdin reads on a blocking-pool thread
    // that a runtime waits for when dropped, so it would hold up the exit.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    if watch_stdin {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    } else {
        std::mem::forget(tx);
    }
    async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = rx => "stdin closed",
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("courier-test-server: {msg}\n{USAGE}");
    std::process::exit(2)
}
