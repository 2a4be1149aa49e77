//! Hot reload of the mappings: watch the directory (editors save by rename, and Kubernetes
//! swaps a `..data` symlink, so the directory is watched, not the files) and listen for SIGHUP.
//! A new set goes live only when every file validates; otherwise the diagnostics are logged and
//! the last good set stays in force. Requests in flight keep the set they started with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::intake::{Intake, Sources};
use crate::mapping::load_dir;

/// Changes closer together than this are applied once.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// What a reload must respect besides the files themselves.
pub struct ReloadPolicy {
    pub dir: PathBuf,
    /// Whether `GREENFLASH_PRODUCT_ID` (or a dry-run placeholder) is set; if not, every rule
    /// must set `product_id`.
    pub has_default_product_id: bool,
    /// Watch the directory; without it, only SIGHUP reloads.
    pub watch: bool,
}

/// Runs until the process ends. Watch errors are logged; SIGHUP keeps working without them.
pub async fn run(intake: Arc<Intake>, policy: Arc<ReloadPolicy>) {
    let (tx, mut changes) = mpsc::unbounded_channel();
    let watcher = policy.watch.then(|| {
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| {
            w.watch(&policy.dir, RecursiveMode::NonRecursive)
                .map(|()| w)
        })
    });
    // Keep the watcher alive for as long as this task runs.
    let _watcher = match watcher {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            tracing::warn!(error = %e, dir = %policy.dir.display(), "Cannot watch the mappings directory; reload with SIGHUP.");
            None
        }
    };
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let trigger = tokio::select! {
            Some(()) = changes.recv() => {
                // Let a burst of writes (an editor, a git checkout) settle.
                tokio::time::sleep(DEBOUNCE).await;
                while changes.try_recv().is_ok() {}
                "file change"
            }
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            else => return,
        };
        reload(&intake, &policy, trigger);
    }
}

/// Loads the directory and swaps it in if valid. Returns whether a new version went live.
pub fn reload(intake: &Intake, policy: &ReloadPolicy, trigger: &str) -> bool {
    let current = intake.sources();
    let loaded = match load_dir(&policy.dir) {
        Ok(l) => l,
        Err(diagnostics) => {
            for d in &diagnostics {
                tracing::error!(diagnostic = %d, "Mapping problem.");
            }
            tracing::error!(trigger, live_version = %current.catalog.version, errors = diagnostics.len(), "Mappings reload refused; the last good mappings stay in force.");
            crate::telemetry::reload("refused");
            return false;
        }
    };
    if loaded.catalog.version == current.catalog.version {
        return false;
    }
    if !policy.has_default_product_id
        && let Some(source) = loaded
            .catalog
            .sources
            .values()
            .find(|s| !s.sets_product_id_everywhere())
    {
        tracing::error!(trigger, source = %source.name, "Mappings reload refused: GREENFLASH_PRODUCT_ID is not set and this source has rules without product_id.");
        crate::telemetry::reload("refused");
        return false;
    }
    for warning in &loaded.warnings {
        tracing::warn!(diagnostic = %warning, "Mapping warning.");
    }
    let version = loaded.catalog.version.clone();
    let sources = Sources::new(loaded.catalog, |var| std::env::var(var).ok());
    for (name, missing) in sources.disabled() {
        tracing::error!(source = name, variable = %missing.var, "Source disabled: {missing}.");
    }
    intake.replace_sources(sources);
    tracing::info!(trigger, mappings_version = %version, previous_version = %current.catalog.version, "Mappings reloaded.");
    crate::telemetry::reload("applied");
    crate::telemetry::mappings_version(&current.catalog.version, &version);
    true
}
