//! Applying a [`ChangeBatch`] to a Delta table: one commit per batch.
//!
//! A commit holds one new data file per source partition the batch touched (each tagged with
//! its partition), the file actions for superseded rows, an optional `metaData` for added
//! columns, and one `txn` per stream partition whose version is the next offset to read. Rows
//! below a partition's `txn` version were applied before and are skipped, so re-applying any
//! batch is a no-op (exactly-once with the source's at-least-once).
//!
//! Several writers (workers of one consumer group, a compaction) commit to one table at once.
//! A commit that loses the race reads the winning commits ([`crate::log`]): when none of them
//! touched a file this commit removes or read, recorded offsets of the same partitions, or
//! changed the schema, the same actions are committed at the next version — nothing is
//! re-planned, nothing rebuilt; the winners are applied to the index as a patch. Otherwise the
//! batch is planned again against the patched index, and the files written for the lost plan
//! are deleted.
//!
//! Invariant: after every commit the index maps each key of the loaded partitions to its one
//! live row.

use std::collections::{HashMap, HashSet};

use arrow::datatypes::Field;
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, align};
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{Action, Add, MetadataExt, Remove, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use futures::StreamExt;

use crate::commit::{Outcome, commit_at};
use crate::error::{Result, TableError};
use crate::files;
use crate::index::FileEntry;
use crate::lake::Lake;
use crate::partitioning::Partitioning;
use crate::plan::{self, Context, Planned};
use crate::state::State;
use crate::txns::KnownOffsets;
use crate::{dv, evolve, log};

/// Data files of one commit written at once (one per source partition touched).
const WRITE_CONCURRENCY: usize = 8;

/// Table property holding the primary-key columns, comma separated.
pub const PRIMARY_KEY_PROPERTY: &str = "cormorant.primaryKey";
/// Table property: how many partitions the source stream had when the writers last checked.
pub const SOURCE_PARTITIONS_PROPERTY: &str = "cormorant.sourcePartitions";
/// Table property set to `true` once the source's partition count changed: keys may then
/// arrive on another partition than the one holding their row, and every writer indexes every
/// partition (correct, but the index no longer divides between workers).
pub const KEYS_MOVED_PROPERTY: &str = "cormorant.keysMoved";

/// What a delete does to its row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Keep the row, marked `__deleted = true` with its last known values.
    #[default]
    Soft,
    /// Remove the row.
    Hard,
}

/// How superseded rows leave the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Rewrite touched files at once.
    Cow,
    /// Mark superseded rows in deletion vectors.
    #[default]
    Mor,
}

#[derive(Clone, Debug, Default)]
pub struct WriterOptions {
    pub deletes: DeleteMode,
    pub mode: WriteMode,
    /// Look keys up in every partition (set when the topic's partition count changed before
    /// the table recorded it, e.g. a backfill of a topic whose partitions were added).
    pub keys_move_partitions: bool,
    /// Checkpoint interval and retentions, set as table properties.
    pub policy: crate::maintain::LogPolicy,
    /// Delta partition columns; fixed when the table is created.
    pub partitioning: Partitioning,
    /// Memory for the rows of the files this writer wrote last (`None`:
    /// [`DEFAULT_RECENT_ROWS_BYTES`]).
    pub recent_rows_bytes: Option<usize>,
    /// The table's description when it is not a CDC table (a view says what it computes).
    pub description: Option<String>,
    /// More table properties set at creation (a view records the SQL it was made from).
    pub properties: Vec<(String, String)>,
}

/// The default budget of [`WriterOptions::recent_rows_bytes`]. 64 MiB: on the 5M-event bench
/// (1M keys, 320 partitions) 256 MiB put the worker's peak at 1,093 MiB and 64 MiB at 839 MiB,
/// for 7% more CPU per event (21,200 against 22,725 events per CPU-second, one run each).
pub const DEFAULT_RECENT_ROWS_BYTES: usize = 64 * 1024 * 1024;

/// What one `apply` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The committed version, `None` when there was nothing new to commit.
    pub version: Option<u64>,
    pub rows_in: usize,
    pub rows_written: usize,
    pub rows_skipped: usize,
    pub files_added: usize,
    pub files_removed: usize,
    /// Bytes of the data files written.
    pub bytes_written: u64,
    /// Commits lost to other writers and re-made at a later version without a new plan.
    pub rebased: u32,
    /// Plans redone because another writer touched the same files or offsets.
    pub replanned: u32,
    /// Files read from storage for previous rows (soft deletes, TOASTed cells, rewrites).
    pub files_read: usize,
    /// Files whose previous rows were found in the writer's memory instead.
    pub files_recalled: usize,
}

/// Writes change batches into one table. One writer per table per process.
pub struct TableWriter {
    pub(crate) name: String,
    pub(crate) lake: Lake,
    pub(crate) table: DeltaTable,
    pub(crate) opts: WriterOptions,
    /// The table version `txns` and `state` reflect.
    pub(crate) version: Option<u64>,
    /// Recorded next offsets by `txn` app id (`None`: the table has none), as of `version`.
    pub(crate) txns: KnownOffsets,
    /// Keyed tables: schema, encoder and index of the loaded partitions, as of `version`.
    pub(crate) state: Option<State>,
    /// Whether the table's properties match `opts.policy` (checked on the first batch).
    pub(crate) policy_checked: bool,
    /// Tests: run once between planning's sync and the commit (another writer's commit).
    #[cfg(test)]
    pub(crate) race: Option<Race>,
}

/// What a test runs between a writer's sync and its commit.
#[cfg(test)]
pub(crate) type Race = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A data file written for a plan: its `add`, partition, rows and their keys.
struct NewFile {
    add: Add,
    partition: i32,
    rows: arrow::array::RecordBatch,
    keys: Vec<crate::keys::KeyId>,
}

/// A plan written to storage, ready to commit.
struct Written {
    actions: Vec<Action>,
    /// New files with the keys of their rows, by partition.
    files: Vec<NewFile>,
    /// New `add`s of files that keep a grown deletion vector.
    readded: Vec<(u32, Add, roaring::RoaringTreemap)>,
    rows: usize,
    bytes: u64,
}

impl Written {
    /// Deletes what was written for a plan that will never be committed.
    async fn discard(&self, store: &dyn object_store::ObjectStore) {
        use object_store::ObjectStoreExt;
        let adds: Vec<Add> = self.files.iter().map(|f| f.add.clone()).collect();
        files::discard(store, &adds).await;
        if let Some(d) = self.readded.first().and_then(|(_, a, _)| a.deletion_vector.as_ref())
            && let Ok(path) = dv::relative_path(d)
            && let Err(e) = store.delete(&object_store::path::Path::from(path)).await
        {
            tracing::debug!(error = %e, "could not delete an unused deletion vector");
        }
    }
}

impl TableWriter {
    /// A writer of table `name` (created by the first batch if it does not exist). An existing
    /// table partitioned otherwise than `opts` says is refused here, before anything is read.
    pub async fn open(lake: &Lake, name: &str, opts: WriterOptions) -> Result<Self> {
        let w = Self {
            name: name.to_string(),
            lake: lake.clone(),
            table: lake.table(name).await?,
            opts,
            version: None,
            txns: KnownOffsets::default(),
            state: None,
            policy_checked: false,
            #[cfg(test)]
            race: None,
        };
        if w.table.version().is_some() {
            w.check_partitioning()?;
        }
        Ok(w)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table: its schema, metadata and protocol are current; its version and files may
    /// lag this writer's own data commits (see [`crate::commit::commit_at`]) — use
    /// [`TableWriter::current_table`] to read its files.
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// The table at the version this writer last committed or saw.
    pub async fn current_table(&mut self) -> Result<&DeltaTable> {
        Ok(self.table_now().await?)
    }

    /// Brings the table's snapshot to the writer's version: the writer's own data commits
    /// leave it behind (a replay of the log per commit is what they save), so whatever reads
    /// the table's files or commits through delta-rs calls this first.
    pub(crate) async fn table_now(&mut self) -> Result<&mut DeltaTable> {
        if let Some(v) = self.version {
            self.table_now_at(v).await?;
        }
        Ok(&mut self.table)
    }

    async fn table_now_at(&mut self, v: u64) -> Result<()> {
        if self.table.version().is_some_and(|at| at < v) {
            self.table
                .update_incremental(Some(v))
                .await
                .map_err(crate::lake::log_read)?;
        }
        Ok(())
    }

    /// The next offset to read for a stream partition, as recorded in the table at the
    /// version this writer last saw.
    pub async fn next_offset(&mut self, app_id: &str) -> Result<Option<i64>> {
        self.sync().await?;
        self.txn(app_id).await
    }

    /// Number of indexed keys (live rows, soft-deleted included), if the index is loaded.
    pub fn indexed_keys(&self) -> Option<usize> {
        self.state
            .as_ref()
            .filter(|s| !s.index.partitions().is_empty())
            .map(|s| s.index.len())
    }

    /// Approximate heap bytes of the primary-key index, if loaded.
    pub fn index_heap_bytes(&self) -> Option<usize> {
        self.state.as_ref().map(|s| s.index.heap_bytes())
    }

    /// Bytes of recently written rows kept in memory for previous values.
    pub fn recent_rows_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.recent.bytes())
    }

    /// The partitions whose keys are indexed.
    pub fn loaded_partitions(&self) -> Vec<i32> {
        self.state.as_ref().map(|s| s.index.partitions()).unwrap_or_default()
    }

    pub(crate) async fn refresh(&mut self) -> Result<()> {
        if self.table.version().is_none() {
            // not created yet (maybe by another worker since): look without loading a missing log
            self.table = self.lake.table(&self.name).await?;
            return Ok(());
        }
        crate::lake::update_state(&mut self.table).await?;
        Ok(())
    }

    /// Compacts the file groups of the partitions this writer has loaded (its own, in a
    /// consumer group: members never compete for files) at once: a [`compaction_job`] run
    /// here and committed through [`finish_compaction`]. The worker runs the job on a task of
    /// its own instead, so batches keep committing meanwhile.
    ///
    /// [`compaction_job`]: TableWriter::compaction_job
    /// [`finish_compaction`]: TableWriter::finish_compaction
    pub async fn compact(&mut self, opts: &crate::CompactionOptions) -> Result<crate::CompactionReport> {
        self.sync().await?;
        let Some(job) = self.compaction_job(opts) else {
            return Ok(crate::CompactionReport::default());
        };
        match job.run().await? {
            Some(ready) => self.finish_compaction(ready).await,
            None => Ok(crate::CompactionReport::default()),
        }
    }

    /// Applies `batch` in one commit: one attempt. After a retryable error the writer can be
    /// used again, for the same batch too: the next apply first reads what the table holds
    /// (an ambiguous commit that was made is then found by its `txn` offsets, and skipped).
    /// The caller owns the retry policy, because only it knows the budget and the stop signal.
    pub async fn apply(&mut self, batch: &ChangeBatch) -> Result<Applied> {
        Ok(self.apply_guarded(batch, None).await?.unwrap_or_default())
    }

    /// Like [`TableWriter::apply`], but only while the table records `expected` as the next
    /// offset of `app_id`: `Ok(None)`, nothing committed, once another writer has moved it.
    /// For a writer whose rows were computed from the table's own rows at that offset (a
    /// view kept by arithmetic): landing on another writer's commit would build on rows it
    /// never saw.
    pub async fn apply_if(
        &mut self,
        batch: &ChangeBatch,
        app_id: &str,
        expected: Option<i64>,
    ) -> Result<Option<Applied>> {
        self.apply_guarded(batch, Some((app_id, expected))).await
    }

    async fn apply_guarded(
        &mut self,
        batch: &ChangeBatch,
        guard: Option<(&str, Option<i64>)>,
    ) -> Result<Option<Applied>> {
        self.sync().await?;
        if self.table.version().is_none() {
            if batch.columns.fields().is_empty() {
                return Ok(Some(Applied::default())); // nothing to create a table from yet
            }
            let source = batch.offsets.first().map(|o| o.stream.name().to_string());
            self.create(&batch.columns, &batch.key_columns, source.as_deref())
                .await?;
            self.sync().await?;
        }
        if !self.policy_checked {
            self.ensure_policy().await?;
        }
        if !self.guard_holds(guard).await? {
            return Ok(None);
        }
        let (txns, keep) = self.unapplied(&batch.positions, &batch.offsets).await?;
        if txns.is_empty() && keep.is_empty() {
            return Ok(Some(Applied {
                rows_in: batch.len(),
                rows_skipped: batch.len(),
                ..Applied::default()
            }));
        }
        if self.opts.mode == WriteMode::Mor {
            self.ensure_dv_feature().await?;
        }
        self.ensure_state().await?;
        let mut metadata = self.evolve(batch).await?;
        let mut parts: Vec<i32> = batch.partitions();
        if batch.kinds.contains(&ChangeKind::Truncate) {
            // a truncate deletes the rows of every partition, owned or not
            parts.extend(self.table_partitions()?);
        }
        self.load_partitions(&parts).await?;
        let mut applied = Applied {
            rows_in: batch.len(),
            ..Applied::default()
        };
        let (mut txns, mut keep) = (txns, keep);
        #[cfg(test)]
        if let Some(race) = self.race.take() {
            race().await;
        }
        loop {
            applied.rows_skipped = batch.len() - keep.len();
            match self
                .plan_and_commit(batch, &keep, &txns, metadata.clone(), &mut applied)
                .await?
            {
                Some(version) => {
                    applied.version = Some(version);
                    return Ok(Some(applied));
                }
                None => {
                    // another writer touched what this plan read: plan again, from what is
                    // now recorded
                    applied.replanned += 1;
                    if !self.guard_holds(guard).await? {
                        return Ok(None);
                    }
                    (txns, keep) = self.unapplied(&batch.positions, &batch.offsets).await?;
                    if txns.is_empty() && keep.is_empty() {
                        applied.rows_skipped = batch.len();
                        return Ok(Some(applied));
                    }
                    // the winner may have changed the schema (or made our change already)
                    metadata = self.evolve(batch).await?;
                    self.load_partitions(&parts).await?;
                }
            }
        }
    }

    /// Applies schema evolution for `batch`'s columns: a rewrite commit of its own when
    /// existing rows must change, else the new metadata to put in the batch's commit.
    async fn evolve(&mut self, batch: &ChangeBatch) -> Result<Option<Action>> {
        let fields: Vec<Field> = batch.columns.fields().iter().map(|f| f.as_ref().clone()).collect();
        let current = self.table.snapshot()?.snapshot().arrow_schema();
        let mut evolution = evolve::plan(&current, &fields).map_err(|reason| TableError::Schema {
            table: self.name.clone(),
            reason,
        })?;
        if !evolution.added.is_empty() {
            let md = self.table.snapshot()?.metadata().clone();
            let spec = Partitioning::of_table(md.partition_columns(), md.configuration())?;
            evolution.realize_partitions(&spec, md.partition_columns(), &self.name);
        }
        if evolution.rewrite {
            self.rewrite_for(&evolution).await?;
            self.sync().await?;
            self.ensure_state().await?;
            return Ok(None);
        }
        if evolution.is_noop() {
            return Ok(None);
        }
        tracing::info!(table = %self.name, added = ?evolution.added, "adding columns");
        let kernel: StructType = evolution.schema.as_ref().try_into_kernel()?;
        let md = self.table.snapshot()?.metadata().clone().with_schema(&kernel)?;
        if let Some(state) = self.state.as_mut() {
            state.set_schema(evolution.schema.clone());
        }
        Ok(Some(Action::Metadata(md)))
    }

    /// Plans, writes and commits; `None` when another writer's commit overlapped and the
    /// batch must be planned again.
    async fn plan_and_commit(
        &mut self,
        batch: &ChangeBatch,
        keep: &[usize],
        txns: &[SourceOffset],
        metadata: Option<Action>,
        applied: &mut Applied,
    ) -> Result<Option<u64>> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| TableError::NotFound(self.name.clone()))?;
        let aligned = ChangeBatch {
            data: align(&batch.data, &state.schema)?,
            ..batch.clone()
        };
        let keys = state.encoder.encode(&aligned.data)?;
        let store = self.table.log_store().object_store(None);
        let cx = Context {
            schema: &state.schema,
            encoder: &state.encoder,
            index: &state.index,
            recent: &state.recent,
            store: store.clone(),
            hard: self.opts.deletes == DeleteMode::Hard,
            cow: self.opts.mode == WriteMode::Cow,
            anywhere: state.keys_moved,
        };
        let planned = plan::plan(&cx, &aligned, keep, &keys).await?;
        let written = self.write(&planned, txns, metadata).await?;
        let app_ids: HashSet<String> = txns.iter().map(SourceOffset::app_id).collect();
        loop {
            let op = DeltaOperation::StreamingUpdate {
                output_mode: OutputMode::Append,
                query_id: format!("cormorant:{}", self.name),
                epoch_id: self.version.map_or(0, |v| v as i64 + 1),
            };
            match self.commit(&written.actions, op).await? {
                Outcome::Committed(version) => {
                    applied.rows_written = written.rows;
                    applied.files_added = written.files.len();
                    applied.bytes_written = written.bytes;
                    applied.files_removed = planned.dropped.len() + planned.vectors.len();
                    applied.files_read += planned.reads.from_storage;
                    applied.files_recalled += planned.reads.from_memory;
                    self.after_commit(version, &planned, written, txns);
                    return Ok(Some(version));
                }
                Outcome::Lost => {
                    if self.follow_winners(&planned.touched, &app_ids).await? {
                        written.discard(store.as_ref()).await;
                        return Ok(None);
                    }
                    applied.rebased += 1;
                }
            }
        }
    }

    /// Writes the plan's files (one per partition, concurrently) and deletion vectors (one
    /// object for the commit) and lists the commit's actions.
    async fn write(&self, planned: &Planned, txns: &[SourceOffset], metadata: Option<Action>) -> Result<Written> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| TableError::NotFound(self.name.clone()))?;
        let store = self.table.log_store().object_store(None);
        let mut actions: Vec<Action> = metadata.into_iter().collect();
        let now = chrono::Utc::now().timestamp_millis();
        // files leaving the table, and files re-added with a grown deletion vector
        let file = |id: &u32| -> Result<&FileEntry> {
            state
                .index
                .file(*id)
                .ok_or_else(|| TableError::Corrupt(format!("plan names file {id} the index does not hold")))
        };
        for id in &planned.dropped {
            actions.push(Action::Remove(remove_of(&file(id)?.add, now)));
        }
        let bitmaps: Vec<&roaring::RoaringTreemap> = planned.vectors.iter().map(|(_, b)| b).collect();
        let descriptors = dv::write_all(store.as_ref(), &bitmaps).await?;
        let mut readded = Vec::new();
        for ((id, bitmap), d) in planned.vectors.iter().zip(descriptors) {
            let old = &file(id)?.add;
            actions.push(Action::Remove(remove_of(old, now)));
            let add = Add {
                deletion_vector: Some(d),
                data_change: true,
                ..old.clone()
            };
            actions.push(Action::Add(add.clone()));
            readded.push((*id, add, bitmap.clone()));
        }
        // merge-on-read files are folded by compaction soon; copy-on-write rewrites are the
        // table's files until the next rewrite
        let kind = match self.opts.mode {
            WriteMode::Mor => files::Kind::Fresh,
            WriteMode::Cow => files::Kind::Lasting { target: None },
        };
        let writes = planned.outputs.iter().map(|(p, data)| async move {
            let written = files::write(&self.table, data, kind, Some(*p)).await?;
            let keys = state.encoder.encode(&written.rows)?;
            Ok::<_, TableError>((*p, written, keys))
        });
        // collected first: a stream over the lazy `map` is not provably `Send` (its closure's
        // borrow is higher-ranked), which the pipeline's spawned apply task needs
        let writes: Vec<_> = writes.collect();
        let mut out = Written {
            actions: Vec::new(),
            files: Vec::new(),
            readded,
            rows: 0,
            bytes: 0,
        };
        // bounded: every open Parquet writer holds zstd contexts and its pages (a commit over
        // 320 partitions wrote 320 files at once: ~110 MB of zstd contexts alone in heaptrack)
        let written: Vec<_> = futures::stream::iter(writes)
            .buffered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for r in written {
            let (p, written, keys) = r?;
            out.rows += keys.len();
            let mut start = 0;
            let data = &written.rows;
            for add in written.adds {
                let n = add_rows(&add).unwrap_or(keys.len() - start);
                out.bytes += add.size.max(0) as u64;
                actions.push(Action::Add(add.clone()));
                out.files.push(NewFile {
                    add,
                    partition: p,
                    rows: data.slice(start, n),
                    keys: keys[start..start + n].to_vec(),
                });
                start += n;
            }
        }
        actions.extend(txns.iter().map(|o| Action::Txn(txn(o, now))));
        out.actions = actions;
        Ok(out)
    }

    /// Commits at the version after the writer's, which its last sync found to be the table's
    /// latest (a commit made since is a lost race). A commit carrying new metadata brings the
    /// table's snapshot along at once; others leave it behind (see [`TableWriter::table_now`]).
    pub(crate) async fn commit(&mut self, actions: &[Action], op: DeltaOperation) -> Result<Outcome> {
        let base = match (self.version, self.table.version()) {
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => return Err(TableError::NotFound(self.name.clone())),
        };
        let outcome = commit_at(&self.table, base, actions, op).await?;
        if let Outcome::Committed(v) = outcome {
            if actions.iter().any(|a| matches!(a, Action::Metadata(_))) {
                // readers of the schema (this writer's after_commit among them) see it at once
                self.table_now_at(v).await?;
            }
            crate::maintain::after_commit(&self.table, v).await;
        }
        Ok(outcome)
    }

    /// After a lost race: reads the winning commits, applies them to offsets and index, and
    /// says whether they overlap a commit that touched `files` and records `app_ids` (then it
    /// must be planned again; else the same actions go to the next version).
    async fn follow_winners(&mut self, files: &HashSet<String>, app_ids: &HashSet<String>) -> Result<bool> {
        let from = self.version.map_or(0, |v| v + 1);
        crate::lake::update_state(&mut self.table).await?;
        let now = self.table.version().unwrap_or(0);
        let winners = log::read(self.table.log_store().as_ref(), from, now).await?;
        let overlap = winners.overlaps(files, app_ids);
        self.absorb(winners).await?;
        Ok(overlap)
    }

    /// The index, offsets and schema follow our own commit.
    fn after_commit(&mut self, version: u64, planned: &Planned, written: Written, txns: &[SourceOffset]) {
        for o in txns {
            self.txns.record(o.app_id(), o.next_offset);
        }
        self.version = Some(version);
        let Some(state) = self.state.as_mut() else { return };
        if let Ok(s) = self.table.snapshot() {
            state.set_schema(s.snapshot().arrow_schema());
        }
        state.index.drop_files(&planned.dropped);
        state.recent.forget(&planned.dropped);
        for (id, rows) in &planned.reads.whole {
            if !planned.dropped.contains(id) && rows.schema_ref() == &state.schema {
                state.recent.insert(*id, rows.clone());
            }
        }
        for (id, add, bitmap) in written.readded {
            state.recent.shrink(id, &bitmap);
            state.index.update_file(id, add, bitmap);
        }
        for (p, key) in &planned.removed_keys {
            state.index.remove(*p, *key);
        }
        for f in written.files {
            let entry = FileEntry {
                add: f.add,
                partition: f.partition,
                rows: f.keys.len() as u64,
                deleted: roaring::RoaringTreemap::new(),
            };
            let id = state.index.add_file(entry, &f.keys);
            if f.rows.schema_ref() == &state.schema {
                state.recent.insert(id, f.rows);
            }
        }
    }

    /// Against the offsets the table recorded: the `txn` offsets that move forward, and the
    /// indexes (ascending) of the rows not applied yet (at or past their partition's offset).
    async fn unapplied(
        &mut self,
        positions: &[Position],
        offsets: &[SourceOffset],
    ) -> Result<(Vec<SourceOffset>, Vec<usize>)> {
        let mut applied_to: HashMap<i32, i64> = HashMap::new();
        let mut txns = Vec::new();
        for o in offsets {
            let current = self.txn(&o.app_id()).await?.unwrap_or(-1);
            applied_to.insert(o.partition, current);
            if o.next_offset > current {
                txns.push(o.clone());
            }
        }
        let keep = positions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.offset >= applied_to.get(&p.partition).copied().unwrap_or(-1))
            .map(|(i, _)| i)
            .collect();
        Ok((txns, keep))
    }

    /// Whether the table still records the guard's offset (no guard: always).
    async fn guard_holds(&mut self, guard: Option<(&str, Option<i64>)>) -> Result<bool> {
        match guard {
            Some((app_id, expected)) => Ok(self.txn(app_id).await? == expected),
            None => Ok(true),
        }
    }

    /// Appends rows as they are (dead letters), skipping positions below the recorded offsets.
    /// `positions` and `offsets` belong to one stream (the worker appends per topic).
    pub async fn append(
        &mut self,
        data: &arrow::array::RecordBatch,
        positions: &[Position],
        offsets: &[SourceOffset],
    ) -> Result<Applied> {
        self.sync().await?;
        if self.table.version().is_none() {
            let schema = data.schema();
            let kernel: StructType = schema.as_ref().try_into_kernel()?;
            self.table = self
                .table
                .create()
                .with_table_name(&self.name)
                .with_columns(kernel.fields().cloned())
                .await?;
            self.sync().await?;
        }
        loop {
            let (txns, keep) = self.unapplied(positions, offsets).await?;
            let mask: Vec<bool> = (0..positions.len()).map(|i| keep.binary_search(&i).is_ok()).collect();
            let rows = arrow::compute::filter_record_batch(data, &arrow::array::BooleanArray::from(mask))?;
            if txns.is_empty() && rows.num_rows() == 0 {
                return Ok(Applied::default());
            }
            let adds = files::write(&self.table, &rows, files::Kind::Fresh, None).await?.adds;
            let now = chrono::Utc::now().timestamp_millis();
            let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
            // no plan depends on other rows: only the same partitions' offsets force a redo
            actions.extend(txns.iter().map(|o| Action::Txn(txn(o, now))));
            let app_ids: HashSet<String> = txns.iter().map(SourceOffset::app_id).collect();
            let op = DeltaOperation::Write {
                mode: deltalake::protocol::SaveMode::Append,
                partition_by: None,
                predicate: None,
            };
            loop {
                match self.commit(&actions, op.clone()).await? {
                    Outcome::Committed(version) => {
                        for o in &txns {
                            self.txns.record(o.app_id(), o.next_offset);
                        }
                        self.version = Some(version);
                        return Ok(Applied {
                            version: Some(version),
                            rows_in: rows.num_rows(),
                            rows_written: rows.num_rows(),
                            ..Applied::default()
                        });
                    }
                    Outcome::Lost => {
                        if self.follow_winners(&HashSet::new(), &app_ids).await? {
                            files::discard(self.table.log_store().object_store(None).as_ref(), &adds).await;
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The `remove` of a file's current `add` (it names the deletion vector being replaced).
pub(crate) fn remove_of(add: &Add, now: i64) -> Remove {
    Remove {
        path: add.path.clone(),
        data_change: true,
        deletion_timestamp: Some(now),
        extended_file_metadata: Some(true),
        partition_values: Some(add.partition_values.clone()),
        size: Some(add.size),
        tags: add.tags.clone(),
        deletion_vector: add.deletion_vector.clone(),
        base_row_id: add.base_row_id,
        default_row_commit_version: add.default_row_commit_version,
    }
}

fn txn(o: &SourceOffset, now: i64) -> Transaction {
    Transaction::new_with_last_update(o.app_id(), o.next_offset, Some(now))
}

pub(crate) fn add_rows(add: &Add) -> Option<usize> {
    let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref()?).ok()?;
    stats.get("numRecords")?.as_u64().map(|n| n as usize)
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
