//! SQL on a backup where it lies: `backup_table()` through the server (simple
//! and extended protocol, psql) and `strata backup query`, on an encrypted
//! store with commit shipping on; bad arguments get clear errors.
use std::path::Path;
use std::process::Command;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::backup::{backups, field};
use crate::harness::{Options, Server, binary, sqlstate, table_digest, temp_root};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn conn(store: &Path) -> String {
    format!("fs::root={};", store.display())
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn caught_up(c: &Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = c.simple_query("SELECT state FROM replication_status()").await.unwrap();
        let state = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        if state.as_deref() == Some("caught up") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not caught up: {state:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Rows per symbol of the table expression `from`, by the extended protocol.
async fn by_sym(c: &Client, from: &str) -> Vec<(String, i64)> {
    let sql = format!("SELECT sym, count(*) FROM {from} GROUP BY sym ORDER BY sym");
    let rows = c.query(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn cli_query(store: &Path, key_file: Option<&Path>, sql: &str) -> std::process::Output {
    let mut cmd = Command::new(binary());
    cmd.args(["backup", "query", "--store", &conn(store)]);
    if let Some(k) = key_file {
        cmd.arg("--key-file").arg(k);
    }
    cmd.arg(sql)
        .env_remove("STRATA_BACKUP_ENCRYPTION_KEY")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_queried_where_it_lies_from_sql_and_the_cli() {
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(
        root.path(),
        Options::default()
            .conf("backup.object.store", &conn(store.path()))
            .conf("backup.encryption.key", KEY)
            .conf("replication.role", "primary")
            .conf("replication.primary.throttle.window.duration", "100"),
    );
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP, sym SYMBOL, v DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t SELECT to_timestamp_micros(1704067200000000 + value * 1000000), \
             CASE WHEN value % 3 = 0 THEN 'a' ELSE 'b' END, random() FROM generate_series(0, 259199);
         CREATE TABLE u (ts TIMESTAMP, n BIGINT) TIMESTAMP(ts) PARTITION BY MONTH;
         INSERT INTO u VALUES ('2024-01-01T00:00:00', 1), ('2024-02-01T00:00:00', 2);",
    )
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let first = field(&backups(&c).await[0], "backup_timestamp");
    let at_backup = table_digest(&c, "t").await;

    // The whole table and a day of it, by the simple and the extended protocol.
    assert_eq!(table_digest(&c, "backup_table('t')").await, at_backup);
    assert_eq!(
        table_digest(&c, &format!("backup_table('t', '{first}')")).await,
        at_backup
    );
    let day = "WHERE ts >= '2024-01-02T00:00:00' AND ts < '2024-01-03T00:00:00'";
    let live_day = count(&c, &format!("SELECT count(*) FROM t {day}")).await;
    assert_eq!(live_day, 86_400);
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM backup_table('t') {day}")).await,
        live_day
    );
    assert_eq!(by_sym(&c, "backup_table('t', 'LATEST')").await, by_sym(&c, "t").await);

    // Changes after the backup: the backup answers as it was; the newest
    // state (the log's end, with shipping on) has them.
    c.batch_execute("INSERT INTO u VALUES ('2024-03-01T00:00:00', 3); DROP TABLE t;")
        .await
        .unwrap();
    caught_up(&c).await;
    assert_eq!(
        table_digest(&c, &format!("backup_table('t', '{first}')")).await,
        at_backup
    );
    assert_eq!(
        count(&c, &format!("SELECT count(*) FROM backup_table('u', '{first}')")).await,
        2
    );
    assert_eq!(count(&c, "SELECT count(*) FROM backup_table('u')").await, 3);
    assert_eq!(count(&c, "SELECT sum(n) FROM backup_table('u', 'latest')").await, 6);

    // Bad arguments and names get errors that say what is wrong.
    for (sql, code, says) in [
        ("SELECT * FROM backup_table('t')", "42704", "table 't' is not in backup"),
        (
            "SELECT * FROM backup_table('nope', '{first}')",
            "42704",
            "it holds: t, u",
        ),
        (
            "SELECT * FROM backup_table('u', 'yesterday')",
            "22023",
            "is not a backup timestamp",
        ),
        (
            "SELECT * FROM backup_table('u', '2001-01-01T00:00:00Z')",
            "42704",
            "no state at",
        ),
        (
            "SELECT * FROM backup_table()",
            "42601",
            "takes one or two text literals",
        ),
        (
            "SELECT * FROM backup_table(1)",
            "42601",
            "takes one or two text literals",
        ),
    ] {
        let sql = sql.replace("{first}", &first);
        let err = c.simple_query(&sql).await.unwrap_err();
        let text = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert_eq!(sqlstate(&err), code, "{sql}: {text}");
        assert!(text.contains(says), "{sql}: {text}");
    }

    // psql, as a user types it.
    let psql = server.psql(&[
        "-At",
        "-c",
        &format!("SELECT count(*) FROM backup_table('t', '{first}')"),
    ]);
    if let Some(out) = psql {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "259200");
    }

    // The CLI reads the same store, with the key; without it, it says what is missing.
    let key_file = root.path().join("backup.key");
    std::fs::write(&key_file, KEY).unwrap();
    let sql = format!("SELECT count(*) AS n, max(v) < 1 AS below_one FROM backup_table('t', '{first}') {day}");
    let out = cli_query(store.path(), Some(&key_file), &sql);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| 86400 | true"), "{stdout}");
    let out = cli_query(store.path(), None, &sql);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup.encryption.key"));
    let out = cli_query(store.path(), Some(&key_file), "SELECT * FROM backup_table('gone')");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("table 'gone' is not in backup"));

    // Nothing of it was written to the database.
    let tables = c
        .simple_query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        .await
        .unwrap();
    let n = tables.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(n.as_deref(), Some("1"), "only u");

    // A damaged object fails the query that reads it, naming it; no wrong row is served.
    for path in files_under(&store.path().join("_backup")) {
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
    }
    let err = c
        .simple_query(&format!("SELECT sum(n) FROM backup_table('u', '{first}')"))
        .await
        .unwrap_err();
    let text = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert_eq!(sqlstate(&err), "XX001", "{text}");
    assert!(text.contains("/files/"), "{text}");
}

/// The data objects under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if path.to_string_lossy().contains("/files/") {
            out.push(path);
        }
    }
    out
}
