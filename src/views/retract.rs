//! Retraction by arithmetic: a `tumble` or `hop` view whose aggregates are all `count`,
//! `sum` and `avg` keeps, beside each row, the state those aggregates are sums of, and a step
//! updates each touched row as `old − minus + plus` from the rows the source commits took out
//! and put in ([`tables::changes::delta`]) — without reading the source table again.
//!
//! The state, as columns of the view's table after its own (named so no view output can be,
//! see `State::of`):
//! - `__rows`: the group's rows (`count(*)` under the view's WHERE): 0 means the group is gone;
//! - `__n_<agg>` for each `sum`/`avg`: `count(arg)`, so a group whose values are all NULL sums
//!   to NULL as the batch query's does, not to 0;
//! - `__sum_<agg>` for each `avg`: `sum(arg)`, from which the average is finished;
//! - `__abs_<agg>` for each `avg`: `sum(abs(arg))` as a double, the guard below.
//!
//! Invariants (why the result equals the batch query, bit for bit):
//! - count and integer or decimal sums are exact, and DataFusion's sums wrap on overflow like
//!   two's-complement arithmetic, so `old − minus + plus` equals the sum of the rows at the
//!   new version in every case; the rows a copy-on-write rewrite kept are on both sides and
//!   cancel;
//! - an `avg` of integers is what DataFusion computes: the values summed as doubles, divided by
//!   the count. While the sum of the absolute values stays below 2^53, every partial sum is an
//!   exact integer in a double in any order, so the exact integer sum converted once gives the
//!   same double; past that (half of it, for the guard's own rounding) the step recomputes;
//! - a float sum or average rounds differently in another order, and min, max and distinct
//!   counts cannot be retracted: such views (and sessions) recompute the touched windows from
//!   the source instead ([`super::maintain`]). So do views with `late = "dead_letter"` (a
//!   held window keeps an old row, from which arithmetic would not give what the table gives)
//!   and a view whose table was made before views kept state, until `cormorant view rebuild`;
//! - the old rows are read at the view version whose `txn` the range starts after (else,
//!   after another worker's step in between, a range would be counted twice).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Ident, SelectItem, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tables::Lake;

use super::def::{ViewDef, WindowKind};

/// The rows a range of source commits took out and put in, projected to `columns` (see
/// [`tables::changes::Delta`]).
pub(super) struct Changed {
    /// the first source version of the range
    pub(super) from: u64,
    pub(super) columns: SchemaRef,
    pub(super) minus: Vec<RecordBatch>,
    pub(super) plus: Vec<RecordBatch>,
}

/// The state column counting a group's rows.
pub(super) const ROWS: &str = "__rows";
const STATE_PREFIXES: [&str; 3] = ["__n_", "__sum_", "__abs_"];

/// Past this sum of absolute values an integer average may round differently in the batch
/// query's order: 2^52, half of 2^53, so that the guard's own double rounding cannot hide it.
const EXACT_LIMIT: f64 = 4_503_599_627_370_496.0;

/// How an aggregate output is made from the summed state.
#[derive(Debug)]
enum Finish {
    /// `count(*)`, `count(c)`: its own sum
    Count,
    /// NULL when no value counted
    Sum {
        n: String,
    },
    Avg {
        n: String,
        sum: String,
        abs: String,
    },
}

/// The state a view keeps to retract by arithmetic.
#[derive(Debug)]
pub(super) struct State {
    /// The view's SQL with the state columns appended to its outputs.
    pub(super) sql: String,
    /// Per aggregate output position, how it is finished.
    finish: Vec<(usize, Finish)>,
}

impl State {
    /// The state of `def`; `None` when it cannot keep one: not a tumble or hop view, an
    /// aggregate other than count, sum and avg, a distinct count, or an output named like a
    /// state column.
    pub(super) fn of(def: &ViewDef) -> Option<Self> {
        if def.kind == WindowKind::Session || def.columns.iter().any(|c| is_state_column(c)) || volatile(&def.sql) {
            return None;
        }
        // a held window keeps its old row, so old − minus + plus would no longer be what the
        // table gives, which `_view_late` records: dead-lettering views recompute
        if def
            .lateness
            .is_some_and(|l| l.policy == super::late::LatePolicy::DeadLetter)
        {
            return None;
        }
        // (expression, output name) of each state column
        let mut items = vec![("count(*)".to_string(), ROWS.to_string())];
        let mut finish = Vec::new();
        for (position, agg) in def.aggregates.iter().zip(&def.aggs) {
            let label = agg.alias.clone().unwrap_or_else(|| (position + 1).to_string());
            let (n, sum, abs) = (
                format!("__n_{label}"),
                format!("__sum_{label}"),
                format!("__abs_{label}"),
            );
            let f = match (agg.func.as_str(), &agg.arg, agg.distinct) {
                ("count", _, false) => Finish::Count,
                ("sum", Some(arg), false) => {
                    items.push((format!("count({arg})"), n.clone()));
                    Finish::Sum { n }
                }
                ("avg", Some(arg), false) => {
                    items.push((format!("count({arg})"), n.clone()));
                    items.push((format!("sum({arg})"), sum.clone()));
                    items.push((format!("sum(abs(CAST({arg} AS DOUBLE)))"), abs.clone()));
                    Finish::Avg { n, sum, abs }
                }
                _ => return None,
            };
            finish.push((*position, f));
        }
        let sql = with_outputs(&def.sql, &items)?;
        Some(Self { sql, finish })
    }

    /// The source columns `def`'s SQL can name, of `source` (reading the changed rows needs
    /// no other): every word and quoted name in the SQL that is a column, and `__deleted`.
    pub(super) fn inputs(def: &ViewDef, source: &Schema) -> Vec<String> {
        let mut named: HashSet<String> = HashSet::from(["__deleted".to_string(), def.time_column.clone()]);
        if let Ok(tokens) = Tokenizer::new(&GenericDialect {}, &def.sql).tokenize() {
            for t in tokens {
                match t {
                    Token::Word(w) if w.quote_style.is_none() => named.insert(w.value.to_ascii_lowercase()),
                    Token::Word(w) => named.insert(w.value),
                    Token::SingleQuotedString(s) => named.insert(s),
                    _ => false,
                };
            }
        }
        source
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| named.contains(n))
            .collect()
    }

    /// The view's rows, with state, over the rows a range took out and over those it put in
    /// (the schema, then both); `None` when an aggregate is not one arithmetic keeps exact (a
    /// float sum or average, an average of decimals).
    pub(super) async fn partials(
        &self,
        def: &ViewDef,
        lake: &Lake,
        changed: &Changed,
    ) -> anyhow::Result<Option<(SchemaRef, Vec<RecordBatch>, Vec<RecordBatch>)>> {
        let Some((schema, minus)) = self.partial(def, lake, &changed.columns, &changed.minus).await? else {
            return Ok(None);
        };
        let Some((_, plus)) = self.partial(def, lake, &changed.columns, &changed.plus).await? else {
            return Ok(None);
        };
        Ok(Some((schema, minus, plus)))
    }

    /// The view's rows, with state, over `rows` alone, as the view's table keeps them.
    async fn partial(
        &self,
        def: &ViewDef,
        lake: &Lake,
        columns: &SchemaRef,
        rows: &[RecordBatch],
    ) -> anyhow::Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        let ctx = super::maintain::session(lake);
        let rows = rows
            .iter()
            .map(|b| change::align(b, columns))
            .collect::<Result<Vec<_>, _>>()?;
        ctx.register_table(
            def.source.as_str(),
            Arc::new(MemTable::try_new(columns.clone(), vec![rows])?),
        )?;
        let df = ctx.sql(&self.sql).await?;
        let schema = super::maintain::storable_schema(df.schema().as_arrow());
        if !self.exact(&schema) {
            return Ok(None);
        }
        let batches = df.collect().await?;
        let batch = super::maintain::concat_as(&schema, &batches)?;
        Ok(Some((schema, vec![batch])))
    }

    /// Whether every aggregate of `schema` (the view's rows with state) is kept exactly by
    /// arithmetic.
    fn exact(&self, schema: &Schema) -> bool {
        let integer = |t: &DataType| matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64);
        self.finish.iter().all(|(position, f)| match f {
            Finish::Count => true,
            Finish::Sum { .. } => {
                let t = schema.field(*position).data_type();
                integer(t) || matches!(t, DataType::Decimal128(..))
            }
            Finish::Avg { sum, .. } => schema
                .field_with_name(sum)
                .is_ok_and(|f| integer(f.data_type()) || matches!(f.data_type(), DataType::Decimal128(..))),
        })
    }

    /// The touched rows at the new version: `old` (the view's rows of the touched windows)
    /// minus `minus` plus `plus` (partials), groups whose rows dropped to none left out;
    /// `None` when an average left the range arithmetic keeps exact.
    pub(super) async fn combine(
        &self,
        def: &ViewDef,
        lake: &Lake,
        schema: &SchemaRef,
        old: Vec<RecordBatch>,
        minus: Vec<RecordBatch>,
        plus: Vec<RecordBatch>,
    ) -> anyhow::Result<Option<Vec<RecordBatch>>> {
        let ctx = super::maintain::session(lake);
        for (name, rows) in [("__old", old), ("__minus", minus), ("__plus", plus)] {
            ctx.register_table(name, Arc::new(MemTable::try_new(schema.clone(), vec![rows])?))?;
        }
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let is_key = |i: usize| def.keys.contains(&i);
        let all = names.iter().map(|n| quoted(n)).collect::<Vec<_>>().join(", ");
        let negated = (0..names.len())
            .map(|i| match is_key(i) {
                true => quoted(names[i]),
                false => format!("-{} AS {}", quoted(names[i]), quoted(names[i])),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let keys = def
            .keys
            .iter()
            .map(|k| quoted(names[*k]))
            .collect::<Vec<_>>()
            .join(", ");
        let outputs = (0..names.len())
            .map(|i| format!("{} AS {}", self.finished(i, names[i], is_key(i)), quoted(names[i])))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT * FROM (SELECT {outputs} FROM (SELECT {all} FROM __old UNION ALL SELECT {negated} \
             FROM __minus UNION ALL SELECT {all} FROM __plus) GROUP BY {keys}) WHERE {} > 0",
            quoted(ROWS)
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let rows = super::maintain::concat_as(schema, &batches)?;
        if !self.within_exact_range(&rows)? {
            return Ok(None);
        }
        Ok(self.averages(schema, rows)?.map(|r| vec![r]))
    }

    /// The combining SQL's expression for output column `name` at `i`.
    fn finished(&self, i: usize, name: &str, key: bool) -> String {
        let total = |c: &str| format!("sum({})", quoted(c));
        if key {
            return quoted(name);
        }
        match self.finish.iter().find(|(p, _)| *p == i).map(|(_, f)| f) {
            None | Some(Finish::Count) => total(name), // a state column, or a count
            Some(Finish::Sum { n }) => format!("CASE WHEN {} = 0 THEN NULL ELSE {} END", total(n), total(name)),
            // finished from the summed state by [`State::averages`]
            Some(Finish::Avg { .. }) => "NULL".to_string(),
        }
    }

    /// Whether every average of integers in `rows` is below [`EXACT_LIMIT`] in absolute sum
    /// (a decimal average is exact integer arithmetic at any size).
    fn within_exact_range(&self, rows: &RecordBatch) -> anyhow::Result<bool> {
        for (_, f) in &self.finish {
            let Finish::Avg { abs, sum, .. } = f else { continue };
            let decimal = rows
                .column_by_name(sum)
                .is_some_and(|c| matches!(c.data_type(), DataType::Decimal128(..)));
            let Some(column) = rows.column_by_name(abs).filter(|_| !decimal) else {
                continue;
            };
            let values = arrow::compute::cast(column, &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            if (0..values.len()).any(|i| values.is_valid(i) && values.value(i) >= EXACT_LIMIT) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl State {
    /// `rows` with each average finished from its state as DataFusion's `avg` finishes it:
    /// integers as `sum as f64 / count as f64`; decimals of scale `s` as the truncated
    /// integer quotient `sum * 10^(t - s) / count` at the output's scale `t`. NULL when
    /// nothing was counted. `None` when a decimal sum scaled up overflows 128 bits (DataFusion
    /// then averages in 256: the step recomputes).
    fn averages(&self, schema: &SchemaRef, rows: RecordBatch) -> anyhow::Result<Option<RecordBatch>> {
        use arrow::array::{Decimal128Array, Float64Array, Int64Array};
        let mut columns = rows.columns().to_vec();
        for (position, f) in &self.finish {
            let Finish::Avg { n, sum, .. } = f else { continue };
            let (Some(n), Some(sum)) = (rows.column_by_name(n), rows.column_by_name(sum)) else {
                anyhow::bail!("the view's rows lack the state of {}", schema.field(*position).name());
            };
            let n = arrow::compute::cast(n, &DataType::Int64)?;
            let n: &Int64Array = n.as_primitive();
            let counted = |i: usize| n.is_valid(i) && n.value(i) > 0;
            let finished: arrow::array::ArrayRef = match (sum.data_type(), schema.field(*position).data_type()) {
                (DataType::Decimal128(_, s), DataType::Decimal128(p, t)) => {
                    let factor = 10i128
                        .checked_pow(u32::try_from(t - s).unwrap_or(0))
                        .ok_or_else(|| anyhow::anyhow!("average scale {t} out of range"))?;
                    let sum = sum.as_primitive::<arrow::datatypes::Decimal128Type>();
                    let mut values = Vec::with_capacity(rows.num_rows());
                    for i in 0..rows.num_rows() {
                        if !(counted(i) && sum.is_valid(i)) {
                            values.push(None);
                            continue;
                        }
                        let Some(total) = sum.value(i).checked_mul(factor) else {
                            return Ok(None);
                        };
                        values.push(Some(total / i128::from(n.value(i))));
                    }
                    Arc::new(Decimal128Array::from(values).with_precision_and_scale(*p, *t)?)
                }
                _ => {
                    let sum = arrow::compute::cast(sum, &DataType::Int64)?;
                    let sum: &Int64Array = sum.as_primitive();
                    let values: Float64Array = (0..rows.num_rows())
                        .map(|i| (counted(i) && sum.is_valid(i)).then(|| sum.value(i) as f64 / n.value(i) as f64))
                        .collect();
                    Arc::new(values)
                }
            };
            columns[*position] = arrow::compute::cast(&finished, schema.field(*position).data_type())?;
        }
        Ok(Some(RecordBatch::try_new(schema.clone(), columns)?))
    }
}

/// Whether `sql` calls a function whose value changes with time or by chance (`now()` in a
/// WHERE): a row it once let through may be dropped later without any change to the table,
/// which a recomputation sees and arithmetic would not.
fn volatile(sql: &str) -> bool {
    const VOLATILE: [&str; 8] = [
        "now",
        "random",
        "current_timestamp",
        "current_date",
        "current_time",
        "localtimestamp",
        "localtime",
        "uuid",
    ];
    Tokenizer::new(&GenericDialect {}, sql).tokenize().map_or(true, |tokens| {
        tokens
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.quote_style.is_none() && VOLATILE.contains(&w.value.to_ascii_lowercase().as_str())))
    })
}

/// Whether `name` is a state column (see the module doc).
pub(super) fn is_state_column(name: &str) -> bool {
    name == ROWS || STATE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `batch` (of `schema`) without its state columns: the view's rows as its SQL gives them
/// (what a sink sends).
pub(super) fn visible(schema: &SchemaRef, batch: &RecordBatch) -> anyhow::Result<(SchemaRef, RecordBatch)> {
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !is_state_column(schema.field(*i).name()))
        .collect();
    let out = Arc::new(schema.project(&keep)?);
    Ok((out, batch.project(&keep)?))
}

/// `sql` (one SELECT) with `items` — (expression, output name) — appended to its outputs,
/// or `None` if it does not parse back (it was checked when the config loaded).
fn with_outputs(sql: &str, items: &[(String, String)]) -> Option<String> {
    let mut statements = crate::query::time_travel::parse(sql).ok()?;
    let Some(DfStatement::Statement(mut statement)) = statements.pop_front() else {
        return None;
    };
    let Statement::Query(query) = statement.as_mut() else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    for (expr, alias) in items {
        let expr = Parser::new(&GenericDialect {})
            .try_with_sql(expr)
            .ok()?
            .parse_expr()
            .ok()?;
        let alias = Ident::with_quote('"', alias);
        select.projection.push(SelectItem::ExprWithAlias { expr, alias });
    }
    Some(statement.to_string())
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_count_sum_and_avg_views_keep_state() {
        let state = |sql: &str| State::of(&ViewDef::parse("v", sql).expect(sql));
        let kept = state(
            "SELECT window_start, window_end, g, count(*) AS n, sum(x) AS total, avg(x) FROM tumble('t', 'ts', INTERVAL '1 hour') WHERE x > 0 GROUP BY 1, 2, 3",
        )
        .expect("count, sum and avg keep state");
        assert!(
            kept.sql.contains(r#"count(*) AS "__rows""#)
                && kept.sql.contains(r#"count(x) AS "__n_total""#)
                && kept.sql.contains(r#"sum(x) AS "__sum_6""#)
                && kept.sql.contains("WHERE x > 0"),
            "{}",
            kept.sql
        );
        for other in [
            "SELECT window_start, window_end, max(x) AS m FROM tumble('t', 'ts', INTERVAL '1 hour') GROUP BY 1, 2",
            "SELECT window_start, window_end, count(DISTINCT x) AS d FROM tumble('t', 'ts', INTERVAL '1 hour') GROUP BY 1, 2",
            "SELECT window_start, window_end, g, count(*) AS n FROM session('t', 'ts', INTERVAL '1 hour', 'g') GROUP BY 1, 2, 3",
            "SELECT window_start, window_end, count(*) AS __rows FROM tumble('t', 'ts', INTERVAL '1 hour') GROUP BY 1, 2",
            "SELECT window_start, window_end, count(*) AS n FROM tumble('t', 'ts', INTERVAL '1 hour') WHERE ts > now() - INTERVAL '1 day' GROUP BY 1, 2",
        ] {
            assert!(state(other).is_none(), "{other}");
        }
    }

    #[test]
    fn the_inputs_are_the_source_columns_the_sql_names() {
        use arrow::datatypes::Field;
        let def = ViewDef::parse(
            "v",
            "SELECT window_start, window_end, g, sum(x) AS total FROM hop('t', 'ts', INTERVAL '1 hour', INTERVAL '2 hours') WHERE \"Flag\" GROUP BY 1, 2, 3",
        )
        .expect("valid");
        let source = Schema::new(
            ["id", "ts", "g", "x", "y", "Flag", "__deleted", "__op"]
                .map(|n| Field::new(n, DataType::Int64, true))
                .to_vec(),
        );
        assert_eq!(State::inputs(&def, &source), vec!["ts", "g", "x", "Flag", "__deleted"]);
    }
}
