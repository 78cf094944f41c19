//! 9 and 10 (issue 16): backup and restore through an S3 server on loopback
//! (s3s-fs), beside that server's raw rate for the same bytes (parallel PUTs
//! and GETs through object_store, as many at once as Strata's default) and
//! `rclone copy`; then many small files with 20 ms added to every request,
//! where a tool that waits for one round trip before the next falls behind.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::measure::{Run, Stat, Timer, have, settle, settle_cold, sh};
use crate::{BenchResult, ChildOp, Plan, Report, fmt_stat, in_child, open, ratio, secs};

const KEY: &str = "bench";
const SECRET: &str = "bench-secret";
/// Added to every request in the latency run.
const LATENCY: Duration = Duration::from_millis(20);

/// An s3s-fs server on loopback, serving buckets as folders of `dir`.
pub(crate) struct S3Server {
    child: Child,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` on PATH or where `.ci/run` installs it.
pub(crate) fn s3s_fs() -> Option<PathBuf> {
    let cache = std::env::var_os("STRATA_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata-ci/tools")));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("s3s-fs"));
    on_path.chain(cache.map(|c| c.join("bin/s3s-fs"))).find(|p| p.is_file())
}

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl S3Server {
    pub(crate) fn start(program: &Path, dir: PathBuf) -> BenchResult<Self> {
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("s3s-fs did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// A new, empty bucket.
    pub(crate) fn bucket(&self, name: &str) -> BenchResult<String> {
        let _ = std::fs::remove_dir_all(self.dir.join(name));
        std::fs::create_dir_all(self.dir.join(name))?;
        Ok(name.to_string())
    }
}

/// Strata's connection string for `bucket`, reached through `port`.
pub(crate) fn strata_store(port: u16, bucket: &str) -> String {
    format!(
        "s3::bucket={bucket};region=us-east-1;access_key_id={KEY};secret_access_key={SECRET};\
         endpoint=http://127.0.0.1:{port};allow_http=true;"
    )
}

/// rclone's on-the-fly remote for the whole of `bucket`, reached through
/// `port` (the bucket's root: s3s-fs answers rclone's HEAD of a folder key
/// with a 500, which rclone retries for about 90 s).
fn rclone_remote(port: u16, bucket: &str) -> String {
    format!(
        ":s3,provider=Other,env_auth=false,access_key_id={KEY},secret_access_key={SECRET},\
         endpoint='http://127.0.0.1:{port}',region=us-east-1:{bucket}"
    )
}

/// `rclone copy from to` with `transfers` at once (Strata's concurrency). An
/// `AWS_CA_BUNDLE` in the environment would make rclone's S3 client fail on
/// plain HTTP, so it is left out.
fn rclone_copy(from: &str, to: &str, transfers: usize) -> Run {
    sh(
        &format!(
            "env -u AWS_CA_BUNDLE rclone copy --transfers {transfers} --checkers {transfers} --no-check-dest \"{from}\" \"{to}\""
        ),
        &[],
    )
}

/// A TCP proxy on loopback that holds every chunk a client sends for
/// [`LATENCY`] before passing it on, so each request pays at least one such
/// wait, as over a real network. Returns its port.
async fn latency_proxy(target: u16) -> BenchResult<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                // Only the added wait delays a request, not Nagle's algorithm.
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = async move {
                    let mut buf = vec![0u8; 256 << 10];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        tokio::time::sleep(LATENCY).await;
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                };
                let downstream = async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                };
                tokio::join!(upstream, downstream);
            });
        }
    });
    Ok(port)
}

/// Every data file under `dir`.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|x| x == "parquet") {
            out.push(path);
        }
    }
    out
}

/// The server's own rate for `files`: parallel PUTs of their bytes into
/// `bucket`, then parallel GETs of them back (after emptying the page cache).
async fn raw_rate(port: u16, bucket: &str, files: &[PathBuf], concurrency: usize) -> BenchResult<(Run, Run)> {
    let store = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(KEY)
            .with_secret_access_key(SECRET)
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .build()?,
    );
    let key = |i: usize| object_store::path::Path::from(format!("raw/{i}"));
    settle();
    let timer = Timer::start();
    futures::stream::iter(files.iter().enumerate().map(|(i, path)| {
        let store = store.clone();
        async move {
            let bytes = tokio::fs::read(path).await?;
            store.put(&key(i), bytes.into()).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<Vec<_>>()
    .await?;
    let put = timer.stop();
    settle_cold();
    let timer = Timer::start();
    futures::stream::iter((0..files.len()).map(|i| {
        let store = store.clone();
        async move {
            let mut body = store.get(&key(i)).await?.into_stream();
            while let Some(chunk) = body.next().await {
                chunk?;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<Vec<_>>()
    .await?;
    Ok((put, timer.stop()))
}

/// Medians of Strata's backups (each into a new bucket) and restores (each of
/// the last backup into a new root) through `port`.
fn strata_runs(
    server: &S3Server,
    port: u16,
    root: &Path,
    repeat: usize,
    name: &str,
) -> BenchResult<(Stat, Stat, Stat)> {
    let (mut backups, mut serving, mut durable) = (Vec::new(), Vec::new(), Vec::new());
    let mut bucket = String::new();
    for r in 0..repeat {
        bucket = server.bucket(&format!("{name}-{r}"))?;
        backups.push(in_child(ChildOp::Backup, root, &strata_store(port, &bucket))?.run);
    }
    for r in 0..repeat {
        let target = root.with_file_name(format!("{name}_restored_{r}"));
        let done = in_child(ChildOp::Restore, &target, &strata_store(port, &bucket))?;
        serving.push(done.run);
        durable.push(done.durable_secs.ok_or("restore: no 'durable_secs'")?);
        std::fs::remove_dir_all(&target)?;
    }
    Ok((secs(&backups), secs(&serving), Stat::of(&durable)))
}

/// rclone copying `dir` into the store and back (then synced), with as many
/// transfers as Strata's default concurrency, beside `ours` (backup, durable
/// restore medians): the report's text and figures.
fn beside_rclone(
    server: &S3Server,
    port: u16,
    dir: &Path,
    repeat: usize,
    name: &str,
    ours: (f64, f64),
) -> BenchResult<(String, Vec<(&'static str, serde_json::Value)>)> {
    if !have("rclone") {
        return Ok(("\n   rclone: not installed (Debian's rclone)".into(), Vec::new()));
    }
    let transfers = backup::Concurrency::default_for(false).upload;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for r in 0..repeat {
        let bucket = server.bucket(&format!("{name}-rclone-{r}"))?;
        settle();
        up.push(rclone_copy(
            &dir.display().to_string(),
            &rclone_remote(port, &bucket),
            transfers,
        ));
        let target = dir.with_file_name(format!("{name}_rclone_restored"));
        settle_cold();
        let timer = Timer::start();
        rclone_copy(&rclone_remote(port, &bucket), &target.display().to_string(), transfers);
        sh("sync", &[]);
        down.push(timer.stop());
        std::fs::remove_dir_all(&target)?;
    }
    let (up, down) = (secs(&up), secs(&down));
    let text = format!(
        "\n   rclone copy up: {} -> ours/rclone {}; down + sync: {} -> ours/rclone {}",
        fmt_stat(up, "s"),
        ratio(ours.0, up.median),
        fmt_stat(down, "s"),
        ratio(ours.1, down.median)
    );
    Ok((
        text,
        vec![("rclone_up_seconds", up.json()), ("rclone_down_seconds", down.json())],
    ))
}

/// 9 and 10.
pub(crate) async fn s3(plan: &Plan, root: &Path, db_bytes: f64, work: &Path, report: &mut Report) -> BenchResult<()> {
    let Some(program) = s3s_fs() else {
        report.line(
            "9. S3: skipped, s3s-fs not found (.ci/run installs it; or cargo install s3s-fs --features binary)".into(),
        );
        return Ok(());
    };
    let server = S3Server::start(&program, work.join("s3"))?;
    let concurrency = backup::Concurrency::default_for(false);

    // 9: the big database.
    let (backup_s, serving_s, durable_s) = strata_runs(&server, server.port, root, plan.repeat, "db")?;
    let files = parquet_files(&root.join("db"));
    let raw_bucket = server.bucket("raw")?;
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..plan.repeat {
        let (put, get) = raw_rate(server.port, &raw_bucket, &files, concurrency.upload).await?;
        puts.push(put);
        gets.push(get);
    }
    let (put_s, get_s) = (secs(&puts), secs(&gets));
    let mb = db_bytes / 1e6;
    let mut line = format!(
        "9. S3 on loopback (s3s-fs), {mb:.0} MB, {} requests at once:\n   \
         backup: {} ({:.0} MB/s); raw PUTs of the same files: {} ({:.0} MB/s) -> ours/raw rate {:.2}x\n   \
         restore until serving: {}, until durable: {} ({:.0} MB/s); raw GETs: {} ({:.0} MB/s) -> ours/raw rate {:.2}x",
        concurrency.upload,
        fmt_stat(backup_s, "s"),
        mb / backup_s.median,
        fmt_stat(put_s, "s"),
        mb / put_s.median,
        put_s.median / backup_s.median,
        fmt_stat(serving_s, "s"),
        fmt_stat(durable_s, "s"),
        mb / durable_s.median,
        fmt_stat(get_s, "s"),
        mb / get_s.median,
        get_s.median / durable_s.median,
    );
    let mut figures = json!({"backup_seconds": backup_s.json(), "restore_serving_seconds": serving_s.json(),
        "restore_durable_seconds": durable_s.json(), "raw_put_seconds": put_s.json(), "raw_get_seconds": get_s.json(),
        "concurrency": concurrency.upload});
    let ours = (backup_s.median, durable_s.median);
    let db_dir = root.join("db");
    let (text, extra) = beside_rclone(&server, server.port, &db_dir, plan.repeat, "db", ours)?;
    line += &text;
    extra.into_iter().for_each(|(k, v)| figures[k] = v);
    report.line(line);
    report.set("s3", figures);

    // 10: many small files, 20 ms per request.
    let small = work.join("small_root");
    {
        let db = open(&small, None).await?;
        crate::data::build_trades(db.storage(), 2, plan.days.min(100), 20)?;
        db.shutdown().await;
    }
    let small_files = parquet_files(&small.join("db")).len();
    let slow = latency_proxy(server.port).await?;
    let (backup_s, _, durable_s) = strata_runs(&server, slow, &small, plan.repeat, "small")?;
    let serial = small_files as f64 * LATENCY.as_secs_f64();
    let mut line = format!(
        "10. {small_files} small files, {} ms added to every request: backup {}, restore {}; \
         one request at a time would need at least {serial:.1} s for the data files alone -> ours/serial {}",
        LATENCY.as_millis(),
        fmt_stat(backup_s, "s"),
        fmt_stat(durable_s, "s"),
        ratio(backup_s.median, serial)
    );
    let mut figures = json!({"files": small_files, "latency_ms": LATENCY.as_millis() as u64,
        "backup_seconds": backup_s.json(), "restore_seconds": durable_s.json(), "serial_seconds": serial});
    let ours = (backup_s.median, durable_s.median);
    let small_dir = small.join("db");
    let (text, extra) = beside_rclone(&server, slow, &small_dir, plan.repeat, "small", ours)?;
    line += &text;
    extra.into_iter().for_each(|(k, v)| figures[k] = v);
    report.line(line);
    report.set("s3_latency", figures);
    Ok(())
}
