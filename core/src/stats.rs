//! Stats: per-method, per-client and per-channel counters, kept in atomics
//! created ahead of the calls that use them, rendered as Prometheus text
//! (`courier_` prefix) by the debug server.
//!
//! The hot path takes no lock and allocates nothing:
//! - a server method's [`MethodStats`] is created when the method is
//!   registered and reached through its [`MethodDesc`];
//! - a client identity gets a slot in a fixed-size, insert-only, lock-free
//!   table on first sight (bounded: identities beyond [`max_clients`] share
//!   the `__overflow__` slot); each method keeps one pair of atomics per slot;
//! - a client method's [`ClientMethodStats`] is looked up once per
//!   [`MethodDesc`] (clones share the cached pointer).
//!
//! Everything is per process: several servers in one process that serve the
//! same method share its counters, as a scrape of the process expects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::context::{Ctx, Identity};
use crate::method::MethodDesc;
use crate::status::Code;

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns per-call stats off (or back on) for the whole process: the calls
/// then skip every counter (registration, connections and listeners are
/// still recorded). On by default; off is for measuring what stats cost.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Whether per-call stats are on.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

// ---------------------------------------------------------------------------
// Histograms

/// Upper bounds (inclusive) of latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 18] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

const fn bounds_ns() -> [u64; 18] {
    // 50µs .. 30s, the same as LATENCY_BUCKETS (no float math in const fn).
    [
        50_000,
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
        30_000_000_000,
    ]
}
const BOUNDS_NS: [u64; 18] = bounds_ns();
const NB: usize = BOUNDS_NS.len() + 1;

/// A fixed-bucket histogram of durations: one atomic per bucket and the sum.
pub struct Histogram {
    buckets: [AtomicU64; NB],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_ns: AtomicU64::new(0) }
    }
}

/// A histogram read at one moment.
#[derive(Clone, Debug, Default)]
pub struct HistogramSnapshot {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count = buckets.iter().sum();
        HistogramSnapshot { buckets, sum_seconds: self.sum_ns.load(Relaxed) as f64 / 1e9, count }
    }
}

impl HistogramSnapshot {
    /// The `q` quantile (0..1) in seconds, interpolated inside its bucket as
    /// Prometheus' `histogram_quantile` does; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let Some(&hi) = LATENCY_BUCKETS.get(i) else { return Some(lo) };
                let into = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * into);
            }
            seen += n;
        }
        LATENCY_BUCKETS.last().copied()
    }

    /// `self - earlier`, for rates over an interval.
    pub fn minus(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets = self.buckets.iter().zip(earlier.buckets.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a.saturating_sub(*b)).collect();
        HistogramSnapshot { buckets, sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0), count: self.count.saturating_sub(earlier.count) }
    }
}

// ---------------------------------------------------------------------------
// Rejections

/// Why admission refused a call before its handler ran. The labels are
/// admission's own (`admission::Rejection::reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// The method needs an identity and the peer has none (`UNAUTHENTICATED`).
    Unauthenticated = 0,
    /// The ACL denies the caller's identity (`PERMISSION_DENIED`).
    AclDenied = 1,
    /// The caller is over its rate (`RESOURCE_EXHAUSTED`).
    RateLimited = 2,
    /// The method's queue is full (`UNAVAILABLE`).
    QueueFull = 3,
    /// The call waited in the queue longer than the queue timeout (`UNAVAILABLE`).
    QueueTimeout = 4,
    /// Dropped from a CoDel queue above its target delay (`UNAVAILABLE`).
    CodelDrop = 5,
    /// Any other reason.
    Other = 6,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Unauthenticated,
        RejectReason::AclDenied,
        RejectReason::RateLimited,
        RejectReason::QueueFull,
        RejectReason::QueueTimeout,
        RejectReason::CodelDrop,
        RejectReason::Other,
    ];
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unauthenticated => "unauthenticated",
            RejectReason::AclDenied => "acl_denied",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::QueueFull => "queue_full",
            RejectReason::QueueTimeout => "queue_timeout",
            RejectReason::CodelDrop => "codel_drop",
            RejectReason::Other => "other",
        }
    }
    /// The reason of a label; unknown labels are `Other`.
    pub fn from_label(label: &str) -> RejectReason {
        RejectReason::ALL.into_iter().find(|r| r.as_str() == label).unwrap_or(RejectReason::Other)
    }
}
const NR: usize = RejectReason::ALL.len();

// ---------------------------------------------------------------------------
// Client identities: a bounded, insert-only, lock-free table.

/// Slot of calls without a client certificate.
pub const UNAUTHENTICATED: u32 = 0;
/// Slot shared by identities seen after the table filled up.
pub const OVERFLOW: u32 = 1;
const FIRST_NAMED: u32 = 2;
/// Label value of the overflow slot.
pub const OVERFLOW_LABEL: &str = "__overflow__";
/// Label value of calls without a client certificate.
pub const UNAUTHENTICATED_LABEL: &str = "unauthenticated";

const DEFAULT_MAX_CLIENTS: usize = 1024;
static MAX_CLIENTS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_CLIENTS);

/// How many distinct client identities get their own stats; later ones share
/// the `__overflow__` entry.
pub fn max_clients() -> usize {
    MAX_CLIENTS.load(Relaxed)
}

/// Sets [`max_clients`]; only before the first server registers a method
/// (later calls are ignored: per-method arrays are sized by it). Returns
/// whether it took effect.
pub fn set_max_clients(n: usize) -> bool {
    if CLIENTS.get().is_some() {
        return false;
    }
    MAX_CLIENTS.store(n.clamp(1, 1 << 20), Relaxed);
    true
}

struct ClientEntry {
    name: Box<str>,
    index: u32,
    rejections: [AtomicU64; NR],
    latency: Histogram,
    last_seen_ns: AtomicU64,
}

impl ClientEntry {
    fn new(name: &str, index: u32) -> ClientEntry {
        ClientEntry {
            name: name.into(),
            index,
            rejections: Default::default(),
            latency: Histogram::default(),
            last_seen_ns: AtomicU64::new(0),
        }
    }
}

struct ClientTable {
    /// Open addressing, twice the capacity, never removed from.
    slots: Box<[OnceLock<Box<ClientEntry>>]>,
    /// Entries by index (index 0 and 1 are the fixed ones).
    by_index: Box<[OnceLock<&'static ClientEntry>]>,
    next: AtomicU32,
    fixed: [&'static ClientEntry; 2],
}

static CLIENTS: OnceLock<&'static ClientTable> = OnceLock::new();

fn clients() -> &'static ClientTable {
    CLIENTS.get_or_init(|| Box::leak(Box::new(ClientTable::new(max_clients()))))
}

fn fnv1a(s: &str) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h as usize
}

impl ClientTable {
    fn new(max: usize) -> ClientTable {
        let cap = (max * 2).next_power_of_two().max(16);
        let unauth: &'static ClientEntry = Box::leak(Box::new(ClientEntry::new(UNAUTHENTICATED_LABEL, UNAUTHENTICATED)));
        let over: &'static ClientEntry = Box::leak(Box::new(ClientEntry::new(OVERFLOW_LABEL, OVERFLOW)));
        let by_index: Box<[OnceLock<&'static ClientEntry>]> = (0..max + FIRST_NAMED as usize).map(|_| OnceLock::new()).collect();
        let _ = by_index[0].set(unauth);
        let _ = by_index[1].set(over);
        ClientTable {
            slots: (0..cap).map(|_| OnceLock::new()).collect(),
            by_index,
            next: AtomicU32::new(FIRST_NAMED),
            fixed: [unauth, over],
        }
    }

    /// Number of per-client slots a method keeps (named identities + the two fixed).
    fn width(&self) -> usize {
        self.by_index.len()
    }

    fn index_of(&'static self, name: &str) -> u32 {
        let mask = self.slots.len() - 1;
        let h = fnv1a(name);
        for i in 0..self.slots.len() {
            let slot = &self.slots[(h + i) & mask];
            let e = match slot.get() {
                Some(e) => e,
                None => {
                    if self.next.load(Relaxed) as usize >= self.by_index.len() {
                        return OVERFLOW;
                    }
                    slot.get_or_init(|| {
                        let idx = self.next.fetch_add(1, Relaxed);
                        Box::new(ClientEntry::new(name, if (idx as usize) < self.by_index.len() { idx } else { OVERFLOW }))
                    })
                }
            };
            if &*e.name == name {
                if e.index >= FIRST_NAMED {
                    let _ = self.by_index[e.index as usize].set(&**e);
                }
                return e.index;
            }
        }
        OVERFLOW
    }

    fn entry(&self, index: u32) -> Option<&'static ClientEntry> {
        match index {
            UNAUTHENTICATED | OVERFLOW => Some(self.fixed[index as usize]),
            i => self.by_index.get(i as usize).and_then(|e| e.get().copied()),
        }
    }
}

/// The stats slot of a client identity (`None`: unauthenticated). Looks the
/// name up without a lock; the first sight of a name inserts it.
pub fn client_index(peer: Option<&Identity>) -> u32 {
    match peer {
        None => UNAUTHENTICATED,
        Some(id) => clients().index_of(&id.name),
    }
}

// ---------------------------------------------------------------------------
// Server per-method stats

/// Calls and errors of one (client, method) pair: the edges of `/deps`.
#[derive(Default)]
pub(crate) struct Edge {
    calls: AtomicU64,
    errors: AtomicU64,
}

/// A served method's stats: created when the method is registered.
pub struct MethodStats {
    desc: MethodDesc,
    path: Box<str>,
    service: Box<str>,
    method: Box<str>,
    codes: [AtomicU64; 17],
    latency: Histogram,
    in_flight: AtomicI64,
    queue_size: AtomicI64,
    queue_wait: Histogram,
    rejections: [AtomicU64; NR],
    last_call_ns: AtomicU64,
    edges: Box<[Edge]>,
}

impl MethodStats {
    fn new(desc: &MethodDesc) -> MethodStats {
        MethodStats {
            desc: desc.clone(),
            path: desc.path().into(),
            service: desc.service().into(),
            method: desc.name().into(),
            codes: Default::default(),
            latency: Histogram::default(),
            in_flight: AtomicI64::new(0),
            queue_size: AtomicI64::new(0),
            queue_wait: Histogram::default(),
            rejections: Default::default(),
            last_call_ns: AtomicU64::new(0),
            edges: (0..clients().width()).map(|_| Edge::default()).collect(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }
    /// The method as registered (kind, deadline policy, app-error enum).
    pub fn desc(&self) -> &MethodDesc {
        &self.desc
    }
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Relaxed)
    }
    pub fn queue_size(&self) -> i64 {
        self.queue_size.load(Relaxed)
    }
    /// Calls finished with `code`.
    pub fn count(&self, code: Code) -> u64 {
        self.codes[code as usize].load(Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.codes.iter().map(|c| c.load(Relaxed)).sum()
    }
    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.rejections[reason as usize].load(Relaxed)
    }
    pub fn latency(&self) -> HistogramSnapshot {
        self.latency.snapshot()
    }
    pub fn queue_wait(&self) -> HistogramSnapshot {
        self.queue_wait.snapshot()
    }

    /// A call entered this method's queue (admission queue or host queue).
    pub fn enqueued(&self) {
        self.queue_size.fetch_add(1, Relaxed);
    }

    /// A call left the queue after waiting `wait` (taken, rejected or dropped).
    pub fn dequeued(&self, wait: Duration) {
        self.queue_size.fetch_sub(1, Relaxed);
        self.queue_wait.observe(wait);
    }

    /// Counts a call refused by admission, for the method and the client.
    /// The call's status code is counted when it is answered, as for any call.
    pub fn record_rejection(&self, peer: Option<&Identity>, reason: RejectReason) {
        self.rejections[reason as usize].fetch_add(1, Relaxed);
        if let Some(e) = clients().entry(client_index(peer)) {
            e.rejections[reason as usize].fetch_add(1, Relaxed);
        }
    }
}

/// Every served method's stats. Only ever grows: a `MethodStats` lives as
/// long as the process (see [`static_stats`]).
static SERVER_METHODS: Mutex<Vec<Arc<MethodStats>>> = Mutex::new(Vec::new());

/// A registered method's stats as a `'static` reference: what a call holds,
/// so that it takes no reference count (two atomic operations per call).
fn static_stats(m: &Arc<MethodStats>) -> &'static MethodStats {
    // SAFETY: every `MethodStats` a desc's slot holds was created by
    // `register_server_method`, which also keeps it in `SERVER_METHODS`;
    // that vector is never shrunk, so the value is never dropped.
    unsafe { &*Arc::as_ptr(m) }
}

/// The stats of a served method, created on first registration in this process.
pub fn register_server_method(desc: &MethodDesc) -> Arc<MethodStats> {
    desc.obs_slot()
        .server
        .get_or_init(|| {
            let mut all = SERVER_METHODS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = all.iter().find(|m| &*m.path == desc.path()) {
                return m.clone();
            }
            let m = Arc::new(MethodStats::new(desc));
            all.push(m.clone());
            m
        })
        .clone()
}

/// Every served method's stats, in registration order.
pub fn server_methods() -> Vec<Arc<MethodStats>> {
    SERVER_METHODS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The stats of a registered method, by full path (`/pkg.Service/Method`).
pub fn server_method(path: &str) -> Option<Arc<MethodStats>> {
    SERVER_METHODS.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|m| &*m.path == path).cloned()
}

/// Counts a call refused by admission (see [`MethodStats::record_rejection`]).
/// The method must be registered (else nothing is counted). `reason` is
/// admission's label (`Rejection::reason()`); see [`RejectReason::from_label`].
pub fn record_rejection(method: &MethodDesc, peer: Option<&Identity>, reason: &str) {
    if let Some(m) = method.obs_slot().server.get() {
        m.record_rejection(peer, RejectReason::from_label(reason));
    }
}

/// A call entered `method`'s queue.
pub fn enqueued(method: &MethodDesc) {
    if let Some(m) = method.obs_slot().server.get() {
        m.enqueued();
    }
}

/// A call left `method`'s queue (taken by a worker, rejected or dropped);
/// `since`: when it entered. The wait is also recorded on the call's ctx (its
/// span reports it).
pub fn dequeued(method: &MethodDesc, ctx: &Ctx, since: Instant) {
    let wait = since.elapsed();
    ctx.set_queue_wait(wait);
    if let Some(m) = method.obs_slot().server.get() {
        m.dequeued(wait);
    }
}

/// A call waiting for admission (the method's queue): in the queue-size
/// gauge until [`QueueWait::leave`] (or drop), then its wait is observed.
pub struct QueueWait<'a> {
    stats: Option<&'a MethodStats>,
    since: Instant,
}

impl<'a> QueueWait<'a> {
    pub fn enter(desc: &'a MethodDesc) -> QueueWait<'a> {
        let stats = if enabled() { desc.obs_slot().server.get().map(|a| &**a) } else { None };
        if let Some(s) = stats {
            s.enqueued();
        }
        QueueWait { stats, since: Instant::now() }
    }

    /// A call admitted (or refused) without waiting: a zero wait, observed
    /// like any other, never in the queue-size gauge.
    pub fn none(desc: &MethodDesc, ctx: &Ctx) {
        if !enabled() {
            return;
        }
        if let Some(s) = desc.obs_slot().server.get() {
            ctx.set_queue_wait(Duration::ZERO);
            s.queue_wait.observe(Duration::ZERO);
        }
    }

    /// Left the queue (admitted or refused); the wait goes on the ctx too.
    pub fn leave(mut self, ctx: &Ctx) {
        if let Some(s) = self.stats.take() {
            let wait = self.since.elapsed();
            ctx.set_queue_wait(wait);
            s.dequeued(wait);
        }
    }
}

impl Drop for QueueWait<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.stats.take() {
            s.dequeued(self.since.elapsed());
        }
    }
}

/// What [`MethodDesc`] carries for stats: shared by all clones of a desc.
#[derive(Default)]
pub struct DescSlot {
    server: OnceLock<Arc<MethodStats>>,
    client: OnceLock<Arc<ClientMethodStats>>,
}

// A desc's identity is its path, kind and policies: the slot never counts.
impl PartialEq for DescSlot {
    fn eq(&self, _: &DescSlot) -> bool {
        true
    }
}
impl Eq for DescSlot {}
impl std::fmt::Debug for DescSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DescSlot")
    }
}

// ---------------------------------------------------------------------------
// Connections, listeners (for /rpcz)

/// A server connection as `/rpcz` shows it.
pub struct ConnStats {
    pub id: u64,
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub opened: SystemTime,
    peer: OnceLock<Option<Arc<Identity>>>,
    streams_started: AtomicU64,
    streams_active: AtomicI64,
}

static CONNS: Mutex<Vec<Weak<ConnStats>>> = Mutex::new(Vec::new());
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl ConnStats {
    /// Registers a new connection (dropped with the connection's `ConnInfo`).
    pub fn open(remote: Option<SocketAddr>, local: Option<SocketAddr>) -> Arc<ConnStats> {
        let c = Arc::new(ConnStats {
            id: NEXT_CONN.fetch_add(1, Relaxed),
            remote,
            local,
            opened: SystemTime::now(),
            peer: OnceLock::new(),
            streams_started: AtomicU64::new(0),
            streams_active: AtomicI64::new(0),
        });
        let mut all = CONNS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&c));
        c
    }
    pub fn peer_name(&self) -> Option<&str> {
        self.peer.get().and_then(|p| p.as_deref()).map(|i| i.name.as_str())
    }
    pub fn streams_started(&self) -> u64 {
        self.streams_started.load(Relaxed)
    }
    pub fn streams_active(&self) -> i64 {
        self.streams_active.load(Relaxed)
    }
}

/// Open server connections.
pub fn connections() -> Vec<Arc<ConnStats>> {
    CONNS.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect()
}

/// A bound listener (gRPC or debug) as `/rpcz` shows it.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    pub kind: &'static str,
    pub addr: String,
    owner: u64,
}

static LISTENERS: Mutex<Vec<ListenerInfo>> = Mutex::new(Vec::new());
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// Unregisters its listeners when dropped (held by the server).
pub struct ListenerGroup(u64);

impl Default for ListenerGroup {
    fn default() -> Self {
        ListenerGroup(NEXT_OWNER.fetch_add(1, Relaxed))
    }
}

impl ListenerGroup {
    pub fn add(&self, kind: &'static str, addr: String) {
        LISTENERS.lock().unwrap_or_else(|e| e.into_inner()).push(ListenerInfo { kind, addr, owner: self.0 });
    }
    pub fn clear(&self) {
        LISTENERS.lock().unwrap_or_else(|e| e.into_inner()).retain(|l| l.owner != self.0);
    }
}

impl Drop for ListenerGroup {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Listeners bound in this process.
pub fn listeners() -> Vec<ListenerInfo> {
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

// ---------------------------------------------------------------------------
// Recent failed and slow calls (for /rpcz)

/// A finished call kept for `/rpcz`.
#[derive(Clone, Debug)]
pub struct CallRecord {
    pub method: Arc<str>,
    pub code: Code,
    pub peer: Arc<str>,
    pub latency: Duration,
    pub at: SystemTime,
    pub request_id: Option<Box<str>>,
}

const RECENT: usize = 32;
static RECENT_FAILED: Mutex<Vec<CallRecord>> = Mutex::new(Vec::new());
static RECENT_SLOW: Mutex<Vec<CallRecord>> = Mutex::new(Vec::new());
static SLOW_NS: AtomicU64 = AtomicU64::new(250_000_000);

/// Calls at least this slow are kept in `/rpcz`'s recent slow calls (default 250 ms).
pub fn set_slow_call_threshold(d: Duration) {
    SLOW_NS.store(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
}

fn remember(list: &Mutex<Vec<CallRecord>>, rec: impl FnOnce() -> CallRecord) {
    // Never wait on the call path: under contention a record is skipped.
    if let Ok(mut l) = list.try_lock() {
        if l.len() >= RECENT {
            l.remove(0);
        }
        l.push(rec());
    }
}

/// Recent failed server calls, oldest first.
pub fn recent_failed() -> Vec<CallRecord> {
    RECENT_FAILED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Recent slow server calls, oldest first.
pub fn recent_slow() -> Vec<CallRecord> {
    RECENT_SLOW.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The wall-clock time for "last call" stamps and call records: the
/// kernel's coarse clock (a few ms resolution), which, unlike a precise read,
/// needs no clock-source access (measured: ~1% of a unary call's CPU).
fn coarse_now() -> SystemTime {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid clock id and timespec out-pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 && ts.tv_sec >= 0 {
            return UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    SystemTime::now()
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The server call hooks

/// One server call from its start to its status: in flight, latency, code,
/// client, connection stream counts and the trace span. Created by dispatch
/// before the ctx; finished (or dropped: cancelled) when the call ends.
pub struct ServerCall {
    stats: Option<&'static MethodStats>,
    conn: Option<Arc<ConnStats>>,
    client: u32,
    start: Instant,
    span: Option<crate::trace::ServerSpan>,
    done: bool,
    /// False when stats were off at the start: nothing to count at the end.
    counted: bool,
}

impl ServerCall {
    /// Call start. `headers`: the request headers, before the ctx is built
    /// from them (a sampled call's `traceparent` is rewritten to name the
    /// server span, so the handler's outgoing calls become its children).
    pub fn start(
        desc: &MethodDesc,
        peer: Option<&Arc<Identity>>,
        conn: Option<&Arc<ConnStats>>,
        headers: &mut HeaderMap,
        start: Instant,
    ) -> ServerCall {
        if !enabled() {
            let span = crate::trace::ServerSpan::start(desc, peer.map(|p| &**p), headers);
            return ServerCall { stats: None, conn: None, client: UNAUTHENTICATED, start, span, done: false, counted: false };
        }
        let stats = desc.obs_slot().server.get().map(static_stats);
        if let Some(s) = stats {
            s.in_flight.fetch_add(1, Relaxed);
        }
        if let Some(c) = conn {
            c.streams_started.fetch_add(1, Relaxed);
            c.streams_active.fetch_add(1, Relaxed);
            if c.peer.get().is_none() {
                let _ = c.peer.set(peer.cloned());
            }
        }
        let span = crate::trace::ServerSpan::start(desc, peer.map(|p| &**p), headers);
        ServerCall { stats, conn: conn.cloned(), client: client_index(peer.map(|p| &**p)), start, span, done: false, counted: true }
    }

    /// The call ended with `code` (the status actually sent).
    pub fn finish(mut self, code: Code, ctx: Option<&Ctx>) {
        self.end(code, ctx, None);
    }

    /// [`ServerCall::finish`] at `end` (a time the caller has just read).
    pub fn finish_at(mut self, code: Code, ctx: Option<&Ctx>, end: Instant) {
        self.end(code, ctx, Some(end));
    }

    fn end(&mut self, code: Code, ctx: Option<&Ctx>, end: Option<Instant>) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.counted {
            if let Some(span) = self.span.take() {
                span.end(code, ctx);
            }
            return;
        }
        let latency = end.map_or_else(|| self.start.elapsed(), |e| e.saturating_duration_since(self.start));
        let now = coarse_now();
        if let Some(c) = &self.conn {
            c.streams_active.fetch_sub(1, Relaxed);
        }
        if let Some(s) = self.stats {
            s.in_flight.fetch_sub(1, Relaxed);
            s.codes[code as usize].fetch_add(1, Relaxed);
            s.latency.observe(latency);
            s.last_call_ns.store(unix_ns(now), Relaxed);
            let edge = &s.edges[self.client as usize];
            edge.calls.fetch_add(1, Relaxed);
            if code != Code::Ok {
                edge.errors.fetch_add(1, Relaxed);
            }
            let slow = latency.as_nanos() as u64 >= SLOW_NS.load(Relaxed);
            if code != Code::Ok || slow {
                let rec = || CallRecord {
                    method: Arc::from(&*s.path),
                    code,
                    peer: Arc::from(clients().entry(self.client).map_or(OVERFLOW_LABEL, |e| &*e.name)),
                    latency,
                    at: now,
                    request_id: ctx.map(|c| c.request_id().into()),
                };
                if code != Code::Ok {
                    remember(&RECENT_FAILED, rec);
                } else {
                    remember(&RECENT_SLOW, rec);
                }
            }
        }
        if let Some(e) = clients().entry(self.client) {
            e.latency.observe(latency);
            e.last_seen_ns.store(unix_ns(now), Relaxed);
        }
        if let Some(span) = self.span.take() {
            span.end(code, ctx);
        }
    }

    /// Ends a call whose ctx was cancelled before it answered (client gone,
    /// deadline, shutdown); counted as `CANCELLED` or `DEADLINE_EXCEEDED`.
    pub fn abandon(mut self, code: Code, ctx: Option<&Ctx>) {
        self.end(code, ctx, None);
    }
}

impl Drop for ServerCall {
    fn drop(&mut self) {
        if !self.done {
            self.end(Code::Cancelled, None, None);
        }
    }
}

// ---------------------------------------------------------------------------
// Client side: per method and per channel

/// Stats of a method called through channels of this process.
pub struct ClientMethodStats {
    path: Box<str>,
    service: Box<str>,
    method: Box<str>,
    codes: [AtomicU64; 17],
    latency: Histogram,
    in_flight: AtomicI64,
    last_call_ns: AtomicU64,
    /// Calls of closed channels by target (for `/deps`): written when a
    /// channel is dropped, read at scrape time; live channels count in
    /// their own lock-free edge table.
    targets: Mutex<Vec<(Box<str>, u64, u64)>>,
}

impl ClientMethodStats {
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn count(&self, code: Code) -> u64 {
        self.codes[code as usize].load(Relaxed)
    }
    pub fn latency(&self) -> HistogramSnapshot {
        self.latency.snapshot()
    }
}

static CLIENT_METHODS: Mutex<Vec<Arc<ClientMethodStats>>> = Mutex::new(Vec::new());

fn client_method_stats(desc: &MethodDesc) -> &Arc<ClientMethodStats> {
    desc.obs_slot().client.get_or_init(|| {
        let mut all = CLIENT_METHODS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = all.iter().find(|m| &*m.path == desc.path()) {
            return m.clone();
        }
        let m = Arc::new(ClientMethodStats {
            path: desc.path().into(),
            service: desc.service().into(),
            method: desc.name().into(),
            codes: Default::default(),
            latency: Histogram::default(),
            in_flight: AtomicI64::new(0),
            last_call_ns: AtomicU64::new(0),
            targets: Mutex::new(Vec::new()),
        });
        all.push(m.clone());
        m
    })
}

/// Client methods called so far in this process.
pub fn client_methods() -> Vec<Arc<ClientMethodStats>> {
    CLIENT_METHODS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A channel's counters (for `/rpcz`).
pub struct ChannelStats {
    pub target: Box<str>,
    pub created: SystemTime,
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicI64,
    last_call_ns: AtomicU64,
    /// Calls and errors per method on this channel: an insert-only,
    /// lock-free table (methods past its size count nowhere but per method).
    edges: Box<[OnceLock<ChannelEdge>]>,
}

/// Calls of one method through one channel.
struct ChannelEdge {
    method: Arc<ClientMethodStats>,
    calls: AtomicU64,
    errors: AtomicU64,
}

const CHANNEL_EDGES: usize = 64;

static CHANNELS: Mutex<Vec<Weak<ChannelStats>>> = Mutex::new(Vec::new());

impl ChannelStats {
    pub fn new(target: &str) -> Arc<ChannelStats> {
        let c = Arc::new(ChannelStats {
            target: target.into(),
            created: SystemTime::now(),
            started: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            last_call_ns: AtomicU64::new(0),
            edges: (0..CHANNEL_EDGES).map(|_| OnceLock::new()).collect(),
        });
        let mut all = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&c));
        c
    }
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }
    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Relaxed)
    }

    fn edge(&self, m: &Arc<ClientMethodStats>) -> Option<&ChannelEdge> {
        let h = (Arc::as_ptr(m) as usize) >> 4;
        for i in 0..CHANNEL_EDGES {
            let slot = &self.edges[(h + i) % CHANNEL_EDGES];
            let e = slot.get_or_init(|| ChannelEdge { method: m.clone(), calls: AtomicU64::new(0), errors: AtomicU64::new(0) });
            if Arc::ptr_eq(&e.method, m) {
                return Some(e);
            }
        }
        None
    }
}

impl Drop for ChannelStats {
    /// Keeps the channel's calls in `/deps` after it is gone.
    fn drop(&mut self) {
        for e in self.edges.iter().filter_map(OnceLock::get) {
            let (calls, errors) = (e.calls.load(Relaxed), e.errors.load(Relaxed));
            if calls == 0 {
                continue;
            }
            let mut t = e.method.targets.lock().unwrap_or_else(|e| e.into_inner());
            match t.iter_mut().find(|(name, _, _)| **name == *self.target) {
                Some(x) => {
                    x.1 += calls;
                    x.2 += errors;
                }
                None => t.push((self.target.clone(), calls, errors)),
            }
        }
    }
}

/// Live channels of this process.
pub fn channels() -> Vec<Arc<ChannelStats>> {
    CHANNELS.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect()
}

/// One client call from its start to its status.
pub struct ClientCall {
    /// `None` when stats were off at the start.
    method: Option<Arc<ClientMethodStats>>,
    channel: Arc<ChannelStats>,
    start: Instant,
    span: Option<crate::trace::ClientSpan>,
    done: bool,
}

impl ClientCall {
    /// Call start. `headers`: the outgoing headers (a sampled call's
    /// `traceparent` is set to name the client span).
    pub fn start(channel: &Arc<ChannelStats>, desc: &MethodDesc, headers: &mut HeaderMap) -> ClientCall {
        let method = enabled().then(|| client_method_stats(desc).clone());
        if let Some(m) = &method {
            m.in_flight.fetch_add(1, Relaxed);
            channel.started.fetch_add(1, Relaxed);
            channel.in_flight.fetch_add(1, Relaxed);
        }
        let span = crate::trace::ClientSpan::start(desc, &channel.target, headers);
        ClientCall { method, channel: channel.clone(), start: Instant::now(), span, done: false }
    }

    /// The call ended with `code`.
    pub fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let Some(m) = &self.method else {
            if let Some(span) = self.span.take() {
                span.end(code);
            }
            return;
        };
        m.in_flight.fetch_sub(1, Relaxed);
        m.codes[code as usize].fetch_add(1, Relaxed);
        m.latency.observe(self.start.elapsed());
        let now = unix_ns(SystemTime::now());
        m.last_call_ns.store(now, Relaxed);
        let ch = &self.channel;
        ch.in_flight.fetch_sub(1, Relaxed);
        ch.last_call_ns.store(now, Relaxed);
        if code == Code::Ok {
            ch.succeeded.fetch_add(1, Relaxed);
        } else {
            ch.failed.fetch_add(1, Relaxed);
        }
        if let Some(e) = ch.edge(m) {
            e.calls.fetch_add(1, Relaxed);
            if code != Code::Ok {
                e.errors.fetch_add(1, Relaxed);
            }
        }
        if let Some(span) = self.span.take() {
            span.end(code);
        }
    }
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

// ---------------------------------------------------------------------------
// Other counters

/// Other counters shown under `/metrics` (e.g. kept by the TLS layer):
/// a function that appends Prometheus text (with its own `# HELP`/`# TYPE`).
pub type Collector = Box<dyn Fn(&mut String) + Send + Sync>;
static COLLECTORS: Mutex<Vec<Collector>> = Mutex::new(Vec::new());

/// Adds a collector to `/metrics`. Its metric names must start with `courier_`
/// and not clash with the ones here.
pub fn register_collector(c: Collector) {
    COLLECTORS.lock().unwrap_or_else(|e| e.into_inner()).push(c);
}

// ---------------------------------------------------------------------------
// Prometheus text

fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

struct W<'a>(&'a mut String);

impl W<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write;
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        use std::fmt::Write;
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cum = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, n) in h.buckets.iter().enumerate() {
            cum += n;
            let le = LATENCY_BUCKETS.get(i).map_or("+Inf".to_string(), |b| fmt_f64(*b));
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.line(&bucket, &l, cum);
        }
        self.line(&format!("{name}_sum"), labels, fmt_f64(h.sum_seconds));
        self.line(&format!("{name}_count"), labels, h.count);
    }
}

/// Per-client totals at this moment: (name, requests, errors, rejections by reason, last seen).
pub struct ClientTotals {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub rejections: [u64; NR],
    pub latency: HistogramSnapshot,
    pub last_seen: Option<SystemTime>,
}

/// Per-client totals over every served method.
pub fn client_totals() -> Vec<ClientTotals> {
    let t = clients();
    let methods = server_methods();
    let mut out = Vec::new();
    for idx in 0..t.width() as u32 {
        let Some(e) = t.entry(idx) else { continue };
        let (mut req, mut err) = (0, 0);
        for m in &methods {
            if let Some(edge) = m.edges.get(idx as usize) {
                req += edge.calls.load(Relaxed);
                err += edge.errors.load(Relaxed);
            }
        }
        let rejections = std::array::from_fn(|i| e.rejections[i].load(Relaxed));
        if req == 0 && rejections.iter().all(|r| *r == 0) {
            continue;
        }
        let ls = e.last_seen_ns.load(Relaxed);
        out.push(ClientTotals {
            name: e.name.to_string(),
            requests: req,
            errors: err,
            rejections,
            latency: e.latency.snapshot(),
            last_seen: (ls > 0).then(|| UNIX_EPOCH + Duration::from_nanos(ls)),
        });
    }
    out
}

/// One caller → method edge (for `/deps`).
pub struct DepEdge {
    pub caller: String,
    pub service: String,
    pub method: String,
    pub calls: u64,
    pub errors: u64,
}

/// Who called which served method, how often, with how many errors.
pub fn callers() -> Vec<DepEdge> {
    let t = clients();
    let mut out = Vec::new();
    for m in server_methods() {
        for (idx, edge) in m.edges.iter().enumerate() {
            let calls = edge.calls.load(Relaxed);
            if calls == 0 {
                continue;
            }
            let Some(e) = t.entry(idx as u32) else { continue };
            out.push(DepEdge {
                caller: e.name.to_string(),
                service: m.service.to_string(),
                method: m.method.to_string(),
                calls,
                errors: edge.errors.load(Relaxed),
            });
        }
    }
    out
}

/// One outgoing edge: this process called `service/method` at `target`.
pub struct CalleeEdge {
    pub target: String,
    pub service: String,
    pub method: String,
    pub calls: u64,
    pub errors: u64,
}

/// What this process called through its channels.
pub fn callees() -> Vec<CalleeEdge> {
    let mut out: Vec<CalleeEdge> = Vec::new();
    let mut add = |target: &str, m: &ClientMethodStats, calls: u64, errors: u64| {
        match out.iter_mut().find(|e| e.target == target && e.service == *m.service && e.method == *m.method) {
            Some(e) => {
                e.calls += calls;
                e.errors += errors;
            }
            None => out.push(CalleeEdge { target: target.to_string(), service: m.service.to_string(), method: m.method.to_string(), calls, errors }),
        }
    };
    for ch in channels() {
        for e in ch.edges.iter().filter_map(OnceLock::get) {
            let calls = e.calls.load(Relaxed);
            if calls > 0 {
                add(&ch.target, &e.method, calls, e.errors.load(Relaxed));
            }
        }
    }
    for m in client_methods() {
        let closed: Vec<(Box<str>, u64, u64)> = m.targets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (target, calls, errors) in closed {
            add(&target, &m, calls, errors);
        }
    }
    out
}

/// A summary per served method for pages: totals, errors, in flight, latency.
pub struct MethodSummary {
    pub service: String,
    pub method: String,
    pub requests: u64,
    pub errors: u64,
    pub in_flight: i64,
    pub queue_size: i64,
    pub latency: HistogramSnapshot,
    pub last_call: Option<SystemTime>,
}

pub fn method_summaries() -> Vec<MethodSummary> {
    server_methods()
        .iter()
        .map(|m| {
            // OK first: calls finishing meanwhile only raise the total read
            // after it, so errors cannot go below zero (which panicked in
            // debug builds and read as 2^64 - n in release ones).
            let ok = m.count(Code::Ok);
            let total = m.total();
            let ls = m.last_call_ns.load(Relaxed);
            MethodSummary {
                service: m.service.to_string(),
                method: m.method.to_string(),
                requests: total,
                errors: total.saturating_sub(ok),
                in_flight: m.in_flight(),
                queue_size: m.queue_size(),
                latency: m.latency(),
                last_call: (ls > 0).then(|| UNIX_EPOCH + Duration::from_nanos(ls)),
            }
        })
        .collect()
}

/// Client-method summaries, like [`method_summaries`].
pub fn client_method_summaries() -> Vec<MethodSummary> {
    client_methods()
        .iter()
        .map(|m| {
            let ok = m.count(Code::Ok); // first, as in `method_summaries`
            let total: u64 = m.codes.iter().map(|c| c.load(Relaxed)).sum();
            let ls = m.last_call_ns.load(Relaxed);
            MethodSummary {
                service: m.service.to_string(),
                method: m.method.to_string(),
                requests: total,
                errors: total.saturating_sub(ok),
                in_flight: m.in_flight.load(Relaxed),
                queue_size: 0,
                latency: m.latency(),
                last_call: (ls > 0).then(|| UNIX_EPOCH + Duration::from_nanos(ls)),
            }
        })
        .collect()
}

/// Channel counters for `/rpcz`: (target, started, succeeded, failed, in flight, last call).
pub fn channel_summaries() -> Vec<(String, u64, u64, u64, i64, Option<SystemTime>)> {
    channels()
        .iter()
        .map(|c| {
            let ls = c.last_call_ns.load(Relaxed);
            (
                c.target.to_string(),
                c.started(),
                c.succeeded(),
                c.failed(),
                c.in_flight.load(Relaxed),
                (ls > 0).then(|| UNIX_EPOCH + Duration::from_nanos(ls)),
            )
        })
        .collect()
}

/// Every stat of this process as Prometheus text exposition format (0.0.4).
pub fn render_prometheus() -> String {
    let mut out = String::with_capacity(16 * 1024);
    let mut w = W(&mut out);
    let methods = server_methods();

    w.head("courier_server_requests_total", "counter", "Calls answered by served methods, by status code.");
    for m in &methods {
        for code in Code::ALL {
            let n = m.count(code);
            if n > 0 || code == Code::Ok {
                w.line("courier_server_requests_total", &[("service", &m.service), ("method", &m.method), ("code", code.name())], n);
            }
        }
    }
    w.head("courier_server_latency_seconds", "histogram", "Time from a call's arrival to its status, per method.");
    for m in &methods {
        w.histogram("courier_server_latency_seconds", &[("service", &m.service), ("method", &m.method)], &m.latency());
    }
    w.head("courier_server_in_flight", "gauge", "Calls of a method started and not answered yet.");
    for m in &methods {
        w.line("courier_server_in_flight", &[("service", &m.service), ("method", &m.method)], m.in_flight());
    }
    w.head("courier_server_queue_size", "gauge", "Calls of a method waiting in its queue.");
    for m in &methods {
        w.line("courier_server_queue_size", &[("service", &m.service), ("method", &m.method)], m.queue_size());
    }
    w.head("courier_server_queue_wait_seconds", "histogram", "Time calls of a method waited in its queue.");
    for m in &methods {
        w.histogram("courier_server_queue_wait_seconds", &[("service", &m.service), ("method", &m.method)], &m.queue_wait());
    }
    w.head("courier_server_rejections_total", "counter", "Calls of a method refused by admission, by reason.");
    for m in &methods {
        for r in RejectReason::ALL {
            let n = m.rejections(r);
            if n > 0 {
                w.line("courier_server_rejections_total", &[("service", &m.service), ("method", &m.method), ("reason", r.as_str())], n);
            }
        }
    }

    let totals = client_totals();
    w.head("courier_server_client_requests_total", "counter", "Calls answered per client identity.");
    for c in &totals {
        w.line("courier_server_client_requests_total", &[("client", &c.name)], c.requests);
    }
    w.head("courier_server_client_errors_total", "counter", "Calls answered with a non-OK status per client identity.");
    for c in &totals {
        w.line("courier_server_client_errors_total", &[("client", &c.name)], c.errors);
    }
    w.head("courier_server_client_rejections_total", "counter", "Calls refused by admission per client identity, by reason.");
    for c in &totals {
        for r in RejectReason::ALL {
            let n = c.rejections[r as usize];
            if n > 0 {
                w.line("courier_server_client_rejections_total", &[("client", &c.name), ("reason", r.as_str())], n);
            }
        }
    }

    let cms = client_methods();
    w.head("courier_client_requests_total", "counter", "Calls made through channels of this process, by status code.");
    for m in &cms {
        for code in Code::ALL {
            let n = m.count(code);
            if n > 0 || code == Code::Ok {
                w.line("courier_client_requests_total", &[("service", &m.service), ("method", &m.method), ("code", code.name())], n);
            }
        }
    }
    w.head("courier_client_latency_seconds", "histogram", "Time from sending a call to its status, per method.");
    for m in &cms {
        w.histogram("courier_client_latency_seconds", &[("service", &m.service), ("method", &m.method)], &m.latency());
    }
    w.head("courier_client_in_flight", "gauge", "Calls made through channels and not answered yet, per method.");
    for m in &cms {
        w.line("courier_client_in_flight", &[("service", &m.service), ("method", &m.method)], m.in_flight.load(Relaxed));
    }

    // TLS: the TLS layer's own counters (crate::tls::tls_stats), exported here.
    let tls = crate::tls::tls_stats();
    w.head("courier_tls_handshakes_total", "counter", "Completed TLS handshakes by side, peer identity and kind (full or resumed).");
    for h in &tls.handshakes {
        for (kind, n) in [("full", h.full), ("resumed", h.resumed)] {
            w.line("courier_tls_handshakes_total", &[("side", h.side.as_str()), ("peer", &h.peer), ("kind", kind)], n);
        }
    }
    w.head("courier_tls_handshake_errors_total", "counter", "Failed TLS handshakes by side and reason.");
    for e in &tls.errors {
        w.line("courier_tls_handshake_errors_total", &[("side", e.side.as_str()), ("reason", e.reason.as_str())], e.count);
    }
    w.head("courier_tls_cert_reloads_total", "counter", "Certificate file reloads by result.");
    w.line("courier_tls_cert_reloads_total", &[("result", "ok")], tls.reloads_ok);
    w.line("courier_tls_cert_reloads_total", &[("result", "refused")], tls.reloads_failed);

    let conns = connections();
    w.head("courier_server_connections", "gauge", "Open server connections.");
    w.line("courier_server_connections", &[], conns.len());

    w.head("courier_build_info", "gauge", "Courier version and build; the value is always 1.");
    w.line("courier_build_info", &[("version", env!("CARGO_PKG_VERSION")), ("git_hash", crate::debug::GIT_HASH)], 1);
    w.head("courier_process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.");
    w.line("courier_process_start_time_seconds", &[], fmt_f64(crate::debug::process_start_unix()));

    for c in COLLECTORS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        c(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::{DeadlinePolicy, MethodKind};

    fn desc(path: &str) -> MethodDesc {
        MethodDesc::new(path, MethodKind::Unary, DeadlinePolicy::NoDeadline).unwrap()
    }

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.observe(Duration::from_micros(80));
        }
        h.observe(Duration::from_millis(40));
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.buckets[1], 99, "80µs falls in (50µs, 100µs]");
        let p50 = s.quantile(0.5).unwrap();
        assert!(p50 > 0.00005 && p50 <= 0.0001, "{p50}");
        let p999 = s.quantile(0.999).unwrap();
        assert!(p999 > 0.025 && p999 <= 0.05, "{p999}");
        h.observe(Duration::from_secs(100));
        assert_eq!(h.snapshot().buckets[NB - 1], 1);
    }

    #[test]
    fn server_call_counts_codes_clients_and_edges() {
        let d = desc("/stats.unit.S/Count");
        let m = register_server_method(&d);
        assert!(Arc::ptr_eq(&m, &register_server_method(&d.clone())), "clones share the stats");
        let alice = Arc::new(Identity { spiffe_id: "spiffe://t/alice-unit".into(), name: "alice-unit".into() });
        let mut h = HeaderMap::new();
        let c = ServerCall::start(&d, Some(&alice), None, &mut h, Instant::now());
        assert_eq!(m.in_flight(), 1);
        c.finish(Code::Ok, None);
        ServerCall::start(&d, Some(&alice), None, &mut h, Instant::now()).finish(Code::NotFound, None);
        drop(ServerCall::start(&d, None, None, &mut h, Instant::now()));
        assert_eq!(m.in_flight(), 0);
        assert_eq!((m.count(Code::Ok), m.count(Code::NotFound), m.count(Code::Cancelled)), (1, 1, 1));
        m.record_rejection(Some(&alice), RejectReason::RateLimited);
        let a = client_totals().into_iter().find(|c| c.name == "alice-unit").unwrap();
        assert_eq!((a.requests, a.errors, a.rejections[RejectReason::RateLimited as usize]), (2, 1, 1));
        let e: Vec<_> = callers().into_iter().filter(|e| e.method == "Count").collect();
        assert!(e.iter().any(|e| e.caller == "alice-unit" && e.calls == 2 && e.errors == 1));
        assert!(e.iter().any(|e| e.caller == "unauthenticated" && e.calls == 1));
        let text = render_prometheus();
        assert!(text.contains("courier_server_requests_total{service=\"stats.unit.S\",method=\"Count\",code=\"NOT_FOUND\"} 1"), "{text}");
        assert!(text.contains("courier_server_client_rejections_total{client=\"alice-unit\",reason=\"rate_limited\"} 1"));
        assert!(text.contains("courier_server_latency_seconds_bucket{service=\"stats.unit.S\",method=\"Count\",le=\"+Inf\"} 3"));
    }

    #[test]
    fn summaries_read_while_calls_finish_count_no_negative_errors() {
        let d = desc("/stats.unit.S/Race");
        let m = register_server_method(&d);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finisher = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut h = HeaderMap::new();
                while !stop.load(Relaxed) {
                    ServerCall::start(&d, None, None, &mut h, Instant::now()).finish(Code::Ok, None);
                }
            }
        });
        while m.count(Code::Ok) < 1000 {
            std::thread::yield_now();
        }
        for _ in 0..20_000 {
            let s = method_summaries().into_iter().find(|s| s.method == "Race").unwrap();
            assert!(s.errors <= s.requests, "{} errors of {} calls", s.errors, s.requests);
        }
        stop.store(true, Relaxed);
        finisher.join().unwrap();
    }

    #[test]
    fn client_table_is_bounded_and_stable() {
        let t: &'static ClientTable = Box::leak(Box::new(ClientTable::new(8)));
        let a = t.index_of("table-a");
        assert!(a >= FIRST_NAMED);
        assert_eq!(t.index_of("table-a"), a);
        assert_eq!(t.entry(a).unwrap().name.as_ref(), "table-a");
        // Fill the table: every index stays below the width, extras overflow.
        let mut overflowed = false;
        for i in 0..20 {
            let ix = t.index_of(&format!("fill-{i}"));
            assert!((ix as usize) < t.width());
            overflowed |= ix == OVERFLOW;
        }
        assert!(overflowed);
        assert_eq!(t.index_of("table-a"), a, "known names keep their slot");
        assert_eq!(t.index_of("fill-19"), OVERFLOW);
        assert_eq!(client_index(None), UNAUTHENTICATED);
    }

    #[test]
    fn callee_edges_survive_their_channel() {
        let d = desc("/stats.unit.Callee/Get");
        let ch = ChannelStats::new("callee.unit:1");
        for code in [Code::Ok, Code::Ok, Code::Unavailable] {
            let mut h = HeaderMap::new();
            ClientCall::start(&ch, &d, &mut h).finish(code);
        }
        drop(ClientCall::start(&ch, &d, &mut HeaderMap::new()));
        let find = || callees().into_iter().find(|e| e.target == "callee.unit:1" && e.method == "Get").map(|e| (e.calls, e.errors));
        assert_eq!(find(), Some((4, 2)));
        assert_eq!((ch.started(), ch.succeeded(), ch.failed()), (4, 2, 2));
        drop(ch);
        assert_eq!(find(), Some((4, 2)), "kept after the channel is gone");
    }

    #[test]
    fn collectors_render() {
        register_collector(Box::new(|s| s.push_str("# HELP courier_unit_extra x\n# TYPE courier_unit_extra gauge\ncourier_unit_extra 7\n")));
        let text = render_prometheus();
        assert!(text.contains("# TYPE courier_tls_handshakes_total counter"));
        assert!(text.contains("courier_unit_extra 7"));
    }
}
