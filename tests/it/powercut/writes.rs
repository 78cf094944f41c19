//! Inserts, COPY, DDL and housekeeping merges, cut at random points.
use super::Disk;
use super::model::Model;

/// Statements per round between two cuts.
const STATEMENTS: usize = 25;
const CUTS: u32 = 30;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_power_cuts() {
    let Some(mut disk) = Disk::mount("acknowledged_writes_survive_power_cuts") else {
        return;
    };
    let mut server = disk.first_start();
    let (mut model, span) = disk.changes_of_workload(&server, Model::default(), STATEMENTS).await;
    while disk.cuts < CUTS {
        (server, model) = disk.cut_and_restart(server, model, span, STATEMENTS).await;
    }
    assert!(
        model.acked > CUTS as u64,
        "{} statements acknowledged in all",
        model.acked
    );
}
