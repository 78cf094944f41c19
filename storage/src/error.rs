use std::path::PathBuf;

/// Everything that can go wrong in storage, with the table or file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("table '{0}' already exists")]
    TableExists(String),
    #[error(
        "table '{0}' was dropped while a checkpoint is in progress; its files stay until CHECKPOINT RELEASE, \
         so the name cannot be reused before then"
    )]
    DroppedDuringCheckpoint(String),
    #[error("table '{0}' does not exist")]
    TableNotFound(String),
    #[error("invalid table name '{name}': {reason}")]
    InvalidTableName { name: String, reason: String },
    #[error("invalid table definition for '{table}': {reason}")]
    InvalidDefinition { table: String, reason: String },
    #[error("table '{table}': {reason}")]
    InvalidData { table: String, reason: String },
    #[error("table '{table}': designated timestamp column '{column}' cannot be NULL")]
    NullTimestamp { table: String, column: String },
    #[error("The local database is not empty. {0} already holds a database; a backup restores only into an empty root")]
    NotEmpty(PathBuf),
    #[error(
        "Failed restore directory found: {dir} (the failed tables are listed in {file}); inspect them, then \
         remove both to start or to retry the restore"
    )]
    FailedRestoreFound { dir: PathBuf, file: PathBuf },
    #[error(
        "the database cannot accept changes: its restored files could not be made durable ({0}); restart the \
         server to restore again"
    )]
    NotDurable(String),
    #[error("corrupt file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("table '{table}': parquet error in {path}: {source}")]
    Parquet {
        table: String,
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("table '{table}': {source}")]
    Arrow {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Attaches a human-readable context (what was being done to which path) to io errors.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StorageError::Io {
            context: what(),
            source,
        })
    }
}
