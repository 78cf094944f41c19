//! Writes and reads through real clients, across restarts.
use futures::SinkExt;

use crate::harness::{Options, Server, table_digest, temp_root};

const CREATE_TRADES: &str =
    "CREATE TABLE trades (ts TIMESTAMP, symbol SYMBOL, price DOUBLE, amount DOUBLE) TIMESTAMP(ts) PARTITION BY DAY";

#[tokio::test(flavor = "multi_thread")]
async fn insert_out_of_order_query_and_restart() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute(CREATE_TRADES).await.unwrap();
    let n = c
        .execute(
            "INSERT INTO trades VALUES ('2024-01-16T10:00:00', 'BTC', 42000.5, 1.0), ('2024-01-15T09:00:00', 'ETH', 2500.25, 2.0), \
             ('2024-01-16T08:00:00', 'BTC', 41000.0, 0.5)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    // A late row for an old day goes into that day's partition.
    c.execute(
        "INSERT INTO trades VALUES ('2024-01-15T23:59:59.999999', 'SOL', 100.0, 3.0)",
        &[],
    )
    .await
    .unwrap();
    let dirs: Vec<String> = std::fs::read_dir(root.path().join("db/trades"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let mut sorted = dirs.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["2024-01-15", "2024-01-16"]);

    let row = c
        .query_one(
            "SELECT count(*), sum(amount) FROM trades WHERE ts >= '2024-01-15' AND ts < '2024-01-16'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, f64>(1), 5.0);

    // Extended protocol with parameters.
    let rows = c
        .query(
            "SELECT symbol, price FROM trades WHERE symbol = $1 ORDER BY ts",
            &[&"BTC"],
        )
        .await
        .unwrap();
    let prices: Vec<f64> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(prices, vec![41000.0, 42000.5]);

    let before = table_digest(&c, "trades").await;
    assert_eq!(before.0, 4);
    drop(c);
    assert_eq!(server.stop(), Some(0), "clean shutdown exits 0");

    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    assert_eq!(table_digest(&c, "trades").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_select_generate_series_and_prune_by_day() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute(CREATE_TRADES).await.unwrap();
    // 10 days, one row a minute.
    let n = c
        .execute(
            "INSERT INTO trades SELECT to_timestamp_micros(1704067200000000 + value * 60000000), \
             CASE value % 3 WHEN 0 THEN 'A' WHEN 1 THEN 'B' ELSE 'C' END, value * 1.0, 1.0 FROM generate_series(0, 14399)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 14_400);
    let one_day = c
        .query_one(
            "SELECT count(*) FROM trades WHERE ts >= '2024-01-03' AND ts < '2024-01-04'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(one_day.get::<_, i64>(0), 1440);

    let physical = explain(
        &c,
        "SELECT count(*) FROM trades WHERE ts >= '2024-01-03' AND ts < '2024-01-04'",
    )
    .await;
    let scanned: Vec<&str> = physical.matches(".parquet").collect();
    assert_eq!(scanned.len(), 1, "one day's query must open one file:\n{physical}");
    assert!(physical.contains("/2024-01-03/"), "{physical}");
    let all = explain(&c, "SELECT count(*) FROM trades").await;
    assert!(all.contains("/2024-01-10/"), "an unfiltered query sees every day");
}

/// The plan text of `EXPLAIN sql`.
async fn explain(c: &tokio_postgres::Client, sql: &str) -> String {
    let lines: Vec<String> = c
        .simple_query(&format!("EXPLAIN {sql}"))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
            _ => None,
        })
        .collect();
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_from_stdin_with_tokio_postgres_and_psql() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute(CREATE_TRADES).await.unwrap();

    let sink = c
        .copy_in("COPY trades FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .unwrap();
    let data = "ts,symbol,price,amount\n2024-02-02T00:00:01Z,A,1.5,2\n2024-02-01 00:00:00,B,2.5,\n";
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows, 2);
    let r = c
        .query_one(
            "SELECT count(*), count(amount) FROM trades WHERE ts < '2024-02-02'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, i64>(0), r.get::<_, i64>(1)),
        (1, 0),
        "empty CSV field is NULL"
    );

    // Bad data: nothing from that COPY becomes visible.
    let sink = c.copy_in("COPY trades FROM STDIN WITH (FORMAT csv)").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from("2024-02-03T00:00:00,C,1,1\nnot-a-time,C,1,1\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "22P04", "{err}");
    let total = c.query_one("SELECT count(*) FROM trades", &[]).await.unwrap();
    assert_eq!(total.get::<_, i64>(0), 2);

    // psql's \copy, as a user would type it.
    let csv = root.path().join("load.csv");
    let mut body = String::from("ts,symbol,price,amount\n");
    for i in 0..500 {
        body.push_str(&format!("2024-03-{:02}T12:00:00,S{},{}.0,1\n", 1 + i % 28, i % 5, i));
    }
    std::fs::write(&csv, body).unwrap();
    let cmd = format!("\\copy trades FROM '{}' WITH (FORMAT csv, HEADER true)", csv.display());
    if let Some(out) = server.psql(&["-c", &cmd]) {
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "COPY 500");
        let total = c.query_one("SELECT count(*) FROM trades", &[]).await.unwrap();
        assert_eq!(total.get::<_, i64>(0), 502);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_files_are_plain_parquet_readable_by_other_tools() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    c.batch_execute(CREATE_TRADES).await.unwrap();
    c.execute(
        "INSERT INTO trades VALUES ('2024-01-15T10:00:00', 'BTC', 1.5, 2.0), ('2024-01-15T11:00:00', 'ETH', 2.5, 3.0)",
        &[],
    )
    .await
    .unwrap();
    let day = root.path().join("db/trades/2024-01-15");
    let file = std::fs::read_dir(&day).unwrap().flatten().next().unwrap().path();
    let script = format!(
        "import pyarrow.parquet as pq; t = pq.read_table('{}'); print(t.num_rows, sum(t.column('price').to_pylist()), sorted(t.column('symbol').to_pylist()))",
        file.display()
    );
    match std::process::Command::new("python3").args(["-c", &script]).output() {
        Ok(out) if out.status.success() => {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2 4.0 ['BTC', 'ETH']");
        }
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("No module named 'pyarrow'"),
                "pyarrow could not read the file: {err}"
            );
            crate::harness::missing_tool("pyarrow (Python)");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => crate::harness::missing_tool("python3"),
        Err(e) => panic!("python3: {e}"),
    }
}

/// The README's run command, `strata serve --demo`, in a fresh folder: the default
/// root is relative (`./strata_root`), and queries and a backup into the default
/// store (`ROOT/backups`) work from it.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_run_command_serves_the_demo_from_its_relative_default_root() {
    let dir = temp_root();
    let opts = Options {
        wrapper: vec![
            "sh".into(),
            "-c".into(),
            format!("cd '{}' && exec \"$0\" serve --demo", dir.path().display()),
        ],
        ..Options::default()
    };
    let root = dir.path().join("strata_root");
    let server = Server::start(&root, opts);
    let c = server.connect().await;
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT symbol) FROM trades WHERE ts >= '2025-01-02' AND ts < '2025-01-03'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1440, 4));
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    assert!(root.join("backups").is_dir(), "the default store is ROOT/backups");
}
