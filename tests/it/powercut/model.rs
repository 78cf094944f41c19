//! A random workload of writes and DDL, and what the database must hold after it:
//! every acknowledged statement whole, the one in flight whole or not at all.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::SinkExt;
use rand::Rng;
use rand::rngs::StdRng;
use tokio_postgres::{Client, SimpleQueryMessage};

/// One statement of the workload.
#[derive(Clone, Debug)]
pub enum Change {
    Create(String),
    Drop(String),
    Truncate(String),
    /// An INSERT (or, when `copy`, a COPY) of `rows` rows tagged `batch`.
    Insert {
        table: String,
        batch: u64,
        rows: u64,
        copy: bool,
    },
    CheckpointCreate,
    CheckpointRelease,
    /// `BACKUP DATABASE WAIT`.
    Backup,
}

pub type Tables = BTreeMap<String, BTreeMap<u64, u64>>;

/// The tables the database must hold, each as its batches (batch → rows).
#[derive(Default, Debug)]
pub struct Model {
    pub tables: Tables,
    /// The tables as `CHECKPOINT CREATE` found them, while a checkpoint is in progress.
    pub checkpoint: Option<Tables>,
    /// Whether the workload creates and releases checkpoints.
    pub checkpoints: bool,
    /// Whether the workload backs the database up.
    pub backups: bool,
    /// The tables each acknowledged backup holds, by backup timestamp.
    pub backed_up: BTreeMap<String, Tables>,
    /// Sent and not acknowledged: it may or may not have happened.
    pub in_flight: Option<Change>,
    pub next_batch: u64,
    pub next_table: u64,
    /// Statements acknowledged in all.
    pub acked: u64,
}

const DAY_MICROS: u64 = 86_400_000_000;
const START_MICROS: u64 = 1_704_067_200_000_000; // 2024-01-01

impl Model {
    fn pick(&mut self, rng: &mut StdRng) -> Change {
        if self.checkpoints && rng.random_ratio(1, 10) {
            return match self.checkpoint {
                None => Change::CheckpointCreate,
                Some(_) => Change::CheckpointRelease,
            };
        }
        if self.backups && rng.random_ratio(1, 8) {
            return Change::Backup;
        }
        if self.tables.is_empty() || rng.random_ratio(1, 15) {
            self.next_table += 1;
            return Change::Create(format!("t{}", self.next_table));
        }
        let names: Vec<&String> = self.tables.keys().collect();
        let table = names[rng.random_range(0..names.len())].clone();
        self.next_batch += 1;
        let batch = self.next_batch;
        match rng.random_range(0..20) {
            0 if self.tables.len() > 1 => Change::Drop(table),
            1 => Change::Truncate(table),
            2..=5 => Change::Insert {
                table,
                batch,
                rows: rng.random_range(10..=60),
                copy: true,
            },
            _ => Change::Insert {
                table,
                batch,
                rows: rng.random_range(1..=4),
                copy: false,
            },
        }
    }

    /// Runs up to `statements` random statements, stopping at the first that fails
    /// (the power went); returns the model with what was acknowledged.
    pub async fn run(mut self, client: Client, mut rng: StdRng, statements: usize) -> Model {
        for _ in 0..statements {
            let change = self.pick(&mut rng);
            self.in_flight = Some(change.clone());
            match execute(&client, &change).await {
                Ok(Some(backup_timestamp)) => {
                    self.backed_up.insert(backup_timestamp, self.tables.clone());
                }
                Ok(None) => {}
                Err(_) => return self,
            }
            self.in_flight = None;
            self.apply(&change);
            self.acked += 1;
        }
        self
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::Create(t) => {
                self.tables.insert(t.clone(), BTreeMap::new());
            }
            Change::Drop(t) => {
                self.tables.remove(t);
            }
            Change::Truncate(t) => {
                self.tables.insert(t.clone(), BTreeMap::new());
            }
            Change::Insert { table, batch, rows, .. } => {
                self.tables.entry(table.clone()).or_default().insert(*batch, *rows);
            }
            Change::CheckpointCreate => self.checkpoint = Some(self.tables.clone()),
            Change::CheckpointRelease => self.checkpoint = None,
            Change::Backup => {}
        }
    }

    /// Checks the database against the model (the statement in flight may have
    /// happened, whole) and takes what it holds as the model from now on.
    pub async fn check(&mut self, client: &Client, cut: u32) {
        let found = holdings(client).await;
        let in_checkpoint = checkpoint_in_progress(client).await;
        let mut applied = Model {
            tables: self.tables.clone(),
            checkpoint: self.checkpoint.clone(),
            ..Model::default()
        };
        if let Some(change) = &self.in_flight {
            applied.apply(change);
        }
        let as_acked = found == self.tables && in_checkpoint == self.checkpoint.is_some();
        let as_applied = found == applied.tables && in_checkpoint == applied.checkpoint.is_some();
        assert!(
            as_acked || as_applied,
            "after power cut {cut}: the database holds {found:?} (checkpoint in progress: {in_checkpoint})\n\
             acknowledged: {:?} (checkpoint: {:?})\nthe statement in flight: {:?}",
            self.tables,
            self.checkpoint,
            self.in_flight
        );
        if !as_acked {
            self.checkpoint = applied.checkpoint;
        }
        self.tables = found;
        self.in_flight = None;
    }
}

/// Runs one statement; a backup answers its timestamp.
async fn execute(client: &Client, change: &Change) -> Result<Option<String>, tokio_postgres::Error> {
    let done = match change {
        Change::Create(t) => {
            let sql = format!("CREATE TABLE {t} (ts TIMESTAMP, b LONG, i LONG) TIMESTAMP(ts) PARTITION BY DAY");
            client.batch_execute(&sql).await
        }
        Change::Drop(t) => client.batch_execute(&format!("DROP TABLE {t}")).await,
        Change::Truncate(t) => client.batch_execute(&format!("TRUNCATE TABLE {t}")).await,
        Change::Insert {
            table,
            batch,
            rows,
            copy: false,
        } => {
            let values: Vec<String> = (0..*rows)
                .map(|i| format!("(to_timestamp_micros({}), {batch}, {i})", row_micros(*batch, i)))
                .collect();
            client
                .batch_execute(&format!("INSERT INTO {table} VALUES {}", values.join(", ")))
                .await
        }
        Change::Insert {
            table,
            batch,
            rows,
            copy: true,
        } => {
            let mut csv = String::new();
            for i in 0..*rows {
                let ts = chrono::DateTime::from_timestamp_micros(row_micros(*batch, i) as i64).expect("a time");
                let _ = writeln!(csv, "{},{batch},{i}", ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
            }
            let sink = client
                .copy_in(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
                .await?;
            futures::pin_mut!(sink);
            sink.send(bytes::Bytes::from(csv)).await?;
            sink.finish().await.map(drop)
        }
        Change::CheckpointCreate => client.batch_execute("CHECKPOINT CREATE").await,
        Change::CheckpointRelease => client.batch_execute("CHECKPOINT RELEASE").await,
        Change::Backup => {
            let row = client.query_one("BACKUP DATABASE WAIT", &[]).await?;
            return Ok(Some(row.get("backup_timestamp")));
        }
    };
    done.map(|()| None)
}

async fn checkpoint_in_progress(client: &Client) -> bool {
    let r = rows(client, "SELECT in_progress FROM checkpoint_status()").await;
    r[0][0] == "t"
}

/// Rows of a batch spread over a few days, so statements touch several partitions.
fn row_micros(batch: u64, i: u64) -> u64 {
    START_MICROS + ((batch + i) % 4) * DAY_MICROS + batch * 1_000 + i
}

/// The tables and batches the database holds.
pub async fn holdings(client: &Client) -> Tables {
    try_holdings(client)
        .await
        .unwrap_or_else(|e| panic!("reading the tables: {e}"))
}

/// [`holdings`], or the error of the first query that failed.
pub async fn try_holdings(client: &Client) -> Result<Tables, tokio_postgres::Error> {
    let tables = try_rows(
        client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .await?;
    let mut found = BTreeMap::new();
    for t in tables {
        let batches = try_rows(client, &format!("SELECT b, count(*) FROM {} GROUP BY b", t[0])).await?;
        let batches = batches
            .iter()
            .map(|r| (r[0].parse().expect("a batch"), r[1].parse().expect("a count")))
            .collect();
        found.insert(t[0].clone(), batches);
    }
    Ok(found)
}

pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    try_rows(client, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn try_rows(client: &Client, sql: &str) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect()),
            _ => None,
        })
        .collect())
}
