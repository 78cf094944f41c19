//! Disk full, on real file systems: a backup onto a full `fs::` store and a restore onto
//! a disk that is too small. Each runs on a small tmpfs mounted in a private mount
//! namespace (`unshare`), so nothing outside the test sees it.
use std::path::Path;
use std::process::Command;

use crate::backup::{backups, field, store_opts};
use crate::harness::{Server, binary, temp_root};

/// `unshare` flags giving a mount namespace where tmpfs may be mounted, if this
/// machine allows one (as root: `-m`; otherwise a user namespace: `-Urm`).
fn mount_namespace() -> Option<Vec<String>> {
    let probe = temp_root();
    let mount_point = probe.path().to_str()?.to_string();
    let flags = [&["-m"][..], &["-Urm"][..]].into_iter().find_map(|flags| {
        let ok = Command::new("unshare")
            .args(flags)
            .args(["sh", "-c", "mount -t tmpfs -o size=1m tmpfs \"$0\"", &mount_point])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| flags.iter().map(|f| f.to_string()).collect())
    });
    if flags.is_none() {
        eprintln!("skipped: this machine does not allow mounting a tmpfs in a mount namespace");
    }
    flags
}

/// A command prefix that mounts a tmpfs of `size` on `mount_point`, then runs the rest.
fn on_tmpfs(ns: &[String], mount_point: &Path, size: &str, then: &str) -> Vec<String> {
    let mut wrapper = vec!["unshare".to_string()];
    wrapper.extend(ns.iter().cloned());
    wrapper.extend([
        "sh".to_string(),
        "-c".to_string(),
        format!("mount -t tmpfs -o size={size} tmpfs \"$0\" && {then}"),
        mount_point.display().to_string(),
    ]);
    wrapper
}

const BIG_TABLE: &str = "CREATE TABLE big (ts TIMESTAMP, a DOUBLE, b DOUBLE) TIMESTAMP(ts) PARTITION BY MONTH;
     INSERT INTO big SELECT to_timestamp_micros(1704067200000000 + value * 1000), random() AS a, random() AS b
         FROM generate_series(0, 799999);";

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_onto_a_full_store_fails_cleanly_and_earlier_backups_stay_restorable() {
    let Some(ns) = mount_namespace() else { return };
    let (root, store) = (temp_root(), temp_root());
    let mut opts = store_opts(store.path());
    // The server runs in the namespace, with its backup store on a 6 MiB tmpfs.
    opts.wrapper = on_tmpfs(&ns, store.path(), "6m", "exec \"$@\"");
    let server = Server::start(root.path(), opts);
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE small (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO small VALUES ('2024-01-01', 1), ('2024-01-02', 2);",
    )
    .await
    .unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    // About 13 MB of incompressible doubles: more than the store has room for.
    c.batch_execute(BIG_TABLE).await.unwrap();
    let _ = c.query_one("BACKUP DATABASE WAIT", &[]).await;
    let rows = backups(&c).await;
    assert_eq!(field(&rows[0], "status"), "backup failed", "{rows:?}");
    let error = field(&rows[0], "backup_error");
    assert!(error.contains("No space left on device"), "{error}");
    // No manifest for the failed backup: only the first one exists, complete.
    let store_in_ns = Path::new("/proc")
        .join(server.pid().to_string())
        .join("root")
        .join(store.path().strip_prefix("/").unwrap());
    let instance = std::fs::read_dir(store_in_ns.join("_backup"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let manifests = std::fs::read_dir(instance.join("manifests")).unwrap().count();
    assert_eq!(manifests, 1, "only the complete backup has a manifest");
    assert!(field(&rows[1], "status").contains("complete"), "{rows:?}");
    let verify = c.query_one("VERIFY BACKUP LATEST", &[]).await.unwrap();
    assert_eq!(verify.get::<_, String>("status"), "ok");
    // The database itself is untouched and keeps serving.
    let count = c.query_one("SELECT count(*) FROM big", &[]).await.unwrap();
    assert_eq!(count.get::<_, i64>(0), 800_000);
    c.batch_execute("INSERT INTO small VALUES ('2024-01-03', 3)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_onto_a_disk_too_small_is_refused_before_writing() {
    let Some(ns) = mount_namespace() else { return };
    let (root, store) = (temp_root(), temp_root());
    let server = Server::start(root.path(), store_opts(store.path()));
    let c = server.connect().await;
    c.batch_execute(BIG_TABLE).await.unwrap();
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    drop(c);
    drop(server);

    // `strata restore` onto a 20 MiB tmpfs (the backup needs its 13 MB plus a margin);
    // the script reports the exit code and every file left on the small disk.
    let target = temp_root();
    let script = on_tmpfs(
        &ns,
        target.path(),
        "20m",
        "\"$@\"; echo \"exit=$?\"; find \"$0\" -type f",
    );
    let out = Command::new(&script[0])
        .args(&script[1..])
        .arg(binary())
        .args(["restore", "--store"])
        .arg(format!("fs::root={};", store.path().display()))
        .arg("--root")
        .arg(target.path().join("root"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("exit=1"), "{stdout}\n{stderr}");
    assert!(stderr.contains("not enough disk space"), "{stderr}");
    assert!(
        !stdout.contains(".parquet") && !stdout.contains("_commit.json"),
        "nothing may be written: {stdout}"
    );
}
