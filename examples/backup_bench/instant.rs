//! Item 13: instant restore (`backup.restore.mode=instant`). From the open of
//! an empty root with the trigger: the time to the first answered query and
//! to every file local, beside a full restore of the same backup measured in
//! the same run (until its files are durable, as a hydrated file is); and, in
//! another run of each, a "last hour" query's latency while files arrive and after.
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::measure::{self, Stat, Timer};
use crate::{BenchResult, ChildOp, Plan, Report, fmt_stat, fs, in_child, open};

/// The newest hour of the first table: what people look at after a restore.
fn last_hour(plan: &Plan) -> String {
    let end = crate::data::FIRST_DAY_MICROS + plan.days * crate::data::DAY_MICROS;
    format!(
        "SELECT count(*), avg(price) FROM trades_0 WHERE ts >= to_timestamp_micros({})",
        end - 3_600_000_000
    )
}

/// Opens an empty root `name` beside the store with an instant-restore
/// trigger, from a cold page cache; the timer starts before the open.
async fn start(store: &Path, name: &str) -> BenchResult<(std::sync::Arc<engine::Database>, std::path::PathBuf, Timer)> {
    let target = store.with_file_name(name);
    std::fs::create_dir_all(&target)?;
    std::fs::write(
        target.join(engine::BACKUP_RESTORE_TRIGGER),
        "backup.restore.mode=instant\n",
    )?;
    measure::settle_cold();
    let timer = Timer::start();
    let db = open(&target, Some(&fs(store))).await?;
    Ok((db, target, timer))
}

async fn latency_ms(db: &engine::Database, sql: &str) -> BenchResult<f64> {
    let t = Instant::now();
    db.context().sql(sql).await?.collect().await?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

pub(crate) async fn instant(plan: &Plan, store: &Path, db_bytes: f64, report: &mut Report) -> BenchResult<()> {
    let sql = last_hour(plan);
    let (mut first, mut complete, mut during, mut after) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..plan.repeat {
        // Alone: the time to every file local.
        let (db, target, timer) = start(store, &format!("instant_{r}")).await?;
        db.context().sql(&sql).await?.collect().await?;
        first.push(timer.lap().secs);
        while db.restore_status().state != "complete" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        complete.push(timer.stop().secs);
        for _ in 0..50 {
            after.push(latency_ms(&db, &sql).await?);
        }
        db.shutdown().await;
        std::fs::remove_dir_all(&target)?;
        // Queried all along: the latency while files arrive.
        let (db, target, _) = start(store, &format!("instant_q{r}")).await?;
        while db.restore_status().state != "complete" {
            during.push(latency_ms(&db, &sql).await?);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        db.shutdown().await;
        std::fs::remove_dir_all(&target)?;
    }
    let mut full = Vec::new();
    for r in 0..plan.repeat {
        let target = store.with_file_name(format!("full_{r}"));
        let done = in_child(ChildOp::Restore, &target, &fs(store))?;
        full.push(done.durable_secs.ok_or("restore: no 'durable_secs'")?);
        std::fs::remove_dir_all(&target)?;
    }
    let (first, complete, full) = (Stat::of(&first), Stat::of(&complete), Stat::of(&full));
    let rate = |secs: f64| db_bytes / 1e6 / secs;
    let (during_p50, during_p99) = (Stat::quantile(&during, 0.5), Stat::quantile(&during, 0.99));
    let (after_p50, after_p99) = (Stat::quantile(&after, 0.5), Stat::quantile(&after, 0.99));
    report.line(format!(
        "13. instant restore of {:.0} MB: first query answered after {}; every file local after {} ({:.0} MB/s, \
         {:.2}x the rate of a full restore until durable, {}); 'last hour' query p50/p99 {:.1}/{:.1} ms while \
         files arrive (another run, queried every 20 ms: {} samples), {:.1}/{:.1} ms after",
        db_bytes / 1e6,
        fmt_stat(first, "s"),
        fmt_stat(complete, "s"),
        rate(complete.median),
        full.median / complete.median,
        fmt_stat(full, "s"),
        during_p50,
        during_p99,
        during.len(),
        after_p50,
        after_p99
    ));
    report.set(
        "instant_restore",
        json!({
            "database_bytes": db_bytes,
            "first_query_seconds": first.json(),
            "complete_seconds": complete.json(),
            "full_restore_durable_seconds": full.json(),
            "rate_ratio_to_full": full.median / complete.median,
            "last_hour_ms_during": {"p50": during_p50, "p99": during_p99, "samples": during.len()},
            "last_hour_ms_after": {"p50": after_p50, "p99": after_p99, "samples": after.len()},
        }),
    );
    Ok(())
}
