//! Admission control end to end: a limits file, real sockets, hot reload.
//! (Identity-based rules over mutual TLS are in tests/tls_admission.rs.)

mod common;
mod tls_support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use courier_core::*;
use tls_support::TempDir;

struct Limited {
    server: Server,
    addr: String,
    file: PathBuf,
    _dir: TempDir,
}

/// A server for `/courier.test.Test/*` (Rust-native, see common) and
/// `/courier.test.Host/*` (one host thread) with `yaml` as its limits file.
fn limited(yaml: &str, host_threads: usize) -> Limited {
    let dir = TempDir::new("srv");
    let file = dir.path().join("limits.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config = ServerConfig { workers: 1, limits_path: Some(file.clone()), ..Default::default() };
    let server = Server::new(config);
    let flag = Arc::new(std::sync::Mutex::new(None));
    server.register(desc("/courier.test.Test/UnaryUnary", MethodKind::Unary), unary_handler(flag.clone())).unwrap();
    server.register(desc("/courier.test.Test/Other", MethodKind::Unary), unary_handler(flag)).unwrap();
    let host = HostQueue::new();
    server.register(desc("/courier.test.Host/UnaryUnary", MethodKind::Unary), Handler::Host(host.clone())).unwrap();
    for _ in 0..host_threads {
        let q = host.clone();
        std::thread::spawn(move || host_worker(q));
    }
    let addr = server.listen("127.0.0.1:0").unwrap().to_string();
    server.start().unwrap();
    Limited { server, addr, file, _dir: dir }
}

async fn call(ch: &Channel, path: &str, msg: &'static [u8]) -> Result<Bytes, Status> {
    ch.unary(&Ctx::background(), &desc(path, MethodKind::Unary), Bytes::from_static(msg), &Default::default()).await.map(|r| r.message)
}

const TEST: &str = "/courier.test.Test/UnaryUnary";
const OTHER: &str = "/courier.test.Test/Other";
const HOST: &str = "/courier.test.Host/UnaryUnary";

/// Rewrites the file and waits until the server has applied it (or refused it).
async fn rewrite(l: &Limited, yaml: &str) -> limits::ReloadResult {
    let file = l.server.limits_file().unwrap();
    let before = file.reload_counts();
    // A different size guarantees a different stamp even within one mtime tick.
    std::fs::write(&l.file, yaml).unwrap();
    for _ in 0..200 {
        if file.reload_counts() != before {
            return file.last_reload();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the limits file was not reloaded within 2 s");
}

#[tokio::test]
async fn deny_unlimited_and_method_override() {
    let l = limited(
        "limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: 0\n    Other:\n      rate_acls:\n        unauthenticated: -1\n",
        0,
    );
    let ch = channel(&l.addr);
    let e = call(&ch, TEST, b"e").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("/courier.test.Test/UnaryUnary requires a client identity"), "{e:?}");
    assert_eq!(&call(&ch, OTHER, b"eok").await.unwrap()[..], b"eok", "the method entry overrides the default");
    // Rejections are counted by method and reason (stats are process-wide, so
    // other tests' servers of the same method may add to it: at least one).
    let stats = courier_core::stats::server_method(TEST).expect("stats of a registered method");
    assert!(stats.rejections(courier_core::stats::RejectReason::Unauthenticated) >= 1);
    // A service without an entry is open.
    let hc = channel(&l.addr);
    assert!(call(&hc, "/grpc.health.v1.Health/Check", b"").await.is_ok());
}

#[tokio::test]
async fn rate_limit_n_per_second_within_ten_percent() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    const RATE: f64 = 50.0;
    let l = limited("limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: 50\n", 0);
    let ch = channel(&l.addr);
    let (ok, limited_n) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let start = Instant::now();
    let run_for = Duration::from_secs(3);
    let mut tasks = vec![];
    for _ in 0..4 {
        let (ch, ok, limited_n) = (ch.clone(), ok.clone(), limited_n.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < run_for {
                match call(&ch, TEST, b"e").await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                        limited_n.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed) as f64;
    // A one-second burst of RATE tokens, then RATE per second.
    let expected = RATE + RATE * secs;
    assert!((ok - expected).abs() <= 0.1 * expected, "served {ok} in {secs:.2}s, expected {expected:.0} ±10%");
    assert!(limited_n.load(Ordering::Relaxed) > 0, "the load exceeded the rate");
}

#[tokio::test]
async fn queue_full_queue_timeout_and_deadline_while_queued() {
    let l = limited(
        "limits:\n  courier.test.Test:\n    UnaryUnary:\n      max_concurrency: 1\n      queue_size: 1\n      queue_timeout_ms: 150\n",
        0,
    );
    let ch = channel(&l.addr);
    let busy = tokio::spawn({
        let ch = ch.clone();
        async move { call(&ch, TEST, b"s600").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = tokio::spawn({
        let ch = ch.clone();
        async move {
            let t0 = Instant::now();
            (call(&ch, TEST, b"e").await, t0.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let full = call(&ch, TEST, b"e").await.unwrap_err();
    assert_eq!(full.code(), Code::Unavailable);
    assert!(full.message().contains("queue of /courier.test.Test/UnaryUnary is full"), "{full:?}");
    let (timed_out, waited) = queued.await.unwrap();
    let timed_out = timed_out.unwrap_err();
    assert_eq!(timed_out.code(), Code::Unavailable);
    assert!(timed_out.message().contains("timed out in the queue"), "{timed_out:?}");
    assert!(waited >= Duration::from_millis(140) && waited < Duration::from_millis(500), "{waited:?}");
    // A caller deadline shorter than the queue timeout: DEADLINE_EXCEEDED.
    let e = ch
        .unary(&Ctx::background().with_timeout(Duration::from_millis(50)), &desc(TEST, MethodKind::Unary), Bytes::from_static(b"e"), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert_eq!(&busy.await.unwrap().unwrap()[..], b"s600");
    // Everything has left: the next call runs at once.
    assert_eq!(&call(&ch, TEST, b"eafter").await.unwrap()[..], b"eafter");
}

#[tokio::test]
async fn host_methods_get_the_binding_concurrency_by_default() {
    // One host thread, `host_concurrency: 1` (as a binding with one thread
    // would set): a second call waits in the gate, LIFO, and times out there.
    let dir = TempDir::new("host");
    let file = dir.path().join("limits.yaml");
    std::fs::write(&file, "limits:\n  courier.test.Host:\n    default:\n      queue_timeout_ms: 100\n").unwrap();
    let server = Server::new(ServerConfig { workers: 1, limits_path: Some(file), host_concurrency: Some(1), ..Default::default() });
    let host = HostQueue::new();
    server.register(desc(HOST, MethodKind::Unary), Handler::Host(host.clone())).unwrap();
    std::thread::spawn(move || host_worker(host));
    let addr = server.listen("127.0.0.1:0").unwrap().to_string();
    server.start().unwrap();
    let ch = channel(&addr);
    let busy = tokio::spawn({
        let ch = ch.clone();
        async move { call(&ch, HOST, b"s400").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = call(&ch, HOST, b"e").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(&busy.await.unwrap().unwrap()[..], b"s400");
}

#[tokio::test]
async fn reload_allow_deny_allow_while_calling_loses_nothing() {
    let allow = "limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: -1\n";
    let deny = "limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: 0\n        # denied\n";
    let l = limited(allow, 0);
    let ch = channel(&l.addr);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let results = Arc::new(std::sync::Mutex::new(Vec::<(Instant, Result<(), Code>)>::new()));
    let caller = tokio::spawn({
        let (ch, stop, results) = (ch.clone(), stop.clone(), results.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let r = call(&ch, TEST, b"e").await.map(drop).map_err(|e| e.code());
                results.lock().unwrap().push((sent, r));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_deny = Instant::now();
    assert_eq!(rewrite(&l, deny).await.error, None);
    let applied_deny = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_allow = Instant::now();
    assert_eq!(rewrite(&l, allow).await.error, None);
    let applied_allow = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    caller.await.unwrap();
    let results = results.lock().unwrap();
    assert!(results.len() > 100, "the caller kept calling: {}", results.len());
    for (sent, r) in results.iter() {
        // Every call got an answer, and only OK or UNAUTHENTICATED (never a lost
        // or failed call); the answer matches the config in force when it was sent,
        // except in the short windows while a new file was being picked up.
        assert!(matches!(r, Ok(()) | Err(Code::Unauthenticated)), "{r:?}");
        let settled_allow = *sent < t_deny || *sent > applied_allow;
        let settled_deny = *sent > applied_deny && *sent < t_allow;
        if settled_allow {
            assert_eq!(*r, Ok(()), "call sent while allowed was misjudged");
        }
        if settled_deny {
            assert_eq!(*r, Err(Code::Unauthenticated), "call sent while denied was misjudged");
        }
    }
    assert_eq!(l.server.limits_file().unwrap().reload_counts(), (2, 0));
}

#[tokio::test]
async fn invalid_reload_is_refused_and_the_old_limits_stay() {
    let deny = "limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: 0\n";
    let l = limited(deny, 0);
    let ch = channel(&l.addr);
    assert_eq!(call(&ch, TEST, b"e").await.unwrap_err().code(), Code::Unauthenticated);
    let broken = "limits:\n  courier.test.Test:\n    default:\n      max_concurrency: 0\n      rate_acls:\n        unauthenticated: -1\n";
    let r = rewrite(&l, broken).await;
    let err = r.error.expect("refused");
    assert!(err.contains("limits.yaml:4: ") && err.contains("max_concurrency must be at least 1"), "{err}");
    assert_eq!(call(&ch, TEST, b"e").await.unwrap_err().code(), Code::Unauthenticated, "old limits still in force");
    let file = l.server.limits_file().unwrap();
    assert_eq!(file.reload_counts(), (0, 1));
    let json = file.to_json();
    assert_eq!(json["last_reload"]["ok"], false);
    assert!(json["last_reload"]["error"].as_str().unwrap().contains("max_concurrency"));
    // A typo in a method name of a served service is refused too.
    let typo = "limits:\n  courier.test.Test:\n    UnaryUnry:\n      max_concurrency: 2\n";
    let err = rewrite(&l, typo).await.error.expect("refused");
    assert!(err.contains(":3: service courier.test.Test has no method UnaryUnry"), "{err}");
    // Then a valid file is applied.
    let open = "limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: -1\n";
    assert_eq!(rewrite(&l, open).await.error, None);
    assert!(call(&ch, TEST, b"e").await.is_ok());
}

#[test]
fn invalid_file_at_start_is_an_error_naming_the_line() {
    let dir = TempDir::new("start");
    let file = dir.path().join("limits.yaml");
    std::fs::write(&file, "limits:\n  a.B:\n    M:\n      queue: stack\n").unwrap();
    let server = Server::new(ServerConfig { workers: 1, limits_path: Some(file), ..Default::default() });
    server.listen("127.0.0.1:0").unwrap();
    let e = server.start().unwrap_err();
    assert!(e.to_string().contains("limits.yaml:4: ") && e.to_string().contains("unknown variant `stack`"), "{e}");
}

#[tokio::test]
async fn sighup_reloads() {
    let l = limited("limits: {}\n", 0);
    let file = l.server.limits_file().unwrap();
    let (ok, _) = file.reload_counts();
    // SAFETY: raise() with a handled signal (signal-hook installed one).
    unsafe { libc_raise_sighup() };
    for _ in 0..200 {
        if file.reload_counts().0 > ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("SIGHUP did not reload the limits");
}

unsafe fn libc_raise_sighup() {
    extern "C" {
        fn raise(sig: i32) -> i32;
    }
    const SIGHUP: i32 = 1;
    raise(SIGHUP);
}
