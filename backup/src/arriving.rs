//! A local (`fs::`) store never shows an object under its name before the
//! object's bytes are on disk.
//!
//! object_store's local backend writes a file and renames it into place without
//! an fsync, so after a power cut an object can be there, at its full size, with
//! pages that never reached the disk; a backup reusing it by name and size would
//! name a torn object. So on a local store every object is written first under
//! `_arriving/<uuid>`, at the store's root, and moved to its name only once its
//! bytes are durable: data objects in batches, when the store is made durable
//! and at least every second while a backup uploads (flush, move them all,
//! flush again: two `syncfs` a second at most, not an fsync per object), so a
//! backup killed midway leaves its uploads but the last second's named; small
//! objects (manifests, records) one by one, at once.
//! What a crash leaves in `_arriving/` is removed when the store is next opened
//! (after a week: another process may still be writing there).
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The folder, at a local store's root, objects are written in first.
pub(crate) const ARRIVING_DIR: &str = "_arriving";

/// Age after which a file left in `_arriving/` is a crash's leftover (a backup
/// may take hours between writing an object and naming it).
const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key (relative to the store's root) a new object is first written under.
pub(crate) fn arriving_key() -> String {
    format!("{ARRIVING_DIR}/{}", uuid::Uuid::new_v4().simple())
}

/// Name written objects at least this often during a long backup, so that a
/// backup killed midway leaves most of its uploads for the next one to reuse.
const NAME_EVERY: Duration = Duration::from_secs(1);

/// Written objects waiting to be moved to their names: (where it is, its name),
/// and when objects were last named.
#[derive(Default)]
pub(crate) struct Arriving(Mutex<Waiting>);

#[derive(Default)]
struct Waiting {
    objects: Vec<(PathBuf, PathBuf)>,
    named_at: Option<Instant>,
}

impl Arriving {
    /// Adds a written object; true when it is time to name what waits.
    pub(crate) fn push(&self, written: PathBuf, name: PathBuf) -> bool {
        let mut waiting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        waiting.objects.push((written, name));
        let named_at = *waiting.named_at.get_or_insert_with(Instant::now);
        named_at.elapsed() >= NAME_EVERY
    }

    /// Moves every object pushed so far to its name (their bytes must be durable
    /// by now); returns how many moved. On an error the rest stay waiting.
    pub(crate) fn place_all(&self) -> std::io::Result<usize> {
        let mut waiting = self.0.lock().unwrap_or_else(|p| p.into_inner());
        waiting.named_at = Some(Instant::now());
        let mut placed = 0;
        while let Some((written, name)) = waiting.objects.last() {
            place(written, name)?;
            waiting.objects.pop();
            placed += 1;
        }
        Ok(placed)
    }
}

/// Gives `written` the name `name` unless an object already has it (then it is
/// the same object, its name being its content's hash, or the caller compares);
/// returns false in that case. Never replaces an object.
pub(crate) fn place(written: &Path, name: &Path) -> std::io::Result<bool> {
    if let Some(dir) = name.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let placed = match std::fs::hard_link(written, name) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    std::fs::remove_file(written)?;
    Ok(placed)
}

/// Removes what crashes left in `root/_arriving/` more than a week ago.
pub(crate) fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join(ARRIVING_DIR)) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_AFTER));
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
