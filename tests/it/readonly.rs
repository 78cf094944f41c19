//! The read-only user (`pg.readonly.*`): it logs in with its own password, may
//! query and look at backups, and every statement that changes data or state is
//! refused with 42501 naming it, by both query protocols, with nothing changed.
use futures::SinkExt;
use tokio_postgres::Client;

use crate::backup::{backups, completed, store_opts, two_day_table};
use crate::harness::{Server, sqlstate, temp_root};

const READONLY_PASSWORD: &str = "look but do not touch";

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_only_user_may_look_but_every_change_is_refused() {
    let root = temp_root();
    let store = temp_root();
    let server = Server::start(
        root.path(),
        store_opts(store.path())
            .conf("pg.readonly.user.enabled", "true")
            .conf("pg.readonly.password", READONLY_PASSWORD),
    );
    // The main user still logs in without a password (loopback trust).
    let admin = server.connect().await;
    two_day_table(&admin).await;
    admin.simple_query("BACKUP DATABASE WAIT").await.unwrap();

    let err = server
        .connect_as("user", Some("wrong"))
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&err), "28P01", "{err}");
    server.connect_as("user", None).await.expect_err("no password");
    let ro = server
        .connect_as("user", Some(READONLY_PASSWORD))
        .await
        .expect("read-only login");

    // What it may run, by both protocols.
    assert_eq!(count(&ro, "SELECT count(*) FROM t").await, 2);
    let n: i64 = ro
        .query_one("SELECT count(*) FROM t WHERE v >= $1", &[&1i64])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    ro.simple_query("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(backups(&ro).await.len(), 1);
    ro.simple_query("SELECT * FROM checkpoint_status()").await.unwrap();
    ro.simple_query("BACKUP DATABASE ESTIMATE").await.unwrap();
    ro.simple_query("VERIFY BACKUP LATEST").await.unwrap();
    ro.simple_query("SHOW server_version").await.unwrap();
    ro.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();

    let backup_ts = crate::backup::field(&backups(&ro).await[0], "backup_timestamp");
    let refused = [
        ("INSERT INTO t VALUES ('2024-01-03', 3)", "INSERT"),
        (
            "CREATE TABLE u (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY",
            "CREATE TABLE",
        ),
        ("DROP TABLE t", "DROP TABLE"),
        ("TRUNCATE TABLE t", "TRUNCATE"),
        (
            "ALTER TABLE t DROP PARTITION LIST '2024-01-01'",
            "ALTER TABLE DROP PARTITION",
        ),
        ("CREATE VIEW v AS SELECT * FROM t", "CREATE VIEW"),
        ("SELECT * INTO t2 FROM t", "SELECT"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("EXECUTE anything", "EXECUTE"),
        ("BACKUP DATABASE", "BACKUP DATABASE"),
        ("BACKUP ABORT", "BACKUP ABORT"),
        ("CHECKPOINT CREATE", "CHECKPOINT CREATE"),
        ("CHECKPOINT RELEASE", "CHECKPOINT RELEASE"),
        ("RESTORE TABLE t FROM BACKUP LATEST AS t_copy", "RESTORE TABLE"),
        (&format!("DROP BACKUP '{backup_ts}'"), "DROP BACKUP"),
    ];
    for (sql, name) in refused {
        let simple = ro.simple_query(sql).await.expect_err(sql);
        let extended = ro.execute(sql, &[]).await.expect_err(sql);
        for err in [simple, extended] {
            assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
            let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
            assert!(
                message.contains("read-only user \"user\"") && message.contains(&format!(": {name} is not allowed")),
                "{sql}: {message}"
            );
        }
    }
    // COPY FROM STDIN is refused before any data is taken (on a connection of
    // its own: tokio-postgres cannot go on after a refused COPY).
    let copier = server.connect_as("user", Some(READONLY_PASSWORD)).await.unwrap();
    let err = copier
        .copy_in::<_, bytes::Bytes>("COPY t FROM STDIN")
        .await
        .map(|_| ())
        .expect_err("COPY");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    // A refused statement in a batch stops it, as any error does.
    let err = ro
        .batch_execute("SELECT 1; INSERT INTO t VALUES ('2024-01-04', 4)")
        .await
        .expect_err("batch with an insert");
    assert_eq!(sqlstate(&err), "42501", "{err}");

    // Nothing changed: the rows, the tables, the backups, no checkpoint.
    assert_eq!(count(&admin, "SELECT count(*) FROM t").await, 2);
    for table in ["u", "t2", "t_copy", "v"] {
        let err = admin
            .simple_query(&format!("SELECT * FROM {table}"))
            .await
            .expect_err(table);
        assert_eq!(sqlstate(&err), "42P01", "{table}: {err}");
    }
    let rows = backups(&admin).await;
    assert!(rows.len() == 1 && completed(&rows[0]), "{rows:?}");
    let checkpoint: bool = admin
        .query_one("SELECT in_progress FROM checkpoint_status()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!checkpoint, "CHECKPOINT CREATE was refused");
    // The main user keeps every right.
    admin
        .simple_query("INSERT INTO t VALUES ('2024-01-03', 3)")
        .await
        .unwrap();
    let mut sink = Box::pin(admin.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN").await.unwrap());
    sink.send(bytes::Bytes::from_static(b"2024-01-04 00:00:00\t4\n"))
        .await
        .unwrap();
    sink.as_mut().finish().await.unwrap();
    assert_eq!(count(&ro, "SELECT count(*) FROM t").await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_main_password_each_user_logs_in_with_its_own_and_psql_shows_the_refusal() {
    let root = temp_root();
    let server = Server::start(
        root.path(),
        crate::harness::Options::default()
            .conf("pg.password", "main secret")
            .conf("pg.readonly.user.enabled", "true")
            .conf("pg.readonly.user", "analyst")
            .conf("pg.readonly.password", READONLY_PASSWORD),
    );
    let admin = server.connect_as("admin", Some("main secret")).await.unwrap();
    two_day_table(&admin).await;
    for (user, password) in [("admin", READONLY_PASSWORD), ("analyst", "main secret")] {
        let err = server
            .connect_as(user, Some(password))
            .await
            .expect_err("another user's password");
        assert_eq!(sqlstate(&err), "28P01", "{user}: {err}");
    }
    // psql's catalog commands are queries: they work.
    let Some(looked) = server.psql_as("analyst", Some(READONLY_PASSWORD), &["-c", "\\dt", "-c", "\\d t"]) else {
        return;
    };
    let listing = String::from_utf8_lossy(&looked.stdout);
    assert!(
        looked.status.success() && listing.contains(" t ") && listing.contains("ts"),
        "{listing}{}",
        String::from_utf8_lossy(&looked.stderr)
    );
    let Some(out) = server.psql_as(
        "analyst",
        Some(READONLY_PASSWORD),
        &[
            "-c",
            "SELECT count(*) FROM t",
            "-c",
            "INSERT INTO t VALUES ('2024-01-05', 5)",
        ],
    ) else {
        return;
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success() && stdout.contains(" 2"), "{stdout}");
    assert!(
        stderr.contains("permission denied for read-only user \"analyst\": INSERT is not allowed"),
        "{stderr}"
    );
    assert_eq!(count(&admin, "SELECT count(*) FROM t").await, 2);
    for secret in ["main secret", READONLY_PASSWORD] {
        assert!(!server.stderr().contains(secret), "a password was logged");
    }
}
