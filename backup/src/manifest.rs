//! The manifest: one self-contained description of a complete backup.
//!
//! Written last, after every object it names is confirmed present in the
//! store; a backup exists exactly when its manifest does. See docs/backup-format.md.
use serde::{Deserialize, Serialize};
use storage::{DataFile, TableMeta};

use crate::error::{BackupError, Result};
use crate::layout::Codec;

pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// A data file in a backup and the object holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackedUpFile {
    #[serde(flatten)]
    pub file: DataFile,
    /// Object key relative to the instance folder, e.g. `files/ab/ab12….zst`.
    pub object: String,
    pub codec: Codec,
    /// Sealed with the backup encryption key (see `crypto`); absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub meta: TableMeta,
    pub commit_version: u64,
    pub files: Vec<BackedUpFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub instance: String,
    pub data_id: String,
    /// `2024-08-24T12:34:56.789123Z`
    pub backup_timestamp: String,
    pub backup_micros: i64,
    /// The instant of the snapshot backed up: every change published before
    /// it is in the backup, none after (absent in manifests written before
    /// commit shipping: then `backup_micros`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_micros: Option<i64>,
    pub tables: Vec<TableEntry>,
}

impl Manifest {
    /// The entry of `name`; its absence is an error listing the tables there are.
    pub fn table(&self, name: &str) -> Result<&TableEntry> {
        self.tables.iter().find(|t| t.meta.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.tables.iter().map(|t| t.meta.name.as_str()).collect();
            BackupError::NotFound(format!(
                "table '{name}' is not in backup {} of instance '{}'; it holds: {}",
                self.backup_timestamp,
                self.instance,
                if names.is_empty() {
                    "no tables".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
    }

    pub fn rows(&self) -> u64 {
        self.tables.iter().flat_map(|t| &t.files).map(|f| f.file.rows).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.tables.iter().flat_map(|t| &t.files).map(|f| f.file.bytes).sum()
    }

    /// See [`Manifest::snapshot_micros`].
    pub fn snapshot_instant(&self) -> i64 {
        self.snapshot_micros.unwrap_or(self.backup_micros)
    }

    /// Parses and checks a manifest; any problem is an error naming `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| BackupError::BadManifest {
            key: key.to_string(),
            reason,
        };
        let m: Self = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format_version != MANIFEST_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this build reads {MANIFEST_FORMAT_VERSION})",
                m.format_version
            )));
        }
        if uuid::Uuid::parse_str(&m.data_id).is_err() {
            return Err(bad(format!("data id '{}' is not a UUID", m.data_id)));
        }
        let mut names = std::collections::HashSet::new();
        for t in &m.tables {
            t.meta.validate().map_err(|e| bad(e.to_string()))?;
            if !names.insert(t.meta.name.as_str()) {
                return Err(bad(format!("table '{}' appears twice", t.meta.name)));
            }
            for f in &t.files {
                f.check(&t.meta.name).map_err(bad)?;
            }
        }
        Ok(m)
    }
}

impl BackedUpFile {
    /// Refuses a record whose path leaves its table's folder or whose object is
    /// not the one its hash names.
    pub(crate) fn check(&self, table: &str) -> std::result::Result<(), String> {
        self.file.check_location(table).map_err(|e| e.to_string())?;
        if self.file.hash.len() != 64 || !self.file.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("file hash '{}' is not a blake3 hex digest", self.file.hash));
        }
        let expected = crate::layout::object_name(&self.file.hash, self.codec, self.encrypted);
        if self.object != expected {
            return Err(format!(
                "object '{}' does not match hash {}",
                self.object, self.file.hash
            ));
        }
        Ok(())
    }
}
