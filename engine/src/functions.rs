//! Table functions for monitoring: `checkpoint_status()`.
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result as DfResult, plan_err};

use crate::checkpoint::Checkpoints;

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
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("in_progress", DataType::Boolean, false),
            Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("pinned_bytes", DataType::Int64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![s.in_progress])),
            Arc::new(TimestampMicrosecondArray::from(vec![s.started_at_micros]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![
                i64::try_from(s.pinned_bytes).unwrap_or(i64::MAX),
            ])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
