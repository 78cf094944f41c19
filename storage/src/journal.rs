//! The commit journal: with commit shipping on, every change of every table
//! (a commit, CREATE TABLE, DROP TABLE) leaves a durable entry in
//! `ROOT/db/.journal/` until a shipper has put it in a store, and every data
//! file an unshipped entry adds is kept alive by a hard link beside it, so
//! housekeeping, TRUNCATE and DROP TABLE can delete their files as usual.
//!
//! Order of one change: the entry (and its links) is made durable first,
//! then the change itself is published. A crash between the two leaves an
//! entry for a change that never happened, which [`Journal::open`] finds
//! (changes are published one at a time, so only the newest entry can be one;
//! it checks each table's last) and deletes. The newest
//! shipped entry stays on disk as the anchor: a shipper compares it with the
//! store's last shipped commit to know that the journal continues the store's
//! log without a gap.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{create_dir_durable, fsync_dir, write_atomic};
use crate::commit::{Commit, DataFile};
use crate::error::{IoContext, Result, StorageError};
use crate::meta::TableMeta;

pub(crate) const JOURNAL_DIR: &str = ".journal";
/// Left when a change failed after its entry was written: whether the change
/// reached the disk is unknown, so the next start drops the journal.
const BROKEN_MARKER: &str = "broken";
const JOURNAL_FORMAT_VERSION: u32 = 1;

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The table appeared (CREATE TABLE, or RESTORE TABLE of a new table, with its files).
    Create,
    /// A new commit record of the table.
    Commit,
    /// The table is gone.
    Drop,
}

/// One change of one table, as it was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub format_version: u32,
    /// When the change was published (acknowledged right after): unique and
    /// increasing across the database.
    pub micros: i64,
    pub table: String,
    pub kind: ChangeKind,
    /// The table's commit version after the change (0 for a drop).
    pub version: u64,
    /// The definition, for [`ChangeKind::Create`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<TableMeta>,
    pub added: Vec<DataFile>,
    /// Paths (relative to the table folder) of the files the change removed.
    pub removed: Vec<String>,
}

impl JournalEntry {
    pub(crate) fn new(micros: i64, table: &str, kind: ChangeKind, version: u64) -> Self {
        Self {
            format_version: JOURNAL_FORMAT_VERSION,
            micros,
            table: table.to_string(),
            kind,
            version,
            meta: None,
            added: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// The entry for a commit from `before` to `after`.
    pub(crate) fn commit(micros: i64, table: &str, before: &Commit, after: &Commit) -> Self {
        let old: std::collections::HashSet<&str> = before.files.iter().map(|f| f.path.as_str()).collect();
        let new: std::collections::HashSet<&str> = after.files.iter().map(|f| f.path.as_str()).collect();
        Self {
            added: after
                .files
                .iter()
                .filter(|f| !old.contains(f.path.as_str()))
                .cloned()
                .collect(),
            removed: before
                .files
                .iter()
                .filter(|f| !new.contains(f.path.as_str()))
                .map(|f| f.path.clone())
                .collect(),
            ..Self::new(micros, table, ChangeKind::Commit, after.version)
        }
    }
}

/// The unshipped entries, their links, and the anchor.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    pending: VecDeque<JournalEntry>,
    /// Micros of the newest shipped entry still on disk.
    anchor: Option<i64>,
    /// Links by file hash, with the number of pending entries naming each.
    links: HashMap<String, usize>,
}

fn entry_name(micros: i64) -> String {
    format!("{micros:020}.json")
}

fn link_name(hash: &str) -> String {
    format!("{hash}.parquet")
}

impl Journal {
    /// Opens the journal of the database in `db`, whose tables are loaded as
    /// `tables` (name -> commit version); deletes the entry of a change that
    /// was never published and links no pending entry needs.
    pub(crate) fn open(db: &Path, tables: &BTreeMap<String, u64>) -> Result<Self> {
        let dir = db.join(JOURNAL_DIR);
        if dir.join(BROKEN_MARKER).exists() {
            tracing::warn!(
                "journal: a change failed midway before the last stop; commit shipping starts again from the current state"
            );
            discard(db)?;
        }
        create_dir_durable(&dir)?;
        let mut entries = Vec::new();
        let mut files = Vec::new();
        for item in std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let path = item.ctx(|| format!("listing {}", dir.display()))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => entries.push(read_entry(&path)?),
                Some("parquet") => files.push(path),
                // A temp file of an entry a crash cut short.
                _ => remove(&path)?,
            }
        }
        entries.sort_by_key(|e| e.micros);
        let mut last_of_table: HashMap<&str, usize> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            last_of_table.insert(e.table.as_str(), i);
        }
        // Only a table's last entry can be of a change never published; any
        // other disagreement with the tables (a root copied by hand and started
        // from a checkpoint's state, say) means the journal no longer describes
        // how they came to be: it is dropped, and shipping starts from a base.
        let mut unpublished = Vec::new();
        for &i in last_of_table.values() {
            let e = &entries[i];
            match (e.kind, tables.get(&e.table)) {
                (ChangeKind::Create | ChangeKind::Commit, Some(&v)) if v == e.version => {}
                (ChangeKind::Commit, Some(&v)) if v + 1 == e.version => unpublished.push(i),
                (ChangeKind::Create, None) | (ChangeKind::Drop, Some(_)) => unpublished.push(i),
                (ChangeKind::Drop, None) => {}
                _ => {
                    tracing::warn!(
                        "journal: its last change of table '{}' (version {}) does not match the table; the journal \
                         is dropped and commit shipping starts again from the current state",
                        e.table,
                        e.version
                    );
                    discard(db)?;
                    return Self::open(db, tables);
                }
            }
        }
        for &i in &unpublished {
            tracing::info!(
                "journal: the change of table '{}' at {} was never published; its entry goes",
                entries[i].table,
                entries[i].micros
            );
            remove(&dir.join(entry_name(entries[i].micros)))?;
        }
        let mut kept: Vec<JournalEntry> = entries
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !unpublished.contains(i))
            .map(|(_, e)| e)
            .collect();
        // Every entry older than the anchor was deleted when shipped, so the
        // oldest one may be the anchor: it stays pending until the shipper,
        // comparing with the store, says it is shipped (see `continues`).
        let mut journal = Self {
            dir,
            pending: VecDeque::new(),
            anchor: None,
            links: HashMap::new(),
        };
        for e in kept.drain(..) {
            journal.push(e);
        }
        for path in files {
            let needed = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|hash| journal.links.contains_key(hash));
            if !needed {
                remove(&path)?;
            }
        }
        fsync_dir(&journal.dir)?;
        Ok(journal)
    }

    /// The newest micros the journal knows (for the database's clock).
    pub(crate) fn newest(&self) -> Option<i64> {
        self.pending.back().map(|e| e.micros).or(self.anchor)
    }

    /// Writes `entry` durably, with a link to each file it adds (`dir`: the
    /// folder those files are in now). Not pending until [`Journal::push`]:
    /// the caller publishes the change in between.
    pub(crate) fn write(&self, entry: &JournalEntry, dir: &Path) -> Result<()> {
        for f in &entry.added {
            let link = self.dir.join(link_name(&f.hash));
            match std::fs::hard_link(dir.join(&f.path), &link) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(StorageError::Io {
                        context: format!("linking {} into the journal", f.path),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        let bytes = serde_json::to_vec(entry).map_err(|e| StorageError::Corrupt {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        // One directory fsync makes the links and the entry durable together.
        write_atomic(&self.dir.join(entry_name(entry.micros)), &bytes)
    }

    /// Forgets an entry written for a change that then failed. The change may
    /// have reached the disk all the same (a rename done, its directory's fsync
    /// failed), so the journal is marked to be dropped at the next start.
    pub(crate) fn unwrite(&self, entry: &JournalEntry) {
        forget(&self.dir.join(entry_name(entry.micros)));
        if let Err(e) =
            crate::atomic::write_durable(&self.dir.join(BROKEN_MARKER), b"").and_then(|()| fsync_dir(&self.dir))
        {
            tracing::warn!("journal: {e}");
        }
    }

    /// Makes a written entry pending once its change is published.
    pub(crate) fn push(&mut self, entry: JournalEntry) {
        for f in &entry.added {
            *self.links.entry(f.hash.clone()).or_default() += 1;
        }
        self.pending.push_back(entry);
    }

    pub(crate) fn backlog(&self) -> (usize, Option<i64>) {
        (self.pending.len(), self.pending.front().map(|e| e.micros))
    }

    pub(crate) fn pending(&self) -> Vec<JournalEntry> {
        self.pending.iter().cloned().collect()
    }

    /// Whether the journal continues a log whose last shipped change was at
    /// `micros`: that change is the anchor or still here (shipped, but the
    /// shipper stopped before it said so).
    pub(crate) fn continues(&self, micros: i64) -> bool {
        self.anchor == Some(micros) || self.pending.iter().any(|e| e.micros == micros)
    }

    /// The path of the link holding the file with `hash` a pending entry adds.
    pub(crate) fn file(&self, hash: &str) -> PathBuf {
        self.dir.join(link_name(hash))
    }

    /// Records that every entry up to `micros` is in the store: their files and
    /// links go, and the newest of them stays as the anchor. Deleting is best
    /// effort: what is left is found and settled at the next start.
    pub(crate) fn shipped(&mut self, micros: i64) {
        let mut newest = None;
        while self.pending.front().is_some_and(|e| e.micros <= micros) {
            let Some(e) = self.pending.pop_front() else { break };
            for f in &e.added {
                if let Some(n) = self.links.get_mut(&f.hash) {
                    *n -= 1;
                    if *n == 0 {
                        self.links.remove(&f.hash);
                        forget(&self.file(&f.hash));
                    }
                }
            }
            if let Some(old) = newest.replace(e.micros) {
                forget(&self.dir.join(entry_name(old)));
            }
        }
        if let Some(new_anchor) = newest
            && let Some(old) = self.anchor.replace(new_anchor)
        {
            forget(&self.dir.join(entry_name(old)));
        }
    }
}

/// Deletes a file the journal no longer needs; a failure is logged.
fn forget(path: &Path) {
    if let Err(e) = remove(path) {
        tracing::warn!("journal: {e}");
    }
}

fn read_entry(path: &Path) -> Result<JournalEntry> {
    let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let entry: JournalEntry = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if entry.format_version != JOURNAL_FORMAT_VERSION {
        return Err(corrupt(format!(
            "unsupported journal format version {}",
            entry.format_version
        )));
    }
    Ok(entry)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
            context: format!("removing {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Removes the journal of the database in `db`: its entries no longer
/// continue any log (commits are not journaled while shipping is off, and a
/// rollback replaces the tables).
pub(crate) fn discard(db: &Path) -> Result<()> {
    let dir = db.join(JOURNAL_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => fsync_dir(db),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::Io {
            context: format!("removing {}", dir.display()),
            source: e,
        }),
    }
}
