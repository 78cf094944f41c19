//! 14 (issue 19): a soak under load. A server process of this benchmark
//! (`--child serve`: the database and the wire protocol, commit shipping on,
//! housekeeping merging every second) takes steady inserts and queries from a
//! PostgreSQL client, a backup every minute (retention keeps 3), and a kill -9
//! and restart every few minutes, for `--soak-minutes` (20; 1 with --quick).
//! At the end: no acknowledged row lost, every complete backup verifies, and
//! the server's RSS, open files and disk use sampled over time: flat, not
//! growing with the run.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::measure::{MIB, du};
use crate::{BenchResult, Report, fs};

/// Rows per insert, spread over the hours of a day so merges have work.
const ROWS: u64 = 100;

/// The server's configuration: as in production, with shipping and retention.
pub(crate) fn serve_conf(store: &str) -> Vec<(String, String)> {
    [
        ("backup.object.store", store),
        ("backup.cleanup.keep.latest.n", "3"),
        ("replication.role", "primary"),
        ("housekeeping.interval.ms", "1000"),
        ("pg.net.bind.to", "127.0.0.1:0"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// The child side: serves the database at `root` until killed, after printing its address.
pub(crate) async fn serve(root: &Path, store: &str) -> BenchResult<()> {
    let props = engine::Properties::from_sources(serve_conf(store).into_iter().collect(), Default::default());
    let settings = engine::Settings::from_properties(&props)?;
    let listener = tokio::net::TcpListener::bind(settings.bind).await?;
    let db = engine::Database::open(root, settings).await?;
    println!("listening on {}", listener.local_addr()?);
    sql::serve(db, listener, None, tokio_util::sync::CancellationToken::new()).await?;
    Ok(())
}

/// A server process of the soak.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(root: &Path, store: &str) -> BenchResult<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--child", "serve", "--root"])
            .arg(root)
            .args(["--store", store])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("the soak server did not start: {line:?}"))?;
        Ok(Server { child, port })
    }

    async fn connect(&self) -> BenchResult<Client> {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=admin dbname=strata", self.port),
            NoTls,
        )
        .await?;
        tokio::spawn(conn);
        Ok(client)
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// (RSS bytes, open file descriptors) of the server process now.
    fn sample(&self) -> (u64, usize) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        (rss_kib * 1024, fds)
    }
}

/// One sample of the server over the run.
struct Sample {
    at_secs: f64,
    rss: u64,
    fds: usize,
    root_bytes: u64,
    store_bytes: u64,
}

async fn text_rows(c: &Client, sql: &str) -> BenchResult<Vec<Vec<String>>> {
    Ok(c.simple_query(sql)
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("").to_string()).collect()),
            _ => None,
        })
        .collect())
}

pub(crate) async fn soak(work: &Path, minutes: f64, quick: bool, report: &mut Report) -> BenchResult<()> {
    let dir = work.join("soak");
    let (root, store_dir): (PathBuf, PathBuf) = (dir.join("root"), dir.join("store"));
    std::fs::create_dir_all(&root)?;
    std::fs::create_dir_all(&store_dir)?;
    let store = fs(&store_dir);
    let (backup_every, kill_every) = if quick {
        (Duration::from_secs(15), Duration::from_secs(20))
    } else {
        (Duration::from_secs(60), Duration::from_secs(180))
    };
    let run_for = Duration::from_secs_f64(minutes * 60.0);
    let started = Instant::now();
    let mut server = Server::start(&root, &store)?;
    let mut c = server.connect().await?;
    c.batch_execute("CREATE TABLE soak (ts TIMESTAMP, b LONG, i LONG) TIMESTAMP(ts) PARTITION BY HOUR")
        .await?;
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut batch, mut restarts, mut queries, mut backups_started) = (0u64, 0u32, 0u64, 0u32);
    let (mut last_backup, mut last_kill, mut last_sample) = (Instant::now(), Instant::now(), None::<Instant>);
    let mut samples = Vec::new();
    while started.elapsed() < run_for {
        batch += 1;
        let values: Vec<String> = (0..ROWS)
            .map(|i| {
                format!(
                    "(to_timestamp_micros({}), {batch}, {i})",
                    1_704_067_200_000_000 + (batch % 48) * 3_600_000_000 + i
                )
            })
            .collect();
        if c.batch_execute(&format!("INSERT INTO soak VALUES {}", values.join(", ")))
            .await
            .is_ok()
        {
            acked.insert(batch, ROWS);
        }
        if batch % 10 == 0
            && text_rows(&c, "SELECT count(*), max(b) FROM soak WHERE i < 10")
                .await
                .is_ok()
        {
            queries += 1;
        }
        if last_backup.elapsed() >= backup_every {
            last_backup = Instant::now();
            backups_started += u32::from(c.batch_execute("BACKUP DATABASE").await.is_ok());
        }
        if last_sample.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            last_sample = Some(Instant::now());
            let (rss, fds) = server.sample();
            samples.push(Sample {
                at_secs: started.elapsed().as_secs_f64(),
                rss,
                fds,
                root_bytes: du(&root),
                store_bytes: du(&store_dir),
            });
        }
        if last_kill.elapsed() >= kill_every {
            last_kill = Instant::now();
            server.kill9();
            server = Server::start(&root, &store)?;
            c = server.connect().await?;
            restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The end: every acknowledged insert is there, whole; every complete backup verifies.
    let found: BTreeMap<u64, u64> = text_rows(&c, "SELECT b, count(*) FROM soak GROUP BY b")
        .await?
        .iter()
        .filter_map(|r| Some((r[0].parse().ok()?, r[1].parse().ok()?)))
        .collect();
    let lost = acked.iter().filter(|(b, rows)| found.get(b) != Some(rows)).count();
    let torn = found.values().filter(|&&rows| rows != ROWS).count();
    c.query_one("BACKUP DATABASE WAIT", &[]).await?;
    let complete: Vec<String> = text_rows(&c, "SELECT backup_timestamp, status FROM backups()")
        .await?
        .into_iter()
        .filter(|r| r[1] == "backup complete" || r[1] == "cleanup complete")
        .map(|r| r[0].clone())
        .collect();
    let mut verified = 0;
    for ts in &complete {
        let row = c.query_one(&format!("VERIFY BACKUP '{ts}'"), &[]).await?;
        verified += usize::from(row.get::<_, String>("status") == "ok");
    }
    let table_bytes = du(&root.join("db/soak"));
    server.kill9();

    let half = samples.len() / 2;
    let peak = |s: &[Sample]| s.iter().map(|x| x.rss).max().unwrap_or(0) as f64 / MIB;
    let (first, second) = (peak(&samples[..half.max(1).min(samples.len())]), peak(&samples[half..]));
    let last = samples.last().ok_or("no sample taken")?;
    let fds: Vec<usize> = samples.iter().map(|s| s.fds).collect();
    report.line(format!(
        "14. soak, {minutes:.0} min: {} inserts acknowledged ({} rows), {queries} queries, {backups_started} backups started, \
         {restarts} kill -9 and restarts; lost or torn inserts: {lost} lost, {torn} torn; complete backups kept: {}, verified: {verified}\
         \n   server RSS peak: {first:.0} MiB in the first half, {second:.0} MiB in the second; open files {}..{}; \
         root {:.1} MB (table {:.1} MB), store {:.1} MB at the end",
        acked.len(),
        acked.len() as u64 * ROWS,
        complete.len(),
        fds.iter().min().unwrap_or(&0),
        fds.iter().max().unwrap_or(&0),
        last.root_bytes as f64 / 1e6,
        table_bytes as f64 / 1e6,
        last.store_bytes as f64 / 1e6,
    ));
    report.set(
        "soak",
        json!({
            "minutes": minutes,
            "inserts_acknowledged": acked.len(),
            "lost": lost,
            "torn": torn,
            "restarts": restarts,
            "queries": queries,
            "backups_complete": complete.len(),
            "backups_verified": verified,
            "rss_peak_first_half_mib": first,
            "rss_peak_second_half_mib": second,
            "samples": samples.iter().map(|s| json!({
                "at_secs": s.at_secs, "rss_mib": s.rss as f64 / MIB, "fds": s.fds,
                "root_mb": s.root_bytes as f64 / 1e6, "store_mb": s.store_bytes as f64 / 1e6,
            })).collect::<Vec<_>>(),
        }),
    );
    if lost > 0 || torn > 0 || verified < complete.len() {
        return Err(format!(
            "soak: {lost} inserts lost, {torn} torn, {} of {} backups failed to verify",
            complete.len() - verified,
            complete.len()
        )
        .into());
    }
    Ok(())
}
