//! Partitioned tables (`partition_by`) on the real Debezium capture: customers by
//! `loyalty_tier` (a column that appears only at point 3: the table is unpartitioned before it,
//! NULLs after), orders by `date(created_at) AS created_day` (a derived column), products by
//! `discontinued` (a boolean updates flip, moving rows). At every point each table equals the
//! PostgreSQL dump through DataFusion and python deltalake, time travel included; queries
//! prune partitions (shown by deleting one partition's files from a copy of the lake).

use std::path::{Path, PathBuf};

use tables::{DeleteMode, WriteMode};

use crate::fixture_replay::point_by_point_with;
use crate::support::*;

fn partitioned(cfg: &mut cormorant::config::Config) {
    for t in &mut cfg.tables {
        t.partition_by = match t.name.as_str() {
            "customers" => vec!["loyalty_tier".into()],
            "orders" => vec!["date(created_at) AS created_day".into()],
            _ => vec!["discontinued".into()],
        };
    }
}

/// The active files of `table` (local lake) with their partition values.
async fn active_files(cfg: &cormorant::config::Config, table: &str) -> Vec<(String, Vec<(String, Option<String>)>)> {
    let t = cfg.lake.open().expect("lake").open(table, None).await.expect("table");
    let adds = tables::lake::active_adds(&t).expect("active files");
    adds.into_iter()
        .map(|a| {
            let mut v: Vec<_> = a.partition_values.into_iter().collect();
            v.sort();
            (a.path, v)
        })
        .collect()
}

/// On S3 with copy-on-write and hard deletes: customers and products partitioned (orders,
/// a file per day, would make the test slow on the local S3 server, and gains no coverage).
#[tokio::test(flavor = "multi_thread")]
async fn partitioned_tables_on_s3_copy_on_write() {
    let cfg = point_by_point_with(Storage::S3, DeleteMode::Hard, WriteMode::Cow, "part-s3-cow", |cfg| {
        partitioned(cfg);
        for t in &mut cfg.tables {
            if t.name == "orders" {
                t.partition_by.clear();
            }
        }
    })
    .await;
    let lake = cfg.lake.open().expect("lake");
    let t = lake.open("products", None).await.expect("table");
    assert_eq!(
        t.snapshot().expect("snapshot").metadata().partition_columns(),
        &["discontinued"]
    );
    let config = write_config(&cfg, "part-s3-sql");
    assert_eq!(
        csv(
            &config,
            "SELECT discontinued, count(*) AS n FROM products GROUP BY 1 ORDER BY 1"
        ),
        "discontinued,n\nf,171\nt,34\n"
    );
    assert_no_duplicate_keys(&cfg).await;
}

fn csv(config: &Path, sql: &str) -> String {
    let out = cormorant_cmd(config, &["sql", "--format", "csv", "-c", sql])
        .output()
        .expect("cormorant sql");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_tables_match_the_fixture_at_every_point() {
    let cfg = point_by_point_with(
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Mor,
        "part-soft-mor",
        partitioned,
    )
    .await;
    let lake = cfg.lake.open().expect("lake");
    for (table, cols) in [
        ("customers", vec!["loyalty_tier"]),
        ("orders", vec!["created_day"]),
        ("products", vec!["discontinued"]),
    ] {
        let t = lake.open(table, None).await.expect("table");
        let md = t.snapshot().expect("snapshot").metadata().clone();
        assert_eq!(md.partition_columns(), &cols, "{table}");
        // every file holds one set of values, and no partition column in its Parquet data
        let root = PathBuf::from(&cfg.lake.uri).join(table);
        for (path, values) in active_files(&cfg, table).await {
            assert_eq!(values.len(), 1, "{table}/{path}: {values:?}");
            let file = std::fs::File::open(root.join(&path)).expect("data file");
            let reader = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
            let meta = parquet::file::reader::FileReader::metadata(&reader);
            let names: Vec<&str> = meta
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .map(|c| c.name())
                .collect();
            assert!(!names.contains(&cols[0]), "{table}/{path} holds {}", cols[0]);
        }
    }
    let config = write_config(&cfg, "part-sql");
    // NULL and each tier distinct, through the CLI (the provider hands strings as dictionaries)
    assert_eq!(
        csv(
            &config,
            "SELECT loyalty_tier, count(*) AS n FROM customers WHERE NOT __deleted GROUP BY loyalty_tier ORDER BY loyalty_tier NULLS FIRST"
        ),
        "loyalty_tier,n\n,904\nbronze,55\ngold,88\nplatinum,59\nsilver,74\n"
    );
    assert_eq!(
        csv(
            &config,
            "SELECT count(*) AS wrong FROM orders WHERE created_day IS DISTINCT FROM CAST(created_at AS DATE)"
        ),
        "wrong\n0\n"
    );
    assert_no_duplicate_keys(&cfg).await;
    assert_queries_prune(&cfg).await;
}

/// A copy of the lake without the files of `discontinued = true`: a query filtering on the
/// partition column still answers (those files are never opened), an unfiltered one fails.
async fn assert_queries_prune(cfg: &cormorant::config::Config) {
    let copy = std::env::temp_dir().join("cormorant-tests").join(unique("part-pruned"));
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&cfg.lake.uri)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let mut removed = 0;
    for (path, values) in active_files(cfg, "products").await {
        if values == [("discontinued".to_string(), Some("true".to_string()))] {
            std::fs::remove_file(copy.join("products").join(&path)).expect("remove");
            removed += 1;
        }
    }
    assert!(removed > 0, "no file of discontinued = true");
    let mut pruned = cfg.clone();
    pruned.lake.uri = copy.to_string_lossy().into_owned();
    let config = write_config(&pruned, "part-pruned");
    assert_eq!(
        csv(
            &config,
            "SELECT count(*) AS n FROM products WHERE NOT discontinued AND NOT __deleted"
        ),
        "n\n171\n"
    );
    // (not count(*): that may be answered from the log's statistics without opening a file)
    let out = cormorant_cmd(
        &config,
        &["sql", "--format", "csv", "-c", "SELECT max(name) FROM products"],
    )
    .output()
    .expect("cormorant sql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the removed files were not needed?");
    assert!(
        stderr.contains("not found") || stderr.contains("No such file"),
        "{stderr}"
    );
}
