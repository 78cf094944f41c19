//! Retention: keep the latest N complete backups, delete older manifests, their
//! history, and then every object no remaining manifest references.
//!
//! Called only by the backup task after its own manifest is written, and only
//! one backup runs at a time per server, so no backup is uploading objects that
//! this cleanup could mistake for garbage.
use std::collections::HashSet;

use object_store::ObjectStoreExt;

use crate::error::{Result, store_err};
use crate::layout::{files_dir, history_dir, instance_dir, manifests_dir, micros_of};
use crate::manifest::Manifest;
use crate::store::Store;

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub manifests_deleted: usize,
    pub objects_deleted: usize,
}

/// Micros of every complete backup (those with a manifest), newest first.
pub async fn complete_backups(store: &Store, instance: &str) -> Result<Vec<i64>> {
    let mut all: Vec<i64> = store
        .list(&manifests_dir(instance))
        .await?
        .iter()
        .filter_map(|m| micros_of(m.location.as_ref()))
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    Ok(all)
}

/// Reads and checks one manifest.
pub async fn read_manifest(store: &Store, instance: &str, micros: i64) -> Result<Manifest> {
    let key = store.key(&crate::layout::manifest_key(instance, micros));
    let bytes = store.read(&key).await?;
    Manifest::parse(key.as_ref(), &bytes)
}

pub async fn cleanup(store: &Store, instance: &str, keep_latest: usize) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let backups = complete_backups(store, instance).await?;
    if backups.len() <= keep_latest {
        return Ok(report);
    }
    let (keep, doomed) = backups.split_at(keep_latest);
    let mut referenced = HashSet::new();
    for micros in keep {
        let m = read_manifest(store, instance, *micros).await?;
        referenced.extend(m.tables.into_iter().flat_map(|t| t.files.into_iter().map(|f| f.object)));
    }
    // Manifests first: from here on the old backups no longer exist.
    for micros in doomed {
        let key = store.key(&crate::layout::manifest_key(instance, *micros));
        store
            .store
            .delete(&key)
            .await
            .map_err(store_err(format!("deleting {key}")))?;
        report.manifests_deleted += 1;
    }
    let oldest_kept = keep.last().copied().unwrap_or(i64::MAX);
    let base_len = store.key(&instance_dir(instance)).as_ref().len() + 1;
    let old_history = store
        .list(&history_dir(instance))
        .await?
        .into_iter()
        .filter(|m| micros_of(m.location.as_ref()).is_some_and(|t| t < oldest_kept))
        .map(|m| m.location);
    for key in old_history {
        store
            .store
            .delete(&key)
            .await
            .map_err(store_err(format!("deleting {key}")))?;
    }
    let objects = store
        .list_sharded(&files_dir(instance))
        .await?
        .into_iter()
        .map(|m| m.location);
    for key in objects {
        let name = key.as_ref().get(base_len..).unwrap_or_default();
        if !referenced.contains(name) {
            store
                .store
                .delete(&key)
                .await
                .map_err(store_err(format!("deleting {key}")))?;
            report.objects_deleted += 1;
        }
    }
    Ok(report)
}
