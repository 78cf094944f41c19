//! BACKUP DATABASE into an `fs::` store on the same disk as the database, among
//! the writes, cut at random points: a backup reported complete is never missing
//! or unrestorable, no manifest names a missing or torn object, the next backup
//! completes, and the newest restores exactly.
use std::collections::BTreeMap;
use std::process::Command;

use tokio_postgres::Client;

use super::Disk;
use super::model::{Change, Model, Tables, holdings, rows};
use crate::backup::{backups, completed, field};
use crate::harness::{Server, binary, temp_root};

const STATEMENTS: usize = 20;
const CUTS: u32 = 16;

#[tokio::test(flavor = "multi_thread")]
async fn complete_backups_survive_power_cuts() {
    let Some(mut disk) = Disk::mount("complete_backups_survive_power_cuts") else {
        return;
    };
    let store = disk.path().join("store");
    let store_conf = format!("fs::root={};", store.display());
    disk.opts = disk
        .opts
        .clone()
        .conf("backup.object.store", &store_conf)
        .conf("backup.cleanup.keep.latest.n", "3");
    std::fs::create_dir(&store).unwrap();
    let mut server = disk.first_start();
    let model = Model {
        backups: true,
        ..Model::default()
    };
    let (mut model, span) = disk.changes_of_workload(&server, model, STATEMENTS).await;
    while disk.cuts < CUTS {
        model = disk.cut_during_workload(server, model, span, STATEMENTS).await;
        // A backup in flight when the power went may have completed: it holds the
        // acknowledged state, the statement in flight being the backup itself.
        let in_flight = matches!(model.in_flight, Some(Change::Backup)).then(|| model.tables.clone());
        server = disk.start();
        let c = server.connect().await;
        model.check(&c, disk.cuts).await;
        check_backups(&c, &mut model.backed_up, in_flight, disk.cuts).await;
        // The next backup completes.
        let next: String = c.query_one("BACKUP DATABASE WAIT", &[]).await.unwrap().get(0);
        model.backed_up.insert(next, model.tables.clone());
    }
    // The newest backup restores exactly, with the offline CLI onto a real disk.
    let (newest, tables) = model.backed_up.last_key_value().expect("a backup");
    let restored = temp_root();
    let out = Command::new(binary())
        .args(["restore", "--store", &store_conf, "--timestamp", newest, "--root"])
        .arg(restored.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = Server::start(restored.path(), Default::default());
    assert_eq!(&holdings(&s.connect().await).await, tables);
}

/// Every backup `backups()` lists as complete verifies and holds what it held when
/// it was taken; the newest acknowledged one is among them.
async fn check_backups(c: &Client, backed_up: &mut BTreeMap<String, Tables>, in_flight: Option<Tables>, cut: u32) {
    let all = backups(c).await;
    let listed: Vec<String> = all
        .iter()
        .filter(|r| completed(r))
        .map(|r| field(r, "backup_timestamp"))
        .collect();
    if let Some((newest, _)) = backed_up.last_key_value() {
        let described: Vec<String> = all
            .iter()
            .map(|r| {
                let (ts, status) = (field(r, "backup_timestamp"), field(r, "status"));
                let errors = (field(r, "backup_error"), field(r, "cleanup_error"));
                format!("{ts} {status} {errors:?}")
            })
            .collect();
        assert!(
            listed.contains(newest),
            "after power cut {cut}: backup {newest} is not complete: {described:#?}"
        );
    }
    for ts in &listed {
        let expected = match (backed_up.get(ts), &in_flight) {
            (Some(tables), _) => tables.clone(),
            (None, Some(tables)) => tables.clone(),
            (None, None) => panic!("after power cut {cut}: backup {ts} is complete but was never taken"),
        };
        let verified = c.query_one(&format!("VERIFY BACKUP '{ts}'"), &[]).await.unwrap();
        let problems: Option<String> = verified.get(verified.len() - 1);
        assert_eq!(
            verified.get::<_, String>("status"),
            "ok",
            "after power cut {cut}: backup {ts}: {problems:?}"
        );
        for (table, batches) in &expected {
            let sql = format!("SELECT b, count(*) FROM backup_table('{table}', '{ts}') GROUP BY b");
            let found: BTreeMap<u64, u64> = rows(c, &sql)
                .await
                .iter()
                .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
                .collect();
            assert_eq!(&found, batches, "after power cut {cut}: table {table} in backup {ts}");
        }
        backed_up.insert(ts.clone(), expected);
    }
    backed_up.retain(|ts, _| listed.contains(ts));
}
