//! 12 (issue 17): commit shipping. Under a steady insert load (100 inserts/s
//! of 500 rows, then one client inserting as fast as it can), a reader follows
//! the log by name as a replica would (a GET for the next object, no listing)
//! and notes when each acknowledged insert became readable in the store: the
//! recovery point (RPO). Also: log and file PUTs per minute loaded and idle,
//! bytes shipped per byte ingested (housekeeping merges on, so their files
//! ship too), and a restore to an instant (a backup before the load plus the
//! log) beside a plain restore of a backup of the same data. On a local
//! folder store and, when s3s-fs is installed, on S3 over loopback.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engine::{Database, Properties, Settings};
use serde_json::json;
use storage::{Column, ColumnType, PartitionBy, TableMeta};

use crate::measure::{Stat, du};
use crate::remote::{S3Server, s3s_fs, strata_store};
use crate::{BenchResult, Plan, Report, fmt_stat, fs, ratio};

const ROWS_PER_INSERT: i64 = 500;

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn open_primary(root: &Path, store: &str) -> BenchResult<Arc<Database>> {
    let conf = [
        ("backup.object.store", store),
        ("replication.role", "primary"),
        // Merges run as they would in production, and ship their files.
        ("housekeeping.interval.ms", "1000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let settings = Settings::from_properties(&Properties::from_sources(conf.into(), Default::default()))?;
    Ok(Database::open(root, settings).await?)
}

/// What one load measured.
struct Load {
    rpo: Stat,
    rpo_p99: f64,
    inserts: usize,
    log_puts_per_min: f64,
    file_puts_per_min: f64,
    ingested_bytes: u64,
    shipped_bytes: u64,
}

/// What a reader following the log saw.
#[derive(Default)]
struct Followed {
    /// Commit micros -> (micros it became readable, is an insert, bytes of its files).
    changes: BTreeMap<i64, (i64, bool, u64)>,
    objects: usize,
    files: usize,
    stored_bytes: u64,
}

/// Follows the log by name from object `seq` until `stop`, noting when each
/// change became readable.
async fn follow(
    store: backup::Store,
    instance: String,
    mut seq: u64,
    stop: Arc<AtomicBool>,
) -> Result<(Followed, u64), backup::BackupError> {
    let mut f = Followed::default();
    loop {
        match backup::follow_log(&store, &instance, seq).await? {
            Some(o) => {
                let at = now_micros();
                f.objects += 1;
                for c in &o.changes {
                    f.stored_bytes += c.added.iter().map(|a| a.stored_bytes).sum::<u64>();
                    f.files += c.added.len();
                    let insert = c.removed.is_empty() && !c.added.is_empty();
                    f.changes
                        .insert(c.micros, (at, insert, c.added.iter().map(|a| a.file.bytes).sum()));
                }
                seq += 1;
            }
            None if stop.load(Ordering::SeqCst) => return Ok((f, seq)),
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// `rate` inserts per second (`None`: as fast as one client goes) for
/// `secs`, the reader starting at log object `seq`; returns the figures and
/// the next log object.
async fn load(db: &Database, store: &str, seq: u64, rate: Option<u32>, secs: u64) -> BenchResult<(Load, u64)> {
    let instance = std::fs::read_to_string(db.storage().db_dir().join(".backup_instance_name"))?
        .trim()
        .to_string();
    let reader = backup::Store::open(store)?;
    let stop = Arc::new(AtomicBool::new(false));
    let follower = tokio::spawn(follow(reader, instance, seq, stop.clone()));
    let started = Instant::now();
    let mut acks = Vec::new();
    let mut n = 0i64;
    while started.elapsed() < Duration::from_secs(secs) {
        let before = now_micros();
        let first = 1_704_067_200_000_000i64 + n * ROWS_PER_INSERT * 1_000_000;
        let sql = format!(
            "INSERT INTO ticks SELECT to_timestamp_micros({first} + value * 1000000), value FROM generate_series(0, {})",
            ROWS_PER_INSERT - 1
        );
        db.context().sql(&sql).await?.collect().await?;
        acks.push((before, now_micros()));
        n += 1;
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Everything acknowledged goes up within the window; then the reader stops.
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.replication_status().pending_commits > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let (followed, next) = follower.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let mut rpo = Vec::new();
    let mut ingested = 0;
    for (before, ack) in &acks {
        let (seen_at, _, bytes) = followed
            .changes
            .range(before..=ack)
            .map(|(_, v)| *v)
            .find(|(_, insert, _)| *insert)
            .ok_or("an acknowledged insert never reached the log")?;
        ingested += bytes;
        rpo.push((seen_at - ack).max(0) as f64 / 1e6);
    }
    let minutes = elapsed / 60.0;
    let figures = Load {
        rpo: Stat::of(&rpo),
        rpo_p99: Stat::quantile(&rpo, 0.99),
        inserts: acks.len(),
        log_puts_per_min: followed.objects as f64 / minutes,
        file_puts_per_min: followed.files as f64 / minutes,
        ingested_bytes: ingested,
        shipped_bytes: followed.stored_bytes,
    };
    Ok((figures, next))
}

pub(crate) async fn shipping(plan: &Plan, work: &Path, report: &mut Report) -> BenchResult<()> {
    let secs = if plan.days < 90 { 10 } else { 30 };
    let s3 = match s3s_fs() {
        Some(program) => Some(S3Server::start(&program, work.join("ship_s3"))?),
        None => None,
    };
    let mut stores = vec![("local folder", fs(&work.join("ship_store")))];
    if let Some(server) = &s3 {
        stores.push((
            "S3 (s3s-fs, loopback)",
            strata_store(server.port, &server.bucket("ship")?),
        ));
    }
    let mut figures = serde_json::Map::new();
    for (kind, store) in stores {
        let root = work.join(format!("ship_root_{}", figures.len()));
        let db = open_primary(&root, &store).await?;
        let columns =
            [("ts", ColumnType::Timestamp), ("v", ColumnType::Long)].map(|(name, ty)| Column { name: name.into(), ty });
        let meta = TableMeta::new("ticks", columns.into(), Some("ts".into()), PartitionBy::Hour)?;
        db.storage().create_table(meta, false)?;
        let first_backup = db.backup_start(true).await?;
        // Idle: once the table's creation is shipped, nothing commits and nothing is written.
        while db.replication_status().state != "caught up" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = du(&work.join("ship_store")) + s3.as_ref().map_or(0, |s| du(&s.dir));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = du(&work.join("ship_store")) + s3.as_ref().map_or(0, |s| du(&s.dir));
        let (steady, next) = load(&db, &store, 1, Some(100), secs).await?;
        let (heavy, _) = load(&db, &store, next, None, secs).await?;
        let end = db.backup_start(true).await?;
        db.shutdown().await;
        // Restores of the same data: the backup at the end, and the instant just
        // before it from the first backup and the log.
        let end_micros = backup::parse_backup_timestamp(&end)?;
        let plain = restore_time(&store, Some(&end)).await?;
        let instant = backup::layout::format_timestamp(end_micros - 1);
        let pitr = restore_time(&store, Some(&instant)).await?;
        let line = format!(
            "12. commit shipping to a {kind} (window 1 s): idle 5 s wrote {} bytes;\n   \
             100 inserts/s of {ROWS_PER_INSERT} rows: RPO {} (p99 {:.3} s), {:.0} log PUTs/min, {:.0} file PUTs/min, \
             {:.2} bytes shipped per byte ingested;\n   \
             as fast as one client goes ({} inserts in {secs} s): RPO {} (p99 {:.3} s), {:.0} log PUTs/min;\n   \
             restore to an instant (backup {first_backup} + log) {:.3} s beside the backup of the same data {:.3} s -> {}",
            after.saturating_sub(before),
            fmt_stat(steady.rpo, "s"),
            steady.rpo_p99,
            steady.log_puts_per_min,
            steady.file_puts_per_min,
            steady.shipped_bytes as f64 / steady.ingested_bytes.max(1) as f64,
            heavy.inserts,
            fmt_stat(heavy.rpo, "s"),
            heavy.rpo_p99,
            heavy.log_puts_per_min,
            pitr,
            plain,
            ratio(pitr, plain)
        );
        report.line(line);
        figures.insert(
            kind.to_string(),
            json!({
                "idle_bytes_written": after.saturating_sub(before),
                "steady": {"rpo_seconds": steady.rpo.json(), "rpo_p99_seconds": steady.rpo_p99, "inserts": steady.inserts,
                    "log_puts_per_min": steady.log_puts_per_min, "file_puts_per_min": steady.file_puts_per_min,
                    "shipped_per_ingested": steady.shipped_bytes as f64 / steady.ingested_bytes.max(1) as f64},
                "heavy": {"rpo_seconds": heavy.rpo.json(), "rpo_p99_seconds": heavy.rpo_p99, "inserts": heavy.inserts,
                    "log_puts_per_min": heavy.log_puts_per_min, "file_puts_per_min": heavy.file_puts_per_min},
                "restore_instant_seconds": pitr, "restore_backup_seconds": plain,
            }),
        );
    }
    report.set("shipping", serde_json::Value::Object(figures));
    Ok(())
}

/// Seconds to restore `timestamp` from `store` into a fresh root, until durable.
async fn restore_time(store: &str, timestamp: Option<&str>) -> BenchResult<f64> {
    let root = tempfile::tempdir()?;
    let store = backup::Store::open(store)?;
    let selector = backup::Selector {
        instance: None,
        timestamp: timestamp.map(str::to_string),
    };
    let started = Instant::now();
    let (_, unsynced) = backup::restore_database(&store, &selector, root.path(), &|_, _| {}).await?;
    unsynced.make_durable()?;
    Ok(started.elapsed().as_secs_f64())
}
