//! The limits config: per service and method, who may call (ACL), how often
//! (rate), how many at once (`max_concurrency`) and how long and how many may
//! wait (`queue_timeout_ms`, `queue_size`, `queue` order). YAML in the seed's
//! format (DESIGN.md, "Limits config"), validated completely on load: a file
//! that does not parse or validate is refused with an error naming its line.
//!
//! ```yaml
//! limits:
//!   courier.test.Test:
//!     default:                  # every method of the service
//!       max_concurrency: 32
//!       queue_timeout_ms: 1000
//!       queue_size: 1000
//!       queue: lifo             # lifo (default) | codel | fifo
//!       rate_acls:
//!         ocr: -1               # -1 unlimited, 0 denied, N per second
//!         authenticated: 0
//!         unauthenticated: 0
//!     UnaryUnary: {...}         # per-method override, same keys
//! ```
//!
//! Resolution: a method's entry overrides its service's `default` key by key
//! (`rate_acls` is replaced as a whole, never merged). Without any `rate_acls`
//! a method is open to everyone; with one, an identity it does not list (by
//! full SPIFFE ID or short name) falls to `authenticated`/`unauthenticated`, and
//! is denied if that is not listed either.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Order in which queued calls are admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueOrder {
    /// Newest first: under overload, the calls that can still meet their
    /// deadline are served.
    Lifo,
    /// Oldest first; once the queue delay has stayed above `codel_target_ms`
    /// for `codel_interval_ms`, calls that waited longer than the target are
    /// dropped (CoDel as RPC servers use it).
    Codel,
    Fifo,
}

/// Requests per second allowed for one identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Rate {
    Unlimited,
    Denied,
    PerSecond(u32),
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let n = i64::deserialize(d)?;
        match n {
            -1 => Ok(Rate::Unlimited),
            0 => Ok(Rate::Denied),
            n if n > 0 && n <= i64::from(u32::MAX) => Ok(Rate::PerSecond(n as u32)),
            n => Err(de::Error::custom(format!("rate {n} is invalid: use -1 (unlimited), 0 (denied) or N > 0 requests per second"))),
        }
    }
}

/// Who a `rate_acls` entry is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum IdentityKey {
    /// Any peer with a verified identity not listed by name.
    Authenticated,
    /// Peers without a client certificate.
    Unauthenticated,
    /// A full SPIFFE ID (`spiffe://domain/name`) or a short name (`name`).
    Named(String),
}

impl<'de> Deserialize<'de> for IdentityKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IdentityKey, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "authenticated" => Ok(IdentityKey::Authenticated),
            "unauthenticated" => Ok(IdentityKey::Unauthenticated),
            "" => Err(de::Error::custom("an empty identity in rate_acls")),
            s if s.chars().any(char::is_whitespace) => Err(de::Error::custom(format!("identity {s:?} contains whitespace"))),
            s if s.starts_with("spiffe://") && s["spiffe://".len()..].split_once('/').is_none_or(|(d, n)| d.is_empty() || n.is_empty()) => {
                Err(de::Error::custom(format!("identity {s:?} is not a SPIFFE ID of the form spiffe://<trust-domain>/<name>")))
            }
            s => Ok(IdentityKey::Named(s.to_string())),
        }
    }
}

fn positive<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D, what: &str) -> Result<Option<T>, D::Error> {
    let n = u64::deserialize(d)?;
    if n == 0 {
        return Err(de::Error::custom(format!("{what} must be at least 1")));
    }
    T::try_from(n).map(Some).map_err(|_| de::Error::custom(format!("{what} {n} is too large")))
}

macro_rules! positive_field {
    ($name:ident, $t:ty, $what:literal) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
            positive(d, $what)
        }
    };
}
positive_field!(de_concurrency, u32, "max_concurrency");
positive_field!(de_queue_size, u32, "queue_size");
positive_field!(de_timeout, u32, "queue_timeout_ms");
positive_field!(de_target, u32, "codel_target_ms");
positive_field!(de_interval, u32, "codel_interval_ms");

/// One entry: a service's `default` or a method override. Absent keys inherit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default, deserialize_with = "de_concurrency", skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, deserialize_with = "de_timeout", skip_serializing_if = "Option::is_none")]
    pub queue_timeout_ms: Option<u32>,
    #[serde(default, deserialize_with = "de_queue_size", skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueOrder>,
    #[serde(default, deserialize_with = "de_target", skip_serializing_if = "Option::is_none")]
    pub codel_target_ms: Option<u32>,
    #[serde(default, deserialize_with = "de_interval", skip_serializing_if = "Option::is_none")]
    pub codel_interval_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_acls: Option<BTreeMap<IdentityKey, Rate>>,
}

impl Entry {
    /// `self` with the keys it lacks taken from `base`.
    fn over(&self, base: &Entry) -> Entry {
        Entry {
            max_concurrency: self.max_concurrency.or(base.max_concurrency),
            queue_timeout_ms: self.queue_timeout_ms.or(base.queue_timeout_ms),
            queue_size: self.queue_size.or(base.queue_size),
            queue: self.queue.or(base.queue),
            codel_target_ms: self.codel_target_ms.or(base.codel_target_ms),
            codel_interval_ms: self.codel_interval_ms.or(base.codel_interval_ms),
            rate_acls: self.rate_acls.clone().or_else(|| base.rate_acls.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    limits: Option<BTreeMap<String, BTreeMap<String, Entry>>>,
}

/// A limits file, parsed and validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    /// service → (`default` | method) → entry.
    services: BTreeMap<String, BTreeMap<String, Entry>>,
}

/// Why a limits file was refused; `Display` names the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct LimitsError {
    pub source_name: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Defaults for what no entry says.
pub const DEFAULT_QUEUE_SIZE: u32 = 10_000;
pub const DEFAULT_CODEL_TARGET: Duration = Duration::from_millis(5);
pub const DEFAULT_CODEL_INTERVAL: Duration = Duration::from_millis(100);

/// The limits of one method, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodLimits {
    /// Handlers running at once; `None`: unlimited.
    pub max_concurrency: Option<u32>,
    /// Longest wait in the queue; `None`: only the call's deadline bounds it.
    pub queue_timeout: Option<Duration>,
    pub queue_size: u32,
    pub order: QueueOrder,
    pub codel_target: Duration,
    pub codel_interval: Duration,
    /// `None`: open to everyone.
    pub rate_acls: Option<BTreeMap<IdentityKey, Rate>>,
}

impl Default for MethodLimits {
    fn default() -> Self {
        MethodLimits::from_entry(&Entry::default())
    }
}

impl MethodLimits {
    fn from_entry(e: &Entry) -> MethodLimits {
        let ms = |v: Option<u32>| v.map(|n| Duration::from_millis(u64::from(n)));
        MethodLimits {
            max_concurrency: e.max_concurrency,
            queue_timeout: ms(e.queue_timeout_ms),
            queue_size: e.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
            order: e.queue.unwrap_or(QueueOrder::Lifo),
            codel_target: ms(e.codel_target_ms).unwrap_or(DEFAULT_CODEL_TARGET),
            codel_interval: ms(e.codel_interval_ms).unwrap_or(DEFAULT_CODEL_INTERVAL),
            rate_acls: e.rate_acls.clone(),
        }
    }
}

impl LimitsConfig {
    /// Parses and validates YAML. `source_name` (a path) prefixes errors.
    pub fn parse(text: &str, source_name: &str) -> Result<LimitsConfig, LimitsError> {
        let err = |line: Option<usize>, message: String| LimitsError { source_name: source_name.to_string(), line, message };
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let line = e.location().map(|l| l.line());
                // serde_yaml_ng appends "at line N column M"; the line is ours to show.
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                err(line, msg)
            })?
        };
        let services = file.limits.unwrap_or_default();
        for (svc, methods) in &services {
            if svc.is_empty() || svc.contains('/') || svc.contains(char::is_whitespace) {
                return Err(err(find_line(text, svc, None), format!("{svc:?} is not a full service name (package.Service)")));
            }
            for m in methods.keys() {
                if m != "default" && (m.is_empty() || m.contains('/') || m.contains('.') || m.contains(char::is_whitespace)) {
                    return Err(err(find_line(text, m, Some(svc)), format!("{m:?} under {svc} is neither `default` nor a method name")));
                }
            }
        }
        Ok(LimitsConfig { services })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<LimitsConfig, LimitsError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| LimitsError { source_name: name.clone(), line: None, message: format!("cannot read: {e}") })?;
        LimitsConfig::parse(&text, &name)
    }

    /// The resolved limits of `/service/method`.
    pub fn method_limits(&self, service: &str, method: &str) -> MethodLimits {
        let entries = self.services.get(service);
        let default = entries.and_then(|m| m.get("default")).cloned().unwrap_or_default();
        let own = entries.and_then(|m| m.get(method));
        MethodLimits::from_entry(&own.map(|e| e.over(&default)).unwrap_or(default))
    }

    /// Checks the config against the methods a server serves: an override for a
    /// method its service does not have is a typo, refused with its line.
    pub fn check_methods<'a>(
        &self,
        text: &str,
        source_name: &str,
        served: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<(), LimitsError> {
        for (svc, methods) in &self.services {
            if !served.clone().any(|(s, _)| s == svc) {
                continue; // a service of another process sharing the file
            }
            for m in methods.keys() {
                if m != "default" && !served.clone().any(|(s, name)| s == svc && name == m) {
                    return Err(LimitsError {
                        source_name: source_name.to_string(),
                        line: find_line(text, m, Some(svc)),
                        message: format!("service {svc} has no method {m}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The config as JSON (for the debug endpoint `/config`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(
            self.services
                .iter()
                .map(|(s, m)| (s.clone(), m.iter().map(|(k, e)| (k.clone(), entry_json(e))).collect::<BTreeMap<_, _>>()))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap_or_default()
    }
}

fn entry_json(e: &Entry) -> serde_json::Value {
    let mut v = serde_json::to_value(Entry { rate_acls: None, ..e.clone() }).unwrap_or_default();
    if let (Some(acls), Some(obj)) = (&e.rate_acls, v.as_object_mut()) {
        let acls: BTreeMap<String, i64> = acls
            .iter()
            .map(|(k, r)| {
                let k = match k {
                    IdentityKey::Authenticated => "authenticated".to_string(),
                    IdentityKey::Unauthenticated => "unauthenticated".to_string(),
                    IdentityKey::Named(n) => n.clone(),
                };
                let r = match r {
                    Rate::Unlimited => -1,
                    Rate::Denied => 0,
                    Rate::PerSecond(n) => i64::from(*n),
                };
                (k, r)
            })
            .collect();
        obj.insert("rate_acls".into(), serde_json::to_value(acls).unwrap_or_default());
    }
    v
}

/// The 1-based line where `key:` appears (after `parent:` if given): for
/// errors serde cannot place (map keys).
fn find_line(text: &str, key: &str, parent: Option<&str>) -> Option<usize> {
    let is_key = |line: &str, k: &str| {
        let t = line.trim_start();
        t.strip_prefix(k).is_some_and(|rest| rest.trim_start().starts_with(':'))
            || t.strip_prefix(&format!("\"{k}\"")).is_some_and(|rest| rest.trim_start().starts_with(':'))
    };
    let start = match parent {
        Some(p) => text.lines().position(|l| is_key(l, p))?,
        None => 0,
    };
    text.lines().enumerate().skip(start).find(|(_, l)| is_key(l, key)).map(|(i, _)| i + 1)
}

/// The outcome of the last load or reload, for the debug endpoint `/config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadResult {
    pub at: std::time::SystemTime,
    /// `None`: applied; `Some(error)`: refused, the previous limits stay.
    pub error: Option<String>,
}

/// Limits from a file, watched: a change (checked every 250 ms) or SIGHUP
/// reloads it; a valid file is applied atomically, an invalid one refused
/// with its error and counted, the old limits staying in force.
pub struct LimitsFile {
    path: std::path::PathBuf,
    state: std::sync::Mutex<FileState>,
    reloads_ok: std::sync::atomic::AtomicU64,
    reloads_failed: std::sync::atomic::AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

struct FileState {
    config: LimitsConfig,
    stamp: Option<(std::time::SystemTime, u64)>,
    last: ReloadResult,
}

type Apply = dyn Fn(&LimitsConfig, &str) -> Result<(), LimitsError> + Send + Sync;

const POLL: Duration = Duration::from_millis(250);

impl LimitsFile {
    /// Loads `path` and applies it once; an error here is fatal to the caller.
    pub fn open(path: &Path, apply: &Apply) -> Result<std::sync::Arc<LimitsFile>, LimitsError> {
        let stamp = stamp(path);
        let text = read(path)?;
        let config = LimitsConfig::parse(&text, &path.display().to_string())?;
        apply(&config, &text)?;
        Ok(std::sync::Arc::new(LimitsFile {
            path: path.to_path_buf(),
            state: std::sync::Mutex::new(FileState {
                config,
                stamp,
                last: ReloadResult { at: std::time::SystemTime::now(), error: None },
            }),
            reloads_ok: Default::default(),
            reloads_failed: Default::default(),
            stop: Default::default(),
        }))
    }

    /// Starts the watcher thread (file changes and SIGHUP); it ends at `stop`.
    pub fn watch(self: &std::sync::Arc<Self>, apply: Box<Apply>) -> std::io::Result<()> {
        let hup = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
        let me = self.clone();
        std::thread::Builder::new().name("courier-limits".into()).spawn(move || {
            while !me.stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(POLL);
                let forced = hup.swap(false, std::sync::atomic::Ordering::Relaxed);
                let changed = stamp(&me.path) != me.lock().stamp;
                if forced || changed {
                    me.reload(&*apply);
                }
            }
        })?;
        Ok(())
    }

    /// Reloads now: applies a valid file, refuses an invalid one.
    pub fn reload(&self, apply: &Apply) -> ReloadResult {
        let stamp = stamp(&self.path);
        let outcome = read(&self.path).and_then(|text| {
            let config = LimitsConfig::parse(&text, &self.path.display().to_string())?;
            apply(&config, &text)?;
            Ok(config)
        });
        let mut st = self.lock();
        st.stamp = stamp;
        let at = std::time::SystemTime::now();
        st.last = match outcome {
            Ok(config) => {
                self.reloads_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), "limits reloaded");
                st.config = config;
                ReloadResult { at, error: None }
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "limits file refused; the previous limits stay in force");
                ReloadResult { at, error: Some(e.to_string()) }
            }
        };
        st.last.clone()
    }

    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits in force.
    pub fn config(&self) -> LimitsConfig {
        self.lock().config.clone()
    }

    pub fn last_reload(&self) -> ReloadResult {
        self.lock().last.clone()
    }

    /// (applied, refused) reloads since start: `courier_config_reloads_total{result}`.
    pub fn reload_counts(&self) -> (u64, u64) {
        (self.reloads_ok.load(std::sync::atomic::Ordering::Relaxed), self.reloads_failed.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// What `/config` shows: the file, the limits in force, the last reload.
    pub fn to_json(&self) -> serde_json::Value {
        let st = self.lock();
        let (ok, failed) = self.reload_counts();
        let at = st.last.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        serde_json::json!({
            "path": self.path.display().to_string(),
            "limits": st.config.to_json(),
            "last_reload": { "at_unix": at, "ok": st.last.error.is_none(), "error": st.last.error },
            "reloads": { "ok": ok, "failed": failed },
        })
    }
}

fn read(path: &Path) -> Result<String, LimitsError> {
    std::fs::read_to_string(path)
        .map_err(|e| LimitsError { source_name: path.display().to_string(), line: None, message: format!("cannot read: {e}") })
}

/// What identifies a version of the file: modification time and size.
fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl fmt::Display for QueueOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueOrder::Lifo => "lifo",
            QueueOrder::Codel => "codel",
            QueueOrder::Fifo => "fifo",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "
limits:
  courier.test.Test:
    default:
      max_concurrency: 32
      queue_timeout_ms: 1000
      queue_size: 1000
      queue: lifo
      rate_acls:
        ocr: -1
        spiffe://example.org/batch: 5
        authenticated: 0
        unauthenticated: 0
    UnaryUnary:
      max_concurrency: 4
      queue: codel
      codel_target_ms: 10
";

    #[test]
    fn seed_format_parses_and_resolves() {
        let c = LimitsConfig::parse(SEED, "limits.yaml").unwrap();
        let d = c.method_limits("courier.test.Test", "StreamStream");
        assert_eq!(d.max_concurrency, Some(32));
        assert_eq!(d.queue_timeout, Some(Duration::from_secs(1)));
        assert_eq!(d.queue_size, 1000);
        assert_eq!(d.order, QueueOrder::Lifo);
        let acls = d.rate_acls.unwrap();
        assert_eq!(acls[&IdentityKey::Named("ocr".into())], Rate::Unlimited);
        assert_eq!(acls[&IdentityKey::Named("spiffe://example.org/batch".into())], Rate::PerSecond(5));
        assert_eq!(acls[&IdentityKey::Unauthenticated], Rate::Denied);
        let u = c.method_limits("courier.test.Test", "UnaryUnary");
        assert_eq!(u.max_concurrency, Some(4));
        assert_eq!(u.order, QueueOrder::Codel);
        assert_eq!(u.codel_target, Duration::from_millis(10));
        assert_eq!(u.queue_timeout, Some(Duration::from_secs(1)), "inherited from default");
        assert!(u.rate_acls.is_some(), "inherited from default");
        let other = c.method_limits("other.Service", "M");
        assert_eq!(other, MethodLimits::default());
        assert!(other.rate_acls.is_none() && other.max_concurrency.is_none());
    }

    #[test]
    fn empty_files_are_open_defaults() {
        for text in ["", "\n", "limits:\n", "limits: {}\n"] {
            let c = LimitsConfig::parse(text, "f").unwrap();
            assert_eq!(c.method_limits("a.B", "C"), MethodLimits::default(), "{text:?}");
        }
    }

    #[track_caller]
    fn refused(text: &str, line: usize, needle: &str) {
        let e = LimitsConfig::parse(text, "limits.yaml").unwrap_err();
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        assert!(e.to_string().starts_with(&format!("limits.yaml:{line}: ")), "{e}");
    }

    #[test]
    fn invalid_files_name_the_line() {
        refused("limits:\n  a.B:\n    default:\n      max_concurrency: 0\n", 4, "max_concurrency must be at least 1");
        refused("limits:\n  a.B:\n    default:\n      max_concurency: 3\n", 4, "unknown field `max_concurency`");
        refused("limits:\n  a.B:\n    M:\n      queue: stack\n", 4, "unknown variant `stack`");
        refused("limits:\n  a.B:\n    M:\n      rate_acls:\n        x: -2\n", 5, "rate -2 is invalid");
        refused("limits:\n  a.B:\n    M:\n      rate_acls:\n        x: 1.5\n", 5, "invalid type");
        refused("limits:\n  a.B:\n    M:\n      queue_timeout_ms: -1\n", 4, "queue_timeout_ms: invalid type: integer `-1`");
        refused("limits:\n  a.B:\n    M:\n      rate_acls:\n        spiffe://x: 1\n", 5, "not a SPIFFE ID");
        refused("limits:\n  a.B:\n    default: [1, 2]\n", 3, "invalid type");
        refused("limits:\n  a.B:\n    default:\n      queue: lifo\n    bad.name:\n      queue: fifo\n", 5, "neither `default` nor a method name");
        refused("limit:\n  a.B: {}\n", 1, "unknown field `limit`");
        refused("limits:\n  a.B:\n    M:\n      queue: [\n", 4, "queue");
    }

    #[test]
    fn unknown_method_of_a_served_service_is_refused() {
        let text = "limits:\n  a.B:\n    default: {}\n    Typo:\n      max_concurrency: 2\n  other.Svc:\n    X: {}\n";
        let c = LimitsConfig::parse(text, "f").unwrap();
        let served = [("a.B", "Real")];
        let e = c.check_methods(text, "f", served.iter().copied()).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("a.B has no method Typo"));
        let ok = [("a.B", "Typo")];
        c.check_methods(text, "f", ok.iter().copied()).unwrap();
    }

    #[test]
    fn json_shows_what_is_in_force() {
        let c = LimitsConfig::parse(SEED, "f").unwrap();
        let j = c.to_json();
        assert_eq!(j["courier.test.Test"]["default"]["rate_acls"]["ocr"], -1);
        assert_eq!(j["courier.test.Test"]["UnaryUnary"]["queue"], "codel");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn yamlish() -> impl Strategy<Value = String> {
            let atoms = prop::sample::select(vec![
                "limits:", "  a.B:", "    default:", "    M:", "      max_concurrency: ", "      queue: ", "      queue_size: ",
                "      queue_timeout_ms: ", "      rate_acls:", "        ocr: ", "        authenticated: ", "lifo", "codel", "fifo",
                "-1", "0", "7", "99999999999", "[", "]", "{", "}", "\"", "- ", "\n", "  ", ":", "spiffe://", "&a", "*a", "!!str",
            ]);
            prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]
            /// Any input gives a config or an error, never a panic.
            #[test]
            fn parser_never_panics(text in yamlish()) {
                if let Ok(c) = LimitsConfig::parse(&text, "f") {
                    let _ = c.method_limits("a.B", "M");
                    let _ = c.to_json();
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(text in ".{0,200}") {
                let _ = LimitsConfig::parse(&text, "f");
            }
        }
    }
}
