//! Memory stays bounded whatever the file size: a backup of a database whose
//! table is one data file of more than 1 GB, with the server's peak resident
//! memory (VmHWM) read before and after, then the backup verified.
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, TimestampMicrosecondArray};

use crate::backup::store_opts;
use crate::harness::{Server, temp_root};

const GIB: u64 = 1 << 30;
/// The bound for the whole server during a backup.
const PEAK_LIMIT: u64 = 300 << 20;

/// The server's peak resident set size so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kib * 1024
}

/// A table `big` whose one partition is a single data file of over 1 GiB of
/// incompressible numbers, written through the storage write path and merged
/// by housekeeping.
fn write_big_table(root: &std::path::Path) -> u64 {
    use storage::{Column, ColumnType, HousekeepingSettings, PartitionBy, Storage, SystemClock, TableMeta};
    let s = Storage::open(root, Arc::new(SystemClock), HousekeepingSettings::default(), None).unwrap();
    let mut cols = vec![Column {
        name: "ts".into(),
        ty: ColumnType::Timestamp,
    }];
    cols.extend(["a", "b", "c", "d"].map(|n| Column {
        name: n.into(),
        ty: ColumnType::Long,
    }));
    let meta = TableMeta::new("big", cols, Some("ts".into()), PartitionBy::Year).unwrap();
    let table = s.create_table(meta.clone(), false).unwrap();
    let rows = (GIB + (64 << 20)) as usize / 32;
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let mut noise = |n: usize| -> Arc<Int64Array> {
        Arc::new(Int64Array::from_iter_values((0..n).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as i64
        })))
    };
    let batches: Vec<RecordBatch> = (0..rows)
        .step_by(1 << 20)
        .map(|start| {
            let n = (rows - start).min(1 << 20);
            let ts = TimestampMicrosecondArray::from_iter_values(
                (start..start + n).map(|i| 1_704_067_200_000_000 + i as i64),
            );
            RecordBatch::try_new(
                meta.arrow_schema(),
                vec![Arc::new(ts), noise(n), noise(n), noise(n), noise(n)],
            )
            .unwrap()
        })
        .collect();
    table.append(&batches).unwrap();
    drop(batches);
    // One file per batch; housekeeping merges them into one, as it would on a
    // running server.
    while s.table("big").unwrap().commit().files.len() > 1 {
        assert!(
            s.housekeep().unwrap().partitions_merged > 0,
            "housekeeping merges the small files"
        );
    }
    s.table("big").unwrap().commit().bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_file_over_a_gigabyte_keeps_the_servers_memory_bounded() {
    let (root, store) = (temp_root(), temp_root());
    let bytes = write_big_table(root.path());
    assert!(bytes > GIB, "the data file has {bytes} bytes");
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    let before = peak_rss(server.pid());
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let after_backup = peak_rss(server.pid());
    let verified = c.query_one("VERIFY BACKUP LATEST", &[]).await.unwrap();
    assert_eq!(verified.get::<_, String>("status"), "ok");
    let after_verify = peak_rss(server.pid());
    eprintln!(
        "{bytes} byte file: peak RSS {} MiB before the backup, {} MiB after it, {} MiB after verifying",
        before >> 20,
        after_backup >> 20,
        after_verify >> 20
    );
    assert!(after_backup < PEAK_LIMIT, "backup peak {} MiB", after_backup >> 20);
    assert!(after_verify < PEAK_LIMIT, "verify peak {} MiB", after_verify >> 20);
}
