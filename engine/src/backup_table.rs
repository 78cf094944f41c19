//! `backup_table('<table>' [, 'LATEST' | '<backup timestamp>' | '<any instant>'])`:
//! a table as a backup holds it, queried where it lies. The manifest prunes
//! files by the query's designated-timestamp bounds; DataFusion's Parquet
//! reader prunes row groups and pages and asks for the column chunks it needs,
//! which [`backup::RemoteFile`] fetches by range. Nothing is written locally.
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{ParquetFileMetrics, ParquetFileReaderFactory, ParquetSource};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet};
use futures::future::BoxFuture;
use object_store::local::LocalFileSystem;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::error::EngineError;
use crate::provider::parquet_scan;
use crate::pruning::TimeRange;

/// Where `backup_table()` finds backups: the store, and the instance when the
/// caller is a database (its own); `None` takes the store's only instance.
#[derive(Debug, Clone)]
pub struct BackupSource {
    pub store: backup::Store,
    pub instance: Option<String>,
}

/// Runs `sql` in a session with no database where `backup_table()` reads
/// `source`, and returns its rows as a text table: `strata backup query`.
pub async fn query_backups(source: BackupSource, sql: &str) -> Result<String, EngineError> {
    let ctx = crate::database::backup_session(source);
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(DataFusionError::from)?
        .to_string())
}

/// Bytes read from the end of a file with its first read: the footer of a
/// Strata file (a few columns) in one request, without much data with it
/// (DataFusion's default, 512 KiB, would read most small files whole).
const FOOTER_HINT: usize = 16 << 10;

#[derive(Debug)]
pub(crate) struct BackupTableFunction {
    /// `None` when backups are disabled.
    pub(crate) source: Option<BackupSource>,
}

fn text_arg(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

fn external(e: impl Into<EngineError>) -> DataFusionError {
    DataFusionError::External(Box::new(e.into()))
}

impl TableFunctionImpl for BackupTableFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let usage = "backup_table('<table>' [, 'LATEST' | '<backup timestamp>' | '<instant>'])";
        let texts: Option<Vec<&str>> = args.exprs().iter().map(text_arg).collect();
        let (table, timestamp) = match texts.as_deref() {
            Some([table]) => (*table, None),
            Some([table, ts]) if ts.eq_ignore_ascii_case("latest") => (*table, None),
            Some([table, ts]) => (*table, Some(ts.to_string())),
            _ => return plan_err!("{usage} takes one or two text literals"),
        };
        let Some(source) = &self.source else {
            return Err(external(EngineError::State(
                "backup_table() reads the backup store, and backups are disabled (backup.enabled=false)".into(),
            )));
        };
        let selector = backup::Selector {
            instance: source.instance.clone(),
            timestamp,
        };
        // Table functions are planned synchronously, and the schema is in the manifest.
        let located = block_on(backup::open_table(&source.store, &selector, table))?.map_err(external)?;
        Ok(Arc::new(BackupTableProvider {
            store: source.store.clone(),
            table: located,
        }))
    }
}

/// Runs `work` to completion from synchronous planning code, without
/// stalling the runtime's other tasks.
fn block_on<F: std::future::Future>(work: F) -> DfResult<F::Output> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| DataFusionError::Execution("backup_table() runs only inside the server's runtime".into()))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(DataFusionError::Execution(
            "backup_table() needs a multi-threaded runtime".into(),
        ));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(work)))
}

/// One table of a backup, as DataFusion sees it.
#[derive(Debug)]
struct BackupTableProvider {
    store: backup::Store,
    table: backup::BackupTable,
}

#[async_trait]
impl TableProvider for BackupTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.entry.meta.arrow_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let entry = &self.table.entry;
        let range = TimeRange::for_table(&entry.meta, filters);
        let files: Vec<PartitionedFile> = entry
            .files
            .iter()
            .filter(|f| range.may_contain(&f.file))
            .map(|f| {
                let remote = backup::RemoteFile::new(self.store.clone(), &self.table.instance, f.clone());
                PartitionedFile::new(f.object.clone(), f.file.bytes).with_extension(Arc::new(remote))
            })
            .collect();
        let source =
            ParquetSource::new(self.schema()).with_table_parquet_options(state.table_options().parquet.clone());
        parquet_scan(reading_remote_files(source), files, state, projection, limit)
    }
}

/// `source` reading the files that carry a [`backup::RemoteFile`] from the
/// store and the others from the local file system.
pub(crate) fn reading_remote_files(source: ParquetSource) -> ParquetSource {
    let local = DefaultParquetFileReaderFactory::new(Arc::new(LocalFileSystem::new()));
    source
        .with_metadata_size_hint(FOOTER_HINT)
        .with_parquet_file_reader_factory(Arc::new(RemoteReaderFactory { local }))
}

/// Hands DataFusion's Parquet reader a [`RemoteReader`] per backed-up file,
/// and a local reader for the others.
#[derive(Debug)]
struct RemoteReaderFactory {
    local: DefaultParquetFileReaderFactory,
}

impl ParquetFileReaderFactory for RemoteReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn AsyncFileReader + Send>> {
        let Some(remote) = file.extension::<Arc<backup::RemoteFile>>().cloned() else {
            return self
                .local
                .create_reader(partition_index, file, metadata_size_hint, metrics);
        };
        let bytes_scanned = ParquetFileMetrics::new(partition_index, file.path().as_ref(), metrics).bytes_scanned;
        Ok(Box::new(RemoteReader {
            remote,
            footer_hint: metadata_size_hint.unwrap_or(FOOTER_HINT),
            bytes_scanned,
        }))
    }
}

struct RemoteReader {
    remote: Arc<backup::RemoteFile>,
    footer_hint: usize,
    bytes_scanned: Count,
}

fn parquet_err(e: backup::BackupError) -> ParquetError {
    ParquetError::External(Box::new(EngineError::from(e)))
}

impl AsyncFileReader for RemoteReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.bytes_scanned.add((range.end - range.start) as usize);
        let remote = self.remote.clone();
        Box::pin(async move { remote.read(range).await.map_err(parquet_err) })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.bytes_scanned.add(total as usize);
        let remote = self.remote.clone();
        Box::pin(async move { remote.read_ranges(&ranges).await.map_err(parquet_err) })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let mut reader = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(Some(self.footer_hint));
            if let Some(o) = options {
                reader = reader
                    .with_column_index_policy(o.column_index_policy())
                    .with_offset_index_policy(o.offset_index_policy());
            } else {
                reader = reader.with_page_index_policy(PageIndexPolicy::Skip);
            }
            let size = self.remote.file().file.bytes;
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        })
    }
}
