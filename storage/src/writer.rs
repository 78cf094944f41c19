//! Turning incoming rows into immutable, hashed Parquet files.
//!
//! Rows are cast to the table schema, split by partition, sorted by the
//! designated timestamp, encoded in memory (so the hash is computed as the
//! bytes are produced, never by re-reading), then written and fsynced.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{cast, concat_batches, sort_to_indices, take};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::atomic::{fsync_dir, write_durable};
use crate::commit::DataFile;
use crate::error::{Result, StorageError};
use crate::meta::{ColumnType, TableMeta};
use crate::paths::data_file_rel;

/// Zstd level for data files: cheap to write, good ratio on time series.
const PARQUET_ZSTD_LEVEL: i32 = 3;

/// Casts a batch to the table schema by column position, checking the designated timestamp.
pub(crate) fn conform(meta: &TableMeta, schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let arrow_err = |source| StorageError::Arrow {
        table: meta.name.clone(),
        source,
    };
    if batch.num_columns() != schema.fields().len() {
        return Err(StorageError::InvalidData {
            table: meta.name.clone(),
            reason: format!(
                "expected {} columns, got {}",
                schema.fields().len(),
                batch.num_columns()
            ),
        });
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(col, field)| {
            if col.data_type() == field.data_type() {
                Ok(col.clone())
            } else {
                cast(col, field.data_type()).map_err(arrow_err)
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    if let Some(i) = meta.timestamp_index()
        && columns[i].null_count() > 0
    {
        return Err(StorageError::NullTimestamp {
            table: meta.name.clone(),
            column: meta.columns[i].name.clone(),
        });
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err)
}

/// Splits conformed rows by partition key, each group sorted by the designated timestamp.
pub(crate) fn split_by_partition(meta: &TableMeta, batch: &RecordBatch) -> Result<BTreeMap<String, RecordBatch>> {
    let arrow_err = |source| StorageError::Arrow {
        table: meta.name.clone(),
        source,
    };
    let Some(ts_index) = meta.timestamp_index() else {
        let mut one = BTreeMap::new();
        if batch.num_rows() > 0 {
            one.insert(meta.partition_by.key(0), batch.clone());
        }
        return Ok(one);
    };
    let order = sort_to_indices(batch.column(ts_index), None, None).map_err(arrow_err)?;
    let sorted = take_batch(batch, &order).map_err(arrow_err)?;
    let ts = timestamps(&sorted, ts_index);
    let mut out = BTreeMap::new();
    let mut start = 0usize;
    while start < ts.len() {
        let key = meta.partition_by.key(ts.value(start));
        let (_, end_us) = meta.partition_by.range(&key).unwrap_or((i64::MIN, i64::MAX));
        let len = ts.values()[start..].partition_point(|&v| v < end_us);
        out.insert(key, sorted.slice(start, len));
        start += len;
    }
    Ok(out)
}

fn take_batch(batch: &RecordBatch, indices: &UInt32Array) -> arrow::error::Result<RecordBatch> {
    let cols = batch
        .columns()
        .iter()
        .map(|c| take(c, indices, None))
        .collect::<arrow::error::Result<Vec<_>>>()?;
    RecordBatch::try_new(batch.schema(), cols)
}

pub(crate) fn timestamps(batch: &RecordBatch, ts_index: usize) -> &TimestampMicrosecondArray {
    batch
        .column(ts_index)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("conformed batches hold the designated timestamp as Timestamp(us)")
}

/// Encodes one partition's rows (sorted) as Parquet and writes the file durably.
pub(crate) fn write_data_file(
    meta: &TableMeta,
    table_dir: &Path,
    partition: &str,
    rel: String,
    batches: &[RecordBatch],
) -> Result<DataFile> {
    let schema = meta.arrow_schema();
    let arrow_err = |source| StorageError::Arrow {
        table: meta.name.clone(),
        source,
    };
    let batch = concat_batches(&schema, batches).map_err(arrow_err)?;
    let path = table_dir.join(&rel);
    let parquet_err = |source| StorageError::Parquet {
        table: meta.name.clone(),
        path: path.clone(),
        source,
    };

    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(PARQUET_ZSTD_LEVEL).map_err(parquet_err)?,
        ))
        .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")));
    // SYMBOL is the dictionary-encoded string; free-text VARCHAR rarely repeats.
    for c in meta.columns.iter().filter(|c| c.ty == ColumnType::Varchar) {
        props = props.set_column_dictionary_enabled(ColumnPath::from(c.name.as_str()), false);
    }
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2 + 1024);
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props.build())).map_err(parquet_err)?;
    w.write(&batch).map_err(parquet_err)?;
    w.close().map_err(parquet_err)?;

    let (min_ts, max_ts) = match meta.timestamp_index() {
        Some(i) if batch.num_rows() > 0 => {
            let ts = timestamps(&batch, i);
            (Some(ts.value(0)), Some(ts.value(ts.len() - 1)))
        }
        _ => (None, None),
    };
    let part_dir = table_dir.join(partition);
    create_partition_dir(&meta.name, &part_dir)?;
    write_durable(&path, &buf)?;
    fsync_dir(&part_dir)?;
    Ok(DataFile {
        path: rel,
        partition: partition.to_string(),
        rows: batch.num_rows() as u64,
        bytes: buf.len() as u64,
        min_ts,
        max_ts,
        hash: blake3::hash(&buf).to_hex().to_string(),
    })
}

/// Creates a partition folder in the table's folder, never the table's folder
/// itself: one a DROP TABLE moved away meanwhile (a merge racing it) must not
/// come back as a folder without metadata, which the next start would refuse.
fn create_partition_dir(table: &str, dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => dir.parent().map_or(Ok(()), fsync_dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::TableNotFound(table.to_string())),
        Err(source) => Err(StorageError::Io {
            context: format!("creating directory {}", dir.display()),
            source,
        }),
    }
}

/// A fresh, unique relative path for a new data file in `partition`.
pub(crate) fn new_data_file_rel(partition: &str) -> String {
    data_file_rel(partition, &uuid::Uuid::now_v7().simple().to_string())
}

/// Reads a data file back (housekeeping merges).
pub(crate) fn read_data_file(meta: &TableMeta, path: &Path) -> Result<Vec<RecordBatch>> {
    let parquet_err = |source| StorageError::Parquet {
        table: meta.name.clone(),
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| StorageError::Io {
        context: format!("opening {}", path.display()),
        source,
    })?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?;
    let schema = meta.arrow_schema();
    reader
        .map(|b| {
            let b = b.map_err(|source| StorageError::Arrow {
                table: meta.name.clone(),
                source,
            })?;
            // Field metadata may differ from what the file recorded; columns are what matter.
            RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()).map_err(|source| StorageError::Arrow {
                table: meta.name.clone(),
                source,
            })
        })
        .collect()
}
