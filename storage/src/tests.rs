//! Storage behaviour end to end on real files: commits, reopen, pins, housekeeping.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};

use crate::*;

#[derive(Debug, Default)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const DAY: i64 = 86_400_000_000;

fn meta() -> TableMeta {
    let cols = vec![
        Column {
            name: "ts".into(),
            ty: ColumnType::Timestamp,
        },
        Column {
            name: "sym".into(),
            ty: ColumnType::Symbol,
        },
        Column {
            name: "price".into(),
            ty: ColumnType::Double,
        },
    ];
    TableMeta::new("trades", cols, Some("ts".into()), PartitionBy::Day).unwrap()
}

fn rows(ts: &[i64]) -> RecordBatch {
    let m = meta();
    RecordBatch::try_new(
        m.arrow_schema(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec())),
            Arc::new(StringArray::from(
                ts.iter().map(|t| format!("S{}", t % 3)).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(ts.iter().map(|t| *t as f64).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

fn open(dir: &std::path::Path, clock: Arc<ManualClock>, merge_min_files: usize) -> Arc<Storage> {
    let settings = HousekeepingSettings {
        orphan_grace_micros: 10,
        merge_min_files,
        small_file_bytes: 1 << 30,
    };
    Storage::open(dir, clock, settings, None).unwrap()
}

/// Runs housekeeping twice, the clock moving past the grace period in between.
fn housekeep_fully(s: &Storage, clock: &ManualClock) -> HousekeepingReport {
    let first = s.housekeep().unwrap();
    clock.0.fetch_add(1_000, Ordering::SeqCst);
    let second = s.housekeep().unwrap();
    HousekeepingReport {
        paused: second.paused,
        partitions_merged: first.partitions_merged + second.partitions_merged,
        files_deleted: first.files_deleted + second.files_deleted,
        bytes_deleted: first.bytes_deleted + second.bytes_deleted,
    }
}

fn files_on_disk(dir: &std::path::Path) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        std::fs::read_dir(p)
            .map(|es| {
                es.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            usize::from(e.path().extension().is_some_and(|x| x == "parquet"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(dir)
}

#[test]
fn out_of_order_rows_land_in_their_day_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 4);
    let t = s.create_table(meta(), false).unwrap();
    assert!(matches!(
        s.create_table(meta(), false),
        Err(StorageError::TableExists(_))
    ));
    assert_eq!(t.append(&[rows(&[5 * DAY + 7, DAY + 1, 5 * DAY + 3])]).unwrap(), 3);
    let c = t.commit();
    assert_eq!(c.files.len(), 2);
    let day5 = c.files.iter().find(|f| f.partition == "1970-01-06").unwrap();
    assert_eq!(
        (day5.rows, day5.min_ts, day5.max_ts),
        (2, Some(5 * DAY + 3), Some(5 * DAY + 7))
    );
    assert_eq!(
        day5.hash,
        blake3::hash(&std::fs::read(t.file_path(day5)).unwrap())
            .to_hex()
            .to_string()
    );
    let data_id = s.data_id().to_string();
    drop((s, t));

    let s = open(dir.path(), clock, 4);
    assert_eq!(s.data_id(), data_id);
    let t = s.table("trades").unwrap();
    assert_eq!(t.commit().rows(), 3);
    assert_eq!(t.commit().version, 1);
}

#[test]
fn null_designated_timestamp_is_rejected_and_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::default()), 4);
    let t = s.create_table(meta(), false).unwrap();
    let bad = RecordBatch::try_new(
        meta()
            .arrow_schema()
            .as_ref()
            .clone()
            .with_metadata(Default::default())
            .into(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Float64Array::from(vec![1.0, 2.0])),
        ],
    );
    // The schema itself forbids the null, so build it through a nullable schema.
    assert!(bad.is_err());
    let nullable = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new(
            "ts",
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        ),
        arrow::datatypes::Field::new("sym", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("price", arrow::datatypes::DataType::Float64, true),
    ]));
    let bad = RecordBatch::try_new(
        nullable,
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Float64Array::from(vec![1.0, 2.0])),
        ],
    )
    .unwrap();
    let err = t.append(&[bad]).unwrap_err();
    assert!(err.to_string().contains("cannot be NULL"), "{err}");
    assert_eq!(t.commit().version, 0);
}

#[test]
fn merges_small_files_and_deletes_replaced_ones_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 3);
    let t = s.create_table(meta(), false).unwrap();
    for i in 0..3 {
        t.append(&[rows(&[DAY + 10 - i])]).unwrap();
    }
    assert_eq!(files_on_disk(dir.path()), 3);
    let r = housekeep_fully(&s, &clock);
    assert_eq!(r.partitions_merged, 1);
    assert_eq!(r.files_deleted, 3);
    let c = t.commit();
    assert_eq!(c.files.len(), 1);
    assert_eq!(
        (c.files[0].rows, c.files[0].min_ts, c.files[0].max_ts),
        (3, Some(DAY + 8), Some(DAY + 10))
    );
    assert_eq!(files_on_disk(dir.path()), 1);
}

#[test]
fn pinned_files_survive_until_unpinned_and_pause_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 2);
    let t = s.create_table(meta(), false).unwrap();
    t.append(&[rows(&[DAY])]).unwrap();
    t.append(&[rows(&[2 * DAY])]).unwrap();
    let snap = s.snapshot();
    assert_eq!(snap.tables["trades"].commit.files.len(), 2);
    let pin = s.pin(snap.clone());
    t.truncate().unwrap();
    s.drop_table("trades", false).unwrap();
    let r = housekeep_fully(&s, &clock);
    assert_eq!(r.files_deleted, 0, "pinned files and trash must stay");
    assert_eq!(files_on_disk(dir.path()), 2);

    s.pause_housekeeping();
    drop(pin);
    assert!(housekeep_fully(&s, &clock).paused);
    assert_eq!(files_on_disk(dir.path()), 2);
    s.resume_housekeeping();
    let r = housekeep_fully(&s, &clock);
    assert!(r.files_deleted >= 1);
    assert_eq!(files_on_disk(dir.path()), 0);
    assert!(s.table("trades").is_none());
}

#[test]
fn uncommitted_writer_files_are_never_visible_and_get_collected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 100);
    let t = s.create_table(meta(), false).unwrap();
    let mut w = t.writer();
    w.write(&rows(&[DAY])).unwrap();
    drop(w); // abandoned before commit: nothing was flushed
    assert_eq!(t.commit().version, 0);
    // A file left by a crash between data write and commit: an orphan.
    let part = t.dir().join("1970-01-02");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("leftover.parquet"), b"torn").unwrap();
    let r = housekeep_fully(&s, &clock);
    assert_eq!(r.files_deleted, 1);
}

#[test]
fn drop_partitions_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::default()), 100);
    let t = s.create_table(meta(), false).unwrap();
    t.append(&[rows(&[DAY, 2 * DAY, 3 * DAY])]).unwrap();
    assert_eq!(
        t.drop_partitions(&["1970-01-02".into(), "1970-01-09".into()]).unwrap(),
        1
    );
    assert_eq!(t.commit().rows(), 2);
    assert!(t.drop_partitions(&["not-a-day".into()]).is_err());
}

fn meta_named(name: &str) -> TableMeta {
    let mut m = meta();
    m.name = name.to_string();
    m
}

#[test]
fn checkpoint_rollback_restores_recorded_state_and_brings_back_dropped_tables() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 2);
    let a = s.create_table(meta_named("a"), false).unwrap();
    let b = s.create_table(meta_named("b"), false).unwrap();
    a.append(&[rows(&[DAY, DAY + 1])]).unwrap();
    b.append(&[rows(&[2 * DAY])]).unwrap();
    s.pause_housekeeping();
    let (_pin, snapshot) = s.pin_current();
    let record = CheckpointRecord::new(s.data_id(), snapshot);
    write_checkpoint(dir.path(), &record).unwrap();

    // After the checkpoint: more rows, a truncate, a drop, a new table.
    a.append(&[rows(&[3 * DAY])]).unwrap();
    a.truncate().unwrap();
    s.drop_table("b", false).unwrap();
    assert!(
        dir.path().join("db/b").is_dir(),
        "a pinned table's folder must not move while a copy may run"
    );
    assert!(matches!(
        s.create_table(meta_named("b"), false),
        Err(StorageError::DroppedDuringCheckpoint(_))
    ));
    s.create_table(meta_named("c"), false).unwrap();
    drop((a, b, s));

    let loaded = read_checkpoint(dir.path()).unwrap().unwrap();
    assert_eq!(loaded, record);
    let report = rollback_to_checkpoint(dir.path(), &loaded).unwrap();
    assert_eq!(report.tables_restored, 2);
    assert_eq!(report.tables_brought_back, vec!["b".to_string()]);
    assert_eq!(report.tables_removed, vec!["c".to_string()]);
    // Idempotent: a crash mid-restore is repaired by running it again.
    rollback_to_checkpoint(dir.path(), &loaded).unwrap();
    remove_checkpoint(dir.path()).unwrap();
    assert!(read_checkpoint(dir.path()).unwrap().is_none());

    let s = open(dir.path(), clock, 2);
    assert_eq!(s.table_names(), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(*s.table("a").unwrap().commit(), *record.snapshot.tables["a"].commit);
    assert_eq!(*s.table("b").unwrap().commit(), *record.snapshot.tables["b"].commit);
}

#[test]
fn checkpoint_rollback_refuses_an_incomplete_copy_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::default()), 2);
    let a = s.create_table(meta_named("a"), false).unwrap();
    a.append(&[rows(&[DAY])]).unwrap();
    let (_pin, snapshot) = s.pin_current();
    let record = CheckpointRecord::new(s.data_id(), snapshot);
    s.create_table(meta_named("later"), false).unwrap();
    let file = a.file_path(&a.commit().files[0]);
    std::fs::remove_file(&file).unwrap();
    let err = rollback_to_checkpoint(dir.path(), &record).unwrap_err();
    assert!(err.to_string().contains("table 'a'"), "{err}");
    assert!(
        dir.path().join("db/later").is_dir(),
        "validation failed, so nothing moved"
    );

    let mut wrong = record.clone();
    wrong.data_id = "00000000-0000-0000-0000-000000000000".into();
    assert!(
        rollback_to_checkpoint(dir.path(), &wrong)
            .unwrap_err()
            .to_string()
            .contains("belongs to database")
    );
}

#[test]
fn opening_a_copy_with_a_commit_newer_than_its_files_falls_back_to_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 2);
    let a = s.create_table(meta_named("a"), false).unwrap();
    a.append(&[rows(&[DAY])]).unwrap();
    let (_pin, snapshot) = s.pin_current();
    a.append(&[rows(&[2 * DAY])]).unwrap();
    // Simulate a copy that caught the new commit but not the new file.
    let newest = a.commit().files.last().unwrap().clone();
    std::fs::remove_file(a.file_path(&newest)).unwrap();
    drop((a, s));
    let settings = HousekeepingSettings::default();
    let err = Storage::open(dir.path(), clock.clone(), settings.clone(), None).unwrap_err();
    assert!(err.to_string().contains("_restore"), "{err}");
    let s = Storage::open(dir.path(), clock, settings, Some(&snapshot)).unwrap();
    assert_eq!(s.table("a").unwrap().commit().rows(), 1);
}

#[test]
fn held_writes_wait_while_reads_go_on_and_a_failed_release_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::default()), 100);
    let t = s.create_table(meta(), false).unwrap();
    t.append(&[rows(&[0])]).unwrap();
    s.hold_writes();
    let (insert, create) = {
        let (t, s) = (t.clone(), s.clone());
        (
            std::thread::spawn(move || t.append(&[rows(&[DAY])])),
            std::thread::spawn(move || s.create_table(meta_named("later"), false).map(|_| ())),
        )
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !insert.is_finished() && !create.is_finished(),
        "a commit went through a held gate"
    );
    assert_eq!(t.commit().files.len(), 1, "a held commit is not visible");
    assert_eq!(s.snapshot().tables.len(), 1, "reads go on while writes are held");
    assert!(s.housekeep().unwrap().paused, "housekeeping waits too");
    s.release_writes(Ok(()));
    assert_eq!(insert.join().unwrap().unwrap(), 1);
    create.join().unwrap().unwrap();
    assert_eq!(t.commit().files.len(), 2);

    s.hold_writes();
    let held = {
        let t = t.clone();
        std::thread::spawn(move || t.append(&[rows(&[2 * DAY])]))
    };
    s.release_writes(Err("syncfs: input/output error".into()));
    for result in [held.join().unwrap(), t.append(&[rows(&[3 * DAY])])] {
        let e = result.unwrap_err();
        assert!(matches!(e, StorageError::NotDurable(_)), "{e}");
        assert!(e.to_string().contains("syncfs: input/output error"), "{e}");
    }
    assert!(s.drop_table("trades", false).is_err());
    assert_eq!(t.commit().files.len(), 2, "nothing committed after the failure");
}

#[test]
fn a_restored_database_is_marked_unsynced_until_made_durable_and_can_be_discarded() {
    let root = tempfile::tempdir().unwrap();
    let build = DatabaseBuild::begin(root.path()).unwrap();
    let table = build.table(meta()).unwrap();
    build.finish_table(table, 1).unwrap();
    let data_id = uuid::Uuid::now_v7().to_string();
    let unsynced = build.finish(&data_id, &[]).unwrap();
    let db = db_dir(root.path());
    assert!(db.join(UNSYNCED_MARKER).exists());
    drop(unsynced);
    let RestoreState::Unsynced(found) = restore_state(root.path()) else {
        panic!("the marker outlives the process");
    };
    found.make_durable().unwrap();
    assert!(!db.join(UNSYNCED_MARKER).exists());
    assert!(matches!(restore_state(root.path()), RestoreState::Completed));
    // A crash between the completion marker and the unsynced marker's removal: completed.
    std::fs::write(db.join(UNSYNCED_MARKER), b"").unwrap();
    assert!(matches!(restore_state(root.path()), RestoreState::Completed));
    clear_restore_markers(root.path()).unwrap();
    assert!(matches!(restore_state(root.path()), RestoreState::Clean));

    std::fs::write(db.join(UNSYNCED_MARKER), b"").unwrap();
    let RestoreState::Unsynced(found) = restore_state(root.path()) else {
        panic!("unsynced again");
    };
    found.discard().unwrap();
    assert!(!db.exists());
    check_restorable(root.path()).unwrap();
    std::fs::write(root.path().join(RESTORE_FAILED_FILE), b"t\twhy\n").unwrap();
    assert!(matches!(restore_state(root.path()), RestoreState::Failed { .. }));
    assert!(check_restorable(root.path()).is_err());
}

#[test]
fn the_journal_keeps_every_change_and_its_files_until_shipped_and_forgets_one_never_published() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 100);
    s.enable_journal().unwrap();
    let t = s.create_table(meta(), false).unwrap();
    t.append(&[rows(&[DAY, DAY + 1])]).unwrap();
    t.truncate().unwrap();
    let pending = s.journal_pending();
    let kinds: Vec<ChangeKind> = pending.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [ChangeKind::Create, ChangeKind::Commit, ChangeKind::Commit]);
    // The clock stood still: instants still grow, one micro apart.
    assert!(pending.windows(2).all(|w| w[0].micros < w[1].micros));
    let added = pending[1].added[0].clone();
    assert_eq!(pending[2].removed, [added.path.clone()]);
    // Housekeeping deletes the truncated file; the journal's link still holds its bytes.
    s.housekeep().unwrap();
    clock.0.store(1_000, Ordering::SeqCst);
    s.housekeep().unwrap();
    assert!(!t.dir().join(&added.path).exists());
    let linked = s.journal_file(&added.hash).unwrap();
    assert_eq!(std::fs::metadata(&linked).unwrap().len(), added.bytes);

    // A crash after the entry of a commit was written but before the commit:
    // the next start drops the entry.
    let mut never = pending[2].clone();
    never.micros += 10;
    never.version += 1;
    let journal = s.db_dir().join(".journal");
    std::fs::write(
        journal.join(format!("{:020}.json", never.micros)),
        serde_json::to_vec(&never).unwrap(),
    )
    .unwrap();
    drop((t, s));
    let s = open(dir.path(), clock.clone(), 100);
    s.enable_journal().unwrap();
    assert_eq!(s.journal_pending(), pending);

    // Shipped: the entries and links go, the newest stays as the anchor the
    // shipper checks continuity against, also after a restart.
    let last = pending[2].micros;
    s.journal_shipped(last);
    assert!(s.journal_pending().is_empty());
    assert!(!linked.exists());
    assert!(s.journal_continues(last));
    assert!(!s.journal_continues(pending[1].micros));
    drop(s);
    let s = open(dir.path(), clock, 100);
    s.enable_journal().unwrap();
    assert!(s.journal_continues(last));
    // A journal that disagrees with the tables beyond one unpublished change
    // (a root started from a checkpoint's older state, say) is dropped whole.
    let mut ahead = pending[2].clone();
    ahead.micros = last + 100;
    ahead.version += 3;
    std::fs::write(
        journal.join(format!("{:020}.json", ahead.micros)),
        serde_json::to_vec(&ahead).unwrap(),
    )
    .unwrap();
    drop(s);
    let s = open(dir.path(), Arc::new(ManualClock::default()), 100);
    s.enable_journal().unwrap();
    assert!(s.journal_pending().is_empty());
    assert!(!s.journal_continues(last), "a dropped journal continues nothing");
    // Shipping turned off: the journal goes, so it can never claim to continue a log.
    s.discard_journal().unwrap();
    assert!(!journal.exists());
}

/// Regression (found by the power-cut tests): a merge holding a table dropped
/// meanwhile recreated the table's folder for its new file; the folder, without
/// metadata, made the next start fail.
#[test]
fn a_write_racing_drop_table_does_not_bring_the_folder_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let s = open(dir.path(), clock.clone(), 2);
    let t = s.create_table(meta(), false).unwrap();
    t.append(&[rows(&[0, 1])]).unwrap();
    let folder = t.dir().to_path_buf();
    assert!(s.drop_table("trades", false).unwrap());
    let err = t.write_pending_file("1970-01-01", &[rows(&[2])]).unwrap_err();
    assert!(
        matches!(err, StorageError::TableNotFound(ref n) if n == "trades"),
        "{err}"
    );
    assert!(!folder.exists(), "the dropped table's folder is not recreated");
    drop(s);
    let again = open(dir.path(), clock, 2);
    assert!(again.table("trades").is_none());
}
