//! The TLS policy as a stock client sees it: `openssl s_client` against a
//! Courier server. Old protocol versions and weak suites refused, the
//! preferred suite chosen on TLS 1.2, no client certificate refused in strict
//! mode, saved sessions resumed.
//!
//! `OPENSSL_CONF=/dev/null` and `@SECLEVEL=0` take the system's own minimums
//! out of the way, so the refusals below are the server's (each one is also
//! seen in the server's counters).

mod tls_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use courier_core::tls::devca::IssueRequest;
use courier_core::tls::{tls_stats, ErrorReason, Side};
use courier_core::*;
use tls_support::*;

/// Counters are process-wide: one test at a time in this binary.
static SERIAL: Mutex<()> = Mutex::new(());

struct Fixture {
    pki: Pki,
    client: std::path::PathBuf,
    _server: Server,
    addr: String,
}

fn fixture(rsa_server: bool) -> Fixture {
    let pki = Pki::new(TD);
    let mut r = IssueRequest::new("spiffe://example.org/openssl-server");
    r.rsa = rsa_server;
    let s = pki.issue_req("server", &r);
    let client = pki.issue("client", "spiffe://example.org/openssl-client");
    let (server, addr) = start_server(ServerTls::new(server_tls_config(&pki, &s)).unwrap());
    Fixture { pki, client, _server: server, addr }
}

/// Runs `openssl s_client` with stdin held open for a moment (so it reads
/// what the server sends after the handshake: tickets, alerts), then closed.
fn s_client(f: &Fixture, with_cert: bool, args: &[&str]) -> (bool, String) {
    let mut cmd = vec![
        "s_client".to_string(),
        "-connect".into(),
        f.addr.clone(),
        "-CAfile".into(),
        f.pki.ca().display().to_string(),
        "-verify_return_error".into(),
    ];
    if with_cert {
        for (flag, p) in [("-cert", cert(&f.client)), ("-key", key(&f.client))] {
            cmd.push(flag.into());
            cmd.push(p.display().to_string());
        }
    }
    cmd.extend(args.iter().map(|s| s.to_string()));
    let mut child = Command::new("openssl")
        .args(&cmd)
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let stdin = child.stdin.take();
    std::thread::sleep(Duration::from_millis(400));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let ok = out.status.success() && text.contains("Verify return code: 0 (ok)") && !text.contains("alert");
    (ok, text)
}

fn errors(reason: ErrorReason) -> u64 {
    tls_stats().errors_of(Side::Server, reason)
}

fn wait_errors(reason: ErrorReason, above: u64) {
    for _ in 0..300 {
        if errors(reason) > above {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the server counted no {reason:?}: {:?}", tls_stats());
}

#[test]
fn old_protocol_versions_are_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture(false);
    for v in ["-tls1", "-tls1_1"] {
        let before = errors(ErrorReason::ProtocolVersion);
        let (ok, out) = s_client(&f, true, &[v, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!ok, "{v} must be refused:\n{out}");
        // rustls answers a ClientHello without TLS 1.2 or 1.3 with handshake_failure.
        assert!(out.contains("alert handshake failure") && out.contains("Cipher is (NONE)"), "{v}:\n{out}");
        wait_errors(ErrorReason::ProtocolVersion, before);
    }
}

#[test]
fn weak_suites_are_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture(false);
    // CBC without forward secrecy, GCM without forward secrecy, CBC with it.
    for suite in ["AES128-SHA", "AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256"] {
        let before = errors(ErrorReason::NoCommonParameters);
        let (ok, out) = s_client(&f, true, &["-tls1_2", "-cipher", &format!("{suite}@SECLEVEL=0")]);
        assert!(!ok, "{suite} must be refused:\n{out}");
        assert!(out.contains("alert handshake failure"), "{suite}:\n{out}");
        wait_errors(ErrorReason::NoCommonParameters, before);
    }
}

#[test]
fn preferred_suite_on_tls12_and_tls13() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture(false);
    // The client prefers AES-256 and ChaCha; the server's order wins.
    let client_order = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256";
    let (ok, out) = s_client(&f, true, &["-tls1_2", "-cipher", client_order, "-alpn", "h2"]);
    assert!(ok, "{out}");
    assert!(out.contains("New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"), "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    let (ok, out) = s_client(&f, true, &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"]);
    assert!(ok, "{out}");
    assert!(out.contains("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256"), "{out}");
    // With an RSA certificate the ECDHE-RSA twin is chosen.
    let f = fixture(true);
    let (ok, out) = s_client(&f, true, &["-tls1_2"]);
    assert!(ok, "{out}");
    assert!(out.contains("New, TLSv1.2, Cipher is ECDHE-RSA-AES128-GCM-SHA256"), "{out}");
}

#[test]
fn no_client_certificate_is_refused_in_strict_mode() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture(false);
    for v in ["-tls1_3", "-tls1_2"] {
        let before = errors(ErrorReason::NoClientCert);
        let (ok, out) = s_client(&f, false, &[v]);
        assert!(!ok, "{v}: {out}");
        assert!(out.contains("alert certificate required") || out.contains("alert handshake failure"), "{v}:\n{out}");
        wait_errors(ErrorReason::NoClientCert, before);
    }
}

#[test]
fn saved_sessions_resume() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture(false);
    let dir = TempDir::new("sess");
    for v in ["-tls1_3", "-tls1_2"] {
        let sess = dir.path().join(format!("{v}.pem"));
        let sess = sess.display().to_string();
        let (ok, out) = s_client(&f, true, &[v, "-sess_out", &sess]);
        assert!(ok && out.contains("New, TLSv1."), "{v}:\n{out}");
        assert!(Path::new(&sess).exists());
        let (ok, out) = s_client(&f, true, &[v, "-sess_in", &sess]);
        assert!(ok, "{v}:\n{out}");
        assert!(out.contains("Reused, TLSv1."), "{v} must resume:\n{out}");
    }
    let (full, resumed) = tls_stats().handshakes_with(Side::Server, "spiffe://example.org/openssl-client");
    assert!(full >= 2 && resumed >= 2, "the server saw the resumptions: {full} full, {resumed} resumed");
}
