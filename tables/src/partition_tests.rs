//! Partitioned tables through the writer, every scenario in both write modes and both delete
//! modes: rows move between partitions in one commit, deletes keep a row in its partition,
//! files hold one set of values and no partition column, and the spec is fixed at creation.

use std::collections::HashMap;

use super::DeleteMode;
use crate::test_support::*;

fn partitioned(deletes: DeleteMode) -> Fixture {
    let mut fx = Fixture::new(deletes);
    fx.partition_by = vec!["name".into(), "date(ts) AS day".into()];
    fx
}

/// Every active file: its partition values, its live row names (read through DataFusion) and
/// the columns its Parquet file holds.
async fn files(fx: &Fixture) -> Vec<(HashMap<String, Option<String>>, Vec<String>)> {
    let table = fx.lake.open(TABLE, None).await.expect("table opens");
    let adds = crate::lake::active_adds(&table).expect("active files");
    let mut out = Vec::new();
    for add in adds {
        let file = std::fs::File::open(fx.dir.path().join(TABLE).join(&add.path)).expect("data file");
        let reader = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
        let columns: Vec<String> = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        assert!(!add.path.contains('%') && !add.path.contains('/'), "{}", add.path);
        out.push((add.partition_values, columns));
    }
    out
}

fn values(name: Option<&str>, day: &str) -> HashMap<String, Option<String>> {
    [
        ("name".to_string(), name.map(str::to_string)),
        ("day".to_string(), Some(day.to_string())),
    ]
    .into()
}

async fn moves_and_deletes_keep_partitions(deletes: DeleteMode) {
    let fx = partitioned(deletes);
    let mut w = fx.writer().await;
    apply(
        &mut w,
        &batch(&[up(0, 1, "a", 100), up(1, 2, "b", 200), up(2, 3, "", 300)]),
    )
    .await;
    let table = fx.lake.open(TABLE, None).await.expect("table opens");
    let md = table.snapshot().expect("snapshot").metadata().clone();
    assert_eq!(md.partition_columns(), &["name".to_string(), "day".to_string()]);
    let description = md.description().unwrap_or_default();
    assert!(
        description.ends_with("; partitioned by name, date(ts) AS day."),
        "{description}"
    );
    let found = files(&fx).await;
    assert_eq!(found.len(), 3, "one file per set of values: {found:?}");
    for (v, columns) in &found {
        assert!(!columns.iter().any(|c| c == "name" || c == "day"), "{columns:?}");
        assert_eq!(v["day"].as_deref(), Some("1970-01-01"));
    }
    // Delta reads an empty partition value as NULL, so "" is written as NULL: every reader agrees
    assert!(found.iter().any(|(v, _)| v["name"].is_none()), "{found:?}");
    assert_eq!(fx.query("SELECT id FROM t WHERE name IS NULL").await, ["3"]);

    // 1 moves from a to b, 2 is deleted, 3 moves from "" to NULL: one commit
    let a = apply(&mut w, &batch(&[up(3, 1, "b", 110), del(4, 2), up(5, 3, "c", 310)])).await;
    assert_eq!(a.version, Some(2));
    assert_eq!(
        fx.rows().await,
        expect(
            deletes,
            &[
                ("1|b|1.10|3000|u|false|3", LIVE),
                ("2|b|2.00|1000|d|true|4", GONE),
                ("3|c|3.10|5000|u|false|5", LIVE),
            ]
        )
    );
    assert_eq!(
        fx.query("SELECT name, count(*) FROM t WHERE NOT __deleted GROUP BY name ORDER BY name")
            .await,
        ["b|1", "c|1"]
    );
    // the soft-deleted row stayed in b (its last values), with the day of its last timestamp
    let live: Vec<_> = files(&fx).await.into_iter().map(|(v, _)| v).collect();
    assert!(live.contains(&values(Some("b"), "1970-01-01")), "{live:?}");
    assert!(live.contains(&values(Some("c"), "1970-01-01")), "{live:?}");

    // a fresh writer (index rebuilt from the table, values injected) keeps moving rows
    let mut w = fx.writer().await;
    apply(&mut w, &batch(&[up(6, 1, "a", 120), del(7, 3)])).await;
    assert_eq!(
        fx.query("SELECT id, name, day FROM t WHERE NOT __deleted ORDER BY id")
            .await,
        ["1|a|1970-01-01"]
    );
    assert_eq!(fx.query("SELECT COUNT(*) - COUNT(DISTINCT id) FROM t").await, ["0"]);
    // compaction merges the files of one set of values, never across values
    apply(&mut w, &batch(&[up(8, 4, "a", 400)])).await;
    apply(&mut w, &batch(&[up(9, 5, "a", 500), up(10, 6, "d", 600)])).await;
    let report = w.compact(&eager()).await.expect("compacts");
    assert!(report.files_removed >= 3, "{report:?}");
    assert_eq!(
        fx.query("SELECT id, name FROM t WHERE NOT __deleted ORDER BY id").await,
        ["1|a", "4|a", "5|a", "6|d"]
    );
    let after = files(&fx).await;
    assert_eq!(
        after.iter().filter(|(v, _)| v["name"].as_deref() == Some("a")).count(),
        1,
        "{after:?}"
    );
    assert_eq!(fx.query("SELECT COUNT(*) - COUNT(DISTINCT id) FROM t").await, ["0"]);
}

/// A table keeps the partitioning it was created with: a writer configured otherwise is
/// refused with what to do; a partition column the first schema lacks refuses creation.
async fn partitioning_is_fixed(deletes: DeleteMode) {
    let fx = partitioned(deletes);
    let mut w = fx.writer().await;
    apply(&mut w, &batch(&[up(0, 1, "a", 100)])).await;
    let mut other = Fixture {
        partition_by: vec!["name".into()],
        ..partitioned(deletes)
    };
    other.dir = fx.dir;
    other.lake = fx.lake.clone();
    let e = match crate::TableWriter::open(&other.lake, TABLE, other.options()).await {
        Err(e) => e,
        Ok(_) => panic!("a writer partitioning otherwise opened"),
    };
    let text = e.to_string();
    assert!(!e.is_retryable(), "{text}");
    assert!(
        text.contains(r#"partitioned by ["name","date(ts) AS day"] but its partition_by says ["name"]"#),
        "{text}"
    );
    assert!(text.contains("cormorant replay"), "{text}");

    let mut fx = Fixture::new(deletes);
    fx.partition_by = vec!["amount".into()];
    let mut w = fx.writer().await;
    let e = w.apply(&batch(&[up(0, 1, "a", 100)])).await.expect_err("refused");
    assert!(
        e.to_string()
            .contains("partition column amount has type Decimal128(10, 2)"),
        "{e}"
    );
}

/// A partition column the first records lack (added to the source later) is pending: the
/// table is partitioned by it, in one rewrite, when it appears.
async fn pending_column_appears(deletes: DeleteMode) {
    let mut fx = Fixture::new(deletes);
    fx.partition_by = vec!["note".into(), "name".into()];
    let mut w = fx.writer().await;
    apply(&mut w, &batch(&[up(0, 1, "a", 100), up(1, 2, "b", 200)])).await;
    let partition_columns = |fx: &Fixture| {
        let fx = fx.lake.clone();
        async move {
            let t = fx.open(TABLE, None).await.expect("table opens");
            t.snapshot().expect("snapshot").metadata().partition_columns().to_vec()
        }
    };
    assert_eq!(partition_columns(&fx).await, ["name"]);
    let b = make_batch(
        &[up(2, 1, "a", 110).note("x"), up(3, 3, "c", 300).note("y")],
        true,
        Vec::new(),
    );
    apply(&mut w, &b).await;
    assert_eq!(partition_columns(&fx).await, ["note", "name"]);
    assert_eq!(
        fx.query("SELECT id, note, name FROM t ORDER BY id").await,
        ["1|x|a", "2|null|b", "3|y|c"]
    );
    let found = files(&fx).await;
    assert!(found.iter().all(|(v, _)| v.len() == 2), "{found:?}");
    // and from a fresh writer, a move between note values
    let mut w = fx.writer().await;
    apply(&mut w, &make_batch(&[up(4, 2, "b", 210).note("x")], true, Vec::new())).await;
    assert_eq!(
        fx.query("SELECT note, count(*) FROM t GROUP BY note ORDER BY note")
            .await,
        ["x|2", "y|1"]
    );
    assert_eq!(fx.query("SELECT COUNT(*) - COUNT(DISTINCT id) FROM t").await, ["0"]);
}

all_modes!(
    moves_and_deletes_keep_partitions,
    partitioning_is_fixed,
    pending_column_appears
);
