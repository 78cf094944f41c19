//! Object keys inside the store, built in one place.
//!
//! ```text
//! <prefix>/_backup/<instance>/data_id
//! <prefix>/_backup/<instance>/files/<hash[0..2]>/<hash>.<zst|raw>[.enc]
//! <prefix>/_backup/<instance>/manifests/<backup_micros>.json
//! <prefix>/_backup/<instance>/history/<backup_micros>-<started|cleaning|finished|interrupted>.json
//! <prefix>/_backup/<instance>/verifications/<backup_micros>-<verified_micros>-<ok|corrupt>.json
//! <prefix>/_backup/<instance>/log/<seq, 20 digits>.json
//! ```
use serde::{Deserialize, Serialize};

pub const BACKUP_ROOT: &str = "_backup";

/// How an object's bytes relate to the original file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// A zstd frame of the file.
    Zst,
    /// The file as it is (zstd would not shrink it).
    Raw,
}

impl Codec {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Zst => "zst",
            Self::Raw => "raw",
        }
    }
}

/// One object of a backup instance, named by what it is: [`crate::Store`]
/// derives its key, so no caller builds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    /// The id of the database the instance belongs to.
    DataId,
    /// The manifest of the backup taken at these micros.
    Manifest(i64),
    /// The record one event of a backup's life left (each event its own
    /// object, so no record is ever overwritten: `backups()` folds them).
    History { backup: i64, event: HistoryEvent },
    /// The one, overwritten, history record of a backup a store of format 1
    /// kept; read and deleted, never written.
    LegacyHistory(i64),
    /// The record of one verification of a backup; its verdict is in the
    /// key too, so the newest sound one is found by listing alone.
    Verification { backup: i64, verified: i64, sound: bool },
    /// A data file's object, by its name relative to the instance folder as
    /// manifests record it (see [`object_name`]).
    File(&'a str),
    /// The shipped-commit log's object number `seq` (1, 2, ...): zero-padded,
    /// so a reader follows the log by name and a listing sorts in order.
    Log(u64),
}

impl Object<'_> {
    /// The key below the store's prefix.
    pub fn key(self, instance: &str) -> String {
        match self {
            Self::DataId => data_id_key(instance),
            Self::Manifest(micros) => manifest_key(instance, micros),
            Self::History { backup, event } => {
                format!("{}/{backup}-{}.json", history_dir(instance), event.as_str())
            }
            Self::LegacyHistory(micros) => format!("{}/{micros}.json", history_dir(instance)),
            Self::Verification {
                backup,
                verified,
                sound,
            } => {
                let verdict = if sound { "ok" } else { "corrupt" };
                format!("{}/{backup}-{verified}-{verdict}.json", verifications_dir(instance))
            }
            Self::File(name) => format!("{}/{name}", instance_dir(instance)),
            Self::Log(seq) => format!("{}/log/{seq:020}.json", instance_dir(instance)),
        }
    }
}

/// A folder of an instance's objects, for listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    Manifests,
    History,
    Verifications,
    /// Data objects, spread over 256 shard folders.
    Files,
    Log,
}

impl Folder {
    /// The folder's key below the store's prefix.
    pub fn key(self, instance: &str) -> String {
        match self {
            Self::Manifests => manifests_dir(instance),
            Self::History => history_dir(instance),
            Self::Verifications => verifications_dir(instance),
            Self::Files => files_dir(instance),
            Self::Log => format!("{}/log", instance_dir(instance)),
        }
    }
}

pub fn instance_dir(instance: &str) -> String {
    format!("{BACKUP_ROOT}/{instance}")
}

pub fn data_id_key(instance: &str) -> String {
    format!("{}/data_id", instance_dir(instance))
}

pub fn files_dir(instance: &str) -> String {
    format!("{}/files", instance_dir(instance))
}

/// Object name relative to the instance folder: content-addressed by the file's
/// blake3; encrypted objects end in `.enc`, so a key never reuses plaintext ones.
pub fn object_name(hash: &str, codec: Codec, encrypted: bool) -> String {
    let shard = hash.get(..2).unwrap_or("00");
    let enc = if encrypted { ".enc" } else { "" };
    format!("files/{shard}/{hash}.{}{enc}", codec.extension())
}

/// The blake3 tree stored beside a raw object of the file with `hash` (see
/// `tree.rs`), named by the file's hash like its object.
pub fn tree_name(hash: &str) -> String {
    let shard = hash.get(..2).unwrap_or("00");
    format!("files/{shard}/{hash}.b3")
}

/// The tree that goes with `object`, when it is a raw unencrypted one.
pub fn tree_of_object(object: &str) -> Option<String> {
    let hash = object.strip_prefix("files/")?.split_once('/')?.1.strip_suffix(".raw")?;
    Some(tree_name(hash))
}

pub fn manifests_dir(instance: &str) -> String {
    format!("{}/manifests", instance_dir(instance))
}

pub fn manifest_key(instance: &str, micros: i64) -> String {
    format!("{}/{micros}.json", manifests_dir(instance))
}

pub fn history_dir(instance: &str) -> String {
    format!("{}/history", instance_dir(instance))
}

/// An event of a backup's life that leaves a history record, in the order
/// they happen: the record of the latest event is the backup's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HistoryEvent {
    Started,
    /// Retention began deleting older backups.
    Cleaning,
    /// The backup (and its cleanup, if any) ended, well or not.
    Finished,
    /// A later start found the backup or its cleanup still in progress.
    Interrupted,
}

impl HistoryEvent {
    pub const ALL: [Self; 4] = [Self::Started, Self::Cleaning, Self::Finished, Self::Interrupted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Cleaning => "cleaning",
            Self::Finished => "finished",
            Self::Interrupted => "interrupted",
        }
    }
}

/// The backup and event of the history object named `.../<backup>-<event>.json`
/// (event `None`: a format 1 store's `.../<backup>.json`).
pub fn history_of(key: &str) -> Option<(i64, Option<HistoryEvent>)> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    let Some((backup, event)) = name.split_once('-') else {
        return Some((name.parse().ok()?, None));
    };
    let event = HistoryEvent::ALL.into_iter().find(|e| e.as_str() == event)?;
    Some((backup.parse().ok()?, Some(event)))
}

/// The history object [`history_of`] names.
pub fn history_object(backup: i64, event: Option<HistoryEvent>) -> Object<'static> {
    match event {
        Some(event) => Object::History { backup, event },
        None => Object::LegacyHistory(backup),
    }
}

pub fn verifications_dir(instance: &str) -> String {
    format!("{}/verifications", instance_dir(instance))
}

/// The [`Object::Verification`] named by `.../<backup>-<verified>-<ok|corrupt>.json`.
pub fn verification_of(key: &str) -> Option<Object<'static>> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    let mut parts = name.split('-');
    let (backup, verified, verdict) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Object::Verification {
        backup: backup.parse().ok()?,
        verified: verified.parse().ok()?,
        sound: match verdict {
            "ok" => true,
            "corrupt" => false,
            _ => return None,
        },
    })
}

/// `42` from `.../log/00000000000000000042.json`.
pub fn log_seq_of(key: &str) -> Option<u64> {
    number_named(key)
}

/// `1724502896789123` from `.../manifests/1724502896789123.json`.
pub fn micros_of(key: &str) -> Option<i64> {
    number_named(key)
}

/// The number an object `.../<number>.json` is named by.
fn number_named<T: std::str::FromStr>(key: &str) -> Option<T> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// `2024-08-24T12:34:56.789123Z`
pub fn format_timestamp(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(object_name("abcdef", Codec::Zst, false), "files/ab/abcdef.zst");
        assert_eq!(object_name("abcdef", Codec::Raw, true), "files/ab/abcdef.raw.enc");
        assert_eq!(
            tree_of_object("files/ab/abcdef.raw").as_deref(),
            Some("files/ab/abcdef.b3")
        );
        assert_eq!(tree_of_object("files/ab/abcdef.raw.enc"), None);
        assert_eq!(tree_of_object("files/ab/abcdef.zst"), None);
        assert_eq!(manifest_key("a-b-c", 42), "_backup/a-b-c/manifests/42.json");
        assert_eq!(micros_of("_backup/x/manifests/42.json"), Some(42));
        assert_eq!(micros_of("_backup/x/manifests/x.json"), None);
        assert_eq!(Object::DataId.key("a"), "_backup/a/data_id");
        let started = Object::History {
            backup: 7,
            event: HistoryEvent::Started,
        };
        assert_eq!(started.key("a"), "_backup/a/history/7-started.json");
        assert_eq!(history_of(&started.key("a")), Some((7, Some(HistoryEvent::Started))));
        assert_eq!(history_of("_backup/a/history/7.json"), Some((7, None)));
        assert_eq!(history_object(7, None).key("a"), "_backup/a/history/7.json");
        for bad in ["7-ended.json", "x-started.json", "x.json", "7-started.txt"] {
            assert_eq!(history_of(&format!("_backup/a/history/{bad}")), None, "{bad}");
        }
        assert_eq!(
            Object::File("files/ab/abcdef.zst").key("a"),
            "_backup/a/files/ab/abcdef.zst"
        );
        assert_eq!(Folder::Files.key("a"), "_backup/a/files");
        assert_eq!(Object::Log(42).key("a"), "_backup/a/log/00000000000000000042.json");
        assert_eq!(log_seq_of(&Object::Log(42).key("a")), Some(42));
        let verification = Object::Verification {
            backup: 7,
            verified: 9,
            sound: false,
        };
        assert_eq!(verification.key("a"), "_backup/a/verifications/7-9-corrupt.json");
        assert_eq!(verification_of(&verification.key("a")), Some(verification));
        for bad in ["7-9.json", "7-9-fine.json", "7-x-ok.json", "7-9-ok-1.json"] {
            assert_eq!(
                verification_of(&format!("_backup/a/verifications/{bad}")),
                None,
                "{bad}"
            );
        }
        assert_eq!(format_timestamp(1_724_502_896_789_123), "2024-08-24T12:34:56.789123Z");
    }
}
