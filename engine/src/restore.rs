//! Restore at startup from the `ROOT/_backup_restore` trigger file.
//!
//! The trigger is a properties file naming the backup: `backup.object.store`
//! (else server.conf's), `backup.instance.name` (needed only when the store holds
//! several), `backup.restore.timestamp` (else the latest complete backup),
//! `backup.encryption.key.file` (else server.conf's key, if any). The
//! restore runs before storage opens. The server then answers queries at once,
//! while the file system is synced in the background; commits wait until that
//! is done. The trigger is removed only after the restored database is durable,
//! so a crash at any point either repeats the restore (a restore cut short before
//! its sync is discarded and done again) or finds it complete. A failure leaves
//! the trigger and the failure artifacts (`.restore_failed/`, `_restore_failed`)
//! and stops the start.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backup::{Selector, Store};
use storage::UnsyncedRestore;

use crate::backups::{BackupSettings, backup_err};
use crate::config::ConfigError;
use crate::error::{EngineError, Result};

pub const BACKUP_RESTORE_TRIGGER: &str = "_backup_restore";

const TRIGGER_KEYS: &[&str] = &[
    "backup.object.store",
    "backup.instance.name",
    "backup.restore.timestamp",
];

/// The store connection string in effect: configured, or `ROOT/backups` (with a warning).
pub(crate) fn store_connection(root: &Path, settings: &BackupSettings) -> String {
    match &settings.object_store {
        Some(c) => c.expose().to_string(),
        None => {
            let dir = root.join("backups");
            tracing::warn!(
                "backup.object.store is not set: backups go to {} on the same disk as the database",
                dir.display()
            );
            format!("fs::root={};", dir.display())
        }
    }
}

/// A restored database being served before its files are durable.
#[must_use = "the restore is complete only once `complete` ran"]
pub(crate) struct PendingRestore {
    unsynced: UnsyncedRestore,
    root: PathBuf,
}

impl PendingRestore {
    /// Makes the restored files durable, then removes the trigger (blocking).
    pub(crate) fn complete(self) -> Result<()> {
        self.unsynced.make_durable()?;
        finish(&self.root, &self.root.join(BACKUP_RESTORE_TRIGGER))
    }
}

/// Runs the restore a `_backup_restore` trigger asks for, if there is one; what
/// it returns must be completed before anything commits.
pub(crate) async fn apply_backup_restore_trigger(
    root: &Path,
    settings: &BackupSettings,
) -> Result<Option<PendingRestore>> {
    let trigger = root.join(BACKUP_RESTORE_TRIGGER);
    storage::check_no_failed_restore(root)?;
    if !trigger.exists() {
        if UnsyncedRestore::find(root).is_some() {
            return Err(EngineError::State(format!(
                "{db} holds a restore that did not finish reaching disk ({} is there), so its files may be torn; \
                 restore again: put the trigger file {} back (the folder is then replaced), or remove {db} and run \
                 `strata restore` again",
                storage::UNSYNCED_MARKER,
                trigger.display(),
                db = storage::db_dir(root).display()
            )));
        }
        storage::clear_restored_marker(root)?;
        return Ok(None);
    }
    if root.join(crate::checkpoint::RESTORE_TRIGGER).exists() {
        return Err(EngineError::State(format!(
            "both {} and {} exist; remove the one you do not mean",
            trigger.display(),
            root.join(crate::checkpoint::RESTORE_TRIGGER).display()
        )));
    }
    if storage::restored_marker(root) {
        tracing::info!(
            "the restore asked for by {} had completed; removing it",
            trigger.display()
        );
        if let Some(unsynced) = UnsyncedRestore::find(root) {
            unsynced.make_durable()?;
        }
        finish(root, &trigger)?;
        return Ok(None);
    }
    if let Some(unsynced) = UnsyncedRestore::find(root) {
        tracing::warn!(
            "the restore asked for by {} was cut short before its files reached disk; restoring again",
            trigger.display()
        );
        unsynced.discard()?;
    }
    let props = read_trigger(&trigger)?;
    let conn = match props.get("backup.object.store") {
        Some(c) => c.clone(),
        None => store_connection(root, settings),
    };
    let cipher = match props.get("backup.encryption.key.file") {
        Some(path) => Some(backup::Cipher::from_key_file(Path::new(path)).map_err(backup_err)?),
        None => settings.encryption.clone(),
    };
    let store = Store::open(&conn).map_err(backup_err)?.with_cipher(cipher);
    let selector = Selector {
        instance: props.get("backup.instance.name").cloned(),
        timestamp: props.get("backup.restore.timestamp").cloned(),
    };
    tracing::info!(
        "restoring {} from {} ({})",
        root.display(),
        store.display,
        trigger.display()
    );
    let steps = backup::PercentSteps::new(10);
    let log_progress = |done: u64, total: u64| {
        if let Some(p) = steps.crossed(done, total) {
            tracing::info!("restore: {p}% ({done} of {total} bytes)");
        }
    };
    let (report, unsynced) = backup::restore_database(&store, &selector, root, &log_progress)
        .await
        .map_err(|e| EngineError::Backup(format!("restore from {} failed: {e}", trigger.display())))?;
    tracing::info!(
        instance = %report.instance,
        tables = ?report.tables,
        files = report.files,
        rows = report.rows,
        bytes = report.bytes,
        "restored backup {}; serving it while its files are synced (changes wait until then)",
        report.backup_timestamp
    );
    Ok(Some(PendingRestore {
        unsynced,
        root: root.to_path_buf(),
    }))
}

/// Removes the trigger, then the completion marker (a crash between the two is
/// recognised at the next start).
fn finish(root: &Path, trigger: &Path) -> Result<()> {
    std::fs::remove_file(trigger).map_err(|source| storage::StorageError::Io {
        context: format!("removing {}", trigger.display()),
        source,
    })?;
    storage::fsync_dir(root)?;
    storage::clear_restored_marker(root)?;
    Ok(())
}

fn read_trigger(path: &Path) -> Result<HashMap<String, String>> {
    let read_err = |reason: String| ConfigError::Read {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let props: HashMap<String, String> = java_properties::read(std::io::BufReader::new(file))
        .map_err(|e| read_err(e.to_string()))?
        .into_iter()
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if let Some(k) = props.keys().find(|k| !TRIGGER_KEYS.contains(&k.as_str())) {
        return Err(read_err(format!("unknown key '{k}' (known: {})", TRIGGER_KEYS.join(", "))).into());
    }
    Ok(props)
}
