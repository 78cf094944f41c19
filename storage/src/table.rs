//! One table: its definition, its current commit, and the operations that change it.
//!
//! Every change follows the same steps:
//! 1. write new data files (fsynced) — invisible, since no commit names them;
//! 2. under the table's write lock, build the successor commit record;
//! 3. under the storage-wide publish lock, take the commit's instant, write
//!    its journal entry (when commits are shipped), atomically replace
//!    `_commit.json` and swap the in-memory commit, so snapshots see disk and
//!    memory agree.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::clock::Clock;
use crate::commit::{Commit, DataFile};
use crate::error::{Result, StorageError};
use crate::gate::WriteGate;
use crate::journal::{Journal, JournalEntry};
use crate::meta::TableMeta;
use crate::paths::COMMIT_FILE;
use crate::writer::{conform, new_data_file_rel, split_by_partition, write_data_file};

/// Rows buffered per partition before a data file is written.
const ROWS_PER_FILE: usize = 1_000_000;

/// State shared by all tables of one storage.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Held while a change is published; snapshots take it to see one instant.
    pub(crate) publish: Mutex<Published>,
    /// Commits wait here while a restored database is not yet durable.
    pub(crate) writes: WriteGate,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Shared {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            publish: Mutex::new(Published::default()),
            writes: WriteGate::default(),
            clock,
        }
    }

    pub(crate) fn published(&self) -> MutexGuard<'_, Published> {
        lock(&self.publish)
    }
}

/// What the publish lock guards: the instants of changes and snapshots, and the journal.
#[derive(Debug, Default)]
pub(crate) struct Published {
    last_micros: i64,
    pub(crate) journal: Option<Journal>,
}

impl Published {
    /// The next instant: the clock's, but always after the last one handed
    /// out, so changes and snapshots are totally ordered by their micros.
    pub(crate) fn tick(&mut self, clock: &dyn Clock) -> i64 {
        self.last_micros = clock.now_micros().max(self.last_micros.saturating_add(1));
        self.last_micros
    }

    /// Keeps later instants after `micros` (the newest a journal holds).
    pub(crate) fn tick_after(&mut self, micros: i64) {
        self.last_micros = self.last_micros.max(micros);
    }

    /// Publishes one change at the next instant: its journal entry (built by
    /// `entry`, its added files in `dir`) is made durable first, then `apply`
    /// runs; the entry is pending only if `apply` succeeds.
    pub(crate) fn record<T>(
        &mut self,
        clock: &dyn Clock,
        entry: impl FnOnce(i64) -> JournalEntry,
        dir: &Path,
        apply: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let micros = self.tick(clock);
        let Some(journal) = self.journal.as_mut() else {
            return apply();
        };
        let entry = entry(micros);
        journal.write(&entry, dir)?;
        match apply() {
            Ok(t) => {
                journal.push(entry);
                Ok(t)
            }
            Err(e) => {
                journal.unwrite(&entry);
                Err(e)
            }
        }
    }
}

#[derive(Debug)]
pub struct Table {
    meta: Arc<TableMeta>,
    schema: SchemaRef,
    dir: PathBuf,
    commit: RwLock<Arc<Commit>>,
    /// Serialises changes to this table.
    write_lock: Mutex<()>,
    /// Files written but not yet committed; housekeeping must not take them for orphans.
    pending: Mutex<HashSet<String>>,
    dropped: AtomicBool,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Table {
    pub(crate) fn new(meta: TableMeta, dir: PathBuf, commit: Commit, shared: Arc<Shared>) -> Self {
        Self {
            schema: meta.arrow_schema(),
            meta: Arc::new(meta),
            dir,
            commit: RwLock::new(Arc::new(commit)),
            write_lock: Mutex::new(()),
            pending: Mutex::new(HashSet::new()),
            dropped: AtomicBool::new(false),
            shared,
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn meta(&self) -> &Arc<TableMeta> {
        &self.meta
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current committed file list (readers plan against this and never see partial writes).
    pub fn commit(&self) -> Arc<Commit> {
        self.commit.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Absolute path of a committed data file.
    pub fn file_path(&self, file: &DataFile) -> PathBuf {
        self.dir.join(&file.path)
    }

    /// Starts a write whose rows become visible all at once on `commit`.
    pub fn writer(self: &Arc<Self>) -> TableWriter {
        TableWriter {
            table: Arc::clone(self),
            buffers: BTreeMap::new(),
            written: Vec::new(),
        }
    }

    /// Convenience: write and commit `batches` as one transaction; returns rows added.
    pub fn append(self: &Arc<Self>, batches: &[RecordBatch]) -> Result<u64> {
        let mut w = self.writer();
        for b in batches {
            w.write(b)?;
        }
        w.commit()
    }

    /// Removes every row (the files stay on disk until housekeeping, for pins and readers).
    pub fn truncate(&self) -> Result<()> {
        self.change(|_| Ok(Vec::new())).map(|_| ())
    }

    /// Drops whole partitions by name; returns how many of them held data.
    pub fn drop_partitions(&self, partitions: &[String]) -> Result<usize> {
        for p in partitions {
            if self.meta.partition_by.range(p).is_none() {
                return Err(StorageError::InvalidData {
                    table: self.meta.name.clone(),
                    reason: format!("'{p}' is not a {} partition name", self.meta.partition_by.as_str()),
                });
            }
        }
        let wanted: HashSet<&str> = partitions.iter().map(String::as_str).collect();
        let mut dropped = HashSet::new();
        self.change(|c| {
            Ok(c.files
                .iter()
                .filter(|f| {
                    let drop = wanted.contains(f.partition.as_str());
                    if drop {
                        dropped.insert(f.partition.clone());
                    }
                    !drop
                })
                .cloned()
                .collect())
        })?;
        Ok(dropped.len())
    }

    /// Partitions that currently hold data, with their time ranges.
    pub fn partitions(&self) -> Vec<(String, (i64, i64))> {
        let commit = self.commit();
        let names: std::collections::BTreeSet<&str> = commit.files.iter().map(|f| f.partition.as_str()).collect();
        names
            .into_iter()
            .filter_map(|p| Some((p.to_string(), self.meta.partition_by.range(p)?)))
            .collect()
    }

    /// Applies `f` to the current file list under the write lock and publishes the result.
    /// Returns the new commit.
    pub(crate) fn change(&self, f: impl FnOnce(&Commit) -> Result<Vec<DataFile>>) -> Result<Arc<Commit>> {
        self.shared.writes.wait()?;
        let _w = lock(&self.write_lock);
        if self.dropped.load(Ordering::SeqCst) {
            return Err(StorageError::TableNotFound(self.meta.name.clone()));
        }
        let current = self.commit();
        let next = Arc::new(current.next(f(&current)?));
        self.shared.published().record(
            self.shared.clock.as_ref(),
            |micros| JournalEntry::commit(micros, self.name(), &current, &next),
            &self.dir,
            || {
                next.write(&self.dir.join(COMMIT_FILE))?;
                *self.commit.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
                Ok(())
            },
        )?;
        Ok(next)
    }

    /// Marks the table dropped (no further commits) and returns with its write lock released.
    pub(crate) fn mark_dropped(&self) {
        let _w = lock(&self.write_lock);
        self.dropped.store(true, Ordering::SeqCst);
    }

    pub(crate) fn pending_files(&self) -> HashSet<String> {
        lock(&self.pending).clone()
    }

    pub(crate) fn add_pending(&self, rel: &str) {
        lock(&self.pending).insert(rel.to_string());
    }

    pub(crate) fn remove_pending<'a>(&self, rels: impl IntoIterator<Item = &'a str>) {
        let mut p = lock(&self.pending);
        for r in rels {
            p.remove(r);
        }
    }

    /// Writes a data file registered as pending *before* it exists, so housekeeping
    /// never mistakes it for an orphan; it stays pending until committed or abandoned.
    pub(crate) fn write_pending_file(&self, partition: &str, batches: &[RecordBatch]) -> Result<DataFile> {
        let rel = new_data_file_rel(partition);
        self.add_pending(&rel);
        let written = write_data_file(&self.meta, &self.dir, partition, rel.clone(), batches);
        if written.is_err() {
            self.remove_pending([rel.as_str()]);
        }
        written
    }
}

/// An open write: rows are buffered per partition, spilled to data files,
/// and made visible together by [`TableWriter::commit`]. Dropping it without
/// committing leaves the files as orphans for housekeeping to delete.
#[derive(Debug)]
pub struct TableWriter {
    table: Arc<Table>,
    buffers: BTreeMap<String, (Vec<RecordBatch>, usize)>,
    written: Vec<DataFile>,
}

impl TableWriter {
    /// Adds rows (any column types castable to the table's, by position).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let conformed = conform(&self.table.meta, &self.table.schema, batch)?;
        for (partition, rows) in split_by_partition(&self.table.meta, &conformed)? {
            let entry = self.buffers.entry(partition.clone()).or_default();
            entry.1 += rows.num_rows();
            entry.0.push(rows);
            if entry.1 >= ROWS_PER_FILE {
                let (batches, _) = self.buffers.remove(&partition).unwrap_or_default();
                self.flush(&partition, &batches)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, partition: &str, batches: &[RecordBatch]) -> Result<()> {
        let file = self.table.write_pending_file(partition, batches)?;
        self.written.push(file);
        Ok(())
    }

    /// Makes all written rows visible atomically; returns the number of rows.
    pub fn commit(mut self) -> Result<u64> {
        for (partition, (batches, _)) in std::mem::take(&mut self.buffers) {
            self.flush(&partition, &batches)?;
        }
        let rows = self.written.iter().map(|f| f.rows).sum();
        if self.written.is_empty() {
            return Ok(0);
        }
        let added = self.written.clone();
        self.table.change(|c| {
            let mut files = c.files.clone();
            files.extend(added);
            Ok(files)
        })?;
        Ok(rows)
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        self.table.remove_pending(self.written.iter().map(|f| f.path.as_str()));
    }
}
