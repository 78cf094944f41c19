//! The power-cut disk itself: what survives a cut is exactly what was made durable.
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::Disk;

fn write(path: &Path, bytes: &[u8], sync: bool) {
    let mut f = File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    if sync {
        f.sync_all().unwrap();
    }
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn a_cut_keeps_what_was_synced_and_forgets_the_rest() {
    let Some(mut disk) = Disk::mount("a_cut_keeps_what_was_synced_and_forgets_the_rest") else {
        return;
    };
    let d = disk.path();
    fs::create_dir(d.join("dir")).unwrap();
    write(&d.join("dir/replaced"), b"old", true);
    write(&d.join("dir/removed"), b"kept", true);
    disk.sync_all();

    write(&d.join("dir/synced"), b"data", true); // data synced, entry not
    write(&d.join("dir/entry-only"), b"lost data", false); // entry synced below, data not
    write(&d.join("dir/both"), b"both", true);
    write(&d.join("dir/replaced.tmp"), b"new", true);
    fs::rename(d.join("dir/replaced.tmp"), d.join("dir/replaced")).unwrap();
    sync_dir(&d.join("dir"));
    write(&d.join("dir/after"), b"after", true); // created after the directory's sync
    fs::remove_file(d.join("dir/removed")).unwrap(); // unlinked after it
    fs::hard_link(d.join("dir/both"), d.join("dir/linked")).unwrap();
    fs::create_dir(d.join("newdir")).unwrap();
    write(&d.join("newdir/inner"), b"inner", true);
    sync_dir(&d.join("newdir")); // its own entries, but not its entry in the root
    disk.cut_now();
    disk.power_on();

    let names: Vec<String> = fs::read_dir(d.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["both", "entry-only", "removed", "replaced", "synced"]);
    assert_eq!(fs::read(d.join("dir/both")).unwrap(), b"both");
    assert_eq!(
        fs::read(d.join("dir/entry-only")).unwrap(),
        b"",
        "its data was never synced"
    );
    assert_eq!(fs::read(d.join("dir/replaced")).unwrap(), b"new");
    assert_eq!(
        fs::read(d.join("dir/removed")).unwrap(),
        b"kept",
        "the unlink was not synced"
    );
    assert!(!d.join("newdir").exists(), "its entry in the root was not synced");
    assert_eq!(fs::metadata(d.join("dir/both")).unwrap().len(), 4);
}

#[test]
fn an_unsynced_rename_over_a_file_is_undone() {
    let Some(mut disk) = Disk::mount("an_unsynced_rename_over_a_file_is_undone") else {
        return;
    };
    let d = disk.path();
    write(&d.join("record"), b"version 1", true);
    disk.sync_all();
    write(&d.join("record.tmp"), b"version 2", true);
    fs::rename(d.join("record.tmp"), d.join("record")).unwrap();
    assert_eq!(fs::read(d.join("record")).unwrap(), b"version 2");
    disk.cut_now();
    disk.power_on();
    assert_eq!(fs::read(d.join("record")).unwrap(), b"version 1");
    assert!(!d.join("record.tmp").exists());
}

#[test]
fn a_tearing_cut_keeps_some_unsynced_pages() {
    let Some(mut disk) = Disk::mount("a_tearing_cut_keeps_some_unsynced_pages") else {
        return;
    };
    let d = disk.path();
    let pages = 64;
    write(&d.join("f"), &vec![b'o'; pages * 4096], true);
    disk.sync_all();
    disk.cut_now();
    disk.power_on(); // cut 1 does not tear, cut 2 does
    let mut f = fs::OpenOptions::new().write(true).open(d.join("f")).unwrap();
    f.write_all(&vec![b'n'; pages * 4096]).unwrap();
    drop(f);
    disk.cut_now();
    disk.power_on();
    let after = fs::read(d.join("f")).unwrap();
    assert_eq!(after.len(), pages * 4096);
    let new_pages = after.chunks(4096).filter(|p| p.iter().all(|&b| b == b'n')).count();
    let old_pages = after.chunks(4096).filter(|p| p.iter().all(|&b| b == b'o')).count();
    assert_eq!(new_pages + old_pages, pages, "each page is old or new, whole");
    assert!(
        new_pages > 0 && old_pages > 0,
        "torn: {new_pages} new pages, {old_pages} old"
    );
}

#[test]
fn sync_filesystem_makes_a_tree_durable_on_fuse() {
    // syncfs never reaches a FUSE file system: storage fsyncs each file and directory there.
    let Some(mut disk) = Disk::mount("sync_filesystem_makes_a_tree_durable_on_fuse") else {
        return;
    };
    let d = disk.path();
    disk.sync_all();
    fs::create_dir_all(d.join("tree/a/b")).unwrap();
    write(&d.join("tree/a/b/file"), b"deep", false);
    write(&d.join("tree/top"), b"top", false);
    storage::sync_filesystem(&d.join("tree")).unwrap();
    disk.cut_now();
    disk.power_on();
    assert_eq!(fs::read(d.join("tree/a/b/file")).unwrap(), b"deep");
    assert_eq!(fs::read(d.join("tree/top")).unwrap(), b"top");
}
