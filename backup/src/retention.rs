//! Retention: keep the latest N complete backups, delete older manifests, their
//! history, and then every object no remaining manifest references; and
//! `DROP BACKUP`, the same for one chosen backup.
//!
//! Called by the backup task after its own manifest is written, or by `DROP
//! BACKUP` when no backup runs (the engine holds one lock for both), so no
//! backup is uploading or reusing objects this cleanup could mistake for garbage. Every delete goes through the store's
//! retries; an object already gone counts as deleted, so a cleanup cut short is
//! simply finished by the next one.
use std::collections::HashSet;

use crate::error::{BackupError, Result};
use crate::layout::{Folder, Object, format_timestamp, micros_of};
use crate::manifest::Manifest;
use crate::store::Store;

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub manifests_deleted: usize,
    pub objects_deleted: usize,
    /// Stored bytes of the deleted objects.
    pub bytes_deleted: u64,
}

/// The backups a cleanup keeps and those it deletes (micros, newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupPlan {
    keep: Vec<i64>,
    doomed: Vec<i64>,
    /// History records older than this go too (those of failed backups among them).
    history_before: i64,
}

/// Micros of every complete backup (those with a manifest), newest first.
pub async fn complete_backups(store: &Store, instance: &str) -> Result<Vec<i64>> {
    let mut all: Vec<i64> = store
        .list(instance, Folder::Manifests)
        .await?
        .iter()
        .filter_map(|m| micros_of(&m.name))
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    Ok(all)
}

/// Refuses `wanted` (shown to the user as `shown`) unless it is one of the
/// `complete` backups of `instance`; the error lists those that are.
pub(crate) fn check_complete(instance: &str, shown: &str, wanted: i64, complete: &[i64]) -> Result<()> {
    if complete.contains(&wanted) {
        return Ok(());
    }
    let list: Vec<String> = complete.iter().map(|m| format_timestamp(*m)).collect();
    Err(BackupError::NotFound(format!(
        "no complete backup at {shown} in instance '{instance}'; complete backups: {}",
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    )))
}

/// Reads and checks one manifest.
pub async fn read_manifest(store: &Store, instance: &str, micros: i64) -> Result<Manifest> {
    let object = Object::Manifest(micros);
    let bytes = store.read(instance, object).await?;
    Manifest::parse(store.key_of(instance, object).as_ref(), &bytes)
}

/// What a cleanup keeping the latest `keep_latest` backups would delete; `None`
/// when it would delete nothing.
pub async fn plan_cleanup(store: &Store, instance: &str, keep_latest: usize) -> Result<Option<CleanupPlan>> {
    let backups = complete_backups(store, instance).await?;
    if backups.len() <= keep_latest.max(1) {
        return Ok(None);
    }
    let (keep, doomed) = backups.split_at(keep_latest.max(1));
    Ok(Some(CleanupPlan {
        history_before: keep.last().copied().unwrap_or(i64::MIN),
        keep: keep.to_vec(),
        doomed: doomed.to_vec(),
    }))
}

/// What `DROP BACKUP` of the complete backup at `micros` deletes: its manifest,
/// its history record, and the objects no other backup references.
pub async fn plan_drop(store: &Store, instance: &str, micros: i64) -> Result<CleanupPlan> {
    let backups = complete_backups(store, instance).await?;
    check_complete(instance, &format_timestamp(micros), micros, &backups)?;
    Ok(CleanupPlan {
        keep: backups.into_iter().filter(|m| *m != micros).collect(),
        doomed: vec![micros],
        history_before: i64::MIN,
    })
}

/// Deletes what `plan` names: the old manifests first (from then on those
/// backups no longer exist), their history, then unreferenced objects.
pub async fn cleanup(store: &Store, instance: &str, plan: &CleanupPlan) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let mut referenced = HashSet::new();
    for micros in &plan.keep {
        let m = read_manifest(store, instance, *micros).await?;
        referenced.extend(m.tables.into_iter().flat_map(|t| t.files.into_iter().map(|f| f.object)));
    }
    for micros in &plan.doomed {
        store.delete(instance, Object::Manifest(*micros)).await?;
        report.manifests_deleted += 1;
    }
    for listed in store.list(instance, Folder::History).await? {
        let doomed = |t: &i64| *t < plan.history_before || plan.doomed.contains(t);
        if let Some(micros) = micros_of(&listed.name).filter(doomed) {
            store.delete(instance, Object::History(micros)).await?;
        }
    }
    for listed in store.list(instance, Folder::Files).await? {
        if !referenced.contains(&listed.name) {
            store.delete(instance, Object::File(&listed.name)).await?;
            report.objects_deleted += 1;
            report.bytes_deleted += listed.size;
        }
    }
    Ok(report)
}
