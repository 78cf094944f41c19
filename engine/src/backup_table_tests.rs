//! `backup_table()` against the live table it was backed up from, through a
//! store that meters what is read.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use backup::Store;
use datafusion::prelude::SessionContext;
use storage::{Column, ColumnType, HousekeepingSettings, PartitionBy, Storage, SystemClock, TableMeta};
use tokio_util::sync::CancellationToken;

use crate::StrataTable;
use crate::backups::Backups;
use crate::config::BackupSettings;
use crate::database::backup_session;
use crate::test_store::TestStore;

const DAY: i64 = 86_400_000_000;
const FIRST_DAY: i64 = 19_700;
const DAYS: i64 = 90;
const ROWS_PER_DAY: i64 = 10_000;
const SYMBOLS: [&str; 5] = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"];

fn trades() -> TableMeta {
    table_meta("trades", PartitionBy::Day)
}

fn table_meta(name: &str, partition_by: PartitionBy) -> TableMeta {
    let col = |name: &str, ty| Column { name: name.into(), ty };
    let cols = vec![
        col("ts", ColumnType::Timestamp),
        col("sym", ColumnType::Symbol),
        col("price", ColumnType::Double),
        col("qty", ColumnType::Long),
    ];
    TableMeta::new(name, cols, Some("ts".into()), partition_by).expect("a valid table")
}

/// A small deterministic generator (the data must be the same every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn day_of_trades(day: i64, rng: &mut Lcg) -> RecordBatch {
    rows_of_day(day, ROWS_PER_DAY, rng)
}

fn rows_of_day(day: i64, rows: i64, rng: &mut Lcg) -> RecordBatch {
    let n = rows as usize;
    let ts: Vec<i64> = (0..rows).map(|i| day * DAY + i * (DAY / rows)).collect();
    let sym: Vec<&str> = (0..n).map(|_| SYMBOLS[rng.below(5) as usize]).collect();
    let price: Vec<f64> = (0..n).map(|_| rng.below(100_000) as f64 / 100.0).collect();
    let qty: Vec<i64> = (0..n).map(|_| rng.below(1_000) as i64).collect();
    RecordBatch::try_new(
        trades().arrow_schema(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts)),
            Arc::new(StringArray::from(sym)),
            Arc::new(Float64Array::from(price)),
            Arc::new(Int64Array::from(qty)),
        ],
    )
    .expect("a valid batch")
}

/// The rows a query returns, each formatted, in order when `ordered`, else sorted.
async fn rows(ctx: &SessionContext, sql: &str, ordered: bool) -> Vec<String> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &batches {
        let columns: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formattable"))
            .collect();
        for row in 0..b.num_rows() {
            let cells: Vec<String> = columns.iter().map(|c| c.value(row).to_string()).collect();
            out.push(cells.join("|"));
        }
    }
    if !ordered {
        out.sort();
    }
    out
}

fn ts_literal(micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(micros).expect("in range");
    format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6f"))
}

/// Queries of the shapes users run: time ranges, filters, aggregates,
/// projections; `{t}` stands for the table. Each with whether its order is defined.
fn queries(rng: &mut Lcg) -> Vec<(String, bool)> {
    let mut out = vec![
        (
            "SELECT count(*), sum(qty), min(price), max(price) FROM {t}".to_string(),
            false,
        ),
        (
            "SELECT sym, count(*), sum(qty) FROM {t} GROUP BY sym".to_string(),
            false,
        ),
        ("SELECT qty FROM {t}".to_string(), false),
    ];
    for _ in 0..8 {
        let from = (FIRST_DAY + rng.below(DAYS as u64) as i64) * DAY + rng.below(DAY as u64) as i64;
        let to = from + rng.below(10 * DAY as u64) as i64;
        let (from, to) = (ts_literal(from), ts_literal(to));
        let sym = SYMBOLS[rng.below(5) as usize];
        let price = rng.below(1_000);
        out.extend([
            (
                format!(
                    "SELECT count(*), sum(qty), min(price), max(price) FROM {{t}} WHERE ts >= {from} AND ts < {to}"
                ),
                false,
            ),
            (
                format!("SELECT sym, count(*), max(qty) FROM {{t}} WHERE ts BETWEEN {from} AND {to} GROUP BY sym"),
                false,
            ),
            (
                format!(
                    "SELECT ts, sym, price FROM {{t}} WHERE price > {price} AND ts > {from} ORDER BY ts, sym LIMIT 40"
                ),
                true,
            ),
            (
                format!("SELECT * FROM {{t}} WHERE sym = '{sym}' AND ts <= {to} AND qty < 10"),
                false,
            ),
        ]);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_answers_like_the_table_did_and_reads_only_what_a_query_needs() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let storage = Storage::open(db.path(), Arc::new(SystemClock), HousekeepingSettings::default(), None).unwrap();
    let table = storage.create_table(trades(), false).unwrap();
    let mut rng = Lcg(7);
    for day in FIRST_DAY..FIRST_DAY + DAYS {
        table.append(&[day_of_trades(day, &mut rng)]).unwrap();
    }
    // One file of many row groups' worth, to see a column read alone.
    let big = storage
        .create_table(table_meta("big", PartitionBy::Year), false)
        .unwrap();
    big.append(&[rows_of_day(FIRST_DAY, 300_000, &mut rng)]).unwrap();
    let started = std::time::Instant::now();
    let metered = Arc::new(TestStore::new(dir.path()));
    let store = Store::from_object_store(metered.clone(), "metered");
    let backups = Backups::with_store(
        storage.clone(),
        BackupSettings::default(),
        Some(store),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let backups = Arc::new(backups);
    let (_, finished) = backups.start().await.unwrap();
    assert!(finished.await.unwrap().error.is_none());

    eprintln!("written and backed up in {:?}", started.elapsed());
    let ctx = backup_session(backups.source().unwrap());
    ctx.register_table("live", Arc::new(StrataTable::new(table.clone())))
        .unwrap();
    ctx.register_table("big_live", Arc::new(StrataTable::new(big.clone())))
        .unwrap();
    let asked = queries(&mut rng);
    let mut answers = Vec::new();
    for (sql, ordered) in &asked {
        let live = rows(&ctx, &sql.replace("{t}", "live"), *ordered).await;
        let backed_up = rows(&ctx, &sql.replace("{t}", "backup_table('trades')"), *ordered).await;
        assert_eq!(backed_up, live, "{sql}");
        answers.push(live);
    }
    assert!(answers.iter().any(|a| a.len() > 1_000), "some queries return many rows");

    eprintln!("queries compared at {:?}", started.elapsed());
    // The table changes; the backup still answers as it was.
    table.truncate().unwrap();
    table.append(&[day_of_trades(FIRST_DAY, &mut rng)]).unwrap();
    for ((sql, ordered), before) in asked.iter().zip(&answers).take(8) {
        let latest = rows(&ctx, &sql.replace("{t}", "backup_table('trades', 'LATEST')"), *ordered).await;
        assert_eq!(&latest, before, "{sql}");
    }

    // One day of 90: the manifest leaves one file, of which the groups holding
    // the footer and the column chunks asked for are read (with the file's tree).
    let located = backup::open_table(&backups.source().unwrap().store, &backup::Selector::default(), "trades")
        .await
        .unwrap();
    let stored: u64 = located.entry.files.iter().map(|f| f.stored_bytes).sum();
    let data_objects = || -> Vec<String> {
        let read = metered.data_objects_read.lock().unwrap();
        read.iter().filter(|o| !o.ends_with(".b3")).cloned().collect()
    };
    metered.reset_reads();
    let day = (FIRST_DAY + 45) * DAY;
    let one_day = format!(
        "SELECT count(*), sum(qty) FROM backup_table('trades') WHERE ts >= {} AND ts < {}",
        ts_literal(day),
        ts_literal(day + DAY)
    );
    assert_eq!(rows(&ctx, &one_day, false).await.len(), 1);
    let read = metered.data_bytes_read.load(Ordering::SeqCst);
    assert_eq!(data_objects().len(), 1, "{:?}", data_objects());
    eprintln!(
        "one day of {DAYS}: {read} bytes of the table's {stored} ({:.2}%)",
        read as f64 * 100.0 / stored as f64
    );
    assert!(
        read * 100 <= stored * 2,
        "one day of 90 read {read} bytes of {stored} ({:.2}%)",
        read as f64 * 100.0 / stored as f64
    );

    // One column of a large file: its chunks, not the file.
    metered.reset_reads();
    let live = rows(&ctx, "SELECT sum(qty) FROM big_live", false).await;
    assert_eq!(
        rows(&ctx, "SELECT sum(qty) FROM backup_table('big')", false).await,
        live
    );
    let read = metered.data_bytes_read.load(Ordering::SeqCst);
    let objects = data_objects();
    let file_size = walk(dir.path())
        .into_iter()
        .find(|(p, _)| objects.iter().any(|o| p.ends_with(o.as_str())))
        .map(|(_, size)| size)
        .unwrap();
    eprintln!("one column of a {file_size}-byte file: {read} bytes");
    assert!(read * 2 < file_size, "one column of four: {read} of {file_size}");
}

/// Every file under `dir`, with its size, by path.
fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push((entry.path().to_string_lossy().into_owned(), meta.len()));
        }
    }
    out
}
