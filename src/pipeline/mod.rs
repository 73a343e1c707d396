//! The decode-and-apply pipeline: raw record batches in, Delta commits out.
//!
//! ```text
//! source ──RawBatch──▶ decode (every core) ──DecodedBatch──▶ apply: dead letters, then every
//!   (poll thread,        new schemas fetched,   bounded          table concurrently, one commit
//!    bounded channel)    batches side by side,  channel          each; offsets → Progress
//!                        handed on in order
//! ```
//!
//! Batch N+1 decodes while batch N writes and commits (and up to one batch per core decodes at
//! once); the channels hold one batch each, so
//! memory is bounded by a few batches and a slow lake slows the consumer (which pauses its
//! partitions) instead of growing queues. The same type serves `cormorant run` (fed by the
//! consumer group), `cormorant replay` (fed by a range reader) and the benchmarks (fed from
//! memory).
//!
//! Invariants:
//! - only partitions the [`Assignment`] owns are applied; a revoked partition's in-flight
//!   changes are abandoned (its new owner re-reads them from the table's offsets) and its index
//!   dropped;
//! - dead letters are committed to `_dlq` (with their own `txn` offsets) BEFORE the tables
//!   move past those records — a crash in between re-reads the batch, it never loses a record;
//! - a batch that cannot be applied stops the pipeline with an error; nothing is skipped.

mod apply;
mod compaction;
mod decode;
mod vacuum;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use connectors::kafka::{Assignment, RawBatch};
use connectors::registry::SchemaCache;
use connectors::{Decoder, SchemaGuard};
use tables::{Lake, TableWriter, WriterOptions};
use tokio::sync::mpsc;

use crate::config::{Config, TableConfig};

/// Retries of a table operation after retryable failures (backoff 0.4 s, 0.8 s, … 10 s: about
/// 30 s in all, long enough for an S3 brown-out, short enough that a dead store stops the
/// worker for its supervisor to see).
const RETRIES: u32 = 7;

/// The wait before retry `attempt` (from 1).
fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(200 << attempt.min(10)).min(std::time::Duration::from_secs(10))
}

/// Opens a table's writer, retrying retryable failures (a store brown-out at start) with
/// backoff; a stop ends the wait with the error.
async fn open_writer(
    lake: &Lake,
    name: &str,
    options: WriterOptions,
    stop: &AtomicBool,
) -> anyhow::Result<TableWriter> {
    let mut attempt = 0;
    loop {
        let error = match TableWriter::open(lake, name, options.clone()).await {
            Ok(w) => return Ok(w),
            Err(e) if e.is_retryable() && attempt < RETRIES => e,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("opening table {name}"))),
        };
        attempt += 1;
        let delay = backoff(attempt);
        tracing::warn!(table = name, attempt, of = RETRIES, retry_in = ?delay, %error, "opening a table failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::stop::requested(stop) => {
                return Err(anyhow::Error::new(error).context(format!("stopped while opening table {name}")));
            }
        }
    }
}

/// Name of the dead-letter table.
pub const DLQ_TABLE: &str = "_dlq";

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub batches: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub commits: u64,
}

/// Where the pipeline stands, shared with whoever feeds and watches it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Next offset applied per (topic, partition), by this pipeline.
    applied: Mutex<HashMap<(String, i32), i64>>,
    batches: AtomicU64,
    records: AtomicU64,
    dead_letters: AtomicU64,
    commits: AtomicU64,
}

impl Progress {
    /// `(topic, partition, next offset)` of everything applied so far.
    pub fn applied(&self) -> Vec<(String, i32, i64)> {
        lock(&self.applied)
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect()
    }

    /// The next offset this pipeline applied for one partition.
    pub fn applied_to(&self, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.applied).get(&(topic.to_string(), partition)).copied()
    }

    pub fn stats(&self) -> RunStats {
        RunStats {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
        }
    }

    fn advance(&self, topic: &str, partition: i32, next: i64) {
        let mut m = lock(&self.applied);
        let e = m.entry((topic.to_string(), partition)).or_insert(next);
        *e = (*e).max(next);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn options(cfg: &Config, t: &TableConfig) -> WriterOptions {
    WriterOptions {
        deletes: t.deletes,
        mode: t.mode,
        keys_move_partitions: t.keys_move_partitions,
        policy: cfg.log_policy(Some(t)),
        partitioning: t.partitioning(),
        recent_rows_bytes: cfg
            .lake
            .recent_rows_mib
            .map(|m| (m as usize).saturating_mul(1024 * 1024)),
        description: None,
        properties: Vec::new(),
    }
}

/// Table schemas as of their last commit: a record whose schema a table cannot take goes to
/// the dead-letter table with the reason instead of stopping the worker.
type Schemas = Arc<Mutex<HashMap<String, SchemaRef>>>;

fn schema_guard(schemas: &Schemas, cfg: &Config) -> SchemaGuard {
    let known = schemas.clone();
    // derived partition columns by table: a source column of the same name cannot be kept
    let derived: HashMap<String, tables::partitioning::Partitioning> = cfg
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.partitioning()))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    Arc::new(move |table: &str, fields: &[arrow::datatypes::Field]| {
        if let Some(reason) = derived
            .get(table)
            .and_then(|p| p.clash(&arrow::datatypes::Schema::new(fields.to_vec())))
        {
            return Err(reason);
        }
        let mut known = lock(&known);
        match known.get(table) {
            Some(schema) => tables::evolve::plan(schema, fields).map(|_| ()),
            None => {
                // a table this batch creates: its first schema is the one the rest must fit
                let columns = arrow::datatypes::Schema::new(fields.to_vec());
                known.insert(table.to_string(), change::with_meta(&columns));
                Ok(())
            }
        }
    })
}

/// Decodes and applies batches of raw records; see the module docs.
pub struct Pipeline {
    cfg: Arc<Config>,
    lake: Lake,
    decoder: Arc<Decoder>,
    writers: HashMap<String, TableWriter>,
    /// the config of every table a writer was opened for
    configs: HashMap<String, TableConfig>,
    dlq: TableWriter,
    schemas: Schemas,
    assignment: Arc<Assignment>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    /// set when the user asked to stop (not when a run is done, `--until-caught-up`): then
    /// view steps under way are cut short instead of finished
    user_stop: Arc<AtomicBool>,
    /// compaction jobs beside ingest
    compactions: compaction::Compactions,
    vacuums: vacuum::Vacuums,
    /// `[[views]]` kept up to date after their source tables' commits
    views: crate::views::Background,
    /// tables that committed during the current batch (their views step after it)
    committed: Vec<String>,
    /// a stop came while a batch waited to be retried: apply nothing more
    halted: bool,
}

impl Pipeline {
    /// A pipeline writing `tables` (more appear as `kafka.topic_pattern` topics show up),
    /// applying only what `assignment` owns.
    pub async fn new(
        cfg: &Config,
        lake: &Lake,
        tables: &[TableConfig],
        assignment: Arc<Assignment>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let cache = Arc::new(SchemaCache::new(&cfg.registry.settings())?);
        let schemas: Schemas = Arc::new(Mutex::new(HashMap::new()));
        let mut writers = HashMap::new();
        let configs = tables.iter().map(|t| (t.name.clone(), t.clone())).collect();
        for t in tables {
            let w = open_writer(lake, &t.name, options(cfg, t), &stop).await?;
            if let Ok(s) = w.table().snapshot() {
                lock(&schemas).insert(t.name.clone(), s.snapshot().arrow_schema());
            }
            writers.insert(t.name.clone(), w);
        }
        Ok(Self {
            cfg: Arc::new(cfg.clone()),
            lake: lake.clone(),
            decoder: Arc::new(Decoder::new(cache).with_guard(schema_guard(&schemas, cfg))),
            writers,
            configs,
            dlq: open_writer(
                lake,
                DLQ_TABLE,
                WriterOptions {
                    policy: cfg.log_policy(None),
                    ..WriterOptions::default()
                },
                &stop,
            )
            .await?,
            schemas,
            assignment,
            progress: Arc::new(Progress::default()),
            stop,
            user_stop: Arc::new(AtomicBool::new(false)),
            compactions: compaction::Compactions::new(
                cfg.compaction.inline,
                cfg.compaction.every_commits,
                cfg.compaction.options.clone(),
            ),
            vacuums: vacuum::Vacuums::new(lake, cfg.maintenance.vacuum_interval()?),
            views: crate::views::Background::start(crate::views::Views::open(cfg, lake).await?),
            committed: Vec::new(),
            halted: false,
        })
    }

    /// The flag a user's stop sets (the worker's `stop`, where `stop` of [`Pipeline::new`]
    /// also ends a run that caught up): view steps finish unless it is set.
    pub fn with_user_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.user_stop = stop;
        self
    }

    /// Where the pipeline stands (shared; stays valid after `run` returns).
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Runs until `batches` is closed and everything received is applied (or a batch fails).
    pub async fn run(mut self, batches: mpsc::Receiver<RawBatch>) -> anyhow::Result<RunStats> {
        let (tx, mut decoded) = mpsc::channel(1);
        let decoding = tokio::spawn(decode::stage(
            self.cfg.clone(),
            self.decoder.clone(),
            self.stop.clone(),
            batches,
            tx,
        ));
        let mut failed = None;
        while let Some(batch) = decoded.recv().await {
            if let Err(e) = self.apply(batch).await {
                failed = Some(e);
                break;
            }
            if self.halted {
                break;
            }
        }
        drop(decoded);
        self.vacuums.abort_all();
        let cut_short = failed.is_some() || self.stop.load(Ordering::Relaxed);
        self.views
            .finish(failed.is_none() && !self.user_stop.load(Ordering::Relaxed))
            .await;
        if cut_short {
            self.compactions.abort_all();
            // a stop has seconds: a checkpoint not written now is written at the next interval
            tables::maintain::settle_within(std::time::Duration::from_secs(1)).await;
        } else {
            self.commit_compactions(true).await;
            tables::maintain::settle().await;
        }
        let decoded_result = decoding.await?;
        if let Some(e) = failed {
            return Err(e);
        }
        decoded_result?;
        Ok(self.progress.stats())
    }

    /// The writer of a table (opened on first use: a `topic_pattern` table).
    async fn writer_for(&mut self, tc: &TableConfig) -> anyhow::Result<TableWriter> {
        match self.writers.remove(&tc.name) {
            Some(w) => Ok(w),
            None => {
                tracing::info!(table = %tc.name, topic = %tc.topic, "new table from a topic");
                self.configs.insert(tc.name.clone(), tc.clone());
                open_writer(&self.lake, &tc.name, options(&self.cfg, tc), &self.stop).await
            }
        }
    }
}
