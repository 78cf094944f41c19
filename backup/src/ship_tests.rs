//! Commit shipping and restore to any instant: a random mix of inserts,
//! merges, truncates, dropped partitions, dropped and re-created tables and
//! table restores, shipped in rounds between backups (with retention), then
//! the state at hundreds of instants compared with what was acknowledged then.
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use storage::{Clock, HousekeepingSettings, Storage, SystemClock};

use crate::fault_tests::{backup, content, restored_state, table};
use crate::*;

type Content = HashMap<String, BTreeSet<(String, String, u64)>>;

const DAY: i64 = 86_400_000_000;

/// A small deterministic generator, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn rows(first_day: i64, days: i64, salt: i64) -> RecordBatch {
    let ts: Vec<i64> = (0..days * 20)
        .map(|i| first_day * DAY + i * (DAY / 20) + salt)
        .collect();
    RecordBatch::try_new(
        table("x").arrow_schema(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts.clone())),
            Arc::new(Int64Array::from(ts.iter().map(|t| t ^ salt).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

fn journaled(dir: &Path) -> Arc<Storage> {
    let settings = HousekeepingSettings {
        orphan_grace_micros: 0,
        merge_min_files: 3,
        ..HousekeepingSettings::default()
    };
    let s = Storage::open(dir, Arc::new(SystemClock), settings, None).unwrap();
    s.enable_journal().unwrap();
    s
}

/// A shipper starting from the state pinned now (right after the journal was enabled).
async fn shipper(s: &Storage, store: &Store) -> Shipper {
    Shipper::open(store.clone(), "test-instance", s.data_id(), 3, Limits::new(None, 2))
        .await
        .unwrap()
        .starting_from(s.pin_current())
}

/// The state the store gives for `micros`, as content.
async fn state_at(store: &Store, micros: i64) -> Result<Content> {
    let selector = Selector {
        instance: None,
        timestamp: Some(layout::format_timestamp(micros)),
    };
    let m = locate(store, &selector).await?;
    Ok(m.tables
        .iter()
        .map(|t| {
            let files = t
                .files
                .iter()
                .map(|f| (f.file.partition.clone(), f.file.hash.clone(), f.file.rows))
                .collect();
            (t.meta.name.clone(), files)
        })
        .collect())
}

/// One acknowledged change: the instants around it and the state after it.
struct Acked {
    before: i64,
    after: i64,
    content: Content,
}

/// The state acknowledged at `t`; `None` while a change was in flight at `t`.
fn expected_at(log: &[Acked], t: i64) -> Option<&Content> {
    if log.iter().any(|a| a.before <= t && t <= a.after) {
        return None;
    }
    log.iter().rev().find(|a| a.after < t).map(|a| &a.content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instant_restores_exactly_the_state_acknowledged_at_it() {
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemClock.now_micros() as u64 | 1);
    println!("seed {seed} (STRATA_TEST_SEED={seed} reproduces this run)");
    let mut rng = Rng(seed);
    let (db, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = journaled(db.path());
    let store = Store::open(&format!("fs::root={};", store_dir.path().display())).unwrap();
    let mut shipper = shipper(&s, &store).await;
    let clock = SystemClock;
    let mut acked: Vec<Acked> = Vec::new();
    let mut names = vec!["a".to_string(), "b".to_string()];
    let before = clock.now_micros();
    for n in &names {
        s.create_table(table(n), false).unwrap();
    }
    acked.push(Acked {
        before,
        after: clock.now_micros(),
        content: content(&s),
    });
    let (mut shipped_once, mut backups_taken) = (false, 0);
    for step in 0..160i64 {
        let before = clock.now_micros();
        let live = s.table_names();
        let pick = |rng: &mut Rng| live[rng.below(live.len() as u64) as usize].clone();
        match rng.below(20) {
            0..=8 if !live.is_empty() => {
                let t = s.table(&pick(&mut rng)).unwrap();
                let first = 19_000 + rng.below(6) as i64;
                t.append(&[rows(first, 1 + rng.below(2) as i64, step)]).unwrap();
            }
            9 => {
                s.housekeep().unwrap();
            }
            10 if !live.is_empty() => s.table(&pick(&mut rng)).unwrap().truncate().unwrap(),
            11 if !live.is_empty() => {
                let t = s.table(&pick(&mut rng)).unwrap();
                if let Some((p, _)) = t.partitions().first() {
                    t.drop_partitions(std::slice::from_ref(p)).unwrap();
                }
            }
            12 if live.len() > 1 => {
                s.drop_table(&pick(&mut rng), false).unwrap();
            }
            13 => {
                let name = names[rng.below(names.len() as u64) as usize].clone();
                if s.table(&name).is_none() {
                    match s.create_table(table(&name), false) {
                        // Dropped while pinned (before the first shipment, or during a backup): refused.
                        Err(storage::StorageError::DroppedDuringCheckpoint(_)) => continue,
                        other => {
                            other.unwrap();
                        }
                    }
                } else if names.len() < 4 {
                    let new = format!("t{step}");
                    s.create_table(table(&new), false).unwrap();
                    names.push(new);
                }
            }
            14 if shipped_once && !live.is_empty() => {
                // RESTORE TABLE ... replace from the newest state the store holds.
                let table = pick(&mut rng);
                let request = TableRequest {
                    table: table.clone(),
                    target: table.clone(),
                    replace: true,
                    partitions: None,
                };
                match restore_table(&store, &Selector::default(), &request, &s).await {
                    Ok(_) => {}
                    Err(BackupError::NotFound(_)) => {} // not in the store yet
                    Err(e) => panic!("restore of '{table}' failed: {e}"),
                }
            }
            15..=17 => {
                shipper.ship(&s).await.unwrap();
                shipped_once = true;
                continue;
            }
            18 if shipped_once => {
                let now = clock.now_micros();
                assert!(backup(&s, &store, now, 3).await.status.backup_succeeded());
                backups_taken += 1;
                continue;
            }
            _ => continue,
        }
        acked.push(Acked {
            before,
            after: clock.now_micros(),
            content: content(&s),
        });
    }
    shipper.ship(&s).await.unwrap();

    let complete = complete_backups(&store, "test-instance").await.unwrap();
    // Retention kept 3 backups and the log from the oldest of them on.
    let kept = crate::log::Log::list(&store, "test-instance").await.unwrap().seqs;
    if backups_taken > 3 {
        assert!(kept.first() > Some(&1), "no log object was trimmed: {kept:?}");
    }
    let w = window(&store, "test-instance", &complete)
        .await
        .unwrap()
        .expect("a window");
    // Instants: each change's edges, each backup, then random ones in the window.
    let mut instants: Vec<i64> = acked.iter().flat_map(|a| [a.before - 1, a.after + 1]).collect();
    instants.extend(&complete);
    let mut checked = 0;
    for attempt in 0..10_000 {
        let t = match instants.get(attempt) {
            Some(t) => *t,
            None if checked < 250 => w.start + rng.below((w.end - w.start) as u64 + 1) as i64,
            None => break,
        };
        if !(w.start..=w.end).contains(&t) {
            continue;
        }
        let Some(expected) = expected_at(&acked, t) else {
            continue;
        };
        let got = state_at(&store, t)
            .await
            .unwrap_or_else(|e| panic!("no state at {t}: {e}"));
        assert_eq!(&got, expected, "state at {t} (seed {seed})");
        checked += 1;
    }
    assert!(checked >= 250, "only {checked} instants checked");
    println!("{checked} instants restored exactly; window {}", w.describe());

    // Outside the window: an error naming it, never a smaller state.
    let early = state_at(&store, w.start - 1).await.unwrap_err().to_string();
    assert!(early.contains("the store can restore from"), "{early}");
    let late = state_at(&store, w.end + 1).await.unwrap_err().to_string();
    assert!(late.contains("the store can restore from"), "{late}");

    // The latest state is the database's, and it restores (files fetched and checked).
    assert_eq!(state_at(&store, w.end).await.unwrap(), content(&s));
    assert_eq!(restored_state(&store, None).await, content(&s));
}

#[tokio::test]
async fn with_a_key_the_log_and_its_files_are_sealed_and_an_instant_restores_from_them() {
    let (db, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = journaled(db.path());
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [5u8; 32]);
    let store = Store::open(&format!("fs::root={};", store_dir.path().display()))
        .unwrap()
        .with_cipher(Some(Cipher::from_base64(&key).unwrap()));
    let mut shipper = shipper(&s, &store).await;
    let t = s.create_table(table("a"), false).unwrap();
    t.append(&[rows(19_000, 2, 1)]).unwrap();
    let shipped = shipper.ship(&s).await.unwrap().expect("something to ship");
    assert!(shipped.base, "the first object starts from a base");
    let wanted = content(&s);
    t.append(&[rows(19_003, 1, 2)]).unwrap();
    shipper.ship(&s).await.unwrap().expect("the second insert");
    // Nothing pending: no request at all.
    let before = store.op_counts();
    assert_eq!(shipper.ship(&s).await.unwrap(), None);
    assert_eq!(store.op_counts(), before);

    for entry in walk(store_dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        let name = entry.display().to_string();
        assert!(crate::crypto::is_encrypted(&bytes), "{name} is stored in the clear");
        assert!(!name.contains("/files/") || name.ends_with(".enc"), "{name}");
    }
    assert_eq!(state_at(&store, shipped.through_micros).await.unwrap(), wanted);
    let plain = Store::open(&format!("fs::root={};", store_dir.path().display())).unwrap();
    let err = state_at(&plain, shipped.through_micros).await.unwrap_err().to_string();
    assert!(err.contains("encrypt"), "{err}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test]
async fn commits_made_before_the_first_shipment_keep_their_instants() {
    // The store is slow to answer at start: a backup and more commits happen
    // before the shipper's first object, which must still hold each of them.
    let (db, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = journaled(db.path());
    let start = s.pin_current();
    let store = Store::open(&format!("fs::root={};", store_dir.path().display())).unwrap();
    let t = s.create_table(table("a"), false).unwrap();
    t.append(&[rows(19_000, 1, 1)]).unwrap();
    assert!(
        backup(&s, &store, SystemClock.now_micros(), 5)
            .await
            .status
            .backup_succeeded()
    );
    // (an instant, the state then): each state just before the next commit.
    let mut states = Vec::new();
    for salt in 2..6 {
        states.push((SystemClock.now_micros(), content(&s)));
        t.append(&[rows(19_000 + salt, 1, salt)]).unwrap();
    }
    let mut shipper = Shipper::open(store.clone(), "test-instance", s.data_id(), 3, Limits::new(None, 2))
        .await
        .unwrap()
        .starting_from(start);
    assert!(shipper.ship(&s).await.unwrap().expect("shipped").base);
    for (at, wanted) in states {
        assert_eq!(state_at(&store, at).await.unwrap(), wanted, "state at {at}");
    }
}

#[tokio::test]
async fn a_log_object_written_though_its_answer_was_lost_is_continued_not_rewritten() {
    let (db, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = journaled(db.path());
    let (store, faults) = crate::fault_tests::faulty_store(store_dir.path());
    let mut shipper = shipper(&s, &store).await;
    let t = s.create_table(table("a"), false).unwrap();
    t.append(&[rows(19_000, 1, 1)]).unwrap();
    shipper.ship(&s).await.unwrap().expect("the first object");
    t.append(&[rows(19_001, 1, 2)]).unwrap();
    let landed = (SystemClock.now_micros(), content(&s));
    // The object lands, its answer and every retry are lost: the round fails.
    faults.lose_log_puts.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(shipper.ship(&s).await.is_err());
    faults.lose_log_puts.store(false, std::sync::atomic::Ordering::SeqCst);
    // More commits; the next round continues after the object that landed.
    t.append(&[rows(19_002, 1, 3)]).unwrap();
    let shipped = shipper.ship(&s).await.unwrap().expect("shipped");
    assert_eq!((shipped.seq, shipped.changes, shipped.base), (3, 1, false));
    assert_eq!(state_at(&store, landed.0).await.unwrap(), landed.1);
    assert_eq!(state_at(&store, shipped.through_micros).await.unwrap(), content(&s));
}
