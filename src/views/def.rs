//! A view's definition, read from its SQL: which table it reads, which window function, which
//! output columns form its key and which are aggregates.
//!
//! Accepted (checked when the config loads, before anything runs): ONE `SELECT` whose `FROM`
//! is exactly one `tumble(…)`, `hop(…)` or `session(…)` call over a bare table name (no time
//! travel: a view follows the table), an optional `WHERE`, and a `GROUP BY` of exactly the
//! non-aggregate output columns, which must include `window_start` and `window_end`. Output
//! items are columns (with optional aliases) or `count(*)`, `count(c)`, `count(DISTINCT c)`,
//! `sum`, `avg`, `min`, `max`. No `ORDER BY`, `LIMIT`, `HAVING`, joins or subqueries: each of
//! them would make a view row depend on other groups, which a per-group view cannot keep.
//!
//! Invariant: the key (the non-aggregate outputs) is unique per view row, because it is
//! exactly the `GROUP BY`; the view table is keyed on it.

use anyhow::Context;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem, SetExpr,
    Statement, TableFactor, Value,
};

/// The window function a view reads through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    Tumble,
    Hop,
    Session,
}

/// A parsed, checked view definition.
#[derive(Clone, Debug)]
pub struct ViewDef {
    pub name: String,
    pub sql: String,
    /// The table the view reads (the window function's first argument).
    pub source: String,
    pub kind: WindowKind,
    /// The window function's time column (its second argument).
    pub time_column: String,
    /// The window function's interval arguments as SQL text: tumble `[size]`, hop
    /// `[slide, size]`, session `[gap]`.
    pub intervals: Vec<String>,
    /// Output positions of the key columns (window bounds and group columns).
    pub keys: Vec<usize>,
    /// Output positions of the aggregates.
    pub aggregates: Vec<usize>,
    /// `allowed_lateness` and `late` of the view's config entry (`None`: windows are never
    /// final and every late change is applied).
    pub lateness: Option<super::late::Lateness>,
    /// A session view's key columns when each is a column of the view under its own name
    /// (its steps then recompute only the sessions of the keys that changed); `None`
    /// otherwise and for other kinds.
    pub session_keys: Option<Vec<String>>,
    /// The output columns' names (those it names: aggregates without an alias have none here).
    pub columns: Vec<String>,
    /// The aggregates, in the order of [`ViewDef::aggregates`].
    pub aggs: Vec<Agg>,
}

/// One aggregate output item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agg {
    /// `count`, `sum`, `avg`, `min` or `max`
    pub func: String,
    /// The argument as SQL text; `None` for `count(*)`.
    pub arg: Option<String>,
    pub distinct: bool,
    pub alias: Option<String>,
}

const AGGREGATES: [&str; 5] = ["count", "sum", "avg", "min", "max"];

fn refuse(name: &str, what: impl std::fmt::Display) -> String {
    format!(
        "view {name:?}: {what}; a view is SELECT window_start, window_end, <group columns>, <count|sum|avg|min|max(...)> FROM tumble|hop|session('table', ...) [WHERE ...] GROUP BY <the same non-aggregate columns>"
    )
}

impl ViewDef {
    /// Parses and checks `sql`; the error says what to change.
    pub fn parse(name: &str, sql: &str) -> Result<Self, String> {
        let mut statements = crate::query::time_travel::parse(sql).map_err(|e| refuse(name, e))?;
        if statements.len() != 1 {
            return Err(refuse(name, "write exactly one statement"));
        }
        let Some(DfStatement::Statement(statement)) = statements.pop_front() else {
            return Err(refuse(name, "write a SELECT statement"));
        };
        let Statement::Query(query) = *statement else {
            return Err(refuse(name, "write a SELECT statement"));
        };
        if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
            return Err(refuse(
                name,
                "WITH, ORDER BY and LIMIT are not allowed (order and limit when querying the view)",
            ));
        }
        let SetExpr::Select(select) = *query.body else {
            return Err(refuse(name, "write one plain SELECT (no UNION, no VALUES)"));
        };
        if select.having.is_some() || select.distinct.is_some() {
            return Err(refuse(
                name,
                "HAVING and SELECT DISTINCT are not allowed (filter when querying the view)",
            ));
        }
        let (source, kind, time_column, intervals, session_keys) = window_source(name, &select.from)?;
        if let Some(w) = &select.selection
            && has_subquery(w)
        {
            return Err(refuse(name, "subqueries are not allowed in WHERE"));
        }
        let outputs = outputs(name, &select.projection)?;
        let keys: Vec<usize> = (0..outputs.len()).filter(|i| outputs[*i].aggregate.is_none()).collect();
        let aggregates: Vec<usize> = (0..outputs.len()).filter(|i| outputs[*i].aggregate.is_some()).collect();
        check_group_by(name, &select.group_by, &outputs)?;
        for bound in ["window_start", "window_end"] {
            if !keys.iter().any(|k| outputs[*k].column.as_deref() == Some(bound)) {
                return Err(refuse(name, format!("select and group by {bound}")));
            }
        }
        if aggregates.is_empty() {
            return Err(refuse(name, "select at least one aggregate"));
        }
        // a step can find a session's rows in the view by key only when there are keys, each a
        // column of the view under its own name, and no WHERE: a session whose rows WHERE
        // drops has no row in the view, yet a new event can join it (else it recomputes the
        // whole view)
        let keyed_sessions = kind == WindowKind::Session
            && !session_keys.is_empty()
            && select.selection.is_none()
            && session_keys.iter().all(|k| {
                keys.iter()
                    .any(|i| outputs[*i].unaliased && outputs[*i].column.as_deref() == Some(k.as_str()))
            });
        Ok(Self {
            name: name.to_string(),
            sql: sql.to_string(),
            source,
            kind,
            time_column,
            intervals,
            keys,
            aggregates,
            lateness: None,
            session_keys: if keyed_sessions { Some(session_keys) } else { None },
            columns: outputs.iter().filter_map(|o| o.column.clone()).collect(),
            aggs: outputs.iter().filter_map(|o| o.aggregate.clone()).collect(),
        })
    }

    /// The definition of a `[[views]]` entry: its SQL parsed, its lateness rule read.
    pub fn of(v: &super::ViewConfig) -> anyhow::Result<Self> {
        let mut def = Self::parse(&v.name, &v.sql).map_err(anyhow::Error::msg)?;
        if let Some(text) = &v.allowed_lateness {
            anyhow::ensure!(
                def.kind != WindowKind::Session,
                "view {:?}: allowed_lateness applies to tumble and hop views (a session's end moves with its events); remove it",
                v.name
            );
            anyhow::ensure!(
                !def.columns.iter().any(|c| c == super::late::IS_FINAL),
                "view {:?}: with allowed_lateness the view gets a column {}; rename the output column of that name",
                v.name,
                super::late::IS_FINAL
            );
            let key = format!("views.{}.allowed_lateness", v.name);
            let d = crate::config::parse_duration(&key, text)?;
            def.lateness = Some(super::late::Lateness {
                allowed: i64::try_from(d.as_micros()).with_context(|| format!("{key} is too long"))?,
                policy: v.late,
            });
        } else {
            anyhow::ensure!(
                v.late == super::late::LatePolicy::Apply,
                "view {:?}: late = \"{}\" needs allowed_lateness (when windows become final); add it",
                v.name,
                v.late.name()
            );
        }
        Ok(def)
    }
}

/// A string literal argument.
fn quoted_arg(arg: Option<&FunctionArg>) -> Option<String> {
    match arg {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// What the window call of the only `FROM` item reads: table, kind, time column, intervals,
/// session keys.
type Source = (String, WindowKind, String, Vec<String>, Vec<String>);

/// The window function call of the only `FROM` item and the table it reads.
fn window_source(name: &str, from: &[datafusion::sql::sqlparser::ast::TableWithJoins]) -> Result<Source, String> {
    let [item] = from else {
        return Err(refuse(name, "FROM must name exactly one window function"));
    };
    if !item.joins.is_empty() {
        return Err(refuse(name, "joins are not allowed"));
    }
    let TableFactor::Table {
        name: function,
        args: Some(args),
        ..
    } = &item.relation
    else {
        return Err(refuse(name, "FROM must be tumble(...), hop(...) or session(...)"));
    };
    let kind = match function.to_string().to_ascii_lowercase().as_str() {
        "tumble" => WindowKind::Tumble,
        "hop" => WindowKind::Hop,
        "session" => WindowKind::Session,
        other => return Err(refuse(name, format!("FROM {other}(...) is not a window function"))),
    };
    let table = quoted_arg(args.args.first()).unwrap_or_default();
    let time_column = quoted_arg(args.args.get(1)).ok_or_else(|| {
        refuse(
            name,
            "the window function's second argument must be the time column in quotes",
        )
    })?;
    let count = match kind {
        WindowKind::Hop => 2,
        WindowKind::Tumble | WindowKind::Session => 1,
    };
    let intervals: Vec<String> = args.args.iter().skip(2).take(count).map(|a| a.to_string()).collect();
    let session_keys: Vec<String> = match kind {
        WindowKind::Session => args.args.iter().skip(3).filter_map(|a| quoted_arg(Some(a))).collect(),
        _ => Vec::new(),
    };
    match crate::query::time_travel::table_reference(&table) {
        Ok((t, None)) if !t.is_empty() => Ok((t, kind, time_column, intervals, session_keys)),
        Ok((_, Some(_))) => Err(refuse(name, "a view follows its table: no VERSION/TIMESTAMP AS OF")),
        _ => Err(refuse(
            name,
            "the window function's first argument must be the table's name in quotes",
        )),
    }
}

/// One output item: its column name if it is a plain column, and whether it aggregates.
struct Output {
    column: Option<String>,
    /// a plain column output under its own name
    unaliased: bool,
    aggregate: Option<Agg>,
}

/// How DataFusion names an unquoted identifier (folded to lower case).
fn ident_name(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_ascii_lowercase(),
    }
}

fn outputs(name: &str, projection: &[SelectItem]) -> Result<Vec<Output>, String> {
    projection
        .iter()
        .map(|item| {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(ident_name(alias))),
                _ => return Err(refuse(name, "name the output columns (no *)")),
            };
            match expr {
                Expr::Identifier(i) => Ok(Output {
                    unaliased: alias.as_ref().is_none_or(|a| *a == ident_name(i)),
                    column: Some(alias.unwrap_or_else(|| ident_name(i))),
                    aggregate: None,
                }),
                Expr::Function(f) => {
                    let func = f.name.to_string().to_ascii_lowercase();
                    if !AGGREGATES.contains(&func.as_str()) || f.over.is_some() || f.filter.is_some() {
                        return Err(refuse(name, format!("{f} is not one of count, sum, avg, min, max")));
                    }
                    let FunctionArguments::List(list) = &f.args else {
                        return Err(refuse(name, format!("{f}: aggregates take one argument")));
                    };
                    let [arg] = list.args.as_slice() else {
                        return Err(refuse(name, format!("{f}: aggregates take one argument")));
                    };
                    let arg = match arg {
                        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => None,
                        other => Some(other.to_string()),
                    };
                    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
                    Ok(Output {
                        column: alias.clone(),
                        unaliased: false,
                        aggregate: Some(Agg {
                            func,
                            arg,
                            distinct,
                            alias,
                        }),
                    })
                }
                other => Err(refuse(
                    name,
                    format!(
                        "{other}: output items are columns or aggregates (compute expressions when querying the view)"
                    ),
                )),
            }
        })
        .collect()
}

/// GROUP BY must be exactly the non-aggregate outputs (by name or position).
fn check_group_by(name: &str, group_by: &GroupByExpr, outputs: &[Output]) -> Result<(), String> {
    let GroupByExpr::Expressions(exprs, modifiers) = group_by else {
        return Err(refuse(name, "GROUP BY ALL is not allowed; list the columns"));
    };
    if !modifiers.is_empty() {
        return Err(refuse(name, "GROUP BY modifiers (ROLLUP, CUBE, ...) are not allowed"));
    }
    let mut grouped = std::collections::BTreeSet::new();
    for e in exprs {
        let column = match e {
            Expr::Identifier(i) => ident_name(i),
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| outputs.get(i))
                    .and_then(|o| o.column.clone())
                    .ok_or_else(|| refuse(name, format!("GROUP BY {n} names no output column")))?,
                other => return Err(refuse(name, format!("GROUP BY {other} is not a column"))),
            },
            other => return Err(refuse(name, format!("GROUP BY {other}: group by output columns only"))),
        };
        grouped.insert(column);
    }
    let keys: std::collections::BTreeSet<String> = outputs
        .iter()
        .filter(|o| o.aggregate.is_none())
        .filter_map(|o| o.column.clone())
        .collect();
    if grouped != keys {
        return Err(refuse(
            name,
            format!(
                "GROUP BY {} must be exactly the selected non-aggregate columns {}, so that each view row has its own key",
                grouped.into_iter().collect::<Vec<_>>().join(", "),
                keys.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

fn has_subquery(e: &Expr) -> bool {
    let text = e.to_string().to_ascii_uppercase();
    // the AST has many subquery forms (IN, EXISTS, scalar); any SELECT inside the text is one
    text.contains("SELECT ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tumbling_count_per_group_is_a_view_keyed_on_window_and_group() {
        let d = ViewDef::parse(
            "tier_counts",
            "SELECT window_start, window_end, loyalty_tier AS tier, count(*) AS n, max(customer_id) \
             FROM tumble('customers', 'updated_at', INTERVAL '1 day') WHERE NOT active GROUP BY 1, 2, tier",
        )
        .expect("valid view");
        assert_eq!(d.source, "customers");
        assert_eq!(d.kind, WindowKind::Tumble);
        assert_eq!(d.time_column, "updated_at");
        assert_eq!(d.intervals, vec!["INTERVAL '1 day'".to_string()]);
        assert_eq!(d.keys, vec![0, 1, 2]);
        assert_eq!(d.aggregates, vec![3, 4]);
    }

    #[test]
    fn a_session_view_is_scoped_by_key_only_when_its_rows_name_their_keys() {
        let keys = |sql: &str| ViewDef::parse("v", sql).expect(sql).session_keys;
        let keyed = "SELECT window_start, window_end, k, count(*) AS n FROM session('t', 'ts', INTERVAL '1 hour', 'k') GROUP BY 1, 2, 3";
        assert_eq!(keys(keyed), Some(vec!["k".to_string()]));
        // no keys: one session sequence for the whole table (a region per key has no key)
        assert_eq!(
            keys(
                "SELECT window_start, window_end, count(*) AS n FROM session('t', 'ts', INTERVAL '1 hour') GROUP BY 1, 2"
            ),
            None
        );
        // the key renamed, or not kept
        assert_eq!(
            keys(
                "SELECT window_start, window_end, k AS c, count(*) AS n FROM session('t', 'ts', INTERVAL '1 hour', 'k') GROUP BY 1, 2, 3"
            ),
            None
        );
        // WHERE drops rows after sessions form: a session can be missing from the view
        assert_eq!(
            keys(
                "SELECT window_start, window_end, k, count(*) AS n FROM session('t', 'ts', INTERVAL '1 hour', 'k') WHERE x > 0 GROUP BY 1, 2, 3"
            ),
            None
        );
    }

    #[test]
    fn what_a_view_cannot_keep_is_refused_with_the_reason() {
        let cases = [
            (
                "SELECT window_start, window_end, count(*) FROM customers GROUP BY 1, 2",
                "FROM must be",
            ),
            (
                "SELECT window_start, window_end, count(*) FROM tumble('customers VERSION AS OF 3', 'ts', INTERVAL '1 day') GROUP BY 1, 2",
                "no VERSION",
            ),
            (
                "SELECT window_start, count(*) FROM tumble('c', 'ts', INTERVAL '1 day') GROUP BY 1",
                "window_end",
            ),
            (
                "SELECT window_start, window_end, tier, count(*) FROM tumble('c', 'ts', INTERVAL '1 day') GROUP BY 1, 2",
                "must be exactly",
            ),
            (
                "SELECT window_start, window_end, count(*) FROM tumble('c', 'ts', INTERVAL '1 day') GROUP BY 1, 2 ORDER BY 3",
                "ORDER BY",
            ),
            (
                "SELECT window_start, window_end, median(x) FROM tumble('c', 'ts', INTERVAL '1 day') GROUP BY 1, 2",
                "not one of",
            ),
            ("SELECT * FROM tumble('c', 'ts', INTERVAL '1 day')", "no *"),
            ("SELECT 1; SELECT 2", "exactly one"),
        ];
        for (sql, expected) in cases {
            let e = ViewDef::parse("v", sql).expect_err(sql);
            assert!(e.contains(expected), "{sql}: {e}");
            assert!(e.contains("view \"v\""), "{e}");
        }
    }
}
