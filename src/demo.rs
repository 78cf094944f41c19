//! `strata serve --demo`: a small `trades` table so a newcomer has something to query.
use engine::{Database, EngineError};
use storage::{Column, ColumnType, PartitionBy, TableMeta};

const DEMO_TABLE: &str = "trades";

/// Creates and fills `trades` (one row a minute for a week) unless it already holds rows.
pub(crate) async fn load(db: &Database) -> Result<(), EngineError> {
    if db.storage().table(DEMO_TABLE).is_some_and(|t| t.commit().rows() > 0) {
        return Ok(());
    }
    let col = |name: &str, ty| Column { name: name.into(), ty };
    let meta = TableMeta::new(
        DEMO_TABLE,
        vec![
            col("ts", ColumnType::Timestamp),
            col("symbol", ColumnType::Symbol),
            col("price", ColumnType::Double),
            col("amount", ColumnType::Double),
        ],
        Some("ts".into()),
        PartitionBy::Day,
    )?;
    db.create_table(meta, true).await?;
    let insert = "INSERT INTO trades SELECT \
        to_timestamp_micros(1735689600000000 + value * 60000000), \
        CASE value % 4 WHEN 0 THEN 'BTC-USD' WHEN 1 THEN 'ETH-USD' WHEN 2 THEN 'SOL-USD' ELSE 'DOGE-USD' END, \
        100 + (value % 97) * 0.5, \
        (value % 13) * 0.1 \
        FROM generate_series(0, 10079)";
    db.context().sql(insert).await?.collect().await?;
    tracing::info!("demo data loaded: table '{DEMO_TABLE}', 10080 rows over 7 days of January 2025");
    Ok(())
}
