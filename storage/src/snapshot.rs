//! Consistent views of all tables at one instant, and pins that keep their files alive.
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::meta::TableMeta;

/// One table as it was when a snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub meta: Arc<TableMeta>,
    pub commit: Arc<Commit>,
}

/// The committed state of every table at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at_micros: i64,
    pub tables: BTreeMap<String, TableSnapshot>,
}

impl Snapshot {
    /// `(table, relative path)` of every data file the snapshot references.
    pub(crate) fn file_keys(&self) -> HashSet<(String, String)> {
        self.tables
            .iter()
            .flat_map(|(name, t)| t.commit.files.iter().map(move |f| (name.clone(), f.path.clone())))
            .collect()
    }
}

/// Handle of a pinned snapshot; release it with `Storage::unpin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PinId(pub(crate) u64);
