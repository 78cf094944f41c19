//! The backup instance: a three-word name per database, and the data id check.
use std::path::Path;

use crate::error::{BackupError, Result};
use crate::layout::Object;
use crate::store::Store;

/// File under `ROOT/db/` holding the instance name.
pub const INSTANCE_NAME_FILE: &str = ".backup_instance_name";

/// The configured name, else the one in `db/.backup_instance_name`, else a new
/// three-word name (kept there durably).
pub fn instance_name(db_dir: &Path, configured: Option<&str>) -> Result<String> {
    if let Some(name) = configured {
        validate(name)?;
        return Ok(name.to_string());
    }
    let path = db_dir.join(INSTANCE_NAME_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let name = s.trim().to_string();
            validate(&name).map_err(|_| {
                BackupError::Other(format!("{}: '{name}' is not a valid instance name", path.display()))
            })?;
            return Ok(name);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BackupError::Other(format!("reading {}: {e}", path.display()))),
    }
    let name =
        petname::petname(3, "-").ok_or_else(|| BackupError::Other("could not generate an instance name".into()))?;
    storage::write_atomic(&path, name.as_bytes())?;
    Ok(name)
}

fn validate(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BackupError::Config {
            key: "backup.instance.name".into(),
            reason: format!("'{name}' must be 1-100 characters of a-z, 0-9, '-' and '_'"),
        })
    }
}

/// Claims the instance for this database, or checks it is ours (QuestDB's ER007).
pub async fn check_data_id(store: &Store, instance: &str, data_id: &str) -> Result<()> {
    match store.read(instance, Object::DataId).await {
        Ok(bytes) => {
            let stored = String::from_utf8_lossy(&bytes).trim().to_string();
            if stored != data_id {
                return Err(BackupError::DataIdMismatch {
                    instance: instance.to_string(),
                    store_data_id: stored,
                    local_data_id: data_id.to_string(),
                });
            }
            Ok(())
        }
        Err(BackupError::Store {
            source: object_store::Error::NotFound { .. },
            ..
        }) => {
            store
                .put(instance, Object::DataId, data_id.as_bytes().to_vec().into())
                .await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = instance_name(dir.path(), None).unwrap();
        assert_eq!(a.split('-').count(), 3, "{a}");
        assert_eq!(instance_name(dir.path(), None).unwrap(), a);
        assert_eq!(instance_name(dir.path(), Some("mine")).unwrap(), "mine");
        assert!(instance_name(dir.path(), Some("../up")).is_err());
    }
}
