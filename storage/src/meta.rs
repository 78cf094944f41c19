//! A table's definition: columns, designated timestamp, partitioning.
use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::partition::PartitionBy;
use crate::paths::validate_table_name;

/// Version of `_meta.json`; bump on incompatible changes.
pub(crate) const META_FORMAT_VERSION: u32 = 1;

/// Field metadata key marking a SYMBOL column (a dictionary-encoded string).
pub const SYMBOL_METADATA_KEY: &str = "strata.symbol";

/// The column types Strata stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ColumnType {
    Timestamp,
    /// A low-cardinality string, dictionary-encoded in Parquet.
    Symbol,
    Varchar,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Date,
}

impl ColumnType {
    /// Parses a SQL type name, accepting the common aliases.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "TIMESTAMP" => Self::Timestamp,
            "SYMBOL" => Self::Symbol,
            "VARCHAR" | "STRING" | "TEXT" => Self::Varchar,
            "BOOLEAN" | "BOOL" => Self::Boolean,
            "INT" | "INTEGER" | "INT4" => Self::Int,
            "LONG" | "BIGINT" | "INT8" => Self::Long,
            "FLOAT" | "REAL" | "FLOAT4" => Self::Float,
            "DOUBLE" | "FLOAT8" => Self::Double,
            "DATE" => Self::Date,
            _ => return None,
        })
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Symbol | Self::Varchar => DataType::Utf8,
            Self::Boolean => DataType::Boolean,
            Self::Int => DataType::Int32,
            Self::Long => DataType::Int64,
            Self::Float => DataType::Float32,
            Self::Double => DataType::Float64,
            Self::Date => DataType::Date32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

/// The content of `_meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    pub format_version: u32,
    pub name: String,
    pub columns: Vec<Column>,
    /// The designated timestamp column, which drives partitioning and pruning.
    pub timestamp: Option<String>,
    pub partition_by: PartitionBy,
}

impl TableMeta {
    /// Builds and validates a definition.
    pub fn new(name: &str, columns: Vec<Column>, timestamp: Option<String>, partition_by: PartitionBy) -> Result<Self> {
        let meta = Self {
            format_version: META_FORMAT_VERSION,
            name: name.to_string(),
            columns,
            timestamp,
            partition_by,
        };
        meta.validate()?;
        Ok(meta)
    }

    /// Checks names, types and the designated timestamp (also for definitions read from outside).
    pub fn validate(&self) -> Result<()> {
        validate_table_name(&self.name)?;
        let bad = |reason: String| {
            Err(StorageError::InvalidDefinition {
                table: self.name.clone(),
                reason,
            })
        };
        if self.format_version != META_FORMAT_VERSION {
            return bad(format!("unsupported metadata format version {}", self.format_version));
        }
        if self.columns.is_empty() {
            return bad("a table needs at least one column".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if c.name.is_empty() {
                return bad("empty column name".into());
            }
            if !seen.insert(c.name.to_ascii_lowercase()) {
                return bad(format!("duplicate column '{}'", c.name));
            }
        }
        match &self.timestamp {
            Some(ts) => match self.columns.iter().find(|c| &c.name == ts) {
                None => {
                    return bad(format!("designated timestamp column '{ts}' is not a column"));
                }
                Some(c) if c.ty != ColumnType::Timestamp => {
                    return bad(format!("designated timestamp column '{ts}' must have type TIMESTAMP"));
                }
                Some(_) => {}
            },
            None if self.partition_by != PartitionBy::None => {
                return bad("PARTITION BY needs a designated timestamp: add TIMESTAMP(column)".into());
            }
            None => {}
        }
        Ok(())
    }

    /// Index of the designated timestamp column, if any.
    pub fn timestamp_index(&self) -> Option<usize> {
        let ts = self.timestamp.as_ref()?;
        self.columns.iter().position(|c| &c.name == ts)
    }

    /// The Arrow schema of the table's rows (the designated timestamp is non-nullable).
    pub fn arrow_schema(&self) -> SchemaRef {
        let ts = self.timestamp_index();
        let fields: Vec<Field> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let f = Field::new(&c.name, c.ty.arrow_type(), Some(i) != ts);
                if c.ty == ColumnType::Symbol {
                    f.with_metadata(HashMap::from([(SYMBOL_METADATA_KEY.to_string(), "true".to_string())]))
                } else {
                    f
                }
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column { name: name.into(), ty }
    }

    #[test]
    fn validates_definitions() {
        let cols = vec![col("ts", ColumnType::Timestamp), col("s", ColumnType::Symbol)];
        assert!(TableMeta::new("t", cols.clone(), Some("ts".into()), PartitionBy::Day).is_ok());
        assert!(TableMeta::new("t", cols.clone(), Some("s".into()), PartitionBy::Day).is_err());
        assert!(TableMeta::new("t", cols.clone(), Some("nope".into()), PartitionBy::Day).is_err());
        assert!(TableMeta::new("t", cols.clone(), None, PartitionBy::Day).is_err());
        assert!(TableMeta::new("t", cols, None, PartitionBy::None).is_ok());
        let dup = vec![col("a", ColumnType::Int), col("A", ColumnType::Int)];
        assert!(TableMeta::new("t", dup, None, PartitionBy::None).is_err());
    }

    #[test]
    fn designated_timestamp_is_not_nullable() {
        let cols = vec![col("ts", ColumnType::Timestamp), col("v", ColumnType::Double)];
        let m = TableMeta::new("t", cols, Some("ts".into()), PartitionBy::Day).unwrap();
        let s = m.arrow_schema();
        assert!(!s.field(0).is_nullable());
        assert!(s.field(1).is_nullable());
    }
}
