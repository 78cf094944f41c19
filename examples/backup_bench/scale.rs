//! 11 (issue 16): full backup and restore at the run's size and at
//! `--scale-factor` times it (as many files, each that many times larger),
//! reporting seconds per GB and peak RSS at each size, so that any growth with
//! size shows.
use std::path::Path;

use serde_json::json;

use crate::measure::{MIB, Stat, du};
use crate::{BenchResult, ChildOp, Plan, Report, fs, in_child, open};

/// Figures of one size.
struct AtSize {
    gb: f64,
    backup_s_per_gb: Stat,
    restore_s_per_gb: Stat,
    backup_rss: f64,
    restore_rss: f64,
}

async fn at_size(plan: &Plan, work: &Path, factor: usize) -> BenchResult<AtSize> {
    let root = work.join(format!("scale_{factor}x"));
    {
        let db = open(&root, None).await?;
        crate::data::build_trades(db.storage(), plan.tables, plan.days, plan.rows_per_day * factor)?;
        db.shutdown().await;
    }
    let gb = du(&root.join("db")) as f64 / 1e9;
    let store = work.join(format!("scale_{factor}x_store"));
    let (mut backups, mut restores, mut backup_rss, mut restore_rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.repeat {
        let _ = std::fs::remove_dir_all(&store);
        let done = in_child(ChildOp::Backup, &root, &fs(&store))?;
        backups.push(done.run.secs / gb);
        backup_rss.push(done.peak_rss);
    }
    // The database goes before its restores, so the disk holds at most two copies.
    std::fs::remove_dir_all(&root)?;
    for _ in 0..plan.repeat {
        let target = work.join(format!("scale_{factor}x_restored"));
        let done = in_child(ChildOp::Restore, &target, &fs(&store))?;
        restores.push(done.durable_secs.ok_or("restore: no 'durable_secs'")? / gb);
        restore_rss.push(done.peak_rss);
        std::fs::remove_dir_all(&target)?;
    }
    std::fs::remove_dir_all(&store)?;
    Ok(AtSize {
        gb,
        backup_s_per_gb: Stat::of(&backups),
        restore_s_per_gb: Stat::of(&restores),
        backup_rss: Stat::of(&backup_rss).median,
        restore_rss: Stat::of(&restore_rss).median,
    })
}

pub(crate) async fn scale(plan: &Plan, work: &Path, factor: usize, report: &mut Report) -> BenchResult<()> {
    let base = at_size(plan, work, 1).await?;
    let big = at_size(plan, work, factor).await?;
    let describe = |s: &AtSize| {
        format!(
            "{:.2} GB: backup {:.2} s/GB, peak RSS {:.0} MiB; restore until durable {:.2} s/GB, peak RSS {:.0} MiB",
            s.gb,
            s.backup_s_per_gb.median,
            s.backup_rss / MIB,
            s.restore_s_per_gb.median,
            s.restore_rss / MIB
        )
    };
    report.line(format!(
        "11. scale, files {factor}x larger:\n   1x {}\n   {factor}x {}\n   {factor}x/1x: backup time per GB {:.2}x, RSS {:.2}x; restore time per GB {:.2}x, RSS {:.2}x",
        describe(&base),
        describe(&big),
        big.backup_s_per_gb.median / base.backup_s_per_gb.median,
        big.backup_rss / base.backup_rss,
        big.restore_s_per_gb.median / base.restore_s_per_gb.median,
        big.restore_rss / base.restore_rss,
    ));
    let figures = |s: &AtSize| {
        json!({"gb": s.gb, "backup_seconds_per_gb": s.backup_s_per_gb.json(),
            "restore_seconds_per_gb": s.restore_s_per_gb.json(), "backup_peak_rss_bytes": s.backup_rss,
            "restore_peak_rss_bytes": s.restore_rss})
    };
    report.set(
        "scale",
        json!({"factor": factor, "base": figures(&base), "scaled": figures(&big)}),
    );
    Ok(())
}
