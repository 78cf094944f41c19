//! Clients that check who they talk to: the PostgreSQL version we announce, and
//! SQLAlchemy 2 + psycopg 3 + pandas end to end.
use crate::harness::{Options, Server, temp_root};

/// The first column of the first row a simple query returns.
async fn simple_value(c: &tokio_postgres::Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

#[tokio::test(flavor = "multi_thread")]
async fn version_and_server_version_look_like_postgresql_16() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let c = server.connect().await;
    for sql in ["SELECT version()", "SELECT pg_catalog.version()"] {
        let simple = simple_value(&c, sql).await;
        let extended: String = c.query_one(sql, &[]).await.unwrap().get(0);
        assert_eq!(simple, extended, "{sql}");
        assert!(simple.starts_with("PostgreSQL 16.4 "), "{sql}: {simple}");
        assert!(
            simple.contains(&format!("Strata {}", env!("CARGO_PKG_VERSION"))),
            "{sql}: {simple}"
        );
    }
    for (sql, want) in [("SHOW server_version", "16.4"), ("SHOW server_version_num", "160004")] {
        assert_eq!(simple_value(&c, sql).await, want, "{sql} (simple protocol)");
        let row = c.query_one(sql, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), want, "{sql} (extended protocol)");
        assert_eq!(row.columns()[0].name(), &sql[5..], "{sql}: column name");
    }
    // Other settings still come from datafusion-postgres.
    assert_eq!(simple_value(&c, "SHOW search_path").await, "public");
}

/// What `sqlalchemy_client.py` prints against a fresh server.
const SQLALCHEMY_EXPECTED: &str = "\
server_version_info 16.4
default_schema public
parameter_status 16.4 160004
count 2
tables ['t']
columns ['ts', 'sym', 'price']
row 2024-01-15T10:00:00 BTC 42000.5
row 2024-01-16T11:30:00 ETH 2500.25";

/// SQLAlchemy's PostgreSQL dialect (so pandas `read_sql`, Superset, Airflow):
/// connect, our DDL, inserts with parameters, reflection, and `read_sql`.
#[tokio::test(flavor = "multi_thread")]
async fn sqlalchemy_psycopg_and_pandas_connect_reflect_and_read() {
    let root = temp_root();
    let server = Server::start(root.path(), Options::default());
    let script = root.path().join("sqlalchemy_client.py");
    std::fs::write(&script, include_str!("sqlalchemy_client.py")).unwrap();
    let out = match std::process::Command::new("python3")
        .arg(&script)
        .arg(server.port.to_string())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return crate::harness::missing_tool("python3"),
        Err(e) => panic!("python3: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let missing = ["sqlalchemy", "psycopg", "pandas"]
            .into_iter()
            .find(|m| stderr.contains(&format!("No module named '{m}'")));
        if let Some(m) = missing {
            return crate::harness::missing_tool(&format!(
                "the Python package '{m}' (python3 -m pip install 'sqlalchemy>=2' 'psycopg[binary]>=3' pandas)"
            ));
        }
        panic!(
            "the SQLAlchemy script failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
            server.stderr()
        );
    }
    assert_eq!(stdout.trim(), SQLALCHEMY_EXPECTED, "stderr:\n{stderr}");
}
