//! kill -9 in the middle of a stream of inserts: every acknowledged row survives, nothing is torn.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::harness::{Options, Server, temp_root};

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_inserts_survive_kill_9() {
    let root = temp_root();
    // Aggressive housekeeping so merges and deletions race with the crash too.
    let opts = Options::default()
        .conf("housekeeping.interval.ms", "20")
        .conf("housekeeping.merge.min.files", "2")
        .conf("housekeeping.orphan.grace.ms", "0");
    let server = Server::start(root.path(), opts.clone());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE ev (ts TIMESTAMP, k LONG) TIMESTAMP(ts) PARTITION BY HOUR")
        .await
        .unwrap();

    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for k in 0u64.. {
                // Out of order over a few hours so several partitions change at once.
                let ts = 1_704_067_200_000_000u64 + (k % 5) * 3_600_000_000 + k;
                let sql = format!(
                    "INSERT INTO ev VALUES (to_timestamp_micros({ts}), {k}), (to_timestamp_micros({}), {k})",
                    ts + 1
                );
                if c.execute(&sql, &[]).await.is_err() {
                    return;
                }
                acked.store(k + 1, Ordering::SeqCst);
            }
        })
    };
    // Let it run, then crash it mid-stream.
    while acked.load(Ordering::SeqCst) < 150 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    server.kill9();
    let _ = writer.await;
    let acknowledged = acked.load(Ordering::SeqCst);

    let server = Server::start(root.path(), opts);
    let c = server.connect().await;
    let r = c
        .query_one("SELECT count(*), count(DISTINCT k), max(k) FROM ev", &[])
        .await
        .unwrap();
    let (rows, distinct, max_k) = (
        r.get::<_, i64>(0) as u64,
        r.get::<_, i64>(1) as u64,
        r.get::<_, i64>(2) as u64,
    );
    // Every acknowledged statement is there, whole; at most the one in flight also made it.
    assert!(
        distinct == acknowledged || distinct == acknowledged + 1,
        "acked {acknowledged}, found {distinct}"
    );
    assert_eq!(rows, distinct * 2, "statements are atomic: both rows or neither");
    assert_eq!(max_k + 1, distinct, "no gaps");
    let missing = c
        .query_one(
            &format!("SELECT {acknowledged} - count(DISTINCT k) FROM ev WHERE k < {acknowledged}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(missing.get::<_, i64>(0), 0);
}
