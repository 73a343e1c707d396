//! What a writer knows about its table at one version, and how it follows the table.
//!
//! The writer keeps, at [`TableWriter`]'s `version`: the recorded `txn` offsets it looked up,
//! and (for keyed tables) the schema, the key encoder and the index of the partitions it
//! loaded. When the table moves — another worker, a compaction, a truncate — [`sync`] reads
//! only the commits in between ([`crate::log`]) and patches all of it: files removed leave the
//! index, files added to loaded partitions are indexed from their key columns. Nothing is
//! rebuilt from the whole table unless the log cannot be followed (expired commits) or the
//! key columns changed type.
//!
//! Invariant: `state.version == version` whenever a state exists, and both equal the version
//! of the snapshot the writer plans against.
//!
//! [`sync`]: TableWriter::sync

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use deltalake::kernel::Add;
use futures::StreamExt;
use object_store::ObjectStore;
use roaring::RoaringTreemap;

use crate::error::{Result, TableError};
use crate::files::{self, FileRef};
use crate::index::{FileEntry, Index, partition_of};
use crate::keys::{KeyEncoder, KeyId};
use crate::log::{self, Winners};
use crate::recent::RecentRows;
use crate::writer::{KEYS_MOVED_PROPERTY, PRIMARY_KEY_PROPERTY, TableWriter};
use crate::{compact, dv};

/// How many files are indexed at once (each on a task of its own, so on every core).
const INDEX_CONCURRENCY: usize = 16;

/// Schema, key encoder and index of a keyed table at one version.
pub(crate) struct State {
    pub(crate) schema: SchemaRef,
    pub(crate) encoder: Arc<KeyEncoder>,
    pub(crate) index: Index,
    /// Rows of the files this writer wrote last (previous values without reading storage).
    pub(crate) recent: RecentRows,
    /// Keys may live in another partition's file group than the one they arrive on (the
    /// source's partition count changed): every partition is indexed and looked up.
    pub(crate) keys_moved: bool,
}

impl State {
    /// Changes the table schema; rows kept in another schema are dropped with it.
    pub(crate) fn set_schema(&mut self, schema: SchemaRef) {
        if schema != self.schema {
            self.recent.clear();
            self.schema = schema;
        }
    }
}

/// An active file's keys and deletion vector, read for the index.
struct Indexed {
    add: Add,
    partition: i32,
    keys: Vec<KeyId>,
    deleted: RoaringTreemap,
}

async fn index_file(
    store: Arc<dyn ObjectStore>,
    add: Add,
    partition: i32,
    schema: SchemaRef,
    encoder: Arc<KeyEncoder>,
) -> Result<Indexed> {
    let batch = files::read(
        store.clone(),
        &FileRef::of(&add),
        &schema,
        Some(encoder.columns()),
        None,
    )
    .await?;
    let keys = encoder.encode(&batch)?;
    let deleted = match &add.deletion_vector {
        Some(d) => dv::read(store.as_ref(), d).await?,
        None => RoaringTreemap::new(),
    };
    Ok(Indexed {
        add,
        partition,
        keys,
        deleted,
    })
}

/// Reads the keys of `adds` concurrently, on every core.
async fn index_files(
    store: Arc<dyn ObjectStore>,
    adds: Vec<(Add, i32)>,
    schema: &SchemaRef,
    encoder: &Arc<KeyEncoder>,
) -> Result<Vec<Indexed>> {
    let tasks = adds
        .into_iter()
        .map(|(add, p)| tokio::spawn(index_file(store.clone(), add, p, schema.clone(), encoder.clone())));
    let done: Vec<_> = futures::stream::iter(tasks)
        .buffer_unordered(INDEX_CONCURRENCY)
        .collect()
        .await;
    done.into_iter()
        .map(|r| r.map_err(|e| TableError::Corrupt(format!("indexing task failed: {e}")))?)
        .collect()
}

fn add_indexed(index: &mut Index, files: Vec<Indexed>) {
    for f in files {
        let rows = f.keys.len() as u64;
        let entry = FileEntry {
            add: f.add,
            partition: f.partition,
            rows,
            deleted: f.deleted,
        };
        index.add_file(entry, &f.keys);
    }
}

impl TableWriter {
    /// Brings the writer to the table's latest version: reloads the snapshot, then patches
    /// offsets and index with the commits made since (see the module docs). When no other
    /// writer committed since, one listing of the log is all it costs: the snapshot is left
    /// behind the writer's own commits (see [`TableWriter::table_now`]).
    pub(crate) async fn sync(&mut self) -> Result<()> {
        if let Some(v) = self.version
            && self.table.version().is_some()
            && crate::lake::latest_version(&self.table, v).await.ok() == Some(v)
        {
            return Ok(());
        }
        self.refresh().await?;
        let Some(now) = self.table.version() else {
            self.forget();
            return Ok(());
        };
        match self.version {
            Some(v) if v == now => Ok(()),
            Some(v) if v < now => match log::read(self.table.log_store().as_ref(), v + 1, now).await {
                Ok(w) => self.absorb(w).await,
                Err(TableError::LogGap(reason)) => {
                    tracing::info!(table = %self.name, reason, "reloading the table state");
                    self.reload().await
                }
                Err(e) => Err(e),
            },
            _ => self.reload().await,
        }
    }

    /// Drops everything known about the table.
    fn forget(&mut self) {
        self.version = None;
        self.txns.clear();
        self.state = None;
    }

    /// Starts over at the current version, reloading the partitions that were loaded.
    async fn reload(&mut self) -> Result<()> {
        let loaded = self.state.as_ref().map(|s| s.index.partitions()).unwrap_or_default();
        self.forget();
        self.version = self.table.version();
        if !loaded.is_empty() {
            self.ensure_state().await?;
            self.load_partitions(&loaded).await?;
        }
        Ok(())
    }

    /// Applies commits other writers made (`w`) to offsets and index.
    pub(crate) async fn absorb(&mut self, w: Winners) -> Result<()> {
        let Some((_, to)) = w.range else { return Ok(()) };
        for (app, v) in &w.txns {
            self.txns.record(app.clone(), *v);
        }
        let untagged = w.added.values().any(|a| partition_of(a).is_none());
        let Some(state) = self.state.as_mut() else {
            self.version = Some(to);
            return Ok(());
        };
        if let Some(md) = &w.metadata {
            let schema = self.table.snapshot()?.snapshot().arrow_schema();
            let keys = md
                .configuration()
                .get(PRIMARY_KEY_PROPERTY)
                .cloned()
                .unwrap_or_default();
            let same_keys = keys.split(',').map(str::to_string).collect::<Vec<_>>() == state.encoder.columns()
                && state.encoder.columns().iter().all(|c| {
                    schema.field_with_name(c).ok().map(|f| f.data_type())
                        == state.schema.field_with_name(c).ok().map(|f| f.data_type())
                });
            let moved = md.configuration().get(KEYS_MOVED_PROPERTY).map(String::as_str) == Some("true");
            if !same_keys || untagged || moved != state.keys_moved && !self.opts.keys_move_partitions {
                return self.reload().await;
            }
            state.set_schema(schema);
        } else if untagged {
            return self.reload().await;
        }
        let gone: Vec<u32> = w.touched.iter().filter_map(|p| state.index.file_id(p)).collect();
        state.index.drop_files(&gone);
        state.recent.forget(&gone);
        let adds: Vec<(Add, i32)> = w
            .added
            .into_values()
            .filter_map(|a| partition_of(&a).map(|p| (a, p)))
            .filter(|(_, p)| state.index.is_loaded(*p))
            .collect();
        let (schema, encoder) = (state.schema.clone(), state.encoder.clone());
        let indexed = index_files(self.table.log_store().object_store(None), adds, &schema, &encoder).await?;
        if let Some(state) = self.state.as_mut() {
            add_indexed(&mut state.index, indexed);
        }
        self.version = Some(to);
        Ok(())
    }

    /// Creates the (empty) keyed state at the current version, first splitting files written
    /// before partition-owned file groups into per-partition files.
    pub(crate) async fn ensure_state(&mut self) -> Result<()> {
        if self.state.is_some() {
            return Ok(());
        }
        let snapshot = self.table_now().await?.snapshot()?;
        #[allow(deprecated)] // the Arrow-array replacement does not build Add actions
        let untagged = snapshot
            .log_data()
            .iter()
            .any(|f| partition_of(&f.add_action()).is_none());
        if untagged {
            tracing::info!(table = %self.name, "splitting files written before partition-owned file groups into one file group per source partition (once)");
            compact::split_untagged(&mut self.table).await?;
            self.forget();
            self.version = self.table.version();
        }
        let schema = self.table.snapshot()?.snapshot().arrow_schema();
        let encoder = KeyEncoder::new(&schema, &self.key_columns(), &self.name)?;
        let keys_moved =
            self.opts.keys_move_partitions || self.property(KEYS_MOVED_PROPERTY).as_deref() == Some("true");
        if keys_moved {
            tracing::info!(table = %self.name, "keys may have moved between source partitions: every partition is indexed");
        }
        self.state = Some(State {
            schema,
            encoder: Arc::new(encoder),
            index: Index::default(),
            recent: RecentRows::new(
                self.opts
                    .recent_rows_bytes
                    .unwrap_or(crate::writer::DEFAULT_RECENT_ROWS_BYTES),
            ),
            keys_moved,
        });
        Ok(())
    }

    /// Every source partition the table has files of.
    pub(crate) fn table_partitions(&self) -> Result<BTreeSet<i32>> {
        #[allow(deprecated)]
        Ok(self
            .table
            .snapshot()?
            .log_data()
            .iter()
            .filter_map(|f| partition_of(&f.add_action()))
            .collect())
    }

    /// Indexes the given partitions (those not loaded yet) from the table at the current
    /// version: the key columns of their files, in parallel.
    pub async fn load_partitions(&mut self, parts: &[i32]) -> Result<()> {
        self.ensure_state().await?;
        let mut parts: BTreeSet<i32> = parts.iter().copied().collect();
        if self.state.as_ref().is_some_and(|s| s.keys_moved) {
            self.table_now().await?;
            parts.extend(self.table_partitions()?);
        }
        let Some(state) = self.state.as_ref() else {
            return Ok(());
        };
        let wanted: BTreeSet<i32> = parts.into_iter().filter(|p| !state.index.is_loaded(*p)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let (schema, encoder) = (state.schema.clone(), state.encoder.clone());
        let started = std::time::Instant::now();
        let mut adds: Vec<(Add, i32)> = Vec::new();
        let mut rows: HashMap<i32, usize> = HashMap::new();
        #[allow(deprecated)]
        for f in self.table_now().await?.snapshot()?.log_data().iter() {
            let add = f.add_action();
            if let Some(p) = partition_of(&add).filter(|p| wanted.contains(p)) {
                *rows.entry(p).or_default() += f.num_records().unwrap_or(0);
                adds.push((add, p));
            }
        }
        let files = adds.len();
        let indexed = index_files(self.table.log_store().object_store(None), adds, &schema, &encoder).await?;
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        for p in &wanted {
            state.index.load(*p, rows.get(p).copied().unwrap_or(0));
        }
        add_indexed(&mut state.index, indexed);
        tracing::info!(
            table = %self.name,
            partitions = ?wanted,
            files,
            keys = state.index.len(),
            index_bytes = state.index.heap_bytes(),
            ms = started.elapsed().as_millis() as u64,
            "partitions indexed"
        );
        Ok(())
    }

    /// Drops the index of partitions this writer no longer owns.
    pub fn release_partitions(&mut self, keep: impl Fn(i32) -> bool) {
        if let Some(state) = self.state.as_mut() {
            for p in state.index.partitions() {
                if !keep(p) {
                    let files: Vec<u32> = state.index.files_of(p).map(|(id, _)| id).collect();
                    state.recent.forget(&files);
                    state.index.release(p);
                    tracing::info!(table = %self.name, partition = p, "partition index dropped");
                }
            }
        }
    }

    /// The recorded next offset of a stream partition (`txn` app id), looked up once per
    /// version change and then followed through the log.
    pub(crate) async fn txn(&mut self, app_id: &str) -> Result<Option<i64>> {
        self.txns.get(&self.table, app_id).await
    }
}
