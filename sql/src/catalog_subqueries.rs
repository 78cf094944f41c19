//! Correlated scalar subqueries on the catalog, as PostgreSQL clients write them.
//!
//! SQLAlchemy's `get_columns` (like many tools' reflection) looks up one value per
//! column with `(SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE
//! adrelid = attrelid AND adnum = attnum)`. PostgreSQL runs it and errors only if
//! a row gets two values; DataFusion refuses to plan it ("Correlated scalar
//! subquery must be aggregated to return at most one row"). For subqueries that
//! read nothing but `pg_catalog` / `information_schema`, whose lookups go by
//! unique keys, this analyzer rule wraps the value in `max(...)`: the same result
//! for zero or one row, in the aggregated shape DataFusion decorrelates. On
//! tables of ours such a subquery is still refused, so no result quietly
//! depends on which of several rows came first.
//!
//! A correlated subquery on a catalog table that is always empty here
//! (`pg_sequence`) is NULL.
//!
//! Conditions on the outer row alone (`WHERE pg_attribute.atthasdef AND ...`)
//! move out of the subquery into `CASE WHEN cond THEN (subquery) END`, the same
//! value: DataFusion cannot pull such a condition over the aggregate.
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::expr_rewriter::{NamePreserver, strip_outer_reference};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Subquery, when};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

/// Adds the rule to `ctx`; it runs after DataFusion's own analyzer rules, before
/// the plan's final check.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.add_analyzer_rule(Arc::new(AggregateCatalogScalarSubqueries));
}

#[derive(Debug)]
struct AggregateCatalogScalarSubqueries;

impl AnalyzerRule for AggregateCatalogScalarSubqueries {
    fn name(&self) -> &str {
        "strata_aggregate_catalog_scalar_subqueries"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // Parents refer to the expressions by name: keep the names.
            let names = NamePreserver::new(&node);
            node.map_expressions(|e| {
                if !e.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(sq) if !sq.outer_ref_columns.is_empty())))? {
                    return Ok(Transformed::no(e));
                }
                let name = names.save(&e);
                let rewritten = e.transform_up(|e| match e {
                    Expr::ScalarSubquery(sq) if !sq.outer_ref_columns.is_empty() && always_empty(&sq.subquery) => {
                        let null = ScalarValue::try_from(sq.subquery.schema().field(0).data_type())?;
                        Ok(Transformed::yes(Expr::Literal(null, None)))
                    }
                    Expr::ScalarSubquery(sq) if needs_aggregate(&sq) && reads_only_catalog(&sq.subquery) => {
                        rewrite(sq).map(Transformed::yes)
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(rewritten.update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }
}

/// True where DataFusion's check would refuse the subquery: correlated, one
/// column, not already aggregated, and not limited to one row.
fn needs_aggregate(sq: &Subquery) -> bool {
    let plan = sq.subquery.as_ref();
    let mut inner = plan;
    while let LogicalPlan::Projection(p) = inner {
        inner = p.input.as_ref();
    }
    !sq.outer_ref_columns.is_empty()
        && plan.schema().fields().len() == 1
        && !matches!(inner, LogicalPlan::Aggregate(_))
        && !matches!(inner, LogicalPlan::Filter(f) if matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)))
        && plan.max_rows().is_none_or(|n| n > 1)
}

/// Catalog tables that are empty in Strata whatever the database holds:
/// `pg_sequence`, because there are no sequences (no serial or identity columns).
const EMPTY_CATALOG_TABLES: &[&str] = &["pg_sequence"];

/// True when the plan filters and projects one scan of an always-empty catalog
/// table, so it has no rows: the subquery is NULL. SQLAlchemy's identity-column
/// lookup is such a subquery, with outer columns in its SELECT list, which
/// DataFusion cannot decorrelate at all.
fn always_empty(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) | LogicalPlan::Limit(_) => {
            matches!(plan.inputs()[..], [child] if always_empty(child))
        }
        LogicalPlan::TableScan(scan) => {
            scan.table_name.schema() == Some("pg_catalog") && EMPTY_CATALOG_TABLES.contains(&scan.table_name.table())
        }
        _ => false,
    }
}

/// True when every table the plan scans is in `pg_catalog` or `information_schema`.
fn reads_only_catalog(plan: &LogicalPlan) -> bool {
    let mut only_catalog = true;
    let mut scans = 0;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans += 1;
            if !matches!(scan.table_name.schema(), Some("pg_catalog" | "information_schema")) {
                only_catalog = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    only_catalog && scans > 0
}

/// `CASE WHEN <outer-only conditions> THEN (SELECT max(v) FROM (<the rest>)) END`.
fn rewrite(sq: Subquery) -> Result<Expr> {
    let (plan, guards) = hoist_outer_only(&sq.subquery)?;
    let (qualifier, field) = plan.schema().qualified_field(0);
    let value = Expr::Column(Column::new(qualifier.cloned(), field.name()));
    // Unaliased: the value's own name could clash with the column it reads
    // once DataFusion joins the subquery in.
    let plan = LogicalPlanBuilder::from(plan)
        .aggregate(Vec::<Expr>::new(), vec![max(value)])?
        .build()?;
    let subquery = Expr::ScalarSubquery(Subquery {
        outer_ref_columns: plan.all_out_ref_exprs(),
        subquery: Arc::new(plan),
        spans: sq.spans,
    });
    match conjunction(guards) {
        Some(guard) => when(guard, subquery).end(),
        None => Ok(subquery),
    }
}

/// The plan without the conditions of its top filter that read only the outer
/// row, and those conditions (as plain columns of the outer query).
fn hoist_outer_only(plan: &LogicalPlan) -> Result<(LogicalPlan, Vec<Expr>)> {
    match plan {
        LogicalPlan::Projection(_) | LogicalPlan::SubqueryAlias(_) => {
            let [child] = plan.inputs()[..] else {
                return Ok((plan.clone(), Vec::new()));
            };
            let (child, guards) = hoist_outer_only(child)?;
            if guards.is_empty() {
                return Ok((plan.clone(), guards));
            }
            Ok((plan.with_new_exprs(plan.expressions(), vec![child])?, guards))
        }
        LogicalPlan::Filter(filter) => {
            let (outer_only, rest): (Vec<&Expr>, Vec<&Expr>) = split_conjunction(&filter.predicate)
                .into_iter()
                .partition(|e| e.contains_outer() && e.column_refs().is_empty());
            if outer_only.is_empty() {
                return Ok((plan.clone(), Vec::new()));
            }
            let input = filter.input.as_ref().clone();
            let plan = match conjunction(rest.into_iter().cloned()) {
                Some(predicate) => LogicalPlanBuilder::from(input).filter(predicate)?.build()?,
                None => input,
            };
            let guards = outer_only.into_iter().cloned().map(strip_outer_reference).collect();
            Ok((plan, guards))
        }
        _ => Ok((plan.clone(), Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;

    #[tokio::test]
    async fn correlated_catalog_lookups_plan_and_give_the_row_or_null() {
        let ctx = crate::server::test_context().await;
        let batches = ctx
            .sql(
                "SELECT t.typname, (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = t.typnamespace) AS ns, \
                 CASE WHEN t.typlen > 0 THEN (SELECT e.typname FROM pg_catalog.pg_type e WHERE e.oid = t.typarray) END AS arr, \
                 (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = t.typnamespace + 1000000) AS missing, \
                 CASE WHEN t.typlen > 0 THEN (SELECT n.nspname FROM pg_catalog.pg_namespace n \
                   WHERE t.typlen > 0 AND n.oid = t.typnamespace AND n.nspname = 'pg_catalog') END AS guarded, \
                 (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE t.typlen < 0 AND n.oid = t.typnamespace) AS guard_false \
                 FROM pg_catalog.pg_type t WHERE t.typname = 'int4'",
            )
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let b = &batches[0];
        let text = |i: usize| cast(b.column(i), &DataType::Utf8).expect("cast");
        assert_eq!(b.num_rows(), 1);
        assert_eq!(text(1).as_string::<i32>().value(0), "pg_catalog");
        assert_eq!(text(2).as_string::<i32>().value(0), "_int4");
        assert!(text(3).is_null(0), "no row gives NULL, as in PostgreSQL");
        assert_eq!(b.schema().field(1).name(), "ns");
        assert_eq!(
            text(4).as_string::<i32>().value(0),
            "pg_catalog",
            "outer-only condition true"
        );
        assert!(text(5).is_null(0), "outer-only condition false gives NULL");
    }

    #[tokio::test]
    async fn a_correlated_subquery_on_pg_sequence_is_null() {
        let ctx = crate::server::test_context().await;
        let batches = ctx
            .sql(
                "SELECT t.typname, CASE WHEN t.typlen > 0 THEN (SELECT concat(t.typname, s.seqstart) \
                 FROM pg_catalog.pg_sequence s WHERE s.seqrelid = t.oid) END AS seq \
                 FROM pg_catalog.pg_type t WHERE t.typname = 'int4'",
            )
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        assert_eq!(batches[0].num_rows(), 1);
        assert!(batches[0].column(1).is_null(0));
    }

    #[tokio::test]
    async fn user_tables_are_left_to_datafusions_check() {
        let ctx = crate::server::test_context().await;
        ctx.sql("CREATE TABLE t AS SELECT * FROM (VALUES (1, 1), (1, 2)) AS v(a, b)")
            .await
            .expect("create")
            .collect()
            .await
            .expect("create");
        let result = match ctx.sql("SELECT (SELECT u.b FROM t u WHERE u.a = o.a) FROM t o").await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let Err(err) = result else {
            panic!("a correlated non-aggregated subquery on a user table ran");
        };
        assert!(err.to_string().contains("must be aggregated"), "{err}");
    }
}
