//! The one durable-write primitive everything else builds on.
//!
//! `write_atomic` = write `path.tmp`, fsync it, rename over `path`, fsync the
//! directory. After a crash, readers see either the old or the new content.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Atomically replaces `path` with `bytes` (durable when this returns).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write_durable(&tmp, bytes)?;
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", tmp.display()))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Writes a new file and fsyncs its content (not its directory entry).
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).ctx(|| format!("writing {}", path.display()))?;
    f.sync_all().ctx(|| format!("fsync {}", path.display()))
}

/// Makes the directory's entries (creates, renames, deletes) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// Makes every file written under `dir` durable: one `syncfs` instead of an
/// fsync per file when many were just written (a restore), so the disk flushes
/// them in the order that suits it.
///
/// On FUSE the kernel does not pass `syncfs` on to the file system (only
/// virtiofs gets it), so there it would make nothing durable: every file and
/// directory under `dir`, and `dir`'s own entry, is fsynced instead.
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let d = File::open(dir).ctx(|| format!("opening {}", dir.display()))?;
    if is_fuse(&d) {
        return fsync_tree(dir).and_then(|()| dir.parent().map_or(Ok(()), fsync_dir));
    }
    rustix::fs::syncfs(&d)
        .map_err(std::io::Error::from)
        .ctx(|| format!("syncfs {}", dir.display()))
}

#[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
fn is_fuse(file: &File) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type as i64 == FUSE_SUPER_MAGIC)
}

/// Fsyncs every file and directory under `dir` (one deleted meanwhile needs nothing).
fn fsync_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        listed => listed.ctx(|| format!("listing {}", dir.display()))?,
    };
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        match entry.file_type() {
            Ok(t) if t.is_dir() => fsync_tree(&entry.path())?,
            Ok(t) if t.is_file() => fsync_if_present(&entry.path())?,
            _ => {}
        }
    }
    fsync_if_present(dir)
}

fn fsync_if_present(path: &Path) -> Result<()> {
    match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        opened => opened
            .and_then(|f| f.sync_all())
            .ctx(|| format!("fsync {}", path.display())),
    }
}

/// Asks the kernel to start writing `file`'s dirty pages to disk now, without
/// waiting (`posix_fadvise(DONTNEED)` starts writeback and drops what is clean),
/// so the disk works while later files are written and the final
/// [`sync_filesystem`] waits only for the tail. Advice only: errors are ignored.
pub fn start_writeback(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// Writes `file`'s dirty pages to disk and waits until they are written
/// (`sync_file_range`): data only, so unlike fdatasync it forces no journal
/// commit, and the pages are not durable until a later fsync or
/// [`sync_filesystem`]. Lets a big writer keep only a bounded amount of its data
/// in flight. Advice only: errors surface at that later fsync.
pub fn wait_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is
    // open for the whole call because `file` is borrowed.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
}

/// Creates `dir` and any missing parents, each new entry durable in its parent.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        created => created.ctx(|| format!("creating directory {}", dir.display()))?,
    }
    parent.map_or(Ok(()), fsync_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!p.with_extension("tmp").exists());
    }
}
