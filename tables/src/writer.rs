//! Applying a [`ChangeBatch`] to a Delta table: one commit per batch.
//!
//! A commit holds the new data file, the file actions for superseded rows, an optional
//! `metaData` for added columns, and one `txn` per stream partition whose version is the next
//! offset to read. Rows below a partition's `txn` version were applied before and are skipped,
//! so re-applying any batch is a no-op (exactly-once with the source's at-least-once).
//!
//! Both modes share one path: [`resolve`](crate::resolve) finds, through the primary-key
//! index, the current rows a batch supersedes and builds each touched key's new row. Then
//! - merge-on-read: the new rows go to a new file and each superseded row's position is added
//!   to its file's deletion vector (`remove` + `add` of the same path with the grown vector; a
//!   file whose rows are all deleted is just removed);
//! - copy-on-write: the files holding superseded rows are rewritten at once, without them,
//!   into the same new file (MoR with the touched files compacted immediately).
//!
//! Invariant: after every commit the index maps each key of the table to its one live row.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, new_null_array};
use arrow::compute::interleave;
use arrow::datatypes::{Field, Schema, SchemaRef};
use connectors::change::{
    ChangeBatch, ChangeKind, DELETED, OP, Position, SourceOffset, align, is_meta_column, meta_fields,
};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, LogicalFileView, MetadataExt, StructType, TableFeatures, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, TableProperty};

use crate::error::{Result, TableError};
use crate::index::{KeyEncoder, PkIndex};
use crate::lake::Lake;
use crate::resolve::{Columns, Slots, Src, needs_previous, resolve};
use crate::{dv, evolve, files};

/// Table property holding the primary-key columns, comma separated.
pub const PRIMARY_KEY_PROPERTY: &str = "cormorant.primaryKey";

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

#[derive(Clone, Copy, Debug, Default)]
pub struct WriterOptions {
    pub deletes: DeleteMode,
    pub mode: WriteMode,
}

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
}

/// The index and schema as of one table version.
struct Loaded {
    version: u64,
    schema: SchemaRef,
    encoder: KeyEncoder,
    index: PkIndex,
}

/// Writes change batches into one table. One writer per table per process.
pub struct TableWriter {
    name: String,
    lake: Lake,
    table: DeltaTable,
    opts: WriterOptions,
    loaded: Option<Loaded>,
}

impl TableWriter {
    pub async fn open(lake: &Lake, name: &str, opts: WriterOptions) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            lake: lake.clone(),
            table: lake.table(name).await?,
            opts,
            loaded: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// The next offset to read for a stream partition, as recorded in the table.
    pub async fn next_offset(&self, app_id: &str) -> Result<Option<i64>> {
        let Ok(snapshot) = self.table.snapshot() else {
            return Ok(None);
        };
        Ok(snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await?)
    }

    /// Number of indexed keys (live rows, soft-deleted included), if the index is loaded.
    pub fn indexed_keys(&self) -> Option<usize> {
        self.loaded.as_ref().map(|l| l.index.len())
    }

    /// Approximate heap bytes of the primary-key index, if loaded.
    pub fn index_heap_bytes(&self) -> Option<usize> {
        self.loaded.as_ref().map(|l| l.index.heap_bytes())
    }

    async fn refresh(&mut self) -> Result<()> {
        if self.table.version().is_none() {
            // not created yet (maybe by another worker since): look without loading a missing log
            self.table = self.lake.table(&self.name).await?;
            return Ok(());
        }
        self.table.update_state().await?;
        Ok(())
    }

    /// Creates the table for `batch`'s columns.
    async fn create(&mut self, columns: &SchemaRef, key_columns: &[String]) -> Result<()> {
        let mut fields: Vec<Field> = columns.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(meta_fields());
        let kernel: StructType = (&Schema::new(fields)).try_into_kernel()?;
        let mut create = self
            .table
            .create()
            .with_table_name(&self.name)
            .with_columns(kernel.fields().cloned())
            .with_raise_if_key_not_exists(false);
        if !key_columns.is_empty() {
            create = create.with_configuration([(PRIMARY_KEY_PROPERTY, Some(key_columns.join(",")))]);
        }
        if self.opts.mode == WriteMode::Mor {
            // protocol reader 3 / writer 7 with the deletionVectors feature
            create = create.with_configuration_property(TableProperty::EnableDeletionVectors, Some("true"));
        }
        match create.await {
            Ok(t) => self.table = t,
            // a concurrent creator won: use its table
            Err(e) => {
                tracing::debug!(table = %self.name, error = %e, "create raced, reloading");
                self.table = self.lake.table(&self.name).await?;
                if self.table.version().is_none() {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn key_columns(&self) -> Vec<String> {
        self.table
            .snapshot()
            .ok()
            .and_then(|s| s.metadata().configuration().get(PRIMARY_KEY_PROPERTY).cloned())
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Builds the index from the current snapshot when it is missing or stale.
    async fn ensure_loaded(&mut self) -> Result<()> {
        let version = self.table.version();
        if self.loaded.as_ref().is_some_and(|l| Some(l.version) == version) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let snapshot = self.table.snapshot()?;
        let schema = snapshot.snapshot().arrow_schema();
        let encoder = KeyEncoder::new(&schema, &self.key_columns(), &self.name)?;
        let mut index = PkIndex::default();
        let key_cols: Vec<String> = encoder.columns().to_vec();
        let files: Vec<LogicalFileView> = snapshot.log_data().iter().collect();
        let store = self.table.log_store().object_store(None);
        for f in &files {
            let batch = files::read(&self.table, f, &schema, Some(&key_cols)).await?;
            let deleted = match f.deletion_vector_descriptor() {
                Some(d) => Some(dv::read(store.as_ref(), &d).await?),
                None => None,
            };
            index.add_file(&f.path(), encoder.encode(&batch)?, deleted)?;
        }
        tracing::info!(
            table = %self.name,
            version,
            keys = index.len(),
            files = files.len(),
            ms = started.elapsed().as_millis() as u64,
            "primary-key index built"
        );
        self.loaded = Some(Loaded {
            version: version.unwrap_or_default(),
            schema,
            encoder,
            index,
        });
        Ok(())
    }

    /// MoR tables need the deletionVectors feature; tables created as CoW get it on first use.
    async fn ensure_dv_feature(&mut self) -> Result<()> {
        let snapshot = self.table.snapshot()?;
        let has = snapshot
            .protocol()
            .writer_features()
            .is_some_and(|f| f.iter().any(|x| x.as_ref() == "deletionVectors"));
        if !has {
            tracing::info!(table = %self.name, "enabling deletion vectors (protocol 3/7) for merge-on-read");
            self.table = self
                .table
                .clone()
                .add_feature()
                .with_feature(TableFeatures::DeletionVectors)
                .with_allow_protocol_versions_increase(true)
                .await?;
        }
        Ok(())
    }

    /// Applies `batch` in one commit (retrying on commit conflicts).
    pub async fn apply(&mut self, batch: &ChangeBatch) -> Result<Applied> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_apply(batch).await {
                Err(e) if e.is_retryable() && attempt < 5 => {
                    tracing::warn!(table = %self.name, error = %e, attempt, "commit failed, reloading and retrying");
                    self.loaded = None;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_apply(&mut self, batch: &ChangeBatch) -> Result<Applied> {
        self.refresh().await?;
        if self.table.version().is_none() {
            if batch.columns.fields().is_empty() {
                return Ok(Applied::default()); // nothing to create a table from yet
            }
            self.create(&batch.columns, &batch.key_columns).await?;
        }
        let (txns, keep) = self.unapplied(&batch.positions, &batch.offsets).await?;
        let mut applied = Applied {
            rows_in: batch.len(),
            rows_skipped: batch.len() - keep.len(),
            ..Applied::default()
        };
        if txns.is_empty() && keep.is_empty() {
            return Ok(applied);
        }
        if self.opts.mode == WriteMode::Mor {
            self.ensure_dv_feature().await?;
        }
        let fields: Vec<Field> = batch.columns.fields().iter().map(|f| f.as_ref().clone()).collect();
        let current = self.table.snapshot()?.snapshot().arrow_schema();
        let evolution = evolve::plan(&current, &fields).map_err(|reason| TableError::Schema {
            table: self.name.clone(),
            reason,
        })?;
        if evolution.rewrite {
            self.rewrite_for(&evolution).await?;
        }
        self.ensure_loaded().await?;
        let new_columns = (!evolution.rewrite && !evolution.is_noop()).then(|| evolution.schema.clone());
        let metadata = match &new_columns {
            Some(schema) => {
                tracing::info!(table = %self.name, added = ?evolution.added, "adding columns");
                let kernel: StructType = schema.as_ref().try_into_kernel()?;
                let md = self.table.snapshot()?.metadata().clone().with_schema(&kernel)?;
                if let Some(l) = self.loaded.as_mut() {
                    l.schema = schema.clone();
                }
                Some(Action::Metadata(md))
            }
            None => None,
        };
        let plan = self.plan(batch, &keep).await?;
        let mut actions: Vec<Action> = Vec::new();
        actions.extend(metadata);
        let (adds, written_keys) = self.write(&plan.output).await?;
        applied.rows_written = plan.output.num_rows();
        applied.files_added = adds.len();
        applied.files_removed = plan.removed.len();
        actions.extend(plan.removed.iter().map(|f| Action::Remove(f.remove_action(true))));
        actions.extend(plan.readded.iter().cloned().map(Action::Add));
        actions.extend(adds.iter().cloned().map(Action::Add));
        let now = chrono::Utc::now().timestamp_millis();
        actions.extend(txns.iter().map(|o| Action::Txn(txn(o, now))));
        let base = self.table.version();
        let version = self.commit(actions).await?;
        applied.version = Some(version);
        if base.map(|b| b + 1) != Some(version) {
            // Another writer (compaction, a second worker) committed in between and the commit
            // was rebased over it: rebuild the index from the table rather than patch it.
            self.loaded = None;
            return Ok(applied);
        }
        // The index follows the commit.
        let loaded = self
            .loaded
            .as_mut()
            .ok_or_else(|| TableError::NotFound(self.name.clone()))?;
        loaded.index.forget_files(&plan.rewritten);
        for key in &plan.removed_keys {
            loaded.index.remove(key);
        }
        for (file, bitmap) in plan.vectors {
            loaded.index.set_deleted(file, bitmap);
        }
        let mut start = 0;
        for add in &adds {
            let n = add_rows(add).unwrap_or(written_keys.len() - start);
            let keys = written_keys[start..start + n].to_vec();
            loaded.index.add_file(&add.path, keys, None)?;
            start += n;
        }
        loaded.version = version;
        Ok(applied)
    }

    /// Applies a schema change that needs existing rows rewritten (a widened type, an added
    /// column with a default) in one commit of its own: new metadata, every live row rewritten
    /// in the new schema. Old versions keep their files and schema for time travel.
    async fn rewrite_for(&mut self, evolution: &evolve::Evolution) -> Result<()> {
        tracing::info!(
            table = %self.name,
            added = ?evolution.added,
            widened = ?evolution.widened,
            "schema change: rewriting existing rows in the new schema"
        );
        let snapshot = self.table.snapshot()?.clone();
        let old_schema = snapshot.snapshot().arrow_schema();
        let views: Vec<LogicalFileView> = snapshot.log_data().iter().collect();
        let mut live = Vec::new();
        for f in &views {
            let rows = files::read_live(&self.table, f, &old_schema).await?;
            live.push(align(&rows, &evolution.schema)?);
        }
        let data = arrow::compute::concat_batches(&evolution.schema, &live)?;
        let kernel: StructType = evolution.schema.as_ref().try_into_kernel()?;
        let metadata = snapshot.metadata().clone().with_schema(&kernel)?;
        let mut actions = vec![Action::Metadata(metadata)];
        actions.extend(views.iter().map(|f| Action::Remove(f.remove_action(true))));
        if data.num_rows() > 0 {
            let adds = files::write(&self.table, &data, Some(128 * 1024 * 1024)).await?;
            actions.extend(adds.into_iter().map(Action::Add));
        }
        let op = DeltaOperation::Write {
            mode: deltalake::protocol::SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        let done = CommitBuilder::default()
            .with_actions(actions)
            .build(Some(&snapshot), self.table.log_store(), op)
            .await?;
        self.table.state = Some(done.snapshot());
        self.loaded = None;
        Ok(())
    }

    async fn commit(&mut self, actions: Vec<Action>) -> Result<u64> {
        let snapshot = self.table.snapshot()?.clone();
        let op = DeltaOperation::StreamingUpdate {
            output_mode: OutputMode::Append,
            query_id: format!("cormorant:{}", self.name),
            epoch_id: snapshot.version() as i64 + 1,
        };
        let done = CommitBuilder::default()
            .with_actions(actions)
            .build(Some(&snapshot), self.table.log_store(), op)
            .await?;
        let version = done.version();
        self.table.state = Some(done.snapshot());
        Ok(version)
    }

    /// Writes `output` as one data file; returns its `add`s and the key of every written row.
    async fn write(&self, output: &RecordBatch) -> Result<(Vec<deltalake::kernel::Add>, Vec<Box<[u8]>>)> {
        if output.num_rows() == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let loaded = self
            .loaded
            .as_ref()
            .ok_or_else(|| TableError::NotFound(self.name.clone()))?;
        let keys = loaded.encoder.encode(output)?;
        Ok((files::write(&self.table, output, None).await?, keys))
    }

    /// Resolves the batch against the index and decides the file actions for the mode.
    async fn plan(&self, batch: &ChangeBatch, keep: &[usize]) -> Result<Plan> {
        let loaded = self
            .loaded
            .as_ref()
            .ok_or_else(|| TableError::NotFound(self.name.clone()))?;
        let schema = loaded.schema.clone();
        let data = align(&batch.data, &schema)?;
        let index = &loaded.index;
        let cols = Columns {
            count: schema.fields().len(),
            keys: loaded
                .encoder
                .columns()
                .iter()
                .filter_map(|c| schema.index_of(c).ok())
                .collect(),
            meta: (0..schema.fields().len())
                .filter(|c| {
                    let name = schema.field(*c).name();
                    is_meta_column(name) && name != OP && name != DELETED
                })
                .collect(),
            op_flags: [OP, DELETED].iter().filter_map(|c| schema.index_of(c).ok()).collect(),
        };
        let keys = loaded.encoder.encode(&data)?;
        let mut unavailable: HashMap<usize, Vec<usize>> = HashMap::new();
        for (r, c) in &batch.unavailable {
            if let Some(f) = batch.columns.fields().get(*c)
                && let Ok(ci) = schema.index_of(f.name())
            {
                unavailable.entry(*r).or_default().push(ci);
            }
        }
        let hard = self.opts.deletes == DeleteMode::Hard;
        let cow = self.opts.mode == WriteMode::Cow;
        let truncates = keep.iter().any(|i| batch.kinds[*i] == ChangeKind::Truncate);

        // Files to load: CoW rewrites every file holding a superseded row; MoR reads only the
        // files holding previous values that soft deletes and TOASTed cells need.
        let (truncate_needs_all, needy_rows) = needs_previous(batch, keep, hard);
        let mut load: Vec<u32> = if (cow && truncates) || truncate_needs_all {
            index.iter().map(|(_, l)| l.file).collect()
        } else if cow {
            keep.iter()
                .filter_map(|i| index.get(&keys[*i]))
                .map(|l| l.file)
                .collect()
        } else {
            needy_rows
                .iter()
                .filter_map(|i| index.get(&keys[*i]))
                .map(|l| l.file)
                .collect()
        };
        load.sort_unstable();
        load.dedup();
        let snapshot = self.table.snapshot()?;
        let files: HashMap<String, LogicalFileView> =
            snapshot.log_data().iter().map(|f| (f.path().to_string(), f)).collect();
        let view = |fid: u32| -> Result<&LogicalFileView> {
            let path = index.path(fid).unwrap_or_default();
            files.get(path).ok_or_else(|| TableError::Schema {
                table: self.name.clone(),
                reason: format!("indexed file {path} is not in the snapshot; the index is stale"),
            })
        };
        let mut sources: Vec<RecordBatch> = vec![data];
        let mut slot_files = HashMap::new();
        for fid in &load {
            slot_files.insert(*fid, sources.len());
            sources.push(files::read(&self.table, view(*fid)?, &schema, None).await?);
        }
        let null_slot = sources.len();
        let nulls: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect();
        sources.push(RecordBatch::try_new(schema.clone(), nulls)?);
        let deleted_slot = sources.len();
        let marker: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                OP => Arc::new(StringArray::from(vec!["d"])) as ArrayRef,
                DELETED => Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
                _ => new_null_array(f.data_type(), 1),
            })
            .collect();
        sources.push(RecordBatch::try_new(schema.clone(), marker)?);
        let slots = Slots {
            files: slot_files,
            null: null_slot,
            deleted: deleted_slot,
        };
        let res = resolve(batch, keep, &keys, index, &cols, &unavailable, hard, &slots);

        let mut superseded: HashMap<u32, Vec<u64>> = HashMap::new();
        for loc in &res.superseded {
            superseded.entry(loc.file).or_default().push(u64::from(loc.row));
        }
        let mut rows: Vec<Vec<Src>> = Vec::new();
        let mut removed = Vec::new();
        let mut readded = Vec::new();
        let mut rewritten = Vec::new();
        let mut vectors = Vec::new();
        let store = self.table.log_store().object_store(None);
        let mut touched: Vec<u32> = superseded.keys().copied().collect();
        touched.sort_unstable();
        for fid in touched {
            let f = view(fid)?;
            let mut bitmap = index.deleted(fid).cloned().unwrap_or_default();
            bitmap.extend(superseded[&fid].iter().copied());
            removed.push(f.clone());
            if cow {
                // keep every live row the batch did not supersede
                let slot = slots.files[&fid];
                rows.extend(
                    (0..sources[slot].num_rows())
                        .filter(|r| !bitmap.contains(*r as u64))
                        .map(|r| vec![(slot, r); cols.count]),
                );
                rewritten.push(fid);
            } else if f.num_records().is_some_and(|n| bitmap.len() >= n as u64) {
                rewritten.push(fid); // every row deleted: drop the file
            } else {
                let descriptor = dv::write(store.as_ref(), &bitmap).await?;
                #[allow(deprecated)] // the Arrow-array replacement does not build Add actions
                let mut add = f.add_action();
                add.deletion_vector = Some(descriptor);
                add.data_change = true;
                readded.push(add);
                vectors.push((fid, bitmap));
            }
        }
        rows.extend(res.rows);
        let mut columns = Vec::with_capacity(cols.count);
        for c in 0..cols.count {
            let arrays: Vec<&dyn Array> = sources.iter().map(|s| s.column(c).as_ref()).collect();
            let idx: Vec<(usize, usize)> = rows.iter().map(|r| r[c]).collect();
            columns.push(interleave(&arrays, &idx)?);
        }
        let output = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Plan {
            output,
            removed,
            readded,
            rewritten,
            vectors,
            removed_keys: res.removed_keys,
        })
    }

    /// Against the offsets the table recorded: the `txn` offsets that move forward, and the
    /// indexes (ascending) of the rows not applied yet (at or past their partition's offset).
    async fn unapplied(
        &self,
        positions: &[Position],
        offsets: &[SourceOffset],
    ) -> Result<(Vec<SourceOffset>, Vec<usize>)> {
        let mut applied_to: HashMap<i32, i64> = HashMap::new();
        let mut txns = Vec::new();
        for o in offsets {
            let current = self.next_offset(&o.app_id()).await?.unwrap_or(-1);
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

    /// Appends rows as they are (dead letters), skipping positions below the recorded offsets.
    /// `positions` and `offsets` belong to one stream (the worker appends per topic).
    pub async fn append(
        &mut self,
        data: &RecordBatch,
        positions: &[Position],
        offsets: &[SourceOffset],
    ) -> Result<Applied> {
        self.refresh().await?;
        if self.table.version().is_none() {
            let schema = data.schema();
            let kernel: StructType = schema.as_ref().try_into_kernel()?;
            self.table = self
                .table
                .create()
                .with_table_name(&self.name)
                .with_columns(kernel.fields().cloned())
                .await?;
        }
        let (txns, keep) = self.unapplied(positions, offsets).await?;
        let keep: Vec<bool> = (0..positions.len()).map(|i| keep.binary_search(&i).is_ok()).collect();
        let data = arrow::compute::filter_record_batch(data, &arrow::array::BooleanArray::from(keep))?;
        if txns.is_empty() && data.num_rows() == 0 {
            return Ok(Applied::default());
        }
        let adds = files::write(&self.table, &data, None).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        actions.extend(txns.iter().map(|o| Action::Txn(txn(o, now))));
        let version = self.commit(actions).await?;
        Ok(Applied {
            version: Some(version),
            rows_in: data.num_rows(),
            rows_written: data.num_rows(),
            ..Applied::default()
        })
    }
}

/// The file actions of one batch.
struct Plan {
    /// Rows to write to the new file.
    output: RecordBatch,
    /// Files whose current `add` is replaced or dropped.
    removed: Vec<LogicalFileView>,
    /// Re-added files with grown deletion vectors (MoR).
    readded: Vec<deltalake::kernel::Add>,
    /// File ids that leave the table (rewritten by CoW, or fully deleted).
    rewritten: Vec<u32>,
    /// New deletion vectors by file id.
    vectors: Vec<(u32, roaring::RoaringTreemap)>,
    /// Keys without a row any more.
    removed_keys: Vec<Box<[u8]>>,
}

fn txn(o: &SourceOffset, now: i64) -> Transaction {
    Transaction::new_with_last_update(o.app_id(), o.next_offset, Some(now))
}

fn add_rows(add: &deltalake::kernel::Add) -> Option<usize> {
    let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref()?).ok()?;
    stats.get("numRecords")?.as_u64().map(|n| n as usize)
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
