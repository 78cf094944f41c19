//! Retention: keep the latest N complete backups and, by calendar (GFS), the
//! newest of each of the last N days, ISO weeks and months that have one; delete
//! the other manifests, their history, and then every object no remaining
//! manifest references; and `DROP BACKUP`, the same for one chosen backup.
//!
//! Called by the backup task after its own manifest is written, or by `DROP
//! BACKUP` when no backup runs (the engine holds one lock for both), so no
//! backup is uploading or reusing objects this cleanup could mistake for garbage. Every delete goes through the store's
//! retries; an object already gone counts as deleted, so a cleanup cut short is
//! simply finished by the next one.
use std::collections::HashSet;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone};

use crate::error::{BackupError, Result};
use crate::layout::{
    Folder, Object, format_timestamp, history_object, history_of, micros_of, tree_of_object, verification_of,
};
use crate::manifest::Manifest;
use crate::store::Store;

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub manifests_deleted: usize,
    pub objects_deleted: usize,
    /// Stored bytes of the deleted objects.
    pub bytes_deleted: u64,
}

/// The backups a cleanup keeps and those it deletes (micros, newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupPlan {
    keep: Vec<i64>,
    doomed: Vec<i64>,
    /// History records older than this go too (those of failed backups among
    /// them), except those of kept backups.
    history_before: i64,
    grace_micros: i64,
}

impl CleanupPlan {
    /// Whether the history record of the backup at `micros` goes.
    pub fn deletes_history(&self, micros: i64) -> bool {
        self.doomed.contains(&micros) || (micros < self.history_before && !self.keep.contains(&micros))
    }

    /// Deletes no data object written in the last `grace_micros`: commit
    /// shipping uploads a commit's files before the log object that names
    /// them, and a cleanup in between must not take them for garbage.
    pub fn sparing_new_objects(self, grace_micros: i64) -> Self {
        Self { grace_micros, ..self }
    }
}

/// `backup.cleanup.keep.*`: which complete backups retention keeps. A backup is
/// kept when any rule keeps it.
///
/// A calendar rule counts the days (weeks, months) that *have* a backup, as
/// restic's `--keep-daily` does, not the calendar back from today: when backups
/// stop for a while, the older dailies are kept rather than all aged out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The newest N (at least 1: the backup just written is always kept).
    pub latest: usize,
    /// The newest backup of each of the last N days with a backup (0: off).
    pub daily: usize,
    /// The same per ISO week (Monday to Sunday).
    pub weekly: usize,
    /// The same per calendar month.
    pub monthly: usize,
    /// The time zone days, weeks and months are counted in (`backup.schedule.tz`).
    pub tz: chrono_tz::Tz,
    /// Data objects written this recently are never deleted (see
    /// [`CleanupPlan::sparing_new_objects`]).
    pub new_object_grace_micros: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            latest: 5,
            daily: 0,
            weekly: 0,
            monthly: 0,
            tz: chrono_tz::UTC,
            new_object_grace_micros: 0,
        }
    }
}

/// The rules that keep one backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptBy {
    pub latest: bool,
    pub daily: bool,
    pub weekly: bool,
    pub monthly: bool,
}

impl KeptBy {
    /// `latest,daily`, ...; `None` when no rule keeps the backup.
    pub fn describe(&self) -> Option<String> {
        let rules = [
            (self.latest, "latest"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
        ];
        let names: Vec<&str> = rules.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
        (!names.is_empty()).then(|| names.join(","))
    }

    fn any(&self) -> bool {
        self.latest || self.daily || self.weekly || self.monthly
    }
}

impl Retention {
    /// The rules keeping each of `complete` (micros, newest first).
    pub fn kept_by(&self, complete: &[i64]) -> Vec<KeptBy> {
        let mut kept = vec![KeptBy::default(); complete.len()];
        for k in kept.iter_mut().take(self.latest.max(1)) {
            k.latest = true;
        }
        let days: Vec<NaiveDate> = complete
            .iter()
            .map(|m| {
                let utc = DateTime::from_timestamp_micros(*m).unwrap_or_default();
                self.tz.from_utc_datetime(&utc.naive_utc()).date_naive()
            })
            .collect();
        mark_newest_per_period(&days, self.daily, |d| *d, &mut kept, |k| k.daily = true);
        mark_newest_per_period(&days, self.weekly, |d| d.iso_week(), &mut kept, |k| k.weekly = true);
        mark_newest_per_period(
            &days,
            self.monthly,
            |d| (d.year(), d.month()),
            &mut kept,
            |k| k.monthly = true,
        );
        kept
    }

    /// What a cleanup over `complete` (micros, newest first) deletes; `None`
    /// when every backup is kept.
    pub fn plan(&self, complete: &[i64]) -> Option<CleanupPlan> {
        let kept_by = self.kept_by(complete);
        let (keep, doomed): (Vec<_>, Vec<_>) = complete.iter().zip(&kept_by).partition(|(_, k)| k.any());
        if doomed.is_empty() {
            return None;
        }
        let latest = self.latest.max(1).min(complete.len());
        Some(CleanupPlan {
            keep: keep.into_iter().map(|(m, _)| *m).collect(),
            doomed: doomed.into_iter().map(|(m, _)| *m).collect(),
            history_before: complete[latest - 1],
            grace_micros: self.new_object_grace_micros,
        })
    }
}

/// Marks, in `kept`, the first (newest) backup of each of the first `n`
/// distinct periods of `days` (newest first).
fn mark_newest_per_period<K: PartialEq>(
    days: &[NaiveDate],
    n: usize,
    period: impl Fn(&NaiveDate) -> K,
    kept: &mut [KeptBy],
    mark: impl Fn(&mut KeptBy),
) {
    let mut seen: Option<K> = None;
    let mut periods = 0;
    for (day, k) in days.iter().zip(kept.iter_mut()) {
        let p = period(day);
        if seen.as_ref() == Some(&p) {
            continue;
        }
        periods += 1;
        if periods > n {
            return;
        }
        mark(k);
        seen = Some(p);
    }
}

/// Micros of every complete backup (those with a manifest), newest first.
pub async fn complete_backups(store: &Store, instance: &str) -> Result<Vec<i64>> {
    let mut all: Vec<i64> = store
        .list(instance, Folder::Manifests)
        .await?
        .iter()
        .filter_map(|m| micros_of(&m.name))
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    Ok(all)
}

/// Refuses `wanted` (shown to the user as `shown`) unless it is one of the
/// `complete` backups of `instance`; the error lists those that are.
pub(crate) fn check_complete(instance: &str, shown: &str, wanted: i64, complete: &[i64]) -> Result<()> {
    if complete.contains(&wanted) {
        return Ok(());
    }
    let list: Vec<String> = complete.iter().map(|m| format_timestamp(*m)).collect();
    Err(BackupError::NotFound(format!(
        "no complete backup at {shown} in instance '{instance}'; complete backups: {}",
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    )))
}

/// Reads and checks one manifest.
pub async fn read_manifest(store: &Store, instance: &str, micros: i64) -> Result<Manifest> {
    let object = Object::Manifest(micros);
    let bytes = store.read(instance, object).await?;
    Manifest::parse(store.key_of(instance, object).as_ref(), &bytes)
}

/// What a cleanup by `retention` would delete in the store now; `None` when it
/// would delete nothing.
pub async fn plan_cleanup(store: &Store, instance: &str, retention: &Retention) -> Result<Option<CleanupPlan>> {
    Ok(retention.plan(&complete_backups(store, instance).await?))
}

/// What `DROP BACKUP` of the complete backup at `micros` deletes: its manifest,
/// its history record, and the objects no other backup references.
pub async fn plan_drop(store: &Store, instance: &str, micros: i64) -> Result<CleanupPlan> {
    let backups = complete_backups(store, instance).await?;
    check_complete(instance, &format_timestamp(micros), micros, &backups)?;
    Ok(CleanupPlan {
        keep: backups.into_iter().filter(|m| *m != micros).collect(),
        doomed: vec![micros],
        history_before: i64::MIN,
        grace_micros: 0,
    })
}

/// Deletes what `plan` names: the old manifests first (from then on those
/// backups no longer exist), their history and verification records, the
/// commit log before the oldest kept backup, then unreferenced objects.
pub async fn cleanup(store: &Store, instance: &str, plan: &CleanupPlan) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let mut referenced = HashSet::new();
    let mut oldest_kept: Option<i64> = None;
    // Listed before the log is read: an object a shipper puts up after this is not a candidate.
    let listed_files = store.list(instance, Folder::Files).await?;
    let started = chrono::Utc::now().timestamp_micros();
    for micros in &plan.keep {
        let m = read_manifest(store, instance, *micros).await?;
        oldest_kept = Some(oldest_kept.map_or(m.snapshot_instant(), |o| o.min(m.snapshot_instant())));
        referenced.extend(m.tables.into_iter().flat_map(|t| t.files.into_iter().map(|f| f.object)));
    }
    referenced.extend(crate::log::trim(store, instance, oldest_kept).await?);
    // A raw object's blake3 tree lives as long as the object.
    let trees: Vec<String> = referenced.iter().filter_map(|o| tree_of_object(o)).collect();
    referenced.extend(trees);
    // Deleted in an order a power cut cannot undo half of on a local store (each
    // step durable before the next): first what backups() lists, so it never shows
    // a backup whose manifest is gone; then the manifests; only then the objects
    // no kept manifest names, so no manifest a cut brings back names a missing one.
    for listed in store.list(instance, Folder::History).await? {
        if let Some((backup, event)) = history_of(&listed.name)
            && plan.deletes_history(backup)
        {
            store.delete(instance, history_object(backup, event)).await?;
        }
    }
    for listed in store.list(instance, Folder::Verifications).await? {
        if let Some(object @ Object::Verification { backup, .. }) = verification_of(&listed.name)
            && !plan.keep.contains(&backup)
        {
            store.delete(instance, object).await?;
        }
    }
    store.make_durable().await?;
    for micros in &plan.doomed {
        store.delete(instance, Object::Manifest(*micros)).await?;
        report.manifests_deleted += 1;
    }
    store.make_durable().await?;
    for listed in listed_files {
        if !referenced.contains(&listed.name) && listed.modified < started.saturating_sub(plan.grace_micros) {
            store.delete(instance, Object::File(&listed.name)).await?;
            report.objects_deleted += 1;
            report.bytes_deleted += listed.size;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Micros of `2024-mm-dd hh:mm` UTC.
    fn at(month: u32, day: u32, hour: u32, minute: u32) -> i64 {
        chrono::Utc
            .with_ymd_and_hms(2024, month, day, hour, minute, 0)
            .unwrap()
            .timestamp_micros()
    }

    fn rules(kept: &[KeptBy]) -> Vec<Option<String>> {
        kept.iter().map(KeptBy::describe).collect()
    }

    #[test]
    fn calendar_rules_keep_the_newest_backup_of_each_period_that_has_one() {
        let daily = Retention {
            latest: 1,
            daily: 2,
            ..Retention::default()
        };
        // Newest first: two on Jan 10, one on Jan 9, one on Jan 3 (a gap of days
        // without backups does not age Jan 3 out: it is the second day that has one).
        let backups = [at(1, 10, 18, 0), at(1, 10, 6, 0), at(1, 3, 12, 0), at(1, 2, 12, 0)];
        let kept = daily.kept_by(&backups);
        assert_eq!(
            rules(&kept),
            [Some("latest,daily".into()), None, Some("daily".into()), None]
        );
        let plan = daily.plan(&backups).expect("two to delete");
        assert_eq!(plan.keep, [backups[0], backups[2]]);
        assert_eq!(plan.doomed, [backups[1], backups[3]]);
        assert!(!plan.deletes_history(backups[2]), "a kept backup keeps its history");
        assert!(plan.deletes_history(backups[3]));
    }

    #[test]
    fn weeks_are_iso_weeks_and_months_calendar_months() {
        let weekly = Retention {
            latest: 1,
            weekly: 2,
            monthly: 2,
            ..Retention::default()
        };
        // Mon Mar 4, Sun Mar 3 (the week before), Sat Mar 2 (same week as Sun),
        // Thu Feb 29 (the third week back), Jan 31.
        let backups = [
            at(3, 4, 1, 0),
            at(3, 3, 1, 0),
            at(3, 2, 1, 0),
            at(2, 29, 1, 0),
            at(1, 31, 1, 0),
        ];
        assert_eq!(
            rules(&weekly.kept_by(&backups)),
            [
                Some("latest,weekly,monthly".into()),
                Some("weekly".into()),
                None,
                Some("monthly".into()),
                None
            ]
        );
    }

    #[test]
    fn days_are_counted_in_the_configured_time_zone() {
        // 23:30 UTC on Jan 1 is already Jan 2 in Paris: one day, not two.
        let backups = [at(1, 2, 6, 0), at(1, 1, 23, 30), at(1, 1, 12, 0)];
        let utc = Retention {
            latest: 1,
            daily: 2,
            ..Retention::default()
        };
        let paris = Retention {
            tz: chrono_tz::Europe::Paris,
            ..utc.clone()
        };
        assert_eq!(
            rules(&utc.kept_by(&backups)),
            [Some("latest,daily".into()), Some("daily".into()), None]
        );
        assert_eq!(
            rules(&paris.kept_by(&backups)),
            [Some("latest,daily".into()), None, Some("daily".into())]
        );
    }

    #[test]
    fn rules_off_keep_only_the_latest_and_nothing_doomed_plans_nothing() {
        let latest = Retention {
            latest: 2,
            ..Retention::default()
        };
        let backups = [at(1, 3, 0, 0), at(1, 2, 0, 0), at(1, 1, 0, 0)];
        let plan = latest.plan(&backups).expect("the oldest goes");
        assert_eq!(plan.doomed, [backups[2]]);
        assert_eq!(latest.plan(&backups[..2]), None);
    }
}
