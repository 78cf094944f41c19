//! CHECKPOINT CREATE / RELEASE, checkpoint_status() and the `_restore` trigger, with real processes and `cp -a`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{Options, Server, Started, sqlstate, table_digest, temp_root};

fn busy_housekeeping() -> Options {
    Options::default()
        .conf("housekeeping.interval.ms", "50")
        .conf("housekeeping.merge.min.files", "2")
        .conf("housekeeping.orphan.grace.ms", "0")
}

/// (in_progress, started_at as text, pinned_bytes)
async fn status(c: &Client) -> (bool, Option<String>, i64) {
    let r = c
        .query_one(
            "SELECT in_progress, CAST(started_at AS VARCHAR), pinned_bytes FROM checkpoint_status()",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn table_names(c: &Client) -> Vec<String> {
    let mut names: Vec<String> = c
        .simple_query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

fn cp_a(from: &std::path::Path, to: &std::path::Path) -> std::process::Child {
    std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cp")
}

/// Waits for `cp -a`. Copying a live root, cp may see a temporary commit file or a
/// table being created vanish (renamed into place meanwhile); that is expected and
/// harmless, since neither is part of the checkpoint. Anything else fails.
fn finish_copy(cp: std::process::Child) {
    let out = cp.wait_with_output().unwrap();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            let transient = line.contains(".tmp") || line.contains("/.creating-");
            assert!(transient && line.contains("No such file"), "cp -a failed: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_during_checkpoint_restores_exactly_the_checkpoint_state() {
    let root = temp_root();
    let copies = temp_root();
    let copy = copies.path().join("copy");
    let server = Server::start(root.path(), busy_housekeeping());
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE live (ts TIMESTAMP, k LONG) TIMESTAMP(ts) PARTITION BY HOUR;
         CREATE TABLE stat (ts TIMESTAMP, v DOUBLE, s SYMBOL) TIMESTAMP(ts) PARTITION BY DAY;
         CREATE TABLE doomed (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO stat SELECT to_timestamp_micros(1704067200000000 + value * 600000000), value * 0.5, 'x' FROM generate_series(0, 431);
         INSERT INTO doomed VALUES ('2024-01-01', 1), ('2024-01-02', 2);",
    )
    .await
    .unwrap();

    // A writer that never stops: statement k inserts (ts_k, k), over several hours.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let w = server.connect().await;
        tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let ts = 1_704_067_200_000_000u64 + (k % 7) * 3_600_000_000 + k;
                w.execute(
                    &format!("INSERT INTO live VALUES (to_timestamp_micros({ts}), {k})"),
                    &[],
                )
                .await
                .unwrap();
                k += 1;
                acked.store(k, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stat_before = table_digest(&c, "stat").await;
    let doomed_before = table_digest(&c, "doomed").await;
    let a0 = acked.load(Ordering::SeqCst);
    c.batch_execute("CHECKPOINT CREATE").await.unwrap();
    let a1 = acked.load(Ordering::SeqCst);
    let (in_progress, started_at, _) = status(&c).await;
    assert!(in_progress && started_at.is_some());
    let err = c.batch_execute("CHECKPOINT CREATE").await.unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err}");
    assert!(format!("{err:?}").contains("already in progress"), "{err:?}");

    // Changes before and during the copy: more rows (new and old days), a drop, a new table.
    c.batch_execute("INSERT INTO stat VALUES ('2024-01-01T00:00:01', 1.0, 'late'), ('2024-02-01', 2.0, 'new')")
        .await
        .unwrap();
    let cp = cp_a(root.path(), &copy);
    c.batch_execute("DROP TABLE doomed; CREATE TABLE newtab (ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY;")
        .await
        .unwrap();
    let err = c.batch_execute("CREATE TABLE doomed (ts TIMESTAMP)").await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "55000",
        "a name dropped during a checkpoint is reserved until release"
    );
    c.batch_execute("TRUNCATE TABLE stat").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // several housekeeping cycles
    finish_copy(cp);
    let (_, _, pinned_bytes) = status(&c).await;
    assert!(
        pinned_bytes > 0,
        "dropped and truncated files are held back by the checkpoint"
    );

    c.batch_execute("CHECKPOINT RELEASE").await.unwrap();
    assert!(!status(&c).await.0);
    // Releasing again is a notice, not an error.
    c.batch_execute("CHECKPOINT RELEASE").await.unwrap();
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    drop(c);
    server.stop();

    std::fs::write(copy.join("_restore"), b"").unwrap();
    let restored = Server::start(&copy, Options::default());
    assert!(
        !copy.join("_restore").exists(),
        "_restore is removed after a successful restore"
    );
    let c = restored.connect().await;
    assert_eq!(table_names(&c).await, vec!["doomed", "live", "stat"]);
    assert_eq!(table_digest(&c, "stat").await, stat_before);
    assert_eq!(table_digest(&c, "doomed").await, doomed_before);
    let r = c
        .query_one("SELECT count(*), count(DISTINCT k), min(k), max(k) FROM live", &[])
        .await
        .unwrap();
    let (rows, distinct, min_k, max_k) = (
        r.get::<_, i64>(0),
        r.get::<_, i64>(1),
        r.get::<_, i64>(2),
        r.get::<_, i64>(3),
    );
    // Exactly a prefix of the writer's statements: those committed when the checkpoint was taken.
    assert_eq!((rows, distinct, min_k), (max_k + 1, max_k + 1, 0));
    let k = max_k as u64 + 1;
    assert!(
        a0 <= k && k <= a1 + 1,
        "checkpoint holds {k} statements; {a0} were acknowledged before CREATE, {a1} after"
    );
    assert!(!status(&c).await.0, "the restored copy is out of checkpoint mode");
    c.execute("INSERT INTO live VALUES ('2030-01-01', -1)", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_without_restore_starts_as_is_and_is_readable() {
    let root = temp_root();
    let copies = temp_root();
    let copy = copies.path().join("copy");
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t VALUES ('2024-01-01', 1), ('2024-01-02', 2);
         CHECKPOINT CREATE;
         INSERT INTO t VALUES ('2024-01-03', 3);",
    )
    .await
    .unwrap();
    finish_copy(cp_a(root.path(), &copy));
    let restored = Server::start(&copy, Options::default());
    let c2 = restored.connect().await;
    assert_eq!(
        c2.query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        3
    );
    assert!(
        status(&c2).await.0,
        "the copy is still in checkpoint mode until released"
    );
    c2.batch_execute("CHECKPOINT RELEASE").await.unwrap();
    c.batch_execute("CHECKPOINT RELEASE").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_mode_survives_a_restart() {
    let root = temp_root();
    let server = Server::start(root.path(), busy_housekeeping());
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t VALUES ('2024-01-01', 1); INSERT INTO t VALUES ('2024-01-01', 2);
         CHECKPOINT CREATE;",
    )
    .await
    .unwrap();
    let before = status(&c).await;
    let files: Vec<_> = std::fs::read_dir(root.path().join("db/t/2024-01-01"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    drop(c);
    server.stop();

    let server = Server::start(root.path(), busy_housekeeping());
    let c = server.connect().await;
    assert_eq!(status(&c).await, before);
    c.batch_execute("TRUNCATE TABLE t").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        files.iter().all(|f| f.exists()),
        "pinned files outlive housekeeping while the checkpoint is open"
    );
    c.batch_execute("CHECKPOINT RELEASE").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while files.iter().any(|f| f.exists()) {
        assert!(Instant::now() < deadline, "released space must be reclaimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forgotten_checkpoint_warns_and_is_released_after_max_age() {
    let root = temp_root();
    let server = Server::start(
        root.path(),
        Options::default()
            .conf("checkpoint.warn.after", "1s")
            .conf("checkpoint.max.age", "3s"),
    );
    let c = server.connect().await;
    c.batch_execute("CHECKPOINT CREATE").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&c).await.0 {
        assert!(
            Instant::now() < deadline,
            "checkpoint.max.age must release the checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.stderr();
    assert!(log.contains("is still open after"), "{log}");
    assert!(log.contains("releasing it automatically"), "{log}");
    assert!(!root.path().join(".checkpoint").exists());
}

#[test]
fn restore_trigger_without_a_checkpoint_record_is_refused() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    server.stop();
    std::fs::write(root.path().join("_restore"), b"").unwrap();
    match Server::try_start(root.path(), Options::default()) {
        Started::Exited { code, stderr } => {
            assert_ne!(code, Some(0));
            assert!(stderr.contains("no checkpoint record"), "{stderr}");
        }
        Started::Running(_) => panic!("must refuse _restore without a checkpoint record"),
    }
    assert!(
        root.path().join("_restore").exists(),
        "the trigger stays for the operator"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_restore_exits_non_zero_and_keeps_the_trigger_for_a_retry() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t VALUES ('2024-01-01', 1);
         CHECKPOINT CREATE;",
    )
    .await
    .unwrap();
    drop(c);
    server.stop();
    // An incomplete copy: a checkpointed data file is missing.
    let day = root.path().join("db/t/2024-01-01");
    let file = std::fs::read_dir(&day).unwrap().flatten().next().unwrap().path();
    let saved = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::fs::write(root.path().join("_restore"), b"").unwrap();
    for _ in 0..2 {
        match Server::try_start(root.path(), Options::default()) {
            Started::Exited { code, stderr } => {
                assert_ne!(code, Some(0));
                assert!(stderr.contains("table 't'") && stderr.contains("missing"), "{stderr}");
            }
            Started::Running(_) => panic!("a restore that cannot complete must not serve"),
        }
        assert!(root.path().join("_restore").exists());
    }
    // Once the file is back, the next start finishes the restore.
    std::fs::write(&file, saved).unwrap();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    assert_eq!(
        c.query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    assert!(!root.path().join("_restore").exists());
}
