//! Backups into a store under object lock (WORM): it refuses to overwrite any
//! object and to delete any. Backups must complete and restore exactly,
//! without ever asking for an overwrite; retention fails cleanly and says why.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use crate::fault_tests::{all_complete_backups_verify, backup, content, database, restored_content};
use crate::history::put_history;
use crate::*;

/// A local store that keeps every object it was given, as a bucket under a
/// compliance-mode object lock does, counting what it refused.
#[derive(Debug)]
struct WriteOnce {
    inner: LocalFileSystem,
    overwrites_refused: Arc<AtomicU64>,
    deletes_refused: Arc<AtomicU64>,
}

impl std::fmt::Display for WriteOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteOnce({})", self.inner)
    }
}

fn locked(path: &ObjPath, what: &str) -> object_store::Error {
    object_store::Error::PermissionDenied {
        path: path.to_string(),
        source: format!("object lock: {what} is not allowed").into(),
    }
}

impl WriteOnce {
    /// Refuses a write to `path` when an object is there: a create-only PUT
    /// is told it exists (as real stores answer), anything else is refused.
    async fn check_absent(&self, path: &ObjPath, create_only: bool) -> object_store::Result<()> {
        match self.inner.head(path).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(_) if create_only => Err(object_store::Error::AlreadyExists {
                path: path.to_string(),
                source: "exists".into(),
            }),
            Ok(_) => {
                self.overwrites_refused.fetch_add(1, Ordering::SeqCst);
                Err(locked(path, "overwriting"))
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for WriteOnce {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check_absent(location, matches!(opts.mode, PutMode::Create))
            .await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check_absent(location, false).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        let refused = self.deletes_refused.clone();
        locations
            .map(move |path| {
                refused.fetch_add(1, Ordering::SeqCst);
                Err(locked(&path?, "deleting"))
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &ObjPath, to: &ObjPath, options: CopyOptions) -> object_store::Result<()> {
        self.check_absent(to, false).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &ObjPath, _to: &ObjPath, _options: RenameOptions) -> object_store::Result<()> {
        Err(locked(from, "renaming"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_refuses_overwrites_and_deletes_takes_backups_that_restore_exactly() {
    let (db, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = database(db.path());
    let worm = WriteOnce {
        inner: LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
        overwrites_refused: Arc::default(),
        deletes_refused: Arc::default(),
    };
    let (overwrites, deletes) = (worm.overwrites_refused.clone(), worm.deletes_refused.clone());
    let store = Store::from_object_store(Arc::new(worm), "write-once");

    let first = backup(&s, &store, 1_000, 1).await;
    assert_eq!(first.status, Status::BackupComplete, "{first:?}");
    let before = content(&s);
    // New files, and files only the first backup holds: the cleanup after the
    // second backup would delete the first backup and those.
    s.table("trades").unwrap().truncate().unwrap();
    let second = backup(&s, &store, 2_000, 1).await;
    assert_eq!(second.status, Status::CleanupFailed, "{second:?}");
    let why = second.cleanup_error.clone().unwrap_or_default();
    assert!(why.contains("object lock: deleting is not allowed"), "{why}");
    assert!(
        second.backup_error.is_none(),
        "the backup itself is complete: {second:?}"
    );
    assert!(deletes.load(Ordering::SeqCst) >= 1, "retention asked for a delete");

    // A backup of unchanged data reuses everything and writes only new keys.
    let third = backup(&s, &store, 3_000, 1).await;
    assert_eq!(
        (third.status, third.files_uploaded),
        (Status::CleanupFailed, 0),
        "{third:?}"
    );

    assert_eq!(
        overwrites.load(Ordering::SeqCst),
        0,
        "no write ever asked to replace an object"
    );
    assert_eq!(all_complete_backups_verify(&store).await, [3_000, 2_000, 1_000]);
    assert_eq!(restored_content(&store, 1_000).await, before);
    assert_eq!(restored_content(&store, 3_000).await, content(&s));
    let history = load_history(&store, "test-instance").await.unwrap();
    let statuses: Vec<_> = history.iter().map(|r| (r.backup_micros, r.status)).collect();
    assert_eq!(
        statuses,
        [
            (3_000, Status::CleanupFailed),
            (2_000, Status::CleanupFailed),
            (1_000, Status::BackupComplete)
        ],
        "the history folds each backup's events into its latest state"
    );
}

#[tokio::test]
async fn a_format_1_history_record_still_reads_and_a_later_event_supersedes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("fs::root={};", dir.path().display())).unwrap();
    let record = |micros, status| BackupRecord {
        backup_micros: micros,
        instance: "i".into(),
        status,
        start_micros: micros,
        end_micros: None,
        backup_error: None,
        cleanup_error: None,
        tables: 1,
        files_total: 1,
        files_uploaded: 1,
        files_done: 1,
        bytes_total: 1,
        bytes_uploaded: 1,
    };
    // What a server before format 2 left: one record per backup, named by its micros.
    let legacy = serde_json::to_vec(&record(5, Status::BackupInProgress)).unwrap();
    store
        .put("i", layout::Object::LegacyHistory(5), legacy.into())
        .await
        .unwrap();
    put_history(&store, &record(6, Status::BackupInProgress), HistoryEvent::Started)
        .await
        .unwrap();
    put_history(&store, &record(6, Status::BackupComplete), HistoryEvent::Finished)
        .await
        .unwrap();
    let statuses = |h: Vec<BackupRecord>| h.iter().map(|r| (r.backup_micros, r.status)).collect::<Vec<_>>();
    assert_eq!(
        statuses(load_history(&store, "i").await.unwrap()),
        [(6, Status::BackupComplete), (5, Status::BackupInProgress)]
    );
    put_history(&store, &record(5, Status::BackupFailed), HistoryEvent::Interrupted)
        .await
        .unwrap();
    assert_eq!(
        statuses(load_history(&store, "i").await.unwrap()),
        [(6, Status::BackupComplete), (5, Status::BackupFailed)]
    );
    // Writing the same event again is refused unless it is the same record (a retried PUT).
    let again = put_history(&store, &record(6, Status::BackupFailed), HistoryEvent::Finished).await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("never overwrites")),
        "{again:?}"
    );
    put_history(&store, &record(6, Status::BackupComplete), HistoryEvent::Finished)
        .await
        .unwrap();
}
