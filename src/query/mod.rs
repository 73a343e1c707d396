//! The query engine: every table in the lake registered in one DataFusion session, time
//! travel ([`time_travel`]), the `history` and `table_changes` functions ([`functions`]), the
//! `tumble`/`hop`/`session` window functions ([`windows`]), and result printing.
//!
//! Tables are registered as Delta providers at their latest version when the session starts;
//! soft-deleted rows are visible with `__deleted = true` (filter on it for live rows), exactly
//! as any other Delta reader sees them.

pub mod functions;
pub mod lake_schema;
pub mod output;
pub mod time_travel;
pub mod windows;

use std::io::Write;

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use tables::Lake;

use crate::config::Config;

/// Output format of query results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
    Ndjson,
}

/// A DataFusion session with every lake table registered.
pub async fn session(cfg: &Config) -> anyhow::Result<SessionContext> {
    let lake = cfg.lake.open()?;
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_information_schema(true)
            .with_extension(Arc::new(lake.clone())),
    );
    functions::register(&ctx);
    windows::register(&ctx);
    let mut names = lake.list_tables().await?;
    for t in &cfg.tables {
        if !names.contains(&t.name) {
            names.push(t.name.clone());
        }
    }
    for name in names {
        let table = match lake.open(&name, None).await {
            Ok(t) => t,
            Err(tables::TableError::NotFound(_)) => continue, // configured but not written yet
            Err(e) => return Err(e.into()),
        };
        table.update_datafusion_session(&ctx.state())?;
        let provider = table.table_provider().await?;
        ctx.register_table(name.as_str(), provider)?;
    }
    Ok(ctx)
}

/// The lake a session reads (set by [`session`]).
pub fn lake_of(state: &datafusion::execution::session_state::SessionState) -> anyhow::Result<Arc<Lake>> {
    state
        .config()
        .get_extension::<Lake>()
        .ok_or_else(|| anyhow::anyhow!("this session was not created by cormorant::query::session"))
}

/// Registers the versions of tables that `sql` names with VERSION/TIMESTAMP AS OF and returns
/// the statement text with those references resolved (for a front end that parses the text
/// itself, e.g. the PostgreSQL server); `sql` unchanged when it names none.
pub async fn prepare_time_travel(ctx: &SessionContext, sql: &str) -> anyhow::Result<String> {
    let (statements, versioned) = parse_and_register(ctx, sql).await?;
    if !versioned {
        return Ok(sql.to_string());
    }
    let text: Vec<String> = statements.iter().map(ToString::to_string).collect();
    Ok(text.join(";\n"))
}

/// Parses `sql`, resolves its versioned table references ([`time_travel::resolve`]) and
/// registers each version named; the statements, and whether any version was named.
async fn parse_and_register(ctx: &SessionContext, sql: &str) -> anyhow::Result<(Vec<DFStatement>, bool)> {
    let mut statements: Vec<DFStatement> = time_travel::parse(sql).map_err(|e| anyhow::anyhow!(e))?.into();
    let versions = time_travel::resolve(&mut statements).map_err(|e| anyhow::anyhow!(e))?;
    if versions.is_empty() {
        return Ok((statements, false));
    }
    let lake = lake_of(&ctx.state())?;
    for v in versions {
        if ctx.table_exist(v.alias.as_str())? {
            continue;
        }
        let table = open_as_of(&lake, &v.table, &v.as_of).await?;
        table.update_datafusion_session(&ctx.state())?;
        ctx.register_table(v.alias.as_str(), table.table_provider().await?)?;
    }
    Ok((statements, true))
}

/// `table` as of a version or a time, with errors that say what exists.
pub async fn open_as_of(lake: &Lake, table: &str, as_of: &time_travel::AsOf) -> anyhow::Result<deltalake::DeltaTable> {
    let latest = match lake.open(table, None).await {
        Err(tables::TableError::NotFound(_)) => return Err(no_such_tables(Some(lake), &[table.to_string()]).await),
        other => other?,
    };
    let newest = latest.version().unwrap_or(0);
    match as_of {
        time_travel::AsOf::Version(v) => {
            if *v > newest {
                anyhow::bail!("{table} has no version {v}: its versions are 0..={newest} (see history('{table}'))");
            }
            match lake.open(table, Some(*v)).await {
                Ok(t) => Ok(t),
                Err(e) => {
                    // only now list the log (one listing) to say how far back it reaches
                    let oldest = tables::maintain::log_extent(&latest)
                        .await
                        .ok()
                        .and_then(|x| x.oldest_readable);
                    match oldest {
                        Some(o) if *v < o => anyhow::bail!(
                            "{table} VERSION AS OF {v} has expired (maintenance.log_retention); the oldest readable version is {o} — see history('{table}')"
                        ),
                        _ => anyhow::bail!(
                            "{table} VERSION AS OF {v} cannot be read ({e}); it may have been vacuumed — see history('{table}'), column readable"
                        ),
                    }
                }
            }
        }
        time_travel::AsOf::Timestamp(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                anyhow::anyhow!("TIMESTAMP AS OF '{text}': {e}; use RFC 3339, e.g. '2026-11-21T20:00:00Z'")
            })?;
            // the newest commit at or before that time, by the commit times history() shows
            // (file modification times can trail them by milliseconds)
            let history = functions::history(lake, table).await?;
            let versions = history.column(0).as_any().downcast_ref::<arrow::array::Int64Array>();
            let times = history
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::TimestampMillisecondArray>();
            let (Some(versions), Some(times)) = (versions, times) else {
                anyhow::bail!("cannot read the history of {table}");
            };
            let wanted = at.timestamp_millis();
            let version = (0..history.num_rows())
                .filter(|i| arrow::array::Array::is_valid(times, *i) && times.value(*i) <= wanted)
                .map(|i| versions.value(i))
                .max()
                .ok_or_else(|| {
                    anyhow::anyhow!("{table} has no commit at or before '{text}'; its first commit is later — see history('{table}')")
                })?;
            Ok(lake.open(table, Some(version as u64)).await?)
        }
    }
}

/// Runs every statement in `sql`; returns the batches of each.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> anyhow::Result<Vec<Vec<RecordBatch>>> {
    let (statements, _) = parse_and_register(ctx, sql).await?;
    let mut out = Vec::new();
    for stmt in statements {
        let plan = match ctx.state().statement_to_plan(stmt.clone()).await {
            Ok(plan) => plan,
            Err(e) => return Err(missing_tables(ctx, &stmt).await.unwrap_or_else(|| e.into())),
        };
        let df = ctx.execute_logical_plan(plan).await?;
        out.push(df.collect().await?);
    }
    Ok(out)
}

/// After a statement failed to plan: an error naming the tables it reads that the lake does
/// not have, and the ones it has (DataFusion's own says "table 'datafusion.public.x' not
/// found" twice); `None` when every table it names exists.
async fn missing_tables(ctx: &SessionContext, stmt: &DFStatement) -> Option<anyhow::Error> {
    let state = ctx.state();
    let references = state.resolve_table_references(stmt).ok()?;
    // (a table function's call, `history('t')`, is among the references too)
    let missing: Vec<String> = references
        .iter()
        .filter(|r| !state.table_functions().contains_key(r.table()))
        .filter(|r| !ctx.table_exist(r.table()).unwrap_or(true))
        .map(|r| r.table().to_string())
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(no_such_tables(lake_of(&ctx.state()).ok().as_deref(), &missing).await)
}

/// The error for `missing` tables: which ones, and the tables the lake has.
async fn no_such_tables(lake: Option<&Lake>, missing: &[String]) -> anyhow::Error {
    let names = match lake {
        Some(lake) => lake.list_tables().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let has = match names.is_empty() {
        true => "it has no tables yet".to_string(),
        false => format!("its tables are: {}", names.join(", ")),
    };
    anyhow::anyhow!(
        "there is no table {} in the lake; {has} (\\dt in the shell lists them; a table appears at its first commit, a [[views]] view after its table's)",
        missing.join(", "),
    )
}

/// Prints `batches` in `format` to `w` (see [`output`]).
pub fn print(batches: &[RecordBatch], format: Format, w: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Table => output::write_table(batches, w),
        Format::Csv => output::write_csv(batches, w),
        Format::Json => output::write_json(batches, false, w),
        Format::Ndjson => output::write_json(batches, true, w),
    }
}
