//! Restore through real processes: the `_backup_restore` trigger, `strata restore`,
//! `strata backup list|verify`, `RESTORE TABLE` and `VERIFY BACKUP`, against an `fs::` store.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::Client;

use crate::backup::{backups, field, files_in, instance_dir, manifests, store_opts};
use crate::harness::{Options, Server, Started, binary, sqlstate, table_digest, temp_root};

const TRIGGER: &str = "_backup_restore";

fn conn(store: &Path) -> String {
    format!("fs::root={};", store.display())
}

/// Three tables: daily, monthly and unpartitioned.
async fn load(c: &Client) {
    c.batch_execute(
        "CREATE TABLE trades (ts TIMESTAMP, symbol SYMBOL, price DOUBLE, amount DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO trades SELECT to_timestamp_micros(1717200000000000 + value * 600000000),
             CASE WHEN value % 3 = 0 THEN 'A' ELSE 'B' END, value, 1.0 FROM generate_series(0, 4319);
         CREATE TABLE quotes (ts TIMESTAMP, bid DOUBLE) TIMESTAMP(ts) PARTITION BY MONTH;
         INSERT INTO quotes SELECT to_timestamp_micros(1714521600000000 + value * 3600000000), value FROM generate_series(0, 1999);
         CREATE TABLE notes (id INT, body VARCHAR);
         INSERT INTO notes VALUES (1, 'one'), (2, 'two');",
    )
    .await
    .unwrap();
}

/// Row count and digest of every table, plus rows per day of `trades` (its partitions).
async fn digests(c: &Client) -> BTreeMap<String, (i64, String)> {
    let mut out = BTreeMap::new();
    for t in ["trades", "quotes", "notes"] {
        out.insert(t.to_string(), table_digest(c, t).await);
    }
    let days = c
        .simple_query("SELECT date_trunc('day', ts) AS d, count(*) FROM trades GROUP BY d")
        .await
        .unwrap();
    let mut per_day: Vec<String> = days
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(format!("{:?}={:?}", r.get(0), r.get(1))),
            _ => None,
        })
        .collect();
    per_day.sort();
    out.insert("trades per day".into(), (per_day.len() as i64, per_day.join(",")));
    out
}

async fn backup_wait(c: &Client) -> String {
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap().get(0)
}

fn strata(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("run strata")
}

/// `strata restore --store S --root R [--timestamp T]`
fn cli_restore(store: &Path, root: &Path, timestamp: Option<&str>) -> Output {
    let (conn, root) = (conn(store), root.display().to_string());
    let mut args = vec!["restore", "--store", &conn, "--root", &root];
    if let Some(t) = timestamp {
        args.extend(["--timestamp", t]);
    }
    strata(&args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn exit_failure(root: &Path, opts: Options) -> String {
    match Server::try_start(root, opts) {
        Started::Running(_) => panic!("server started but should have refused"),
        Started::Exited { code, stderr } => {
            assert_ne!(code, Some(0), "{stderr}");
            stderr
        }
    }
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_and_cli_restore_bring_back_exactly_the_backed_up_state() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    load(&c).await;
    let ts1 = backup_wait(&c).await;
    let at_ts1 = digests(&c).await;
    c.batch_execute(
        "INSERT INTO trades VALUES ('2024-06-02T12:00:00.5', 'C', 1.5, 2.0);
         ALTER TABLE quotes DROP PARTITION LIST '2024-05';",
    )
    .await
    .unwrap();
    let ts2 = backup_wait(&c).await;
    let at_ts2 = digests(&c).await;
    assert_ne!(at_ts1, at_ts2);

    // The latest backup, through the trigger file, into a fresh root, while the
    // first server keeps running and starts another backup.
    let ts_bg: String = c.query_one("BACKUP DATABASE", &[]).await.unwrap().get(0);
    let b = temp_root();
    std::fs::write(
        b.path().join(TRIGGER),
        format!("# restore the latest\nbackup.object.store={}\n", conn(store.path())),
    )
    .unwrap();
    let sb = Server::start(b.path(), store_opts(store.path()));
    let cb = sb.connect().await;
    assert_eq!(digests(&cb).await, at_ts2);
    assert_restore_completed_before_a_commit(&cb, b.path()).await;
    assert!(!b.path().join(".restore_staging").exists());
    assert_eq!(
        read(b.path().join("db/.data_id")),
        read(root.path().join("db/.data_id"))
    );
    let log = sb.stderr();
    assert!(
        log.contains(&format!("restored backup {ts2}")) || log.contains(&format!("restored backup {ts_bg}")),
        "{log}"
    );

    // The restored database goes on backing up into the same instance, reusing every object.
    let ts3 = backup_wait(&cb).await;
    let newest = &backups(&cb).await[0];
    assert_eq!(field(newest, "backup_timestamp"), ts3);
    assert!(crate::backup::completed(newest), "{newest:?}");
    assert_eq!(field(newest, "files_uploaded"), "0", "{newest:?}");

    // An older backup, through the CLI.
    let cdir = temp_root();
    let out = cli_restore(store.path(), cdir.path(), Some(&ts1));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&ts1), "{}", text(&out));
    assert!(
        text(&out).contains("restoring: 100%"),
        "plain progress lines off a terminal: {}",
        text(&out)
    );
    let sc = Server::start(cdir.path(), Options::default());
    assert_eq!(digests(&sc.connect().await).await, at_ts1);

    // The CLI lists the instance and its backups.
    let out = strata(&["backup", "list", "--store", &conn(store.path())]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    let instance = read(root.path().join("db/.backup_instance_name"));
    for needle in [&instance, &ts1, &ts2, &ts3] {
        assert!(listing.contains(needle.as_str()), "{needle} missing from:\n{listing}");
    }

    // A trigger on a database that is not empty is refused and changes nothing.
    drop(c);
    server.stop();
    std::fs::write(
        root.path().join(TRIGGER),
        format!("backup.object.store={}\n", conn(store.path())),
    )
    .unwrap();
    let err = exit_failure(root.path(), store_opts(store.path()));
    assert!(err.contains("The local database is not empty."), "{err}");
    assert!(root.path().join(TRIGGER).exists());
    std::fs::remove_file(root.path().join(TRIGGER)).unwrap();
    let again = Server::start(root.path(), store_opts(store.path()));
    assert_eq!(digests(&again.connect().await).await, at_ts2);
}

/// A commit on a database restored from a trigger returns only once the restore
/// is durable: its trigger and markers are gone.
pub(crate) async fn assert_restore_completed_before_a_commit(c: &Client, root: &Path) {
    c.batch_execute("CREATE TABLE probe (id INT); DROP TABLE probe")
        .await
        .unwrap();
    assert!(!root.join(TRIGGER).exists(), "the trigger is removed after success");
    for marker in ["db/.restored", "db/.restore_unsynced"] {
        assert!(!root.join(marker).exists(), "{marker} is left");
    }
}

/// What a power cut during the background sync leaves is recognised and the
/// restore is done again; torn files are never served.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_cut_short_before_its_files_reached_disk_is_done_again() {
    let (root, store) = (temp_root(), temp_root());
    let expected = {
        let server = Server::start(root.path(), store_opts(store.path()));
        let c = server.connect().await;
        load(&c).await;
        backup_wait(&c).await;
        digests(&c).await
    };
    let b = temp_root();
    let trigger = format!("backup.object.store={}\n", conn(store.path()));
    std::fs::write(b.path().join(TRIGGER), &trigger).unwrap();
    {
        let sb = Server::start(b.path(), store_opts(store.path()));
        let cb = sb.connect().await;
        assert_eq!(digests(&cb).await, expected);
        assert_restore_completed_before_a_commit(&cb, b.path()).await;
        sb.stop();
    }
    // The state a power cut before the sync leaves: the published folder with its
    // marker, a data file that never reached disk, and the trigger.
    let db = b.path().join("db");
    std::fs::write(db.join(".restore_unsynced"), "").unwrap();
    let torn = files_in(&db.join("trades"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a data file");
    std::fs::File::create(&torn).unwrap();

    let err = exit_failure(b.path(), store_opts(store.path()));
    assert!(
        err.contains(".restore_unsynced") && err.contains("restore again: put the trigger file"),
        "without its trigger the server refuses such a database: {err}"
    );
    std::fs::write(b.path().join(TRIGGER), &trigger).unwrap();
    let sb = Server::start(b.path(), store_opts(store.path()));
    let cb = sb.connect().await;
    assert_eq!(digests(&cb).await, expected);
    assert!(
        sb.stderr().contains("cut short before its files reached disk"),
        "{}",
        sb.stderr()
    );
    assert_restore_completed_before_a_commit(&cb, b.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_and_timestamp_errors_list_what_exists() {
    let store = temp_root();
    let mut names = Vec::new();
    let mut stamps = Vec::new();
    let roots = [temp_root(), temp_root()];
    for root in &roots {
        let s = Server::start(root.path(), store_opts(store.path()));
        let c = s.connect().await;
        c.batch_execute("CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY; INSERT INTO t VALUES ('2024-01-01', 1);")
            .await
            .unwrap();
        stamps.push(backup_wait(&c).await);
        names.push(read(root.path().join("db/.backup_instance_name")));
    }
    assert_ne!(names[0], names[1]);
    let e = temp_root();
    let attempt = |lines: &str| {
        std::fs::write(
            e.path().join(TRIGGER),
            format!("backup.object.store={}\n{lines}", conn(store.path())),
        )
        .unwrap();
        let err = exit_failure(e.path(), Options::default());
        assert!(e.path().join(TRIGGER).exists(), "the trigger stays after a failure");
        assert!(!e.path().join("db/.data_id").exists(), "nothing restored: {err}");
        err
    };
    let err = attempt("");
    assert!(err.contains(&names[0]) && err.contains(&names[1]), "{err}");
    let err = attempt("backup.instance.name=no-such-instance\n");
    assert!(err.contains("no-such-instance") && err.contains(&names[0]), "{err}");
    let err = attempt(&format!(
        "backup.instance.name={}\nbackup.restore.timestamp=2020-01-01T00:00:00.000000Z\n",
        names[0]
    ));
    assert!(
        err.contains("2020-01-01T00:00:00.000000Z") && err.contains(&stamps[0]),
        "{err}"
    );
    let err = attempt("backup.restore.timestmp=2020-01-01T00:00:00Z\n");
    assert!(err.contains("backup.restore.timestmp"), "{err}");

    std::fs::write(
        e.path().join(TRIGGER),
        format!(
            "backup.object.store={}\nbackup.instance.name={}\n",
            conn(store.path()),
            names[1]
        ),
    )
    .unwrap();
    let s = Server::start(e.path(), Options::default());
    assert_eq!(table_digest(&s.connect().await, "t").await.0, 1);
    assert_eq!(
        read(e.path().join("db/.data_id")),
        read(roots[1].path().join("db/.data_id"))
    );
}

/// The table whose backup references the object file `name`.
fn table_of_object(store: &Path, name: &str) -> String {
    let m = &manifests(store)[0];
    for t in m["tables"].as_array().unwrap() {
        for f in t["files"].as_array().unwrap() {
            if f["object"].as_str().unwrap().ends_with(name) {
                return t["meta"]["name"].as_str().unwrap().to_string();
            }
        }
    }
    panic!("no table references {name}");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_or_missing_objects_fail_restore_cleanly_and_verify_names_them() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    load(&c).await;
    backup_wait(&c).await;
    let ok = c.query_one("VERIFY BACKUP LATEST", &[]).await.unwrap();
    assert_eq!(ok.get::<_, String>("status"), "ok");
    assert_eq!(ok.get::<_, i64>("problems"), 0);
    let verify_cli = || strata(&["backup", "verify", "--store", &conn(store.path())]);
    assert!(verify_cli().status.success(), "{}", text(&verify_cli()));

    // Flip one byte of one object.
    let mut objects = files_in(&instance_dir(store.path()).join("files"));
    objects.sort();
    let victim = objects[objects.len() / 2].clone();
    let victim_name = victim.file_name().unwrap().to_string_lossy().to_string();
    let table = table_of_object(store.path(), &victim_name);
    let original = std::fs::read(&victim).unwrap();
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(&victim, &flipped).unwrap();

    let row = c.query_one("VERIFY BACKUP LATEST", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>("status"), "corrupt");
    let err = c
        .batch_execute(&format!("RESTORE TABLE {table} FROM BACKUP LATEST AS restored_copy"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "XX001", "a corrupt backup is data corruption: {err:?}");
    assert!(format!("{err:?}").contains(&victim_name), "{err:?}");
    assert_eq!(row.get::<_, i64>("problems"), 1);
    assert!(row.get::<_, String>("details").contains(&victim_name));
    let out = verify_cli();
    assert!(!out.status.success());
    let bad: Vec<String> = text(&out)
        .lines()
        .filter(|l| l.starts_with("BAD "))
        .map(str::to_string)
        .collect();
    assert_eq!(bad.len(), 1, "{}", text(&out));
    assert!(bad[0].contains(&victim_name) && bad[0].contains(&table), "{}", bad[0]);

    let e = temp_root();
    std::fs::write(
        e.path().join(TRIGGER),
        format!("backup.object.store={}\n", conn(store.path())),
    )
    .unwrap();
    let err = exit_failure(e.path(), Options::default());
    assert!(err.contains(&victim_name), "{err}");
    assert!(e.path().join(".restore_failed").is_dir(), "{err}");
    let failed = read(e.path().join("_restore_failed"));
    assert!(failed.starts_with(&table), "{failed}");
    assert!(e.path().join(TRIGGER).exists());
    assert!(!e.path().join("db/.data_id").exists());
    assert!(!e.path().join(".restore_staging").exists());
    let err = exit_failure(e.path(), Options::default());
    assert!(err.contains("Failed restore directory found"), "{err}");

    // A deleted object likewise.
    std::fs::write(&victim, &original).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let out = verify_cli();
    assert!(!out.status.success());
    let report = text(&out);
    let bad: Vec<&str> = report.lines().filter(|l| l.starts_with("BAD ")).collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert!(bad[0].contains(&victim_name) && bad[0].contains("missing"), "{report}");
    let f = temp_root();
    let out = cli_restore(store.path(), f.path(), None);
    assert!(!out.status.success());
    assert!(text(&out).contains(&victim_name), "{}", text(&out));
    assert!(f.path().join(".restore_failed").is_dir());
    assert!(!f.path().join("db/.data_id").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_manifests_are_refused_before_anything_is_written() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    load(&c).await;
    backup_wait(&c).await;
    drop(c);
    server.stop();
    let good = manifests(store.path()).remove(0);
    let micros = good["backup_micros"].as_i64().unwrap();
    let dir = instance_dir(store.path()).join("manifests");
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "path traversal",
            Box::new(|m| m["tables"][0]["files"][0]["path"] = "../../../../evil.parquet".into()),
            "inside the table folder",
        ),
        (
            "partition traversal",
            Box::new(|m| {
                m["tables"][0]["files"][0]["partition"] = "..".into();
                m["tables"][0]["files"][0]["path"] = "../evil.parquet".into();
            }),
            "inside the table folder",
        ),
        (
            "table name",
            Box::new(|m| m["tables"][0]["meta"]["name"] = "../../etc".into()),
            "invalid table name",
        ),
        (
            "absolute path",
            Box::new(|m| m["tables"][0]["files"][0]["path"] = "/tmp/evil.parquet".into()),
            "inside the table folder",
        ),
        (
            "data id",
            Box::new(|m| m["data_id"] = "00000000-0000-4000-8000-000000000000".into()),
            "Data ID mismatch",
        ),
        (
            "format version",
            Box::new(|m| m["format_version"] = 99.into()),
            "format version 99",
        ),
        (
            "object key",
            Box::new(|m| m["tables"][0]["files"][0]["object"] = "../../../x".into()),
            "does not match hash",
        ),
    ];
    for (k, (what, edit, expected)) in cases.iter().enumerate() {
        let t = micros + 1 + k as i64;
        let mut m = good.clone();
        m["backup_micros"] = t.into();
        let stamp = chrono::DateTime::from_timestamp_micros(t)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        m["backup_timestamp"] = stamp.clone().into();
        edit(&mut m);
        std::fs::write(dir.join(format!("{t}.json")), serde_json::to_vec(&m).unwrap()).unwrap();
        assert_refused(store.path(), &stamp, what, expected);
    }
    let t = micros + 100;
    let bytes = std::fs::read(dir.join(format!("{micros}.json"))).unwrap();
    std::fs::write(dir.join(format!("{t}.json")), &bytes[..bytes.len() / 2]).unwrap();
    let stamp = chrono::DateTime::from_timestamp_micros(t)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    assert_refused(store.path(), &stamp, "truncated", "manifest");
}

fn assert_refused(store: &Path, stamp: &str, what: &str, expected: &str) {
    let target = temp_root();
    let out = cli_restore(store, target.path(), Some(stamp));
    let msg = text(&out);
    assert!(!out.status.success(), "{what}: {msg}");
    assert!(msg.contains(expected), "{what}: expected '{expected}' in {msg}");
    let left: Vec<_> = std::fs::read_dir(target.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{what}: wrote {left:?}");
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default()
}

async fn count_and_sum(c: &Client, table: &str) -> (i64, f64) {
    let r = c
        .query_one(&format!("SELECT count(*), sum(price) FROM {table}"), &[])
        .await
        .unwrap();
    (r.get(0), r.get::<_, Option<f64>>(1).unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_table_online_fail_replace_and_a_time_range() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE trades (ts TIMESTAMP, symbol SYMBOL, price DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO trades SELECT to_timestamp_micros(1717200000000000 + value * 600000000), 'S', value
             FROM generate_series(0, 4319);",
    )
    .await
    .unwrap();
    let at_backup = table_digest(&c, "trades").await;
    let totals_at_backup = count_and_sum(&c, "trades").await;
    let ts = backup_wait(&c).await;
    c.batch_execute(
        "ALTER TABLE trades DROP PARTITION WHERE ts >= '2024-06-10' AND ts < '2024-06-16';
         INSERT INTO trades VALUES ('2024-06-20T01:00:00', 'X', 7.0);",
    )
    .await
    .unwrap();
    let changed = count_and_sum(&c, "trades").await;
    assert_ne!(changed, totals_at_backup);

    // Default policy: an existing table of the target name is an error, and nothing changes.
    let err = c
        .query("RESTORE TABLE trades FROM BACKUP LATEST", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P07", "{err:?}");
    assert_eq!(count_and_sum(&c, "trades").await, changed);

    // Under another name, by timestamp.
    let row = c
        .query_one(
            &format!("RESTORE TABLE trades FROM BACKUP '{ts}' AS trades_restored"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("backup_timestamp"), ts);
    assert_eq!(table_digest(&c, "trades_restored").await, at_backup);

    // A time range fetches only its partitions.
    let row = c
        .query_one(
            "RESTORE TABLE trades FROM BACKUP LATEST AS trades_part WHERE ts >= '2024-06-10' AND ts < '2024-06-13'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>("rows"), 3 * 144);
    let fetched = row.get::<_, i64>("fetched_bytes") as u64;
    let m = &manifests(store.path())[0];
    let stored = |days: &[&str]| -> u64 {
        m["tables"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| days.is_empty() || days.contains(&f["partition"].as_str().unwrap()))
            .map(|f| f["stored_bytes"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(fetched, stored(&["2024-06-10", "2024-06-11", "2024-06-12"]));
    assert!(fetched * 5 < stored(&[]), "fetched {fetched} of {}", stored(&[]));
    let r = c
        .query_one(
            "SELECT count(*), min(ts) >= '2024-06-10', max(ts) < '2024-06-13' FROM trades_part",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get(1), r.get(2)), (432, true, true));

    // Replace while readers run: each sees the old or the restored table, never a mix.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let rc = server.connect().await;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                let v = count_and_sum(&rc, "trades").await;
                if v == changed {
                    seen.0 += 1;
                } else if v == totals_at_backup {
                    seen.1 += 1;
                } else {
                    panic!("a reader saw a mix: {v:?}");
                }
            }
            seen
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.query_one("RESTORE TABLE trades FROM BACKUP LATEST WITH (policy = 'replace')", &[])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        let (old, new) = r.await.unwrap();
        assert!(old > 0 && new > 0, "readers saw old {old} times, restored {new} times");
    }
    assert_eq!(table_digest(&c, "trades").await, at_backup);

    // Replace only a time range: the rest of the table keeps its changes.
    c.batch_execute("INSERT INTO trades VALUES ('2024-06-11T05:00:00', 'Y', 1.0), ('2024-06-25T05:00:00', 'Z', 2.0);")
        .await
        .unwrap();
    c.query_one(
        "RESTORE TABLE trades FROM BACKUP LATEST WHERE ts >= '2024-06-11' AND ts < '2024-06-12' WITH (policy = 'replace')",
        &[],
    )
    .await
    .unwrap();
    let r = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE symbol = 'Z'), count(*) FILTER (WHERE symbol = 'Y') FROM trades",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)),
        (4321, 1, 0)
    );

    // Bad requests are clear errors.
    let err = c
        .query("RESTORE TABLE nosuch FROM BACKUP LATEST AS x", &[])
        .await
        .unwrap_err();
    assert!(db_message(&err).contains("trades"), "lists the tables: {err:?}");
    let err = c
        .query("RESTORE TABLE trades FROM BACKUP '2020-01-01T00:00:00Z' AS y", &[])
        .await
        .unwrap_err();
    assert!(db_message(&err).contains(&ts), "lists the backups: {err:?}");
    let err = c
        .query(
            "RESTORE TABLE trades FROM BACKUP LATEST AS z WITH (policy = 'merge')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(db_message(&err).contains("merge"), "{err:?}");
}
