//! The Rust peer against itself: every interop case in-process, and the server
//! binary's process contract (PORT line, clean exit on SIGTERM and stdin EOF).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_core::{Channel, ChannelConfig, Server, ServerConfig};
use courier_testpeer::cases::{self, Options, CASES};

fn start() -> (Server, String) {
    let server = Server::new(ServerConfig { workers: 2, ..Default::default() });
    courier_testpeer::register(&server).unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap().to_string();
    server.start().unwrap();
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_passes_against_the_rust_service() {
    let (_server, addr) = start();
    let ch = Channel::new(&addr, &ChannelConfig::default()).unwrap();
    let opts = Options { courier_server: true };
    for case in CASES {
        if let Err(e) = cases::run(&ch, case, &opts).await {
            panic!("case {case}: {e}");
        }
    }
    let mut out = Vec::new();
    cases::demo(&ch, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("DEADLINE_EXCEEDED"), "{out}");
    assert!(cases::run(&ch, "nope", &opts).await.unwrap_err().contains("unknown case"));
}

/// Starts the server binary and reads its `PORT <n>` line.
fn spawn_server() -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier-test-server"))
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.strip_prefix("PORT ").and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("bad line {line:?}"));
    (child, port)
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > within {
            let _ = child.kill();
            panic!("server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn client(port: u16, case: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_courier-test-client"))
        .args(["--target", &format!("127.0.0.1:{port}"), "--case", case, "--courier-server"])
        .output()
        .unwrap()
}

#[test]
fn server_binary_serves_and_exits_on_sigterm() {
    let (mut child, port) = spawn_server();
    let out = client(port, "unary");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok   unary"));
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
}

#[test]
fn server_binary_exits_when_stdin_closes() {
    let (mut child, port) = spawn_server();
    child.stdin.as_mut().unwrap().write_all(b"ignored\n").unwrap();
    assert!(client(port, "metadata").status.success());
    drop(child.stdin.take());
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
}

#[test]
fn client_binary_reports_failures_precisely() {
    // Nothing listens on this port: a precise failure and exit code 1.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let out = client(port, "unary");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL unary: UnaryUnary: expected success, got status UNAVAILABLE"), "{stdout}");
    // Bad usage: exit code 2.
    let out = Command::new(env!("CARGO_BIN_EXE_courier-test-client")).args(["--case", "unary"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
