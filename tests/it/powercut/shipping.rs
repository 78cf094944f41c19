//! Commit shipping with the store (`fs::`) on the same disk as the database, cut
//! at random points of the writes: after each cut the server ships what its
//! journal holds, and the store's newest state restores to exactly what the
//! database holds (every acknowledged commit, the log unbroken).
use std::process::Command;
use std::time::{Duration, Instant};

use super::Disk;
use super::model::{Model, holdings, rows};
use crate::harness::{Server, binary, temp_root};

const STATEMENTS: usize = 20;
const CUTS: u32 = 10;

async fn caught_up(server: &Server) {
    let c = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = rows(&c, "SELECT state, last_error FROM replication_status()").await;
        if status[0][0] == "caught up" {
            return;
        }
        assert!(Instant::now() < deadline, "shipping did not catch up: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_commit_is_shipped_after_power_cuts() {
    let Some(mut disk) = Disk::mount("every_acknowledged_commit_is_shipped_after_power_cuts") else {
        return;
    };
    let store = disk.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let store_conf = format!("fs::root={};", store.display());
    disk.opts = disk
        .opts
        .clone()
        .conf("backup.object.store", &store_conf)
        .conf("replication.role", "primary")
        .conf("replication.primary.throttle.window.duration", "100");
    let mut server = disk.first_start();
    let (mut model, span) = disk.changes_of_workload(&server, Model::default(), STATEMENTS).await;
    while disk.cuts < CUTS {
        (server, model) = disk.cut_and_restart(server, model, span, STATEMENTS).await;
        caught_up(&server).await;
        // The store's newest state, restored elsewhere, is what the database holds.
        let restored = temp_root();
        let out = Command::new(binary())
            .args(["restore", "--store", &store_conf, "--root"])
            .arg(restored.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "after power cut {}: {}",
            disk.cuts,
            String::from_utf8_lossy(&out.stderr)
        );
        let copy = Server::start(restored.path(), Default::default());
        assert_eq!(
            holdings(&copy.connect().await).await,
            model.tables,
            "after power cut {}: the store's newest state",
            disk.cuts
        );
    }
}
