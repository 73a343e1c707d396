//! Compaction: rewrites files whose deleted share or small size passes a threshold, binning
//! them into files of about the target size.
//!
//! Invariants:
//! - a compaction commit holds only `remove`s (dataChange = false) of the files it read and
//!   `add`s (dataChange = false) of their LIVE rows, deletion vectors applied — it never
//!   changes what a query returns;
//! - it commits against the snapshot it read; a concurrent commit that touched any of those
//!   files (a writer growing a deletion vector re-adds the same path) makes Delta's conflict
//!   check reject the compaction, which then gives up for this round — so a row deleted
//!   concurrently can never come back;
//! - removed files stay on storage for time travel until `vacuum`.

use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, LogicalFileView};
use deltalake::protocol::DeltaOperation;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::files;

/// When a file is worth rewriting, and how big the new files are.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct CompactionOptions {
    /// Rewrite a file once this share of its rows is deleted (deletion vectors).
    pub deleted_fraction: f64,
    /// Files smaller than this are binned together.
    pub small_file_bytes: u64,
    /// Size of the files compaction writes.
    pub target_file_bytes: u64,
    /// Stop picking more bins once this much time has been spent (inline compaction).
    pub max_seconds: u64,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        Self {
            deleted_fraction: 0.2,
            small_file_bytes: 8 * 1024 * 1024,
            target_file_bytes: 128 * 1024 * 1024,
            max_seconds: 30,
        }
    }
}

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub version: Option<u64>,
    pub files_removed: usize,
    pub files_added: usize,
    pub rows_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The commit lost a race with another writer; nothing changed.
    pub conflicted: bool,
}

fn deleted_rows(f: &LogicalFileView) -> u64 {
    f.deletion_vector_descriptor()
        .map_or(0, |d| d.cardinality.max(0) as u64)
}

/// Files worth rewriting, grouped into bins of about the target size.
fn pick(files: &[LogicalFileView], opts: &CompactionOptions) -> Vec<Vec<LogicalFileView>> {
    let mut candidates: Vec<&LogicalFileView> = files
        .iter()
        .filter(|f| {
            let rows = f.num_records().unwrap_or(0) as u64;
            let deleted = deleted_rows(f);
            let mostly_deleted = rows > 0 && deleted as f64 >= opts.deleted_fraction * rows as f64;
            mostly_deleted || (f.size() as u64) < opts.small_file_bytes
        })
        .collect();
    candidates.sort_by_key(|f| f.size());
    let mut bins: Vec<Vec<LogicalFileView>> = Vec::new();
    let mut current: Vec<LogicalFileView> = Vec::new();
    let mut size = 0u64;
    for f in candidates {
        if !current.is_empty() && size + f.size() as u64 > opts.target_file_bytes {
            bins.push(std::mem::take(&mut current));
            size = 0;
        }
        size += f.size() as u64;
        current.push(f.clone());
    }
    if !current.is_empty() {
        bins.push(current);
    }
    // A lone small file without deletes gains nothing from a rewrite.
    bins.retain(|b| b.len() > 1 || b.iter().any(|f| deleted_rows(f) > 0));
    bins
}

/// A compaction read and written but not committed yet.
pub struct PreparedCompaction {
    snapshot: deltalake::table::state::DeltaTableState,
    actions: Vec<Action>,
    report: CompactionReport,
    target_size: i64,
}

/// Compacts `table` once (latest snapshot), within `opts.max_seconds` for reading and writing.
pub async fn compact(table: &mut DeltaTable, opts: &CompactionOptions) -> Result<CompactionReport> {
    match prepare(table, opts).await? {
        Some(p) => commit(table, p).await,
        None => Ok(CompactionReport::default()),
    }
}

/// Reads the files worth compacting from the latest snapshot and writes their live rows to
/// new files; `None` when there is nothing to do.
pub async fn prepare(table: &mut DeltaTable, opts: &CompactionOptions) -> Result<Option<PreparedCompaction>> {
    table.update_state().await?;
    let snapshot = table.snapshot()?.clone();
    let schema = snapshot.snapshot().arrow_schema();
    let all: Vec<LogicalFileView> = snapshot.log_data().iter().collect();
    let bins = pick(&all, opts);
    let mut report = CompactionReport::default();
    let started = Instant::now();
    let mut actions = Vec::new();
    for bin in bins {
        if started.elapsed() > Duration::from_secs(opts.max_seconds) {
            break;
        }
        let mut live = Vec::new();
        for f in &bin {
            live.push(files::read_live(table, f, &schema).await?);
            report.bytes_read += f.size() as u64;
        }
        let data = arrow::compute::concat_batches(&schema, &live)?;
        let adds = if data.num_rows() > 0 {
            files::write(table, &data, Some(opts.target_file_bytes)).await?
        } else {
            Vec::new()
        };
        report.rows_written += data.num_rows();
        report.files_removed += bin.len();
        report.files_added += adds.len();
        report.bytes_written += adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
        actions.extend(bin.iter().map(|f| Action::Remove(f.remove_action(false))));
        actions.extend(adds.into_iter().map(|mut a| {
            a.data_change = false;
            Action::Add(a)
        }));
    }
    if actions.is_empty() {
        return Ok(None);
    }
    Ok(Some(PreparedCompaction {
        snapshot,
        actions,
        report,
        target_size: opts.target_file_bytes as i64,
    }))
}

/// Commits a prepared compaction against the snapshot it read. A conflict (a concurrent
/// commit touched the same files) is not an error: nothing changes and `conflicted` is set.
pub async fn commit(table: &mut DeltaTable, prepared: PreparedCompaction) -> Result<CompactionReport> {
    let PreparedCompaction {
        snapshot,
        actions,
        mut report,
        target_size,
    } = prepared;
    let op = DeltaOperation::Optimize {
        predicate: None,
        target_size,
    };
    // Delta's conflict check rebases over concurrent commits that touched other files and
    // rejects those that removed (re-added with a grown deletion vector) any file we read.
    let committed = CommitBuilder::default()
        .with_actions(actions)
        .build(Some(&snapshot), table.log_store(), op)
        .await;
    match committed {
        Ok(done) => {
            report.version = Some(done.version());
            table.state = Some(done.snapshot());
        }
        Err(e) => {
            tracing::info!(error = %e, "compaction lost a race with a concurrent commit; will retry later");
            report = CompactionReport {
                conflicted: true,
                ..CompactionReport::default()
            };
        }
    }
    Ok(report)
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
