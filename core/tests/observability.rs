//! Stats, the debug server and trace propagation over real sockets: a server
//! with `debug_addr`, real calls, then every endpoint read over HTTP/1.1.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use courier_core::*;
use http::HeaderMap;

fn desc(path: &str) -> MethodDesc {
    MethodDesc::new(path, MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(5))).unwrap()
}

/// One HTTP/1.1 request on a fresh connection; (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: debug\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let mut raw = Vec::new();
    if let Some(p) = addr.strip_prefix("unix:") {
        let mut s = std::os::unix::net::UnixStream::connect(p).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s.read_to_end(&mut raw).unwrap();
    } else {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s.read_to_end(&mut raw).unwrap();
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    // Chunked bodies are not expected: every debug response has a length.
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    (status, body.to_string())
}

fn server(debug_addr: &str, service: &str) -> (Server, String) {
    let s = Server::new(ServerConfig { workers: 1, debug_addr: Some(debug_addr.to_string()), ..Default::default() });
    s.register(
        desc(&format!("/{service}/Echo")),
        Handler::unary(|_ctx: Ctx, req: Bytes| async move {
            if &req[..] == b"slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(req)
        }),
    )
    .unwrap();
    s.register(desc(&format!("/{service}/Fail")), Handler::unary(|_ctx: Ctx, _req: Bytes| async move { Err(Status::not_found("nope")) }))
        .unwrap();
    let addr = s.listen("127.0.0.1:0").unwrap().to_string();
    s.start().unwrap();
    (s, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_endpoints_after_real_traffic() {
    let svc = "obs.test.Endpoints";
    let (s, addr) = server("127.0.0.1:0", svc);
    let dbg = s.debug_addr().expect("debug server started");
    assert!(dbg.starts_with("127.0.0.1:") && !dbg.ends_with(&addr[addr.rfind(':').unwrap()..]));
    let ch = Channel::new(&addr, &ChannelConfig::default()).unwrap();
    let ctx = Ctx::background();
    for _ in 0..20 {
        ch.unary(&ctx, &desc(&format!("/{svc}/Echo")), Bytes::from_static(b"hi"), &HeaderMap::new()).await.unwrap();
    }
    for _ in 0..3 {
        let e = ch.unary(&ctx, &desc(&format!("/{svc}/Fail")), Bytes::from_static(b"x"), &HeaderMap::new()).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    ch.unary(&ctx, &desc(&format!("/{svc}/Echo")), Bytes::from_static(b"slow"), &HeaderMap::new()).await.unwrap();

    let d = dbg.clone();
    let get = move |p: &str| http(&d, "GET", p, "");
    tokio::task::spawn_blocking(move || {
        let (st, m) = get("/metrics");
        assert_eq!(st, 200);
        assert!(m.contains(&format!("courier_server_requests_total{{service=\"{svc}\",method=\"Echo\",code=\"OK\"}} 21")), "{m}");
        assert!(m.contains(&format!("courier_server_requests_total{{service=\"{svc}\",method=\"Fail\",code=\"NOT_FOUND\"}} 3")));
        assert!(m.contains(&format!("courier_client_requests_total{{service=\"{svc}\",method=\"Fail\",code=\"NOT_FOUND\"}} 3")));
        assert!(m.contains(&format!("courier_server_latency_seconds_count{{service=\"{svc}\",method=\"Echo\"}} 21")));
        assert!(m.contains(&format!("courier_server_queue_wait_seconds_count{{service=\"{svc}\",method=\"Echo\"}} 21")));
        assert!(m.contains(&format!("courier_server_in_flight{{service=\"{svc}\",method=\"Echo\"}} 0")));
        assert!(m.contains("courier_server_client_requests_total{client=\"unauthenticated\"}"));
        assert!(m.contains("courier_build_info{"));

        let (st, info) = get("/info");
        assert_eq!(st, 200);
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["pid"], std::process::id());
        assert!(info["command_line"].as_array().unwrap().len() >= 1);
        assert!(info["git_hash"].as_str().unwrap().len() >= 7, "{info}");
        assert!(info["start_time_unix"].as_f64().unwrap() > 1.6e9);
        assert_eq!(info["languages"][0]["name"], "rust");

        let (st, cfg) = get("/config");
        assert_eq!(st, 200);
        let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        assert_eq!(cfg["server"]["workers"], 1);
        assert!(cfg["methods"].as_array().unwrap().iter().any(|m| m["path"] == format!("/{svc}/Echo")));
        assert!(cfg.get("limits").is_some());

        let (st, rpcz) = get("/rpcz");
        assert_eq!(st, 200);
        let rpcz: serde_json::Value = serde_json::from_str(&rpcz).unwrap();
        assert!(rpcz["listeners"].as_array().unwrap().iter().any(|l| l["kind"] == "grpc" && l["addr"] == addr));
        assert!(rpcz["listeners"].as_array().unwrap().iter().any(|l| l["kind"] == "debug"));
        let conn = rpcz["connections"].as_array().unwrap().iter().find(|c| c["local"] == addr).expect("our connection").clone();
        assert_eq!(conn["streams_started"], 24, "{conn}");
        assert_eq!(conn["peer_identity"], "unauthenticated");
        let echo = rpcz["server_methods"].as_array().unwrap().iter().find(|m| m["service"] == svc && m["method"] == "Echo").unwrap().clone();
        assert_eq!(echo["succeeded"], 21);
        assert!(echo["last_call_unix"].as_f64().unwrap() > 1.6e9);
        let chan = rpcz["channels"].as_array().unwrap().iter().find(|c| c["target"] == addr).unwrap().clone();
        assert_eq!((chan["started"].as_u64(), chan["failed"].as_u64()), (Some(24), Some(3)));
        assert!(rpcz["recent_failed"].as_array().unwrap().iter().any(|c| c["method"] == format!("/{svc}/Fail") && c["code"] == "NOT_FOUND"));
        assert!(rpcz["recent_slow"].as_array().unwrap().iter().any(|c| c["method"] == format!("/{svc}/Echo")));

        let (st, deps) = get("/deps");
        assert_eq!(st, 200);
        let deps: serde_json::Value = serde_json::from_str(&deps).unwrap();
        assert!(deps["callers"].as_array().unwrap().iter().any(|e| e["caller"] == "unauthenticated" && e["method"] == "Fail" && e["errors"] == 3));
        assert!(deps["callees"].as_array().unwrap().iter().any(|e| e["target"] == addr && e["method"] == "Echo"));
        let (_, dot) = get("/deps?format=dot");
        assert!(dot.starts_with("digraph") && dot.contains(&format!("\"{svc}/Fail\"")), "{dot}");
        let (_, svg) = get("/deps?format=svg");
        assert!(svg.starts_with("<svg") && svg.contains("Fail"));

        let (st, page) = get("/");
        assert_eq!(st, 200);
        assert!(page.contains("<!doctype html>") && page.contains(svc));
        // No external assets: nothing is loaded from another origin.
        for bad in ["src=\"http", "href=\"http", "<link", "@import", "url(http"] {
            assert!(!page.contains(bad), "{bad}");
        }

        let (st, _) = get("/nope");
        assert_eq!(st, 404);

        let (st, prof) = get("/pprof/profile?seconds=1&format=text");
        assert_eq!(st, 200, "{prof}");
        let (st, _) = get("/pprof/profile?seconds=1");
        assert_eq!(st, 200);
        let (st, _) = get("/pprof/profile?seconds=0");
        assert_eq!(st, 400);
    })
    .await
    .unwrap();
    s.shutdown(Duration::from_secs(1));
    assert!(std::net::TcpStream::connect(&dbg).is_err(), "debug server stops with the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_unix_socket() {
    let dir = std::env::temp_dir().join(format!("courier-obs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("debug.sock");
    let (s, _addr) = server(&format!("unix:{}", sock.display()), "obs.test.Writes");
    let unix = s.debug_addr().unwrap();
    assert_eq!(unix, format!("unix:{}", sock.display()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    let tcp = courier_core::debug::DebugServer::start("127.0.0.1:0", Default::default()).unwrap();
    let tcp_addr = tcp.addr().to_string();
    tokio::task::spawn_blocking(move || {
        let (st, body) = http(&tcp_addr, "PUT", "/loglevel?module=courier_core::server&level=debug", "");
        assert_eq!(st, 403, "{body}");
        assert!(body.contains("unix socket"));
        let (st, body) = http(&unix, "PUT", "/loglevel?module=obs_test_module&level=trace", "");
        assert_eq!(st, 200, "{body}");
        let (_, levels) = http(&unix, "GET", "/loglevel", "");
        assert!(levels.contains("obs_test_module=trace"), "{levels}");
        // Also readable over TCP; PUT with a bad level is refused precisely.
        let (_, levels) = http(&tcp_addr, "GET", "/loglevel", "");
        assert!(levels.contains("obs_test_module=trace"), "{levels}");
        let (st, body) = http(&unix, "PUT", "/loglevel?module=x&level=loud", "");
        assert_eq!(st, 400);
        assert!(body.contains("unknown level"));
        let (st, _) = http(&unix, "PUT", "/loglevel?module=obs_test_module&level=reset", "");
        assert_eq!(st, 200);
        let (_, levels) = http(&unix, "GET", "/loglevel", "");
        assert!(!levels.contains("obs_test_module"), "{levels}");
        // Reads are refused as writes elsewhere: PUT on a read-only page.
        let (st, _) = http(&unix, "PUT", "/metrics", "");
        assert_eq!(st, 405);
    })
    .await
    .unwrap();
    drop(tcp);
    s.shutdown(Duration::from_secs(1));
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}

#[test]
fn debug_server_refuses_non_loopback_and_the_rpc_port() {
    assert!(courier_core::debug::DebugServer::start("0.0.0.0:0", Default::default()).is_err());
    let s = Server::new(ServerConfig { workers: 1, ..Default::default() });
    let addr = s.listen("127.0.0.1:0").unwrap();
    drop(s);
    let s = Server::new(ServerConfig { workers: 1, debug_addr: Some(addr.to_string()), ..Default::default() });
    s.listen(&addr.to_string()).unwrap();
    let e = s.start().unwrap_err().to_string();
    assert!(e.contains("never shares the RPC port"), "{e}");
}

#[test]
fn extension_handlers_are_served() {
    courier_core::debug::register_handler(
        "/ext/hello",
        "hello",
        std::sync::Arc::new(|r: courier_core::debug::DebugRequest| {
            courier_core::debug::DebugResponse::text(200, format!("hello {}", r.param("who").unwrap_or_default()))
        }),
    );
    let d = courier_core::debug::DebugServer::start("127.0.0.1:0", Default::default()).unwrap();
    let (st, body) = http(d.addr(), "GET", "/ext/hello?who=ops", "");
    assert_eq!((st, body.as_str()), (200, "hello ops"));
    let (_, page) = http(d.addr(), "GET", "/", "");
    assert!(page.contains("/ext/hello"));
}
