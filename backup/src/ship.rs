//! Commit shipping: puts the storage journal's changes in the store as the
//! commit log (see `log.rs`), one log object per call.
//!
//! ```text
//! journal entries ──► upload the files they add (content-addressed, beside the backups')
//!                 ──► make them durable, then write log/<seq>.json create-only
//!                 ──► tell the journal they are shipped (their files and links go)
//! ```
//! The first object a shipper writes starts from a base unless the journal
//! continues the store's log exactly, i.e. the store's last shipped change is
//! the journal's anchor or still in it. The base is the state pinned when the
//! journal was enabled, so every change journaled since follows it in the log.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use storage::{DataFile, JournalEntry, Pin, Snapshot, Storage};

use crate::error::{BackupError, Result};
use crate::layout::{Codec, Object};
use crate::log::{LOG_FORMAT_VERSION, Log, LogBase, LogChange, LogObject};
use crate::run::{backed_up, existing_objects, stored_object, table_entries, torn_objects};
use crate::store::Store;
use crate::throttle::Limits;
use crate::upload::{WHOLE_FILE_MAX, upload_file};

/// What one call of [`Shipper::ship`] put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub seq: u64,
    pub changes: usize,
    /// Whether the object starts from a base.
    pub base: bool,
    pub files_uploaded: usize,
    pub bytes_uploaded: u64,
    /// The instant the log now ends at.
    pub through_micros: i64,
    /// The instant of the object's base, if it has one.
    pub base_micros: Option<i64>,
}

/// Ships one database's journal to one instance of a store.
pub struct Shipper {
    store: Store,
    instance: String,
    data_id: String,
    compression_level: i32,
    limits: Limits,
    next_seq: u64,
    /// The instant the store's log ends at.
    log_end: Option<i64>,
    /// Whether the journal is known to continue the store's log (after a first object).
    chained: bool,
    /// The state when journaling began, pinned: the base of a first object
    /// that does not continue the store's log, so no journaled change is left
    /// out of it (dropped once the log is continued).
    start: Option<(Pin, Snapshot)>,
    /// Objects known to be in the store (name -> stored bytes): listed at
    /// the start and for a base, and what this shipper uploaded since.
    known: HashMap<String, u64>,
}

impl Shipper {
    /// Claims the instance for this database (or checks it is ours), and reads
    /// where its log ends and which objects it holds.
    /// Call [`Shipper::starting_from`] before shipping.
    pub async fn open(
        store: Store,
        instance: &str,
        data_id: &str,
        compression_level: i32,
        limits: Limits,
    ) -> Result<Self> {
        crate::instance::check_data_id(&store, instance, data_id).await?;
        let known = existing_objects(&store, instance).await?;
        let mut shipper = Self {
            store,
            instance: instance.to_string(),
            data_id: data_id.to_string(),
            compression_level,
            limits,
            next_seq: 1,
            log_end: None,
            chained: false,
            start: None,
            known,
        };
        shipper.read_log_end().await?;
        Ok(shipper)
    }

    /// Reads where the store's log ends: the next object's number and the
    /// instant it must continue from.
    async fn read_log_end(&mut self) -> Result<()> {
        let mut log = Log::list(&self.store, &self.instance).await?;
        (self.next_seq, self.log_end) = match log.seqs.last().copied() {
            Some(last) => (last + 1, Some(log.get(last).await?.last_micros())),
            None => (1, None),
        };
        Ok(())
    }

    /// Starts from the state pinned right after the journal was enabled: the
    /// base of a first object that does not continue the store's log.
    pub fn starting_from(self, start: (Pin, Snapshot)) -> Self {
        Self {
            start: Some(start),
            ..self
        }
    }

    /// The instant the store's log ends at, if it has one.
    pub fn log_end(&self) -> Option<i64> {
        self.log_end
    }

    /// Ships every pending journal entry as one log object; `None` when there
    /// was nothing to ship (then nothing was written). After a failure the
    /// next call reads the store's log end again: the object may have been
    /// written though its answer was lost.
    pub async fn ship(&mut self, storage: &Arc<Storage>) -> Result<Option<Shipped>> {
        let result = self.ship_pending(storage).await;
        if result.is_err() {
            self.chained = false;
            self.log_end = None;
        }
        result
    }

    async fn ship_pending(&mut self, storage: &Arc<Storage>) -> Result<Option<Shipped>> {
        if !self.chained && self.log_end.is_none() {
            self.read_log_end().await?;
        }
        let mut pending = storage.journal_pending();
        if !self.chained
            && let Some(end) = self.log_end
        {
            // Later instants than the log's, whatever this machine's clock says.
            storage.instants_after(end);
            if storage.journal_continues(end) {
                // Entries up to `end` are already in the store: the last run stopped before it said so.
                storage.journal_shipped(end);
                pending.retain(|e| e.micros > end);
                self.chained = true;
                self.start = None;
            }
        }
        if pending.is_empty() {
            return Ok(None);
        }
        self.ship_entries(storage, pending).await.map(Some)
    }

    async fn ship_entries(&mut self, storage: &Arc<Storage>, mut pending: Vec<JournalEntry>) -> Result<Shipped> {
        let mut to_upload: Vec<(DataFile, PathBuf)> = Vec::new();
        let base = if self.chained {
            None
        } else {
            // The state pinned when the journal was enabled, unless the log
            // already reaches past it (a clock behind the log's) or it was used.
            let usable = self
                .start
                .as_ref()
                .is_some_and(|(_, s)| self.log_end.is_none_or(|end| s.taken_at_micros > end));
            if !usable {
                self.start = Some(storage.pin_current());
            }
            let Some((_, snapshot)) = self.start.as_ref() else {
                return Err(BackupError::Other("commit shipping has no state to start from".into()));
            };
            pending.retain(|e| e.micros > snapshot.taken_at_micros);
            self.known = existing_objects(&self.store, &self.instance).await?;
            for (name, table) in &snapshot.tables {
                let dir = storage.db_dir().join(name);
                to_upload.extend(table.commit.files.iter().map(|f| (f.clone(), dir.join(&f.path))));
            }
            Some(snapshot.clone())
        };
        for e in &pending {
            for f in &e.added {
                let path = storage
                    .journal_file(&f.hash)
                    .ok_or_else(|| BackupError::Other("commit shipping needs the storage journal".into()))?;
                to_upload.push((f.clone(), path));
            }
        }
        let (objects, files_uploaded, bytes_uploaded) = self.upload(to_upload, base.is_some()).await?;
        let encrypted = self.store.encrypts();
        let changes: Vec<LogChange> = pending
            .iter()
            .map(|e| LogChange {
                micros: e.micros,
                table: e.table.clone(),
                kind: e.kind,
                version: e.version,
                meta: e.meta.clone(),
                added: e.added.iter().map(|f| backed_up(f, &objects, encrypted)).collect(),
                removed: e.removed.clone(),
            })
            .collect();
        let object = LogObject {
            format_version: LOG_FORMAT_VERSION,
            instance: self.instance.clone(),
            data_id: self.data_id.clone(),
            seq: self.next_seq,
            prev_micros: if base.is_some() { None } else { self.log_end },
            base: base.as_ref().map(|snapshot| LogBase {
                micros: snapshot.taken_at_micros,
                tables: table_entries(snapshot, &objects, encrypted),
            }),
            changes,
        };
        // The files must be durable before a log object names them.
        self.store.make_durable().await?;
        let bytes = serde_json::to_vec(&object).map_err(|e| BackupError::Other(e.to_string()))?;
        self.store
            .put(&self.instance, Object::Log(object.seq), Bytes::from(bytes))
            .await?;
        self.store.make_durable().await?;
        // The base is in the store: its files need the pin no longer.
        self.start = None;
        let through = object.last_micros();
        storage.journal_shipped(through);
        self.log_end = Some(through);
        self.next_seq += 1;
        self.chained = true;
        Ok(Shipped {
            seq: object.seq,
            changes: object.changes.len(),
            base: object.base.is_some(),
            files_uploaded,
            bytes_uploaded,
            through_micros: through,
            base_micros: object.base.as_ref().map(|b| b.micros),
        })
    }

    /// Puts every file the store does not hold yet; returns where each hash is
    /// stored, and the files and bytes uploaded. `listed`: [`Shipper::known`]
    /// was just listed, so what it holds is there.
    async fn upload(
        &mut self,
        files: Vec<(DataFile, PathBuf)>,
        listed: bool,
    ) -> Result<(HashMap<String, (String, Codec, u64)>, usize, u64)> {
        let mut objects = HashMap::new();
        let mut queued: Vec<(DataFile, PathBuf)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (f, path) in files {
            if !seen.insert(f.hash.clone()) {
                continue;
            }
            match self.find(&f, listed).await? {
                Some(found) => {
                    objects.insert(f.hash.clone(), found);
                }
                None => queued.push((f, path)),
            }
        }
        let uploaded: Vec<(String, (String, Codec, u64))> =
            futures::stream::iter(queued.into_iter().map(|(f, path)| {
                let (store, instance, limits, level) =
                    (&self.store, &self.instance, &self.limits, self.compression_level);
                async move {
                    let stored = upload_file(store, instance, &f.hash, path, f.bytes, level, limits).await?;
                    Ok::<_, BackupError>((f.hash, stored))
                }
            }))
            .buffer_unordered(self.store.concurrency().upload)
            .try_collect()
            .await?;
        let (count, bytes) = (uploaded.len(), uploaded.iter().map(|(_, o)| o.2).sum());
        for (hash, stored) in uploaded {
            self.known.insert(stored.0.clone(), stored.2);
            objects.insert(hash, stored);
        }
        Ok((objects, count, bytes))
    }

    /// The object already holding `f`, if the store has one. What the shipper
    /// knows of is looked up again unless just `listed` (a cleanup may have
    /// deleted it since); a large file it does not know of is looked up too,
    /// since its multipart upload cannot be create-only. A torn object (see
    /// `run::stored_object`) is deleted so the file goes up again.
    async fn find(&mut self, f: &DataFile, listed: bool) -> Result<Option<(String, Codec, u64)>> {
        let encrypted = self.store.encrypts();
        if let Some(found) = stored_object(&self.known, f, encrypted) {
            if listed || self.store.size_of(&self.instance, Object::File(&found.0)).await? == Some(found.2) {
                return Ok(Some(found));
            }
            self.known.remove(&found.0);
        } else if f.bytes > WHOLE_FILE_MAX {
            for codec in [Codec::Zst, Codec::Raw] {
                let name = crate::layout::object_name(&f.hash, codec, encrypted);
                if let Some(size) = self.store.size_of(&self.instance, Object::File(&name)).await? {
                    self.known.insert(name.clone(), size);
                }
            }
            if let Some(found) = stored_object(&self.known, f, encrypted) {
                return Ok(Some(found));
            }
        }
        for torn in torn_objects(&self.known, f, encrypted) {
            self.store.delete(&self.instance, Object::File(&torn)).await?;
            self.known.remove(&torn);
        }
        Ok(None)
    }
}
