//! kill -9 the server at many points of a backup (uploading, writing the manifest,
//! cleaning up), restart, and check: nothing incomplete shows as complete, the next
//! backup completes reusing what went up, and every complete backup restores exactly.
//! And kill -9 during a restore from a trigger file: the next start finishes it.
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::backup::{backups, field, store_opts};
use tokio_postgres::Client;

use crate::harness::{Options, Server, binary, temp_root};
use crate::restore::assert_restore_completed_before_a_commit;

/// Exact content summary of `trades` (integer sums: the order of addition does not matter).
async fn digest(c: &Client) -> (i64, i64) {
    let r = c
        .query_one("SELECT count(*), sum(CAST(price * 1e9 AS BIGINT)) FROM trades", &[])
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// `trades` with `rows` random prices, 10,000 a day from 2024-01-01.
async fn create_trades(c: &Client, rows: u64) {
    c.batch_execute(&format!(
        "CREATE TABLE trades (ts TIMESTAMP, price DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO trades SELECT to_timestamp_micros(1704067200000000 + value * 8640000), random()
             FROM generate_series(0, {});",
        rows - 1
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_ten_points_of_a_backup_never_leaves_a_false_complete_backup() {
    let (root, store) = (temp_root(), temp_root());
    // Slow uploads (1 MiB/s) over about 2.5 MiB of incompressible data spread the
    // backup over a few seconds; keep 3 so cleanups delete during the run too.
    let slow = store_opts(store.path())
        .conf("backup.max.bandwidth.mb", "1")
        .conf("backup.cleanup.keep.latest.n", "3");
    let server = Server::start(root.path(), slow.clone());
    let c = server.connect().await;
    create_trades(&c, 300_000).await;
    drop(c);
    drop(server);
    // Digest of the data as each backup's snapshot saw it, by backup timestamp.
    let mut expected: HashMap<String, (i64, i64)> = HashMap::new();
    for point in 0..10u64 {
        let server = Server::start(root.path(), slow.clone());
        let c = server.connect().await;
        // Each round changes one partition, so each backup has something new to upload.
        c.batch_execute(&format!(
            "INSERT INTO trades VALUES (to_timestamp_micros({}), {point})",
            1_704_067_200_000_000u64 + point * 86_400_000_000 + 1
        ))
        .await
        .unwrap();
        let digest = digest(&c).await;
        let ts: String = c.query_one("BACKUP DATABASE", &[]).await.unwrap().get(0);
        expected.insert(ts, digest);
        tokio::time::sleep(Duration::from_millis(50 + point * 220)).await;
        server.kill9();
    }

    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    let rows = backups(&c).await;
    assert!(
        rows.iter().all(|r| field(r, "status") != "backup in progress"),
        "{rows:?}"
    );
    for r in rows.iter().filter(|r| field(r, "status") == "backup failed") {
        assert!(field(r, "backup_error").contains("interrupted"), "{r:?}");
    }
    // The next backup completes and reuses what the interrupted ones uploaded.
    let ts: String = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap().get(0);
    expected.insert(ts.clone(), digest(&c).await);
    let newest = &backups(&c).await[0];
    assert!(crate::backup::completed(newest), "{newest:?}");
    let uploaded: u64 = field(newest, "files_uploaded").parse().unwrap();
    let total: u64 = field(newest, "files_total").parse().unwrap();
    assert!(uploaded < total, "reused earlier uploads: {newest:?}");

    // Every backup with a manifest verifies and restores to exactly its snapshot.
    let conn = format!("fs::root={};", store.path().display());
    let mut complete = 0;
    for (ts, digest) in &expected {
        let out = Command::new(binary())
            .args(["backup", "verify", "--store", &conn, "--timestamp", ts])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if text.contains("no complete backup") {
            continue; // interrupted before its manifest, or removed by retention
        }
        assert!(out.status.success(), "{ts}: {text}");
        let target = temp_root();
        let out = Command::new(binary())
            .args(["restore", "--store", &conn, "--timestamp", ts, "--root"])
            .arg(target.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{ts}: {}", String::from_utf8_lossy(&out.stderr));
        let restored = Server::start(target.path(), Options::default());
        assert_eq!(&digest_of(&restored).await, digest, "{ts}");
        complete += 1;
    }
    assert!(complete >= 2, "only {complete} complete backups checked");
    assert!(
        complete < expected.len(),
        "some kill landed before a manifest was written"
    );
}

async fn digest_of(server: &Server) -> (i64, i64) {
    digest(&server.connect().await).await
}

/// Parquet files under `dir`, at any depth.
fn parquet_files(dir: &Path) -> usize {
    crate::backup::files_in(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_trigger_restore_never_serves_a_half_restored_database() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    // 60 daily partitions: a restore writes 60 files one after another.
    create_trades(&c, 600_000).await;
    let expected = digest(&c).await;
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    drop(c);
    drop(server);

    let copy = temp_root();
    let trigger = copy.path().join("_backup_restore");
    let conn = format!("fs::root={};", store.path().display());
    std::fs::write(&trigger, format!("backup.object.store={conn}\n")).unwrap();
    let staging = copy.path().join(".restore_staging");
    let mut killed_midway = 0;
    // Kill when the restore has written 1, 15, 30 and 45 of its 60 files.
    for files in [1, 15, 30, 45] {
        let mut child = Server::spawn(copy.path(), &Options::default());
        let deadline = Instant::now() + Duration::from_secs(60);
        while parquet_files(&staging) < files && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the restore made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        if trigger.exists() && !copy.path().join("db/trades").exists() {
            killed_midway += 1;
        }
        assert!(
            !copy.path().join(".restore_failed").exists() && !copy.path().join("_restore_failed").exists(),
            "a crash is not a failure: the next start retries"
        );
    }
    assert!(
        killed_midway >= 2,
        "only {killed_midway} kills landed during the restore"
    );
    // The next start finishes the restore, removes the trigger, and serves exactly the backup.
    let restored = Server::start(copy.path(), Options::default());
    assert_eq!(digest_of(&restored).await, expected);
    assert_restore_completed_before_a_commit(&restored.connect().await, copy.path()).await;
}
