//! Verifying a backup without restoring it: every object its manifest names is
//! fetched to a scratch folder and checked (size, blake3, readable Parquet with
//! the recorded rows), then deleted. Problems are collected, not fatal, so the
//! report names every bad file.
use std::collections::HashSet;

use futures::StreamExt;

use crate::catalog::{Selector, locate};
use crate::error::{BackupError, Result};
use crate::fetch::{FETCH_CONCURRENCY, fetch_file};
use crate::manifest::BackedUpFile;
use crate::restore::{Counter, OnProgress};
use crate::store::Store;

/// One file of a backup that would not restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub table: String,
    pub path: String,
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub instance: String,
    pub backup_timestamp: String,
    pub tables: u64,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when every file checked out: the backup restores.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every file of the selected backup. Errors only when the backup itself
/// cannot be found or read (no manifest, bad manifest, unreachable store).
pub async fn verify(store: &Store, selector: &Selector, on_progress: OnProgress<'_>) -> Result<VerifyReport> {
    let manifest = locate(store, selector).await?;
    let scratch = tempfile::tempdir().map_err(|e| BackupError::Other(format!("creating a scratch folder: {e}")))?;
    let mut seen = HashSet::new();
    let files: Vec<(String, BackedUpFile)> = manifest
        .tables
        .iter()
        .flat_map(|t| t.files.iter().map(move |f| (t.meta.name.clone(), f.clone())))
        .filter(|(_, f)| seen.insert(f.file.hash.clone()))
        .collect();
    let (count, bytes) = (files.len() as u64, manifest.bytes());
    let counter = Counter::new(files.iter().map(|(_, f)| f.file.bytes).sum(), on_progress);
    let scratch_dir = scratch.path();
    let instance = manifest.instance.as_str();
    let problems: Vec<Problem> = futures::stream::iter(files.into_iter().map(|(table, f)| {
        let counter = &counter;
        async move {
            let path = scratch_dir.join(&f.file.hash);
            let checked = match fetch_file(store, instance, &f, path.clone()).await {
                Ok(_) => {
                    let (t, p, rec) = (table.clone(), path.clone(), f.file.clone());
                    tokio::task::spawn_blocking(move || storage::check_data_file(&t, &p, &rec))
                        .await
                        .map_err(|e| BackupError::Other(e.to_string()))
                        .and_then(|r| r.map_err(BackupError::from))
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&path);
            counter.add(f.file.bytes);
            checked.err().map(|e| Problem {
                table,
                path: f.file.path.clone(),
                object: f.object.clone(),
                reason: e.to_string(),
            })
        }
    }))
    .buffer_unordered(FETCH_CONCURRENCY)
    .filter_map(futures::future::ready)
    .collect()
    .await;
    Ok(VerifyReport {
        instance: manifest.instance.clone(),
        backup_timestamp: manifest.backup_timestamp.clone(),
        tables: manifest.tables.len() as u64,
        files: count,
        bytes,
        problems,
    })
}
