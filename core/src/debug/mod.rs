//! The debug (admin) server: its own listener, never the RPC port — loopback
//! TCP (`127.0.0.1:PORT`) or a unix socket (`unix:/path`, mode 0600).
//!
//! | path | what |
//! |---|---|
//! | `/` | admin page: plain HTML, no external assets, refreshing figures |
//! | `/metrics` | Prometheus text, `courier_` prefix |
//! | `/info` | version, git hash, build time, command line, pid, start time, languages |
//! | `/config` | server settings, registered methods, limits in force and last reload |
//! | `/loglevel` | GET the levels; PUT `?module=M&level=L` (or a directive body) |
//! | `/rpcz` | channelz-like JSON: listeners, connections, calls per method and channel, recent slow and failed calls |
//! | `/deps` | callers → methods and this process's callees: JSON, `?format=dot`, `?format=svg` |
//! | `/pprof/profile?seconds=N` | CPU profile of the process (pprof protobuf; `&format=text` for folded text) |
//! | `/summary.json` | the admin page's data: rates, errors and p99 over the last seconds |
//! | extensions | registered by bindings: `/py/stacks`, `/py/gc`, … |
//!
//! Writes (any method but GET/HEAD) are served only over the unix socket
//! (file permissions decide who may connect) or to a peer that presented a
//! client certificate; over plain TCP they are refused with 403.
//!
//! The core stays language-neutral: bindings add their pages with
//! [`register_handler`] and name their language with [`register_language`].

mod logging;
mod page;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::watch;

pub use logging::{init as init_logging, levels as log_levels, set_level as set_log_level};

use crate::stats;

/// The git commit the core was built from (see `core/build.rs`).
pub const GIT_HASH: &str = env!("COURIER_GIT_HASH");
const BUILD_UNIX: &str = env!("COURIER_BUILD_UNIX");
const RUSTC_VERSION: &str = env!("COURIER_RUSTC_VERSION");

/// Largest request body the debug server reads.
const MAX_BODY: usize = 1 << 20;
/// Longest CPU profile.
const MAX_PROFILE_SECONDS: u64 = 300;

// ---------------------------------------------------------------------------
// Process facts

/// Process start time (seconds since the Unix epoch): from `/proc` on Linux,
/// else the first time anything asked.
pub fn process_start_unix() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| proc_start_unix().unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)))
}

fn proc_start_unix() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime, clock ticks since boot), counted after the ")" of the command name.
    let after = &stat[stat.rfind(')')? + 2..];
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as f64)
}

static LANGUAGES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Names a language runtime loaded in this process (shown by `/info`).
pub fn register_language(name: &str, version: &str) {
    let mut l = LANGUAGES.lock().unwrap_or_else(|e| e.into_inner());
    if !l.iter().any(|(n, _)| n == name) {
        l.push((name.to_string(), version.to_string()));
    }
}

fn languages() -> Vec<(String, String)> {
    let mut l = vec![("rust".to_string(), RUSTC_VERSION.trim_start_matches("rustc ").to_string())];
    l.extend(LANGUAGES.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
    l
}

/// `/info` as JSON.
pub fn info_json() -> Value {
    let start = process_start_unix();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "git_hash": GIT_HASH,
        "build_time_unix": BUILD_UNIX.parse::<u64>().unwrap_or(0),
        "command_line": std::env::args().collect::<Vec<_>>(),
        "pid": std::process::id(),
        "start_time_unix": start,
        "uptime_seconds": (now - start).max(0.0),
        "languages": languages().into_iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
        "tracing": {"enabled": crate::trace::enabled(), "sampling_ratio": crate::trace::sampling_ratio(), "spans_started": crate::trace::spans_started()},
    })
}

// ---------------------------------------------------------------------------
// Extension points

/// A request to an extension handler.
#[derive(Clone, Debug)]
pub struct DebugRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    pub body: Vec<u8>,
    /// True over the unix socket or with a client certificate; handlers of
    /// writes never see false (the server refuses those first).
    pub can_write: bool,
}

impl DebugRequest {
    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        query_param(&self.query, name)
    }
}

/// An extension handler's answer.
#[derive(Clone, Debug)]
pub struct DebugResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl DebugResponse {
    pub fn text(status: u16, body: impl Into<String>) -> DebugResponse {
        DebugResponse { status, content_type: "text/plain; charset=utf-8".into(), body: body.into().into_bytes() }
    }
    pub fn json(status: u16, body: &Value) -> DebugResponse {
        DebugResponse { status, content_type: "application/json".into(), body: body.to_string().into_bytes() }
    }
}

/// An extension page; runs on a blocking thread (it may wait, e.g. for a GIL).
pub type DebugHandler = Arc<dyn Fn(DebugRequest) -> DebugResponse + Send + Sync>;

struct Ext {
    path: String,
    title: String,
    handler: DebugHandler,
}

static EXTENSIONS: Mutex<Vec<Ext>> = Mutex::new(Vec::new());

/// Adds (or replaces) a page at `path` on every debug server of the process.
/// `title` is its link text on the admin page.
pub fn register_handler(path: &str, title: &str, handler: DebugHandler) {
    let mut e = EXTENSIONS.lock().unwrap_or_else(|e| e.into_inner());
    e.retain(|x| x.path != path);
    e.push(Ext { path: path.to_string(), title: title.to_string(), handler });
}

fn extension(path: &str) -> Option<DebugHandler> {
    EXTENSIONS.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|x| x.path == path).map(|x| x.handler.clone())
}

fn extension_links() -> Vec<(String, String)> {
    EXTENSIONS.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|x| (x.path.clone(), x.title.clone())).collect()
}

type ConfigSource = Arc<dyn Fn() -> Value + Send + Sync>;
static CONFIG_SOURCES: Mutex<Vec<(String, ConfigSource)>> = Mutex::new(Vec::new());

/// Adds a section to `/config` (e.g. `"limits"`: the limits in force and the
/// last reload result, from the limits module). Replaces a section of the
/// same name.
pub fn set_config_source(name: &str, source: impl Fn() -> Value + Send + Sync + 'static) {
    let mut s = CONFIG_SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    s.retain(|(n, _)| n != name);
    s.push((name.to_string(), Arc::new(source)));
}

/// `/config` as JSON: every section, then the registered methods.
pub fn config_json(ctx: Option<&DebugContext>) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(s) = ctx.and_then(|c| c.server_config.as_ref()) {
        out.insert("server".into(), s.clone());
    }
    if let Some(l) = ctx.and_then(|c| c.limits.as_ref()) {
        out.insert("limits".into(), l());
    }
    let sources: Vec<(String, ConfigSource)> = CONFIG_SOURCES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (name, f) in sources {
        out.insert(name, f());
    }
    if !out.contains_key("limits") {
        out.insert(
            "limits".into(),
            json!({"in_force": null, "last_reload": null, "note": "no limits config is loaded in this process: every service is open with defaults"}),
        );
    }
    let methods: Vec<Value> = stats::server_methods()
        .iter()
        .map(|m| {
            let d = m.desc();
            let deadline = match d.deadline_policy() {
                crate::method::DeadlinePolicy::Default(t) => json!(t.as_secs_f64()),
                crate::method::DeadlinePolicy::NoDeadline => Value::Null,
            };
            json!({"path": d.path(), "kind": format!("{:?}", d.kind()), "default_deadline_seconds": deadline, "app_error_enum": d.app_error_enum()})
        })
        .collect();
    out.insert("methods".into(), Value::Array(methods));
    out.insert(
        "stats".into(),
        json!({"max_clients": stats::max_clients(), "tracing_enabled": crate::trace::enabled(), "sampling_ratio": crate::trace::sampling_ratio()}),
    );
    out.insert("log_levels".into(), json!(logging::levels_string()));
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// /rpcz and /deps

fn unix(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

/// `/rpcz` as JSON.
pub fn rpcz_json() -> Value {
    let listeners: Vec<Value> = stats::listeners().iter().map(|l| json!({"kind": l.kind, "addr": l.addr})).collect();
    let connections: Vec<Value> = stats::connections()
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "remote": c.remote.map(|a| a.to_string()),
                "local": c.local.map(|a| a.to_string()),
                "peer_identity": c.peer_name().unwrap_or(stats::UNAUTHENTICATED_LABEL),
                "opened_unix": unix(Some(c.opened)),
                "streams_started": c.streams_started(),
                "streams_active": c.streams_active(),
            })
        })
        .collect();
    let method = |m: &stats::MethodSummary| {
        json!({
            "service": m.service, "method": m.method,
            "started": m.requests as i64 + m.in_flight,
            "succeeded": m.requests - m.errors, "failed": m.errors,
            "in_flight": m.in_flight, "queue_size": m.queue_size,
            "last_call_unix": unix(m.last_call),
            "p99_seconds": m.latency.quantile(0.99),
        })
    };
    let server_methods: Vec<Value> = stats::method_summaries().iter().map(method).collect();
    let client_methods: Vec<Value> = stats::client_method_summaries().iter().map(method).collect();
    let channels: Vec<Value> = stats::channel_summaries()
        .into_iter()
        .map(|(target, started, ok, failed, inflight, last)| {
            json!({"target": target, "started": started, "succeeded": ok, "failed": failed, "in_flight": inflight, "last_call_unix": unix(last)})
        })
        .collect();
    let rec = |r: &stats::CallRecord| {
        json!({
            "method": &*r.method, "code": r.code.name(), "peer_identity": &*r.peer,
            "latency_seconds": r.latency.as_secs_f64(), "at_unix": unix(Some(r.at)),
            "request_id": r.request_id.as_deref(),
        })
    };
    json!({
        "listeners": listeners,
        "connections": connections,
        "server_methods": server_methods,
        "channels": channels,
        "client_methods": client_methods,
        "recent_failed": stats::recent_failed().iter().rev().map(rec).collect::<Vec<_>>(),
        "recent_slow": stats::recent_slow().iter().rev().map(rec).collect::<Vec<_>>(),
    })
}

/// The services this process serves (from its registered methods, health excluded).
fn own_services() -> Vec<String> {
    let mut s: Vec<String> = stats::server_methods()
        .iter()
        .map(|m| m.desc().service().to_string())
        .filter(|s| s != "grpc.health.v1.Health")
        .collect();
    s.dedup();
    s.sort();
    s.dedup();
    s
}

/// `/deps` as JSON: who calls this process (caller identity → method) and
/// what it calls (through its channels).
pub fn deps_json() -> Value {
    let callers: Vec<Value> = stats::callers()
        .iter()
        .map(|e| json!({"caller": e.caller, "service": e.service, "method": e.method, "calls": e.calls, "errors": e.errors}))
        .collect();
    let callees: Vec<Value> = stats::callees()
        .iter()
        .map(|e| json!({"target": e.target, "service": e.service, "method": e.method, "calls": e.calls, "errors": e.errors}))
        .collect();
    json!({
        "process": {"pid": std::process::id(), "command_line": std::env::args().collect::<Vec<_>>(), "services": own_services()},
        "callers": callers,
        "callees": callees,
    })
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `/deps` as Graphviz DOT: caller identities → methods (clustered by service)
/// → the services this process calls.
pub fn deps_dot() -> String {
    use std::fmt::Write;
    let mut out = String::from("digraph courier_deps {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n");
    let callers = stats::callers();
    let mut by_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &callers {
        let v = by_service.entry(e.service.clone()).or_default();
        if !v.contains(&e.method) {
            v.push(e.method.clone());
        }
    }
    for (i, (svc, methods)) in by_service.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster_{i} {{\n    label={};", dot_id(svc));
        for m in methods {
            let _ = writeln!(out, "    {} [label={}, shape=box];", dot_id(&format!("{svc}/{m}")), dot_id(m));
        }
        out.push_str("  }\n");
    }
    let mut seen = Vec::new();
    for e in &callers {
        if !seen.contains(&e.caller) {
            let _ = writeln!(out, "  {} [shape=ellipse];", dot_id(&format!("client:{}", e.caller)));
            seen.push(e.caller.clone());
        }
        let color = if e.errors > 0 { ", color=red" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{color}];",
            dot_id(&format!("client:{}", e.caller)),
            dot_id(&format!("{}/{}", e.service, e.method)),
            dot_id(&format!("{} calls, {} errors", e.calls, e.errors))
        );
    }
    let callees = stats::callees();
    if !callees.is_empty() {
        let me = own_services().join(", ");
        let me = if me.is_empty() { format!("pid {}", std::process::id()) } else { me };
        let _ = writeln!(out, "  \"self\" [label={}, shape=doubleoctagon];", dot_id(&me));
        for e in &callees {
            let _ = writeln!(
                out,
                "  \"self\" -> {} [label={}];",
                dot_id(&format!("{}/{}", e.service, e.method)),
                dot_id(&format!("{} calls, {} errors via {}", e.calls, e.errors, e.target))
            );
        }
    }
    out.push_str("}\n");
    out
}

// ---------------------------------------------------------------------------
// What a Server keeps

/// How the debug server reads a server's limits: `/config` shows `json()`
/// (limits in force, last reload), `/metrics` the (applied, refused) reloads.
#[derive(Clone)]
pub struct LimitsView {
    json: Arc<dyn Fn() -> Value + Send + Sync>,
    reloads: Arc<dyn Fn() -> (u64, u64) + Send + Sync>,
}

impl LimitsView {
    pub fn new(json: impl Fn() -> Value + Send + Sync + 'static, reloads: impl Fn() -> (u64, u64) + Send + Sync + 'static) -> LimitsView {
        LimitsView { json: Arc::new(json), reloads: Arc::new(reloads) }
    }
}

/// A server's listeners in `/rpcz` and its debug server (if configured).
#[derive(Default)]
pub(crate) struct ServerObs {
    listeners: stats::ListenerGroup,
    debug: Mutex<Option<DebugServer>>,
}

impl ServerObs {
    pub(crate) fn listening(&self, addr: SocketAddr) {
        self.listeners.add("grpc", addr.to_string());
    }

    /// Starts the debug server of `config.debug_addr`, if any; never on an RPC address.
    pub(crate) fn start_debug(
        &self,
        config: &crate::server::ServerConfig,
        rpc: &[SocketAddr],
        limits: Option<LimitsView>,
    ) -> Result<(), crate::server::ServerError> {
        let Some(addr) = &config.debug_addr else { return Ok(()) };
        let err = |source: std::io::Error| crate::server::ServerError::Bind { addr: addr.clone(), source };
        if let Ok(DebugAddr::Tcp(a)) = DebugAddr::parse(addr) {
            if a.port() != 0 && rpc.iter().any(|r| r.port() == a.port() && (r.ip() == a.ip() || r.ip().is_unspecified())) {
                return Err(err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the debug server never shares the RPC port")));
            }
        }
        let server_config = json!({
            "workers": config.workers,
            "max_recv_message_size": config.max_recv_message_size,
            "http2": format!("{:?}", config.http2),
            "tls": config.tls.is_some(),
            "debug_addr": addr,
            "listening": rpc.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        });
        let ctx = DebugContext {
            server_config: Some(server_config),
            limits: limits.as_ref().map(|l| l.json.clone()),
            limits_reloads: limits.map(|l| l.reloads),
        };
        let d = DebugServer::start(addr, ctx).map_err(err)?;
        *self.debug.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        Ok(())
    }

    pub(crate) fn debug_addr(&self) -> Option<String> {
        self.debug.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|d| d.addr().to_string())
    }

    pub(crate) fn stop(&self) {
        let d = self.debug.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(d);
        self.listeners.clear();
    }
}

// ---------------------------------------------------------------------------
// The server

/// Where a debug server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebugAddr {
    /// Loopback TCP only.
    Tcp(SocketAddr),
    /// A unix socket path (created with mode 0600, removed at shutdown).
    Unix(PathBuf),
}

impl DebugAddr {
    /// `127.0.0.1:PORT`, `[::1]:PORT`, `localhost:PORT` or `unix:/path`.
    pub fn parse(s: &str) -> Result<DebugAddr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("debug address unix: needs a path".into());
            }
            return Ok(DebugAddr::Unix(PathBuf::from(p)));
        }
        let s2 = s.strip_prefix("localhost:").map(|p| format!("127.0.0.1:{p}"));
        let addr: SocketAddr = s2
            .as_deref()
            .unwrap_or(s)
            .parse()
            .map_err(|_| format!("invalid debug address {s:?}: expected 127.0.0.1:PORT or unix:/path"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("debug address {s:?} is not loopback: the debug server listens on loopback TCP or a unix socket only"));
        }
        Ok(DebugAddr::Tcp(addr))
    }
}

/// What a debug server knows about the RPC server it belongs to.
#[derive(Clone, Default)]
pub struct DebugContext {
    /// The RPC server's settings, for `/config`.
    pub server_config: Option<Value>,
    /// The limits in force and the last reload result, for `/config`.
    pub limits: Option<Arc<dyn Fn() -> Value + Send + Sync>>,
    /// (applied, refused) reloads of the limits file, for `/metrics`.
    pub limits_reloads: Option<Arc<dyn Fn() -> (u64, u64) + Send + Sync>>,
}

/// A running debug server; stops when dropped.
pub struct DebugServer {
    addr: String,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    unix_path: Option<PathBuf>,
    _listeners: stats::ListenerGroup,
}

struct Shared {
    ctx: DebugContext,
    window: Mutex<page::Window>,
}

#[derive(Clone, Copy)]
struct Peer {
    can_write: bool,
}

enum AnyListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl DebugServer {
    /// Binds `addr` and starts serving on a thread of its own. Installs the
    /// process's log subscriber if none is (so `/loglevel` works).
    pub fn start(addr: &str, ctx: DebugContext) -> std::io::Result<DebugServer> {
        let parsed = DebugAddr::parse(addr).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        logging::init("warn");
        let _ = process_start_unix();
        let (std_tcp, std_unix, shown, unix_path) = match &parsed {
            DebugAddr::Tcp(a) => {
                let l = std::net::TcpListener::bind(a)?;
                l.set_nonblocking(true)?;
                let shown = l.local_addr()?.to_string();
                (Some(l), None, shown, None)
            }
            DebugAddr::Unix(p) => {
                // A stale socket from an earlier run: remove it (only if it is a socket).
                if let Ok(md) = std::fs::symlink_metadata(p) {
                    use std::os::unix::fs::FileTypeExt;
                    if md.file_type().is_socket() {
                        let _ = std::fs::remove_file(p);
                    }
                }
                let l = std::os::unix::net::UnixListener::bind(p)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
                l.set_nonblocking(true)?;
                (None, Some(l), format!("unix:{}", p.display()), Some(p.clone()))
            }
        };
        let listeners = stats::ListenerGroup::default();
        listeners.add("debug", shown.clone());
        let shared = Arc::new(Shared { ctx, window: Mutex::new(page::Window::default()) });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new().name("courier-debug".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let l = match (std_tcp, std_unix) {
                    (Some(t), _) => tokio::net::TcpListener::from_std(t).map(AnyListener::Tcp),
                    (_, Some(u)) => tokio::net::UnixListener::from_std(u).map(AnyListener::Unix),
                    _ => unreachable!("one listener is bound"),
                };
                let l = match l {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                serve(l, shared, stop_rx).await;
            });
        })?;
        ready_rx.recv().unwrap_or_else(|_| Err(std::io::Error::other("debug server thread died")))?;
        Ok(DebugServer { addr: shown, stop: Some(stop_tx), thread: Some(thread), unix_path, _listeners: listeners })
    }

    /// `127.0.0.1:PORT` or `unix:/path`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops serving and waits for the thread.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.unix_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for DebugServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(l: AnyListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // The admin page's rates and p99 come from one sample per second.
    let sampler = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let s = page::Sample::take();
                shared.window.lock().unwrap_or_else(|e| e.into_inner()).push(s);
            }
        })
    };
    loop {
        tokio::select! {
            r = accept(&l) => match r {
                Ok((io, peer)) => {
                    let shared = shared.clone();
                    let mut stop = stop.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(shared.clone(), peer, req));
                        let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.changed() => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "debug server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    sampler.abort();
}

type Io = TokioIo<Box<dyn AsyncIo>>;
trait AsyncIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AsyncIo for T {}

async fn accept(l: &AnyListener) -> std::io::Result<(Io, Peer)> {
    match l {
        AnyListener::Tcp(t) => {
            let (s, _) = t.accept().await?;
            let _ = s.set_nodelay(true);
            // Plain TCP: no client certificate, so no writes.
            Ok((TokioIo::new(Box::new(s) as Box<dyn AsyncIo>), Peer { can_write: false }))
        }
        AnyListener::Unix(u) => {
            let (s, _) = u.accept().await?;
            Ok((TokioIo::new(Box::new(s) as Box<dyn AsyncIo>), Peer { can_write: true }))
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_str(ctype).unwrap_or(http::HeaderValue::from_static("text/plain")));
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn json_resp(v: &Value) -> Resp {
    respond(StatusCode::OK, "application/json", serde_json::to_vec_pretty(v).unwrap_or_default())
}

/// A query parameter, percent-decoded (`+` is a space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
    })
}

async fn handle(shared: Arc<Shared>, peer: Peer, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    tracing::debug!(target: "courier_core::debug", %method, %path, "debug request");
    let write = !matches!(method, Method::GET | Method::HEAD);
    if write && !peer.can_write {
        return Ok(text(
            StatusCode::FORBIDDEN,
            "writes to the debug server need the unix socket (debug_addr=unix:/path) or a client certificate\n",
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the request body: {e}\n"))),
    };
    Ok(route(&shared, peer, &method, &path, &query, body).await)
}

async fn route(shared: &Arc<Shared>, peer: Peer, method: &Method, path: &str, query: &str, body: Bytes) -> Resp {
    let get = matches!(*method, Method::GET | Method::HEAD);
    match (path, get) {
        ("/", true) => {
            let summary = shared.window.lock().unwrap_or_else(|e| e.into_inner()).summary(Some(&shared.ctx));
            respond(StatusCode::OK, "text/html; charset=utf-8", page::admin_html(&summary, &extension_links()))
        }
        ("/summary.json", true) => json_resp(&shared.window.lock().unwrap_or_else(|e| e.into_inner()).summary(Some(&shared.ctx))),
        ("/metrics", true) => {
            let mut text = stats::render_prometheus();
            if let Some(r) = &shared.ctx.limits_reloads {
                let (ok, failed) = r();
                text.push_str(&format!(
                    "# HELP courier_config_reloads_total Reloads of the limits file by result.\n# TYPE courier_config_reloads_total counter\ncourier_config_reloads_total{{result=\"applied\"}} {ok}\ncourier_config_reloads_total{{result=\"refused\"}} {failed}\n"
                ));
            }
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text)
        }
        ("/info", true) => json_resp(&info_json()),
        ("/config", true) => json_resp(&config_json(Some(&shared.ctx))),
        ("/rpcz", true) => json_resp(&rpcz_json()),
        ("/deps", true) => match query_param(query, "format").as_deref() {
            None | Some("json") => json_resp(&deps_json()),
            Some("dot") => respond(StatusCode::OK, "text/vnd.graphviz; charset=utf-8", deps_dot()),
            Some("svg") => respond(StatusCode::OK, "image/svg+xml", page::deps_svg()),
            Some(f) => text(StatusCode::BAD_REQUEST, format!("unknown format {f:?}: json, dot or svg\n")),
        },
        ("/loglevel", true) => match logging::levels() {
            Some(l) => json_resp(&json!({"controllable": true, "levels": l, "directives": logging::levels_string()})),
            None => json_resp(&json!({"controllable": false, "levels": null, "directives": null})),
        },
        ("/loglevel", false) if *method == Method::PUT || *method == Method::POST => {
            let r = match (query_param(query, "module"), query_param(query, "level")) {
                (m, Some(level)) => logging::set_level(m.as_deref().unwrap_or(""), &level),
                (_, None) => match std::str::from_utf8(&body) {
                    Ok(s) if !s.trim().is_empty() => logging::set_all(s.trim()),
                    _ => Err("give ?module=M&level=L, or directives (warn,courier_core::server=debug) as the body".into()),
                },
            };
            match r {
                Ok(s) => json_resp(&json!({"ok": true, "directives": s})),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        ("/pprof/profile", true) => profile(query).await,
        _ => match extension(path) {
            Some(h) => {
                let req = DebugRequest { method: method.to_string(), path: path.to_string(), query: query.to_string(), body: body.to_vec(), can_write: peer.can_write };
                match tokio::task::spawn_blocking(move || h(req)).await {
                    Ok(r) => respond(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &r.content_type, r.body),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("handler failed: {e}\n")),
                }
            }
            None if ["/", "/metrics", "/info", "/config", "/rpcz", "/deps", "/pprof/profile", "/summary.json"].contains(&path) => {
                text(StatusCode::METHOD_NOT_ALLOWED, "read-only endpoint\n")
            }
            None => text(StatusCode::NOT_FOUND, format!("no debug page {path}: see / for the list\n")),
        },
    }
}

static PROFILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn profile(query: &str) -> Resp {
    let seconds = match query_param(query, "seconds").map(|s| s.parse::<f64>()) {
        None => 30.0,
        Some(Ok(s)) if s > 0.0 && s <= MAX_PROFILE_SECONDS as f64 => s,
        Some(_) => return text(StatusCode::BAD_REQUEST, format!("seconds must be within (0, {MAX_PROFILE_SECONDS}]\n")),
    };
    let hz = match query_param(query, "hz").map(|s| s.parse::<i32>()) {
        None => 99,
        Some(Ok(h)) if (1..=1000).contains(&h) => h,
        Some(_) => return text(StatusCode::BAD_REQUEST, "hz must be within 1..=1000\n"),
    };
    let as_text = query_param(query, "format").as_deref() == Some("text");
    if PROFILING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return text(StatusCode::CONFLICT, "a profile is being taken already\n");
    }
    let r = tokio::task::spawn_blocking(move || take_profile(Duration::from_secs_f64(seconds), hz, as_text)).await;
    PROFILING.store(false, std::sync::atomic::Ordering::Release);
    match r {
        Ok(Ok((ctype, body))) => respond(StatusCode::OK, ctype, body),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("profile failed: {e}\n")),
    }
}

fn take_profile(d: Duration, hz: i32, as_text: bool) -> Result<(&'static str, Vec<u8>), String> {
    use pprof::protos::Message;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(hz)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)));
    }
    let report = guard.report().build().map_err(|e| e.to_string())?;
    if as_text {
        use std::fmt::Write;
        let mut lines: Vec<(isize, String)> = report
            .data
            .iter()
            .map(|(frames, n)| {
                let stack: Vec<String> = frames.frames.iter().rev().flat_map(|f| f.iter().map(|s| s.name())).collect();
                (*n, format!("{};{}", frames.thread_name, stack.join(";")))
            })
            .collect();
        lines.sort_by(|a, b| b.0.cmp(&a.0));
        let mut out = String::new();
        for (n, l) in lines {
            let _ = writeln!(out, "{l} {n}");
        }
        return Ok(("text/plain; charset=utf-8", out.into_bytes()));
    }
    let p = report.pprof().map_err(|e| e.to_string())?;
    Ok(("application/octet-stream", p.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_addresses_are_loopback_or_unix() {
        assert_eq!(DebugAddr::parse("127.0.0.1:0").unwrap(), DebugAddr::Tcp("127.0.0.1:0".parse().unwrap()));
        assert_eq!(DebugAddr::parse("localhost:9").unwrap(), DebugAddr::Tcp("127.0.0.1:9".parse().unwrap()));
        assert!(matches!(DebugAddr::parse("unix:/tmp/x.sock").unwrap(), DebugAddr::Unix(_)));
        assert!(DebugAddr::parse("0.0.0.0:80").unwrap_err().contains("not loopback"));
        assert!(DebugAddr::parse("unix:").is_err());
        assert!(DebugAddr::parse("nonsense").is_err());
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(query_param("a=1&module=courier_core%3A%3Aserver&x", "module").as_deref(), Some("courier_core::server"));
        assert_eq!(query_param("x&y=2", "x").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "z"), None);
    }
}
