//! The commit record: the complete list of a table's live data files.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{IoContext, Result, StorageError};
use crate::paths::check_rel_path;

pub(crate) const COMMIT_FORMAT_VERSION: u32 = 1;

/// One immutable Parquet file, described when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the table folder: `<partition>/<id>.parquet`.
    pub path: String,
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    /// Smallest and largest designated timestamp in the file (micros), if the table has one.
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
    /// blake3 of the file's bytes, hex; lets backups detect change without re-reading.
    pub hash: String,
}

impl DataFile {
    /// Refuses a record (from a commit or a backup manifest) whose path would leave
    /// the table folder or does not lie in its partition's folder.
    pub fn check_location(&self, table: &str) -> Result<()> {
        let in_partition = self
            .path
            .strip_prefix(&self.partition)
            .is_some_and(|rest| rest.starts_with('/'));
        if check_rel_path(&self.path) && in_partition {
            return Ok(());
        }
        Err(StorageError::InvalidData {
            table: table.to_string(),
            reason: format!(
                "data file path '{}' is not a file of partition '{}' inside the table folder",
                self.path, self.partition
            ),
        })
    }
}

/// The content of `_commit.json`. Replaced atomically on every write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub format_version: u32,
    /// Increases by one with every commit of the table.
    pub version: u64,
    pub files: Vec<DataFile>,
}

impl Commit {
    pub(crate) fn empty() -> Self {
        Self {
            format_version: COMMIT_FORMAT_VERSION,
            version: 0,
            files: Vec::new(),
        }
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// A successor record with `files` as its content.
    pub(crate) fn next(&self, files: Vec<DataFile>) -> Self {
        Self {
            format_version: COMMIT_FORMAT_VERSION,
            version: self.version + 1,
            files,
        }
    }

    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
        let commit: Self = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let corrupt = |reason: String| StorageError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if commit.format_version != COMMIT_FORMAT_VERSION {
            return Err(corrupt(format!(
                "unsupported commit format version {}",
                commit.format_version
            )));
        }
        if let Some(f) = commit.files.iter().find(|f| !check_rel_path(&f.path)) {
            return Err(corrupt(format!("data file path '{}' leaves the table folder", f.path)));
        }
        Ok(commit)
    }

    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_atomic(path, &bytes)
    }
}
