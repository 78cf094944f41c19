/// Everything a backup or its store can fail with, naming the key or setting involved.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A bad `backup.*` setting; the message names the key, never a secret.
    #[error("invalid value for '{key}': {reason}")]
    Config { key: String, reason: String },
    #[error("object store: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// QuestDB's ER007.
    #[error(
        "Data ID mismatch: the backup instance '{instance}' in the store belongs to another database (data id \
         {store_data_id}, this database is {local_data_id}); set backup.instance.name to a new name or use \
         another store"
    )]
    DataIdMismatch {
        instance: String,
        store_data_id: String,
        local_data_id: String,
    },
    /// A manifest names another database than the instance it sits in.
    #[error(
        "Data ID mismatch: manifest {key} was written by the database with data id {manifest_data_id}, but \
         instance '{instance}' belongs to data id {instance_data_id} (a manifest copied from another instance, \
         or a replaced data_id object); restore from the instance the backup was taken in"
    )]
    ManifestDataIdMismatch {
        key: String,
        instance: String,
        instance_data_id: String,
        manifest_data_id: String,
    },
    #[error("manifest {key}: {reason}")]
    BadManifest { key: String, reason: String },
    /// The asked-for instance, backup or table does not exist; the message lists what does.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be served as asked (a malformed timestamp, a
    /// partition filter on the wrong column).
    #[error("{0}")]
    InvalidRequest(String),
    /// An object of a backup is missing, corrupt or not what its manifest says.
    #[error("object {key}: {reason}")]
    BadObject { key: String, reason: String },
    #[error("{0}")]
    Restore(String),
    #[error("backup {0} was aborted")]
    Aborted(String),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

pub(crate) fn store_err(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Store { context, source }
}
