//! Backups to real object store servers on loopback, as `.ci/run` installs
//! them: s3s-fs (S3) and Azurite (Azure Blob). (Google Cloud Storage has no
//! emulator here that speaks the XML API object_store uses: see
//! docs/operations.md.) Each goes through the same life: a backup, an incremental one,
//! retention, verify, `RESTORE TABLE`, a restore from the trigger file on a new
//! machine with a file above the part size, `backup_table()` in place, bad
//! credentials, and the store killed midway.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use tokio_postgres::Client;

use crate::backup::{backups, field};
use crate::harness::{Options, Server, table_digest, temp_root};

const S3_KEY: &str = "strata-test-key";
const S3_SECRET: &str = "strata-test-secret-DO-NOT-LOG";
/// Azurite's well-known development account and key.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const BUCKET: &str = "backups";

/// A store server serving a temporary folder; killed on drop.
pub(crate) struct StoreServer {
    child: Child,
    /// The connection string Strata uses.
    pub(crate) conn: String,
    /// The secret inside `conn`, which must never be shown.
    secret: String,
    _dir: tempfile::TempDir,
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl StoreServer {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on PATH or where `.ci/run` installs tools (`STRATA_TOOLS/bin`, else
/// the user's cache); `None` (after [`crate::harness::missing_tool`]) when absent.
fn tool(name: &str, what: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let cache = std::env::var_os("STRATA_TOOLS").map(PathBuf::from).or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("strata-ci/tools"))
    });
    let found = on_path
        .into_iter()
        .chain(cache.map(|c| c.join("bin").join(name)))
        .find(|p| p.is_file());
    if found.is_none() {
        crate::harness::missing_tool(what);
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `program args` and waits until it accepts connections on `port`.
fn serve(program: PathBuf, args: &[String], port: u16, what: &str) -> Child {
    let mut child = Command::new(&program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what} ({}): {e}", program.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

pub(crate) fn s3() -> Option<StoreServer> {
    let bin = tool("s3s-fs", "s3s-fs (an S3 server)")?;
    let dir = temp_root();
    std::fs::create_dir_all(dir.path().join(BUCKET)).unwrap();
    let port = free_port();
    let args = [
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--access-key",
        S3_KEY,
        "--secret-key",
        S3_SECRET,
        &dir.path().display().to_string(),
    ]
    .map(String::from);
    let child = serve(bin, &args, port, "s3s-fs");
    Some(StoreServer {
        child,
        conn: format!(
            "s3::bucket={BUCKET};region=us-east-1;access_key_id={S3_KEY};secret_access_key={S3_SECRET};endpoint=http://127.0.0.1:{port};allow_http=true;"
        ),
        secret: S3_SECRET.to_string(),
        _dir: dir,
    })
}

fn azurite() -> Option<StoreServer> {
    let bin = tool("azurite-blob", "Azurite (npm package azurite)")?;
    let dir = temp_root();
    let port = free_port();
    let args = [
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--location",
        &dir.path().display().to_string(),
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
        "--disableTelemetry",
    ]
    .map(String::from);
    let child = serve(bin, &args, port, "Azurite");
    let endpoint = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
    // object_store does not create containers: the Azure SDK for Python does.
    let created = Command::new("python3")
        .args([
            "-c",
            "import sys; from azure.storage.blob import BlobServiceClient as C; \
             C.from_connection_string(sys.argv[1]).create_container(sys.argv[2])",
            &format!(
                "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
            ),
            BUCKET,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        created.status.success(),
        "creating the container (pip package azure-storage-blob): {}",
        String::from_utf8_lossy(&created.stderr)
    );
    Some(StoreServer {
        child,
        conn: format!(
            "azblob::endpoint={endpoint};container={BUCKET};account_name={AZURITE_ACCOUNT};account_key={AZURITE_KEY};"
        ),
        secret: AZURITE_KEY.to_string(),
        _dir: dir,
    })
}

async fn two_days(c: &Client) {
    c.batch_execute(
        "CREATE TABLE t (ts TIMESTAMP, v DOUBLE) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO t SELECT to_timestamp_micros(1704067200000000 + value * 1000000), random() FROM generate_series(0, 172799);",
    )
    .await
    .unwrap();
}

/// A year of `big`: one data file of about 24 MiB of incompressible doubles,
/// above the part size.
async fn big_year(c: &Client, year_start_micros: i64) {
    c.batch_execute(&format!(
        "INSERT INTO big SELECT to_timestamp_micros({year_start_micros} + value * 1000), random() AS a, random() AS b, random() AS c
             FROM generate_series(0, 999999);"
    ))
    .await
    .unwrap();
}

/// Exact aggregate of `big` (integer sums, so the order of addition does not
/// matter), or of the table expression `from`.
async fn big_digest(c: &Client) -> (i64, i64, i64) {
    big_digest_of(c, "big").await
}

async fn big_digest_of(c: &Client, from: &str) -> (i64, i64, i64) {
    let r = c
        .query_one(
            &format!("SELECT count(*), sum(CAST(a * 1e9 AS BIGINT)), sum(CAST(c * 1e9 AS BIGINT)) FROM {from}"),
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// The whole life of backups on `store`; `wrong_secret` is tried in place of
/// its secret.
async fn backups_live_on(store: &mut StoreServer, wrong_secret: &str) {
    let root = temp_root();
    let bad = store.conn.replace(&store.secret, wrong_secret);
    let server = Server::start(root.path(), Options::default().conf("backup.object.store", &bad));
    let c = server.connect().await;
    let err = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap_err();
    let rows = c.simple_query("SELECT * FROM backups()").await.unwrap();
    for text in [format!("{err:?}"), format!("{rows:?}"), server.stderr()] {
        assert!(!text.contains(wrong_secret), "the wrong secret was shown: {text}");
    }
    drop(c);
    drop(server);

    let root = temp_root();
    let opts = || {
        Options::default()
            .conf("backup.object.store", &store.conn)
            .conf("backup.cleanup.keep.latest.n", "1")
    };
    let server = Server::start(root.path(), opts());
    let c = server.connect().await;
    two_days(&c).await;
    c.batch_execute("CREATE TABLE big (ts TIMESTAMP, a DOUBLE, b DOUBLE, c DOUBLE) TIMESTAMP(ts) PARTITION BY YEAR")
        .await
        .unwrap();
    big_year(&c, 1_704_067_200_000_000).await;
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let first = backups(&c).await;
    assert_eq!(field(&first[0], "status"), "backup complete", "{first:?}");
    assert_eq!(field(&first[0], "files_uploaded"), "3", "{first:?}");

    // Incremental: only the new day goes up; retention deletes the first backup.
    c.batch_execute("INSERT INTO t VALUES ('2024-01-03T00:00:00', 1.5)")
        .await
        .unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let second = backups(&c).await;
    assert_eq!(second.len(), 1, "retention keeps one: {second:?}");
    assert_eq!(field(&second[0], "status"), "cleanup complete", "{second:?}");
    assert_eq!(field(&second[0], "files_uploaded"), "1", "{second:?}");
    let ok = c.query_one("VERIFY BACKUP LATEST", &[]).await.unwrap();
    assert_eq!(ok.get::<_, String>("status"), "ok");
    let (expected, expected_big) = (table_digest(&c, "t").await, big_digest(&c).await);
    c.batch_execute("RESTORE TABLE t FROM BACKUP LATEST AS t_restored")
        .await
        .unwrap();
    assert_eq!(table_digest(&c, "t_restored").await, expected);
    // Queried where it lies: ranged reads of the store's objects, the large one too.
    assert_eq!(table_digest(&c, "backup_table('t')").await, expected);
    assert_eq!(big_digest_of(&c, "backup_table('big')").await, expected_big);
    drop(c);
    let mut logs = vec![server.stderr()];
    server.stop();

    // A new machine restores from the trigger file, the large file included.
    let copy = temp_root();
    std::fs::write(
        copy.path().join("_backup_restore"),
        format!("backup.object.store={}\n", store.conn),
    )
    .unwrap();
    let restored = Server::start(copy.path(), opts().conf("backup.max.bandwidth.mb", "4"));
    let c = restored.connect().await;
    assert_eq!(table_digest(&c, "t").await, expected);
    assert_eq!(big_digest(&c).await, expected_big);

    // The store dies during a (throttled) backup: it ends failed, with the store's error.
    big_year(&c, 1_735_689_600_000_000).await;
    c.query_one("BACKUP DATABASE", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.kill();
    let deadline = Instant::now() + Duration::from_secs(180);
    let failed = loop {
        let rows = backups(&c).await;
        if field(&rows[0], "status") != "backup in progress" {
            break rows;
        }
        assert!(Instant::now() < deadline, "the backup did not notice the dead store");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(field(&failed[0], "status"), "backup failed", "{failed:?}");
    let error = field(&failed[0], "backup_error");
    assert!(error.contains("object store"), "{error}");
    logs.extend([error, restored.stderr()]);
    for log in logs {
        assert!(!log.contains(&store.secret), "a secret was shown: {log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_live_on_s3() {
    let Some(mut store) = s3() else { return };
    backups_live_on(&mut store, "wrong-secret-ALSO-SECRET").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_live_on_azure_blob_storage() {
    let Some(mut store) = azurite() else { return };
    let wrong_key = base64::engine::general_purpose::STANDARD.encode(b"not the account key, and secret");
    backups_live_on(&mut store, &wrong_key).await;
}
