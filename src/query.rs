//! The query engine: every table in the lake registered in one DataFusion session, and
//! result printing in the shell's formats.
//!
//! Tables are registered as Delta providers at their latest version when the session starts;
//! soft-deleted rows are visible with `__deleted = true` (filter on it for live rows), exactly
//! as any other Delta reader sees them.

use std::io::Write;

use arrow::array::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;
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
    let lake = Lake::new(&cfg.lake.uri, cfg.lake.storage_options.clone())?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
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

/// Runs every statement in `sql`; returns the batches of each.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> anyhow::Result<Vec<Vec<RecordBatch>>> {
    let statements = DFParser::parse_sql(sql)?;
    let mut out = Vec::new();
    for stmt in statements {
        let plan = ctx.state().statement_to_plan(stmt).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        out.push(df.collect().await?);
    }
    Ok(out)
}

/// Prints `batches` in `format` to `w`.
pub fn print(batches: &[RecordBatch], format: Format, w: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            writeln!(w, "{}", arrow::util::pretty::pretty_format_batches(batches)?)?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *w);
            if batches.is_empty() {
                return Ok(());
            }
            for b in batches {
                writer.write(b)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut *w);
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
            writeln!(w)?;
        }
        Format::Ndjson => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *w);
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
