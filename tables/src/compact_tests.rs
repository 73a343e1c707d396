//! Compaction: live rows unchanged, deletion vectors folded in, old versions still readable,
//! and a compaction that raced a writer's delete never brings the row back.

use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{commit, compact, prepare};
use crate::test_support::*;
use crate::writer::DeleteMode;

#[tokio::test]
async fn compaction_keeps_rows_and_folds_in_deletion_vectors() {
    let (fx, mut w) = mor_table_with_deletes(DeleteMode::Hard).await;
    let before = fx.rows().await;
    let version_before = w.current_table().await.expect("table").version().expect("version");
    let mut table = fx.lake.open("orders", None).await.expect("open");
    let files_before = table.snapshot().expect("snapshot").log_data().num_files();
    assert!(
        codecs(&fx, &table).iter().all(|c| *c == Compression::SNAPPY),
        "a merge-on-read commit's files are Snappy (no codec context per column chunk)"
    );
    let r = compact(&mut table, &eager()).await.expect("compact");
    assert!(r.version.is_some(), "compacted: {r:?}");
    assert_eq!(r.files_added, 1);
    assert_eq!(r.files_removed, files_before);
    assert_eq!(r.rows_written, 4, "live rows only: 1, 2 (b2), 3, 5");
    assert_eq!(
        fx.rows().await,
        before,
        "a compaction never changes what a query returns"
    );
    assert!(
        codecs(&fx, &table).iter().all(|c| matches!(c, Compression::ZSTD(_))),
        "compaction writes zstd: the smallest files, meant to last"
    );
    let snapshot = table.snapshot().expect("snapshot");
    assert!(
        snapshot
            .log_data()
            .iter()
            .all(|f| f.deletion_vector_descriptor().is_none())
    );
    // time travel to before the compaction still reads the old files
    let old = fx.lake.open("orders", Some(version_before)).await.expect("old version");
    assert_eq!(old.snapshot().expect("snapshot").log_data().num_files(), files_before);
    // the writer notices, rebuilds its index, and goes on correctly
    apply(&mut w, &batch(&[up(7, 3, "c2", 310), del(8, 1)])).await;
    let rows = fx.rows().await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().any(|r| r.starts_with("3|c2|")));
    assert!(!rows.iter().any(|r| r.starts_with("1|")));
    // the writer's new deletion vector and file are compacted in turn; then nothing is left
    let again = compact(&mut table, &eager()).await.expect("compact");
    assert!(again.version.is_some());
    assert_eq!(fx.rows().await, rows);
    let idle = compact(&mut table, &eager()).await.expect("compact");
    assert_eq!(
        idle,
        super::CompactionReport::default(),
        "one clean file: nothing to do"
    );
}

/// The compression of every column chunk of the active files of `table`.
fn codecs(fx: &Fixture, table: &deltalake::DeltaTable) -> Vec<Compression> {
    let snapshot = table.snapshot().expect("snapshot");
    let mut all = Vec::new();
    for f in snapshot.log_data().iter() {
        let path = fx.dir.path().join("orders").join(f.path().as_ref());
        let file = std::fs::File::open(&path).expect("data file");
        let reader = SerializedFileReader::new(file).expect("parquet");
        for g in reader.metadata().row_groups() {
            all.extend(g.columns().iter().map(|c| c.compression()));
        }
    }
    assert!(!all.is_empty(), "the table has data files");
    all
}

#[tokio::test]
async fn a_delete_racing_a_compaction_is_never_undone() {
    let (fx, mut w) = mor_table_with_deletes(DeleteMode::Hard).await;
    let mut table = fx.lake.open("orders", None).await.expect("open");
    // the compaction reads and writes the live rows (key 3 among them) ...
    let prepared = prepare(&mut table, &eager(), None)
        .await
        .expect("prepare")
        .expect("work to do");
    // ... then the worker deletes key 3 and updates key 5 before the compaction commits
    apply(&mut w, &batch(&[del(9, 3), up(10, 5, "e2", 520)])).await;
    let expected = fx.rows().await;
    let r = commit(&mut table, prepared).await.expect("commit");
    assert!(r.conflicted && r.version.is_none(), "the compaction must lose: {r:?}");
    assert_eq!(fx.rows().await, expected, "key 3 stays deleted, key 5 keeps e2");
    // the next round starts from the worker's commit and succeeds
    let r = compact(&mut table, &eager()).await.expect("compact");
    assert!(r.version.is_some());
    assert_eq!(fx.rows().await, expected);
}

fn file(path: &str, size: i64, rows: u64, deleted: i64) -> super::Candidate {
    let mut add = deltalake::kernel::Add {
        path: path.into(),
        size,
        ..Default::default()
    };
    if deleted > 0 {
        add.deletion_vector = Some(deltalake::kernel::DeletionVectorDescriptor {
            storage_type: deltalake::kernel::StorageType::UuidRelativePath,
            path_or_inline_dv: String::new(),
            offset: Some(1),
            size_in_bytes: 10,
            cardinality: deleted,
        });
    }
    super::Candidate {
        add,
        partition: Some(0),
        rows,
    }
}

fn picked(files: Vec<super::Candidate>) -> Vec<Vec<String>> {
    let opts = crate::CompactionOptions {
        small_file_bytes: 10_000,
        ..Default::default()
    };
    super::pick(files, &opts)
        .into_iter()
        .map(|b| b.into_iter().map(|c| c.add.path).collect())
        .collect()
}

#[test]
fn small_files_merge_tiered_by_live_rows_and_mostly_deleted_files_always() {
    // a compacted file is not rewritten to absorb a few small ones ...
    let few = vec![file("a", 10, 1, 0), file("b", 10, 1, 0), file("big", 5_000, 100, 0)];
    assert_eq!(picked(few), vec![vec!["a", "b"]]);
    // ... nor when they are large in bytes (footers) but hold few rows ...
    let footers = vec![
        file("a", 2_000, 2, 0),
        file("b", 2_000, 2, 0),
        file("c", 2_000, 2, 0),
        file("big", 5_000, 100, 0),
    ];
    assert_eq!(picked(footers), vec![vec!["a", "b", "c"]]);
    // ... only once their live rows add up to half of its own
    let enough = vec![
        file("a", 1_500, 30, 0),
        file("b", 1_000, 20, 0),
        file("big", 5_000, 100, 0),
    ];
    assert_eq!(picked(enough), vec![vec!["b", "a", "big"]]);
    // rows a deletion vector hides do not count
    let hidden = vec![
        file("a", 1_500, 30, 0),
        file("b", 1_000, 20, 0),
        file("big", 5_000, 160, 10),
    ];
    assert_eq!(picked(hidden), vec![vec!["b", "a"]]);
    // a file a fifth deleted is rewritten whatever its size, and takes the small ones along
    let deleted = vec![file("a", 10, 1, 0), file("huge", 50_000, 100, 30)];
    assert_eq!(picked(deleted), vec![vec!["a", "huge"]]);
    // one small clean file alone: nothing to gain
    assert!(picked(vec![file("a", 10, 1, 0), file("big", 5_000, 100, 0)]).is_empty());
}
