//! The `public` schema DataFusion resolves table names in, backed by storage's tables.
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{Result as DfResult, plan_err};
use storage::Storage;

use crate::hydration::Hydration;
use crate::provider::StrataTable;

#[derive(Debug)]
pub(crate) struct StrataSchema {
    storage: Arc<Storage>,
    /// Set while an instant restore's files arrive.
    hydration: Option<Arc<Hydration>>,
}

impl StrataSchema {
    pub(crate) fn new(storage: Arc<Storage>, hydration: Option<Arc<Hydration>>) -> Self {
        Self { storage, hydration }
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
            .map(|t| Arc::new(StrataTable::hydrating(t, self.hydration.clone())) as Arc<dyn TableProvider>))
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
