//! Certificate rotation: a thread polls the files' metadata and rebuilds the
//! config when any of them changes. Polling (not inotify) because rotated
//! secrets usually arrive as renamed files or swapped symlinks (Kubernetes
//! secret volumes), which a stat after every interval sees in every case.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

/// What identifies a file's version: modified time, size and inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(p: &PathBuf) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

pub(crate) trait Reloadable: Send + Sync + 'static {
    /// Rebuilds from the files; on error the old config stays.
    fn reload_from_files(&self) -> Result<(), String>;
    fn describe(&self) -> String;
}

/// Watches `paths` every `interval` while `target` is alive. The first stamps
/// are taken now, so only later changes reload.
pub(crate) fn watch(paths: Vec<PathBuf>, interval: Duration, target: Weak<dyn Reloadable>) {
    let mut seen: Vec<Stamp> = paths.iter().map(stamp).collect();
    let spawned = std::thread::Builder::new().name("courier-tls-reload".into()).spawn(move || loop {
        std::thread::sleep(interval);
        let Some(t) = target.upgrade() else { return };
        let now: Vec<Stamp> = paths.iter().map(stamp).collect();
        if now == seen {
            continue;
        }
        seen = now;
        match t.reload_from_files() {
            Ok(()) => {
                tracing::info!(what = %t.describe(), "TLS files changed: new connections use the new certificates");
                super::stats::count_reload(Ok(()));
            }
            Err(e) => {
                tracing::error!(what = %t.describe(), error = %e, "TLS files changed but are not usable: keeping the previous certificates");
                super::stats::count_reload(Err(&e));
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the TLS file watcher: certificates will not be rotated");
    }
}
