//! Finding backups in a store: its instances, their complete backups, and the
//! one a restore or verify asks for (by instance and timestamp, or the latest).

use crate::error::{BackupError, Result};
use crate::layout::Object;
use crate::manifest::Manifest;
use crate::retention::{complete_backups, read_manifest};
use crate::store::Store;

/// Which backup to use: `None` instance means "the only one in the store",
/// `None` timestamp means the latest complete backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub instance: Option<String>,
    pub timestamp: Option<String>,
}

/// The instance a selector names, checked against what the store holds.
pub async fn resolve_instance(store: &Store, wanted: Option<&str>) -> Result<String> {
    let all = store.instances().await?;
    let listed = || {
        if all.is_empty() {
            "the store holds no backups".to_string()
        } else {
            format!("instances in the store: {}", all.join(", "))
        }
    };
    match wanted {
        Some(name) if all.iter().any(|n| n == name) => Ok(name.to_string()),
        Some(name) => Err(BackupError::NotFound(format!(
            "backup instance '{name}' not found in {}; {}",
            store.display(),
            listed()
        ))),
        None => match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(BackupError::NotFound(format!("{} holds no backups", store.display()))),
            _ => Err(BackupError::NotFound(format!(
                "{} holds several backup instances; choose one with backup.instance.name ({})",
                store.display(),
                listed()
            ))),
        },
    }
}

/// Parses a backup timestamp as shown by `backups()` (RFC 3339, UTC).
pub fn parse_backup_timestamp(text: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_micros())
        .map_err(|_| {
            BackupError::InvalidRequest(format!(
                "'{text}' is not a backup timestamp; use the form 2024-08-24T12:34:56.789123Z"
            ))
        })
}

/// The selected state as a manifest, parsed and checked, after checking that
/// the instance's data id matches it: a complete backup's, or the state at
/// any instant the backups and the commit log cover (see `log::state_at`);
/// without a timestamp, the newest state the store holds.
pub async fn locate(store: &Store, selector: &Selector) -> Result<Manifest> {
    let instance = resolve_instance(store, selector.instance.as_deref()).await?;
    let complete = complete_backups(store, &instance).await?;
    let target = selector.timestamp.as_deref().map(parse_backup_timestamp).transpose()?;
    let manifest = crate::log::state_at(store, &instance, &complete, target).await?;
    let stored = store.read(&instance, Object::DataId).await?;
    let stored = String::from_utf8_lossy(&stored).trim().to_string();
    if stored != manifest.data_id {
        return Err(BackupError::ManifestDataIdMismatch {
            // A state between backups has no manifest of its own: name the data id then.
            key: match complete.contains(&manifest.backup_micros) {
                true => store.key_of(&instance, Object::Manifest(manifest.backup_micros)),
                false => store.key_of(&instance, Object::DataId),
            }
            .to_string(),
            instance,
            instance_data_id: stored,
            manifest_data_id: manifest.data_id,
        });
    }
    Ok(manifest)
}

/// The manifest of the complete backup at `micros`, checked to describe it.
pub(crate) async fn read_backup(store: &Store, instance: &str, micros: i64) -> Result<Manifest> {
    let manifest = read_manifest(store, instance, micros).await?;
    if manifest.instance != instance || manifest.backup_micros != micros {
        return Err(BackupError::BadManifest {
            key: store.key_of(instance, Object::Manifest(micros)).to_string(),
            reason: format!(
                "describes backup {} of instance '{}'",
                manifest.backup_timestamp, manifest.instance
            ),
        });
    }
    Ok(manifest)
}
