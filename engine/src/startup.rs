//! What happens before the database opens: the two startup triggers and what
//! earlier restores left behind, checked in one place and in one order.
//!
//! ```text
//! failed restore artifacts?          -> refuse to start (the operator inspects them)
//! both triggers?                     -> refuse (say which to remove)
//! ROOT/_backup_restore:
//!     restore completed before       -> remove the trigger, clear the markers
//!     restore cut short before sync  -> discard it, restore again
//!     otherwise                      -> restore from the store into the empty root
//! no trigger, restore not synced     -> refuse (the files may be torn; say how to redo it)
//! ROOT/_restore                      -> roll the root back to its checkpoint
//! ```
//!
//! `_backup_restore` is a properties file naming the backup: `backup.object.store`
//! (else server.conf's), `backup.instance.name` (needed only when the store holds
//! several), `backup.restore.timestamp` (else the latest complete backup),
//! `backup.encryption.key` or `backup.encryption.key.file` (else server.conf's key,
//! if any), `backup.restore.mode` (`full`, the default, or `instant`: see
//! `hydration.rs`). After a full backup restore the server answers queries at once while the
//! file system is synced in the background; commits wait until that is done. The
//! trigger is removed only after the restored database is durable, so a crash at
//! any point either repeats the restore or finds it complete. A failure leaves the
//! trigger and the failure artifacts (`.restore_failed/`, `_restore_failed`) and
//! stops the start.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use backup::Selector;
use storage::{RestoreState, UnsyncedRestore};

use crate::config::{BackupSettings, ConfigError};
use crate::error::{EngineError, Result};

/// Asks for a restore from a backup on startup.
pub const BACKUP_RESTORE_TRIGGER: &str = "_backup_restore";
/// Asks for a rollback to the checkpoint on startup.
pub const RESTORE_TRIGGER: &str = "_restore";

/// Keys a `_backup_restore` file may hold.
pub const BACKUP_RESTORE_KEYS: &[&str] = &[
    "backup.object.store",
    "backup.instance.name",
    "backup.restore.timestamp",
    "backup.encryption.key",
    "backup.encryption.key.file",
    "backup.restore.mode",
];

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
        remove_trigger(&self.root, BACKUP_RESTORE_TRIGGER)?;
        Ok(storage::clear_restore_markers(&self.root)?)
    }
}

/// Acts on the startup triggers of `root`; a backup restore it runs must be
/// completed (made durable) before anything commits.
pub(crate) async fn prepare(root: &Path, settings: &BackupSettings) -> Result<Option<PendingRestore>> {
    let state = storage::restore_state(root);
    if let RestoreState::Failed { dir, file } = state {
        return Err(storage::StorageError::FailedRestoreFound { dir, file }.into());
    }
    let backup_trigger = root.join(BACKUP_RESTORE_TRIGGER);
    let checkpoint_trigger = root.join(RESTORE_TRIGGER);
    if backup_trigger.exists() && checkpoint_trigger.exists() {
        return Err(EngineError::State(format!(
            "both {} and {} exist; remove the one you do not mean",
            backup_trigger.display(),
            checkpoint_trigger.display()
        )));
    }
    if backup_trigger.exists() {
        return restore_from_backup(root, settings, state).await;
    }
    match state {
        RestoreState::Unsynced(_) => {
            return Err(EngineError::State(format!(
                "{db} holds a restore that did not finish reaching disk ({} is there), so its files may be torn; \
                 restore again: put the trigger file {} back (the folder is then replaced), or remove {db} and run \
                 `strata restore` again",
                storage::UNSYNCED_MARKER,
                backup_trigger.display(),
                db = storage::db_dir(root).display()
            )));
        }
        RestoreState::Completed => storage::clear_restore_markers(root)?,
        RestoreState::Clean | RestoreState::Failed { .. } => {}
    }
    if checkpoint_trigger.exists() {
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || rollback_to_checkpoint(&root)).await??;
    }
    Ok(None)
}

/// Runs the restore `ROOT/_backup_restore` asks for.
async fn restore_from_backup(
    root: &Path,
    settings: &BackupSettings,
    state: RestoreState,
) -> Result<Option<PendingRestore>> {
    let trigger = root.join(BACKUP_RESTORE_TRIGGER);
    match state {
        RestoreState::Completed => {
            tracing::info!(
                "the restore asked for by {} had completed; removing it",
                trigger.display()
            );
            remove_trigger(root, BACKUP_RESTORE_TRIGGER)?;
            storage::clear_restore_markers(root)?;
            return Ok(None);
        }
        RestoreState::Unsynced(unsynced) => {
            tracing::warn!(
                "the restore asked for by {} was cut short before its files reached disk; restoring again",
                trigger.display()
            );
            unsynced.discard()?;
        }
        RestoreState::Clean | RestoreState::Failed { .. } => {}
    }
    let props = read_trigger(&trigger)?;
    let store = store_of(&trigger, &props, settings, root)?;
    let selector = Selector {
        instance: props.get("backup.instance.name").cloned(),
        timestamp: props.get("backup.restore.timestamp").cloned(),
    };
    tracing::info!(
        "restoring {} from {} ({})",
        root.display(),
        store.display(),
        trigger.display()
    );
    match props.get("backup.restore.mode").map(String::as_str) {
        None | Some("full") => {}
        Some("instant") => {
            install_for_instant_restore(root, &trigger, &store, &selector).await?;
            return Ok(None);
        }
        Some(other) => {
            return Err(trigger_error(
                &trigger,
                format!("backup.restore.mode must be 'full' or 'instant', not '{other}'"),
            ));
        }
    }
    let steps = backup::PercentSteps::new(10);
    let log_progress = |done: u64, total: u64| {
        if let Some(p) = steps.crossed(done, total) {
            tracing::info!("restore: {p}% ({done} of {total} bytes)");
        }
    };
    let (report, unsynced) = backup::restore_database(&store, &selector, root, &log_progress)
        .await
        .map_err(|source| EngineError::backup_during(format!("restore from {} failed", trigger.display()), source))?;
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

/// The store a trigger file names (or server.conf's), with its key.
fn store_of(
    trigger: &Path,
    props: &HashMap<String, String>,
    settings: &BackupSettings,
    root: &Path,
) -> Result<backup::Store> {
    let conn = match props.get("backup.object.store") {
        Some(c) => c.clone(),
        None => settings.store_connection(root),
    };
    let cipher = match (
        props.get("backup.encryption.key"),
        props.get("backup.encryption.key.file"),
    ) {
        (Some(_), Some(_)) => {
            return Err(trigger_error(
                trigger,
                "set either backup.encryption.key or backup.encryption.key.file, not both",
            ));
        }
        (Some(key), None) => Some(backup::Cipher::from_base64(key)?),
        (None, Some(path)) => Some(backup::Cipher::from_key_file(Path::new(path))?),
        (None, None) => settings.encryption.clone(),
    };
    Ok(settings.open_store(&conn, cipher)?)
}

/// The store a copy of a trigger file at `path` names; server.conf's when
/// there is no such file.
pub(crate) fn store_named_by(path: &Path, settings: &BackupSettings, root: &Path) -> Result<backup::Store> {
    let props = if path.exists() {
        read_trigger(path)?
    } else {
        HashMap::new()
    };
    store_of(path, &props, settings, root)
}

/// `backup.restore.mode=instant`: installs the state's catalog (no data
/// files) with what the hydration needs to resume, durably, then removes the
/// trigger; the files arrive while the database serves (`hydration.rs`).
async fn install_for_instant_restore(
    root: &Path,
    trigger: &Path,
    store: &backup::Store,
    selector: &Selector,
) -> Result<()> {
    let source = std::fs::read(trigger).map_err(|e| trigger_error(trigger, e.to_string()))?;
    let (report, _, unsynced) = backup::restore_catalog(store, selector, root)
        .await
        .map_err(|source| EngineError::backup_during(format!("restore from {} failed", trigger.display()), source))?;
    // Before the trigger goes (a crash until then restores again). It may hold
    // the store's secrets, like the trigger: readable by the owner only, from
    // its creation on.
    let copy = storage::db_dir(root).join(crate::hydration::HYDRATION_SOURCE);
    write_private(&copy, &source).map_err(|source| storage::StorageError::Io {
        context: format!("writing {}", copy.display()),
        source,
    })?;
    let root_owned = root.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        unsynced.make_durable()?;
        remove_trigger(&root_owned, BACKUP_RESTORE_TRIGGER)?;
        Ok(storage::clear_restore_markers(&root_owned)?)
    })
    .await??;
    tracing::info!(
        instance = %report.instance,
        tables = ?report.tables,
        files = report.files,
        bytes = report.bytes,
        "installed the catalog of backup {} (instant restore); its files arrive while it serves",
        report.backup_timestamp
    );
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file created with mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Rolls a root copied during a checkpoint back to that checkpoint (blocking).
fn rollback_to_checkpoint(root: &Path) -> Result<()> {
    let trigger = root.join(RESTORE_TRIGGER);
    let Some(record) = storage::read_checkpoint(root)? else {
        return Err(EngineError::State(format!(
            "{} exists but this root holds no checkpoint record ({}/.checkpoint/checkpoint.json): there is nothing \
             to restore to. Copy the root while a checkpoint is in progress, or remove {} to start as-is",
            trigger.display(),
            root.display(),
            trigger.display()
        )));
    };
    let report = storage::rollback_to_checkpoint(root, &record)?;
    // `_restore` goes first: a crash before the record is removed leaves a restored
    // database still in checkpoint mode, which is safe; the reverse would refuse to start.
    remove_trigger(root, RESTORE_TRIGGER)?;
    storage::remove_checkpoint(root)?;
    tracing::info!(
        tables = report.tables_restored,
        rows = report.rows,
        brought_back = ?report.tables_brought_back,
        removed = ?report.tables_removed,
        "restored the checkpoint of {}",
        backup::layout::format_timestamp(record.started_at_micros)
    );
    Ok(())
}

/// Removes a trigger file durably: once this returns, a crash does not bring it back.
fn remove_trigger(root: &Path, name: &str) -> Result<()> {
    let trigger = root.join(name);
    std::fs::remove_file(&trigger).map_err(|source| storage::StorageError::Io {
        context: format!("removing {}", trigger.display()),
        source,
    })?;
    Ok(storage::fsync_dir(root)?)
}

fn trigger_error(path: &Path, reason: impl Into<String>) -> EngineError {
    ConfigError::Read {
        path: path.display().to_string(),
        reason: reason.into(),
    }
    .into()
}

fn read_trigger(path: &Path) -> Result<HashMap<String, String>> {
    let file = std::fs::File::open(path).map_err(|e| trigger_error(path, e.to_string()))?;
    let props: HashMap<String, String> = java_properties::read(std::io::BufReader::new(file))
        .map_err(|e| trigger_error(path, e.to_string()))?
        .into_iter()
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if let Some(k) = props.keys().find(|k| !BACKUP_RESTORE_KEYS.contains(&k.as_str())) {
        return Err(trigger_error(
            path,
            format!("unknown key '{k}' (known: {})", BACKUP_RESTORE_KEYS.join(", ")),
        ));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_trigger_names_only_keys_a_trigger_accepts() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let start = readme.find("# ROOT/_backup_restore").expect("README trigger example");
        let block = &readme[start..];
        let block = &block[..block.find("```").unwrap_or(block.len())];
        let keys: Vec<&str> = block
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .collect();
        assert!(keys.len() >= 4, "{keys:?}");
        for k in keys {
            assert!(BACKUP_RESTORE_KEYS.contains(&k), "README trigger key '{k}'");
        }
    }
}
