//! The interactive SQL shell (`cormorant sql` without `-c`/`-f`): line editing, persistent
//! history, multi-line statements ending in `;`, and backslash commands.

use std::io::Write;
use std::time::Instant;

use datafusion::prelude::SessionContext;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::query::{self, Format};

const HELP: &str = "\
  \\dt              list tables
  \\d TABLE         describe a table's columns
  \\timing          toggle timing of statements
  \\format FORMAT   table | csv | json | ndjson
  \\q               quit
Statements end with ';' and may span lines. Time travel: FROM t VERSION AS OF 3,
FROM t TIMESTAMP AS OF '2026-11-21T20:00:00Z'; functions: history('t'),
table_changes('t', 1, 5), tumble/hop/session(...).";

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cormorant_history"))
}

/// Runs the shell until `\q` or end of input.
pub async fn run(ctx: &SessionContext, mut format: Format) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("cormorant SQL shell — \\? for help, \\q to quit");
    let mut timing = false;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "cormorant> "
        } else {
            "       ... "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            let mut parts = trimmed.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("\\q"), _) => break,
                (Some("\\?" | "\\h" | "\\help"), _) => println!("{HELP}"),
                (Some("\\timing"), _) => {
                    timing = !timing;
                    println!("Timing is {}.", if timing { "on" } else { "off" });
                }
                (Some("\\format"), Some(f)) => match <Format as clap::ValueEnum>::from_str(f, true) {
                    Ok(f) => {
                        format = f;
                        println!("Output format is {f:?}.");
                    }
                    Err(_) => println!("unknown format {f:?}: use table, csv, json or ndjson"),
                },
                (Some("\\dt"), _) => {
                    execute(
                        ctx,
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name NOT LIKE '%@%' ORDER BY 1",
                        format,
                        false,
                    )
                    .await
                }
                (Some("\\d"), Some(t)) => {
                    let sql = format!(
                        "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = '{}' ORDER BY ordinal_position",
                        t.replace('\'', "''")
                    );
                    execute(ctx, &sql, format, false).await
                }
                _ => println!("unknown command {trimmed:?}; \\? lists the commands"),
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if statement_complete(&buffer) {
            let sql = std::mem::take(&mut buffer);
            let _ = editor.add_history_entry(sql.trim());
            execute(ctx, &sql, format, timing).await;
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

/// Whether `buffer` ends a statement: its last token (comments aside) is `;`, and no string,
/// quoted name or block comment is still open — so a `;` inside `'a;b'`, `"x;"` or
/// `/* ; */` does not end it (SQL's own tokenizer decides, as datafusion-cli does).
fn statement_complete(buffer: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, buffer).tokenize() else {
        return false; // an unterminated string or comment: keep reading lines
    };
    tokens
        .iter()
        .rev()
        .find(|t| !matches!(t, Token::Whitespace(_)))
        .is_some_and(|t| matches!(t, Token::SemiColon))
}

async fn execute(ctx: &SessionContext, sql: &str, format: Format, timing: bool) {
    let started = Instant::now();
    match query::run_sql(ctx, sql).await {
        Ok(results) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for batches in results {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                if let Err(e) = query::print(&batches, format, &mut out) {
                    eprintln!("error: {e:#}");
                }
                let _ = writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" });
            }
            if timing {
                let _ = writeln!(out, "Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Err(e) => eprintln!("error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::statement_complete;

    #[test]
    fn a_semicolon_in_a_string_or_comment_does_not_end_a_statement() {
        assert!(statement_complete("SELECT 1;\n"));
        assert!(statement_complete("SELECT 'a;b';  -- done\n"));
        assert!(statement_complete("SELECT 1; /* trailing */\n"));
        assert!(!statement_complete("SELECT 'a;\n"));
        assert!(!statement_complete("SELECT \"x;\n"));
        assert!(!statement_complete("SELECT 1 /* ; \n"));
        assert!(!statement_complete("SELECT 1 -- ;\n"));
        assert!(!statement_complete("SELECT 1\n"));
    }
}
