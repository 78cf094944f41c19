//! The shipped-commit log: every change of every table, in the store within
//! a window of its commit, so a restore can reach any instant
//! (docs/backup-format.md, "The commit log").
//!
//! `log/<seq>.json` holds the changes of one shipping window, oldest first;
//! seq counts 1, 2, ... so a reader follows the log by name. Each object
//! names the instant of the last change of the object before it
//! (`prev_micros`), which chains them: a missing or foreign object shows as a
//! broken chain, never as a silently shorter history. An object may start
//! from a `base`, the full state of every table at an instant, when its
//! changes do not continue the log before it (shipping just turned on, a
//! restored or rolled-back database). The state at an instant is a backup's
//! (or a base's) tables with the later changes up to that instant applied:
//! no replay of rows, just file lists.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use storage::{ChangeKind, TableMeta};

use crate::catalog::read_backup;
use crate::error::{BackupError, Result};
use crate::layout::{Folder, Object, format_timestamp, log_seq_of};
use crate::manifest::{BackedUpFile, MANIFEST_FORMAT_VERSION, Manifest, TableEntry};
use crate::store::Store;

pub const LOG_FORMAT_VERSION: u32 = 1;

/// The full state of every table at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBase {
    pub micros: i64,
    pub tables: Vec<TableEntry>,
}

/// One change of one table, with the objects of the files it adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChange {
    /// When the change was published (its commit's acknowledgement).
    pub micros: i64,
    pub table: String,
    pub kind: ChangeKind,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<TableMeta>,
    pub added: Vec<BackedUpFile>,
    /// Paths, relative to the table folder, of the files it removes.
    pub removed: Vec<String>,
}

/// One object of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogObject {
    pub format_version: u32,
    pub instance: String,
    pub data_id: String,
    pub seq: u64,
    /// The instant the object before it ends at; `None` when it starts from a base.
    pub prev_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<LogBase>,
    pub changes: Vec<LogChange>,
}

impl LogObject {
    /// The instant up to which the log is known once this object is read.
    pub fn last_micros(&self) -> i64 {
        self.changes
            .last()
            .map(|c| c.micros)
            .or(self.base.as_ref().map(|b| b.micros))
            .or(self.prev_micros)
            .unwrap_or(i64::MIN)
    }

    /// The instant the log is continuous from: its base's, or the object before's end.
    pub fn first_micros(&self) -> i64 {
        self.base
            .as_ref()
            .map(|b| b.micros)
            .or(self.prev_micros)
            .unwrap_or(i64::MIN)
    }

    /// Parses and checks an object read under `key`.
    pub fn parse(key: &str, seq: u64, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| BackupError::BadManifest {
            key: key.to_string(),
            reason,
        };
        let o: Self = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if o.format_version != LOG_FORMAT_VERSION {
            return Err(bad(format!(
                "log format version {} is not supported (this build reads {LOG_FORMAT_VERSION})",
                o.format_version
            )));
        }
        if o.seq != seq {
            return Err(bad(format!("holds log object {} under the key of {seq}", o.seq)));
        }
        if o.prev_micros.is_none() == o.base.is_none() {
            return Err(bad(
                "a log object has either a base or the instant it follows, not both".into(),
            ));
        }
        let mut last = o.first_micros();
        for c in &o.changes {
            if c.micros <= last {
                return Err(bad(format!("changes are not in order: {} follows {}", c.micros, last)));
            }
            last = c.micros;
            storage::validate_table_name(&c.table).map_err(|e| bad(e.to_string()))?;
            match (&c.kind, &c.meta) {
                (ChangeKind::Create, None) => {
                    return Err(bad(format!("creating table '{}' without its definition", c.table)));
                }
                (_, Some(meta)) if meta.name != c.table => {
                    return Err(bad(format!(
                        "a change of table '{}' defines table '{}'",
                        c.table, meta.name
                    )));
                }
                (_, Some(meta)) => meta.validate().map_err(|e| bad(e.to_string()))?,
                _ => {}
            }
            for f in &c.added {
                f.check(&c.table).map_err(&bad)?;
            }
        }
        for t in o.base.iter().flat_map(|b| &b.tables) {
            t.meta.validate().map_err(|e| bad(e.to_string()))?;
            for f in &t.files {
                f.check(&t.meta.name).map_err(&bad)?;
            }
        }
        Ok(o)
    }
}

/// One table as a state of the database is built: its files by path, so a
/// change costs what it adds and removes, not the size of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableState {
    meta: TableMeta,
    commit_version: u64,
    files: BTreeMap<String, BackedUpFile>,
}

impl TableState {
    fn of(t: &TableEntry) -> Self {
        Self {
            meta: t.meta.clone(),
            commit_version: t.commit_version,
            files: t.files.iter().map(|f| (f.file.path.clone(), f.clone())).collect(),
        }
    }

    fn into_entry(self) -> TableEntry {
        TableEntry {
            meta: self.meta,
            commit_version: self.commit_version,
            files: self.files.into_values().collect(),
        }
    }
}

/// Tables by name, as a state of the database is built.
type State = BTreeMap<String, TableState>;

fn state_of(tables: &[TableEntry]) -> State {
    tables
        .iter()
        .map(|t| (t.meta.name.clone(), TableState::of(t)))
        .collect()
}

/// Applies one change to `state`.
fn apply(state: &mut State, c: &LogChange) -> std::result::Result<(), String> {
    let added = || c.added.iter().map(|f| (f.file.path.clone(), f.clone()));
    match c.kind {
        ChangeKind::Create => {
            let meta = c.meta.clone().ok_or("a create without a definition")?;
            let files = added().collect();
            state.insert(
                c.table.clone(),
                TableState {
                    meta,
                    commit_version: c.version,
                    files,
                },
            );
        }
        ChangeKind::Commit => {
            let t = state
                .get_mut(&c.table)
                .ok_or_else(|| format!("a commit of table '{}', which does not exist then", c.table))?;
            for path in &c.removed {
                t.files.remove(path);
            }
            t.files.extend(added());
            t.commit_version = c.version;
        }
        ChangeKind::Drop => {
            state.remove(&c.table);
        }
    }
    Ok(())
}

/// The log of one instance as a reader sees it: the numbers of its objects,
/// and the objects read so far.
pub(crate) struct Log<'a> {
    store: &'a Store,
    instance: &'a str,
    pub(crate) seqs: Vec<u64>,
    read: HashMap<u64, std::sync::Arc<LogObject>>,
}

impl<'a> Log<'a> {
    /// Lists the log (one listing).
    pub(crate) async fn list(store: &'a Store, instance: &'a str) -> Result<Self> {
        let mut seqs: Vec<u64> = store
            .list(instance, Folder::Log)
            .await?
            .iter()
            .filter_map(|l| log_seq_of(&l.name))
            .collect();
        seqs.sort_unstable();
        Ok(Self {
            store,
            instance,
            seqs,
            read: HashMap::new(),
        })
    }

    pub(crate) async fn get(&mut self, seq: u64) -> Result<std::sync::Arc<LogObject>> {
        if let Some(o) = self.read.get(&seq) {
            return Ok(o.clone());
        }
        let o = std::sync::Arc::new(read_log_object(self.store, self.instance, seq).await?);
        self.read.insert(seq, o.clone());
        Ok(o)
    }

    /// Reads the objects at `indexes` that are not read yet, in parallel.
    async fn prefetch(&mut self, indexes: std::ops::Range<usize>) -> Result<()> {
        self.prefetch_indexes(&indexes.collect::<Vec<_>>()).await
    }

    async fn prefetch_indexes(&mut self, indexes: &[usize]) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let (store, instance) = (self.store, self.instance);
        let wanted: Vec<u64> = indexes
            .iter()
            .map(|&i| self.seqs[i])
            .filter(|s| !self.read.contains_key(s))
            .collect();
        let read: Vec<LogObject> =
            futures::stream::iter(wanted.into_iter().map(move |seq| read_log_object(store, instance, seq)))
                .buffered(store.concurrency().download)
                .try_collect()
                .await?;
        for o in read {
            self.read.insert(o.seq, std::sync::Arc::new(o));
        }
        Ok(())
    }

    /// The index of the first object that ends after `micros` (`seqs.len()` if
    /// none): a search reading as many objects at once as the store's download
    /// concurrency, so a long log costs a few round trips, not one per halving.
    async fn first_ending_after(&mut self, micros: i64) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.seqs.len());
        let fan = self.store.concurrency().download.max(2);
        // The answer is in [lo, hi]: objects before lo end at or before `micros`.
        while lo < hi {
            let probes: Vec<usize> = (lo..hi).step_by((hi - lo).div_ceil(fan)).collect();
            self.prefetch_indexes(&probes).await?;
            let mut after = None;
            for &i in &probes {
                if self.get(self.seqs[i]).await?.last_micros() > micros {
                    after = Some(i);
                    break;
                }
                lo = i + 1;
            }
            if let Some(i) = after {
                hi = i;
            }
        }
        Ok(lo)
    }

    /// The instants the log covers: from its first object's start (a base) to its end.
    pub(crate) async fn span(&mut self) -> Result<Option<(Option<i64>, i64)>> {
        let (Some(&first), Some(&last)) = (self.seqs.first(), self.seqs.last()) else {
            return Ok(None);
        };
        let first = self.get(first).await?;
        let start = first.base.as_ref().map(|b| b.micros);
        Ok(Some((start, self.get(last).await?.last_micros())))
    }
}

/// Deletes the log objects that end before `oldest_kept` (the oldest kept
/// backup's instant: no restore can start before it; `None`, no backup kept:
/// none is deleted), oldest first; returns the data objects the remaining
/// ones name.
pub(crate) async fn trim(store: &Store, instance: &str, oldest_kept: Option<i64>) -> Result<HashSet<String>> {
    use futures::{StreamExt, TryStreamExt};
    let mut log = Log::list(store, instance).await?;
    // The newest object always stays: a shipper continues the log after it,
    // and a reader following by name waits for the number after it.
    let keep_from = match oldest_kept {
        Some(micros) => log
            .first_ending_after(micros)
            .await?
            .min(log.seqs.len().saturating_sub(1)),
        None => 0,
    };
    for &seq in &log.seqs[..keep_from] {
        store.delete(instance, Object::Log(seq)).await?;
    }
    let kept: Vec<LogObject> = futures::stream::iter(
        log.seqs[keep_from..]
            .iter()
            .copied()
            .map(move |seq| read_log_object(store, instance, seq)),
    )
    .buffered(store.concurrency().download)
    .try_collect()
    .await?;
    Ok(kept
        .into_iter()
        .flat_map(|o| {
            let base = o.base.into_iter().flat_map(|b| b.tables).flat_map(|t| t.files);
            base.chain(o.changes.into_iter().flat_map(|c| c.added))
                .map(|f| f.object)
                .collect::<Vec<_>>()
        })
        .collect())
}

/// The log object `seq` of `instance`, or `None` while it is not written:
/// how a reader follows the log by name, one GET per poll and no listing.
pub async fn follow_log(store: &Store, instance: &str, seq: u64) -> Result<Option<LogObject>> {
    match read_log_object(store, instance, seq).await {
        Ok(o) => Ok(Some(o)),
        Err(BackupError::Store {
            source: object_store::Error::NotFound { .. },
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads and checks one log object.
pub(crate) async fn read_log_object(store: &Store, instance: &str, seq: u64) -> Result<LogObject> {
    let object = Object::Log(seq);
    let bytes = store.read(instance, object).await?;
    LogObject::parse(store.key_of(instance, object).as_ref(), seq, &bytes)
}

/// The instants the store can restore: from its oldest complete backup (or
/// the log's first base) to the newest of its latest backup and the log's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn describe(&self) -> String {
        format!(
            "the store can restore from {} to {}",
            format_timestamp(self.start),
            format_timestamp(self.end)
        )
    }
}

/// The window of `instance` given its complete backups (newest first); `None`
/// when it has neither backups nor log.
pub async fn window(store: &Store, instance: &str, complete: &[i64]) -> Result<Option<Window>> {
    let mut log = Log::list(store, instance).await?;
    Ok(window_of(complete, log.span().await?))
}

fn window_of(complete: &[i64], span: Option<(Option<i64>, i64)>) -> Option<Window> {
    let oldest_backup = complete.last().copied();
    let newest_backup = complete.first().copied();
    let (log_start, log_end) = match span {
        Some((start, end)) => (start, Some(end)),
        None => (None, None),
    };
    let start = [oldest_backup, log_start].into_iter().flatten().min()?;
    let end = [newest_backup, log_end].into_iter().flatten().max()?;
    Some(Window { start, end })
}

/// The state of the database at `target` (`None`: the newest the store
/// knows) as a manifest: the nearest complete backup at or before it (or a
/// base of the log) with the log's changes up to `target` applied; exactly a
/// backup's manifest when `target` is that backup. An instant the backups and
/// the log do not cover is an error naming what they do cover.
pub(crate) async fn state_at(store: &Store, instance: &str, complete: &[i64], target: Option<i64>) -> Result<Manifest> {
    let mut log = Log::list(store, instance).await?;
    let span = log.span().await?;
    let Some(window) = window_of(complete, span) else {
        return Err(BackupError::NotFound(format!(
            "instance '{instance}' has no complete backup"
        )));
    };
    let target = target.unwrap_or(window.end);
    if complete.contains(&target) {
        return read_backup(store, instance, target).await;
    }
    if span.is_none() {
        crate::retention::check_complete(instance, &format_timestamp(target), target, complete)?;
    }
    if target < window.start || target > window.end {
        return Err(outside(instance, target, &window));
    }
    let (mut tables, mut at, mut template) = match complete.iter().find(|&&b| b <= target) {
        Some(&b) => {
            let m = read_backup(store, instance, b).await?;
            let tables = state_of(&m.tables);
            (tables, m.snapshot_instant(), Some(m))
        }
        None => (State::new(), i64::MIN, None),
    };
    let mut prev: Option<std::sync::Arc<LogObject>> = None;
    let first = log.first_ending_after(at).await?;
    let last = log.first_ending_after(target - 1).await?;
    log.prefetch(first..last.saturating_add(1).min(log.seqs.len())).await?;
    for index in first..log.seqs.len() {
        if at >= target {
            break;
        }
        let seq = log.seqs[index];
        let o = log.get(seq).await?;
        let continues = match &prev {
            Some(p) => seq == p.seq + 1 && o.prev_micros == Some(p.last_micros()),
            None => o.first_micros() <= at,
        };
        if !continues {
            // Only a base picks up where the log before it cannot be followed.
            match &o.base {
                Some(base) if base.micros <= target => {
                    tables = state_of(&base.tables);
                    at = base.micros;
                }
                _ => return Err(gap(instance, at, &o)),
            }
        }
        template.get_or_insert_with(|| template_of(&o));
        let key = || store.key_of(instance, Object::Log(seq)).to_string();
        for c in o.changes.iter().filter(|c| c.micros > at && c.micros <= target) {
            apply(&mut tables, c).map_err(|reason| BackupError::BadManifest { key: key(), reason })?;
        }
        at = o.last_micros().min(target);
        prev = Some(o);
    }
    if at < target
        && let Some(&next) = complete.iter().rev().find(|&&b| b > target)
    {
        // The log ends before the target, but the next backup holds the same
        // state: no change was published in between (versions only grow).
        let later = read_backup(store, instance, next).await?;
        let same = state_of(&later.tables) == tables;
        if same {
            at = target;
        }
    }
    match template {
        Some(template) if at >= target => Ok(Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            backup_timestamp: format_timestamp(target),
            backup_micros: target,
            snapshot_micros: Some(target),
            tables: tables.into_values().map(TableState::into_entry).collect(),
            ..template
        }),
        _ => Err(BackupError::NotFound(format!(
            "instance '{instance}' has no state at {}: neither a backup nor the commit log covers it (the \
             nearest known state before it is at {}); {}",
            format_timestamp(target),
            format_timestamp(at),
            window.describe()
        ))),
    }
}

fn template_of(o: &LogObject) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        instance: o.instance.clone(),
        data_id: o.data_id.clone(),
        backup_timestamp: String::new(),
        backup_micros: 0,
        snapshot_micros: None,
        tables: Vec::new(),
    }
}

fn outside(instance: &str, target: i64, window: &Window) -> BackupError {
    BackupError::NotFound(format!(
        "instance '{instance}' has no state at {}: {}",
        format_timestamp(target),
        window.describe()
    ))
}

fn gap(instance: &str, from: i64, o: &LogObject) -> BackupError {
    BackupError::NotFound(format!(
        "the commit log of instance '{instance}' has a gap: nothing continues it from {} (log object {} starts at {}); \
         restore to an instant before the gap or to a backup after it",
        format_timestamp(from),
        o.seq,
        format_timestamp(o.first_micros())
    ))
}
