//! Backups to a real S3-compatible server (s3s-fs on loopback), as `.ci/run` installs it.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Options, Server, temp_root};

const KEY: &str = "strata-test-key";
const SECRET: &str = "strata-test-secret-DO-NOT-LOG";

/// An s3s-fs process serving a temporary folder; killed on drop.
struct S3Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("s3s-fs")).collect::<Vec<_>>())
        .unwrap_or_default();
    // Where .ci/run installs it (STRATA_TOOLS, else the user's cache).
    let cache = std::env::var_os("STRATA_TOOLS").map(PathBuf::from).or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("strata-ci/tools"))
    });
    candidates
        .into_iter()
        .chain(cache.map(|c| c.join("bin/s3s-fs")))
        .find(|p| p.is_file())
}

/// Starts s3s-fs with bucket `bucket`, or `None` when it is not installed (CI installs it).
fn start_s3(bucket: &str) -> Option<S3Server> {
    let Some(bin) = s3s_fs() else {
        crate::harness::missing_tool("s3s-fs (an S3 server)");
        return None;
    };
    let dir = temp_root();
    std::fs::create_dir_all(dir.path().join(bucket)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            KEY,
            "--secret-key",
            SECRET,
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(S3Server { child, port, dir })
}

fn conn(port: u16, secret: &str) -> String {
    format!(
        "s3::bucket=backups;region=us-east-1;access_key_id={KEY};secret_access_key={secret};endpoint=http://127.0.0.1:{port};allow_http=true;"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_to_s3_and_bad_credentials_fail_without_leaking_the_secret() {
    let Some(s3) = start_s3("backups") else { return };
    let root = temp_root();
    let server = Server::start(
        root.path(),
        Options::default().conf("backup.object.store", &conn(s3.port, SECRET)),
    );
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP, v DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t SELECT to_timestamp_micros(1704067200000000 + value * 1000000), random() FROM generate_series(0, 199999);",
    )
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let status: String = c.query_one("SELECT status FROM backups()", &[]).await.unwrap().get(0);
    assert_eq!(status, "backup complete");
    let manifests = std::fs::read_dir(s3.dir.path().join("backups/_backup"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert_eq!(std::fs::read_dir(manifests.join("manifests")).unwrap().count(), 1);
    drop(c);
    drop(server);

    // Wrong secret: the backup fails with the store's error, and the secret appears nowhere.
    let root = temp_root();
    let wrong = "wrong-secret-ALSO-SECRET";
    let server = Server::start(
        root.path(),
        Options::default().conf("backup.object.store", &conn(s3.port, wrong)),
    );
    let c = server.connect().await;
    let err = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap_err();
    let msg = format!("{err:?}");
    assert!(!msg.contains(wrong) && !msg.contains(SECRET), "{msg}");
    let rows = c.simple_query("SELECT * FROM backups()").await.unwrap();
    assert!(!format!("{rows:?}").contains(wrong));
    assert!(!server.stderr().contains(wrong), "secrets must not be logged");
}

/// Exact aggregate of `big` (integer sums, so the order of addition does not matter).
async fn big_digest(c: &tokio_postgres::Client) -> (i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT count(*), sum(CAST(a * 1e9 AS BIGINT)), sum(CAST(c * 1e9 AS BIGINT)) FROM big",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn largest_object(dir: &std::path::Path) -> u64 {
    let mut largest = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                largest = largest.max(e.metadata().unwrap().len());
            }
        }
    }
    largest
}

#[tokio::test(flavor = "multi_thread")]
async fn large_files_go_up_in_parts_restore_from_s3_and_a_dead_store_fails_the_backup() {
    let Some(mut s3) = start_s3("backups") else { return };
    let store = conn(s3.port, SECRET);
    let root = temp_root();
    let server = Server::start(root.path(), Options::default().conf("backup.object.store", &store));
    let c = server.connect().await;
    // One partition, one data file of about 24 MiB of incompressible doubles.
    c.batch_execute(
        "CREATE TABLE big (ts TIMESTAMP, a DOUBLE, b DOUBLE, c DOUBLE) TIMESTAMP(ts) PARTITION BY YEAR;
         INSERT INTO big SELECT to_timestamp_micros(1704067200000000 + value * 1000), random() AS a, random() AS b, random() AS c
             FROM generate_series(0, 999999);",
    )
    .await
    .unwrap();
    let expected = big_digest(&c).await;
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let largest = largest_object(&s3.dir.path().join("backups/_backup"));
    assert!(largest > 16 << 20, "the data file went up whole: {largest} bytes");
    drop(c);
    drop(server);

    // Restore on a new machine straight from S3.
    let copy = temp_root();
    std::fs::write(
        copy.path().join("_backup_restore"),
        format!("backup.object.store={store}\n"),
    )
    .unwrap();
    let restored = Server::start(
        copy.path(),
        Options::default()
            .conf("backup.object.store", &store)
            .conf("backup.max.bandwidth.mb", "4"),
    );
    let c = restored.connect().await;
    assert_eq!(big_digest(&c).await, expected);
    assert!(!restored.stderr().contains(SECRET), "secrets must not be logged");

    // The store dies during a (throttled) backup: it ends failed, with the store's error.
    c.batch_execute(
        "INSERT INTO big SELECT to_timestamp_micros(1735689600000000 + value * 1000), random() AS a, random() AS b, random() AS c
             FROM generate_series(0, 999999);",
    )
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (status, error) = loop {
        let r = c
            .query_one("SELECT status, backup_error FROM backups() LIMIT 1", &[])
            .await
            .unwrap();
        let status: String = r.get(0);
        if status != "backup in progress" {
            break (status, r.get::<_, Option<String>>(1).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "the backup did not notice the dead store");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, "backup failed");
    assert!(error.contains("object store"), "{error}");
    assert!(!error.contains(SECRET));
}
