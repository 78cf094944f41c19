//! COPY FROM STDIN: CSV or text rows into a table, committed as one transaction.
use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use storage::Table;

use crate::error::{EngineError, Result};

/// How the incoming bytes are laid out (PostgreSQL COPY options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// Columns present in the data, in order; `None` means all table columns.
    pub columns: Option<Vec<String>>,
    pub header: bool,
    pub delimiter: u8,
    /// The string that stands for NULL.
    pub null: String,
}

/// Parses `data` as rows of `table` and commits them; returns the row count.
/// Nothing becomes visible unless every row parses.
pub(crate) fn copy_rows(table: &Arc<Table>, format: &CopyFormat, data: &[u8]) -> Result<u64> {
    let table_schema = table.schema();
    let indices: Vec<usize> = match &format.columns {
        None => (0..table_schema.fields().len()).collect(),
        Some(cols) => cols
            .iter()
            .map(|c| {
                table_schema.index_of(c).map_err(|_| {
                    EngineError::InvalidInput(format!("column '{c}' of table '{}' does not exist", table.name()))
                })
            })
            .collect::<Result<_>>()?,
    };
    // Parse every column as nullable so a missing timestamp is reported by storage, by name.
    let file_schema: SchemaRef = Arc::new(Schema::new(
        indices
            .iter()
            .map(|&i| table_schema.field(i).as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let null_regex = regex::Regex::new(&format!("^{}$", regex::escape(&format.null)))
        .map_err(|e| EngineError::InvalidInput(format!("NULL string: {e}")))?;
    let reader = ReaderBuilder::new(file_schema.clone())
        .with_header(format.header)
        .with_delimiter(format.delimiter)
        .with_null_regex(null_regex)
        .with_batch_size(65_536)
        .build(Cursor::new(data))
        .map_err(|e| EngineError::BadCopyData(e.to_string()))?;
    let mut writer = table.writer();
    for batch in reader {
        let batch = batch.map_err(|e| EngineError::BadCopyData(e.to_string()))?;
        let columns: Vec<ArrayRef> = table_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| match indices.iter().position(|&j| j == i) {
                Some(k) => batch.column(k).clone(),
                None => new_null_array(f.data_type(), batch.num_rows()),
            })
            .collect();
        let nullable = Arc::new(Schema::new(
            table_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let full = RecordBatch::try_new(nullable, columns).map_err(|e| EngineError::BadCopyData(e.to_string()))?;
        writer.write(&full)?;
    }
    Ok(writer.commit()?)
}
