//! The server's figures in Prometheus' text format, computed when scraped: from
//! the backup history (loaded from the store at start, so "last success" survives
//! a restart), the checkpoint state, commit shipping, an instant restore's
//! progress and the store's operation counts.
//! docs/operations.md lists every metric and ready alert rules.
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::backups::Backups;
use crate::checkpoint::Checkpoints;
use crate::error::{EngineError, Result};
use crate::hydration::RestoreStatus;
use crate::replication::ReplicationStatus;

fn metric_err(e: prometheus::Error) -> EngineError {
    EngineError::Task(format!("metrics: {e}"))
}

/// One scrape's registry: each figure is registered with its value.
struct Scrape(Registry);

impl Scrape {
    fn gauge(&self, name: &str, help: &str, value: f64) -> Result<()> {
        let g = prometheus::Gauge::new(name, help).map_err(metric_err)?;
        g.set(value);
        self.0.register(Box::new(g)).map_err(metric_err)
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> Result<()> {
        let c = IntCounter::new(name, help).map_err(metric_err)?;
        c.inc_by(value);
        self.0.register(Box::new(c)).map_err(metric_err)
    }
}

fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// Every metric, in Prometheus' text exposition format.
pub(crate) fn render(
    backups: &Backups,
    checkpoints: &Checkpoints,
    replication: &ReplicationStatus,
    restore: &RestoreStatus,
    now_micros: i64,
) -> Result<String> {
    let s = Scrape(Registry::new());
    s.gauge(
        "strata_backup_running",
        "1 while a backup runs, else 0",
        if backups.is_running() { 1.0 } else { 0.0 },
    )?;
    s.counter(
        "strata_backup_failures_total",
        "Backups that failed (counted from the store's history at start)",
        backups.failures(),
    )?;
    // Absent until a backup has ever completed: alert on absent() as well.
    if let Some(last) = backups.last_success() {
        let ended = last.end_micros.unwrap_or(last.backup_micros);
        s.gauge(
            "strata_backup_last_success_timestamp_seconds",
            "When the newest complete backup ended (Unix time)",
            seconds(ended),
        )?;
        s.gauge(
            "strata_backup_last_success_age_seconds",
            "Seconds since the newest complete backup ended",
            seconds(now_micros.saturating_sub(ended).max(0)),
        )?;
        s.gauge(
            "strata_backup_last_duration_seconds",
            "How long the newest complete backup took",
            seconds(ended.saturating_sub(last.start_micros).max(0)),
        )?;
        s.gauge(
            "strata_backup_last_bytes_uploaded",
            "Bytes the newest complete backup uploaded (incremental: only what the store lacked)",
            last.bytes_uploaded as f64,
        )?;
    }
    let verifications = backups.verifications();
    s.counter(
        "strata_backup_verify_corrupt_total",
        "Verifications since start that found a file that would not restore",
        verifications.corrupt_found(),
    )?;
    // Absent until a verification has ever found a backup sound.
    if let Some(verified) = verifications.last_success_micros() {
        s.gauge(
            "strata_backup_verify_last_success_timestamp_seconds",
            "When the newest verification that found every file sound ended (Unix time)",
            seconds(verified),
        )?;
        s.gauge(
            "strata_backup_verify_last_success_age_seconds",
            "Seconds since the newest verification that found every file sound ended",
            seconds(now_micros.saturating_sub(verified).max(0)),
        )?;
    }
    let checkpoint = checkpoints.status();
    s.gauge(
        "strata_checkpoint_open",
        "1 while a CHECKPOINT is open, else 0",
        if checkpoint.in_progress { 1.0 } else { 0.0 },
    )?;
    s.gauge(
        "strata_checkpoint_age_seconds",
        "Seconds the open checkpoint has been open (0 when none)",
        checkpoint
            .started_at_micros
            .map_or(0.0, |t| seconds(now_micros.saturating_sub(t).max(0))),
    )?;
    s.gauge(
        "strata_checkpoint_pinned_bytes",
        "Bytes of files only the open checkpoint still holds",
        checkpoint.pinned_bytes as f64,
    )?;
    // Only while commits are shipped: alert on the lag and on failing.
    if replication.role == "primary" {
        s.gauge(
            "strata_replication_lag_seconds",
            "Age of the oldest commit not yet in the store (0 when caught up)",
            replication.lag_ms as f64 / 1e3,
        )?;
        s.gauge(
            "strata_replication_pending_commits",
            "Commits waiting to be shipped",
            replication.pending_commits as f64,
        )?;
        s.gauge(
            "strata_replication_failing",
            "1 while shipping to the store fails (see replication_status() last_error), else 0",
            if replication.state == "failing" { 1.0 } else { 0.0 },
        )?;
        if let Some(last) = replication.last_shipped_micros {
            s.gauge(
                "strata_replication_last_shipped_timestamp_seconds",
                "Commit time of the newest commit in the store (Unix time)",
                seconds(last),
            )?;
        }
    }
    // Only while an instant restore's files arrive: page on failing.
    if matches!(restore.state, "hydrating" | "failed") {
        s.gauge(
            "strata_restore_bytes_remaining",
            "Bytes of the instant restore not yet local",
            restore.bytes_total.saturating_sub(restore.bytes_local) as f64,
        )?;
        s.gauge(
            "strata_restore_failing",
            "1 while a file of the instant restore keeps failing (see restore_status() last_error), else 0",
            if restore.state == "failed" { 1.0 } else { 0.0 },
        )?;
    }
    if let Some(ops) = backups.store_counts() {
        let by_kind = IntCounterVec::new(
            Opts::new(
                "strata_store_operations_total",
                "Object store operations since start, by kind (retries included)",
            ),
            &["kind"],
        )
        .map_err(metric_err)?;
        for (kind, n) in [
            ("put", ops.puts),
            ("get", ops.gets),
            ("list", ops.lists),
            ("delete", ops.deletes),
        ] {
            by_kind.with_label_values(&[kind]).inc_by(n);
        }
        s.0.register(Box::new(by_kind)).map_err(metric_err)?;
        s.counter(
            "strata_store_retries_total",
            "Object store operations tried again after a transient failure",
            ops.retries,
        )?;
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&s.0.gather(), &mut out).map_err(metric_err)?;
    String::from_utf8(out).map_err(|e| EngineError::Task(format!("metrics: {e}")))
}
