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
    /// A backup, restore or verify failed; the backup crate's error is kept
    /// whole so the wire can tell a corrupt backup from an unreachable store.
    /// (Boxed: the backup error is large and most results are `Ok`.)
    #[error(transparent)]
    Backup(Box<backup::BackupError>),
    /// The same, with what was being done (`backup 2024-… failed`).
    #[error("{context}: {source}")]
    BackupDuring {
        context: String,
        #[source]
        source: Box<backup::BackupError>,
    },
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<backup::BackupError> for EngineError {
    fn from(e: backup::BackupError) -> Self {
        Self::Backup(Box::new(e))
    }
}

impl EngineError {
    /// A backup error with what was being done when it happened.
    pub fn backup_during(context: impl Into<String>, source: backup::BackupError) -> Self {
        Self::BackupDuring {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

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
