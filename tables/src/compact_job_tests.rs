//! Compaction beside ingest: batches commit while a job rewrites the files they touch; the
//! result commits with the deletes carried, the index follows without reading storage, and
//! what a query returns never changes.

use crate::test_support::*;
use crate::writer::{DeleteMode, WriteMode};

/// A compaction job of everything `w` indexes, run to its result (not committed).
async fn run_job(w: &crate::TableWriter) -> crate::ReadyCompaction {
    let job = w.compaction_job(&eager()).expect("files to compact");
    job.run().await.expect("job runs").expect("rewrote files")
}

/// A reader's count of rows per key must be 1 (no row duplicated by a compaction).
async fn assert_one_row_per_key(fx: &Fixture) {
    let dup = fx.query("SELECT id FROM t GROUP BY id HAVING COUNT(*) > 1").await;
    assert!(dup.is_empty(), "keys with more than one row: {dup:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_made_while_a_job_runs_are_carried_into_the_new_files() {
    for deletes in [DeleteMode::Soft, DeleteMode::Hard] {
        let (fx, mut w) = mor_table_with_deletes(deletes).await;
        let ready = run_job(&w).await;
        // ingest goes on meanwhile: an update and a delete of rows the job just rewrote
        apply(&mut w, &batch(&[up(7, 3, "c2", 310), del(8, 1), up(9, 6, "f", 600)])).await;
        let expected = fx.rows().await;
        let r = w.finish_compaction(ready).await.expect("finish");
        assert!(
            !r.conflicted && r.version.is_some(),
            "ingest never makes it give up: {r:?}"
        );
        // the first file left the table meanwhile (all its rows superseded): its rows are
        // carried as deleted, the other two are removed by the compaction
        assert_eq!(r.files_removed, 2, "{r:?}");
        assert_eq!(
            fx.rows().await,
            expected,
            "{deletes:?}: the compaction changes nothing a query sees"
        );
        assert_one_row_per_key(&fx).await;
        let (adds, removes) = fx.log_actions(r.version.expect("version"));
        assert_eq!((adds.len(), removes.len()), (1, 2));
        // the index moved with it: updates and deletes of compacted keys land right
        apply(
            &mut w,
            &batch(&[up(10, 2, "b3", 220), del(11, 5), up(12, 3, "c3", 320)]),
        )
        .await;
        let rows = fx.rows().await;
        assert!(rows.iter().any(|r| r.starts_with("2|b3|")), "{rows:?}");
        assert!(rows.iter().any(|r| r.starts_with("3|c3|")), "{rows:?}");
        assert_one_row_per_key(&fx).await;
        // a fresh writer (index rebuilt from the table) agrees with the patched one
        let mut fresh = MODE.scope(WriteMode::Mor, fx.writer()).await;
        apply(&mut fresh, &batch(&[up(13, 6, "f2", 610)])).await;
        assert_one_row_per_key(&fx).await;
        assert_eq!(
            fresh.indexed_keys(),
            Some(if deletes == DeleteMode::Soft { 6 } else { 3 })
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_rows_were_all_deleted_removes_its_sources_and_adds_nothing() {
    let (fx, mut w) = mor_table_with_deletes(DeleteMode::Hard).await;
    let ready = run_job(&w).await;
    apply(&mut w, &batch(&[trunc(7)])).await;
    apply(&mut w, &batch(&[up(8, 9, "z", 900)])).await;
    let expected = fx.rows().await;
    let r = w.finish_compaction(ready).await.expect("finish");
    assert!(r.conflicted, "every source left the table: nothing to commit ({r:?})");
    assert_eq!(fx.rows().await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_on_write_gives_up_a_bin_that_changed_and_retries_next_round() {
    let fx = Fixture::new(DeleteMode::Soft);
    let mut w = MODE.scope(WriteMode::Cow, fx.writer()).await;
    apply(&mut w, &batch(&[up(0, 1, "a", 100), up(1, 2, "b", 200)])).await;
    apply(&mut w, &batch(&[up(2, 3, "c", 300)])).await;
    let ready = run_job(&w).await;
    apply(&mut w, &batch(&[up(3, 1, "a2", 110)])).await; // rewrites the first file
    let expected = fx.rows().await;
    let r = w.finish_compaction(ready).await.expect("finish");
    assert!(r.conflicted, "no deletion vectors on a copy-on-write table: {r:?}");
    assert_eq!(fx.rows().await, expected);
    let again = w.compact(&eager()).await.expect("next round");
    assert!(again.version.is_some() && !again.conflicted, "{again:?}");
    assert_eq!(fx.rows().await, expected);
    assert_one_row_per_key(&fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partition_is_left_to_its_new_owner() {
    let (fx, mut w) = mor_table_with_deletes(DeleteMode::Soft).await;
    let ready = run_job(&w).await;
    w.release_partitions(|p| p != 0);
    let expected = fx.rows().await;
    let r = w.finish_compaction(ready).await.expect("finish");
    assert!(r.conflicted && r.version.is_none(), "{r:?}");
    assert_eq!(fx.rows().await, expected);
    let files = std::fs::read_dir(fx.dir.path().join(TABLE))
        .expect("table dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        })
        .count();
    assert_eq!(files, 3, "the job's files were deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_counts_what_the_thresholds_pick() {
    let (_fx, mut w) = mor_table_with_deletes(DeleteMode::Soft).await;
    let (files, bytes) = w.compaction_backlog(&eager());
    assert_eq!(files, 3, "every file passes the eager thresholds");
    assert!(bytes > 0);
    w.compact(&eager()).await.expect("compacts");
    assert_eq!(w.compaction_backlog(&eager()), (0, 0), "one clean file left");
}
