//! `FROM t VERSION AS OF n` and `FROM t TIMESTAMP AS OF '<RFC 3339>'`.
//!
//! DataFusion's SQL dialect has no table versions, so statements are rewritten at the token
//! level (string literals and comments are untouched): `t VERSION AS OF 3` becomes the quoted
//! name `"t@v3"`, registered as a provider over that version of `t`. A statement can name
//! several versions of one table (a join of two versions works).
//!
//! Why tokens and not the AST: sqlparser 0.62 parses `VERSION AS OF` only for dialects whose
//! `supports_table_versioning` is true (BigQuery, Databricks, MsSql, Snowflake), which differ
//! from DataFusion's generic dialect in quoting and much else; a wrapper dialect cannot stand
//! in for the generic one, because the parser also tests the dialect's concrete type
//! (`dialect_of!`); and DataFusion 55's planner ignores a parsed version (it would silently
//! read the latest). The tokenizer is the same one DataFusion's parser uses, so strings,
//! quoted names and comments are recognised exactly as the parser will see them.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

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
    /// The name the rewritten statement uses.
    pub alias: String,
    pub table: String,
    pub as_of: AsOf,
}

fn is_word(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, .. }) if *keyword == kw)
}

/// Rewrites every `<table> VERSION AS OF <n>` / `<table> TIMESTAMP AS OF '<ts>'`.
pub fn rewrite(sql: &str) -> Result<(String, Vec<Versioned>), String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| format!("cannot read the statement: {e}"))?;
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let kind = &tokens[i];
        if (is_word(kind, Keyword::VERSION) || is_word(kind, Keyword::TIMESTAMP)) && i + 4 < tokens.len() {
            // <kind> ws AS ws OF ws <value>
            let rest: Vec<&Token> = tokens[i + 1..]
                .iter()
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .take(3)
                .collect();
            if rest.len() == 3 && is_word(rest[0], Keyword::AS) && is_word(rest[1], Keyword::OF) {
                // the table name is the last non-whitespace token already emitted
                while matches!(out.last(), Some(Token::Whitespace(_))) {
                    out.pop();
                }
                let table = match out.pop() {
                    Some(Token::Word(w)) => w.value,
                    other => {
                        return Err(format!(
                            "VERSION/TIMESTAMP AS OF must follow a table name, not {other:?}"
                        ));
                    }
                };
                let as_of = match rest[2] {
                    Token::Number(n, _) if is_word(kind, Keyword::VERSION) => {
                        AsOf::Version(n.parse().map_err(|_| format!("bad version {n}"))?)
                    }
                    Token::SingleQuotedString(s) if is_word(kind, Keyword::TIMESTAMP) => AsOf::Timestamp(s.clone()),
                    other => {
                        return Err(format!(
                            "expected a version number after VERSION AS OF or a quoted RFC 3339 time after TIMESTAMP AS OF, found {other}"
                        ));
                    }
                };
                let alias = match &as_of {
                    AsOf::Version(v) => format!("{table}@v{v}"),
                    AsOf::Timestamp(t) => format!("{table}@{t}"),
                };
                out.push(Token::Word(Word {
                    value: alias.clone(),
                    quote_style: Some('"'),
                    keyword: Keyword::NoKeyword,
                }));
                found.push(Versioned { alias, table, as_of });
                // skip to just past the value token
                let mut seen = 0;
                i += 1;
                while seen < 3 {
                    if !matches!(tokens[i], Token::Whitespace(_)) {
                        seen += 1;
                    }
                    i += 1;
                }
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    Ok((out.iter().map(ToString::to_string).collect(), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_versions_and_timestamps() {
        let (sql, found) =
            rewrite("SELECT a.id FROM customers VERSION AS OF 3 a JOIN customers TIMESTAMP AS OF '2026-11-21T20:00:00Z' b ON a.id = b.id WHERE x = 'VERSION AS OF 9'").expect("rewrite");
        assert_eq!(
            sql,
            "SELECT a.id FROM \"customers@v3\" a JOIN \"customers@2026-11-21T20:00:00Z\" b ON a.id = b.id WHERE x = 'VERSION AS OF 9'"
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].as_of, AsOf::Version(3));
        assert_eq!(found[1].table, "customers");
        assert!(rewrite("SELECT * FROM t VERSION AS OF 'x'").is_err());
        assert_eq!(rewrite("SELECT 1").expect("plain").0, "SELECT 1");
    }
}
