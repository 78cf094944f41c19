//! CHECKPOINT CREATE / RELEASE among the writes, and the `_restore` rollback, cut at random points.
use rand::Rng;

use super::Disk;
use super::model::{Change, Model};

const STATEMENTS: usize = 20;
const CUTS: u32 = 24;

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_and_rollbacks_survive_power_cuts() {
    let Some(mut disk) = Disk::mount("checkpoints_and_rollbacks_survive_power_cuts") else {
        return;
    };
    let root = disk.root();
    let mut server = disk.first_start();
    let model = Model {
        checkpoints: true,
        ..Model::default()
    };
    let (mut model, span) = disk.changes_of_workload(&server, model, STATEMENTS).await;
    let mut rollbacks = 0;
    while disk.cuts < CUTS {
        (server, model) = disk.cut_and_restart(server, model, span, STATEMENTS).await;
        let Some(at_checkpoint) = model.checkpoint.clone() else {
            continue;
        };
        if !disk.rng.random_bool(0.5) {
            continue;
        }
        // Roll back to the checkpoint, with the power cut during the rollback.
        server.kill9();
        std::fs::write(root.join("_restore"), "").unwrap();
        disk.sync_all();
        disk.cut_during_start(400);
        server = disk.start();
        rollbacks += 1;
        assert!(
            !root.join("_restore").exists(),
            "the trigger is removed once the rollback is done"
        );
        // The rollback releases the checkpoint last: a cut before that leaves it in progress.
        model.tables = at_checkpoint;
        model.in_flight = Some(Change::CheckpointRelease);
        model.check(&server.connect().await, disk.cuts).await;
    }
    assert!(rollbacks > 0, "no rollback was tried");
}

/// Regression: the rollback removed a dropped table's `_dropped` marker without
/// syncing the table's folder, so a power cut after the rollback dropped it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_dropped_during_a_checkpoint_stays_back_after_rollback_and_power_cut() {
    let Some(mut disk) = Disk::mount("a_table_dropped_during_a_checkpoint_stays_back") else {
        return;
    };
    let root = disk.root();
    let server = disk.start();
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE kept (ts TIMESTAMP, v LONG) TIMESTAMP(ts) PARTITION BY DAY;
         INSERT INTO kept VALUES ('2024-01-01', 1), ('2024-01-02', 2);
         CHECKPOINT CREATE;
         DROP TABLE kept;",
    )
    .await
    .unwrap();
    server.kill9();
    std::fs::write(root.join("_restore"), "").unwrap();
    disk.sync_all();
    // The rollback runs to the end, then the power goes.
    let server = disk.start();
    disk.cut_now();
    server.kill9();
    disk.power_on();
    let server = disk.start();
    let r = server.connect().await.query_one("SELECT count(*) FROM kept", &[]).await;
    assert_eq!(r.expect("the table is back").get::<_, i64>(0), 2);
}
