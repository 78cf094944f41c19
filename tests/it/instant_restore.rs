//! `backup.restore.mode=instant`: the restored database serves at once and
//! answers exactly as the backup, while its files arrive — queried ones
//! first, then the newest partitions; writes are accepted meanwhile; a
//! kill -9 resumes without fetching a file twice; a damaged object fails the
//! queries that need it, shows in `restore_status()`, and is fetched again.
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{Options, Server, sqlstate, table_digest, temp_root};

const DAY: i64 = 86_400_000_000;
const FIRST_DAY: i64 = 19_700 * DAY;
const DAYS: i64 = 10;

fn conn(store: &Path) -> String {
    format!("fs::root={};", store.display())
}

/// A database of `DAYS` daily partitions of incompressible doubles (about 1 MB
/// each) and a small table, backed up into `store`; returns what the backup holds.
async fn backed_up(store: &Path) -> BTreeMap<String, (i64, String)> {
    let root = temp_root();
    let server = Server::start(
        root.path(),
        Options::default().conf("backup.object.store", &conn(store)),
    );
    let c = server.connect().await;
    c.batch_execute(&format!(
        "CREATE TABLE t (ts TIMESTAMP, a DOUBLE, b DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t SELECT to_timestamp_micros({FIRST_DAY} + value * {step}), random() AS a, random() AS b
             FROM generate_series(0, {rows});
         CREATE TABLE u (ts TIMESTAMP, n BIGINT) TIMESTAMP(ts) PARTITION BY MONTH;
         INSERT INTO u VALUES ('2024-01-01T00:00:00', 1), ('2024-02-01T00:00:00', 2);",
        step = DAY / 60_000,
        rows = DAYS * 60_000 - 1,
    ))
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let mut out = BTreeMap::new();
    for t in ["t", "u"] {
        out.insert(t.to_string(), table_digest(&c, t).await);
    }
    out.insert("t aggregates".into(), (0, aggregates(&c).await));
    out
}

/// Exact aggregates of `t` (integer sums: the order of addition does not
/// matter), cheaper than its digest.
async fn aggregates(c: &Client) -> String {
    let r = c
        .query_one(
            "SELECT count(*), sum(CAST(a * 1e9 AS BIGINT)), sum(CAST(b * 1e9 AS BIGINT)) FROM t",
            &[],
        )
        .await
        .unwrap();
    format!("{} {} {}", r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2))
}

/// A root holding an instant-restore trigger for `store`.
fn instant_root(store: &Path) -> tempfile::TempDir {
    let root = temp_root();
    std::fs::write(
        root.path().join("_backup_restore"),
        format!("backup.object.store={}\nbackup.restore.mode=instant\n", conn(store)),
    )
    .unwrap();
    root
}

/// Slow enough to watch: about one file a second, one at a time.
fn paced() -> Options {
    Options::default()
        .conf("backup.max.bandwidth.mb", "1")
        .conf("backup.download.concurrency", "1")
}

async fn status(c: &Client) -> BTreeMap<String, String> {
    let rows = c.simple_query("SELECT * FROM restore_status()").await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .expect("one row")
}

async fn wait_for(
    c: &Client,
    what: &str,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(c).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The data files of `t` present locally, by partition, with their inodes.
fn local_files(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let table = root.join("db/t");
    for part in std::fs::read_dir(&table)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        for f in std::fs::read_dir(part.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "parquet") {
                let name = part.file_name().to_string_lossy().into_owned();
                out.insert(name, f.metadata().unwrap().ino());
            }
        }
    }
    out
}

fn partition(day: i64) -> String {
    chrono::DateTime::from_timestamp_micros(FIRST_DAY + day * DAY)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

fn day_filter(day: i64) -> String {
    let p = partition(day);
    let next = partition(day + 1);
    format!("ts >= '{p}T00:00:00' AND ts < '{next}T00:00:00'")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instant_restore_serves_at_once_fetches_what_is_asked_first_and_resumes_after_kill_9() {
    let store = temp_root();
    let expected = backed_up(store.path()).await;
    let root = instant_root(store.path());
    let started = Instant::now();
    let server = Server::start(root.path(), paced());
    let c = server.connect().await;
    let first = status(&c).await;
    eprintln!("instant restore: serving after {:?}: {first:?}", started.elapsed());
    assert_eq!(first["state"], "hydrating", "{first:?}");
    assert!(
        !root.path().join("_backup_restore").exists(),
        "the trigger goes once the catalog is durable"
    );
    let source = std::fs::metadata(root.path().join("db/.hydration.source")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&source.permissions()) & 0o777,
        0o600,
        "the copy of the trigger may hold secrets"
    );
    let total: u64 = first["files_total"].parse().unwrap();
    assert_eq!(total, DAYS as u64 + 2);
    assert!(first["files_local"].parse::<u64>().unwrap() < total);

    // The newest partition comes first; a query on the oldest moves it ahead of the rest.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_here = loop {
        let local = local_files(root.path());
        if !local.is_empty() {
            break local;
        }
        assert!(Instant::now() < deadline, "no file arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first_here.keys().collect::<Vec<_>>(), vec![&partition(DAYS - 1)]);
    let oldest = format!("SELECT count(*) FROM t WHERE {}", day_filter(0));
    let n: i64 = c.query_one(&oldest, &[]).await.unwrap().get(0);
    assert_eq!(n, 60_000);
    while !local_files(root.path()).contains_key(&partition(0)) {
        assert!(Instant::now() < deadline, "the queried partition never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let local = local_files(root.path());
    assert!(local.len() <= 4, "the queried day came before the rest: {local:?}");

    // kill -9 midway, twice at different points: each next start fetches
    // only what is not here yet.
    let before = local_files(root.path());
    drop(c);
    server.kill9();
    let server = Server::start(root.path(), paced());
    let c = server.connect().await;
    assert_eq!(status(&c).await["state"], "hydrating");
    while local_files(root.path()).len() < before.len() + 2 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "no progress after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_second = local_files(root.path());
    for (p, inode) in &before {
        assert_eq!(before_second.get(p), Some(inode), "{p} was fetched again");
    }
    drop(c);
    server.kill9();
    let before = before_second;
    let server = Server::start(root.path(), paced());
    let c = server.connect().await;
    assert_eq!(status(&c).await["state"], "hydrating");

    let err = c.simple_query("CHECKPOINT CREATE").await.unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err:?}");

    // While files arrive, writes are accepted and queries answer as the backup.
    c.batch_execute("INSERT INTO u VALUES ('2024-03-01T00:00:00', 3)")
        .await
        .unwrap();
    assert_eq!(aggregates(&c).await, expected["t aggregates"].1, "t while hydrating");
    assert!(
        local_files(root.path()).len() < DAYS as usize,
        "read while files arrived"
    );
    let done = wait_for(&c, "hydration after the restart", |s| s["state"] == "complete").await;
    assert_eq!(done["files_local"], done["files_total"], "{done:?}");
    let after = local_files(root.path());
    assert_eq!(after.len(), DAYS as usize);
    for (p, inode) in &before {
        assert_eq!(after.get(p), Some(inode), "{p} was fetched again");
    }
    assert_eq!(table_digest(&c, "t").await, expected["t"]);
    let sum: i64 = c.query_one("SELECT sum(n) FROM u", &[]).await.unwrap().get(0);
    assert_eq!(sum, 6, "the backup's rows and the one written during hydration");
    assert!(!root.path().join("db/.hydration.json").exists());
    assert!(!root.path().join("db/.hydration.source").exists());
    c.simple_query("CHECKPOINT CREATE").await.unwrap();
    c.simple_query("CHECKPOINT RELEASE").await.unwrap();
    drop(c);
    drop(server);
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    assert_eq!(status(&c).await["state"], "none");
    assert_eq!(table_digest(&c, "t").await, expected["t"]);
}

/// The data objects of the store's instance.
fn objects(store: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else if e.path().to_string_lossy().contains("/files/") {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(store, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_object_fails_the_queries_that_need_it_and_is_fetched_again_once_repaired() {
    let store = temp_root();
    let expected = backed_up(store.path()).await;
    // Cut every data object short: the restore cannot fetch any, nor can a query read one.
    let mut saved = Vec::new();
    for path in objects(store.path()) {
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        saved.push((path, bytes));
    }
    let root = instant_root(store.path());
    let server = Server::start(
        root.path(),
        Options::default()
            .conf("metrics.enabled", "true")
            .conf("http.min.net.bind.to", "127.0.0.1:0"),
    );
    let c = server.connect().await;
    let failed = wait_for(&c, "the failure shows", |s| s["state"] == "failed").await;
    assert!(failed["last_error"].contains("/files/"), "{failed:?}");
    let port = server.http_port.expect("the HTTP server");
    let (_, metrics) = crate::ops::get(port, "/metrics");
    assert_eq!(
        crate::ops::sample(&metrics, "strata_restore_failing").as_deref(),
        Some("1"),
        "{metrics}"
    );
    let remaining: f64 = crate::ops::sample(&metrics, "strata_restore_bytes_remaining")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining > 0.0);
    crate::ops::promtool_accepts(&metrics);
    let err = c.simple_query("SELECT count(*) FROM t").await.unwrap_err();
    let text = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert_eq!(sqlstate(&err), "XX001", "{text}");
    assert!(text.contains("/files/"), "{text}");
    assert!(local_files(root.path()).is_empty(), "nothing damaged was put in place");

    // Repaired in the store: fetched again, and everything answers.
    for (path, bytes) in saved {
        std::fs::write(path, bytes).unwrap();
    }
    let done = wait_for(&c, "hydration after the repair", |s| s["state"] == "complete").await;
    assert_eq!(done["files_local"], done["files_total"]);
    let (_, metrics) = crate::ops::get(port, "/metrics");
    assert_eq!(
        crate::ops::sample(&metrics, "strata_restore_failing"),
        None,
        "gone once complete"
    );
    for t in ["t", "u"] {
        assert_eq!(table_digest(&c, t).await, expected[t], "{t}");
    }
}
