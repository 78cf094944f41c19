//! Background housekeeping merges small files and removes replaced ones, without changing data.
use std::time::{Duration, Instant};

use crate::harness::{Options, Server, table_digest, temp_root};

fn parquet_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn small_files_are_merged_and_replaced_files_deleted() {
    let root = temp_root();
    let opts = Options::default()
        .conf("housekeeping.interval.ms", "50")
        .conf("housekeeping.merge.min.files", "2")
        .conf("housekeeping.orphan.grace.ms", "200");
    let server = Server::start(root.path(), opts);
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE t (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY")
        .await
        .unwrap();
    for i in 0..8 {
        c.execute(&format!("INSERT INTO t VALUES ('2024-05-01T0{i}:00:00', {i})"), &[])
            .await
            .unwrap();
    }
    let before = table_digest(&c, "t").await;
    let day = root.path().join("db/t/2024-05-01");
    let deadline = Instant::now() + Duration::from_secs(30);
    while parquet_files(&day) != 1 {
        assert!(
            Instant::now() < deadline,
            "expected one merged file, found {}",
            parquet_files(&day)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(table_digest(&c, "t").await, before);
    let commit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("db/t/_commit.json")).unwrap()).unwrap();
    assert_eq!(commit["files"].as_array().unwrap().len(), 1);
    assert_eq!(commit["files"][0]["rows"], 8);
}
