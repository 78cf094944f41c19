//! DataFusion's view of a Strata table: scans with partition pruning, inserts as one commit.
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, not_impl_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use storage::Table;

use crate::backup_table::reading_remote_files;
use crate::error::EngineError;
use crate::hydration::Hydration;
use crate::pruning::TimeRange;

/// A table as DataFusion sees it. Cheap to create: it holds the storage handle.
#[derive(Debug)]
pub struct StrataTable {
    table: Arc<Table>,
    /// While an instant restore's files arrive: those not here are read where they lie.
    hydration: Option<Arc<Hydration>>,
}

impl StrataTable {
    pub fn new(table: Arc<Table>) -> Self {
        Self::hydrating(table, None)
    }

    pub(crate) fn hydrating(table: Arc<Table>, hydration: Option<Arc<Hydration>>) -> Self {
        let hydration = hydration.filter(|h| !h.is_complete());
        Self { table, hydration }
    }

    /// A file as the scan reads it: from the store while it is not here yet.
    fn partitioned_file(&self, f: &storage::DataFile) -> PartitionedFile {
        let remote = self
            .hydration
            .as_ref()
            .and_then(|h| h.remote_file(self.table.name(), &f.path));
        match remote {
            Some(remote) => PartitionedFile::new(remote.file().object.clone(), f.bytes).with_extension(remote),
            None => {
                let path = self.table.file_path(f);
                PartitionedFile::new(path.to_string_lossy().trim_start_matches('/').to_string(), f.bytes)
            }
        }
    }
}

#[async_trait]
impl TableProvider for StrataTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used for file pruning and Parquet row-group pruning; DataFusion still filters rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let commit = self.table.commit();
        let range = TimeRange::for_table(self.table.meta(), filters);
        let files: Vec<PartitionedFile> = commit
            .files
            .iter()
            .filter(|f| range.may_contain(f))
            .map(|f| self.partitioned_file(f))
            .collect();
        // DataFusion's filter pushdown hands the predicate to the Parquet source for
        // row-group pruning; here we only choose files.
        let source =
            ParquetSource::new(self.schema()).with_table_parquet_options(state.table_options().parquet.clone());
        let remote = files.iter().any(|f| f.extension::<Arc<backup::RemoteFile>>().is_some());
        let source = if remote { reading_remote_files(source) } else { source };
        parquet_scan(source, files, state, projection, limit)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!("{insert_op} is not supported; use INSERT INTO");
        }
        let sink = TableSink {
            table: self.table.clone(),
            schema: self.table.schema(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// A scan of `files` on the local file system (unless `source` has a reader
/// factory of its own), spread over the session's cores.
pub(crate) fn parquet_scan(
    source: ParquetSource,
    files: Vec<PartitionedFile>,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let groups = split_into_groups(files, state.config().target_partitions());
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
        .with_file_groups(groups)
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// Spreads files over up to `n` groups (one per core) keeping each file whole.
fn split_into_groups(files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.max(1).min(files.len().max(1));
    let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
    for (i, f) in files.into_iter().enumerate() {
        groups[i % n].push(f);
    }
    groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(FileGroup::new)
        .collect()
}

/// Receives the rows of one INSERT and commits them as one transaction.
#[derive(Debug)]
struct TableSink {
    table: Arc<Table>,
    schema: SchemaRef,
}

impl DisplayAs for TableSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StrataSink: table={}", self.table.name())
    }
}

#[async_trait]
impl DataSink for TableSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(&self, mut data: SendableRecordBatchStream, _ctx: &Arc<TaskContext>) -> DfResult<u64> {
        let mut writer = self.table.writer();
        while let Some(batch) = data.next().await {
            let batch = batch?;
            writer = tokio::task::spawn_blocking(move || writer.write(&batch).map(|()| writer))
                .await
                .map_err(EngineError::from)?
                .map_err(EngineError::from)?;
        }
        let rows = tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(EngineError::from)?
            .map_err(EngineError::from)?;
        Ok(rows)
    }
}
