//! The server: thread-per-core `current_thread` runtimes serving HTTP/2 on
//! hyper directly (no tower layers on the hot path), a method table, graceful
//! shutdown.
//!
//! Why not tonic's server: measured on one pinned core, tonic on `current_thread`
//! reached 0.71 of a bare hyper/h2 echo and 0.47 on `multi_thread`; this path
//! keeps hyper's HTTP/2 and adds only framing, the method lookup and the ctx.

mod body;
mod dispatch;
mod far_deadlines;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

pub use body::ReplyBody;

use crate::admission::Gate;
use crate::call::Handler;
use crate::limits::{LimitsConfig, LimitsFile};
use crate::health::HealthReporter;
use crate::host::{HostQueue, Mailbox};
use crate::method::MethodDesc;
use crate::wire::DEFAULT_MAX_RECV_MESSAGE_SIZE;
use dispatch::ConnInfo;

/// HTTP/2 transport settings.
#[derive(Clone, Debug)]
pub struct Http2Config {
    /// Initial per-stream flow-control window (bytes); `None`: hyper's default.
    pub initial_stream_window_size: Option<u32>,
    /// Initial connection flow-control window (bytes); `None`: hyper's default.
    pub initial_connection_window_size: Option<u32>,
    /// Grow windows from the measured bandwidth-delay product (overrides the two
    /// above), for high bandwidth-delay links. Off by default: windows then start
    /// small, and h2's flood protection (a budget of small DATA frames that
    /// follows the connection window) would end a connection that receives a
    /// burst of a few hundred small messages at once.
    pub adaptive_window: bool,
    pub max_frame_size: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    /// Send an HTTP/2 PING this often on an idle connection; `None` (the
    /// default) sends none. Opt-in because hyper then takes a lock and reads
    /// the clock for every frame received (measured: ~0.5k instructions per
    /// unary call, 1% of the call); dead peers are found by `tcp_keepalive`.
    pub keepalive_interval: Option<Duration>,
    /// Close the connection if a keepalive PING is not acknowledged in time.
    pub keepalive_timeout: Duration,
    /// TCP keepalive (`SO_KEEPALIVE`) on every accepted connection, with this
    /// idle time before the kernel's first probe (default 2 hours, as gRPC's
    /// server keepalive); `None` leaves the socket as accepted. Costs nothing
    /// per call.
    pub tcp_keepalive: Option<Duration>,
    /// Ask clients to reconnect (GOAWAY) after this age, e.g. to rebalance.
    pub max_connection_age: Option<Duration>,
    /// How long in-flight calls get after a max-age GOAWAY.
    pub max_connection_age_grace: Duration,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            initial_stream_window_size: Some(1024 * 1024),
            initial_connection_window_size: Some(2 * 1024 * 1024),
            adaptive_window: false,
            max_frame_size: None,
            max_concurrent_streams: Some(1024),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(7200)),
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(30),
        }
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// I/O threads, each with its own `current_thread` runtime; default: one per core.
    pub workers: usize,
    /// Largest request message accepted (default 4 MiB); larger is `RESOURCE_EXHAUSTED`.
    pub max_recv_message_size: usize,
    pub http2: Http2Config,
    /// Mutual TLS; `None` serves plaintext HTTP/2.
    pub tls: Option<crate::tls::ServerTls>,
    /// The limits file (ACLs, rate limits, queues), watched and hot-reloaded;
    /// `None`: every method open, with defaults.
    pub limits_path: Option<std::path::PathBuf>,
    /// Workpool slots of host-served methods whose limits set no
    /// `max_concurrency`: the binding's handler thread count.
    pub host_concurrency: Option<u32>,
    /// The debug (admin) server's address: `127.0.0.1:PORT` or `unix:/path`
    /// (see `debug`); `None`: no debug server.
    pub debug_addr: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_recv_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
            http2: Http2Config::default(),
            tls: None,
            limits_path: None,
            host_concurrency: None,
            debug_addr: None,
        }
    }
}

/// Errors of server setup and lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("method {0} is registered twice")]
    DuplicateMethod(String),
    #[error("method {path} is {kind:?} but its handler serves {handler:?} calls")]
    KindMismatch { path: String, kind: crate::method::MethodKind, handler: crate::method::MethodKind },
    #[error("the server has already started")]
    AlreadyStarted,
    #[error("the server has no listening address: call listen() before start()")]
    NoListener,
    #[error("cannot start I/O thread: {0}")]
    Thread(std::io::Error),
    #[error("limits refused: {0}")]
    Limits(#[from] crate::limits::LimitsError),
    #[error("cannot watch the limits file: {0}")]
    LimitsWatch(std::io::Error),
}

pub(crate) struct Entry {
    desc: Arc<MethodDesc>,
    handler: Handler,
    /// Admission: ACL, rate limit, queue and workpool slots of this method.
    gate: Arc<Gate>,
}

impl Entry {
    fn new(desc: MethodDesc, handler: Handler) -> Entry {
        crate::stats::register_server_method(&desc);
        let gate = Gate::new(desc.path_arc().clone(), Default::default());
        Entry { desc: Arc::new(desc), handler, gate }
    }
}

/// The method table: full path to method. Hashed with FNV-1a rather than
/// SipHash (measured: a few hundred instructions less per call). The table is
/// fixed once the server starts, so a client choosing paths cannot grow
/// collision chains: a keyed hash buys nothing here.
pub(crate) type Router = HashMap<Box<str>, Arc<Entry>, std::hash::BuildHasherDefault<Fnv1a>>;

#[derive(Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// What every I/O thread shares, immutable once started (but for the flags).
pub(crate) struct Shared {
    router: Router,
    config: ServerConfig,
    hard_stop: AtomicBool,
}

impl Shared {
    fn is_hard_stopping(&self) -> bool {
        self.hard_stop.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// Stop accepting, GOAWAY every connection, let calls finish.
    Draining,
    /// Grace period over: drop everything still running.
    Stopped,
}

enum State {
    Building { router: Router, listeners: Vec<StdListener>, hosts: Vec<HostQueue> },
    Running { threads: Vec<JoinHandle<()>>, phase: watch::Sender<Phase>, shared: Arc<Shared>, hosts: Vec<HostQueue> },
    Stopped,
}

/// A Courier server. Register methods, `listen`, `start`, later `shutdown`.
pub struct Server {
    config: ServerConfig,
    limits: Mutex<Option<Arc<LimitsFile>>>,
    state: Mutex<State>,
    health: HealthReporter,
    local_addrs: Mutex<Vec<SocketAddr>>,
    /// Listeners in `/rpcz`, and the debug server.
    obs: crate::debug::ServerObs,
}

impl Server {
    pub fn new(config: ServerConfig) -> Server {
        let health = HealthReporter::new();
        let mut router = Router::default();
        for (desc, handler) in health.methods().into_iter().chain(crate::reflection::methods(health.clone())) {
            router.insert(desc.path().into(), Arc::new(Entry::new(desc, handler)));
        }
        Server {
            config,
            limits: Mutex::new(None),
            state: Mutex::new(State::Building { router, listeners: Vec::new(), hosts: Vec::new() }),
            health,
            local_addrs: Mutex::new(Vec::new()),
            obs: Default::default(),
        }
    }

    /// The built-in `grpc.health.v1.Health` service's status setter.
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Adds a method. A Rust-native handler must serve the method's kind; a
    /// host queue serves any kind.
    pub fn register(&self, desc: MethodDesc, handler: Handler) -> Result<(), ServerError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Building { router, hosts, .. } = &mut *st else { return Err(ServerError::AlreadyStarted) };
        if let Some(k) = handler.kind() {
            if k != desc.kind() {
                return Err(ServerError::KindMismatch { path: desc.path().into(), kind: desc.kind(), handler: k });
            }
        }
        if router.contains_key(desc.path()) {
            return Err(ServerError::DuplicateMethod(desc.path().into()));
        }
        if let Handler::Host(q) = &handler {
            hosts.push(q.clone());
        }
        self.health.set_serving(desc.service(), crate::health::ServingStatus::Serving);
        router.insert(desc.path().into(), Arc::new(Entry::new(desc, handler)));
        Ok(())
    }

    /// Binds a TCP address (`"127.0.0.1:0"` picks a free port) and returns the
    /// bound address. Call before [`Server::start`].
    pub fn listen(&self, addr: &str) -> Result<SocketAddr, ServerError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Building { listeners, .. } = &mut *st else { return Err(ServerError::AlreadyStarted) };
        let bind_err = |source| ServerError::Bind { addr: addr.to_string(), source };
        let l = StdListener::bind(addr).map_err(bind_err)?;
        l.set_nonblocking(true).map_err(bind_err)?;
        let local = l.local_addr().map_err(bind_err)?;
        listeners.push(l);
        self.local_addrs.lock().unwrap_or_else(|e| e.into_inner()).push(local);
        self.obs.listening(local);
        Ok(local)
    }

    /// The addresses bound so far.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts the I/O threads. Returns once they are accepting connections.
    pub fn start(&self) -> Result<(), ServerError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Building { .. } = &*st else { return Err(ServerError::AlreadyStarted) };
        let State::Building { router, listeners, hosts } = std::mem::replace(&mut *st, State::Stopped) else {
            unreachable!("checked above")
        };
        if listeners.is_empty() {
            *st = State::Building { router, listeners, hosts };
            return Err(ServerError::NoListener);
        }
        if let Err(e) = self.apply_limits(&router) {
            *st = State::Building { router, listeners, hosts };
            return Err(e);
        }
        let limits = self.limits_file().map(|l| {
            let l2 = l.clone();
            crate::debug::LimitsView::new(move || l.to_json(), move || l2.reload_counts())
        });
        if let Err(e) = self.obs.start_debug(&self.config, &self.local_addrs(), limits) {
            *st = State::Building { router, listeners, hosts };
            return Err(e);
        }
        let workers = self.config.workers.max(1);
        let shared = Arc::new(Shared { router, config: self.config.clone(), hard_stop: AtomicBool::new(false) });
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let mut conn_txs = Vec::with_capacity(workers);
        let mut conn_rxs = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
            conn_txs.push(tx);
            conn_rxs.push(rx);
        }
        let mut listeners = Some(listeners);
        let mut threads = Vec::with_capacity(workers);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        for (i, conn_rx) in conn_rxs.into_iter().enumerate() {
            let worker = Worker {
                shared: shared.clone(),
                phase: phase_rx.clone(),
                conns: conn_rx,
                // Worker 0 accepts and deals connections out round-robin: even
                // spread even with few connections (SO_REUSEPORT hashes unevenly).
                accept: if i == 0 { listeners.take().map(|l| (l, conn_txs.clone())) } else { None },
                ready: ready_tx.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("courier-io-{i}"))
                .spawn(move || worker.run())
                .map_err(ServerError::Thread)?;
            threads.push(t);
        }
        drop(ready_tx);
        for _ in 0..workers {
            let _ = ready_rx.recv();
        }
        *st = State::Running { threads, phase: phase_tx, shared, hosts };
        Ok(())
    }

    /// Puts the limits in force on every method's gate, and watches the file.
    fn apply_limits(&self, router: &Router) -> Result<(), ServerError> {
        let gates: Vec<(Arc<MethodDesc>, Arc<Gate>, bool)> =
            router.values().map(|e| (e.desc.clone(), e.gate.clone(), matches!(e.handler, Handler::Host(_)))).collect();
        let host_slots = self.config.host_concurrency;
        let source = self.config.limits_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let apply = move |config: &LimitsConfig, text: &str| {
            config.check_methods(text, &source, gates.iter().map(|(d, _, _)| (d.service(), d.name())))?;
            for (desc, gate, host) in &gates {
                let mut limits = config.method_limits(desc.service(), desc.name());
                if *host && limits.max_concurrency.is_none() {
                    limits.max_concurrency = host_slots;
                }
                gate.set_limits(limits);
            }
            Ok(())
        };
        match &self.config.limits_path {
            None => apply(&LimitsConfig::default(), "")?,
            Some(path) => {
                let file = LimitsFile::open(path, &apply)?;
                file.watch(Box::new(apply)).map_err(ServerError::LimitsWatch)?;
                *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
            }
        }
        Ok(())
    }

    /// The limits file in force (path, limits, last reload), if any.
    pub fn limits_file(&self) -> Option<Arc<LimitsFile>> {
        self.limits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Graceful shutdown: stop accepting, send GOAWAY, let calls in flight finish
    /// for up to `grace`, then cancel what is left. Blocks until the I/O threads
    /// have exited. Calls still queued for host threads are answered `UNAVAILABLE`
    /// when the grace period ends.
    pub fn shutdown(&self, grace: Duration) {
        let (threads, shared, hosts) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = self.limits_file() {
                l.stop();
            }
            match std::mem::replace(&mut *st, State::Stopped) {
                State::Running { threads, phase, shared, hosts } => {
                    self.health.set_all_not_serving();
                    let _ = phase.send(Phase::Draining);
                    // The phase sender must outlive the grace period; park it in a timer thread.
                    let s = shared.clone();
                    let t = std::thread::spawn(move || {
                        std::thread::sleep(grace);
                        s.hard_stop.store(true, Ordering::Relaxed);
                        let _ = phase.send(Phase::Stopped);
                    });
                    drop(t);
                    (threads, shared, hosts)
                }
                State::Building { hosts, .. } => {
                    for h in hosts {
                        h.close();
                    }
                    return;
                }
                State::Stopped => return,
            }
        };
        let deadline = std::time::Instant::now() + grace;
        for t in threads {
            // Workers return when their connections are done or at Phase::Stopped.
            let _ = t.join();
            if std::time::Instant::now() >= deadline {
                shared.hard_stop.store(true, Ordering::Relaxed);
            }
        }
        shared.hard_stop.store(true, Ordering::Relaxed);
        for h in hosts {
            h.close();
        }
        self.obs.stop();
    }

    /// The debug server's address once started (`127.0.0.1:PORT` or `unix:/path`).
    pub fn debug_addr(&self) -> Option<String> {
        self.obs.debug_addr()
    }

    /// True between `start` and the end of `shutdown`.
    pub fn is_running(&self) -> bool {
        matches!(*self.state.lock().unwrap_or_else(|e| e.into_inner()), State::Running { .. })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

thread_local! {
    /// This I/O thread's reply inbox for host calls.
    static MAILBOX: RefCell<Option<Mailbox>> = const { RefCell::new(None) };
}

pub(crate) fn local_mailbox() -> Mailbox {
    MAILBOX.with(|m| m.borrow().clone().expect("host calls are only created on Courier I/O threads"))
}

type Acceptor = (Vec<StdListener>, Vec<mpsc::UnboundedSender<std::net::TcpStream>>);

struct Worker {
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    conns: mpsc::UnboundedReceiver<std::net::TcpStream>,
    accept: Option<Acceptor>,
    ready: std::sync::mpsc::Sender<()>,
}

impl Worker {
    fn run(self) {
        // Host calls queued on this thread are handed over when it runs out of work.
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().on_thread_park(crate::host::io_thread_idle).build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot build I/O runtime");
                return;
            }
        };
        rt.block_on(self.serve());
        // Dropping the runtime drops every task still running: their call guards
        // cancel the ctxs with `Shutdown`.
    }

    async fn serve(mut self) {
        MAILBOX.with(|m| *m.borrow_mut() = Some(Mailbox::spawn_local()));
        let live = Arc::new(AtomicUsize::new(0));
        let all_done = Arc::new(tokio::sync::Notify::new());
        if let Some((listeners, txs)) = self.accept.take() {
            let next = Arc::new(AtomicUsize::new(0));
            for l in listeners {
                match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => {
                        tokio::spawn(accept_loop(l, txs.clone(), next.clone(), self.phase.clone()));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot register listener"),
                }
            }
        }
        let _ = self.ready.send(());
        let mut phase = self.phase.clone();
        loop {
            tokio::select! {
                s = self.conns.recv() => match s {
                    Some(s) => self.spawn_conn(s, &live, &all_done),
                    None => break,
                },
                r = phase.changed() => {
                    if r.is_err() || *phase.borrow() >= Phase::Draining { break; }
                }
            }
        }
        // Draining: wait for connections to finish, or the grace period to end.
        loop {
            if live.load(Ordering::Acquire) == 0 || *phase.borrow() == Phase::Stopped {
                return;
            }
            let notified = all_done.notified();
            tokio::select! {
                _ = notified => {}
                r = phase.changed() => if r.is_err() { return },
            }
        }
    }

    fn spawn_conn(&self, s: std::net::TcpStream, live: &Arc<AtomicUsize>, all_done: &Arc<tokio::sync::Notify>) {
        let stream = match TcpStream::from_std(s) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register connection");
                return;
            }
        };
        live.fetch_add(1, Ordering::AcqRel);
        let (live, all_done) = (live.clone(), all_done.clone());
        let shared = self.shared.clone();
        let phase = self.phase.clone();
        tokio::spawn(async move {
            serve_conn(stream, shared, phase).await;
            if live.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_done.notify_waiters();
            }
        });
    }
}

async fn accept_loop(
    l: tokio::net::TcpListener,
    txs: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    next: Arc<AtomicUsize>,
    mut phase: watch::Receiver<Phase>,
) {
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((s, _)) => {
                    let i = next.fetch_add(1, Ordering::Relaxed) % txs.len();
                    match s.into_std() {
                        Ok(s) => { let _ = txs[i].send(s); }
                        Err(e) => tracing::warn!(error = %e, "cannot hand off connection"),
                    }
                }
                // EMFILE and friends: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            r = phase.changed() => if r.is_err() || *phase.borrow() >= Phase::Draining { return },
        }
    }
}

async fn serve_conn(stream: TcpStream, shared: Arc<Shared>, phase: watch::Receiver<Phase>) {
    let _ = stream.set_nodelay(true);
    if let Some(idle) = shared.config.http2.tcp_keepalive {
        if let Err(e) = set_tcp_keepalive(&stream, idle) {
            tracing::debug!(error = %e, "cannot set TCP keepalive");
        }
    }
    let obs = crate::stats::ConnStats::open(stream.peer_addr().ok(), stream.local_addr().ok());
    let Some(tls) = shared.config.tls.clone() else {
        return serve_h2(TokioIo::new(stream), None, obs, shared, phase).await;
    };
    // The handshake runs in this connection's own task under its own timeout:
    // a stalled client holds only its socket, and only until then.
    let mut drain = phase.clone();
    let accepted = tokio::select! {
        r = tls.accept(stream) => r,
        _ = drain.wait_for(|p| *p >= Phase::Draining) => None,
    };
    if let Some((stream, peer)) = accepted {
        serve_h2(TokioIo::new(stream), peer, obs, shared, phase).await;
    }
}

/// `SO_KEEPALIVE` with `idle` before the first probe (Linux: `TCP_KEEPIDLE`;
/// elsewhere the system's idle time).
fn set_tcp_keepalive(stream: &TcpStream, idle: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: a valid socket fd (owned by `stream`) and a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    #[cfg(target_os = "linux")]
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle.as_secs().clamp(1, i32::MAX as u64) as libc::c_int)?;
    #[cfg(not(target_os = "linux"))]
    let _ = idle;
    Ok(())
}

async fn serve_h2<I>(
    io: I,
    peer: Option<Arc<crate::Identity>>,
    obs: Arc<crate::stats::ConnStats>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let h2c = &shared.config.http2;
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .auto_date_header(false)
        .max_frame_size(h2c.max_frame_size)
        .max_concurrent_streams(h2c.max_concurrent_streams)
        .keep_alive_interval(h2c.keepalive_interval)
        .keep_alive_timeout(h2c.keepalive_timeout);
    // hyper turns the adaptive window off when a fixed size is set after it.
    if h2c.adaptive_window {
        b.adaptive_window(true);
    } else {
        b.initial_stream_window_size(h2c.initial_stream_window_size)
            .initial_connection_window_size(h2c.initial_connection_window_size);
    }
    let info = Arc::new(ConnInfo { peer, obs });
    let svc_shared = shared.clone();
    // `dispatch` does the synchronous part of a call (checks, ctx, admission)
    // and returns a small future: the common unary call is not boxed; the
    // rare kinds (queued, streaming, host) box theirs, so a large state
    // machine is not moved by value per call.
    let svc = hyper::service::service_fn(move |req| dispatch::dispatch(&svc_shared, &info, req));
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    let age = async {
        match h2c.max_connection_age {
            Some(a) => tokio::time::sleep(a).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(age);
    let mut goaway_sent = false;
    let mut age_grace: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(std::future::pending());
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            r = phase.changed(), if !goaway_sent => {
                if r.is_err() || *phase.borrow() >= Phase::Draining {
                    goaway_sent = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = &mut age, if !goaway_sent => {
                goaway_sent = true;
                conn.as_mut().graceful_shutdown();
                age_grace = Box::pin(tokio::time::sleep(h2c.max_connection_age_grace));
            }
            _ = &mut age_grace => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockopt(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd, buffer and length of a c_int.
        let r = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
        v
    }

    #[tokio::test]
    async fn tcp_keepalive_is_set_on_accepted_sockets() {
        use std::os::fd::AsRawFd;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(sockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        set_tcp_keepalive(&s, Duration::from_secs(7200)).unwrap();
        assert_eq!(sockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        #[cfg(target_os = "linux")]
        assert_eq!(sockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 7200);
        assert_eq!(Http2Config::default().tcp_keepalive, Some(Duration::from_secs(7200)));
    }
}
