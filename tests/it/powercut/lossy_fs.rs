//! A FUSE file system that forgets, at a power cut, everything that was not made
//! durable: the durability model of POSIX, taken strictly.
//!
//! Every file's data lives in a backing file (`BACKING/<ino>`); what the last
//! `fsync`/`fdatasync` of that file made durable is a copy beside it
//! (`BACKING/<ino>.synced`), with the pages written since. The directory tree is
//! kept in memory twice: as processes see it, and as the last `fsync` of each
//! directory made it durable. At a cut, every directory takes back its durable
//! entries (unsynced creates, renames, links and unlinks are undone, each
//! directory on its own), files no durable entry reaches disappear, and every
//! reached file takes back its synced data; a *tearing* cut keeps each page
//! written since the last fsync with probability one half and gives the file
//! either its synced or its current length, so a file can come back torn.
//!
//! `syncfs` never reaches a FUSE server (the kernel sends `FUSE_SYNCFS` only to
//! virtiofs), so on this file system a `syncfs` makes nothing durable: Strata
//! fsyncs files and directories one by one on FUSE (`storage::sync_filesystem`).
//! Stricter than ext4 (data=ordered): a rename between two directories is two
//! independent changes, an fsync of a file does not make its directory entry
//! durable, and a file whose data was never fsynced comes back empty. Looser:
//! metadata other than the length (mode, times) is durable at once.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const PAGE: u64 = 4096;
const ROOT: u64 = 1;
/// The kernel may keep names and attributes this long: every change passes through it.
const TTL: Duration = Duration::from_secs(1);

/// The file system's whole state, shared by the FUSE session and the test.
pub struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Open backing files, one per inode that was read or written.
    open: HashMap<u64, File>,
    /// Operations that change what is stored or durable, counted since the mount.
    pub changes: u64,
    /// Fail every request from the change with this number on: the power is off.
    pub cut_at: Option<u64>,
    pub cut: bool,
    /// `STRATA_POWERCUT_TRACE=1`: every change on stderr, to debug a failing seed.
    trace: bool,
}

struct Node {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    nlink: u32,
    body: Body,
}

enum Body {
    File {
        /// Length made durable by the last fsync (the synced copy's length).
        synced_len: u64,
        /// Pages written or cut off since the last fsync.
        dirty: BTreeSet<u64>,
    },
    Dir {
        live: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

type Reply<T> = Result<T, Errno>;

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl State {
    pub fn new(backing: &Path) -> State {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::dir(0o755, 0, 0));
        State {
            backing: backing.to_path_buf(),
            nodes,
            next_ino: ROOT + 1,
            open: HashMap::new(),
            changes: 0,
            cut_at: None,
            cut: false,
            trace: std::env::var_os("STRATA_POWERCUT_TRACE").is_some(),
        }
    }

    fn live_path(&self, ino: u64) -> PathBuf {
        self.backing.join(ino.to_string())
    }

    fn synced_path(&self, ino: u64) -> PathBuf {
        self.backing.join(format!("{ino}.synced"))
    }

    /// Refuses every request once the power is off; counts a change and cuts the
    /// power when it is the one armed.
    fn enter(&mut self, changes: bool) -> Reply<()> {
        if self.cut {
            return Err(Errno::EIO);
        }
        if changes {
            self.changes += 1;
            if self.cut_at.is_some_and(|at| self.changes >= at) {
                self.cut = true;
                return Err(Errno::EIO);
            }
        }
        Ok(())
    }

    fn trace(&self, what: std::fmt::Arguments) {
        if self.trace {
            eprintln!("lossy_fs #{}: {what}", self.changes);
        }
    }

    fn node(&self, ino: u64) -> Reply<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&mut self, ino: u64) -> Reply<&mut BTreeMap<OsString, u64>> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { live, .. }) => Ok(live),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Reply<u64> {
        self.entries(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn file(&mut self, ino: u64) -> Reply<&File> {
        if !self.open.contains_key(&ino) {
            let path = self.live_path(ino);
            let f = OpenOptions::new().read(true).write(true).open(path).map_err(errno)?;
            self.open.insert(ino, f);
        }
        Ok(&self.open[&ino])
    }

    fn len(&self, ino: u64) -> u64 {
        std::fs::metadata(self.live_path(ino)).map_or(0, |m| m.len())
    }

    fn attr(&self, ino: u64) -> Reply<FileAttr> {
        let n = self.node(ino)?;
        let size = match n.body {
            Body::File { .. } => self.len(ino),
            Body::Dir { ref live, .. } => live.len() as u64,
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind: n.kind,
            perm: n.perm,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn insert(&mut self, parent: u64, name: &OsStr, node: Node) -> Reply<FileAttr> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        if matches!(node.body, Body::File { .. }) {
            File::create(self.live_path(ino)).map_err(errno)?;
        }
        self.nodes.insert(ino, node);
        self.entries(parent)?.insert(name.to_os_string(), ino);
        self.trace(format_args!("create {parent}/{name:?} = {ino}"));
        self.attr(ino)
    }

    fn mark_dirty(&mut self, ino: u64, from: u64, to: u64) {
        if let Some(Node {
            body: Body::File { dirty, .. },
            mtime,
            ..
        }) = self.nodes.get_mut(&ino)
        {
            *mtime = SystemTime::now();
            if to > from {
                dirty.extend(from / PAGE..to.div_ceil(PAGE));
            }
        }
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Reply<()> {
        let old = self.len(ino);
        self.file(ino)?.set_len(size).map_err(errno)?;
        self.mark_dirty(ino, size.min(old), size.max(old));
        Ok(())
    }

    fn unlink_entry(&mut self, parent: u64, name: &OsStr) -> Reply<u64> {
        let ino = self.entries(parent)?.remove(name).ok_or(Errno::ENOENT)?;
        self.trace(format_args!("unlink {parent}/{name:?} ({ino})"));
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
        }
        Ok(ino)
    }

    fn is_empty_dir(&self, ino: u64) -> bool {
        matches!(self.nodes.get(&ino), Some(Node { body: Body::Dir { live, .. }, .. }) if live.is_empty())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Reply<()> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let ino = self.child(parent, name)?;
        if let Ok(existing) = self.child(new_parent, new_name) {
            if existing == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let replaced_dir = self.node(existing)?.kind == FileType::Directory;
            if replaced_dir && !self.is_empty_dir(existing) {
                return Err(Errno::ENOTEMPTY);
            }
            self.unlink_entry(new_parent, new_name)?;
        }
        self.entries(parent)?.remove(name);
        self.entries(new_parent)?.insert(new_name.to_os_string(), ino);
        self.trace(format_args!(
            "rename {parent}/{name:?} -> {new_parent}/{new_name:?} ({ino})"
        ));
        Ok(())
    }

    /// fsync/fdatasync of a file: its data and length become durable.
    fn sync_file(&mut self, ino: u64) -> Reply<()> {
        let len = self.len(ino);
        let (live, synced) = (self.live_path(ino), self.synced_path(ino));
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::File { synced_len, dirty }) => {
                if dirty.is_empty() && *synced_len == len {
                    return Ok(());
                }
                std::fs::copy(live, synced).map_err(errno)?;
                *synced_len = len;
                dirty.clear();
                Ok(())
            }
            Some(Body::Dir { .. }) => self.sync_dir(ino),
            None => Err(Errno::ENOENT),
        }
    }

    /// fsync of a directory: its entries as they are now become durable.
    fn sync_dir(&mut self, ino: u64) -> Reply<()> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { live, durable }) => {
                *durable = live.clone();
                if self.trace {
                    eprintln!("lossy_fs #{}: fsync dir {ino}: {:?}", self.changes, durable.keys());
                }
                Ok(())
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// `sync(1)`: everything durable, as a machine's setup leaves it.
    pub fn sync_all(&mut self) {
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            self.sync_file(ino).expect("syncing the power-cut file system");
        }
    }

    /// The power comes back: what was not durable is gone (see the module doc).
    /// `tear` decides, per page written since the last fsync, whether it reached
    /// the disk, and for each such file whether its new length did.
    pub fn lose_unsynced(&mut self, mut tear: Option<&mut dyn FnMut() -> bool>) {
        self.open.clear();
        // The durable tree: each directory reached keeps only its durable entries;
        // a directory reached twice (renamed between directories, both half synced)
        // keeps its first parent.
        let mut reached = BTreeSet::from([ROOT]);
        let mut queue = vec![ROOT];
        let mut links: HashMap<u64, u32> = HashMap::new();
        while let Some(dir) = queue.pop() {
            let Some(Node {
                body: Body::Dir { durable, .. },
                ..
            }) = self.nodes.get(&dir)
            else {
                continue;
            };
            let mut kept = BTreeMap::new();
            for (name, &ino) in durable {
                let is_dir = matches!(
                    self.nodes.get(&ino),
                    Some(Node {
                        body: Body::Dir { .. },
                        ..
                    })
                );
                if is_dir && reached.contains(&ino) {
                    continue;
                }
                kept.insert(name.clone(), ino);
                *links.entry(ino).or_default() += 1;
                if reached.insert(ino) && is_dir {
                    queue.push(ino);
                }
            }
            if let Some(Node {
                body: Body::Dir { live, durable },
                ..
            }) = self.nodes.get_mut(&dir)
            {
                *durable = kept.clone();
                *live = kept;
            }
        }
        let gone: Vec<u64> = self.nodes.keys().filter(|i| !reached.contains(i)).copied().collect();
        for ino in gone {
            self.nodes.remove(&ino);
            let _ = std::fs::remove_file(self.live_path(ino));
            let _ = std::fs::remove_file(self.synced_path(ino));
        }
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            let (live, synced) = (self.live_path(ino), self.synced_path(ino));
            let node = self.nodes.get_mut(&ino).expect("a reached node");
            node.nlink = if node.kind == FileType::Directory {
                2
            } else {
                links.get(&ino).copied().unwrap_or(1)
            };
            let Body::File { synced_len, dirty } = &mut node.body else {
                continue;
            };
            let now_len = std::fs::metadata(&live).map_or(0, |m| m.len());
            if dirty.is_empty() && *synced_len == now_len {
                continue;
            }
            let restored = restore_file(&live, &synced, *synced_len, now_len, dirty, tear.as_deref_mut());
            restored.expect("restoring a file's synced data");
            *synced_len = std::fs::metadata(&live).map_or(0, |m| m.len());
            dirty.clear();
            let _ = std::fs::copy(&live, &synced);
        }
        self.cut = false;
        self.cut_at = None;
        self.changes = 0;
    }
}

/// Rewrites `live` as the disk holds it after the cut: the synced data, with
/// (when tearing) some of the pages written since and either length.
fn restore_file<F: FnMut() -> bool + ?Sized>(
    live: &Path,
    synced: &Path,
    synced_len: u64,
    now_len: u64,
    dirty: &BTreeSet<u64>,
    tear: Option<&mut F>,
) -> std::io::Result<()> {
    let old = std::fs::read(synced).unwrap_or_default();
    let Some(tear) = tear else {
        return std::fs::write(live, &old[..synced_len as usize]);
    };
    let new = std::fs::read(live)?;
    let len = if tear() { now_len } else { synced_len } as usize;
    let mut out = vec![0u8; len];
    let copy = |out: &mut [u8], from: &[u8], start: usize| {
        let end = (start + PAGE as usize).min(out.len());
        let have = from.len().min(end);
        if start < have {
            out[start..have].copy_from_slice(&from[start..have]);
        }
    };
    for page in 0..(len as u64).div_ceil(PAGE) {
        let start = (page * PAGE) as usize;
        let from = if dirty.contains(&page) && tear() { &new } else { &old };
        copy(&mut out, from, start);
    }
    std::fs::write(live, out)
}

impl Node {
    fn dir(perm: u16, uid: u32, gid: u32) -> Node {
        Node {
            kind: FileType::Directory,
            perm,
            uid,
            gid,
            mtime: SystemTime::now(),
            nlink: 2,
            body: Body::Dir {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        }
    }

    fn file(perm: u16, uid: u32, gid: u32) -> Node {
        Node {
            kind: FileType::RegularFile,
            perm,
            uid,
            gid,
            mtime: SystemTime::now(),
            nlink: 1,
            body: Body::File {
                synced_len: 0,
                dirty: BTreeSet::new(),
            },
        }
    }
}

/// The FUSE side: each request locks the state, checks the power, and acts.
pub struct LossyFs(pub Arc<Mutex<State>>);

impl LossyFs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run<T>(&self, changes: bool, f: impl FnOnce(&mut State) -> Reply<T>) -> Reply<T> {
        let mut s = self.state();
        s.enter(changes)?;
        f(&mut s)
    }
}

fn mode_perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.run(false, |s| {
            let ino = s.child(parent.0, name)?;
            s.attr(ino)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.run(false, |s| s.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.run(true, |s| {
            if let Some(size) = size {
                s.truncate(ino.0, size)?;
            }
            let n = s.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            if let Some(mode) = mode {
                n.perm = (mode & 0o7777) as u16;
            }
            n.uid = uid.unwrap_or(n.uid);
            n.gid = gid.unwrap_or(n.gid);
            match mtime {
                Some(TimeOrNow::SpecificTime(t)) => n.mtime = t,
                Some(TimeOrNow::Now) => n.mtime = SystemTime::now(),
                None => {}
            }
            s.attr(ino.0)
        }) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let node = Node::dir(mode_perm(mode, umask), req.uid(), req.gid());
        match self.run(true, |s| s.insert(parent.0, name, node)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let node = Node::file(mode_perm(mode, umask), req.uid(), req.gid());
        match self.run(true, |s| s.insert(parent.0, name, node)) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(true, |s| s.unlink_entry(parent.0, name).map(drop)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.run(true, |s| {
            let ino = s.child(parent.0, name)?;
            if !s.is_empty_dir(ino) {
                return Err(if s.node(ino)?.kind == FileType::Directory {
                    Errno::ENOTEMPTY
                } else {
                    Errno::ENOTDIR
                });
            }
            s.unlink_entry(parent.0, name).map(drop)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.run(true, |s| s.rename(parent.0, name, newparent.0, newname, flags)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match self.run(true, |s| {
            if s.node(ino.0)?.kind == FileType::Directory {
                return Err(Errno::EPERM);
            }
            if s.entries(newparent.0)?.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            s.entries(newparent.0)?.insert(newname.to_os_string(), ino.0);
            s.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?.nlink += 1;
            s.attr(ino.0)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let truncate = flags.0 & libc::O_TRUNC != 0;
        match self.run(truncate, |s| {
            if truncate {
                s.truncate(ino.0, 0)
            } else {
                s.node(ino.0).map(drop)
            }
        }) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.run(false, |s| {
            let mut buf = vec![0u8; size as usize];
            let f = s.file(ino.0)?;
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64).map_err(errno)? {
                    0 => break,
                    n => got += n,
                }
            }
            buf.truncate(got);
            Ok(buf)
        }) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.run(true, |s| {
            s.file(ino.0)?.write_all_at(data, offset).map_err(errno)?;
            s.mark_dirty(ino.0, offset, offset + data.len() as u64);
            Ok(())
        }) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.run(true, |s| s.sync_file(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.run(false, |s| s.entries(ino.0).map(drop)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listed = self.run(false, |s| {
            let entries: Vec<(OsString, u64)> = s.entries(ino.0)?.iter().map(|(n, i)| (n.clone(), *i)).collect();
            let mut all = vec![(OsString::from("."), ino.0, FileType::Directory)];
            all.push((OsString::from(".."), ino.0, FileType::Directory));
            for (name, child) in entries {
                all.push((name, child, s.node(child)?.kind));
            }
            Ok(all)
        });
        match listed {
            Ok(all) => {
                for (i, (name, child, kind)) in all.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.run(true, |s| s.sync_dir(ino.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let backing = self.state().backing.clone();
        match rustix::fs::statvfs(&backing) {
            Ok(v) => reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                v.f_bsize as u32,
                255,
                v.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }
}
