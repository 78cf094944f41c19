//! Table functions for monitoring: `checkpoint_status()`, `backups()`,
//! `replication_status()` and `restore_status()`.
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result as DfResult, plan_err};

use crate::backups::Backups;
use crate::checkpoint::Checkpoints;
use crate::hydration::{Hydration, RestoreStatus};
use crate::replication::Replication;

/// `SELECT * FROM checkpoint_status()`: one row, in_progress / started_at / pinned_bytes.
#[derive(Debug)]
pub(crate) struct CheckpointStatusFunction(pub(crate) Arc<Checkpoints>);

impl TableFunctionImpl for CheckpointStatusFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return plan_err!("checkpoint_status() takes no arguments");
        }
        // Reads in-memory state only: safe at planning time.
        let s = self.0.status();
        let fields = vec![
            Field::new("in_progress", DataType::Boolean, false),
            Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("pinned_bytes", DataType::Int64, false),
        ];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![s.in_progress])),
            Arc::new(TimestampMicrosecondArray::from(vec![s.started_at_micros]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![
                i64::try_from(s.pinned_bytes).unwrap_or(i64::MAX),
            ])),
        ];
        one_row(fields, columns)
    }
}

/// `SELECT * FROM backups()`: the running backup and the history, newest first.
#[derive(Debug)]
pub(crate) struct BackupsFunction(pub(crate) Arc<Backups>);

impl TableFunctionImpl for BackupsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return plan_err!("backups() takes no arguments");
        }
        let records = self.0.records();
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("status", DataType::Utf8, false),
            Field::new("progress_percent", DataType::Int32, false),
            Field::new("start_ts", ts(), false),
            Field::new("end_ts", ts(), true),
            Field::new("backup_error", DataType::Utf8, true),
            Field::new("cleanup_error", DataType::Utf8, true),
            Field::new("backup_timestamp", DataType::Utf8, false),
            Field::new("instance_name", DataType::Utf8, false),
            Field::new("tables", DataType::Int64, false),
            Field::new("files_total", DataType::Int64, false),
            Field::new("files_uploaded", DataType::Int64, false),
            Field::new("bytes_total", DataType::Int64, false),
            Field::new("bytes_uploaded", DataType::Int64, false),
            Field::new("kept_by", DataType::Utf8, true),
            Field::new("last_verified_ts", ts(), true),
            Field::new("verify_status", DataType::Utf8, true),
        ]));
        let verified: Vec<Option<backup::VerifyRecord>> = records
            .iter()
            .map(|r| self.0.verifications().of(r.backup_micros))
            .collect();
        let int = |f: fn(&backup::BackupRecord) -> u64| -> ArrayRef {
            Arc::new(Int64Array::from(
                records
                    .iter()
                    .map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(
                records.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                records.iter().map(|r| r.progress_percent()).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(records.iter().map(|r| r.start_micros).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(records.iter().map(|r| r.end_micros).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(
                records.iter().map(|r| r.backup_error.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                records.iter().map(|r| r.cleanup_error.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                records
                    .iter()
                    .map(|r| backup::layout::format_timestamp(r.backup_micros))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                records.iter().map(|r| r.instance.clone()).collect::<Vec<_>>(),
            )),
            int(|r| r.tables),
            int(|r| r.files_total),
            int(|r| r.files_uploaded),
            int(|r| r.bytes_total),
            int(|r| r.bytes_uploaded),
            Arc::new(StringArray::from(self.0.kept_by(&records))),
            Arc::new(
                TimestampMicrosecondArray::from(
                    verified
                        .iter()
                        .map(|v| v.as_ref().map(|v| v.verified_micros))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(
                verified
                    .iter()
                    .map(|v| v.as_ref().map(|v| v.status.as_str()))
                    .collect::<Vec<_>>(),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

/// `SELECT * FROM replication_status()`: one row on commit shipping.
#[derive(Debug)]
pub(crate) struct ReplicationStatusFunction(pub(crate) Arc<Replication>);

impl TableFunctionImpl for ReplicationStatusFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return plan_err!("replication_status() takes no arguments");
        }
        let s = self.0.status();
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let fields = vec![
            Field::new("role", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("last_shipped_ts", ts(), true),
            Field::new("lag_ms", DataType::Int64, false),
            Field::new("pending_commits", DataType::Int64, false),
            Field::new("window_start", ts(), true),
            Field::new("window_end", ts(), true),
            Field::new("last_error", DataType::Utf8, true),
        ];
        let instant = |micros: Option<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone("UTC"))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![s.role])),
            Arc::new(StringArray::from(vec![s.state])),
            instant(s.last_shipped_micros),
            Arc::new(Int64Array::from(vec![s.lag_ms])),
            Arc::new(Int64Array::from(vec![
                i64::try_from(s.pending_commits).unwrap_or(i64::MAX),
            ])),
            instant(s.window.map(|w| w.start)),
            instant(s.window.map(|w| w.end)),
            Arc::new(StringArray::from(vec![s.last_error])),
        ];
        one_row(fields, columns)
    }
}

/// A table of one row: `fields` and a value for each.
fn one_row(fields: Vec<Field>, columns: Vec<ArrayRef>) -> DfResult<Arc<dyn TableProvider>> {
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `SELECT * FROM restore_status()`: one row, how an instant restore's files arrive.
#[derive(Debug)]
pub(crate) struct RestoreStatusFunction(pub(crate) Option<Arc<Hydration>>);

impl TableFunctionImpl for RestoreStatusFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return plan_err!("restore_status() takes no arguments");
        }
        let s = RestoreStatus::of(self.0.as_ref());
        let int = |n: u64| -> ArrayRef { Arc::new(Int64Array::from(vec![i64::try_from(n).unwrap_or(i64::MAX)])) };
        one_row(
            vec![
                Field::new("state", DataType::Utf8, false),
                Field::new("backup_timestamp", DataType::Utf8, true),
                Field::new("files_total", DataType::Int64, false),
                Field::new("files_local", DataType::Int64, false),
                Field::new("bytes_total", DataType::Int64, false),
                Field::new("bytes_local", DataType::Int64, false),
                Field::new("bytes_per_second", DataType::Float64, false),
                Field::new("last_error", DataType::Utf8, true),
            ],
            vec![
                Arc::new(StringArray::from(vec![s.state])),
                Arc::new(StringArray::from(vec![s.backup_timestamp])),
                int(s.files_total),
                int(s.files_local),
                int(s.bytes_total),
                int(s.bytes_local),
                Arc::new(Float64Array::from(vec![s.bytes_per_second])),
                Arc::new(StringArray::from(vec![s.last_error])),
            ],
        )
    }
}
