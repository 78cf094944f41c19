//! The backup benchmark (issue 7): full and incremental `BACKUP DATABASE`, restore,
//! `CHECKPOINT CREATE` + `RELEASE`, a backup when nothing changed among many files,
//! foreground latency during a backup and peak memory, each beside `tar | zstd`,
//! restic and rsync measured in the same run on the same disk.
//!
//! ```text
//! cargo run --release --example backup_bench -- [--quick] [--days N] [--rows-per-day R] [--tables T] [--json PATH]
//! ```
//!
//! Figures are medians of `--repeat` runs with min and max; see docs/performance.md.
mod data;
mod instant;
mod measure;
mod peers;
mod remote;
mod scale;
mod shipping;
mod soak;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use engine::{Database, Properties, Settings};
use serde_json::{Value, json};

use measure::{MIB, Run, Stat, Timer, bytes_read, count_files, du, peak_rss_bytes};
use peers::Peers;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
#[command(about = "Measures Strata's backup and restore beside tar|zstd, restic and rsync")]
struct Args {
    /// Daily partitions per table (default 90; 30 with --quick: about 100 MB).
    #[arg(long)]
    days: Option<i64>,
    /// Rows in each daily partition (default 900,000: about 2 GB in all; 150,000 with --quick).
    #[arg(long)]
    rows_per_day: Option<usize>,
    /// Tables of trades (default 3; 2 with --quick).
    #[arg(long)]
    tables: Option<usize>,
    /// About 30 MB of data and 3,650 tiny files instead of 2 GB and 100,000: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Runs of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Tables of the many-files database (default 100; 10 with --quick).
    #[arg(long)]
    many_tables: Option<usize>,
    /// Daily partitions (one tiny file each) per table of the many-files database for the
    /// unchanged-backup measurement (default 1000; 365 with --quick); CHECKPOINT is measured at 365.
    #[arg(long)]
    many_partitions: Option<i64>,
    /// Where to build the databases, stores and copies (default: a new folder in the current directory).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Also write every figure to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the work folder (databases, stores, archives) for inspection.
    #[arg(long)]
    keep: bool,
    /// Item 11 (`--steps scale`) measures again with files this many times larger
    /// (default 10; the disk needs about twice the larger database free).
    #[arg(long, default_value_t = 10)]
    scale_factor: usize,
    /// Minutes the soak (`--steps soak`) runs (default 20; 1 with --quick).
    #[arg(long)]
    soak_minutes: Option<f64>,
    /// Only these measurements, comma-separated (default: all); incremental and
    /// restore also run the full backup they start from.
    #[arg(long, value_enum, value_delimiter = ',')]
    steps: Vec<Step>,
    /// Internal: run one operation (`backup` of `--root` into `--store`, or `restore`
    /// of `--store` into `--root`) in this fresh process and print its figures, so
    /// its peak memory is its own.
    #[arg(long, hide = true, requires_all = ["root", "store"])]
    child: Option<ChildOp>,
    #[arg(long, hide = true)]
    root: Option<PathBuf>,
    #[arg(long, hide = true)]
    store: Option<String>,
}

/// The measurements, in the order they run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// 1, 2, 8: full backup beside tar|zstd and restic, its peak RSS.
    Full,
    /// 3: incremental backup beside restic and rsync.
    Incremental,
    /// 4, 8: restore beside untar and restic restore, its peak RSS.
    Restore,
    /// 7: query and insert latency during a backup.
    Foreground,
    /// 5, 6: CHECKPOINT and the unchanged backup over many tiny files.
    Many,
    /// 9, 10: backup and restore through an S3 server on loopback beside its raw
    /// rate and rclone; many small files with latency added to every request.
    S3,
    /// 11: full backup and restore at this size and `--scale-factor` times it.
    Scale,
    /// 12: commit shipping: RPO under load, PUTs idle and loaded, restore to an instant.
    Shipping,
    /// 13: instant restore: first query and every file local, beside a full restore.
    Instant,
    /// 14: a soak: inserts, queries, backups, merges, shipping and kill -9 for `--soak-minutes`.
    Soak,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ChildOp {
    Backup,
    Restore,
    /// The soak's server: serves `--root` over the wire protocol until killed.
    Serve,
}

/// Figures of one operation run in a child process.
struct ChildRun {
    run: Run,
    peak_rss: f64,
    /// A restore: seconds until its first commit was accepted (its files durable).
    durable_secs: Option<f64>,
}

/// Runs `op` in a new process of this benchmark (after `sync`; a restore also
/// after emptying the page cache) and reads its figures.
fn in_child(op: ChildOp, root: &Path, store: &str) -> BenchResult<ChildRun> {
    let op = match op {
        ChildOp::Backup => {
            measure::settle();
            "backup"
        }
        ChildOp::Restore => {
            measure::settle_cold();
            "restore"
        }
        ChildOp::Serve => return Err("the soak starts its servers itself".into()),
    };
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--child", op, "--root"])
        .arg(root)
        .arg("--store")
        .arg(store)
        .output()?;
    if !out.status.success() {
        return Err(format!("{op} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let num = |k: &str| v[k].as_f64().ok_or_else(|| format!("{op}: no '{k}' in {v}"));
    Ok(ChildRun {
        run: Run {
            secs: num("secs")?,
            cpu: num("cpu")?,
        },
        peak_rss: num("peak_rss")?,
        durable_secs: v["durable_secs"].as_f64(),
    })
}

/// The child side of [`in_child`]: one backup or restore, then its figures on stdout.
async fn child(op: ChildOp, root: &Path, store: &str) -> BenchResult<()> {
    let mut figures = match op {
        ChildOp::Backup => {
            let db = open(root, Some(store)).await?;
            let timer = Timer::start();
            db.backup_start(true).await?;
            let run = timer.stop();
            db.shutdown().await;
            json!({"secs": run.secs, "cpu": run.cpu})
        }
        ChildOp::Restore => {
            // What an operator does: an empty root with a trigger file naming the latest backup.
            std::fs::create_dir_all(root)?;
            std::fs::write(root.join(engine::BACKUP_RESTORE_TRIGGER), "")?;
            let timer = Timer::start();
            let db = open(root, Some(store)).await?;
            let serving = timer.lap();
            db.context().sql(INSERT_ONE_ROW).await?.collect().await?;
            let durable = timer.stop();
            db.shutdown().await;
            json!({"secs": serving.secs, "durable_secs": durable.secs, "cpu": durable.cpu})
        }
        ChildOp::Serve => return soak::serve(root, store).await,
    };
    figures["peak_rss"] = json!(peak_rss_bytes());
    println!("{figures}");
    Ok(())
}

/// Partitions a table of the many-files database has when CHECKPOINT is measured (a year of days).
const CHECKPOINT_PARTITIONS: i64 = 365;

/// The sizes this run uses, after defaults.
struct Plan {
    tables: usize,
    days: i64,
    rows_per_day: usize,
    many_tables: usize,
    many_partitions: i64,
    repeat: usize,
}

impl Plan {
    fn from(args: &Args) -> Self {
        let q = args.quick;
        Self {
            tables: args.tables.unwrap_or(if q { 2 } else { 3 }),
            days: args.days.unwrap_or(if q { 30 } else { 90 }),
            rows_per_day: args.rows_per_day.unwrap_or(if q { 150_000 } else { 900_000 }),
            many_tables: args.many_tables.unwrap_or(if q { 10 } else { 100 }),
            many_partitions: args
                .many_partitions
                .unwrap_or(if q { 365 } else { 1000 })
                .max(CHECKPOINT_PARTITIONS),
            repeat: args.repeat.max(1),
        }
    }
}

/// The connection string of a local folder store.
fn fs(store: &Path) -> String {
    format!("fs::root={};", store.display())
}

/// Opens the database at `root`, backing up to the store `store` connects to (or
/// with backups disabled), with housekeeping out of the way of the measurements.
async fn open(root: &Path, store: Option<&str>) -> BenchResult<Arc<Database>> {
    let mut conf = HashMap::from([("housekeeping.interval.ms".to_string(), "86400000".to_string())]);
    match store {
        Some(s) => conf.insert("backup.object.store".into(), s.to_string()),
        None => conf.insert("backup.enabled".into(), "false".into()),
    };
    let settings = Settings::from_properties(&Properties::from_sources(conf, HashMap::new()))?;
    Ok(Database::open(root, settings).await?)
}

/// Runs one SQL statement and returns the first row's columns as text.
async fn sql_row(db: &Database, sql: &str) -> BenchResult<Vec<String>> {
    let batches = db.context().sql(sql).await?.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    Ok(batch
        .columns()
        .iter()
        .map(|c| arrow::util::display::array_value_to_string(c, 0).unwrap_or_default())
        .collect())
}

/// Data files of every table: path -> bytes.
fn data_files(db: &Database) -> HashMap<String, u64> {
    let storage = db.storage();
    storage
        .table_names()
        .into_iter()
        .filter_map(|n| storage.table(&n))
        .flat_map(|t| {
            let name = t.name().to_string();
            t.commit()
                .files
                .iter()
                .map(|f| (format!("{name}/{}", f.path), f.bytes))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn secs(runs: &[Run]) -> Stat {
    Stat::of(&runs.iter().map(|r| r.secs).collect::<Vec<_>>())
}

fn cpu(runs: &[Run]) -> Stat {
    Stat::of(&runs.iter().map(|r| r.cpu).collect::<Vec<_>>())
}

fn fmt_stat(s: Stat, unit: &str) -> String {
    format!("{:.3} {unit} ({:.3}-{:.3})", s.median, s.min, s.max)
}

fn ratio(ours: f64, theirs: f64) -> String {
    format!("{:.2}x", ours / theirs)
}

/// A peer's line under ours: its times and the ratio of our median to its.
fn peer(name: &str, theirs: Stat, ours: f64) -> String {
    format!(
        "\n   {name}: {} -> ours/peer: {}",
        fmt_stat(theirs, "s"),
        ratio(ours, theirs.median)
    )
}

/// The printed report: one line per figure, in the order measured.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    fn line(&mut self, text: String) {
        println!("{text}");
        self.lines.push(text);
    }

    fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }

    /// Item 8: the median peak RSS of the processes that ran `what`.
    fn peak_rss(&mut self, what: &str, key: &str, samples: &[f64]) {
        let rss = Stat::of(samples);
        self.line(format!(
            "8. peak RSS of the process running the {what}: {:.0} MiB (median)",
            rss.median / MIB
        ));
        self.set(key, rss.json());
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backup_bench: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match (args.child, &args.root, &args.store) {
        (Some(op), Some(root), Some(store)) => runtime.block_on(child(op, root, store)),
        _ => runtime.block_on(run(&args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backup_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> BenchResult<()> {
    let plan = Plan::from(args);
    let parent = args.work.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent)?;
    // Store connection strings need an absolute path.
    let parent = parent.canonicalize()?;
    let mut work_dir = tempfile::Builder::new().prefix("backup_bench.").tempdir_in(&parent)?;
    work_dir.disable_cleanup(args.keep);
    let work = work_dir.path();
    let peers = Peers::find(work);
    let mut report = Report::default();
    report.line(format!(
        "backup_bench: {} tables x {} days x {} rows, {} runs each, in {}; peers: {}",
        plan.tables,
        plan.days,
        plan.rows_per_day,
        plan.repeat,
        work.display(),
        peers.describe()
    ));
    report.set("machine", machine());

    let wants = |step: Step| (args.steps.is_empty() && step != Step::Scale) || args.steps.contains(&step);
    let root = work.join("root");
    if [
        Step::Full,
        Step::Incremental,
        Step::Restore,
        Step::Foreground,
        Step::S3,
        Step::Instant,
    ]
    .into_iter()
    .any(wants)
    {
        trades(&plan, &root, &peers, &wants, &mut report).await?;
    }
    if wants(Step::Many) {
        many_files(&plan, work, &mut report).await?;
    }
    // Only when asked for (`wants` leaves it out of "all"): at the default size
    // it builds and copies about 20 GB.
    if wants(Step::Scale) {
        scale::scale(&plan, work, args.scale_factor.max(2), &mut report).await?;
    }
    if wants(Step::Shipping) {
        shipping::shipping(&plan, work, &mut report).await?;
    }
    if wants(Step::Soak) {
        let minutes = args.soak_minutes.unwrap_or(if args.quick { 1.0 } else { 20.0 });
        soak::soak(work, minutes, args.quick, &mut report).await?;
    }

    if let Some(path) = &args.json {
        let mut all = report.json;
        all.insert("report".into(), json!(report.lines));
        std::fs::write(path, serde_json::to_vec_pretty(&Value::Object(all))?)?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// 1-4, 7 and 8 on the database of trades.
async fn trades(
    plan: &Plan,
    root: &Path,
    peers: &Peers,
    wants: &dyn Fn(Step) -> bool,
    report: &mut Report,
) -> BenchResult<()> {
    let build = Timer::start();
    {
        let db = open(root, None).await?;
        data::build_trades(db.storage(), plan.tables, plan.days, plan.rows_per_day)?;
        db.shutdown().await;
    }
    let build = build.stop();
    let db_dir = root.join("db");
    let db_bytes = du(&db_dir) as f64;
    report.line(format!(
        "0. database: {:.1} MB in {} files, built in {:.1} s through the write path",
        db_bytes / 1e6,
        count_files(&db_dir),
        build.secs
    ));
    report.set("database_bytes", json!(db_bytes));

    if [Step::Full, Step::Incremental, Step::Restore, Step::Instant]
        .into_iter()
        .any(wants)
    {
        let store = full_backup(plan, root, peers, db_bytes, report).await?;
        if wants(Step::Incremental) {
            incremental(plan, root, &store, peers, report).await?;
        }
        if wants(Step::Restore) {
            restore(plan, &store, peers, report).await?;
        }
        if wants(Step::Instant) {
            instant::instant(plan, &store, db_bytes, report).await?;
        }
    }
    if wants(Step::Foreground) {
        for store in foreground_stores(root) {
            foreground(root, &store, plan.repeat, report).await?;
        }
    }
    if wants(Step::S3) {
        let work = root.parent().ok_or("the root has a parent folder")?;
        remote::s3(plan, root, db_bytes, work, report).await?;
    }
    Ok(())
}

/// 1, 2 and 8: full backups into fresh stores beside tar|zstd and restic. Returns the
/// last store, which the incremental and restore measurements go on with.
async fn full_backup(
    plan: &Plan,
    root: &Path,
    peers: &Peers,
    db_bytes: f64,
    report: &mut Report,
) -> BenchResult<PathBuf> {
    let (mut runs, mut stored, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let mut store = PathBuf::new();
    for r in 0..plan.repeat {
        if r > 0 {
            std::fs::remove_dir_all(&store)?;
        }
        store = root.with_file_name(format!("store_{r}"));
        let done = in_child(ChildOp::Backup, root, &fs(&store))?;
        runs.push(done.run);
        rss.push(done.peak_rss);
        stored.push(du(&store) as f64);
    }
    let (ours, ours_cpu, ours_bytes) = (secs(&runs), cpu(&runs), Stat::of(&stored).median);
    let mut line = format!(
        "1. full backup (durable: the store is synced before and after the manifest): {}, cpu {}, {:.0} MB/s, stored {:.1} MB",
        fmt_stat(ours, "s"),
        fmt_stat(ours_cpu, "s"),
        db_bytes / 1e6 / ours.median,
        ours_bytes / 1e6
    );
    let mut figures = json!({"seconds": ours.json(), "cpu_seconds": ours_cpu.json(), "stored_bytes": ours_bytes,
        "mb_per_s": db_bytes / 1e6 / ours.median});
    let tar = peers.tar_full(root, plan.repeat, false);
    line += &format!(
        "\n   tar|zstd -T0 -3: {}, cpu {}, {:.1} MB -> ours/tar: time {}, cpu {}, bytes {}",
        fmt_stat(tar.secs, "s"),
        fmt_stat(tar.cpu, "s"),
        tar.bytes / 1e6,
        ratio(ours.median, tar.secs.median),
        ratio(ours_cpu.median, tar.cpu.median),
        ratio(ours_bytes, tar.bytes)
    );
    figures["tar_zstd"] = tar.json();
    let durable = peers.tar_full(root, plan.repeat, true);
    line += &peer("tar|zstd -T0 -3 && sync", durable.secs, ours.median);
    figures["tar_zstd_sync"] = durable.json();
    if let Some(restic) = peers.restic_full(root, plan.repeat) {
        line += &format!(
            "\n   restic backup: {}, {:.1} MB -> ours/restic: time {}",
            fmt_stat(restic.secs, "s"),
            restic.bytes / 1e6,
            ratio(ours.median, restic.secs.median)
        );
        figures["restic"] = restic.json();
    }
    report.line(line);
    report.set("full_backup", figures);
    report.peak_rss("full backup", "full_backup_peak_rss_bytes", &rss);
    Ok(store)
}

/// 3: append rows to one old partition and rewrite another, then back up again.
async fn incremental(plan: &Plan, root: &Path, store: &Path, peers: &Peers, report: &mut Report) -> BenchResult<()> {
    peers.prepare_incremental(root);
    let (mut runs, mut changed, mut uploaded) = (Vec::new(), Vec::new(), Vec::new());
    let (mut restic, mut rsync) = (Vec::new(), Vec::new());
    let mut rng = data::Rng::new(99);
    // 0.25% of all rows appended to one partition of the first table.
    let appended = (plan.tables * plan.days as usize * plan.rows_per_day / 400).max(1);
    for r in 0..plan.repeat {
        let db = open(root, Some(&fs(store))).await?;
        let before = data_files(&db);
        let storage = db.storage();
        let first = storage.table("trades_0").ok_or("trades_0 is missing")?;
        let day = (1 + r as i64) % plan.days;
        first.append(&[data::trades_day(first.meta(), day, appended, &mut rng)])?;
        // And one partition of the last table rewritten with new rows.
        let last = storage
            .table(&format!("trades_{}", plan.tables - 1))
            .ok_or("last table is missing")?;
        let day = (plan.days / 2 + r as i64) % plan.days;
        let ts = data::FIRST_DAY_MICROS + day * data::DAY_MICROS;
        let partition = last
            .partitions()
            .into_iter()
            .find(|(_, (lo, hi))| *lo <= ts && ts < *hi)
            .map(|(name, _)| name)
            .ok_or("partition is missing")?;
        last.drop_partitions(&[partition])?;
        last.append(&[data::trades_day(last.meta(), day, plan.rows_per_day, &mut rng)])?;
        let after = data_files(&db);
        changed.push(
            after
                .iter()
                .filter(|(p, _)| !before.contains_key(*p))
                .map(|(_, b)| *b as f64)
                .sum(),
        );
        measure::settle();
        let timer = Timer::start();
        db.backup_start(true).await?;
        runs.push(timer.stop());
        let row = sql_row(&db, "SELECT bytes_uploaded FROM backups() LIMIT 1").await?;
        uploaded.push(row.first().and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN));
        db.shutdown().await;
        if let Some(run) = peers.restic_incremental(root) {
            restic.push(run);
        }
        if let Some(run) = peers.rsync(root) {
            rsync.push(run);
        }
    }
    let ours = secs(&runs);
    let (changed, uploaded) = (Stat::of(&changed).median, Stat::of(&uploaded).median);
    let mut line = format!(
        "3. incremental backup: {}, uploaded {:.2} MB for {:.2} MB of changed files ({:.3}x changed + 1 MiB)",
        fmt_stat(ours, "s"),
        uploaded / 1e6,
        changed / 1e6,
        uploaded / (changed + MIB)
    );
    let mut figures = json!({"seconds": ours.json(), "uploaded_bytes": uploaded, "changed_bytes": changed});
    if !restic.is_empty() {
        let s = secs(&restic);
        line += &peer("restic second backup", s, ours.median);
        figures["restic_seconds"] = s.json();
    }
    if !rsync.is_empty() {
        let s = secs(&rsync);
        line += &peer("rsync of the changed tree", s, ours.median);
        figures["rsync_seconds"] = s.json();
    }
    report.line(line);
    report.set("incremental_backup", figures);
    Ok(())
}

/// 4 and 8: restore the latest backup into an empty root, beside untar and restic restore.
async fn restore(plan: &Plan, store: &Path, peers: &Peers, report: &mut Report) -> BenchResult<()> {
    let (mut runs, mut durable_runs, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..plan.repeat {
        let target = store.with_file_name(format!("restored_{r}"));
        let done = in_child(ChildOp::Restore, &target, &fs(store))?;
        runs.push(done.run);
        durable_runs.push(done.durable_secs.ok_or("restore: no 'durable_secs'")?);
        rss.push(done.peak_rss);
        std::fs::remove_dir_all(&target)?;
    }
    let ours = secs(&runs);
    let ours_durable = Stat::of(&durable_runs);
    let untar = peers.untar(plan.repeat, false);
    let durable = peers.untar(plan.repeat, true);
    let cache = if measure::settle_cold() {
        "cold page cache: store and archives read from disk"
    } else {
        "page cache NOT emptied (needs root): store and archives may be read from memory"
    };
    let mut line = format!(
        "4. restore from a trigger file into an empty root ({cache}): answering queries after {}",
        fmt_stat(ours, "s")
    );
    line += &peer("zstd -d | tar -x", untar, ours.median);
    let mut figures = json!({
        "seconds": ours.json(),
        "durable_seconds": ours_durable.json(),
        "untar_seconds": untar.json(),
        "untar_sync_seconds": durable.json()
    });
    if let Some(s) = peers.restic_restore(plan.repeat) {
        line += &peer("restic restore", s, ours.median);
        figures["restic_seconds"] = s.json();
    }
    line += &format!(
        "\n   files durable, first commit accepted after {}",
        fmt_stat(ours_durable, "s")
    );
    line += &peer("zstd -d | tar -x && sync", durable, ours_durable.median);
    report.line(line);
    report.set("restore", figures);
    report.peak_rss("restore", "restore_peak_rss_bytes", &rss);
    Ok(())
}

/// The small insert whose latency is measured.
const INSERT_ONE_ROW: &str = "INSERT INTO trades_0 VALUES ('2024-01-05T12:00:00', 'BTC-USD', 42000.5, 0.25)";

/// Latencies (seconds) of a one-day query and of a one-row insert, alternating,
/// `n` of each, or until `until` says stop when given.
async fn foreground_samples(db: &Database, n: usize, while_backing_up: bool) -> BenchResult<(Vec<f64>, Vec<f64>)> {
    let (mut query, mut insert) = (Vec::new(), Vec::new());
    let one_day =
        "SELECT count(*), avg(price), max(amount) FROM trades_0 WHERE ts >= '2024-01-02' AND ts < '2024-01-03'";
    for i in 0..n {
        if while_backing_up && i % 5 == 0 {
            let status = sql_row(db, "SELECT status FROM backups() LIMIT 1").await?;
            if status.first().map(String::as_str) != Some("backup in progress") {
                break;
            }
        }
        let t = std::time::Instant::now();
        db.context().sql(one_day).await?.collect().await?;
        query.push(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        db.context().sql(INSERT_ONE_ROW).await?.collect().await?;
        insert.push(t.elapsed().as_secs_f64());
    }
    Ok((query, insert))
}

/// 7: foreground latency with no backup, then while a full backup runs.
/// Where the backup measured in step 7 goes.
struct ForegroundStore {
    dir: PathBuf,
    label: &'static str,
    json_key: &'static str,
}

/// Step 7's stores: on the database's disk, and on another device (tmpfs, standing in
/// for a second disk or S3) when `/dev/shm` exists.
fn foreground_stores(root: &Path) -> Vec<ForegroundStore> {
    let mut stores = vec![ForegroundStore {
        dir: root.with_file_name("store_foreground"),
        label: "store on the database's disk",
        json_key: "foreground_ms",
    }];
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        stores.push(ForegroundStore {
            dir: shm.join(format!("strata_bench_store_{}", std::process::id())),
            label: "store on another device: tmpfs, standing in for a second disk or S3",
            json_key: "foreground_other_device_ms",
        });
    }
    stores
}

/// Step 7 for one store: `repeat` rounds of idle samples, then samples while a
/// full backup into a fresh store runs.
async fn foreground(root: &Path, target: &ForegroundStore, repeat: usize, report: &mut Report) -> BenchResult<()> {
    let store = &target.dir;
    let db = open(root, Some(&fs(store))).await?;
    foreground_samples(&db, 3, false).await?; // warm up
    let (mut idle, mut busy) = (Latencies::default(), Latencies::default());
    for _ in 0..repeat {
        idle.add(foreground_samples(&db, 100, false).await?);
        db.backup_start(false).await?;
        busy.add(foreground_samples(&db, 100_000, true).await?);
        // Let the backup finish before the next measurement.
        while sql_row(&db, "SELECT status FROM backups() LIMIT 1")
            .await?
            .first()
            .is_some_and(|s| s.ends_with("in progress"))
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        std::fs::remove_dir_all(store)?;
    }
    db.shutdown().await;
    let ms = |v: &[f64], q: f64| Stat::quantile(v, q) * 1000.0;
    let line = |what: &str, idle: &[f64], busy: &[f64]| {
        format!(
            "\n   {what}: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ms (idle p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}) -> p99 ratio {}",
            ms(busy, 0.5),
            ms(busy, 0.9),
            ms(busy, 0.99),
            ms(busy, 1.0),
            ms(idle, 0.5),
            ms(idle, 0.9),
            ms(idle, 0.99),
            ms(idle, 1.0),
            ratio(ms(busy, 0.99), ms(idle, 0.99)),
        )
    };
    let figures = |idle: &[f64], busy: &[f64]| {
        json!({
            "idle_p50": ms(idle, 0.5), "idle_p90": ms(idle, 0.9), "idle_p99": ms(idle, 0.99), "idle_max": ms(idle, 1.0),
            "busy_p50": ms(busy, 0.5), "busy_p90": ms(busy, 0.9), "busy_p99": ms(busy, 0.99), "busy_max": ms(busy, 1.0),
            "idle_samples": idle.len(), "busy_samples": busy.len(),
        })
    };
    report.line(format!(
        "7. foreground during {repeat} full backup(s), {} ({} queries and {} inserts sampled during backups, {} idle):{}{}",
        target.label,
        busy.query.len(),
        busy.insert.len(),
        idle.query.len(),
        line("one-day query", &idle.query, &busy.query),
        line("one-row insert", &idle.insert, &busy.insert),
    ));
    report.set(
        target.json_key,
        json!({
            "query": figures(&idle.query, &busy.query),
            "insert": figures(&idle.insert, &busy.insert),
        }),
    );
    Ok(())
}

/// Query and insert latencies (seconds) gathered over several rounds.
#[derive(Default)]
struct Latencies {
    query: Vec<f64>,
    insert: Vec<f64>,
}

impl Latencies {
    fn add(&mut self, (query, insert): (Vec<f64>, Vec<f64>)) {
        self.query.extend(query);
        self.insert.extend(insert);
    }
}

/// 5 and 6: CHECKPOINT CREATE + RELEASE, and a backup when nothing changed, over many tiny files.
async fn many_files(plan: &Plan, work: &Path, report: &mut Report) -> BenchResult<()> {
    let root = work.join("many_root");
    let store = work.join("store_many");
    let db = open(&root, Some(&fs(&store))).await?;
    let timer = Timer::start();
    data::build_many_files(db.storage(), plan.many_tables, 0..CHECKPOINT_PARTITIONS)?;
    let build = timer.stop();
    let partitions = plan.many_tables as i64 * CHECKPOINT_PARTITIONS;
    report.line(format!(
        "   many-files database: {} tables x {CHECKPOINT_PARTITIONS} partitions = {partitions} files, built in {:.1} s",
        plan.many_tables, build.secs
    ));
    let mut checkpoint = Vec::new();
    for _ in 0..plan.repeat.max(5) {
        let timer = Timer::start();
        db.checkpoint_create().await?;
        db.checkpoint_release().await?;
        checkpoint.push(timer.stop().secs * 1000.0);
    }
    let checkpoint = Stat::of(&checkpoint);
    report.line(format!(
        "5. CHECKPOINT CREATE + RELEASE, {partitions} partitions: {}",
        fmt_stat(checkpoint, "ms")
    ));
    report.set(
        "checkpoint",
        json!({"partitions": partitions, "milliseconds": checkpoint.json()}),
    );

    let timer = Timer::start();
    data::build_many_files(
        db.storage(),
        plan.many_tables,
        CHECKPOINT_PARTITIONS..plan.many_partitions,
    )?;
    let files = plan.many_tables as i64 * plan.many_partitions;
    report.line(format!(
        "   extended to {} partitions a table = {files} files in {:.1} s",
        plan.many_partitions,
        timer.stop().secs
    ));

    let timer = Timer::start();
    db.backup_start(true).await?;
    let first = timer.stop();
    let (mut runs, mut read) = (Vec::new(), Vec::new());
    for _ in 0..plan.repeat {
        // Data files are renamed away meanwhile: a backup that read one would fail.
        let hidden = hide_data_files(&db, true)?;
        // The renames are the benchmark's, not the backup's: on disk before it starts.
        measure::settle();
        let before = bytes_read();
        let timer = Timer::start();
        let result = db.backup_start(true).await;
        runs.push(timer.stop());
        read.push((bytes_read() - before) as f64);
        hide_data_files(&db, false)?;
        result?;
        assert!(hidden > 0);
    }
    let data_bytes: u64 = data_files(&db).values().sum();
    db.shutdown().await;
    let (s, read) = (secs(&runs), Stat::of(&read));
    report.line(format!(
        "6. backup with nothing changed, {files} files: {} (first backup {:.1} s); data files hidden meanwhile, so 0 bytes of them read; bytes read by the whole process {:.0} KB (the data files hold {:.1} MB)",
        fmt_stat(s, "s"),
        first.secs,
        read.median / 1e3,
        data_bytes as f64 / 1e6
    ));
    report.set(
        "unchanged_backup",
        json!({"files": files, "seconds": s.json(), "first_backup_seconds": first.secs, "bytes_read": read.json(), "data_file_bytes": data_bytes}),
    );
    Ok(())
}

/// Renames every data file to `<name>.hidden` (or back); returns how many.
fn hide_data_files(db: &Database, hide: bool) -> std::io::Result<usize> {
    let storage = db.storage();
    let mut n = 0;
    for table in storage.table_names().iter().filter_map(|t| storage.table(t)) {
        for file in &table.commit().files {
            let path = table.file_path(file);
            let hidden = path.with_extension("parquet.hidden");
            let (from, to) = if hide { (&path, &hidden) } else { (&hidden, &path) };
            std::fs::rename(from, to)?;
            n += 1;
        }
    }
    Ok(n)
}

/// What the figures were measured on.
fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    json!({"cpus": cpus, "cpu_model": model})
}
