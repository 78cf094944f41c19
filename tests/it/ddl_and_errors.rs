//! DDL statements and the errors users get for bad input; the server keeps serving.
use crate::harness::{Options, Server, Started, sqlstate, temp_root};

#[tokio::test(flavor = "multi_thread")]
async fn ddl_statements_and_partition_drops() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS m (ts TIMESTAMP, host STRING, ok BOOLEAN, n INT, big LONG, f FLOAT, d DATE, v DOUBLE) \
         TIMESTAMP(ts) PARTITION BY DAY",
    )
    .await
    .unwrap();
    // Again: a notice, not an error.
    c.batch_execute("CREATE TABLE IF NOT EXISTS m (ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY")
        .await
        .unwrap();
    for day in 10..16 {
        c.execute(
            &format!("INSERT INTO m VALUES ('2024-01-{day}T12:00:00', 'h', true, 1, 2, 1.5, '2024-01-01', 3.5)"),
            &[],
        )
        .await
        .unwrap();
    }
    let total = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>(0);
    assert_eq!(total(c.query("SELECT count(*) FROM m", &[]).await.unwrap()), 6);

    c.batch_execute("ALTER TABLE m DROP PARTITION LIST '2024-01-10', '2024-01-11'")
        .await
        .unwrap();
    assert_eq!(total(c.query("SELECT count(*) FROM m", &[]).await.unwrap()), 4);
    // Only partitions entirely before the bound go: the 13th holds a row after 06:00.
    c.batch_execute("ALTER TABLE m DROP PARTITION WHERE ts < '2024-01-13T06:00:00'")
        .await
        .unwrap();
    let r = c
        .query_one("SELECT count(*), min(ts) = '2024-01-13T12:00:00' FROM m", &[])
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, bool>(1)), (3, true));
    let err = c
        .batch_execute("ALTER TABLE m DROP PARTITION LIST '2024-13-45'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22000", "{err}");

    c.batch_execute("TRUNCATE TABLE m").await.unwrap();
    assert_eq!(
        c.query_one("SELECT count(*) FROM m", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    c.batch_execute("DROP TABLE m").await.unwrap();
    c.batch_execute("DROP TABLE IF EXISTS m").await.unwrap();
    let err = c.query("SELECT * FROM m", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    assert!(
        !root.path().join("db/m").exists(),
        "dropped table folder is gone from db/"
    );

    // Unpartitioned table without a designated timestamp.
    c.batch_execute("CREATE TABLE plain (k VARCHAR, v LONG)").await.unwrap();
    c.execute("INSERT INTO plain VALUES ('a', 1), ('b', NULL)", &[])
        .await
        .unwrap();
    assert!(root.path().join("db/plain/default").is_dir());
    assert_eq!(
        c.query_one("SELECT count(v) FROM plain", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_statements_get_sqlstates_and_the_server_keeps_serving() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (ts TIMESTAMP, v DOUBLE) TIMESTAMP(ts) PARTITION BY DAY")
        .await
        .unwrap();
    let cases: &[(&str, &str)] = &[
        ("SELEC 1", "42601"),
        ("SELECT * FROM missing", "42P01"),
        ("SELECT nope FROM t", "42703"),
        ("CREATE TABLE t (ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY", "42P07"),
        ("CREATE TABLE u (a BLOB)", "0A000"),
        ("CREATE TABLE u (a INT) TIMESTAMP(a) PARTITION BY DAY", "42P16"),
        ("CREATE TABLE u (ts TIMESTAMP) PARTITION BY DAY", "42P16"),
        (
            "CREATE TABLE u (ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY FORTNIGHT",
            "42601",
        ),
        ("CREATE TABLE \"bad/name\" (a INT)", "42602"),
        ("INSERT INTO t VALUES (NULL, 1.0)", "23502"),
        ("INSERT INTO missing VALUES (1)", "42P01"),
        ("DROP TABLE missing", "42P01"),
        ("TRUNCATE TABLE missing", "42P01"),
        ("ALTER TABLE t DROP PARTITION WHERE v > 3", "0A000"),
        ("COPY t FROM '/etc/passwd'", "0A000"),
    ];
    for (sql, code) in cases {
        let err = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(&sqlstate(&err), code, "{sql}: {err}");
    }
    // Nothing half-done is visible and the connection still works.
    assert_eq!(
        c.query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    assert!(!root.path().join("db/u").exists());
    c.execute("INSERT INTO t VALUES ('2024-01-01', 1.0)", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_describes_tables() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE trades (ts TIMESTAMP, symbol SYMBOL, price DOUBLE) TIMESTAMP(ts) PARTITION BY DAY")
        .await
        .unwrap();
    let Some(out) = server.psql(&["-c", "\\dt", "-c", "\\d trades"]) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("trades") && text.contains("table"), "{text}");
    assert!(
        text.contains("timestamp without time zone") && text.contains("double precision"),
        "{text}"
    );
    assert!(
        text.contains("not null"),
        "the designated timestamp is NOT NULL: {text}"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let root = temp_root();
    let opts = Options::default().conf("housekeeping.interval.ms", "soon");
    match Server::try_start(root.path(), opts) {
        Started::Exited { code, stderr } => {
            assert_ne!(code, Some(0));
            assert!(stderr.contains("housekeeping.interval.ms"), "{stderr}");
        }
        Started::Running(_) => panic!("a malformed setting must stop startup"),
    }
    let opts = Options::default().env("STRATA_PG_NET_BIND_TO", "not-an-address");
    match Server::try_start(root.path(), opts) {
        Started::Exited { stderr, .. } => assert!(stderr.contains("STRATA_PG_NET_BIND_TO"), "{stderr}"),
        Started::Running(_) => panic!("a malformed address must stop startup"),
    }
}
