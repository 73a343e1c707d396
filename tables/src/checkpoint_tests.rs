//! The streaming checkpoint on a real table: what readers get from it, how it is encoded, and
//! the hint that points to it.

use std::collections::BTreeSet;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::write_with;
use crate::maintain::LogPolicy;
use crate::test_support::*;
use crate::writer::{DeleteMode, TableWriter, WriteMode, WriterOptions};

/// A merge-on-read table whose commits supersede rows (deletion-vector re-adds, removes) and
/// never checkpoint by themselves.
async fn churned(fx: &Fixture, commits: i64) -> TableWriter {
    let opts = WriterOptions {
        deletes: fx.deletes,
        mode: WriteMode::Mor,
        policy: LogPolicy {
            checkpoint_interval: Some(10_000),
            log_retention: Some(Duration::from_secs(86_400)),
            deleted_file_retention: None,
        },
        ..Default::default()
    };
    let mut w = TableWriter::open(&fx.lake, TABLE, opts).await.expect("writer opens");
    let names = ["a", "b", "c", "d", "e"];
    for i in 0..commits {
        let changes: Vec<Change> = (0..4)
            .map(|k| {
                up(
                    i * 4 + k,
                    ((i + k) % 7) as i32,
                    names[(k % 5) as usize],
                    (i * 10 + k) as i128,
                )
            })
            .chain((i % 3 == 2).then(|| del(i * 4 + 3, (i % 7) as i32)))
            .collect();
        apply(&mut w, &batch(&changes)).await;
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_checkpoint_serves_a_reader_that_has_no_older_commit() {
    let fx = Fixture::new(DeleteMode::Hard);
    let mut w = churned(&fx, 24).await;
    let version = w.current_table().await.expect("table").version().expect("version") as u64;
    let live_files = live_files(&mut w).await as u64;
    let before = fx.rows().await;
    let written = write_with(w.table().log_store(), version, 4)
        .await
        .expect("checkpoint written")
        .expect("a new checkpoint");
    assert_eq!(written.adds, live_files, "{written:?}");
    assert!(
        written.actions > written.adds + 2,
        "tombstones, protocol and metadata too: {written:?}"
    );

    let log = fx.dir.path().join(TABLE).join("_delta_log");
    let file = std::fs::File::open(log.join(format!("{version:020}.checkpoint.parquet"))).expect("checkpoint file");
    assert_eq!(written.bytes, file.metadata().expect("size").len());
    let meta = SerializedFileReader::new(file).expect("parquet").metadata().clone();
    let groups = meta.row_groups();
    assert!(
        groups.len() > 1 && groups.iter().all(|g| g.num_rows() <= 4),
        "small row groups"
    );
    assert_eq!(groups.iter().map(|g| g.num_rows() as u64).sum::<u64>(), written.actions);
    assert!(matches!(groups[0].column(0).compression(), Compression::ZSTD(_)));

    let hint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(log.join("_last_checkpoint")).expect("hint")).expect("json");
    assert_eq!(hint["version"], version);
    assert_eq!(hint["size"], written.actions);
    assert_eq!(hint["numOfAddFiles"], written.adds);
    assert_eq!(hint["sizeInBytes"], written.bytes);

    // the kept tombstones protect exactly the files that all of them did
    let named_by_commits: BTreeSet<String> = (0..=version)
        .map(|v| std::fs::read_to_string(log.join(format!("{v:020}.json"))).expect("commit"))
        .collect::<Vec<String>>()
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|a| a.get("remove").cloned())
        .flat_map(|r| named(r["path"].as_str(), &r["deletionVector"]))
        .collect();
    assert_eq!(removes_in_checkpoint(&log, version), named_by_commits);

    // a reader can only start from the checkpoint once every commit up to it is gone
    for v in 0..=version {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).expect("commit file removed");
    }
    assert_eq!(fx.rows().await, before, "the checkpoint holds exactly the live files");
    assert!(
        write_with(w.table().log_store(), version, 4)
            .await
            .expect("no error")
            .is_none(),
        "an existing checkpoint is not written again"
    );
}

/// The data files and DV files a remove names, as `data:<path>` and `dv:<kind><encoded>`.
fn named(path: Option<&str>, dv: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = path.map(|p| format!("data:{p}")).into_iter().collect();
    if let (Some(kind), Some(encoded)) = (dv["storageType"].as_str(), dv["pathOrInlineDv"].as_str()) {
        out.push(format!("dv:{kind}{encoded}"));
    }
    out
}

fn removes_in_checkpoint(log: &std::path::Path, version: u64) -> BTreeSet<String> {
    let file = std::fs::File::open(log.join(format!("{version:020}.checkpoint.parquet"))).expect("checkpoint");
    let mut out = BTreeSet::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader")
    {
        let batch = batch.expect("batch");
        let remove = batch.column_by_name("remove").expect("remove column").as_struct();
        let paths = remove.column_by_name("path").expect("path").as_string::<i32>();
        let dv = remove.column_by_name("deletionVector").expect("dv").as_struct();
        let kinds = dv
            .column_by_name("storageType")
            .expect("storageType")
            .as_string::<i32>();
        let encoded = dv
            .column_by_name("pathOrInlineDv")
            .expect("pathOrInlineDv")
            .as_string::<i32>();
        for row in (0..remove.len()).filter(|r| remove.is_valid(*r)) {
            out.insert(format!("data:{}", paths.value(row)));
            if dv.is_valid(row) {
                out.insert(format!("dv:{}{}", kinds.value(row), encoded.value(row)));
            }
        }
    }
    out
}

/// Every partition's recorded offset read in one pass (the checkpoint's `txn` rows and the
/// commits after it) is what the kernel answers app id by app id — also once the commits
/// before the checkpoint are gone — and a fresh writer's offsets come from that pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_read_in_one_pass_match_the_kernel_per_app_id() {
    let fx = Fixture::new(DeleteMode::Hard);
    let mut w = churned(&fx, 0).await;
    // partitions 0..4 before the checkpoint, 2..6 after it (2 and 3 move on)
    for p in 0..4 {
        apply(&mut w, &batch(&[up(10 * i64::from(p), p, "a", 1).p(p)])).await;
    }
    let checkpointed = w.current_table().await.expect("table").version().expect("version") as u64;
    write_with(w.table().log_store(), checkpointed, 4)
        .await
        .expect("checkpoint written")
        .expect("a new checkpoint");
    for p in 2..6 {
        apply(&mut w, &batch(&[up(100 + i64::from(p), p, "b", 2).p(p)])).await;
    }
    let table = w.current_table().await.expect("table").clone();
    let latest = table.version().expect("version") as u64;
    let kernel = |table: deltalake::DeltaTable| async move {
        let mut out = Vec::new();
        for p in 0..8 {
            let v = table
                .snapshot()
                .expect("snapshot")
                .transaction_version(table.log_store().as_ref(), app_id(p))
                .await
                .expect("kernel lookup");
            out.push(v);
        }
        out
    };
    let one_pass = |at: u64| {
        let table = table.clone();
        async move {
            let all = crate::txns::all_txns(table.log_store().as_ref(), at, false)
                .await
                .expect("read")
                .expect("answered in one pass");
            (0..8).map(|p| all.get(&app_id(p)).copied()).collect::<Vec<_>>()
        }
    };
    let expected = vec![
        Some(1),
        Some(11),
        Some(103),
        Some(104),
        Some(105),
        Some(106),
        None,
        None,
    ];
    assert_eq!(kernel(table.clone()).await, expected);
    assert_eq!(one_pass(latest).await, expected);
    assert!(
        crate::txns::all_txns(table.log_store().as_ref(), checkpointed - 1, false)
            .await
            .expect("read")
            .is_none(),
        "a checkpoint past the version asked for: per app id"
    );
    assert!(
        crate::txns::all_txns(table.log_store().as_ref(), latest, true)
            .await
            .expect("read")
            .is_none(),
        "expiring transactions: per app id"
    );

    let log = fx.dir.path().join(TABLE).join("_delta_log");
    for v in 0..=checkpointed {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).expect("commit file removed");
    }
    assert_eq!(one_pass(latest).await, expected, "from the checkpoint's txn rows");
    let mut fresh = fx.writer().await;
    let mut offsets = Vec::new();
    for p in 0..8 {
        offsets.push(fresh.next_offset(&app_id(p)).await.expect("offset"));
    }
    assert_eq!(offsets, expected);
    assert!(fresh.txns.is_complete(), "read in one pass");
}
