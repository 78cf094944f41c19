//! Inserts, COPY, DDL and housekeeping merges, cut at random points.
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::model::Model;
use super::{Disk, options, start_after_cut};
use crate::harness::Server;

/// Statements per round between two cuts.
const STATEMENTS: usize = 25;
const CUTS: u32 = 30;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_power_cuts() {
    let Some(mut disk) = Disk::mount("acknowledged_writes_survive_power_cuts") else {
        return;
    };
    let root = disk.path().join("root");
    let opts = options(&disk);
    let server = Server::start(&root, opts.clone());
    disk.sync_all();
    // A first round without a cut measures how many changes a round makes.
    let before = disk.changes();
    let rng = StdRng::seed_from_u64(disk.rng.random());
    let mut model = Model::default().run(server.connect().await, rng, STATEMENTS).await;
    let span = disk.changes() - before;
    let mut server = server;
    for _ in 0..CUTS {
        disk.arm_within(span);
        let rng = StdRng::seed_from_u64(disk.rng.random());
        let workload = tokio::spawn(model.run(server.connect().await, rng, STATEMENTS));
        tokio::select! {
            _ = disk.until_cut() => {}
            _ = wait_finished(&workload) => disk.cut_now(),
        }
        server.kill9();
        model = workload.await.expect("the workload");
        eprintln!(
            "cut {}: changes {} acked {} in flight {:?} tables {}",
            disk.cuts + 1,
            disk.changes(),
            model.acked,
            model.in_flight,
            model.tables.len()
        );
        disk.power_on();
        server = start_after_cut(&disk, &root, &opts);
        model.check(&server.connect().await, disk.cuts).await;
    }
    assert!(model.acked > 0);
}

async fn wait_finished<T>(task: &tokio::task::JoinHandle<T>) {
    while !task.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
