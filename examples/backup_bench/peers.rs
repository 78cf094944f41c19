//! The tools Strata's backup is measured against, run on the same data folder in
//! the same run: `tar | zstd -T0 -3`, restic and rsync (each when installed).
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::measure::{Run, Stat, du, have, settle, settle_cold, sh};

const RESTIC_ENV: [(&str, &str); 1] = [("RESTIC_PASSWORD", "backup-bench")];

/// A peer's full backup: time, CPU and bytes stored.
pub struct Full {
    pub secs: Stat,
    pub cpu: Stat,
    pub bytes: f64,
}

impl Full {
    fn from(runs: &[Run], bytes: f64) -> Self {
        Self {
            secs: Stat::of(&runs.iter().map(|r| r.secs).collect::<Vec<_>>()),
            cpu: Stat::of(&runs.iter().map(|r| r.cpu).collect::<Vec<_>>()),
            bytes,
        }
    }

    pub fn json(&self) -> Value {
        json!({"seconds": self.secs.json(), "cpu_seconds": self.cpu.json(), "bytes": self.bytes})
    }
}

pub struct Peers {
    work: PathBuf,
    restic: bool,
    rsync: bool,
}

impl Peers {
    /// `tar` and `zstd` are required; restic and rsync are used when installed.
    pub fn find(work: &Path) -> Self {
        assert!(have("tar") && have("zstd"), "the benchmark needs tar and zstd");
        Self {
            work: work.to_path_buf(),
            restic: have("restic"),
            rsync: have("rsync"),
        }
    }

    pub fn describe(&self) -> String {
        let absent = |present: bool, name: &str| {
            if present {
                name.to_string()
            } else {
                format!("{name} (absent)")
            }
        };
        format!(
            "tar|zstd, {}, {}",
            absent(self.restic, "restic"),
            absent(self.rsync, "rsync")
        )
    }

    fn archive(&self) -> PathBuf {
        self.work.join("db.tar.zst")
    }

    fn restic_repo(&self) -> PathBuf {
        self.work.join("restic")
    }

    fn mirror(&self) -> PathBuf {
        self.work.join("rsync_mirror")
    }

    /// `tar -cf - db | zstd -T0 -3`, `repeat` times; with `durable`, followed by
    /// `sync` (ours makes a local store durable before the backup completes). The
    /// last archive stays for `untar`.
    pub fn tar_full(&self, root: &Path, repeat: usize, durable: bool) -> Full {
        let archive = self.archive();
        let sync = if durable { " && sync" } else { "" };
        let line = format!(
            "tar -cf - -C '{}' db | zstd -T0 -3 -q -f -o '{}'{sync}",
            root.display(),
            archive.display()
        );
        let runs: Vec<Run> = (0..repeat)
            .map(|_| {
                settle();
                sh(&line, &[])
            })
            .collect();
        let bytes = std::fs::metadata(&archive).map_or(0, |m| m.len()) as f64;
        Full::from(&runs, bytes)
    }

    /// `restic backup` into a new repository, `repeat` times; the last repository stays.
    pub fn restic_full(&self, root: &Path, repeat: usize) -> Option<Full> {
        if !self.restic {
            return None;
        }
        let repo = self.restic_repo();
        let mut runs = Vec::new();
        for _ in 0..repeat {
            let _ = std::fs::remove_dir_all(&repo);
            sh(&format!("restic init -q --repo '{}'", repo.display()), &RESTIC_ENV);
            settle();
            runs.push(sh(
                &format!(
                    "cd '{}' && restic backup -q --repo '{}' db",
                    root.display(),
                    repo.display()
                ),
                &RESTIC_ENV,
            ));
        }
        Some(Full::from(&runs, du(&repo) as f64))
    }

    /// Before the incremental rounds: a mirror for rsync to update.
    pub fn prepare_incremental(&self, root: &Path) {
        if self.rsync {
            sh(
                &format!("rsync -a '{}/db/' '{}/'", root.display(), self.mirror().display()),
                &[],
            );
        }
    }

    /// restic's next backup of the same folder (after a change).
    pub fn restic_incremental(&self, root: &Path) -> Option<Run> {
        self.restic.then(|| {
            settle();
            sh(
                &format!(
                    "cd '{}' && restic backup -q --repo '{}' db",
                    root.display(),
                    self.restic_repo().display()
                ),
                &RESTIC_ENV,
            )
        })
    }

    /// rsync of the changed tree onto the mirror.
    pub fn rsync(&self, root: &Path) -> Option<Run> {
        self.rsync.then(|| {
            settle();
            sh(
                &format!(
                    "rsync -a --delete '{}/db/' '{}/'",
                    root.display(),
                    self.mirror().display()
                ),
                &[],
            )
        })
    }

    /// `zstd -d | tar -x` of the full archive into an empty folder, `repeat` times;
    /// with `durable`, followed by `sync` (a restore is done when it is on disk, and
    /// ours syncs before it publishes).
    pub fn untar(&self, repeat: usize, durable: bool) -> Stat {
        let target = self.work.join("untarred");
        let sync = if durable { " && sync" } else { "" };
        let line = format!(
            "mkdir -p '{t}' && zstd -d -T0 -q -c '{}' | tar -xf - -C '{t}'{sync}",
            self.archive().display(),
            t = target.display()
        );
        restores(&line, &[], &target, repeat)
    }

    /// `restic restore latest` into an empty folder, `repeat` times.
    pub fn restic_restore(&self, repeat: usize) -> Option<Stat> {
        let target = self.work.join("restic_restored");
        let line = format!(
            "restic restore latest -q --repo '{}' --target '{}'",
            self.restic_repo().display(),
            target.display()
        );
        self.restic.then(|| restores(&line, &RESTIC_ENV, &target, repeat))
    }
}

/// Seconds of `repeat` runs of `line`, each restoring into `target` (which is
/// removed after) from a cold page cache, as ours does.
fn restores(line: &str, env: &[(&str, &str)], target: &Path, repeat: usize) -> Stat {
    let runs: Vec<f64> = (0..repeat)
        .map(|_| {
            settle_cold();
            let secs = sh(line, env).secs;
            let _ = std::fs::remove_dir_all(target);
            secs
        })
        .collect();
    Stat::of(&runs)
}
