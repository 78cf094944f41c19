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
    candidates
        .into_iter()
        .chain([PathBuf::from("/work/tools/bin/s3s-fs")])
        .find(|p| p.is_file())
}

/// Starts s3s-fs with bucket `bucket`, or `None` when it is not installed (CI installs it).
fn start_s3(bucket: &str) -> Option<S3Server> {
    let Some(bin) = s3s_fs() else {
        assert!(
            std::env::var("CI").is_err(),
            "s3s-fs is required in CI (.ci/run installs it)"
        );
        eprintln!("s3s-fs not installed: skipping the S3 test (run .ci/run to install it)");
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
    assert_eq!(status, "cleanup complete");
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
