//! The benchmark's databases, built through the storage write path (the one
//! INSERT and COPY use): trade-like tables with daily partitions, and a
//! many-table, many-partition database of tiny files.
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use storage::{Column, ColumnType, PartitionBy, Storage, TableMeta};

pub const DAY_MICROS: i64 = 86_400_000_000;
/// 2024-01-01T00:00:00Z
pub const FIRST_DAY_MICROS: i64 = 1_704_067_200_000_000;
const SYMBOLS: [&str; 16] = [
    "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD", "DOT-USD", "AVAX-USD", "LINK-USD", "LTC-USD",
    "BCH-USD", "XLM-USD", "ATOM-USD", "UNI-USD", "ETC-USD", "FIL-USD",
];

/// A small deterministic generator (xorshift64*): the same data on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), ty }
}

/// `ts TIMESTAMP, symbol SYMBOL, price DOUBLE, amount DOUBLE` partitioned by day.
pub fn trades_meta(name: &str) -> TableMeta {
    let columns = vec![
        col("ts", ColumnType::Timestamp),
        col("symbol", ColumnType::Symbol),
        col("price", ColumnType::Double),
        col("amount", ColumnType::Double),
    ];
    TableMeta::new(name, columns, Some("ts".into()), PartitionBy::Day).expect("valid benchmark table")
}

/// `rows` trades spread over day `day` (0 = 2024-01-01): prices are a
/// random walk in cents, amounts random with four decimals.
pub fn trades_day(meta: &TableMeta, day: i64, rows: usize, rng: &mut Rng) -> RecordBatch {
    let start = FIRST_DAY_MICROS + day * DAY_MICROS;
    let step = DAY_MICROS / rows.max(1) as i64;
    // Evenly spread with random jitter inside each slot, as real arrivals are.
    let ts: Vec<i64> = (0..rows as i64)
        .map(|i| start + i * step + (rng.next() % step.max(1) as u64) as i64)
        .collect();
    let symbols: Vec<&str> = (0..rows).map(|_| SYMBOLS[(rng.next() % 16) as usize]).collect();
    let mut price = 100.0;
    let prices: Vec<f64> = (0..rows)
        .map(|_| {
            price = (price + (rng.unit() - 0.5) * 0.2).max(1.0);
            (price * 100.0).round() / 100.0
        })
        .collect();
    let amounts: Vec<f64> = (0..rows).map(|_| (rng.unit() * 100_000.0).round() / 10_000.0).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts)),
        Arc::new(StringArray::from(symbols)),
        Arc::new(Float64Array::from(prices)),
        Arc::new(Float64Array::from(amounts)),
    ];
    RecordBatch::try_new(meta.arrow_schema(), columns).expect("batch matches the schema")
}

/// `tables` tables of `days` daily partitions with `rows_per_day` rows each,
/// one commit per day and table (as a daily load would write them).
pub fn build_trades(storage: &Storage, tables: usize, days: i64, rows_per_day: usize) -> storage::Result<()> {
    let mut rng = Rng::new(42);
    for t in 0..tables {
        let meta = trades_meta(&format!("trades_{t}"));
        let table = storage.create_table(meta.clone(), false)?;
        for day in 0..days {
            table.append(&[trades_day(&meta, day, rows_per_day, &mut rng)])?;
        }
    }
    Ok(())
}

/// `tables` tables with one row in each daily partition of `days`: one tiny file
/// per partition. Tables are created on the first call and extended on later ones.
pub fn build_many_files(storage: &Storage, tables: usize, days: std::ops::Range<i64>) -> storage::Result<()> {
    let mut rng = Rng::new(7 + days.start as u64);
    for t in 0..tables {
        let meta = trades_meta(&format!("many_{t}"));
        let table = storage.create_table(meta.clone(), true)?;
        let batches: Vec<RecordBatch> = days.clone().map(|d| trades_day(&meta, d, 1, &mut rng)).collect();
        if !batches.is_empty() {
            table.append(&batches)?;
        }
    }
    Ok(())
}
