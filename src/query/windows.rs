//! Window table functions over a table's live rows (soft-deleted rows excluded unless the
//! optional last argument `true` asks for them), each adding `window_start` and `window_end`:
//!
//! - `tumble('t', 'ts_col', INTERVAL '5 minutes')` — fixed windows aligned to the epoch in
//!   UTC (PostgreSQL's `date_bin(…, '1970-01-01')`);
//! - `hop('t', 'ts_col', <slide>, <size>)` — a row appears in every window of `size` that
//!   starts at a multiple of `slide` and contains it;
//! - `session('t', 'ts_col', <gap>, 'key_col', …)` — per key, a session runs while rows are at
//!   most `gap` apart; `window_start` is its first event time, `window_end` its last + `gap`.
//!
//! The table argument may carry time travel: `'t VERSION AS OF 3'` (read by sqlparser as a table
//! reference, see [`super::time_travel`]). Each function is a view (a
//! plan built with DataFusion's DataFrame API over the table), so it composes with WHERE,
//! GROUP BY and joins.

use std::sync::Arc;

use arrow::datatypes::IntervalMonthDayNano;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Column;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::functions::expr_fn::date_bin;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_nested::expr_fn::range;
use datafusion::functions_window::expr_fn::lag;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{AggregateUDF, ExprFunctionExt, WindowFrame, WindowFrameBound, WindowFrameUnits, when};
use datafusion::prelude::{DataFrame, Expr, SessionContext, lit, not};
use datafusion::scalar::ScalarValue;

use super::functions::{block_on, string_arg};

pub fn register(ctx: &SessionContext) {
    for kind in [Kind::Tumble, Kind::Hop, Kind::Session] {
        ctx.register_udtf(kind.name(), Arc::new(Window { kind }));
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tumble,
    Hop,
    Session,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tumble => "tumble",
            Kind::Hop => "hop",
            Kind::Session => "session",
        }
    }
}

#[derive(Debug)]
struct Window {
    kind: Kind,
}

fn err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(msg.into())
}

/// An interval argument: the literal itself (used as is in the plan) and its length in µs.
fn interval_arg(exprs: &[Expr], i: usize, what: &str) -> DfResult<(Expr, i64)> {
    let arg = exprs.get(i);
    let micros = match arg {
        Some(Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _)) if v.months == 0 => {
            i64::from(v.days) * 86_400_000_000 + v.nanoseconds / 1000
        }
        Some(Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _)) => {
            i64::from(v.days) * 86_400_000_000 + i64::from(v.milliseconds) * 1000
        }
        other => {
            return Err(err(format!(
                "argument {} ({what}) must be an INTERVAL of days or less, e.g. INTERVAL '5 minutes'; got {other:?}",
                i + 1
            )));
        }
    };
    if micros <= 0 {
        return Err(err(format!("argument {} ({what}) must be a positive interval", i + 1)));
    }
    Ok((micros_interval(micros), micros))
}

fn micros_interval(micros: i64) -> Expr {
    lit(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
        0,
        0,
        micros * 1000,
    ))))
}

/// A column by its exact name (no SQL identifier folding).
fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

impl TableFunctionImpl for Window {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let source = string_arg(exprs, 0, "table")?;
        let ts = column(&string_arg(exprs, 1, "time column")?);
        let state = args
            .session()
            .as_any()
            .downcast_ref::<datafusion::execution::session_state::SessionState>()
            .ok_or_else(|| err("window functions need a DataFusion session"))?
            .clone();
        let ctx = SessionContext::new_with_state(state);
        let include_deleted = matches!(exprs.last(), Some(Expr::Literal(ScalarValue::Boolean(Some(true)), _)));
        let kind = self.kind;
        block_on(async move {
            let base = live_rows(&ctx, &source, include_deleted).await?;
            let df = match kind {
                Kind::Tumble => tumble(base, ts, interval_arg(exprs, 2, "window size")?.0)?,
                Kind::Hop => hop(
                    base,
                    ts,
                    interval_arg(exprs, 2, "slide")?,
                    interval_arg(exprs, 3, "window size")?,
                )?,
                Kind::Session => {
                    let keys: Vec<Expr> = (3..exprs.len())
                        .filter(|i| !matches!(exprs[*i], Expr::Literal(ScalarValue::Boolean(_), _)))
                        .map(|i| string_arg(exprs, i, "key column").map(|k| column(&k)))
                        .collect::<DfResult<_>>()?;
                    session(base, ts, interval_arg(exprs, 2, "gap")?.0, keys)?
                }
            };
            Ok(df.into_view())
        })
    }
}

/// The table named by `source` (maybe `'t VERSION AS OF 3'`), without soft-deleted rows
/// unless asked for.
async fn live_rows(ctx: &SessionContext, source: &str, include_deleted: bool) -> DfResult<DataFrame> {
    let (table, as_of) = super::time_travel::table_reference(source).map_err(err)?;
    let df = match as_of {
        None => ctx.table(datafusion::common::TableReference::bare(table)).await?,
        Some(as_of) => {
            let lake = super::lake_of(&ctx.state()).map_err(|e| err(e.to_string()))?;
            let version = super::open_as_of(&lake, &table, &as_of)
                .await
                .map_err(|e| err(e.to_string()))?;
            version.update_datafusion_session(&ctx.state())?;
            ctx.read_table(version.table_provider().await?)?
        }
    };
    if df.schema().has_column_with_unqualified_name("__deleted") && !include_deleted {
        return df.filter(not(column("__deleted")));
    }
    Ok(df)
}

/// The epoch, where windows are aligned (PostgreSQL's `date_bin(…, '1970-01-01')`).
fn origin() -> Expr {
    lit(ScalarValue::TimestampNanosecond(Some(0), None))
}

fn tumble(base: DataFrame, ts: Expr, size: Expr) -> DfResult<DataFrame> {
    let start = date_bin(size.clone(), ts, origin());
    base.with_column("window_start", start.clone())?
        .with_column("window_end", start + size)
}

/// Every window of `size` that starts at a multiple of `slide` and contains the row: the
/// starts from the row's slide bin back by `size` (rounded down to slides), one row each.
fn hop(base: DataFrame, ts: Expr, (slide, slide_us): (Expr, i64), (size, size_us): (Expr, i64)) -> DfResult<DataFrame> {
    let bin = date_bin(slide.clone(), ts.clone(), origin());
    let back = micros_interval((size_us - 1) / slide_us * slide_us);
    let starts = range(bin.clone() - back, bin + slide.clone(), slide);
    base.with_column("window_start", starts)?
        .unnest_columns(&["window_start"])?
        .with_column("window_end", column("window_start") + size)?
        .filter(
            column("window_start")
                .lt_eq(ts.clone())
                .and(ts.lt(column("window_end"))),
        )
}

/// Aggregate `f` of `arg` as a window function (to give a partition and frame).
fn over(f: Arc<AggregateUDF>, arg: Expr) -> Expr {
    Expr::WindowFunction(Box::new(WindowFunction::new(f, vec![arg])))
}

/// Per key, a session runs while rows are at most `gap` apart: a row opens a new session
/// when the previous row of its key is more than `gap` before it; sessions are numbered by a
/// running sum of those openings, and each spans its first event to its last + `gap`.
fn session(base: DataFrame, ts: Expr, gap: Expr, keys: Vec<Expr>) -> DfResult<DataFrame> {
    let columns: Vec<Expr> = base.schema().fields().iter().map(|f| column(f.name())).collect();
    let order = vec![ts.clone().sort(true, true)];
    // the offset must be given: DataFusion 55's `lag(e, None, None)` plans offset 0 (the row itself)
    let previous = lag(ts.clone(), Some(1), None)
        .partition_by(keys.clone())
        .order_by(order.clone())
        .build()?;
    let opens = when(
        previous.clone().is_null().or((ts.clone() - previous).gt(gap.clone())),
        lit(1i64),
    )
    .otherwise(lit(0i64))?;
    let running = WindowFrame::new_bounds(
        WindowFrameUnits::Rows,
        WindowFrameBound::Preceding(ScalarValue::Null),
        WindowFrameBound::CurrentRow,
    );
    let number = over(sum_udaf(), column("__new"))
        .partition_by(keys.clone())
        .order_by(order)
        .window_frame(running)
        .build()?;
    let mut per_session = keys;
    per_session.push(column("__session"));
    let first = over(min_udaf(), ts.clone()).partition_by(per_session.clone()).build()?;
    let last = over(max_udaf(), ts).partition_by(per_session).build()?;
    let mut out = columns;
    out.push(first.alias("window_start"));
    out.push((last + gap).alias("window_end"));
    base.with_column("__new", opens)?
        .with_column("__session", number)?
        .select(out)
}
