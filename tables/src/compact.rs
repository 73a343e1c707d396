//! Compaction: rewrites files whose deleted share or small size passes a threshold, binning
//! them into files of about the target size — always within one source partition's file
//! group, so compaction keeps every file owned by one partition.
//!
//! Invariants:
//! - a compaction commit holds only `remove`s (dataChange = false) of the files it read and
//!   `add`s (dataChange = false, tagged with the partition) of their LIVE rows, deletion
//!   vectors applied — it never changes what a query returns;
//! - it commits at the version after the snapshot it read, or after commits that touched
//!   none of its files; a concurrent commit that touched any of them (a writer growing a
//!   deletion vector re-adds the same path) makes it give up for this round — so a row deleted
//!   concurrently can never come back;
//! - removed files stay on storage for time travel until `vacuum`.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int32Type, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use serde::{Deserialize, Serialize};

use crate::commit::{Outcome, try_commit};
use crate::error::Result;
use crate::files;
use crate::index::partition_of;
use crate::log;
use crate::writer::remove_of;

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
    /// Rows deleted by ingest while the compaction ran, carried into the new files' deletion
    /// vectors (compaction beside ingest).
    pub carried: u64,
    /// The commit lost a race with another writer; nothing changed.
    pub conflicted: bool,
}

/// An active file, as compaction sees it.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) add: Add,
    pub(crate) partition: Option<i32>,
    pub(crate) rows: u64,
}

impl Candidate {
    fn deleted(&self) -> u64 {
        self.add
            .deletion_vector
            .as_ref()
            .map_or(0, |d| d.cardinality.max(0) as u64)
    }

    fn mostly_deleted(&self, opts: &CompactionOptions) -> bool {
        self.rows > 0 && self.deleted() as f64 >= opts.deleted_fraction * self.rows as f64
    }

    /// Rows not deleted by its deletion vector (a file without row counts in its stats — not
    /// written by Cormorant — counts as empty: merged early, and counted from then on).
    fn live(&self) -> u64 {
        self.rows.saturating_sub(self.deleted())
    }

    pub(crate) fn size(&self) -> u64 {
        self.add.size.max(0) as u64
    }
}

fn candidates(table: &DeltaTable) -> Result<Vec<Candidate>> {
    #[allow(deprecated)] // the Arrow-array replacement does not build Add actions
    Ok(table
        .snapshot()?
        .log_data()
        .iter()
        .map(|f| {
            let add = f.add_action();
            Candidate {
                partition: partition_of(&add),
                rows: f.num_records().unwrap_or(0) as u64,
                add,
            }
        })
        .collect())
}

/// Files worth rewriting, grouped into bins of about the target size, each bin within one
/// file group: one source partition's files of one set of Delta partition values (a rewrite
/// then keeps its rows in order, which carrying deletes into the new files relies on).
///
/// A file whose deleted share passed the threshold is always rewritten. Small files are
/// merged size-tiered by LIVE ROWS: fewest first, a file joins only while its live rows are at
/// most twice those picked before it. Without that rule a compacted file below
/// `small_file_bytes` would be rewritten by every round to absorb a few new batch files —
/// O(partition) rows per round, which a long run pays again and again (the soak bench's
/// storage grew with the table). With it, a file is re-merged only once the newer files hold
/// half as many rows, so each row is rewritten O(log(partition rows / batch rows)) times.
/// Rows, not bytes: a batch file of a dozen rows is mostly Parquet footer and page index, so
/// twenty of them weighed as much as a settled file of thousands of rows, and every round
/// rewrote nearly the whole table (measured at 320 partitions: ~850k of 1M rows per round).
pub(crate) fn pick(files: Vec<Candidate>, opts: &CompactionOptions) -> Vec<Vec<Candidate>> {
    // a file group: one source partition's files of one set of Delta partition values
    type Group = (Option<i32>, Vec<(String, Option<String>)>);
    let mut groups: BTreeMap<Group, Vec<Candidate>> = BTreeMap::new();
    for f in files {
        if f.mostly_deleted(opts) || f.size() < opts.small_file_bytes {
            let mut values: Vec<_> = f.add.partition_values.clone().into_iter().collect();
            values.sort();
            groups.entry((f.partition, values)).or_default().push(f);
        }
    }
    let mut bins: Vec<Vec<Candidate>> = Vec::new();
    for (_, mut group) in groups {
        group.sort_by_key(Candidate::live);
        let mut picked = 0u64;
        group.retain(|f| {
            let take = f.mostly_deleted(opts) || picked == 0 || f.live() <= 2 * picked;
            if take {
                picked += f.live();
            }
            take
        });
        let mut current: Vec<Candidate> = Vec::new();
        let mut size = 0u64;
        for f in group {
            if !current.is_empty() && size + f.size() > opts.target_file_bytes {
                bins.push(std::mem::take(&mut current));
                size = 0;
            }
            size += f.size();
            current.push(f);
        }
        if !current.is_empty() {
            bins.push(current);
        }
    }
    // A lone small file without deletes gains nothing from a rewrite.
    bins.retain(|b| b.len() > 1 || b.iter().any(|f| f.deleted() > 0));
    bins
}

/// Files (and their bytes) of the table's latest snapshot that pass the thresholds: what the
/// next compaction rounds would rewrite.
pub fn backlog(table: &DeltaTable, opts: &CompactionOptions) -> Result<(usize, u64)> {
    Ok(extent(&pick(candidates(table)?, opts)))
}

/// Files and bytes of some bins.
pub(crate) fn extent(bins: &[Vec<Candidate>]) -> (usize, u64) {
    (
        bins.iter().map(Vec::len).sum(),
        bins.iter().flatten().map(Candidate::size).sum(),
    )
}

/// A compaction read and written but not committed yet.
pub struct PreparedCompaction {
    /// The version the files were read at.
    read_version: u64,
    actions: Vec<Action>,
    removed: HashSet<String>,
    report: CompactionReport,
    target_size: i64,
}

/// Compacts `table` once (latest snapshot), within `opts.max_seconds` for reading and writing.
pub async fn compact(table: &mut DeltaTable, opts: &CompactionOptions) -> Result<CompactionReport> {
    compact_partitions(table, opts, None).await
}

/// [`compact`] limited to the file groups of the source partitions `only` names (a worker
/// compacts the partitions it owns, so workers of one group never compete for files).
pub async fn compact_partitions(
    table: &mut DeltaTable,
    opts: &CompactionOptions,
    only: Option<&[i32]>,
) -> Result<CompactionReport> {
    match prepare(table, opts, only).await? {
        Some(p) => commit(table, p).await,
        None => Ok(CompactionReport::default()),
    }
}

/// The live rows of `bin` (one partition), rewritten to new tagged files; the actions.
async fn rewrite_bin(
    table: &DeltaTable,
    schema: &SchemaRef,
    bin: &[Candidate],
    target: u64,
    report: &mut CompactionReport,
) -> Result<Vec<Action>> {
    let store = table.log_store().object_store(None);
    let mut live = Vec::new();
    for f in bin {
        live.push(files::read_live(store.clone(), &f.add, schema).await?);
        report.bytes_read += f.size();
    }
    let data = arrow::compute::concat_batches(schema, &live)?;
    let mut adds = Vec::new();
    for (p, rows) in by_partition(bin[0].partition, &data)? {
        adds.extend(
            files::write(table, &rows, files::Kind::Lasting { target: Some(target) }, Some(p))
                .await?
                .adds,
        );
    }
    report.rows_written += data.num_rows();
    report.files_removed += bin.len();
    report.files_added += adds.len();
    report.bytes_written += adds.iter().map(|a| a.size.max(0) as u64).sum::<u64>();
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions: Vec<Action> = bin
        .iter()
        .map(|f| {
            let mut r = remove_of(&f.add, now);
            r.data_change = false;
            Action::Remove(r)
        })
        .collect();
    actions.extend(adds.into_iter().map(|mut a| {
        a.data_change = false;
        Action::Add(a)
    }));
    Ok(actions)
}

/// The rows of a bin per source partition: all of them for a tagged group; for files written
/// before partition-owned file groups, split by each row's `__kafka_partition` (0 when null).
fn by_partition(tag: Option<i32>, data: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>> {
    if let Some(p) = tag {
        return Ok(vec![(p, data.clone())]);
    }
    let Some(col) = data.column_by_name(change::PARTITION) else {
        return Ok(vec![(0, data.clone())]);
    };
    let parts = col.as_primitive::<Int32Type>();
    let values: Vec<i32> = (0..parts.len())
        .map(|i| if parts.is_null(i) { 0 } else { parts.value(i) })
        .collect();
    let mut distinct = values.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut out = Vec::new();
    for p in distinct {
        let mask: BooleanArray = values.iter().map(|v| Some(*v == p)).collect();
        out.push((p, filter_record_batch(data, &mask)?));
    }
    Ok(out)
}

/// Reads the files worth compacting from the latest snapshot and writes their live rows to
/// new files; `None` when there is nothing to do.
pub async fn prepare(
    table: &mut DeltaTable,
    opts: &CompactionOptions,
    only: Option<&[i32]>,
) -> Result<Option<PreparedCompaction>> {
    crate::lake::update_state(table).await?;
    let read_version = table.version().unwrap_or(0);
    let schema = table.snapshot()?.snapshot().arrow_schema();
    let mut files = candidates(table)?;
    if let Some(only) = only {
        files.retain(|f| f.partition.is_some_and(|p| only.contains(&p)));
    }
    let bins = pick(files, opts);
    let mut report = CompactionReport::default();
    let started = Instant::now();
    let mut actions = Vec::new();
    let mut removed = HashSet::new();
    for bin in bins {
        if started.elapsed() > Duration::from_secs(opts.max_seconds) {
            break;
        }
        removed.extend(bin.iter().map(|f| f.add.path.clone()));
        actions.extend(rewrite_bin(table, &schema, &bin, opts.target_file_bytes, &mut report).await?);
    }
    if actions.is_empty() {
        return Ok(None);
    }
    Ok(Some(PreparedCompaction {
        read_version,
        actions,
        removed,
        report,
        target_size: opts.target_file_bytes as i64,
    }))
}

/// Commits a prepared compaction after the version it read, or after later commits that
/// touched none of its files. A conflict is not an error: nothing changes, `conflicted` is set
/// and the files it wrote are deleted.
pub async fn commit(table: &mut DeltaTable, prepared: PreparedCompaction) -> Result<CompactionReport> {
    let PreparedCompaction {
        read_version,
        actions,
        removed,
        mut report,
        target_size,
    } = prepared;
    let op = DeltaOperation::Optimize {
        predicate: None,
        target_size,
    };
    let mut seen = read_version;
    if table.version() != Some(read_version) {
        table.load_version(read_version).await?;
    }
    loop {
        match try_commit(table, &actions, op.clone()).await? {
            Outcome::Committed(v) => {
                report.version = Some(v);
                return Ok(report);
            }
            Outcome::Lost => {
                crate::lake::update_state(table).await?;
                let now = table.version().unwrap_or(seen);
                let winners = log::read(table.log_store().as_ref(), seen + 1, now).await?;
                seen = now;
                if winners.overlaps(&removed, &HashSet::new()) {
                    tracing::info!("compaction lost a race with a commit that touched its files; will retry later");
                    let adds: Vec<Add> = actions
                        .iter()
                        .filter_map(|a| match a {
                            Action::Add(add) => Some(add.clone()),
                            _ => None,
                        })
                        .collect();
                    files::discard(table.log_store().object_store(None).as_ref(), &adds).await;
                    return Ok(CompactionReport {
                        conflicted: true,
                        ..CompactionReport::default()
                    });
                }
            }
        }
    }
}

/// Rewrites every file without a partition tag (written before partition-owned file groups)
/// into one file per source partition, split by each row's `__kafka_partition`. Done once per
/// table, by the first writer that needs its index.
pub async fn split_untagged(table: &mut DeltaTable) -> Result<()> {
    for _ in 0..5 {
        crate::lake::update_state(table).await?;
        let untagged: Vec<Candidate> = candidates(table)?
            .into_iter()
            .filter(|c| c.partition.is_none())
            .collect();
        if untagged.is_empty() {
            return Ok(());
        }
        let schema = table.snapshot()?.snapshot().arrow_schema();
        let mut report = CompactionReport::default();
        let mut actions = Vec::new();
        for chunk in untagged.chunks(64) {
            actions.extend(rewrite_bin(table, &schema, chunk, 128 * 1024 * 1024, &mut report).await?);
        }
        let prepared = PreparedCompaction {
            read_version: table.version().unwrap_or(0),
            removed: untagged.iter().map(|c| c.add.path.clone()).collect(),
            actions,
            report,
            target_size: 128 * 1024 * 1024,
        };
        let r = commit(table, prepared).await?;
        if !r.conflicted {
            tracing::info!(
                files = r.files_removed,
                rows = r.rows_written,
                "files split into per-partition file groups"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
