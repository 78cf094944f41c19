//! PostgreSQL functions that client libraries call in their catalog queries and
//! that neither DataFusion nor datafusion-postgres provide. Each found missing
//! by running the client (SQLAlchemy 2 + psycopg 3) against the server.
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::common::utils::take_function_args;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;

/// Registers the functions on `ctx`, after `setup_pg_catalog` (whose `pg_type`
/// `to_regtype` reads).
pub(crate) async fn register(ctx: &SessionContext) -> DfResult<()> {
    ctx.register_udf(to_regtype(pg_type_oids(ctx).await?));
    ctx.register_udf(pg_get_serial_sequence());
    ctx.register_udf(pg_collation_is_visible());
    ctx.register_udf(ScalarUDF::from(JsonBuildObject {
        signature: Signature::one_of(
            vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
            Volatility::Stable,
        ),
    }));
    Ok(())
}

/// `typname` to `oid` of every row of `pg_catalog.pg_type`: a fixed table in
/// datafusion-pg-catalog (PostgreSQL's built-in types), so read once.
async fn pg_type_oids(ctx: &SessionContext) -> DfResult<BTreeMap<String, i32>> {
    let batches = ctx
        .sql("SELECT typname, CAST(oid AS INT) FROM pg_catalog.pg_type")
        .await?
        .collect()
        .await?;
    let mut types = BTreeMap::new();
    for batch in &batches {
        let names = cast(batch.column(0), &DataType::Utf8)?;
        let oids = batch.column(1).as_primitive::<Int32Type>();
        for (name, oid) in names.as_string::<i32>().iter().zip(oids.iter()) {
            if let (Some(name), Some(oid)) = (name, oid) {
                types.insert(name.to_string(), oid);
            }
        }
    }
    Ok(types)
}

/// The `pg_type.typname` a type name written in SQL means, as PostgreSQL's
/// `to_regtype` reads it: case-folded unless quoted, `pg_catalog.` optional,
/// type modifiers ignored, `[]` for the array type, and the SQL-standard
/// spellings (`integer`, `double precision`, `timestamp with time zone`, ...).
fn typname(sql_name: &str) -> String {
    let name = sql_name.trim();
    if let Some(quoted) = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        return quoted.to_string();
    }
    let mut name = name.to_ascii_lowercase();
    // Type modifiers: varchar(20), numeric(10, 2), timestamp(3) with time zone.
    while let (Some(open), Some(close)) = (name.find('('), name.find(')')) {
        if close < open {
            break;
        }
        name.replace_range(open..=close, " ");
    }
    let name = name.trim_end();
    let array = name.ends_with("[]");
    let name = name
        .trim_end_matches("[]")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let base = match name {
        "integer" | "int" => "int4",
        "smallint" => "int2",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "float" => "float8",
        "boolean" => "bool",
        "decimal" => "numeric",
        "character varying" | "char varying" => "varchar",
        "character" | "char" => "bpchar",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        "bit varying" => "varbit",
        other => other,
    };
    if array { format!("_{base}") } else { base.to_string() }
}

/// `to_regtype(name)`: the type's oid, or NULL when there is no such type
/// (which is how psycopg's `TypeInfo.fetch`, run by SQLAlchemy's first
/// connect, learns that `hstore` is not installed). Returns pg_type.oid's type,
/// so `oid = to_regtype(...)` compares without a cast.
fn to_regtype(types: BTreeMap<String, i32>) -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let oids: Int32Array = names[0]
                .as_string::<i32>()
                .iter()
                .map(|n| n.and_then(|n| types.get(&typname(n)).copied()))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

/// `pg_get_serial_sequence(table, column)`: always NULL, because Strata has no
/// sequences (no serial or identity columns). SQLAlchemy's `get_columns` calls it.
fn pg_get_serial_sequence() -> ScalarUDF {
    create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    )
}

/// `pg_collation_is_visible(oid)`: true, as for every collation in PostgreSQL's
/// default search path (all of `pg_collation` lives in `pg_catalog`).
/// SQLAlchemy's `get_columns` calls it.
fn pg_collation_is_visible() -> ScalarUDF {
    create_udf(
        "pg_collation_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let [oids] = take_function_args("pg_collation_is_visible", ColumnarValue::values_to_arrays(args)?)?;
            let visible: BooleanArray = (0..oids.len()).map(|i| oids.is_valid(i).then_some(true)).collect();
            Ok(ColumnarValue::Array(Arc::new(visible)))
        }),
    )
}

/// `json_build_object(k1, v1, k2, v2, ...)`, as PostgreSQL formats it
/// (`{"a" : 1, "b" : "x"}`), as text. SQLAlchemy's `get_columns` builds identity
/// and collation details with it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return exec_err!("json_build_object: argument list must have even number of elements");
        }
        let columns = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let mut text = String::from("{");
            for (i, pair) in columns.chunks(2).enumerate() {
                let [key, value] = pair else { continue };
                let key = ScalarValue::try_from_array(key, row)?;
                if key.is_null() {
                    return exec_err!("json_build_object: argument {} cannot be null", 2 * i + 1);
                }
                if i > 0 {
                    text.push_str(", ");
                }
                push_json_string(&mut text, &key.to_string());
                text.push_str(" : ");
                push_json_value(&mut text, &ScalarValue::try_from_array(value, row)?);
            }
            text.push('}');
            out.push(text);
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

fn push_json_value(out: &mut String, v: &ScalarValue) {
    match v {
        v if v.is_null() => out.push_str("null"),
        ScalarValue::Boolean(Some(b)) => out.push_str(if *b { "true" } else { "false" }),
        ScalarValue::Float32(Some(f)) if f.is_finite() => out.push_str(&v.to_string()),
        ScalarValue::Float64(Some(f)) if f.is_finite() => out.push_str(&v.to_string()),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Decimal128(..) => out.push_str(&v.to_string()),
        // Strings, NaN/Infinity, times and the rest: as PostgreSQL, their text as a JSON string.
        other => push_json_string(out, &other.to_string()),
    }
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json's escaping of a string is JSON's; it cannot fail for a `str`.
    out.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first value `sql` returns, as text ("NULL" for null).
    async fn one_value(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
        let col = cast(batches[0].column(0), &DataType::Utf8).expect("cast");
        let col = col.as_string::<i32>();
        if col.is_null(0) {
            "NULL".into()
        } else {
            col.value(0).to_string()
        }
    }

    #[test]
    fn type_names_as_postgresql_reads_them() {
        for (sql, want) in [
            ("integer", "int4"),
            ("INT4", "int4"),
            ("pg_catalog.int8", "int8"),
            ("double  precision", "float8"),
            ("character varying(20)", "varchar"),
            ("timestamp(3) with time zone", "timestamptz"),
            ("text[]", "_text"),
            ("integer []", "_int4"),
            ("\"MyType\"", "MyType"),
            ("hstore", "hstore"),
        ] {
            assert_eq!(typname(sql), want, "{sql}");
        }
    }

    #[tokio::test]
    async fn to_regtype_finds_builtin_types_and_gives_null_for_others() {
        let ctx = crate::server::test_context().await;
        assert_eq!(one_value(&ctx, "SELECT to_regtype('integer')").await, "23");
        assert_eq!(one_value(&ctx, "SELECT to_regtype('text[]')").await, "1009");
        assert_eq!(one_value(&ctx, "SELECT to_regtype('hstore')").await, "NULL");
        // psycopg's TypeInfo query.
        assert_eq!(
            one_value(
                &ctx,
                "SELECT typname FROM pg_catalog.pg_type t WHERE t.oid = to_regtype('json') ORDER BY t.oid"
            )
            .await,
            "json"
        );
    }

    #[tokio::test]
    async fn catalog_helpers() {
        let ctx = crate::server::test_context().await;
        assert_eq!(
            one_value(&ctx, "SELECT pg_get_serial_sequence('t', 'ts')").await,
            "NULL"
        );
        assert_eq!(
            one_value(&ctx, "SELECT pg_collation_is_visible(CAST(100 AS INT))").await,
            "true"
        );
        assert_eq!(
            one_value(
                &ctx,
                "SELECT json_build_object('name', 'C', 'n', 3, 'f', 1.5, 'ok', true, 'none', NULL, 'q', 'a\"b')"
            )
            .await,
            r#"{"name" : "C", "n" : 3, "f" : 1.5, "ok" : true, "none" : null, "q" : "a\"b"}"#
        );
        assert_eq!(one_value(&ctx, "SELECT json_build_object()").await, "{}");
        assert!(
            ctx.sql("SELECT json_build_object('a')")
                .await
                .expect("plan")
                .collect()
                .await
                .is_err()
        );
    }
}
