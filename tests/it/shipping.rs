//! Commit shipping through the real server: every commit in the store within
//! the window, nothing written while idle, and after the machine is lost a
//! restore to any instant (trigger file, RESTORE TABLE, VERIFY BACKUP, the CLI)
//! gives exactly what was acknowledged then.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{Options, Server, Started, binary, table_digest, temp_root};

const TRIGGER: &str = "_backup_restore";

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn stamp(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn conn(store: &Path) -> String {
    format!("fs::root={};", store.display())
}

fn shipping(store: &Path) -> Options {
    Options::default()
        .conf("backup.object.store", &conn(store))
        .conf("replication.role", "primary")
        .conf("replication.primary.throttle.window.duration", "200")
        // Merges come quickly, so the idle period below is truly idle.
        .conf("housekeeping.interval.ms", "100")
}

async fn single(c: &Client, sql: &str) -> Vec<Option<String>> {
    let rows = c.simple_query(sql).await.unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("one row");
    (0..row.len()).map(|i| row.get(i).map(str::to_string)).collect()
}

/// What a client sees of the database: each table's digest.
async fn state(c: &Client) -> BTreeMap<String, (i64, String)> {
    let mut out = BTreeMap::new();
    for t in ["t", "u"] {
        let exists = single(
            c,
            &format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{t}'"),
        )
        .await;
        if exists[0].as_deref() == Some("1") {
            out.insert(t.to_string(), table_digest(c, t).await);
        }
    }
    out
}

/// Waits until replication_status() says every commit is in the store.
async fn caught_up(c: &Client) -> Vec<Option<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = single(
            c,
            "SELECT role, state, last_shipped_ts, lag_ms, pending_commits, window_start, window_end, last_error \
             FROM replication_status()",
        )
        .await;
        if row[1].as_deref() == Some("caught up") {
            return row;
        }
        assert!(Instant::now() < deadline, "not caught up: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every object in the store with its size and modification time.
fn store_listing(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().display().to_string(), (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out
}

/// One acknowledged statement: the instants around it and the state after it.
struct Acked {
    before: i64,
    after: i64,
    state: BTreeMap<String, (i64, String)>,
}

fn expected_at(acked: &[Acked], t: i64) -> &BTreeMap<String, (i64, String)> {
    &acked
        .iter()
        .rev()
        .find(|a| a.after < t)
        .expect("an acknowledged state")
        .state
}

/// Starts a server on a fresh root restored from `store` to `timestamp`.
fn restored(store: &Path, timestamp: Option<i64>) -> (tempfile::TempDir, Server) {
    let root = temp_root();
    let mut trigger = format!("backup.object.store={}\n", conn(store));
    if let Some(t) = timestamp {
        trigger.push_str(&format!("backup.restore.timestamp={}\n", stamp(t)));
    }
    std::fs::write(root.path().join(TRIGGER), trigger).unwrap();
    let server = Server::start(
        root.path(),
        Options::default().conf("backup.object.store", &conn(store)),
    );
    (root, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_commits_restore_any_instant_after_the_machine_is_lost() {
    let (root, store) = (temp_root(), temp_root());
    let metrics = shipping(store.path())
        .conf("metrics.enabled", "true")
        .conf("http.min.net.bind.to", "127.0.0.1:0");
    let server = Server::start(root.path(), metrics);
    let c = server.connect().await;
    let mut acked = Vec::new();
    let mut run = async |sql: String| {
        let before = now_micros();
        c.batch_execute(&sql).await.unwrap();
        let after = now_micros();
        acked.push(Acked {
            before,
            after,
            state: state(&c).await,
        });
        tokio::time::sleep(Duration::from_millis(15)).await;
    };
    run("CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY".into()).await;
    run("INSERT INTO t VALUES ('2024-01-01T00:00:00', 0)".into()).await;
    let backed_up: String = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap().get(0);
    for i in 1..40 {
        let sql = match i {
            12 => "CREATE TABLE u (ts TIMESTAMP, s VARCHAR) TIMESTAMP(ts) PARTITION BY MONTH".to_string(),
            13..=16 => format!("INSERT INTO u VALUES ('2024-0{}-02T00:00:00', 'x{i}')", i - 12),
            20 => "TRUNCATE TABLE t".to_string(),
            25 => "DROP TABLE u".to_string(),
            30 => "ALTER TABLE t DROP PARTITION LIST '2024-01-03'".to_string(),
            _ => format!(
                "INSERT INTO t VALUES ('2024-01-0{}T00:00:{:02}', {i}), ('2024-01-0{}T01:00:00', -{i})",
                1 + i % 4,
                i % 60,
                1 + (i + 1) % 4
            ),
        };
        run(sql).await;
    }
    // Let housekeeping merge what it will: merges are commits, and shipped too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = caught_up(&c).await;
    assert_eq!(status[0].as_deref(), Some("primary"), "{status:?}");
    assert_eq!(status[3].as_deref(), Some("0"), "lag when caught up: {status:?}");
    assert_eq!(status[4].as_deref(), Some("0"), "{status:?}");
    assert!(
        status[5].is_some() && status[6].is_some() && status[7].is_none(),
        "{status:?}"
    );

    if crate::harness::have_program("curl") {
        let (_, text) = crate::ops::get(server.http_port.unwrap(), "/metrics");
        crate::ops::promtool_accepts(&text);
        assert_eq!(
            crate::ops::sample(&text, "strata_replication_lag_seconds").as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            crate::ops::sample(&text, "strata_replication_failing").as_deref(),
            Some("0"),
            "{text}"
        );
        assert!(
            crate::ops::sample(&text, "strata_replication_last_shipped_timestamp_seconds").is_some(),
            "{text}"
        );
    }

    // Idle costs nothing: no object is written or touched while nothing commits.
    let quiet = store_listing(store.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = store_listing(store.path());
    let changed: Vec<&String> = after.keys().filter(|k| quiet.get(*k) != after.get(*k)).collect();
    assert!(
        changed.is_empty() && after.len() == quiet.len(),
        "written while idle: {changed:?}"
    );

    // With every commit shipped, a backup finds every file already in the store.
    let caught_up_backup: String = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap().get(0);
    let uploaded = single(
        &c,
        &format!("SELECT files_uploaded, bytes_uploaded FROM backups() WHERE backup_timestamp = '{caught_up_backup}'"),
    )
    .await;
    assert_eq!(
        uploaded,
        [Some("0".to_string()), Some("0".to_string())],
        "a backup after shipping"
    );

    // The machine is lost.
    server.kill9();
    drop(root);

    let last = acked.last().unwrap();
    let first = &acked[1];
    // Instants: right after the backup's statements, around some changes, and the latest.
    let instants: Vec<i64> = [3usize, 13, 16, 21, 26, 31, 38]
        .iter()
        .flat_map(|&i| [acked[i].before - 1, acked[i].after + 1])
        .collect();
    for t in &instants {
        let (_root, s) = restored(store.path(), Some(*t));
        let c = s.connect().await;
        assert_eq!(&state(&c).await, expected_at(&acked, *t), "state at {}", stamp(*t));
    }
    // The latest state, without a timestamp: every acknowledged commit.
    let (_root, s) = restored(store.path(), None);
    let c = s.connect().await;
    assert_eq!(state(&c).await, last.state);

    // RESTORE TABLE and VERIFY BACKUP at an instant between the backup and the end.
    let mid = acked[16].after + 1;
    c.batch_execute(&format!("RESTORE TABLE u FROM BACKUP '{}'", stamp(mid)))
        .await
        .unwrap();
    assert_eq!(table_digest(&c, "u").await, expected_at(&acked, mid)["u"]);
    let verified = c
        .simple_query(&format!("VERIFY BACKUP '{}'", stamp(mid)))
        .await
        .unwrap();
    let text = format!("{verified:?}");
    assert!(text.contains("ok") || text.contains("OK"), "{text}");

    // Outside the window (before the first backup, after the last shipped
    // commit and the last backup): an error naming it, nothing restored.
    for outside in [first.before - 60_000_000, now_micros() + 60_000_000] {
        let root = temp_root();
        std::fs::write(
            root.path().join(TRIGGER),
            format!(
                "backup.object.store={}\nbackup.restore.timestamp={}\n",
                conn(store.path()),
                stamp(outside)
            ),
        )
        .unwrap();
        match Server::try_start(root.path(), Options::default()) {
            Started::Exited { stderr, .. } => assert!(stderr.contains("the store can restore from"), "{stderr}"),
            Started::Running(_) => panic!("restored {}, outside the window", stamp(outside)),
        }
        assert!(!root.path().join("db/.data_id").exists());
    }

    // The CLI shows the window and restores an instant too.
    let list = std::process::Command::new(binary())
        .args(["backup", "list", "--store", &conn(store.path())])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(
        out.contains("point-in-time window: the store can restore from"),
        "{out}"
    );
    assert!(out.contains(&backed_up), "{out}");
    let cli_root = temp_root();
    let t = acked[21].after + 1;
    let restore = std::process::Command::new(binary())
        .args(["restore", "--store", &conn(store.path()), "--root"])
        .arg(cli_root.path())
        .args(["--timestamp", &stamp(t)])
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    let s = Server::start(cli_root.path(), Options::default());
    assert_eq!(&state(&s.connect().await).await, expected_at(&acked, t));
}

/// Inserts rows `v = 0, 1, ...` one statement each until the connection
/// fails; returns when each was acknowledged.
async fn insert_until_killed(c: Client) -> Vec<i64> {
    let mut acked = Vec::new();
    for v in 0.. {
        let sql = format!(
            "INSERT INTO t VALUES (to_timestamp_micros({}), {v})",
            1_704_067_200_000_000i64 + v * 1_000_000
        );
        if c.batch_execute(&sql).await.is_err() {
            break;
        }
        acked.push(now_micros());
    }
    acked
}

/// Kills the machine at random moments under load and restores the latest
/// state from the store, `rounds` times: every insert acknowledged more than
/// the window plus 2 s before the kill is there, and the table is a prefix of
/// the inserts (nothing torn, nothing invented). Odd rounds restart the
/// server on its disk first: the commits it had not shipped go up then, so
/// all of them are there.
async fn machine_loss(conn: &str, rounds: u64) {
    let seed = now_micros() as u64 | 1;
    println!("machine loss: seed {seed}");
    let mut rng = seed;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let window_ms = 200;
    for round in 0..rounds {
        let root = temp_root();
        let opts = Options::default()
            .conf("backup.object.store", conn)
            .conf("replication.role", "primary")
            .conf("replication.primary.throttle.window.duration", &window_ms.to_string());
        let server = Server::start(root.path(), opts.clone());
        let c = server.connect().await;
        c.batch_execute("CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY HOUR")
            .await
            .unwrap();
        let instance = std::fs::read_to_string(root.path().join("db/.backup_instance_name"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let load = tokio::spawn(insert_until_killed(c));
        tokio::time::sleep(Duration::from_millis(300 + next(1500))).await;
        let killed_at = now_micros();
        server.kill9();
        let acked = load.await.unwrap();
        let resumed = round % 2 == 1;
        if resumed {
            let server = Server::start(root.path(), opts);
            caught_up(&server.connect().await).await;
            server.kill9();
        }
        drop(root);
        let target = temp_root();
        let name = if instance.is_empty() {
            // Named at the first backup or shipment: read it back from the store.
            let out = std::process::Command::new(binary())
                .args(["backup", "list", "--store", conn])
                .output()
                .unwrap();
            panic!("no instance name on disk; {}", String::from_utf8_lossy(&out.stdout));
        } else {
            instance
        };
        std::fs::write(
            target.path().join(TRIGGER),
            format!("backup.object.store={conn}\nbackup.instance.name={name}\n"),
        )
        .unwrap();
        let bound = killed_at - (window_ms + 2_000) * 1_000;
        let must = acked.iter().filter(|t| **t < bound).count() as i64;
        let s = match Server::try_start(target.path(), Options::default().conf("backup.object.store", conn)) {
            Started::Running(s) => s,
            // Lost before its first shipment (a slow machine): then nothing acknowledged may be owed.
            Started::Exited { stderr, .. } if stderr.contains("has no complete backup") && !resumed => {
                assert_eq!(must, 0, "round {round}: nothing restorable, {must} owed: {stderr}");
                println!("round {round}: lost before its first shipment");
                continue;
            }
            Started::Exited { code, stderr } => panic!("round {round}: restore failed ({code:?}): {stderr}"),
        };
        let row = single(
            &s.connect().await,
            "SELECT count(*), count(DISTINCT v), min(v), max(v) FROM t",
        )
        .await;
        let n: i64 = row[0].as_deref().unwrap().parse().unwrap();
        assert_eq!(row[1], row[0], "round {round}: duplicated rows {row:?}");
        if n > 0 {
            assert_eq!(row[2].as_deref(), Some("0"), "round {round}: {row:?}");
            assert_eq!(
                row[3].as_deref().map(|m| m.parse::<i64>().unwrap() + 1),
                Some(n),
                "round {round}: not a prefix {row:?}"
            );
        }
        let all = acked.len() as i64;
        if resumed {
            assert!(
                n == all || n == all + 1,
                "round {round}: {n} rows restored, {all} acknowledged"
            );
        } else {
            assert!(
                n >= must && n <= all + 1,
                "round {round}: {n} rows restored, {must} acknowledged before the bound, {all} in all"
            );
        }
        println!(
            "round {round}: {all} acknowledged, {n} restored{}",
            if resumed { " (after a restart)" } else { "" }
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_loss_under_load_loses_nothing_older_than_the_window_on_a_local_store() {
    let store = temp_root();
    machine_loss(&conn(store.path()), 10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_loss_under_load_loses_nothing_older_than_the_window_on_s3() {
    let Some(s3) = crate::stores::s3() else { return };
    machine_loss(&s3.conn, 10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_store_never_blocks_writes_and_replication_status_says_why() {
    let root = temp_root();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "shipping-secret-DO-NOT-LOG";
    let dead = format!(
        "s3::bucket=b;region=us-east-1;access_key_id=k;secret_access_key={secret};endpoint=http://127.0.0.1:{port};allow_http=true;"
    );
    let opts = Options::default()
        .conf("backup.object.store", &conn(temp_root().path()))
        .conf("replication.role", "primary")
        .conf("replication.object.store", &dead);
    let server = Server::start(root.path(), opts);
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    let row = loop {
        // Writes go on, acknowledged at local speed, while nothing reaches the store.
        let started = Instant::now();
        c.batch_execute(&format!("INSERT INTO t VALUES ('2024-01-01', {i})"))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an insert waited on the dead store"
        );
        i += 1;
        let row = single(
            &c,
            "SELECT state, pending_commits, lag_ms, last_error FROM replication_status()",
        )
        .await;
        if row[0].as_deref() == Some("failing") {
            break row;
        }
        assert!(Instant::now() < deadline, "never reported failing: {row:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pending: i64 = row[1].as_deref().unwrap().parse().unwrap();
    assert!(pending >= 1, "{row:?}");
    let error = row[3].clone().unwrap_or_default();
    assert!(error.contains("cannot"), "{row:?}");
    assert!(
        !error.contains(secret) && !server.stderr().contains(secret),
        "the secret leaked: {error}"
    );
    assert_eq!(table_digest(&c, "t").await.0, i);
}
