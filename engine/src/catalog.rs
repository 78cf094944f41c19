//! The `public` schema DataFusion resolves table names in, backed by storage's tables.
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{Result as DfResult, plan_err};
use storage::Storage;

use crate::provider::StrataTable;

#[derive(Debug)]
pub(crate) struct StrataSchema {
    storage: Arc<Storage>,
}

impl StrataSchema {
    pub(crate) fn new(storage: Arc<Storage>) -> Self {
        Self { storage }
    }
}

#[async_trait]
impl SchemaProvider for StrataSchema {
    fn table_names(&self) -> Vec<String> {
        self.storage.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .storage
            .table(name)
            .map(|t| Arc::new(StrataTable::new(t)) as Arc<dyn TableProvider>))
    }

    fn register_table(&self, name: String, _table: Arc<dyn TableProvider>) -> DfResult<Option<Arc<dyn TableProvider>>> {
        plan_err!("cannot create '{name}' this way; use CREATE TABLE ... TIMESTAMP(col) PARTITION BY ...")
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        plan_err!("cannot drop '{name}' this way; use DROP TABLE")
    }

    fn table_exist(&self, name: &str) -> bool {
        self.storage.table(name).is_some()
    }
}
