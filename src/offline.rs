//! The offline commands: `strata backup list`, `strata backup verify`,
//! `strata backup query`, `strata restore`.
//! They talk to the store directly; no server needs to run.
use std::io::IsTerminal;
use std::path::Path;

use backup::{PercentSteps, Selector, Store};
use indicatif::{ProgressBar, ProgressStyle};

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Which store, which instance of it, and its key.
#[derive(Debug, clap::Args)]
pub(crate) struct Source {
    /// Store connection string, e.g. fs::root=/mnt/backups; or s3::bucket=...;
    #[arg(long)]
    store: String,
    /// Backup instance (needed only when the store holds several).
    #[arg(long)]
    instance: Option<String>,
    #[command(flatten)]
    key: Key,
}

/// Which backup of which store.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    #[command(flatten)]
    source: Source,
    /// Backup timestamp as listed, e.g. 2024-08-24T12:34:56.789123Z (default: the latest complete one).
    #[arg(long)]
    timestamp: Option<String>,
}

/// The key of an encrypted store.
#[derive(Debug, clap::Args)]
pub(crate) struct Key {
    /// File holding the backup encryption key (base64, or 32 raw bytes); the
    /// environment variable STRATA_BACKUP_ENCRYPTION_KEY (base64) works too.
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
}

impl Key {
    fn open(&self, conn: &str) -> Result<Store, backup::BackupError> {
        let cipher = match (&self.key_file, std::env::var("STRATA_BACKUP_ENCRYPTION_KEY")) {
            (Some(path), _) => Some(backup::Cipher::from_key_file(path)?),
            (None, Ok(text)) if !text.trim().is_empty() => Some(backup::Cipher::from_base64(&text)?),
            _ => None,
        };
        Ok(Store::open(conn)?.with_cipher(cipher))
    }
}

impl Source {
    fn open(&self) -> Result<Store, backup::BackupError> {
        self.key.open(&self.store)
    }
}

impl Target {
    fn open(&self) -> Result<(Store, Selector), backup::BackupError> {
        let selector = Selector {
            instance: self.source.instance.clone(),
            timestamp: self.timestamp.clone(),
        };
        Ok((self.source.open()?, selector))
    }
}

pub(crate) async fn list(source: &Source) -> CliResult {
    let store = source.open()?;
    let instance = source.instance.as_deref();
    let all = store.instances().await?;
    println!("store: {}", store.display());
    println!(
        "instances: {}",
        if all.is_empty() {
            "(none)".to_string()
        } else {
            all.join(", ")
        }
    );
    let chosen: Vec<String> = match instance {
        Some(name) => vec![backup::resolve_instance(&store, Some(name)).await?],
        None => all,
    };
    for name in chosen {
        let complete = backup::complete_backups(&store, &name).await?;
        let history = backup::load_history(&store, &name).await?;
        println!();
        println!("instance {name}: {} complete backup(s)", complete.len());
        match backup::window(&store, &name, &complete).await? {
            Some(w) => println!("point-in-time window: {} (any instant)", w.describe()),
            None => println!("point-in-time window: none"),
        }
        println!(
            "{:<28} {:<18} {:>6} {:>8} {:>14}  restorable",
            "backup_timestamp", "status", "tables", "files", "bytes"
        );
        for r in history {
            println!(
                "{:<28} {:<18} {:>6} {:>8} {:>14}  {}",
                backup::layout::format_timestamp(r.backup_micros),
                r.status.as_str(),
                r.tables,
                r.files_total,
                r.bytes_total,
                if complete.contains(&r.backup_micros) {
                    "yes"
                } else {
                    "no"
                }
            );
        }
    }
    Ok(())
}

/// `strata backup query`: the rows of `sql` on the store's backups, as a table.
pub(crate) async fn query(source: &Source, sql: &str) -> CliResult {
    let source = engine::BackupSource {
        store: source.open()?,
        instance: source.instance.clone(),
    };
    let table = engine::query_backups(source, sql)
        .await
        .map_err(|e| sql::SqlError::from(&e).message)?;
    println!("{table}");
    Ok(())
}

pub(crate) async fn verify(target: &Target) -> CliResult {
    let (store, selector) = target.open()?;
    let progress = Progress::new("verifying");
    let report = backup::verify(&store, &selector, None, &|d, t| progress.update(d, t)).await?;
    progress.finish();
    println!(
        "backup {} of instance {}: {} tables, {} files, {} bytes checked",
        report.backup_timestamp, report.instance, report.tables, report.files, report.bytes
    );
    for p in &report.problems {
        println!("BAD {}/{} (object {}): {}", p.table, p.path, p.object, p.reason);
    }
    if report.ok() {
        println!("OK: the backup is fully restorable");
        Ok(())
    } else {
        Err(format!("{} file(s) failed verification", report.problems.len()).into())
    }
}

pub(crate) async fn restore(target: &Target, root: &Path) -> CliResult {
    let (store, selector) = target.open()?;
    let progress = Progress::new("restoring");
    let (report, unsynced) = backup::restore_database(&store, &selector, root, &|d, t| progress.update(d, t)).await?;
    tokio::task::spawn_blocking(|| unsynced.make_durable()).await??;
    progress.finish();
    storage::clear_restore_markers(root)?;
    println!(
        "restored backup {} of instance {} into {}: {} tables ({}), {} files, {} rows, {} bytes",
        report.backup_timestamp,
        report.instance,
        root.display(),
        report.tables.len(),
        report.tables.join(", "),
        report.files,
        report.rows,
        report.bytes
    );
    Ok(())
}

/// A progress bar on a terminal, plain lines every 10% otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    steps: PercentSteps,
    what: &'static str,
}

impl Progress {
    fn new(what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Self {
            bar,
            steps: PercentSteps::new(10),
            what,
        }
    }

    fn update(&self, done: u64, total: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            None => {
                if let Some(p) = self.steps.crossed(done, total) {
                    eprintln!("{}: {p}% ({done} of {total} bytes)", self.what);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
