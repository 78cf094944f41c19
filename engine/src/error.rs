use datafusion::error::DataFusionError;

/// Everything the engine can fail with; the wire layer maps it to SQLSTATEs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The statement names something that makes no sense (bad partition, wrong column).
    #[error("{0}")]
    InvalidInput(String),
    /// COPY data that cannot be read as the table's rows.
    #[error("COPY data: {0}")]
    BadCopyData(String),
    /// The operation does not fit the current state (e.g. a checkpoint is already open).
    #[error("{0}")]
    State(String),
    /// A backup could not start or failed (message from the backup crate, secrets redacted).
    #[error("{0}")]
    Backup(String),
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<tokio::task::JoinError> for EngineError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}

impl From<EngineError> for DataFusionError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::DataFusion(d) => d,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
