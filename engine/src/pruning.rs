//! Partition pruning: the time range a query's filters allow on the designated timestamp.
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use storage::DataFile;

/// Inclusive bounds in microseconds; `None` means unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub(crate) min: Option<i64>,
    pub(crate) max: Option<i64>,
}

impl TimeRange {
    /// The range `filters` allow on the table's designated timestamp (all, without one).
    pub(crate) fn for_table(meta: &storage::TableMeta, filters: &[Expr]) -> Self {
        match &meta.timestamp {
            Some(ts) => Self::from_filters(filters, ts),
            None => Self::default(),
        }
    }

    /// Narrows the range with every filter that constrains `ts_column` against a literal.
    pub(crate) fn from_filters(filters: &[Expr], ts_column: &str) -> Self {
        let mut r = Self::default();
        for f in filters {
            r.add(f, ts_column);
        }
        r
    }

    fn add(&mut self, e: &Expr, ts: &str) {
        match e {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.add(left, ts);
                self.add(right, ts);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (v, op) = match (is_column(left, ts), is_column(right, ts)) {
                    (true, false) => (literal_micros(right), Some(*op)),
                    (false, true) => (literal_micros(left), op.swap()),
                    _ => return,
                };
                let (Some(v), Some(op)) = (v, op) else { return };
                match op {
                    Operator::Eq => {
                        self.raise_min(v);
                        self.lower_max(v);
                    }
                    Operator::Gt => self.raise_min(v.saturating_add(1)),
                    Operator::GtEq => self.raise_min(v),
                    Operator::Lt => self.lower_max(v.saturating_sub(1)),
                    Operator::LtEq => self.lower_max(v),
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_column(expr, ts) => {
                if let Some(v) = literal_micros(low) {
                    self.raise_min(v);
                }
                if let Some(v) = literal_micros(high) {
                    self.lower_max(v);
                }
            }
            _ => {}
        }
    }

    fn raise_min(&mut self, v: i64) {
        self.min = Some(self.min.map_or(v, |m| m.max(v)));
    }

    fn lower_max(&mut self, v: i64) {
        self.max = Some(self.max.map_or(v, |m| m.min(v)));
    }

    /// False only when the file provably holds no row in range.
    pub(crate) fn may_contain(&self, f: &DataFile) -> bool {
        let (Some(fmin), Some(fmax)) = (f.min_ts, f.max_ts) else {
            return true;
        };
        self.min.is_none_or(|m| fmax >= m) && self.max.is_none_or(|m| fmin <= m)
    }
}

fn is_column(e: &Expr, ts: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == ts)
}

/// A timestamp literal as microseconds (rounding inward is not needed: bounds are inclusive
/// and files are compared by their real min/max).
fn literal_micros(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(ms), _) => ms.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(*us),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns.div_euclid(1_000)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(us: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(Some(us), None))
    }

    fn file(min: i64, max: i64) -> DataFile {
        DataFile {
            path: "p/f.parquet".into(),
            partition: "p".into(),
            rows: 1,
            bytes: 1,
            min_ts: Some(min),
            max_ts: Some(max),
            hash: String::new(),
        }
    }

    #[test]
    fn narrows_on_comparisons_and_between() {
        let r = TimeRange::from_filters(&[col("ts").gt_eq(ts(100)), col("ts").lt(ts(200))], "ts");
        assert_eq!(
            r,
            TimeRange {
                min: Some(100),
                max: Some(199)
            }
        );
        assert!(r.may_contain(&file(150, 300)));
        assert!(!r.may_contain(&file(200, 300)));
        assert!(!r.may_contain(&file(0, 99)));
        let b = TimeRange::from_filters(&[col("ts").between(ts(5), ts(7))], "ts");
        assert_eq!(
            b,
            TimeRange {
                min: Some(5),
                max: Some(7)
            }
        );
        let flipped = TimeRange::from_filters(&[ts(10).lt(col("ts"))], "ts");
        assert_eq!(flipped.min, Some(11));
    }

    #[test]
    fn ignores_other_columns_and_shapes() {
        let r = TimeRange::from_filters(&[col("price").gt(lit(5.0)), col("ts").not_eq(ts(3))], "ts");
        assert_eq!(r, TimeRange::default());
    }
}
