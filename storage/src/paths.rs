//! Names and paths inside `ROOT/db/`, validated in one place.
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

pub(crate) const DB_DIR: &str = "db";
pub(crate) const DATA_ID_FILE: &str = ".data_id";
pub(crate) const META_FILE: &str = "_meta.json";
pub(crate) const COMMIT_FILE: &str = "_commit.json";
/// Dropped tables wait here until no pin needs them.
pub(crate) const TRASH_DIR: &str = ".trash";
/// Marks a table folder dropped while a snapshot was pinned (the folder must not move then).
pub(crate) const DROPPED_MARKER: &str = "_dropped";
/// Tables being created are built here, then renamed into place.
pub(crate) const STAGING_PREFIX: &str = ".creating-";
pub(crate) const DATA_EXT: &str = "parquet";
/// Lists committed data files that are not here yet and arrive later (an
/// instant restore), one `table<TAB>path` a line; gone once all arrived.
pub(crate) const ARRIVING_FILE: &str = ".arriving";

const MAX_TABLE_NAME: usize = 127;

/// A table name must be a plain folder name: letters, digits, `_`, starting with a letter or `_`.
pub fn validate_table_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(StorageError::InvalidTableName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_TABLE_NAME {
        return bad("longer than 127 bytes");
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
        return bad("must start with a letter or '_'");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return bad("only letters, digits and '_' are allowed");
    }
    Ok(())
}

/// `ROOT/db`, where the tables live.
pub fn db_dir(root: &Path) -> PathBuf {
    root.join(DB_DIR)
}

/// A data file's path relative to its table folder: `<partition>/<id>.parquet`.
pub(crate) fn data_file_rel(partition: &str, id: &str) -> String {
    format!("{partition}/{id}.{DATA_EXT}")
}

/// Rejects relative paths from a commit record that could escape the table folder.
/// Every `/`-separated step must be a plain name: `Path::components` would let
/// `a/.`, `a//b` and `a/` through by normalising them away.
pub(crate) fn check_rel_path(rel: &str) -> bool {
    rel.split('/')
        .all(|step| !step.is_empty() && step != "." && step != ".." && !step.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(validate_table_name("trades").is_ok());
        assert!(validate_table_name("_t1").is_ok());
        for bad in ["", "1t", "a/b", "..", "a b", ".trash", "é"] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rel_paths() {
        assert!(check_rel_path("2024-01-15/x.parquet"));
        assert!(!check_rel_path("../x.parquet"));
        assert!(!check_rel_path("/etc/passwd"));
        assert!(!check_rel_path(""));
        for normalised_away in ["2024-01-15/.", "2024-01-15//x.parquet", "2024-01-15/", "./x.parquet"] {
            assert!(!check_rel_path(normalised_away), "{normalised_away}");
        }
        assert!(check_rel_path("2024-01-15/x..parquet"), "`..` inside a name is a name");
    }
}
