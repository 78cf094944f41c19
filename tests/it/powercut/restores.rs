//! Restores onto the power-cut disk, cut at random points: from the trigger file
//! (full and instant) and with `strata restore`. A half-restored database is
//! never served; the next start (or, after the CLI, its next run) finishes or
//! redoes the restore, and the result is exactly the backup.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::Disk;
use super::model::{Model, Tables, holdings, try_holdings};
use crate::harness::{Server, Started, binary, temp_root, write_conf};

const CUTS: u32 = 8;

/// A database of a few tables made by the random workload, backed up into a
/// store on the real disk; returns the store's folder and what the backup holds.
async fn backed_up() -> (tempfile::TempDir, Tables) {
    let (root, store) = (temp_root(), temp_root());
    let opts = crate::backup::store_opts(store.path());
    let server = Server::start(root.path(), opts);
    let model = Model::default()
        .run(server.connect().await, StdRng::seed_from_u64(7), 40)
        .await;
    let c = server.connect().await;
    c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap();
    let held = holdings(&c).await;
    assert_eq!(held, model.tables);
    (store, held)
}

fn conn(store: &Path) -> String {
    format!("fs::root={};", store.display())
}

/// An empty root on the disk holding `trigger` (if any), all of it durable.
fn fresh_root(disk: &Disk, trigger: Option<String>) {
    let root = disk.root();
    if root.exists() {
        std::fs::remove_dir_all(&root).unwrap();
    }
    std::fs::create_dir(&root).unwrap();
    write_conf(&root, &disk.opts);
    if let Some(text) = trigger {
        std::fs::write(root.join("_backup_restore"), text).unwrap();
    }
    disk.sync_all();
}

/// Starts the server on a trigger: the power goes at a random one of the next
/// `within` changes (when `hydrate`, possibly after it serves, while the files
/// arrive). Whatever it answers before is the whole backup. True if the power
/// went before the restore was done (before the server served, or while hydrating).
async fn start_and_cut(disk: &mut Disk, within: u64, expected: &Tables, hydrate: bool) -> bool {
    disk.arm_within(within);
    let cut_short = match Server::try_start(&disk.root(), disk.opts.clone()) {
        Started::Running(server) => {
            if let Ok(c) = server.connect_as("admin", None).await
                && let Ok(held) = try_holdings(&c).await
            {
                assert_eq!(&held, expected, "served before power cut {}", disk.cuts + 1);
            }
            while hydrate && !disk.is_cut() && !hydrated(&server).await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let during = hydrate && disk.is_cut();
            disk.cut_now();
            server.kill9();
            during
        }
        Started::Exited { code, stderr } => {
            assert!(
                disk.is_cut(),
                "the server failed to start ({code:?}) with the power on: {stderr}"
            );
            true
        }
    };
    disk.power_on();
    cut_short
}

/// Whether every file of an instant restore is local (or there was none).
async fn hydrated(server: &Server) -> bool {
    let Ok(c) = server.connect_as("admin", None).await else {
        return false;
    };
    let Ok(messages) = c.simple_query("SELECT state FROM restore_status()").await else {
        return false;
    };
    messages.iter().any(
        |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if matches!(r.get(0), Some("complete" | "none"))),
    )
}

async fn wait_hydrated(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hydrated(server).await {
        assert!(Instant::now() < deadline, "the instant restore did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn restored_exactly(disk: &Disk, expected: &Tables) -> Server {
    let server = disk.start();
    let c = server.connect().await;
    assert_eq!(&holdings(&c).await, expected, "after power cut {}", disk.cuts);
    assert!(
        !disk.root().join("_backup_restore").exists(),
        "the trigger is removed once done"
    );
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_restores_survive_power_cuts() {
    let Some(mut disk) = Disk::mount("trigger_restores_survive_power_cuts") else {
        return;
    };
    let (store, expected) = backed_up().await;
    let trigger = format!("backup.object.store={}\n", conn(store.path()));
    // One restore without a cut measures how many changes it makes.
    fresh_root(&disk, Some(trigger.clone()));
    let before = disk.changes();
    restored_exactly(&disk, &expected).await.kill9();
    let span = disk.changes() - before;
    let mut cut_short = 0;
    while disk.cuts < CUTS {
        fresh_root(&disk, Some(trigger.clone()));
        cut_short += u32::from(start_and_cut(&mut disk, span, &expected, false).await);
        restored_exactly(&disk, &expected).await.kill9();
    }
    assert!(cut_short > 0, "no cut came before the server served");
}

#[tokio::test(flavor = "multi_thread")]
async fn instant_restores_survive_power_cuts() {
    let Some(mut disk) = Disk::mount("instant_restores_survive_power_cuts") else {
        return;
    };
    let (store, expected) = backed_up().await;
    let trigger = format!(
        "backup.object.store={}\nbackup.restore.mode=instant\n",
        conn(store.path())
    );
    fresh_root(&disk, Some(trigger.clone()));
    let before = disk.changes();
    let server = restored_exactly(&disk, &expected).await;
    wait_hydrated(&server).await;
    server.kill9();
    let span = disk.changes() - before;
    let mut cut_short = 0;
    while disk.cuts < CUTS {
        fresh_root(&disk, Some(trigger.clone()));
        cut_short += u32::from(start_and_cut(&mut disk, span, &expected, true).await);
        // Served at once again, whole, and the files that had not arrived arrive.
        let server = restored_exactly(&disk, &expected).await;
        wait_hydrated(&server).await;
        assert_eq!(holdings(&server.connect().await).await, expected);
        assert!(!disk.root().join("db/.hydration.json").exists());
        server.kill9();
    }
    assert!(cut_short > 0, "no cut came before every file was local");
}

/// `strata restore --store … --root …` on the disk.
fn cli_restore(store: &Path, root: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["restore", "--store", &conn(store), "--root"]).arg(root);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// Waits for the CLI to exit or the power to go (then kills it); true if it
/// exited successfully with the power on.
async fn until_exit_or_cut(disk: &Disk, child: &mut Child) -> bool {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success() && !disk.is_cut();
        }
        if disk.is_cut() {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_restores_survive_power_cuts() {
    let Some(mut disk) = Disk::mount("cli_restores_survive_power_cuts") else {
        return;
    };
    let (store, expected) = backed_up().await;
    let root = disk.root();
    fresh_root(&disk, None);
    let before = disk.changes();
    assert!(cli_restore(store.path(), &root).status().unwrap().success());
    let span = disk.changes() - before;
    restored_exactly(&disk, &expected).await.kill9();
    let mut cut_short = 0;
    while disk.cuts < CUTS {
        fresh_root(&disk, None);
        disk.arm_within(span);
        let mut child = cli_restore(store.path(), &root).spawn().unwrap();
        let finished = until_exit_or_cut(&disk, &mut child).await;
        disk.cut_now();
        disk.power_on();
        if finished {
            // It said it was done: it was durable.
            restored_exactly(&disk, &expected).await.kill9();
            continue;
        }
        cut_short += 1;
        // Cut short: the database is refused, or is empty (nothing was installed), never half there.
        match Server::try_start(&root, disk.opts.clone()) {
            Started::Running(server) => {
                let held = holdings(&server.connect().await).await;
                assert!(
                    held.is_empty() || held == expected,
                    "after power cut {}: {held:?}",
                    disk.cuts
                );
                server.kill9();
            }
            Started::Exited { stderr, .. } => {
                assert!(
                    stderr.contains("did not finish reaching disk"),
                    "after power cut {}: {stderr}",
                    disk.cuts
                );
            }
        }
        // As the message says: remove the database and restore again.
        let _ = std::fs::remove_dir_all(root.join("db"));
        let again = cli_restore(store.path(), &root).output().unwrap();
        assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
        restored_exactly(&disk, &expected).await.kill9();
    }
    assert!(cut_short > 0, "no cut came before the restore's end");
}
