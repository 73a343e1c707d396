//! Compaction beside ingest: the slow part (reading files, writing their live rows) runs on a
//! task of its own while batches keep committing; the writer then commits the result between
//! two batches and patches its index — ingest never waits for a rewrite and never re-plans
//! because of one.
//!
//! ```text
//! writer ──compaction_job()──▶ CompactionJob ──run() on its own task──▶ ReadyCompaction
//!   (the files and deletion vectors of its index, now)       (new files + their keys)
//! writer ◀──finish_compaction(ready), between batches──┘  carries deletes made meanwhile
//! ```
//!
//! While the job runs, ingest keeps growing deletion vectors on the very files being
//! compacted (on a merge-on-read upsert stream every file is touched by almost every batch, so
//! a compaction that gave up on any touched file would never finish). The job records each
//! source file's deletion vector as it read it; at commit the writer's index has the current
//! one, and every row deleted since is *carried*: its position in the source file maps to its
//! position in the new file (live rows are written in order), and the new file is added with a
//! deletion vector holding exactly those rows. A source file that left the table altogether
//! (all its rows deleted, a copy-on-write rewrite, a truncate) has all its rows carried.
//!
//! Invariants:
//! - a compaction commit never changes what a query returns: its `remove`s name the source
//!   files' CURRENT `add`s, its `add`s hold the rows that were live at read time minus those
//!   deleted since (dataChange = false on both);
//! - conflicts are resolved on the compaction side: a bin is dropped (its files deleted) when
//!   its partition was revoked, its rows were all deleted, or the table cannot take deletion
//!   vectors (copy-on-write) and something was deleted meanwhile; the next round retries;
//! - the index maps each key of a compacted row to its new location, computed from the keys
//!   the job encoded — nothing is re-read from storage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::DeltaOperation;
use roaring::RoaringTreemap;

use crate::commit::Outcome;
use crate::compact::{Candidate, CompactionOptions, CompactionReport, extent, pick};
use crate::error::Result;
use crate::files::{self, FileRef};
use crate::index::{FileEntry, Index};
use crate::keys::{KeyEncoder, KeyId};
use crate::writer::{TableWriter, add_rows, remove_of};

/// A source file as the job read it.
#[derive(Clone, Debug)]
struct Source {
    add: Add,
    /// Rows in the file, deleted ones included.
    rows: u64,
    /// Its deletion vector when the job was made.
    deleted: RoaringTreemap,
}

impl Source {
    fn live(&self) -> u64 {
        self.rows.saturating_sub(self.deleted.len())
    }
}

/// Files of one partition to rewrite into new files of about the target size.
struct JobBin {
    partition: i32,
    /// The Delta partition values every source (and so every output) holds.
    values: crate::partitioning::Values,
    sources: Vec<Source>,
}

/// A compaction of one writer's file groups, detached from the writer: `run` it anywhere.
pub struct CompactionJob {
    table: DeltaTable,
    schema: SchemaRef,
    encoder: Arc<KeyEncoder>,
    bins: Vec<JobBin>,
    opts: CompactionOptions,
}

/// One bin rewritten: the new files (live rows of the sources, in order) and their keys.
struct ReadyBin {
    partition: i32,
    sources: Vec<Source>,
    /// New files with their row counts, in row order.
    outputs: Vec<(Add, u64)>,
    /// The key of every row written, in order over `outputs`.
    keys: Vec<KeyId>,
}

/// A job's result, to be committed by the writer that made it ([`TableWriter::finish_compaction`]).
pub struct ReadyCompaction {
    schema: SchemaRef,
    bins: Vec<ReadyBin>,
    bytes_read: u64,
    target_size: i64,
}

impl ReadyCompaction {
    /// Deletes everything the job wrote (it will not be committed).
    pub async fn discard(self, table: &DeltaTable) {
        let adds: Vec<Add> = self.bins.into_iter().flat_map(|b| b.outputs).map(|(a, _)| a).collect();
        files::discard(table.log_store().object_store(None).as_ref(), &adds).await;
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }
}

impl CompactionJob {
    /// Reads the bins' live rows and writes them to new files, within `max_seconds` (bins not
    /// reached are left for the next round). `None` when nothing was rewritten.
    pub async fn run(self) -> Result<Option<ReadyCompaction>> {
        let started = Instant::now();
        let store = self.table.log_store().object_store(None);
        let mut ready = ReadyCompaction {
            schema: self.schema.clone(),
            bins: Vec::new(),
            bytes_read: 0,
            target_size: self.opts.target_file_bytes as i64,
        };
        for bin in self.bins {
            if started.elapsed() > Duration::from_secs(self.opts.max_seconds) {
                break;
            }
            let mut live = Vec::with_capacity(bin.sources.len());
            for s in &bin.sources {
                let rows = files::read(store.clone(), &FileRef::of(&s.add), &self.schema, None, None).await?;
                live.push(without(&rows, &s.deleted)?);
                ready.bytes_read += s.add.size.max(0) as u64;
            }
            let data = arrow::compute::concat_batches(&self.schema, &live)?;
            let written = files::write(
                &self.table,
                &data,
                files::Kind::Lasting {
                    target: Some(self.opts.target_file_bytes),
                },
                Some(bin.partition),
            )
            .await?;
            if written.adds.iter().any(|a| a.partition_values != bin.values) {
                // carried deletes map rows by position: a bin must not be regrouped
                files::discard(store.as_ref(), &written.adds).await;
                return Err(crate::error::TableError::Corrupt(format!(
                    "a compaction bin of partition values {:?} wrote files of other values",
                    bin.values
                )));
            }
            let keys = self.encoder.encode(&written.rows)?;
            let mut outputs = Vec::with_capacity(written.adds.len());
            let mut left = keys.len() as u64;
            for add in written.adds {
                let n = add_rows(&add).map_or(left, |n| n as u64);
                left = left.saturating_sub(n);
                outputs.push((add, n));
            }
            ready.bins.push(ReadyBin {
                partition: bin.partition,
                sources: bin.sources,
                outputs,
                keys,
            });
        }
        Ok((!ready.bins.is_empty()).then_some(ready))
    }
}

/// `rows` without the positions in `deleted`.
fn without(rows: &RecordBatch, deleted: &RoaringTreemap) -> Result<RecordBatch> {
    if deleted.is_empty() {
        return Ok(rows.clone());
    }
    let keep: BooleanArray = (0..rows.num_rows() as u64)
        .map(|i| Some(!deleted.contains(i)))
        .collect();
    Ok(filter_record_batch(rows, &keep)?)
}

/// A ready bin as it will be committed: the index ids of its sources still in the table, and
/// per new file the rows deleted since the job read its sources.
struct Carried {
    bin: usize,
    sources: Vec<u32>,
    /// Per output: its deleted rows (carried), `None` when the output holds no live row.
    outputs: Vec<Option<RoaringTreemap>>,
    /// Per output: the `add` committed (deletion vector descriptor included), once built.
    adds: Vec<Option<Add>>,
}

impl TableWriter {
    /// A compaction of the file groups this writer has loaded, picked from its index (`None`
    /// when nothing passes the thresholds). Its `run` needs no access to the writer.
    pub fn compaction_job(&self, opts: &CompactionOptions) -> Option<CompactionJob> {
        let state = self.state.as_ref()?;
        let deleted: HashMap<&str, (u64, &RoaringTreemap)> = state
            .index
            .files()
            .map(|(_, f)| (f.path(), (f.rows, &f.deleted)))
            .collect();
        let candidates = index_candidates(&state.index);
        let bins: Vec<JobBin> = pick(candidates, opts)
            .into_iter()
            .filter_map(|bin| {
                let partition = bin.first()?.partition?;
                let values = bin.first()?.add.partition_values.clone();
                let sources = bin
                    .into_iter()
                    .filter_map(|c| {
                        let (rows, deleted) = deleted.get(c.add.path.as_str())?;
                        Some(Source {
                            rows: *rows,
                            deleted: (*deleted).clone(),
                            add: c.add,
                        })
                    })
                    .collect();
                Some(JobBin {
                    partition,
                    values,
                    sources,
                })
            })
            .collect();
        if bins.is_empty() {
            return None;
        }
        Some(CompactionJob {
            table: self.table.clone(),
            schema: state.schema.clone(),
            encoder: state.encoder.clone(),
            bins,
            opts: opts.clone(),
        })
    }

    /// Files and bytes of the loaded partitions that pass the compaction thresholds.
    pub fn compaction_backlog(&self, opts: &CompactionOptions) -> (usize, u64) {
        match self.state.as_ref() {
            Some(state) => extent(&pick(index_candidates(&state.index), opts)),
            None => (0, 0),
        }
    }

    /// Commits a job's result at the table's next version, carrying the deletes made since
    /// the job read its files (see the module docs), and patches the index. Retries a lost
    /// race a few times; a compaction that cannot commit is discarded, never ingest.
    pub async fn finish_compaction(&mut self, ready: ReadyCompaction) -> Result<CompactionReport> {
        let store = self.table.log_store().object_store(None);
        for _ in 0..5 {
            self.sync().await?;
            let dv_ok = self.has_dv_feature();
            let Some(state) = self.state.as_ref() else { break };
            if state.schema != ready.schema {
                break; // the rows were written in an older schema: the next round redoes them
            }
            let mut carried: Vec<Carried> = (0..ready.bins.len())
                .filter_map(|i| carry(&state.index, &ready.bins[i], i, dv_ok))
                .collect();
            if carried.is_empty() {
                break;
            }
            let (actions, dv_written) = self.compaction_actions(&ready, &mut carried).await?;
            let op = DeltaOperation::Optimize {
                predicate: None,
                target_size: ready.target_size,
            };
            match self.commit(&actions, op).await? {
                Outcome::Committed(version) => {
                    let report = self.after_compaction(version, &ready, &carried);
                    discard_unused(&self.table, ready, &carried).await;
                    return Ok(report);
                }
                Outcome::Lost => {
                    if let Some(path) = dv_written {
                        let _ = object_store::ObjectStoreExt::delete(store.as_ref(), &path.into()).await;
                    }
                }
            }
        }
        tracing::info!(table = %self.name, "compaction dropped (its files changed or the table moved on); the next round retries");
        ready.discard(&self.table).await;
        Ok(CompactionReport {
            conflicted: true,
            ..CompactionReport::default()
        })
    }

    /// The removes of the sources' current `add`s and the adds of the new files (with their
    /// carried deletion vectors, all in one new DV object, also kept in `carried`); also that
    /// object's path.
    async fn compaction_actions(
        &self,
        ready: &ReadyCompaction,
        carried: &mut [Carried],
    ) -> Result<(Vec<Action>, Option<String>)> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| crate::TableError::NotFound(self.name.clone()))?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions = Vec::new();
        let mut vectors: Vec<&RoaringTreemap> = Vec::new();
        for c in carried.iter() {
            for id in &c.sources {
                if let Some(f) = state.index.file(*id) {
                    let mut r = remove_of(&f.add, now);
                    r.data_change = false;
                    actions.push(Action::Remove(r));
                }
            }
            vectors.extend(c.outputs.iter().flatten().filter(|d| !d.is_empty()));
        }
        let store = self.table.log_store().object_store(None);
        let mut descriptors = crate::dv::write_all(store.as_ref(), &vectors).await?.into_iter();
        drop(vectors);
        let dv_path = match descriptors.as_slice().first() {
            Some(d) => Some(crate::dv::relative_path(d)?),
            None => None,
        };
        for c in carried.iter_mut() {
            let outputs = ready.bins[c.bin].outputs.iter().zip(&c.outputs);
            for (j, ((add, _), deleted)) in outputs.enumerate() {
                let Some(deleted) = deleted else { continue };
                let mut add = add.clone();
                add.data_change = false;
                if !deleted.is_empty() {
                    add.deletion_vector = descriptors.next();
                }
                actions.push(Action::Add(add.clone()));
                c.adds[j] = Some(add);
            }
        }
        Ok((actions, dv_path))
    }

    /// The index follows the committed compaction: sources out, new files in with their keys.
    fn after_compaction(&mut self, version: u64, ready: &ReadyCompaction, carried: &[Carried]) -> CompactionReport {
        self.version = Some(version);
        let mut report = CompactionReport {
            version: Some(version),
            bytes_read: ready.bytes_read,
            ..CompactionReport::default()
        };
        let Some(state) = self.state.as_mut() else {
            return report;
        };
        for c in carried {
            let bin = &ready.bins[c.bin];
            state.index.drop_files(&c.sources);
            state.recent.forget(&c.sources);
            report.files_removed += c.sources.len();
            let mut start = 0usize;
            for (((_, rows), deleted), add) in bin.outputs.iter().zip(&c.outputs).zip(&c.adds) {
                let n = *rows as usize;
                let keys = &bin.keys[start..(start + n).min(bin.keys.len())];
                start += n;
                let (Some(deleted), Some(add)) = (deleted, add) else {
                    continue;
                };
                let add = add.clone();
                report.files_added += 1;
                report.rows_written += n;
                report.carried += deleted.len();
                report.bytes_written += add.size.max(0) as u64;
                let entry = FileEntry {
                    add,
                    partition: bin.partition,
                    rows: *rows,
                    deleted: deleted.clone(),
                };
                state.index.add_file(entry, keys);
            }
        }
        report
    }
}

/// Every file of the index as a compaction candidate (one pass over the files).
fn index_candidates(index: &Index) -> Vec<Candidate> {
    index
        .files()
        .map(|(_, f)| Candidate {
            add: f.add.clone(),
            partition: Some(f.partition),
            rows: f.rows,
        })
        .collect()
}

/// How a ready bin commits now, given the index (the table's current state): `None` drops it.
fn carry(index: &Index, bin: &ReadyBin, i: usize, dv_ok: bool) -> Option<Carried> {
    if !index.is_loaded(bin.partition) {
        return None; // revoked: the new owner compacts it
    }
    let mut sources = Vec::new();
    let mut gone = RoaringTreemap::new(); // positions in the written rows deleted since
    let mut base = 0u64;
    for s in &bin.sources {
        let now = match index.file_id(&s.add.path) {
            Some(id) => {
                sources.push(id);
                index.file(id).map(|f| f.deleted.clone()).unwrap_or_default()
            }
            None => RoaringTreemap::from_iter(0..s.rows), // left the table: every row went
        };
        for r in now.iter().filter(|r| !s.deleted.contains(*r)) {
            gone.insert(base + r - s.deleted.rank(r));
        }
        base += s.live();
    }
    if sources.is_empty() || (!gone.is_empty() && !dv_ok) {
        return None;
    }
    // output j holds the written rows starts[j] .. starts[j] + rows
    let starts: Vec<u64> = bin
        .outputs
        .iter()
        .scan(0u64, |at, (_, rows)| {
            let s = *at;
            *at += rows;
            Some(s)
        })
        .collect();
    let mut deleted = vec![RoaringTreemap::new(); bin.outputs.len()];
    for g in &gone {
        let j = starts.partition_point(|s| *s <= g).saturating_sub(1);
        if let Some(d) = deleted.get_mut(j) {
            d.insert(g - starts[j]);
        }
    }
    let outputs = deleted
        .into_iter()
        .zip(&bin.outputs)
        .map(|(d, (_, rows))| (d.len() < *rows).then_some(d))
        .collect();
    Some(Carried {
        bin: i,
        sources,
        adds: vec![None; bin.outputs.len()],
        outputs,
    })
}

/// Deletes the files of bins and outputs that were not committed.
async fn discard_unused(table: &DeltaTable, ready: ReadyCompaction, carried: &[Carried]) {
    let used: HashSet<(usize, usize)> = carried
        .iter()
        .flat_map(|c| {
            c.outputs
                .iter()
                .enumerate()
                .filter(|(_, d)| d.is_some())
                .map(move |(j, _)| (c.bin, j))
        })
        .collect();
    let unused: Vec<Add> = ready
        .bins
        .into_iter()
        .enumerate()
        .flat_map(|(i, b)| b.outputs.into_iter().enumerate().map(move |(j, (a, _))| ((i, j), a)))
        .filter(|(at, _)| !used.contains(at))
        .map(|(_, a)| a)
        .collect();
    files::discard(table.log_store().object_store(None).as_ref(), &unused).await;
}

#[cfg(test)]
#[path = "compact_job_tests.rs"]
mod tests;
