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
//! The table argument may carry time travel: `'t VERSION AS OF 3'`. Each function is a view
//! (a SQL query over the table), so it composes with WHERE, GROUP BY and joins.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
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

/// An interval argument as SQL text (`INTERVAL '… microseconds'`).
fn interval_arg(exprs: &[Expr], i: usize, what: &str) -> DfResult<(String, i64)> {
    let micros = match exprs.get(i) {
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
    Ok((format!("INTERVAL '{micros} microseconds'"), micros))
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TableFunctionImpl for Window {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let source = string_arg(exprs, 0, "table")?;
        let ts = ident(&string_arg(exprs, 1, "time column")?);
        let state = args
            .session()
            .as_any()
            .downcast_ref::<datafusion::execution::session_state::SessionState>()
            .ok_or_else(|| err("window functions need a DataFusion session"))?
            .clone();
        let ctx = SessionContext::new_with_state(state);
        let include_deleted = matches!(exprs.last(), Some(Expr::Literal(ScalarValue::Boolean(Some(true)), _)));
        let origin = "TIMESTAMP '1970-01-01T00:00:00Z'";
        let kind = self.kind;
        block_on(async move {
            // the table, maybe at a version, as a named relation
            let sql_from = super::prepare_time_travel(&ctx, &format!("SELECT * FROM {source}"))
                .await
                .map_err(|e| err(e.to_string()))?;
            let has_deleted = ctx
                .sql(&sql_from)
                .await?
                .schema()
                .has_column_with_unqualified_name("__deleted");
            let base = if has_deleted && !include_deleted {
                format!("{sql_from} WHERE NOT \"__deleted\"")
            } else {
                sql_from
            };
            let sql = match kind {
                Kind::Tumble => {
                    let (size, _) = interval_arg(exprs, 2, "window size")?;
                    format!(
                        "SELECT *, date_bin({size}, {ts}, {origin}) AS window_start, date_bin({size}, {ts}, {origin}) + {size} AS window_end FROM ({base})"
                    )
                }
                Kind::Hop => {
                    let (slide, slide_us) = interval_arg(exprs, 2, "slide")?;
                    let (size, size_us) = interval_arg(exprs, 3, "window size")?;
                    // every window start aligned to `slide` whose window contains the row
                    let back = (size_us - 1) / slide_us * slide_us;
                    format!(
                        "SELECT * FROM (SELECT *, window_start + {size} AS window_end FROM (SELECT *, unnest(range(date_bin({slide}, {ts}, {origin}) - INTERVAL '{back} microseconds', date_bin({slide}, {ts}, {origin}) + {slide}, {slide})) AS window_start FROM ({base}))) WHERE window_start <= {ts} AND {ts} < window_end"
                    )
                }
                Kind::Session => {
                    let (gap, _) = interval_arg(exprs, 2, "gap")?;
                    let keys: Vec<String> = (3..exprs.len())
                        .filter(|i| !matches!(exprs[*i], Expr::Literal(ScalarValue::Boolean(_), _)))
                        .map(|i| string_arg(exprs, i, "key column").map(|k| ident(&k)))
                        .collect::<DfResult<_>>()?;
                    let part = if keys.is_empty() {
                        String::new()
                    } else {
                        format!("PARTITION BY {}", keys.join(", "))
                    };
                    let part_sid = if keys.is_empty() {
                        "PARTITION BY __session".to_string()
                    } else {
                        format!("PARTITION BY {}, __session", keys.join(", "))
                    };
                    let cols = ctx
                        .sql(&base)
                        .await?
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| ident(f.name()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!(
                        "SELECT {cols}, min({ts}) OVER ({part_sid}) AS window_start, max({ts}) OVER ({part_sid}) + {gap} AS window_end FROM (\
                           SELECT *, sum(__new) OVER ({part} ORDER BY {ts} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __session FROM (\
                             SELECT *, CASE WHEN lag({ts}) OVER ({part} ORDER BY {ts}) IS NULL OR {ts} - lag({ts}) OVER ({part} ORDER BY {ts}) > {gap} THEN 1 ELSE 0 END AS __new FROM ({base})))"
                    )
                }
            };
            let view = ctx.sql(&sql).await?.into_view();
            Ok(view)
        })
    }
}
