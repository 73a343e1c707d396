use super::*;

fn resolved(sql: &str) -> Result<(String, Vec<Versioned>), String> {
    let mut statements: Vec<DfStatement> = parse(sql)?.into();
    let found = resolve(&mut statements)?;
    let text: Vec<String> = statements.iter().map(ToString::to_string).collect();
    Ok((text.join("; "), found))
}

#[test]
fn versions_and_timestamps_become_registered_names() {
    let (sql, found) = resolved(
        "SELECT a.id FROM customers VERSION AS OF 3 a JOIN customers TIMESTAMP AS OF '2026-11-21T20:00:00Z' AS b \
         ON a.id = b.id WHERE x = 'VERSION AS OF 9' -- customers VERSION AS OF 8",
    )
    .expect("resolve");
    assert_eq!(
        sql,
        "SELECT a.id FROM \"customers@v3\" a JOIN \"customers@2026-11-21T20:00:00Z\" AS b ON a.id = b.id WHERE x = 'VERSION AS OF 9'"
    );
    assert_eq!(
        found,
        vec![
            Versioned {
                alias: "customers@v3".into(),
                table: "customers".into(),
                as_of: AsOf::Version(3)
            },
            Versioned {
                alias: "customers@2026-11-21T20:00:00Z".into(),
                table: "customers".into(),
                as_of: AsOf::Timestamp("2026-11-21T20:00:00Z".into())
            },
        ]
    );
}

#[test]
fn an_unaliased_reference_keeps_its_table_name_as_alias() {
    let (sql, _) = resolved("SELECT customers.id FROM public.Customers VERSION AS OF 2").expect("resolve");
    assert_eq!(sql, "SELECT customers.id FROM \"customers@v2\" AS \"customers\"");
    let (sql, found) =
        resolved("SELECT * FROM \"Mixed\" FOR SYSTEM_TIME AS OF '2026-01-01T00:00:00Z'").expect("resolve");
    assert_eq!(sql, "SELECT * FROM \"Mixed@2026-01-01T00:00:00Z\" AS \"Mixed\"");
    assert_eq!(found[0].table, "Mixed");
}

#[test]
fn versions_in_subqueries_ctes_and_explain_are_found() {
    let (_, found) = resolved(
        "EXPLAIN WITH old AS (SELECT id FROM t VERSION AS OF 1) \
         SELECT * FROM old WHERE id IN (SELECT id FROM t VERSION AS OF 2)",
    )
    .expect("resolve");
    let versions: Vec<_> = found.iter().map(|v| v.as_of.clone()).collect();
    assert_eq!(versions, vec![AsOf::Version(1), AsOf::Version(2)]);
}

#[test]
fn malformed_versions_say_what_to_write() {
    let e = resolved("SELECT * FROM t VERSION AS OF 'x'").expect_err("a string is not a version");
    assert!(e.contains("version") || e.contains("Expected"), "{e}");
    let e = resolved("SELECT * FROM t TIMESTAMP AS OF 3").expect_err("a number is not a time");
    assert!(e.contains("RFC 3339"), "{e}");
    assert_eq!(resolved("SELECT 1").expect("plain").0, "SELECT 1");
}

#[test]
fn window_sources_are_table_references() {
    assert_eq!(
        table_reference("orders VERSION AS OF 4").expect("versioned"),
        ("orders".to_string(), Some(AsOf::Version(4)))
    );
    assert_eq!(
        table_reference("\"Orders\"").expect("plain"),
        ("Orders".to_string(), None)
    );
    assert!(table_reference("(SELECT 1)").is_err());
}

/// The dialect must parse everything exactly as DataFusion's generic dialect does; a corpus of
/// the generic dialect's particular syntax, parsed by both, catches a forwarding gap.
#[test]
fn the_dialect_parses_like_the_generic_one() {
    let corpus = [
        "SELECT \"a b\", `c`, #x, @y, $z FROM t",
        "SELECT a::int, U&'\\0041', MAP {'k': 1}, {'a': 1}, STRUCT(1 AS x) FROM t",
        "SELECT * EXCEPT (a) FROM t",
        "SELECT * EXCLUDE (a) FROM t",
        "SELECT * REPLACE (a + 1 AS a) FROM t",
        "SELECT a FROM t LIMIT 1, 2",
        "SELECT count(*) FILTER (WHERE a > 1) FROM t GROUP BY ALL",
        "SELECT a, FROM t",
        "SELECT EXTRACT(year FROM ts), TRIM('x', 'y') FROM t",
        "SELECT a FROM (t) JOIN u ON t.id = u.id",
        "SELECT x FROM VALUES (1), (2)",
        "SELECT first_value(a) IGNORE NULLS OVER w FROM t WINDOW w AS (PARTITION BY b ORDER BY c)",
        "SELECT 1 << 2, 'a' || 'b', E'x\\n'",
        "FROM t SELECT a",
        "/* a /* nested */ comment */ SELECT 1",
        "SELECT a FROM t WHERE MATCH (a) AGAINST ('x')",
        "SET NAMES utf8",
        "SELECT CAST(a AS INT[]) FROM t",
        "EXPLAIN (ANALYZE) SELECT 1",
        "SELECT INTERVAL '1' HOUR, INTERVAL '1 day'",
    ];
    for sql in corpus {
        let generic = DFParser::parse_sql_with_dialect(sql, &GenericDialect).map(|s| format!("{s:?}"));
        let ours = DFParser::parse_sql_with_dialect(sql, &CormorantDialect).map(|s| format!("{s:?}"));
        match (generic, ours) {
            (Ok(g), Ok(o)) => assert_eq!(g, o, "{sql}"),
            (Err(g), Err(o)) => assert_eq!(g.to_string(), o.to_string(), "{sql}"),
            (g, o) => panic!("{sql}: generic {g:?}, cormorant {o:?}"),
        }
    }
}
