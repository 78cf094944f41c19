//! BACKUP DATABASE through the real server and a PostgreSQL client, against an `fs::` store.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{Options, Server, Started, sqlstate, temp_root};

/// backups() rows as maps of column -> text.
pub(crate) async fn backups(c: &Client) -> Vec<std::collections::HashMap<String, Option<String>>> {
    c.simple_query("SELECT * FROM backups()")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub(crate) fn field(row: &std::collections::HashMap<String, Option<String>>, name: &str) -> String {
    row.get(name).cloned().flatten().unwrap_or_default()
}

pub(crate) fn instance_dir(store: &Path) -> PathBuf {
    std::fs::read_dir(store.join("_backup"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
}

pub(crate) fn files_in(dir: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

pub(crate) fn manifests(store: &Path) -> Vec<serde_json::Value> {
    let mut paths = files_in(&instance_dir(store).join("manifests"));
    paths.sort();
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn manifest_rows(m: &serde_json::Value) -> u64 {
    m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["files"].as_array().unwrap().iter())
        .map(|f| f["rows"].as_u64().unwrap())
        .sum()
}

/// Table `t` with one row on each of 2024-01-01 and 2024-01-02 (two partitions).
pub(crate) async fn two_day_table(c: &Client) {
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t VALUES ('2024-01-01', 1), ('2024-01-02', 2);",
    )
    .await
    .unwrap();
}

/// A backup that completed, whether or not its retention pass deleted anything.
pub(crate) fn completed(r: &std::collections::HashMap<String, Option<String>>) -> bool {
    ["backup complete", "cleanup complete"].contains(&field(r, "status").as_str())
}

pub(crate) fn store_opts(store: &Path) -> Options {
    Options::default().conf("backup.object.store", &format!("fs::root={};", store.display()))
}

async fn wait_until_idle(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while backups(c)
        .await
        .iter()
        .any(|r| field(r, "status").ends_with("in progress"))
    {
        assert!(Instant::now() < deadline, "backup did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_backup_uploads_everything_then_only_what_changed() {
    let root = temp_root();
    let store = temp_root();
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE trades (ts TIMESTAMP, symbol SYMBOL, price DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO trades SELECT to_timestamp_micros(1704067200000000 + value * 60000000), 'S', random() FROM generate_series(0, 43199);",
    )
    .await
    .unwrap();
    let row = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let ts: String = row.get("backup_timestamp");
    assert!(
        ts.ends_with('Z') && ts.len() == "2024-08-24T12:34:56.789123Z".len(),
        "{ts}"
    );
    let rows = backups(&c).await;
    assert_eq!(rows.len(), 1);
    let cols: Vec<&str> = vec![
        "status",
        "progress_percent",
        "start_ts",
        "end_ts",
        "backup_error",
        "cleanup_error",
    ];
    let first = &rows[0];
    for col in &cols {
        assert!(first.contains_key(*col), "backups() lacks {col}");
    }
    // Retention had nothing to delete: QuestDB's final status for that.
    assert_eq!(field(first, "status"), "backup complete");
    assert_eq!(field(first, "backup_timestamp"), ts);
    assert_eq!(field(first, "progress_percent"), "100");
    assert_eq!(field(first, "files_total"), "30");
    assert_eq!(field(first, "files_uploaded"), "30");
    let inst = instance_dir(store.path());
    let name = inst.file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(name.split('-').count(), 3, "three-word instance name: {name}");
    assert_eq!(
        std::fs::read_to_string(root.path().join("db/.backup_instance_name"))
            .unwrap()
            .trim(),
        name
    );
    assert_eq!(
        std::fs::read_to_string(inst.join("data_id")).unwrap(),
        std::fs::read_to_string(root.path().join("db/.data_id")).unwrap().trim()
    );
    assert_eq!(manifest_rows(&manifests(store.path())[0]), 43_200);
    let size_after_first: u64 = files_in(&inst.join("files"))
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();

    // Change one old day: the next backup uploads just that day's new file.
    c.execute("INSERT INTO trades VALUES ('2024-01-05T12:00:00.5', 'late', 1.0)", &[])
        .await
        .unwrap();
    let new_file: u64 = {
        let commit: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.path().join("db/trades/_commit.json")).unwrap()).unwrap();
        commit["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rows"] == 1)
            .map(|f| f["bytes"].as_u64().unwrap())
            .sum()
    };
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let latest = &backups(&c).await[0];
    assert_eq!(field(latest, "files_total"), "31");
    assert_eq!(field(latest, "files_uploaded"), "1");
    let uploaded: u64 = field(latest, "bytes_uploaded").parse().unwrap();
    assert!(
        uploaded <= new_file,
        "uploaded {uploaded} bytes for a {new_file}-byte change"
    );
    let size_after_second: u64 = files_in(&inst.join("files"))
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(
        size_after_second - size_after_first <= new_file,
        "the store grew by about one file"
    );
    assert_eq!(manifest_rows(manifests(store.path()).last().unwrap()), 43_201);

    // History lives in the store: it survives a restart.
    let before = backups(&c).await.len();
    drop(c);
    server.stop();
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    let after = backups(&c).await;
    assert_eq!(after.len(), before);
    assert!(after.iter().all(|r| field(r, "status") == "backup complete"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_during_inserts_captures_the_snapshot_at_its_start() {
    let root = temp_root();
    let store = temp_root();
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE ev (ts TIMESTAMP, k LONG) TIMESTAMP(ts) PARTITION BY HOUR")
        .await
        .unwrap();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = server.connect().await;
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                w.execute(
                    &format!(
                        "INSERT INTO ev VALUES (to_timestamp_micros({}), {k})",
                        1_704_067_200_000_000u64 + k * 1_000_000
                    ),
                    &[],
                )
                .await
                .unwrap();
                k += 1;
                acked.store(k, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a0 = acked.load(std::sync::atomic::Ordering::SeqCst);
    c.query_one("BACKUP DATABASE", &[]).await.unwrap();
    let a1 = acked.load(std::sync::atomic::Ordering::SeqCst);
    wait_until_idle(&c).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    let rows = manifest_rows(&manifests(store.path())[0]);
    assert!(
        a0 <= rows && rows <= a1 + 1,
        "backup holds {rows} rows; {a0} acknowledged before, {a1} after"
    );
    assert!(
        c.query_one("SELECT count(*) FROM ev", &[])
            .await
            .unwrap()
            .get::<_, i64>(0) as u64
            > rows
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_one_at_a_time_and_the_next_backup_completes() {
    let root = temp_root();
    let store = temp_root();
    // The slowest compression makes the backup long enough to abort.
    let server = Server::start(
        root.path(),
        store_opts(store.path()).conf("backup.compression.level", "22"),
    );
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE big (ts TIMESTAMP, a DOUBLE, b DOUBLE) TIMESTAMP(ts) PARTITION BY MONTH;
         INSERT INTO big SELECT to_timestamp_micros(1704067200000000 + value), random() AS a, random() AS b FROM generate_series(0, 599999);
         INSERT INTO big SELECT to_timestamp_micros(1706745600000000 + value), random() AS a, random() AS b FROM generate_series(0, 599999);",
    )
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE", &[]).await.unwrap();
    let err = c.query_one("BACKUP DATABASE", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err:?}");
    c.batch_execute("BACKUP ABORT").await.unwrap();
    wait_until_idle(&c).await;
    let failed = &backups(&c).await[0];
    assert_eq!(field(failed, "status"), "backup failed");
    assert_eq!(field(failed, "backup_error"), "aborted");
    assert!(
        manifests_dir_is_empty(store.path()),
        "an aborted backup leaves no manifest"
    );
    // Aborting with nothing running is a notice.
    c.batch_execute("BACKUP ABORT").await.unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    assert_eq!(field(&backups(&c).await[0], "status"), "backup complete");
    assert_eq!(manifest_rows(&manifests(store.path())[0]), 1_200_000);
}

fn manifests_dir_is_empty(store: &Path) -> bool {
    files_in(&instance_dir(store).join("manifests")).is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_latest_n_and_no_unreferenced_files() {
    let root = temp_root();
    let store = temp_root();
    let server = Server::start(
        root.path(),
        store_opts(store.path()).conf("backup.cleanup.keep.latest.n", "2"),
    );
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY")
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for day in 1..=4 {
        c.execute(&format!("INSERT INTO t VALUES ('2024-01-0{day}', {day})"), &[])
            .await
            .unwrap();
        // Rewrite history too, so old backups own files nobody else needs.
        if day == 3 {
            c.batch_execute("ALTER TABLE t DROP PARTITION LIST '2024-01-01'")
                .await
                .unwrap();
        }
        c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
        statuses.push(field(&backups(&c).await[0], "status"));
    }
    // QuestDB's life cycle: `backup complete` when retention had nothing to
    // delete, `cleanup complete` once it deleted older backups.
    assert_eq!(
        statuses,
        [
            "backup complete",
            "backup complete",
            "cleanup complete",
            "cleanup complete"
        ]
    );
    let history = instance_dir(store.path()).join("history");
    // One record per event of a backup's life; the newest backup's last is `finished`.
    let newest = files_in(&history)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with("-finished.json"))
        .max()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap();
    assert_eq!(
        record["status"], "cleanup complete",
        "the store's history says the same"
    );
    let ms = manifests(store.path());
    assert_eq!(ms.len(), 2);
    let referenced: std::collections::HashSet<String> = ms
        .iter()
        .flat_map(|m| {
            m["tables"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| t["files"].as_array().unwrap().iter())
        })
        .map(|f| f["object"].as_str().unwrap().to_string())
        .collect();
    let inst = instance_dir(store.path());
    let stored: std::collections::HashSet<String> = files_in(&inst.join("files"))
        .iter()
        .map(|p| p.strip_prefix(&inst).unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(stored, referenced, "exactly the files the remaining backups need");
    assert_eq!(backups(&c).await.len(), 2, "history follows retention");
    assert_eq!(manifest_rows(&ms[1]), 3);
    let kept_by: Vec<String> = backups(&c).await.iter().map(|r| field(r, "kept_by")).collect();
    assert_eq!(kept_by, ["latest", "latest"]);

    // Lowering the limit shows, before anything is deleted, what the next
    // cleanup will delete (kept_by NULL); the next backup then deletes it.
    drop(c);
    server.stop();
    let server = Server::start(
        root.path(),
        store_opts(store.path())
            .conf("backup.cleanup.keep.latest.n", "1")
            .conf("backup.cleanup.keep.daily.n", "1"),
    );
    let c = server.connect().await;
    let rows = backups(&c).await;
    let preview: Vec<Option<String>> = rows.iter().map(|r| r["kept_by"].clone()).collect();
    assert_eq!(preview, [Some("latest,daily".to_string()), None], "{rows:?}");
    assert_eq!(manifests(store.path()).len(), 2, "nothing deleted yet");
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let rows = backups(&c).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(field(&rows[0], "kept_by"), "latest,daily");
    assert_eq!(manifests(store.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn backing_up_into_another_databases_instance_is_refused() {
    let store = temp_root();
    let opts = store_opts(store.path()).conf("backup.instance.name", "shared-name");
    let (a, b) = (temp_root(), temp_root());
    let server_a = Server::start(a.path(), opts.clone());
    server_a
        .connect()
        .await
        .query_one("BACKUP DATABASE WAIT", &[])
        .await
        .unwrap();
    let server_b = Server::start(b.path(), opts);
    let err = server_b
        .connect()
        .await
        .query_one("BACKUP DATABASE", &[])
        .await
        .unwrap_err();
    let msg = format!("{err:?}");
    assert!(msg.contains("belongs to another database"), "{msg}");
    assert!(msg.contains("Data ID mismatch"), "QuestDB's words for it: {msg}");
    assert_eq!(sqlstate(&err), "55000", "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_fails_the_backup_with_an_io_sqlstate_and_no_secret() {
    let root = temp_root();
    // Nothing listens on port 1 of the loopback.
    let conn = "s3::bucket=b;region=us-east-1;access_key_id=AKID;secret_access_key=TOPSECRET;\
                endpoint=http://127.0.0.1:1;allow_http=true;";
    let server = Server::start(root.path(), Options::default().conf("backup.object.store", conn));
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY")
        .await
        .unwrap();
    let err = c.query_one("BACKUP DATABASE", &[]).await.unwrap_err();
    let msg = format!("{err:?}");
    assert_eq!(sqlstate(&err), "58030", "{msg}");
    assert!(
        !msg.contains("TOPSECRET") && !server.stderr().contains("TOPSECRET"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_backups_and_bad_configuration() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default().conf("backup.enabled", "false"));
    let err = server
        .connect()
        .await
        .query_one("BACKUP DATABASE", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "55000");
    assert!(format!("{err:?}").contains("backup.enabled=false"));
    drop(server);

    for (key, value, expect) in [
        ("backup.object.store", "ftp::host=x;", "unknown store kind"),
        (
            "backup.object.store",
            "s3::region=eu-west-1;secret_access_key=TOPSECRET;",
            "bucket",
        ),
        ("backup.object.store", "fs::root=relative/path;", "absolute"),
        ("backup.compression.level", "0", "1..=22"),
        ("backup.cleanup.keep.latest.n", "many", "whole number"),
    ] {
        let root = temp_root();
        match Server::try_start(root.path(), Options::default().conf(key, value)) {
            Started::Exited { code, stderr } => {
                assert_ne!(code, Some(0));
                assert!(
                    stderr.contains(key) && stderr.contains(expect),
                    "{key}={value}: {stderr}"
                );
                assert!(!stderr.contains("TOPSECRET"), "secrets must not be printed: {stderr}");
            }
            Started::Running(_) => panic!("{key}={value} must stop startup"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn estimate_counts_without_uploading() {
    let root = temp_root();
    let store = temp_root();
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    two_day_table(&c).await;
    let e = c.query_one("BACKUP DATABASE ESTIMATE", &[]).await.unwrap();
    assert_eq!(
        (e.get::<_, i64>("files_to_upload"), e.get::<_, i64>("files_reused")),
        (2, 0)
    );
    assert!(e.get::<_, i64>("bytes_to_upload") > 0);
    assert!(!store.path().join("_backup").exists() || files_in(&instance_dir(store.path()).join("files")).is_empty());
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    c.execute("INSERT INTO t VALUES ('2024-01-03', 3)", &[]).await.unwrap();
    let e = c.query_one("BACKUP DATABASE ESTIMATE", &[]).await.unwrap();
    assert_eq!(
        (e.get::<_, i64>("files_to_upload"), e.get::<_, i64>("files_reused")),
        (1, 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups_run_and_show_in_backups() {
    let root = temp_root();
    let store = temp_root();
    // A leading seconds field makes the schedule fire every second for the test.
    let opts = store_opts(store.path())
        .conf("backup.schedule.cron", "* * * * * *")
        .conf("backup.schedule.tz", "Europe/Paris");
    let server = Server::start(root.path(), opts);
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY; INSERT INTO t VALUES ('2024-01-01');",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = backups(&c).await.iter().filter(|r| completed(r)).count();
        if done >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scheduled backups did not run: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.stderr().contains("scheduled backup"), "schedule runs are logged");
}

/// About 3 MiB of incompressible doubles over 6 daily files.
const RANDOM_3_MIB: &str = "CREATE TABLE t (ts TIMESTAMP, a DOUBLE, b DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
     INSERT INTO t SELECT to_timestamp_micros(1704067200000000 + value * 2500000), random() AS a, random() AS b
     FROM generate_series(0, 199999);";

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_tick_while_a_backup_runs_is_skipped_and_logged() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    server.connect().await.batch_execute(RANDOM_3_MIB).await.unwrap();
    drop(server);
    // Every second, with uploads paced at 1 MiB/s: the first backup spans several ticks.
    let opts = store_opts(store.path())
        .conf("backup.schedule.cron", "* * * * * *")
        .conf("backup.max.bandwidth.mb", "1");
    let server = Server::start(root.path(), opts);
    let c = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server
        .stderr()
        .contains("scheduled backup skipped: the previous backup is still running")
        || !backups(&c).await.iter().any(completed)
    {
        assert!(Instant::now() < deadline, "no skipped tick: {}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Skipped ticks leave no trace in the history: nothing failed, nothing overlapped.
    let rows = backups(&c).await;
    assert!(rows.iter().all(|r| field(r, "status") != "backup failed"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bandwidth_limit_paces_uploads_and_progress_moves() {
    let root = temp_root();
    let store = temp_root();
    let server = Server::start(
        root.path(),
        store_opts(store.path()).conf("backup.max.bandwidth.mb", "1"),
    );
    let c = server.connect().await;
    c.batch_execute(RANDOM_3_MIB).await.unwrap();
    let started = Instant::now();
    c.query_one("BACKUP DATABASE", &[]).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let rows = backups(&c).await;
        let r = &rows[0];
        if field(r, "status") != "backup in progress" {
            break;
        }
        seen.insert(field(r, "progress_percent"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let uploaded: f64 = field(&backups(&c).await[0], "bytes_uploaded").parse().unwrap();
    assert!(
        uploaded > 2.0 * 1048576.0,
        "the data should be about 3 MiB, got {uploaded}"
    );
    // Pacing: the last upload may start only after the earlier bytes had their time.
    let floor = uploaded / 1048576.0 - 1.0;
    assert!(
        elapsed >= floor,
        "uploaded {uploaded} bytes in {elapsed:.2}s despite a 1 MiB/s limit"
    );
    assert!(
        seen.len() >= 2,
        "progress_percent should move during a long backup, saw {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_backup_deletes_one_backup_and_only_what_no_other_needs() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    two_day_table(&c).await;
    let first: String = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap().get(0);
    // The second backup no longer holds 2024-01-01: that file is the first's alone.
    c.batch_execute("ALTER TABLE t DROP PARTITION LIST '2024-01-01'; INSERT INTO t VALUES ('2024-01-03', 3);")
        .await
        .unwrap();
    let second: String = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap().get(0);
    let objects_before = files_in(&instance_dir(store.path()).join("files")).len();

    let row = c.query_one(&format!("DROP BACKUP '{first}'"), &[]).await.unwrap();
    assert_eq!(row.get::<_, String>("backup_timestamp"), first);
    assert_eq!(
        row.get::<_, i64>("files_deleted"),
        1,
        "only the file no other backup needs"
    );
    assert!(row.get::<_, i64>("bytes_freed") > 0);
    assert_eq!(
        files_in(&instance_dir(store.path()).join("files")).len(),
        objects_before - 1
    );
    assert_eq!(manifests(store.path()).len(), 1);
    let rows = backups(&c).await;
    assert_eq!(rows.len(), 1, "the dropped backup leaves backups(): {rows:?}");
    assert_eq!(field(&rows[0], "backup_timestamp"), second);
    let verified = c.query_one("VERIFY BACKUP LATEST", &[]).await.unwrap();
    assert_eq!(
        verified.get::<_, String>("status"),
        "ok",
        "the other backup still restores"
    );

    // Gone: the error lists what exists. Malformed: a bad value.
    let err = c.batch_execute(&format!("DROP BACKUP '{first}'")).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42704", "{err:?}");
    assert!(format!("{err:?}").contains(&second), "{err:?}");
    let err = c.batch_execute("DROP BACKUP 'yesterday'").await.unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err:?}");
    drop(c);
    server.stop();

    // While a backup runs (slowed to 1 MiB/s), DROP BACKUP is refused, and so is
    // nothing else: the running backup completes.
    let server = Server::start(
        root.path(),
        store_opts(store.path()).conf("backup.max.bandwidth.mb", "1"),
    );
    let c = server.connect().await;
    c.batch_execute(
        "INSERT INTO t SELECT to_timestamp_micros(1706745600000000 + value * 1000), random() FROM generate_series(0, 399999)",
    )
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE", &[]).await.unwrap();
    let err = c.batch_execute(&format!("DROP BACKUP '{second}'")).await.unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err:?}");
    assert!(format!("{err:?}").contains("a backup is running"), "{err:?}");
    wait_until_idle(&c).await;
    assert!(completed(&backups(&c).await[0]));
}
