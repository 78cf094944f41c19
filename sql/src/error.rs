//! Errors as the client sees them: a PostgreSQL SQLSTATE and a message.
//!
//! Every failure crossing the wire boundary goes through [`SqlError`], and
//! [`SqlError::from_datafusion`] / `From<EngineError>` are the only places
//! that decide SQLSTATEs.
use backup::BackupError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use engine::EngineError;
use pgwire::error::{ErrorInfo, PgWireError};
use storage::StorageError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// PostgreSQL SQLSTATE, e.g. `42P01`.
    pub code: &'static str,
    pub message: String,
}

/// SQLSTATEs we use.
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const INVALID_NAME: &str = "42602";
    pub const INVALID_DEFINITION: &str = "42P16";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const BAD_COPY_FORMAT: &str = "22P04";
    pub const DATA_EXCEPTION: &str = "22000";
    pub const IO_ERROR: &str = "58030";
    pub const DATA_CORRUPTED: &str = "XX001";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const QUERY_CANCELED: &str = "57014";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
}

use sqlstate::*;

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new(SYNTAX_ERROR, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(FEATURE_NOT_SUPPORTED, message)
    }

    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMETER_VALUE, message)
    }

    /// Classifies a DataFusion error by its kind and, for plan errors, its wording.
    pub fn from_datafusion(e: &DataFusionError) -> Self {
        let message = e.to_string();
        let code = match e.find_root() {
            DataFusionError::SQL(..) => SYNTAX_ERROR,
            DataFusionError::SchemaError(se, _) => match se.as_ref() {
                datafusion::common::SchemaError::FieldNotFound { .. } => UNDEFINED_COLUMN,
                _ => INVALID_DEFINITION,
            },
            DataFusionError::NotImplemented(_) => FEATURE_NOT_SUPPORTED,
            DataFusionError::External(inner) => {
                if let Some(engine) = inner.downcast_ref::<EngineError>() {
                    return Self::from(engine);
                }
                if let Some(st) = inner.downcast_ref::<StorageError>() {
                    return Self::from(st);
                }
                INTERNAL_ERROR
            }
            // A read of a backup in place failed (a missing or corrupt object).
            DataFusionError::ParquetError(p) => match p.as_ref() {
                ParquetError::External(inner) => match inner.downcast_ref::<EngineError>() {
                    Some(engine) => return Self::from(engine),
                    None => DATA_CORRUPTED,
                },
                _ => DATA_CORRUPTED,
            },
            DataFusionError::ArrowError(..) if message.contains("non-nullable") => NOT_NULL_VIOLATION,
            DataFusionError::ArrowError(..) => DATA_EXCEPTION,
            DataFusionError::Plan(msg) if msg.contains("table") && msg.contains("not found") => UNDEFINED_TABLE,
            DataFusionError::Plan(msg) if msg.contains("No field named") => UNDEFINED_COLUMN,
            DataFusionError::Plan(_) => SYNTAX_ERROR,
            DataFusionError::IoError(_) => IO_ERROR,
            _ => INTERNAL_ERROR,
        };
        Self::new(code, strip_datafusion_prefixes(&message))
    }

    pub fn into_pg(self) -> PgWireError {
        PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), self.code.into(), self.message)))
    }
}

/// DataFusion nests "Error during planning: ..." prefixes; the user needs the last part.
fn strip_datafusion_prefixes(msg: &str) -> String {
    let mut m = msg;
    for prefix in [
        "External error: ",
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Arrow error: ",
        "Invalid argument error: ",
    ] {
        while let Some(rest) = m.strip_prefix(prefix) {
            m = rest;
        }
    }
    m.to_string()
}

impl From<&StorageError> for SqlError {
    fn from(e: &StorageError) -> Self {
        let code = match e {
            StorageError::TableExists(_) => DUPLICATE_TABLE,
            StorageError::TableNotFound(_) => UNDEFINED_TABLE,
            StorageError::DroppedDuringCheckpoint(_)
            | StorageError::NotEmpty(_)
            | StorageError::FailedRestoreFound { .. } => OBJECT_NOT_IN_PREREQUISITE_STATE,
            StorageError::InvalidTableName { .. } => INVALID_NAME,
            StorageError::InvalidDefinition { .. } => INVALID_DEFINITION,
            StorageError::NullTimestamp { .. } => NOT_NULL_VIOLATION,
            StorageError::InvalidData { .. } | StorageError::Arrow { .. } => DATA_EXCEPTION,
            StorageError::Io { .. } | StorageError::NotDurable(_) => IO_ERROR,
            StorageError::Corrupt { .. } | StorageError::Parquet { .. } => DATA_CORRUPTED,
        };
        Self::new(code, e.to_string())
    }
}

impl From<&BackupError> for SqlError {
    fn from(e: &BackupError) -> Self {
        let code = match e {
            BackupError::Config { .. } | BackupError::InvalidRequest(_) => INVALID_PARAMETER_VALUE,
            BackupError::Store { .. } => IO_ERROR,
            BackupError::DataIdMismatch { .. } | BackupError::ManifestDataIdMismatch { .. } => {
                OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            BackupError::BadManifest { .. } | BackupError::BadObject { .. } => DATA_CORRUPTED,
            BackupError::NotFound(_) => UNDEFINED_OBJECT,
            BackupError::Aborted(_) => QUERY_CANCELED,
            BackupError::Storage(s) => Self::from(s).code,
            BackupError::Restore(_) | BackupError::Other(_) => INTERNAL_ERROR,
        };
        Self::new(code, e.to_string())
    }
}

impl From<&EngineError> for SqlError {
    fn from(e: &EngineError) -> Self {
        match e {
            EngineError::Storage(s) => Self::from(s),
            EngineError::Backup(b) => Self::from(b.as_ref()),
            EngineError::BackupDuring { source, .. } => Self::new(Self::from(source.as_ref()).code, e.to_string()),
            EngineError::DataFusion(d) => Self::from_datafusion(d),
            EngineError::InvalidInput(m) => Self::invalid_value(m.clone()),
            EngineError::BadCopyData(m) => Self::new(BAD_COPY_FORMAT, m.clone()),
            EngineError::State(m) => Self::new(OBJECT_NOT_IN_PREREQUISITE_STATE, m.clone()),
            other => Self::new(INTERNAL_ERROR, other.to_string()),
        }
    }
}

impl From<EngineError> for SqlError {
    fn from(e: EngineError) -> Self {
        Self::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_sqlstates() {
        assert_eq!(
            SqlError::from(&StorageError::TableNotFound("t".into())).code,
            UNDEFINED_TABLE
        );
        assert_eq!(
            SqlError::from(&StorageError::TableExists("t".into())).code,
            DUPLICATE_TABLE
        );
    }

    #[test]
    fn backup_errors_keep_their_kind_up_to_the_wire() {
        let store = BackupError::Store {
            context: "reading x".into(),
            source: object_store::Error::Generic {
                store: "s3",
                source: "connection refused".into(),
            },
        };
        let during = EngineError::backup_during(
            "backup 2024-01-01T00:00:00.000000Z failed",
            BackupError::Aborted("2024-01-01T00:00:00.000000Z".into()),
        );
        for (err, code) in [
            (EngineError::from(store), IO_ERROR),
            (
                EngineError::from(BackupError::BadObject {
                    key: "k".into(),
                    reason: "corrupt".into(),
                }),
                DATA_CORRUPTED,
            ),
            (
                EngineError::from(BackupError::NotFound("no backup".into())),
                UNDEFINED_OBJECT,
            ),
            (
                EngineError::from(BackupError::InvalidRequest("bad timestamp".into())),
                INVALID_PARAMETER_VALUE,
            ),
            (during, QUERY_CANCELED),
            (
                EngineError::from(BackupError::Storage(StorageError::TableExists("t".into()))),
                DUPLICATE_TABLE,
            ),
        ] {
            assert_eq!(SqlError::from(&err).code, code, "{err}");
        }
    }

    #[test]
    fn datafusion_prefixes_are_stripped() {
        let e = DataFusionError::Plan("table 'datafusion.public.nope' not found".into());
        let s = SqlError::from_datafusion(&e);
        assert_eq!(s.code, UNDEFINED_TABLE);
        assert_eq!(s.message, "table 'datafusion.public.nope' not found");
    }
}
