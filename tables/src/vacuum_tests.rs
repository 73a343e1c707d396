//! Checkpoints, log expiry and vacuum on real tables: what they delete, what they keep, and
//! that every version inside the retention still reads exactly.

use std::time::Duration;

use super::vacuum;
use crate::maintain::LogPolicy;
use crate::test_support::*;
use crate::writer::{DeleteMode, TableWriter, WriteMode, WriterOptions};

async fn writer_with(fx: &Fixture, mode: WriteMode, policy: LogPolicy) -> TableWriter {
    let opts = WriterOptions {
        deletes: fx.deletes,
        mode,
        policy,
        ..Default::default()
    };
    TableWriter::open(&fx.lake, TABLE, opts).await.expect("writer opens")
}

fn log_files(fx: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fx.dir.path().join(TABLE).join("_delta_log"))
        .expect("log dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn table_files(fx: &Fixture, dv: bool) -> usize {
    std::fs::read_dir(fx.dir.path().join(TABLE))
        .expect("table dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("deletion_vector_") == dv)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .count()
}

/// Batch `i` of a stream that updates ten keys over and over (every batch supersedes rows).
fn churn(i: i64) -> change::ChangeBatch {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let changes: Vec<Change> = (0..3)
        .map(|k| {
            let offset = i * 3 + k;
            up(
                offset,
                ((i * 3 + k) % 10) as i32,
                names[(offset % 10) as usize],
                offset as i128,
            )
        })
        .collect();
    batch(&changes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_every_interval_and_expired_log_files_go() {
    let fx = Fixture::new(DeleteMode::Soft);
    let policy = LogPolicy {
        checkpoint_interval: Some(10),
        log_retention: Some(Duration::ZERO),
        deleted_file_retention: None,
    };
    let mut w = writer_with(&fx, WriteMode::Mor, policy).await;
    for i in 0..35 {
        apply(&mut w, &churn(i)).await;
    }
    crate::maintain::settle().await; // checkpoints are written beside the commits
    let version = w.current_table().await.expect("table").version().expect("version") as u64;
    let before = fx.rows().await;
    let log = log_files(&fx);
    let checkpoint = version / 10 * 10;
    assert!(
        log.contains(&format!("{checkpoint:020}.checkpoint.parquet")) && log.contains(&"_last_checkpoint".to_string()),
        "checkpoint of version {checkpoint} written: {log:?}"
    );
    let oldest_json = log.iter().find(|f| f.ends_with(".json")).expect("a commit file");
    assert_eq!(
        oldest_json,
        &format!("{checkpoint:020}.json"),
        "commits below the last checkpoint expired (retention 0): {log:?}"
    );
    assert!(
        log.iter().filter(|f| f.contains(".checkpoint.")).count() == 1,
        "older checkpoints expired too: {log:?}"
    );
    // a fresh reader starts from the checkpoint and sees the same rows
    assert_eq!(fx.rows().await, before);
    assert!(
        fx.lake.open(TABLE, Some(checkpoint - 1)).await.is_err(),
        "an expired version cannot be read"
    );
    let stats = crate::maintain::stats(w.table().log_store().root_url().as_str());
    assert_eq!(stats.last_checkpoint, Some(checkpoint));
    assert!(stats.log_files_removed > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_keeps_what_retained_versions_read_and_deletes_the_rest() {
    let fx = Fixture::new(DeleteMode::Soft);
    // checkpoints every 4 commits: tombstones come from a checkpoint and from commits after it
    let policy = LogPolicy {
        checkpoint_interval: Some(4),
        ..LogPolicy::default()
    };
    let mut w = writer_with(&fx, WriteMode::Mor, policy).await;
    for i in 0..6 {
        apply(&mut w, &churn(i)).await;
    }
    crate::maintain::settle().await; // checkpoints are written beside the commits
    let old_dvs = table_files(&fx, true);
    assert!(old_dvs >= 3, "deletion vectors written: {old_dvs}");
    // the horizon: everything above was superseded before it, everything below after it
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first_retained = w.current_table().await.expect("table").version().expect("version") as u64;
    // the retention of every vacuum below ends 0.5 s before this moment, however long the
    // commits and queries in between take (a fixed 1 s flaked on a loaded machine)
    let horizon = std::time::Instant::now();
    let retain = || Some(horizon.elapsed() + Duration::from_millis(500));
    for i in 6..10 {
        apply(&mut w, &churn(i)).await;
    }
    crate::maintain::settle().await; // checkpoints are written beside the commits
    let latest = w.current_table().await.expect("table").version().expect("version") as u64;
    assert!(
        log_files(&fx).iter().any(|f| f.contains(".checkpoint.")),
        "a checkpoint to read"
    );
    let mut expected = Vec::new();
    for v in first_retained..=latest {
        let t = fx.lake.open(TABLE, Some(v)).await.expect("version opens");
        expected.push(query_table(&t, ROWS_SQL).await);
    }

    let mut table = fx.lake.open(TABLE, None).await.expect("open");
    let dvs = table_files(&fx, true);
    let dry = vacuum(&mut table, retain(), true).await.expect("dry run");
    assert!(
        dry.dv_files > 0 && dry.files.len() > dry.dv_files,
        "old data and DV files found: {dry:?}"
    );
    assert_eq!(table_files(&fx, true), dvs, "a dry run deletes nothing");

    let done = vacuum(&mut table, retain(), false).await.expect("vacuum");
    assert_eq!(done.files, dry.files, "the run deletes what the dry run listed");
    for (path, _) in &done.files {
        assert!(!fx.dir.path().join(TABLE).join(path).exists(), "{path} deleted");
    }
    for (i, v) in (first_retained..=latest).enumerate() {
        let t = fx.lake.open(TABLE, Some(v)).await.expect("retained version opens");
        assert_eq!(
            query_table(&t, ROWS_SQL).await,
            expected[i],
            "version {v} reads exactly after vacuum"
        );
    }
    // the same horizon again: nothing left to delete
    let again = vacuum(&mut table, retain(), false).await.expect("vacuum again");
    assert!(again.files.is_empty(), "nothing left to delete: {again:?}");
    // a new commit after the vacuum commits still applies and reads
    apply(&mut w, &churn(10)).await;
    assert_eq!(fx.rows().await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_never_deletes_recent_files_and_refuses_a_retention_checkpoints_cannot_serve() {
    let fx = Fixture::new(DeleteMode::Hard);
    let mut w = writer_with(&fx, WriteMode::Cow, LogPolicy::default()).await;
    for i in 0..4 {
        apply(&mut w, &churn(i)).await;
    }
    crate::maintain::settle().await; // checkpoints are written beside the commits
    let files = table_files(&fx, false);
    let mut table = fx.lake.open(TABLE, None).await.expect("open");
    // superseded copy-on-write files exist, but they are newer than a one-hour horizon
    let r = vacuum(&mut table, Some(Duration::from_secs(3600)), false)
        .await
        .expect("vacuum");
    assert!(r.files.is_empty(), "{r:?}");
    assert_eq!(table_files(&fx, false), files);
    let e = vacuum(&mut table, Some(Duration::from_secs(30 * 86_400)), true)
        .await
        .expect_err("longer than the tombstone retention");
    assert!(e.to_string().contains("deletedFileRetentionDuration"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_due_checkpoint_is_never_lost_while_another_is_written() {
    let fx = Fixture::new(DeleteMode::Soft);
    let policy = LogPolicy {
        checkpoint_interval: Some(1), // every commit: due versions arrive while one is written
        log_retention: None,
        deleted_file_retention: None,
    };
    let mut w = writer_with(&fx, WriteMode::Mor, policy).await;
    for i in 0..25 {
        apply(&mut w, &churn(i)).await;
    }
    crate::maintain::settle().await;
    let version = w.current_table().await.expect("table").version().expect("version") as u64;
    let last: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fx.dir.path().join(TABLE).join("_delta_log/_last_checkpoint"))
            .expect("_last_checkpoint"),
    )
    .expect("json");
    assert_eq!(
        last["version"].as_u64(),
        Some(version),
        "the newest due checkpoint was written"
    );
}

/// A file whose deletion vector has not changed since before the horizon is still the table's:
/// its DV file is kept whether the snapshot vacuum reads comes from commits or from a
/// checkpoint (the add is then read back from the checkpoint's `add.deletionVector`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_deletion_vector_of_a_live_file_survives_vacuum_from_a_checkpoint() {
    let fx = Fixture::new(DeleteMode::Soft);
    let policy = LogPolicy {
        checkpoint_interval: Some(2),
        ..LogPolicy::default()
    };
    let mut w = writer_with(&fx, WriteMode::Mor, policy).await;
    let p0 = [up(0, 1, "a", 1), up(1, 2, "b", 2), up(2, 3, "c", 3)];
    apply(&mut w, &batch(&p0)).await;
    apply(&mut w, &batch(&[del(3, 1)])).await; // partition 0's file gets a DV
    apply(&mut w, &batch(&[del(4, 2)])).await; // and another: the first one is superseded
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let horizon = std::time::Instant::now();
    for i in 0..5 {
        // only partition 1 changes from here on
        let offset = i * 2;
        let changes = [
            up(offset, 10 + i as i32, "x", 1).p(1),
            up(offset + 1, 10 + i as i32, "y", 2).p(1),
        ];
        apply(&mut w, &batch(&changes)).await;
    }
    crate::maintain::settle().await;
    assert!(
        log_files(&fx).iter().any(|f| f.contains(".checkpoint.")),
        "{:?}",
        log_files(&fx)
    );
    let expected = fx.rows().await;
    let mut table = fx.lake.open(TABLE, None).await.expect("open");
    let done = vacuum(&mut table, Some(horizon.elapsed() + Duration::from_millis(300)), false)
        .await
        .expect("vacuum");
    assert!(!done.files.is_empty(), "the superseded DV file goes: {done:?}");
    assert_eq!(
        fx.rows().await,
        expected,
        "the latest version reads after vacuum: {done:?}"
    );
}
