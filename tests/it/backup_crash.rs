//! kill -9 the server at many points of a backup (uploading, writing the manifest,
//! cleaning up), restart, and check: nothing incomplete shows as complete, the next
//! backup completes reusing what went up, and every complete backup restores exactly.
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use crate::backup::{backups, field, store_opts};
use tokio_postgres::Client;

use crate::harness::{Options, Server, binary, temp_root};

/// Exact content summary of `trades` (integer sums: the order of addition does not matter).
async fn digest(c: &Client) -> (i64, i64) {
    let r = c
        .query_one("SELECT count(*), sum(CAST(price * 1e9 AS BIGINT)) FROM trades", &[])
        .await
        .unwrap();
    (r.get(0), r.get(1))
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
    c.batch_execute(
        "CREATE TABLE trades (ts TIMESTAMP, price DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO trades SELECT to_timestamp_micros(1704067200000000 + value * 8640000), random()
             FROM generate_series(0, 299999);",
    )
    .await
    .unwrap();
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
    assert_eq!(field(newest, "status"), "cleanup complete");
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
