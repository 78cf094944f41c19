//! Looking like the PostgreSQL version we speak, to clients that check.
//!
//! SQLAlchemy (and so pandas, Superset, Airflow) parses `SELECT version()` with
//! a `PostgreSQL X.Y` pattern and refuses to connect otherwise; libpq-based
//! drivers read the `server_version` startup parameter; others run `SHOW
//! server_version_num`. All of them get the same PostgreSQL version from here,
//! and `version()` also names Strata and DataFusion for people.
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use pgwire::api::auth::DefaultServerParameterProvider;

/// The PostgreSQL release whose wire protocol and catalog we imitate (pgwire 0.41
/// and datafusion-postgres 0.19 target PostgreSQL 16).
pub(crate) const PG_VERSION: &str = "16.4";
/// [`PG_VERSION`] as `SHOW server_version_num` gives it (major * 10000 + minor).
pub(crate) const PG_VERSION_NUM: &str = "160004";

/// What `version()` returns, e.g. `PostgreSQL 16.4 (Strata 0.1.0, DataFusion 55.2.0) on x86_64-linux`.
pub(crate) fn version_string() -> String {
    format!(
        "PostgreSQL {PG_VERSION} (Strata {}, DataFusion {}) on {}-{}",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS,
    )
}

/// Replaces DataFusion's `version()` (`Apache DataFusion 55.2.0, ...`) on `ctx`;
/// `pg_catalog.version()` reaches it too, because datafusion-postgres strips the
/// schema from function names.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(VersionFunc {
        signature: Signature::nullary(Volatility::Immutable),
    }));
}

/// The startup parameters every connection gets: pgwire's defaults, with our
/// `server_version` instead of pgwire's `16.6-pgwire-0.41.1`. Built once.
pub(crate) static SERVER_PARAMETERS: LazyLock<Arc<DefaultServerParameterProvider>> = LazyLock::new(|| {
    let mut params = DefaultServerParameterProvider::default();
    params.server_version = PG_VERSION.to_string();
    Arc::new(params)
});

#[derive(Debug, PartialEq, Eq, Hash)]
struct VersionFunc {
    signature: Signature,
}

impl ScalarUDFImpl for VersionFunc {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(version_string()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn version_replaces_datafusions_and_parses_as_postgresql() {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx
            .sql("SELECT version()")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        assert!(text.contains(&version_string()), "{text}");
        let v = version_string();
        assert!(v.starts_with("PostgreSQL 16.4 (Strata "), "{v}");
        assert!(v.contains(datafusion::DATAFUSION_VERSION), "{v}");
        let (major, minor) = PG_VERSION.split_once('.').expect("major.minor");
        let num: u32 = PG_VERSION_NUM.parse().expect("number");
        assert_eq!(
            num,
            major.parse::<u32>().expect("major") * 10000 + minor.parse::<u32>().expect("minor")
        );
    }
}
