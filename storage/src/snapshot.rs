//! Consistent views of all tables at one instant, and pins that keep their files alive.
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

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

/// Identifies one pin in the table of pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PinId(pub(crate) u64);

/// Every pinned snapshot, shared by the storage and the [`Pin`]s it handed out.
pub(crate) type Pins = Arc<Mutex<BTreeMap<PinId, Snapshot>>>;

/// A pinned snapshot: housekeeping deletes none of its files while this value
/// lives. Dropping it releases the pin, so an early return or a panic of its
/// holder cannot leave files held back until a restart.
#[derive(Debug)]
#[must_use = "the snapshot is unpinned as soon as this is dropped"]
pub struct Pin {
    id: PinId,
    pins: Pins,
}

impl Pin {
    pub(crate) fn new(id: PinId, pins: Pins) -> Self {
        Self { id, pins }
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.pins.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}
