//! Log levels per module, changeable at run time (`/loglevel`): a
//! `tracing-subscriber` fmt layer to stderr behind a reloadable `EnvFilter`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

type Handle = reload::Handle<EnvFilter, Registry>;

struct Levels {
    handle: Handle,
    /// module → level; the key "" is the default level.
    directives: BTreeMap<String, String>,
}

static LEVELS: OnceLock<Option<Mutex<Levels>>> = OnceLock::new();

const LEVEL_NAMES: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

fn directives_string(d: &BTreeMap<String, String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(l) = d.get("") {
        parts.push(l.clone());
    }
    for (m, l) in d {
        if !m.is_empty() {
            parts.push(format!("{m}={l}"));
        }
    }
    parts.join(",")
}

fn parse_directives(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (m, l) = match part.split_once('=') {
            Some((m, l)) => (m.trim(), l.trim()),
            None if LEVEL_NAMES.contains(&part.to_ascii_lowercase().as_str()) => ("", part),
            None => (part, "trace"),
        };
        let l = l.to_ascii_lowercase();
        if !LEVEL_NAMES.contains(&l.as_str()) {
            return Err(format!("unknown level {l:?} for {m:?}: expected one of {}", LEVEL_NAMES.join(", ")));
        }
        if !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-' || c == '.') {
            return Err(format!("invalid module name {m:?}"));
        }
        out.insert(m.to_string(), l);
    }
    Ok(out)
}

/// Installs the process's log subscriber (stderr, levels from `RUST_LOG`, else
/// `default`), unless one is installed already. Returns whether `/loglevel`
/// controls the levels (true if this or an earlier call installed it).
pub fn init(default: &str) -> bool {
    LEVELS
        .get_or_init(|| {
            let start = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| default.to_string());
            let directives = parse_directives(&start).unwrap_or_else(|_| parse_directives(default).unwrap_or_default());
            let filter = EnvFilter::try_new(directives_string(&directives)).unwrap_or_else(|_| EnvFilter::new("warn"));
            let (layer, handle) = reload::Layer::new(filter);
            let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(true);
            match tracing_subscriber::registry().with(layer).with(fmt).try_init() {
                Ok(()) => Some(Mutex::new(Levels { handle, directives })),
                Err(_) => None,
            }
        })
        .is_some()
}

/// The levels in force as `EnvFilter` directives (`warn,courier_core::server=debug`),
/// or `None` when another subscriber owns logging.
pub fn levels() -> Option<BTreeMap<String, String>> {
    let l = LEVELS.get()?.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
    Some(l.directives.clone())
}

/// Levels as a directive string.
pub fn levels_string() -> Option<String> {
    levels().map(|d| directives_string(&d))
}

/// Sets the level of `module` (`""`: the default for all modules); `level`
/// `"reset"` (or empty) removes a module's own level.
pub fn set_level(module: &str, level: &str) -> Result<String, String> {
    let Some(Some(l)) = LEVELS.get() else {
        return Err("log levels are not controlled by Courier in this process (another log subscriber is installed)".into());
    };
    let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
    let mut d = l.directives.clone();
    let level = level.trim().to_ascii_lowercase();
    if level.is_empty() || level == "reset" {
        if module.is_empty() {
            return Err("the default level cannot be reset, only changed".into());
        }
        d.remove(module);
    } else {
        let parsed = parse_directives(&if module.is_empty() { level.clone() } else { format!("{module}={level}") })?;
        d.extend(parsed);
    }
    apply(&mut l, d)
}

/// Replaces every level with `directives` (`warn,courier_core=debug`).
pub fn set_all(directives: &str) -> Result<String, String> {
    let Some(Some(l)) = LEVELS.get() else {
        return Err("log levels are not controlled by Courier in this process (another log subscriber is installed)".into());
    };
    let d = parse_directives(directives)?;
    let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
    apply(&mut l, d)
}

fn apply(l: &mut Levels, d: BTreeMap<String, String>) -> Result<String, String> {
    let s = directives_string(&d);
    let filter = EnvFilter::try_new(&s).map_err(|e| format!("invalid directives {s:?}: {e}"))?;
    l.handle.reload(filter).map_err(|e| e.to_string())?;
    l.directives = d;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_and_print() {
        let d = parse_directives("warn, courier_core::server=DEBUG,x=trace").unwrap();
        assert_eq!(directives_string(&d), "warn,courier_core::server=debug,x=trace");
        assert!(parse_directives("a=loud").unwrap_err().contains("unknown level"));
        assert!(parse_directives("a b=info").unwrap_err().contains("invalid module"));
    }
}
