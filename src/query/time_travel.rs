//! Time travel on the SQL AST: `FROM t VERSION AS OF n` and `FROM t TIMESTAMP AS OF '<RFC 3339>'`
//! (`FOR SYSTEM_TIME AS OF` is read like `TIMESTAMP AS OF`).
//!
//! Statements are parsed by sqlparser with [`CormorantDialect`] — DataFusion's generic dialect
//! with table versioning switched on — so the parser itself recognises the clause wherever a
//! table reference may stand, and never inside a string, a quoted name or a comment. A visitor
//! over the AST ([`resolve`]) then replaces each versioned reference `t VERSION AS OF 3` by the
//! name `"t@v3"`, which the caller registers as a provider over that version of `t`, and keeps
//! the name `t` as the reference's alias when it had none (so `t.id` still resolves). A
//! statement can name several versions of one table (a join of two versions works).
//!
//! Why resolve before planning: DataFusion 55's planner ignores a parsed version (it would
//! silently read the latest), so no versioned reference may reach it.

use std::any::TypeId;
use std::collections::VecDeque;
use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, TableAlias, TableFactor, TableVersion, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::parser::Parser;

/// DataFusion's default (generic) dialect plus `VERSION AS OF` / `TIMESTAMP AS OF` after a
/// table name.
///
/// sqlparser asks the dialect whether it supports table versioning, and only a few dialects
/// (Databricks, BigQuery, …) do — each with its own quoting and grammar. This wrapper answers
/// yes and is the generic dialect in everything else: it reports the generic dialect's type
/// (`Dialect::dialect`, which the parser's dialect checks use) and forwards every method the
/// generic dialect overrides. A test parses a corpus with both and compares the trees, so a
/// sqlparser upgrade that adds an override cannot slip through unnoticed.
#[derive(Debug, Default, Clone, Copy)]
pub struct CormorantDialect;

/// Forwards `fn name(&self) -> bool` to [`GenericDialect`].
macro_rules! forward {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool { GenericDialect.$name() })*
    };
}

impl Dialect for CormorantDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn supports_table_versioning(&self) -> bool {
        true
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    forward!(
        supports_unicode_string_literal,
        supports_partition_by_after_order_by,
        supports_array_join_syntax,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_connect_by,
        supports_match_recognize,
        supports_pipe_operator,
        supports_start_transaction_modifier,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        supports_window_clause_named_window_reference,
        supports_parenthesized_set_variables,
        supports_select_wildcard_except,
        support_map_literal_syntax,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_create_view_comment_syntax,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_limit_comma,
        supports_update_order_by,
        supports_from_first_select,
        supports_projection_trailing_commas,
        supports_asc_desc_in_column_definition,
        supports_try_convert,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_assignment_operator,
        supports_struct_literal,
        supports_empty_projections,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_user_host_grantee,
        supports_string_escape_constant,
        supports_array_typedef_with_brackets,
        supports_match_against,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_filter_during_aggregation,
        supports_select_wildcard_exclude,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_quote_delimited_string,
        supports_select_wildcard_replace,
        supports_select_wildcard_ilike,
        supports_select_wildcard_rename,
        supports_optimize_table,
        supports_install,
        supports_detach,
        supports_prewhere,
        supports_with_fill,
        supports_limit_by,
        supports_interpolate,
        supports_settings,
        supports_select_format,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
        supports_key_column_option,
        supports_comma_separated_trim,
        supports_cte_without_as,
        supports_select_item_multi_column_alias,
        supports_xml_expressions,
    );
}

/// Which version of a table a reference means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    /// RFC 3339 text
    Timestamp(String),
}

/// A versioned table reference found in a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The name the resolved statement uses.
    pub alias: String,
    pub table: String,
    pub as_of: AsOf,
}

/// Parses `sql` (one or more statements) with [`CormorantDialect`].
pub fn parse(sql: &str) -> Result<VecDeque<DfStatement>, String> {
    DFParser::parse_sql_with_dialect(sql, &CormorantDialect).map_err(|e| {
        if sql.to_ascii_uppercase().contains(" AS OF") {
            format!(
                "{e}; time travel is written FROM t VERSION AS OF 3 or FROM t TIMESTAMP AS OF '2026-11-21T20:00:00Z'"
            )
        } else {
            e.to_string()
        }
    })
}

/// Rewrites every versioned table reference in `statements` to its alias and returns them.
pub fn resolve(statements: &mut [DfStatement]) -> Result<Vec<Versioned>, String> {
    let mut visitor = Resolver::default();
    for statement in statements {
        resolve_one(statement, &mut visitor)?;
    }
    Ok(visitor.found)
}

fn resolve_one(statement: &mut DfStatement, visitor: &mut Resolver) -> Result<(), String> {
    let flow = match statement {
        DfStatement::Statement(s) => s.visit(visitor),
        DfStatement::Explain(e) => return resolve_one(&mut e.statement, visitor),
        DfStatement::CopyTo(_) | DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => {
            ControlFlow::Continue(())
        }
    };
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `source` — a table name, maybe with time travel (`t VERSION AS OF 3`), as the window
/// functions take it — read as a table reference: the table's name and which version.
pub fn table_reference(source: &str) -> Result<(String, Option<AsOf>), String> {
    let mut parser = Parser::new(&CormorantDialect)
        .try_with_sql(source)
        .map_err(|e| format!("cannot read the table reference {source:?}: {e}"))?;
    let factor = parser
        .parse_table_factor()
        .map_err(|e| format!("cannot read the table reference {source:?}: {e}"))?;
    match factor {
        TableFactor::Table { name, version, .. } => {
            let as_of = version.map(|v| as_of(&v)).transpose()?;
            Ok((table_name(&name)?, as_of))
        }
        other => Err(format!("expected a table name, maybe with VERSION AS OF, not {other}")),
    }
}

#[derive(Default)]
struct Resolver {
    found: Vec<Versioned>,
}

impl VisitorMut for Resolver {
    type Break = String;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<String> {
        let TableFactor::Table {
            name, alias, version, ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(v) = version.take() else {
            return ControlFlow::Continue(());
        };
        let resolved = table_name(name).and_then(|table| Ok((as_of(&v)?, table)));
        let (as_of, table) = match resolved {
            Ok(x) => x,
            Err(e) => return ControlFlow::Break(e),
        };
        let versioned_name = match &as_of {
            AsOf::Version(v) => format!("{table}@v{v}"),
            AsOf::Timestamp(t) => format!("{table}@{t}"),
        };
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: Ident::with_quote('"', &table),
                columns: vec![],
                at: None,
            });
        }
        *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
            '"',
            &versioned_name,
        ))]);
        self.found.push(Versioned {
            alias: versioned_name,
            table,
            as_of,
        });
        ControlFlow::Continue(())
    }
}

/// The lake table a name means: its last part (the lake is one schema), unquoted names
/// lower-cased as DataFusion normalises them.
fn table_name(name: &ObjectName) -> Result<String, String> {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(id)) if id.quote_style.is_some() => Ok(id.value.clone()),
        Some(ObjectNamePart::Identifier(id)) => Ok(id.value.to_lowercase()),
        _ => Err(format!("VERSION/TIMESTAMP AS OF must follow a table name, not {name}")),
    }
}

fn as_of(version: &TableVersion) -> Result<AsOf, String> {
    let literal = |e: &Expr| match e {
        Expr::Value(v) => Some(v.value.clone()),
        _ => None,
    };
    match version {
        TableVersion::VersionAsOf(e) => match literal(e) {
            Some(Value::Number(n, _)) => n
                .parse()
                .map(AsOf::Version)
                .map_err(|_| format!("VERSION AS OF {n}: a version is a whole number ≥ 0, see history('t')")),
            _ => Err(format!(
                "VERSION AS OF {e}: expected a version number, e.g. VERSION AS OF 3"
            )),
        },
        TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => match literal(e) {
            Some(Value::SingleQuotedString(s)) => Ok(AsOf::Timestamp(s)),
            _ => Err(format!(
                "TIMESTAMP AS OF {e}: expected a quoted RFC 3339 time, e.g. TIMESTAMP AS OF '2026-11-21T20:00:00Z'"
            )),
        },
        other => Err(format!(
            "{other} is not supported: use VERSION AS OF <n> or TIMESTAMP AS OF '<RFC 3339>'"
        )),
    }
}

#[cfg(test)]
#[path = "time_travel_tests.rs"]
mod tests;
