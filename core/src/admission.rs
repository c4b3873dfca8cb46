//! Admission control, per method, before the host language sees a call or a
//! byte of it is decoded: ACL → rate limit → queue → workpool slot.
//!
//! Each method has a [`Gate`]. Its limits ([`crate::limits::MethodLimits`]) are
//! swapped atomically on reload; its state (running calls, waiting calls) is
//! not, so a reload never disturbs calls in flight.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

use crate::context::{Ctx, Identity};
use crate::limits::{IdentityKey, MethodLimits, QueueOrder, Rate};
use crate::status::Status;

/// Why a call was not admitted. Each maps to one status code (DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The ACL denies peers without an identity: `UNAUTHENTICATED`.
    Unauthenticated,
    /// The ACL denies this identity: `PERMISSION_DENIED`.
    Denied,
    /// Over the identity's requests per second: `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// The queue is at `queue_size`: `UNAVAILABLE`.
    QueueFull,
    /// Waited `queue_timeout_ms` in the queue: `UNAVAILABLE`.
    QueueTimeout,
    /// Dropped from a CoDel queue that stayed above its target delay: `UNAVAILABLE`.
    CodelDrop,
}

impl Rejection {
    /// The label used in stats (`reason`).
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::Denied => "acl_denied",
            Rejection::RateLimited => "rate_limited",
            Rejection::QueueFull => "queue_full",
            Rejection::QueueTimeout => "queue_timeout",
            Rejection::CodelDrop => "codel_drop",
        }
    }

    /// The status the client receives.
    pub fn status(self, method: &str, peer: Option<&Identity>) -> Status {
        let who = peer.map_or("unauthenticated peer", |p| p.spiffe_id.as_str());
        match self {
            Rejection::Unauthenticated => {
                Status::new(crate::status::Code::Unauthenticated, format!("{method} requires a client identity"))
            }
            Rejection::Denied => Status::new(crate::status::Code::PermissionDenied, format!("{who} may not call {method}")),
            Rejection::RateLimited => Status::resource_exhausted(format!("{who} is over its rate limit for {method}")),
            Rejection::QueueFull => Status::unavailable(format!("server overloaded: the queue of {method} is full")),
            Rejection::QueueTimeout => Status::unavailable(format!("server overloaded: timed out in the queue of {method}")),
            Rejection::CodelDrop => Status::unavailable(format!("server overloaded: dropped from the queue of {method}")),
        }
    }
}

enum Rule {
    Unlimited,
    Denied,
    Limited(u32, Arc<DefaultKeyedRateLimiter<String>>),
}

impl Rule {
    /// The rule for `rate`; an unchanged rate keeps its buckets from `old`, so
    /// a reload never hands out a fresh burst.
    fn new(rate: Rate, old: Option<&Rule>) -> Rule {
        match rate {
            Rate::Unlimited => Rule::Unlimited,
            Rate::Denied => Rule::Denied,
            Rate::PerSecond(n) => match old {
                Some(Rule::Limited(m, l)) if *m == n => Rule::Limited(n, l.clone()),
                // N per second with a one-second burst (N tokens).
                _ => {
                    let q = Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
                    Rule::Limited(n, Arc::new(RateLimiter::keyed(q)))
                }
            },
        }
    }
}

struct Acl {
    named: HashMap<String, Rule>,
    authenticated: Option<Rule>,
    unauthenticated: Option<Rule>,
}

/// One method's limits in force, with their rate limiters.
struct Policy {
    limits: MethodLimits,
    acl: Option<Acl>,
}

impl Policy {
    fn new(limits: MethodLimits, old: Option<&Policy>) -> Policy {
        let old = old.and_then(|p| p.acl.as_ref());
        let acl = limits.rate_acls.as_ref().map(|acls| {
            let mut acl = Acl { named: HashMap::new(), authenticated: None, unauthenticated: None };
            for (k, r) in acls {
                match k {
                    IdentityKey::Authenticated => acl.authenticated = Some(Rule::new(*r, old.and_then(|o| o.authenticated.as_ref()))),
                    IdentityKey::Unauthenticated => {
                        acl.unauthenticated = Some(Rule::new(*r, old.and_then(|o| o.unauthenticated.as_ref())))
                    }
                    IdentityKey::Named(n) => {
                        acl.named.insert(n.clone(), Rule::new(*r, old.and_then(|o| o.named.get(n))));
                    }
                }
            }
            acl
        });
        Policy { limits, acl }
    }

    fn check_acl(&self, peer: Option<&Identity>) -> Result<(), Rejection> {
        let Some(acl) = &self.acl else { return Ok(()) };
        let (rule, key) = match peer {
            Some(p) => {
                let exact = acl.named.get(&p.spiffe_id).or_else(|| acl.named.get(&p.name));
                (exact.or(acl.authenticated.as_ref()), p.spiffe_id.as_str())
            }
            None => (acl.unauthenticated.as_ref(), ""),
        };
        match rule {
            None | Some(Rule::Denied) => Err(if peer.is_some() { Rejection::Denied } else { Rejection::Unauthenticated }),
            Some(Rule::Unlimited) => Ok(()),
            Some(Rule::Limited(_, l)) => l.check_key(&key.to_string()).map_err(|_| Rejection::RateLimited),
        }
    }
}

enum Grant {
    Slot,
    Dropped,
}

struct Waiter {
    id: u64,
    at: Instant,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    /// CoDel state: since when the queue delay has stayed above target, and
    /// how many calls it dropped.
    codel_above_since: Option<Instant>,
    codel_drops: u32,
}

/// Admission state of one method. Shared by its calls; thread-safe.
pub struct Gate {
    method: Arc<str>,
    policy: ArcSwap<Policy>,
    running: AtomicU32,
    /// Waiters in `queue` (a lock-free hint for the release fast path).
    queued: AtomicUsize,
    queue: Mutex<Queue>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("method", &self.method).field("running", &self.running).field("queued", &self.queued).finish()
    }
}

/// A workpool slot: the call may run. Dropping it frees the slot for the next
/// queued call.
#[must_use]
pub struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl Gate {
    pub fn new(method: Arc<str>, limits: MethodLimits) -> Arc<Gate> {
        Arc::new(Gate {
            method,
            policy: ArcSwap::from_pointee(Policy::new(limits, None)),
            running: AtomicU32::new(0),
            queued: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Puts new limits in force; calls running or queued keep their places.
    pub fn set_limits(self: &Arc<Self>, limits: MethodLimits) {
        let old = self.policy.load();
        self.policy.store(Arc::new(Policy::new(limits, Some(&old))));
        // A higher max_concurrency admits waiting calls now.
        self.pump();
    }

    pub fn limits(&self) -> MethodLimits {
        self.policy.load().limits.clone()
    }

    /// Calls holding a slot.
    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// Calls waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// ACL, rate limit, then a slot, waiting in the queue if none is free. The
    /// caller bounds the wait by the call's deadline; dropping the future
    /// leaves the queue cleanly.
    pub async fn admit(self: &Arc<Self>, ctx: &Ctx) -> Result<Permit, Rejection> {
        match self.try_admit(ctx)? {
            Some(p) => Ok(p),
            None => self.wait_for_slot().await,
        }
    }

    /// The synchronous part of [`Gate::admit`]: ACL, rate limit, then a free
    /// slot if there is one. `Ok(None)`: no slot is free; the call must wait
    /// with [`Gate::wait_for_slot`] (ACL and rate limit are already passed:
    /// calling `admit` instead would count the call twice against its rate).
    pub fn try_admit(self: &Arc<Self>, ctx: &Ctx) -> Result<Option<Permit>, Rejection> {
        let policy = self.policy.load();
        policy.check_acl(ctx.peer_identity())?;
        let Some(max) = policy.limits.max_concurrency else {
            self.running.fetch_add(1, Ordering::SeqCst);
            return Ok(Some(Permit { gate: self.clone() }));
        };
        Ok(self.try_acquire(max).then(|| Permit { gate: self.clone() }))
    }

    /// Waits in the queue for a slot (after [`Gate::try_admit`] found none).
    /// The caller bounds the wait by the call's deadline; dropping the future
    /// leaves the queue cleanly.
    pub async fn wait_for_slot(self: &Arc<Self>) -> Result<Permit, Rejection> {
        let policy = self.policy.load();
        let Some(max) = policy.limits.max_concurrency else {
            // Limits were reloaded without a bound since `try_admit`.
            self.running.fetch_add(1, Ordering::SeqCst);
            return Ok(Permit { gate: self.clone() });
        };
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut q = self.lock();
            // Announce the waiter before the last try, so a concurrent release
            // either sees it or has freed the slot this try takes (see release).
            self.queued.fetch_add(1, Ordering::SeqCst);
            if self.try_acquire(max) {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Ok(Permit { gate: self.clone() });
            }
            if q.waiters.len() >= policy.limits.queue_size as usize {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(Rejection::QueueFull);
            }
            q.waiters.push_back(Waiter { id, at: Instant::now(), tx });
        }
        let timeout = policy.limits.queue_timeout;
        drop(policy);
        let mut waiting = Waiting { gate: self.clone(), id, rx: Some(rx) };
        let granted = match timeout {
            Some(t) => tokio::time::timeout(t, waiting.rx.as_mut().expect("set above")).await.ok(),
            None => Some(waiting.rx.as_mut().expect("set above").await),
        };
        match granted {
            Some(Ok(Grant::Slot)) => {
                waiting.rx = None;
                Ok(Permit { gate: self.clone() })
            }
            Some(Ok(Grant::Dropped)) => {
                waiting.rx = None;
                Err(Rejection::CodelDrop)
            }
            // The sender went away without a grant: only when the server stops.
            Some(Err(_)) => Err(Rejection::QueueTimeout),
            None => Err(Rejection::QueueTimeout), // `waiting`'s drop leaves the queue
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_acquire(&self, max: u32) -> bool {
        self.running.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).is_ok()
    }

    fn release(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            self.pump();
        }
    }

    /// Hands free slots to waiting calls, in the queue's order.
    fn pump(&self) {
        let policy = self.policy.load();
        let max = policy.limits.max_concurrency.unwrap_or(u32::MAX);
        let mut q = self.lock();
        while !q.waiters.is_empty() && self.try_acquire(max) {
            let mut granted = false;
            while let Some((w, grant)) = next_waiter(&mut q, &policy.limits) {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                match grant {
                    Grant::Slot => {
                        if w.tx.send(Grant::Slot).is_ok() {
                            granted = true;
                            break;
                        }
                    }
                    Grant::Dropped => {
                        let _ = w.tx.send(Grant::Dropped);
                    }
                }
            }
            if !granted {
                self.running.fetch_sub(1, Ordering::SeqCst);
                break;
            }
        }
    }

    fn leave(&self, id: u64) {
        let mut q = self.lock();
        if let Some(i) = q.waiters.iter().position(|w| w.id == id) {
            q.waiters.remove(i);
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The next waiter to answer and how: LIFO takes the newest, FIFO the oldest,
/// CoDel the oldest unless the queue is standing and it waited too long.
fn next_waiter(q: &mut Queue, limits: &MethodLimits) -> Option<(Waiter, Grant)> {
    match limits.order {
        QueueOrder::Lifo => q.waiters.pop_back().map(|w| (w, Grant::Slot)),
        QueueOrder::Fifo => q.waiters.pop_front().map(|w| (w, Grant::Slot)),
        QueueOrder::Codel => {
            // CoDel as RPC servers use it ("Fail at Scale", Facebook): FIFO while
            // the queue drains; once its delay has stayed above the target for a
            // whole interval, calls that waited longer than the target are
            // dropped, so the slots go to calls that can still be served fast.
            let w = q.waiters.pop_front()?;
            let now = Instant::now();
            let sojourn = now.saturating_duration_since(w.at);
            if sojourn <= limits.codel_target {
                q.codel_above_since = None;
                return Some((w, Grant::Slot));
            }
            let since = *q.codel_above_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= limits.codel_interval {
                q.codel_drops = q.codel_drops.saturating_add(1);
                Some((w, Grant::Dropped))
            } else {
                Some((w, Grant::Slot))
            }
        }
    }
}

/// A queued call; leaving the queue (timeout, deadline, client gone) removes
/// it, and a slot granted at that very moment is passed on, never lost.
struct Waiting {
    gate: Arc<Gate>,
    id: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        match rx.try_recv() {
            Ok(Grant::Slot) => self.gate.release(),
            Ok(Grant::Dropped) => {}
            Err(_) => self.gate.leave(self.id),
        }
    }
}

/// The gates of a server, by method path, for reloads and stats.
#[derive(Default)]
pub struct Gates {
    by_path: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
}

impl Gates {
    pub fn insert(&self, path: Arc<str>, gate: Arc<Gate>) {
        self.by_path.lock().unwrap_or_else(|e| e.into_inner()).insert(path, gate);
    }

    pub fn all(&self) -> Vec<(Arc<str>, Arc<Gate>)> {
        self.by_path.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitsConfig;
    use std::time::Duration;

    fn limits(yaml_entry: &str) -> MethodLimits {
        let text = format!("limits:\n  a.B:\n    M:\n{}", yaml_entry.lines().map(|l| format!("      {l}\n")).collect::<String>());
        LimitsConfig::parse(&text, "t").unwrap().method_limits("a.B", "M")
    }

    fn peer(name: &str) -> Ctx {
        let id = Identity { spiffe_id: format!("spiffe://example.org/{name}"), name: name.into() };
        Ctx::for_server_call("/a.B/M".into(), None, Some(Arc::new(id)), Default::default())
    }

    fn anon() -> Ctx {
        Ctx::for_server_call("/a.B/M".into(), None, None, Default::default())
    }

    #[tokio::test]
    async fn acl_rules_by_identity() {
        let g = Gate::new("/a.B/M".into(), limits("rate_acls:\n  ocr: -1\n  spiffe://example.org/web: -1\n  banned: 0\n  authenticated: 0\n  unauthenticated: 0"));
        assert!(g.admit(&peer("ocr")).await.is_ok(), "short name");
        assert!(g.admit(&peer("web")).await.is_ok(), "full SPIFFE ID");
        assert_eq!(g.admit(&peer("banned")).await.err(), Some(Rejection::Denied));
        assert_eq!(g.admit(&peer("stranger")).await.err(), Some(Rejection::Denied));
        assert_eq!(g.admit(&anon()).await.err(), Some(Rejection::Unauthenticated));
        let open = Gate::new("/a.B/M".into(), limits("rate_acls:\n  authenticated: -1\n  unauthenticated: -1"));
        assert!(open.admit(&peer("anyone")).await.is_ok());
        assert!(open.admit(&anon()).await.is_ok());
        let unlisted = Gate::new("/a.B/M".into(), limits("rate_acls:\n  ocr: -1"));
        assert_eq!(unlisted.admit(&peer("x")).await.err(), Some(Rejection::Denied), "unlisted falls to authenticated: absent = denied");
        let none = Gate::new("/a.B/M".into(), MethodLimits::default());
        assert!(none.admit(&anon()).await.is_ok(), "no rate_acls: open");
    }

    #[tokio::test]
    async fn rate_limit_per_identity_with_one_second_burst() {
        let g = Gate::new("/a.B/M".into(), limits("rate_acls:\n  authenticated: 5"));
        for _ in 0..5 {
            drop(g.admit(&peer("a")).await.unwrap());
        }
        assert_eq!(g.admit(&peer("a")).await.err(), Some(Rejection::RateLimited));
        // Each identity has its own bucket.
        assert!(g.admit(&peer("b")).await.is_ok());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(g.admit(&peer("a")).await.is_ok(), "a token is back after 1/5 s");
    }

    #[tokio::test]
    async fn reload_keeps_the_buckets_of_unchanged_rates() {
        let g = Gate::new("/a.B/M".into(), limits("rate_acls:\n  authenticated: 3"));
        for _ in 0..3 {
            drop(g.admit(&peer("a")).await.unwrap());
        }
        g.set_limits(limits("rate_acls:\n  authenticated: 3\n  other: -1"));
        assert_eq!(g.admit(&peer("a")).await.err(), Some(Rejection::RateLimited), "no fresh burst");
        g.set_limits(limits("rate_acls:\n  authenticated: 4"));
        assert!(g.admit(&peer("a")).await.is_ok(), "a changed rate starts afresh");
    }

    #[tokio::test]
    async fn slots_queue_lifo_and_hand_over_on_release() {
        let g = Gate::new("/a.B/M".into(), limits("max_concurrency: 1\nqueue_size: 10"));
        let first = g.admit(&anon()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = vec![];
        for i in 0..3 {
            let (g, order) = (g.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = g.admit(&anon()).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(p);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(g.queued(), 3);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![2, 1, 0], "newest first");
        assert_eq!((g.running(), g.queued()), (0, 0));
    }

    #[tokio::test]
    async fn fifo_order_queue_full_and_timeout() {
        let g = Gate::new("/a.B/M".into(), limits("max_concurrency: 1\nqueue_size: 2\nqueue: fifo\nqueue_timeout_ms: 100"));
        let hold = g.admit(&anon()).await.unwrap();
        let a = tokio::spawn({
            let g = g.clone();
            async move { g.admit(&anon()).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let b = tokio::spawn({
            let g = g.clone();
            async move { g.admit(&anon()).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(g.admit(&anon()).await.err(), Some(Rejection::QueueFull));
        let t0 = Instant::now();
        assert_eq!(a.await.unwrap(), Err(Rejection::QueueTimeout));
        assert!(t0.elapsed() < Duration::from_millis(200));
        assert_eq!(b.await.unwrap(), Err(Rejection::QueueTimeout));
        assert_eq!(g.queued(), 0, "timed-out waiters left the queue");
        drop(hold);
        assert_eq!(g.running(), 0);
    }

    #[tokio::test]
    async fn abandoned_waiter_never_leaks_a_slot() {
        let g = Gate::new("/a.B/M".into(), limits("max_concurrency: 1"));
        for _ in 0..200 {
            let hold = g.admit(&anon()).await.unwrap();
            let w = tokio::spawn({
                let g = g.clone();
                async move { g.admit(&anon()).await.map(drop) }
            });
            tokio::task::yield_now().await;
            // Release and abandon at the same moment, in both orders.
            drop(hold);
            w.abort();
            let _ = w.await;
            let p = tokio::time::timeout(Duration::from_secs(1), g.admit(&anon())).await.expect("slot leaked").unwrap();
            drop(p);
            assert_eq!((g.running(), g.queued()), (0, 0));
        }
    }

    #[tokio::test]
    async fn codel_drops_from_a_standing_queue() {
        let g = Gate::new("/a.B/M".into(), limits("max_concurrency: 1\nqueue: codel\ncodel_target_ms: 1\ncodel_interval_ms: 20"));
        let hold = g.admit(&anon()).await.unwrap();
        let mut tasks = vec![];
        for _ in 0..20 {
            let g = g.clone();
            tasks.push(tokio::spawn(async move { g.admit(&anon()).await.map(|_p| std::thread::sleep(Duration::from_millis(3))).map(drop) }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(hold);
        let mut dropped = 0;
        let mut served = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => served += 1,
                Err(Rejection::CodelDrop) => dropped += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(dropped > 0 && served > 0, "served {served}, dropped {dropped}");
        assert_eq!((g.running(), g.queued()), (0, 0));
    }

    #[tokio::test]
    async fn reload_raises_concurrency_and_admits_waiters() {
        let g = Gate::new("/a.B/M".into(), limits("max_concurrency: 1"));
        let hold = g.admit(&anon()).await.unwrap();
        let w = tokio::spawn({
            let g = g.clone();
            async move { g.admit(&anon()).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.queued(), 1);
        g.set_limits(limits("max_concurrency: 2"));
        assert_eq!(tokio::time::timeout(Duration::from_secs(1), w).await.unwrap().unwrap(), Ok(()));
        drop(hold);
        assert_eq!(g.running(), 0);
    }

    #[test]
    fn every_rejection_has_its_status() {
        use crate::status::Code;
        let p = Identity { spiffe_id: "spiffe://d/x".into(), name: "x".into() };
        let cases = [
            (Rejection::Unauthenticated, Code::Unauthenticated),
            (Rejection::Denied, Code::PermissionDenied),
            (Rejection::RateLimited, Code::ResourceExhausted),
            (Rejection::QueueFull, Code::Unavailable),
            (Rejection::QueueTimeout, Code::Unavailable),
            (Rejection::CodelDrop, Code::Unavailable),
        ];
        for (r, c) in cases {
            let s = r.status("/a.B/M", Some(&p));
            assert_eq!(s.code(), c, "{r:?}");
            assert!(s.message().contains("/a.B/M"), "{s:?}");
        }
        assert!(Rejection::Denied.status("/a.B/M", Some(&p)).message().contains("spiffe://d/x"));
    }
}
