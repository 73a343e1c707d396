//! Seeded randomized model test of [`TableWriter`](crate::TableWriter).
//!
//! Each seed picks a write mode (CoW, MoR) and a delete mode (soft, hard), generates a change
//! stream on one partition over keys 1..=6 (upserts, TOASTed upserts, deletes, primary-key
//! changes as delete + tombstone + create, truncates; tombstones only consume an offset), and
//! delivers it in batches cut at random offsets. Between batches it randomly crashes the writer
//! (an orphan data file and deletion vector left behind, a fresh writer rebuilding its index),
//! redelivers already-applied offsets (at-least-once: nothing may change), compacts the
//! table eagerly from another handle, or runs a compaction job beside ingest that the writer
//! commits a few steps later (batches and crashes in between: deletes carried into the new
//! files); a batch may also start before the recorded offset (a partly applied batch).
//! After every step the table, read through deltalake's DataFusion provider, must equal an
//! in-memory model of DESIGN.md's rules, and the recorded next offset must be the model's.
//!
//! With faults (`model_faults_*`), the lake's store also fails some calls of a step — before
//! doing anything, or after a write was done (an ambiguous S3 timeout) — at a random rate. A
//! step that fails is a worker that exits: a fresh writer must find the batch either wholly
//! applied or not at all, and the table equal to the model either way.
//!
//! `CORMORANT_MODEL_SEQUENCES` (default 700, the CI run) seeds from `CORMORANT_MODEL_SEED` (default 1)
//! run, after the seeds of `model_regressions.txt`; a failing seed is appended there.
//! `CORMORANT_MODEL_FAULT_SEQUENCES` (default 200) sets how many run with faults.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;

use change::{ChangeBatch, SourceOffset};
use deltalake::DeltaTable;
use futures::FutureExt;

use crate::compact;
use crate::fault::FaultRates;
use crate::test_support::*;
use crate::writer::{DeleteMode, TableWriter, WriteMode};

/// Keys are 1..=KEYS.
const KEYS: u64 = 6;
/// Names an upsert may carry: an empty string is not a null, and non-ASCII survives.
const NAMES: [&str; 8] = ["ann", "bob", "cy", "", "dörte", "eve", "o'neil", "zoë"];
/// Test functions the seed range is split over (they run in parallel).
const SHARDS: u64 = 4;
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/model_regressions.txt");
const FAULT_REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/model_fault_regressions.txt");

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

pub(crate) use crate::fault::SplitMix64 as Rng;

/// The model's draws on the shared generator.
impl Rng {
    fn key(&mut self) -> i32 {
        self.range(1, KEYS) as i32
    }

    pub(crate) fn name(&mut self) -> &'static str {
        NAMES[self.below(NAMES.len() as u64) as usize]
    }

    /// Mostly positive amounts, some negative, some zero-ish.
    pub(crate) fn cents(&mut self) -> i128 {
        self.below(2_000_000) as i128 - 100_000
    }
}

// ---------------------------------------------------------------------------------------------
// The change stream and its model
// ---------------------------------------------------------------------------------------------

/// The record at one offset of the partition.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rec {
    /// `toast`: the `name` cell is unavailable (unchanged TOASTed value).
    Upsert {
        id: i32,
        name: &'static str,
        cents: i128,
        toast: bool,
    },
    Delete {
        id: i32,
    },
    /// A null value after a delete: consumes an offset, carries no row.
    Tombstone,
    Truncate,
}

impl fmt::Display for Rec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rec::Upsert {
                id, toast: true, cents, ..
            } => write!(f, "toast({id}, {})", amount(*cents)),
            Rec::Upsert { id, name, cents, .. } => write!(f, "up({id}, {name:?}, {})", amount(*cents)),
            Rec::Delete { id } => write!(f, "del({id})"),
            Rec::Tombstone => write!(f, "tombstone"),
            Rec::Truncate => write!(f, "trunc"),
        }
    }
}

/// A random stream of about 5..=30 records; the record at offset `o` is `recs[o]`.
fn generate(rng: &mut Rng) -> Vec<Rec> {
    let target = rng.range(5, 30) as usize;
    let mut recs = Vec::with_capacity(target + 2);
    while recs.len() < target {
        let id = rng.key();
        match rng.below(100) {
            0..50 => recs.push(Rec::Upsert {
                id,
                name: rng.name(),
                cents: rng.cents(),
                toast: false,
            }),
            50..62 => recs.push(Rec::Upsert {
                id,
                name: rng.name(), // replaced by the placeholder in the batch
                cents: rng.cents(),
                toast: true,
            }),
            62..76 => {
                recs.push(Rec::Delete { id });
                if rng.percent(60) {
                    recs.push(Rec::Tombstone);
                }
            }
            76..93 => {
                // primary-key change: delete(old) + tombstone + create(new)
                let new = (id + rng.range(1, KEYS - 1) as i32 - 1) % KEYS as i32 + 1;
                recs.push(Rec::Delete { id });
                recs.push(Rec::Tombstone);
                recs.push(Rec::Upsert {
                    id: new,
                    name: rng.name(),
                    cents: rng.cents(),
                    toast: false,
                });
            }
            _ => recs.push(Rec::Truncate),
        }
    }
    recs
}

/// A row as `fx.rows()` renders it: `id|name|amount|ts|__op|__deleted|__kafka_offset`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    name: Option<&'static str>,
    cents: Option<i128>,
    ts: Option<i64>,
    op: &'static str,
    deleted: bool,
    offset: i64,
}

fn amount(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

fn cell<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// DESIGN.md's rules, one record at a time in offset order.
pub(crate) struct Model {
    pub(crate) soft: bool,
    pub(crate) rows: BTreeMap<i32, Row>,
    /// `name` is a partition column: an empty one reads as NULL (Delta cannot hold `""` as a
    /// partition value).
    pub(crate) empty_is_null: bool,
}

impl Model {
    pub(crate) fn apply(&mut self, offset: i64, rec: Rec) {
        match rec {
            Rec::Upsert { id, name, cents, toast } => {
                // an unavailable cell keeps the previous value (a soft-deleted row's too)
                let name = if toast {
                    self.rows.get(&id).and_then(|r| r.name)
                } else {
                    Some(name)
                };
                let row = Row {
                    name,
                    cents: Some(cents),
                    ts: Some(offset * 1000),
                    op: "u",
                    deleted: false,
                    offset,
                };
                self.rows.insert(id, row);
            }
            Rec::Delete { id } if self.soft => {
                // last known values (only the key for a key never seen), the delete's metadata
                let row = self.rows.entry(id).or_insert(Row {
                    name: None,
                    cents: None,
                    ts: None,
                    op: "d",
                    deleted: true,
                    offset,
                });
                (row.op, row.deleted, row.offset) = ("d", true, offset);
            }
            Rec::Delete { id } => {
                self.rows.remove(&id);
            }
            Rec::Truncate if self.soft => {
                // every row present, soft-deleted ones included, reads as deleted by the truncate
                for row in self.rows.values_mut() {
                    (row.op, row.deleted, row.offset) = ("d", true, offset);
                }
            }
            Rec::Truncate => self.rows.clear(),
            Rec::Tombstone => {}
        }
    }

    pub(crate) fn render(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|(id, r)| {
                format!(
                    "{id}|{}|{}|{}|{}|{}|{}",
                    cell(r.name.filter(|n| !(self.empty_is_null && n.is_empty()))),
                    cell(r.cents.map(amount)),
                    cell(r.ts),
                    r.op,
                    r.deleted,
                    r.offset
                )
            })
            .collect()
    }
}

/// The records at offsets `start..end` as one batch; its next offset is `end` even when the
/// last records are tombstones (the consumer read them).
fn delivery(recs: &[Rec], start: usize, end: usize) -> ChangeBatch {
    let mut changes = Vec::new();
    let mut toasted = Vec::new();
    for (o, rec) in recs.iter().enumerate().take(end).skip(start) {
        let o = o as i64;
        match *rec {
            Rec::Upsert { id, name, cents, toast } => {
                if toast {
                    toasted.push(changes.len());
                }
                changes.push(up(o, id, name, cents));
            }
            Rec::Delete { id } => changes.push(del(o, id)),
            Rec::Truncate => changes.push(trunc(o)),
            Rec::Tombstone => {}
        }
    }
    let mut b = toast_batch(&changes, &toasted);
    b.offsets = vec![SourceOffset {
        stream: stream(),
        partition: 0,
        next_offset: end as i64,
    }];
    b
}

pub(crate) fn show(recs: &[Rec], start: usize, end: usize) -> String {
    let items: Vec<String> = (start..end).map(|o| format!("{o}:{}", recs[o])).collect();
    items.join(" ")
}

// ---------------------------------------------------------------------------------------------
// One sequence
// ---------------------------------------------------------------------------------------------

struct Run<'a> {
    rng: Rng,
    recs: &'a [Rec],
    fx: Fixture,
    w: TableWriter,
    model: Model,
    /// A reader's handle on the table, opened after the first batch and updated before each
    /// read (a fresh load now and then, and after crashes).
    reader: Option<DeltaTable>,
    /// Next offset to read = every record below it is applied.
    applied: usize,
    /// Offset ranges delivered so far.
    delivered: Vec<(usize, usize)>,
    /// A compaction job run beside ingest, not committed yet (batches and crashes go on).
    pending: Option<crate::ReadyCompaction>,
    log: &'a mut Vec<String>,
}

impl Run<'_> {
    /// Delivers `start..end` (`start` below `applied`: partly applied already).
    async fn deliver(&mut self, start: usize, end: usize) -> Result<(), String> {
        self.log
            .push(format!("apply [{start}, {end}): {}", show(self.recs, start, end)));
        let (result, faulty) = self.apply_under_faults(start, end).await;
        let a = match result {
            Ok(a) => a,
            Err(e) if faulty => return self.after_failure(start, end, &e.to_string()).await,
            Err(e) => return Err(format!("apply failed: {e}")),
        };
        let skipped = (start..self.applied)
            .filter(|o| !matches!(self.recs[*o], Rec::Tombstone))
            .count();
        // a retry after a commit that was made but reported failed finds the batch applied
        if a.rows_skipped != skipped && !(faulty && a.rows_skipped == a.rows_in) {
            return Err(format!(
                "{a:?}: wrong rows_skipped for a batch from {start}, applied to {}",
                self.applied
            ));
        }
        for o in self.applied..end {
            self.model.apply(o as i64, self.recs[o]);
        }
        self.applied = end;
        self.delivered.push((start, end));
        self.check(false).await
    }

    /// Applies `start..end`, with faults on in one step of three; the result and whether
    /// faults were on.
    async fn apply_under_faults(&mut self, start: usize, end: usize) -> (crate::Result<crate::Applied>, bool) {
        let faulty = self.faults_on();
        let result = self.w.apply(&delivery(self.recs, start, end)).await;
        self.faults_off();
        (result, faulty)
    }

    /// Re-delivers offsets that are all applied: nothing may be committed or change.
    async fn redeliver(&mut self) -> Result<(), String> {
        let (start, end) = if self.rng.percent(50) {
            self.delivered[self.rng.below(self.delivered.len() as u64) as usize]
        } else {
            let end = self.rng.range(1, self.applied as u64) as usize;
            (self.rng.below(end as u64) as usize, end)
        };
        self.log
            .push(format!("redeliver [{start}, {end}): {}", show(self.recs, start, end)));
        let (result, faulty) = self.apply_under_faults(start, end).await;
        let a = match result {
            Ok(a) => a,
            Err(e) if faulty => return self.after_failure(start, end, &e.to_string()).await,
            Err(e) => return Err(format!("redelivery failed: {e}")),
        };
        if a.version.is_some() || a.rows_skipped != a.rows_in {
            return Err(format!(
                "a redelivery of applied offsets committed or applied rows: {a:?}"
            ));
        }
        self.check(false).await
    }

    /// The process dies after writing a batch's data file (and, MoR, a deletion vector) but
    /// before committing; a fresh writer starts on the table.
    async fn crash(&mut self) -> Result<(), String> {
        let junk = self.rng.percent(30);
        let table = self.w.table();
        if junk {
            let path = self
                .fx
                .dir
                .path()
                .join(TABLE)
                .join(format!("part-00000-{}-c000.snappy.parquet", uuid::Uuid::new_v4()));
            std::fs::write(&path, b"PAR1 not really parquet").map_err(|e| e.to_string())?;
        } else {
            // a real file with every key, values that must never be read
            let rows: Vec<_> = (1..=KEYS as i32)
                .map(|id| up(10_000 + i64::from(id), id, "ORPHAN", 1))
                .collect();
            let schema = table.snapshot().map_err(|e| e.to_string())?.snapshot().arrow_schema();
            let data = change::align(&batch(&rows).data, &schema).map_err(|e| e.to_string())?;
            crate::files::write(table, &data, crate::files::Kind::Fresh, Some(0))
                .await
                .map_err(|e| format!("writing the orphan file: {e}"))?;
            let bitmap: roaring::RoaringTreemap = (0..3u64).collect();
            crate::dv::write(table.log_store().object_store(None).as_ref(), &bitmap)
                .await
                .map_err(|e| format!("writing the orphan deletion vector: {e}"))?;
        }
        self.log.push(format!(
            "crash (orphan {}) and restart",
            if junk { "junk" } else { "parquet + dv" }
        ));
        self.w = self.fx.writer().await;
        self.check(true).await
    }

    /// An eager compaction from another handle; it must not change what a query returns.
    async fn compact(&mut self) -> Result<(), String> {
        let mut table = self.fx.lake.open(TABLE, None).await.map_err(|e| format!("open: {e}"))?;
        let faulty = self.faults_on();
        let result = compact(&mut table, &eager()).await;
        self.faults_off();
        let r = match result {
            Ok(r) => r,
            Err(e) if faulty => {
                self.log.push(format!("compaction failed under faults: {e}"));
                return self.check(true).await;
            }
            Err(e) => return Err(format!("compaction failed: {e}")),
        };
        self.log.push(format!(
            "compact: version {:?}, files -{} +{}, rows {}",
            r.version, r.files_removed, r.files_added, r.rows_written
        ));
        if r.conflicted {
            return Err("compaction conflicted without a concurrent writer".into());
        }
        self.check(false).await
    }

    /// Switches faults on for the next step, in one step of three of a faulty run, at a random
    /// rate (5–40% of calls, half the failing writes done first); whether it did.
    fn faults_on(&mut self) -> bool {
        let Some(faults) = self.fx.faults.clone() else {
            return false;
        };
        if !self.rng.percent(33) {
            return false;
        }
        let error = self.rng.range(5, 40) as f64 / 100.0;
        self.log.push(format!("faults on: {:.0}% of calls fail", error * 100.0));
        faults.set(FaultRates {
            error,
            ambiguous: 0.5,
            ..FaultRates::default()
        });
        true
    }

    fn faults_off(&self) {
        if let Some(faults) = &self.fx.faults {
            faults.set(FaultRates::default());
        }
    }

    /// Delivering `start..end` failed under faults. As the worker does, either the same
    /// writer retries the batch (it must then apply exactly what was not applied), or the
    /// worker exits and a fresh one starts on the table ([`Run::restart`]).
    async fn after_failure(&mut self, start: usize, end: usize, error: &str) -> Result<(), String> {
        if self.rng.percent(50) {
            self.log.push(format!("failed under faults, retry in place: {error}"));
            self.w
                .apply(&delivery(self.recs, start, end))
                .await
                .map_err(|e| format!("the retry in place failed: {e}"))?;
            if end > self.applied {
                for o in self.applied..end {
                    self.model.apply(o as i64, self.recs[o]);
                }
                self.delivered.push((self.applied, end));
                self.applied = end;
            }
            return self.check(false).await;
        }
        self.restart(end, error).await
    }

    /// A step failed under faults, so the worker exits and a fresh one starts on the table:
    /// the batch that ends at `end` must be wholly applied or not at all.
    async fn restart(&mut self, end: usize, error: &str) -> Result<(), String> {
        self.log.push(format!("failed under faults, restart: {error}"));
        self.pending = None; // a job's result dies with its process
        self.w = self.fx.writer().await;
        let next = self.w.next_offset(&app_id(0)).await.map_err(|e| e.to_string())?;
        let before = (self.applied > 0).then_some(self.applied as i64);
        if next == Some(end as i64) && end > self.applied {
            for o in self.applied..end {
                self.model.apply(o as i64, self.recs[o]);
            }
            self.log
                .push(format!("the batch to {end} was committed before the failure"));
            self.delivered.push((self.applied, end));
            self.applied = end;
        } else if next != before {
            return Err(format!(
                "after a failed step the table records next offset {next:?}: neither {before:?} nor {end}"
            ));
        }
        self.check(true).await
    }

    /// The table (through deltalake's DataFusion provider) against the model; `fresh`: load
    /// the table anew rather than update the reader's handle.
    async fn check(&mut self, fresh: bool) -> Result<(), String> {
        if fresh || self.reader.is_none() || self.rng.percent(10) {
            match self.fx.lake.open(TABLE, None).await {
                Ok(t) => self.reader = Some(t),
                // the first batch failed under faults before the table was created
                Err(crate::TableError::NotFound(_)) if self.applied == 0 && self.model.render().is_empty() => {
                    self.reader = None;
                    return Ok(());
                }
                Err(e) => return Err(format!("open: {e}")),
            }
        }
        let actual = rows_of(self.reader.as_mut().expect("opened")).await;
        let expected = self.model.render();
        if actual != expected {
            return Err(format!(
                "the table differs from the model\n  expected: {expected:#?}\n  actual:   {actual:#?}"
            ));
        }
        let next = self.w.next_offset(&app_id(0)).await.map_err(|e| e.to_string())?;
        // nothing applied yet (a first batch failed under faults): no offset recorded at all
        if next != Some(self.applied as i64) && !(next.is_none() && self.applied == 0) {
            return Err(format!("recorded next offset {next:?}, expected {}", self.applied));
        }
        Ok(())
    }

    /// Compaction beside ingest: a job reads and rewrites files now; the writer commits it
    /// a few steps later, after batches (and maybe a crash) changed those files.
    async fn background_compaction(&mut self) -> Result<(), String> {
        if let Some(ready) = self.pending.take() {
            let faulty = self.faults_on();
            let result = self.w.finish_compaction(ready).await;
            self.faults_off();
            let r = match result {
                Ok(r) => r,
                Err(e) if faulty => return self.restart(self.applied, &e.to_string()).await,
                Err(e) => return Err(format!("finishing a compaction failed: {e}")),
            };
            self.log.push(format!(
                "finish background compaction: version {:?}, files -{} +{}, rows {}, dropped {}",
                r.version, r.files_removed, r.files_added, r.rows_written, r.conflicted
            ));
            return self.check(false).await;
        }
        let Some(job) = self.w.compaction_job(&eager()) else {
            return Ok(());
        };
        let faulty = self.faults_on();
        let result = job.run().await;
        self.faults_off();
        self.pending = match result {
            Ok(ready) => ready,
            Err(e) if faulty => {
                self.log.push(format!("compaction job failed under faults: {e}"));
                None
            }
            Err(e) => return Err(format!("compaction job failed: {e}")),
        };
        self.log.push("background compaction job run".into());
        self.check(false).await
    }

    async fn between_batches(&mut self) -> Result<(), String> {
        // none (50%), one (40%) or two (10%) steps
        for _ in 0..[0, 0, 0, 0, 0, 1, 1, 1, 1, 2][self.rng.below(10) as usize] {
            match self.rng.below(4) {
                0 => self.crash().await?,
                1 => self.redeliver().await?,
                2 => self.compact().await?,
                _ => self.background_compaction().await?,
            }
        }
        Ok(())
    }

    async fn go(mut self) -> Result<(), String> {
        let n = self.recs.len();
        let batches = self.rng.range(2, 6).min(n as u64) as usize;
        let mut cuts: Vec<usize> = Vec::new();
        while cuts.len() + 1 < batches {
            let c = self.rng.range(1, n as u64 - 1) as usize;
            if !cuts.contains(&c) {
                cuts.push(c);
            }
        }
        cuts.sort_unstable();
        cuts.push(n);
        for end in cuts {
            let mut start = self.applied;
            if self.applied > 0 {
                self.between_batches().await?;
                if self.rng.percent(20) {
                    start = self.rng.below(self.applied as u64) as usize; // overlaps applied offsets
                }
            }
            self.deliver(start, end).await?;
        }
        self.between_batches().await?;
        if self.pending.is_some() {
            self.background_compaction().await?;
        }
        Ok(())
    }
}

/// Runs one seed; on failure, the error with the seed, modes and steps.
async fn run_seed(seed: u64, faulty: bool) -> Result<(), String> {
    let mut log = Vec::new();
    let outcome = AssertUnwindSafe(sequence(seed, faulty, &mut log)).catch_unwind().await;
    let error = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(panic) => panic_text(panic),
    };
    Err(format!(
        "model test failed, seed {seed}\n{}\n=> {error}",
        log.join("\n")
    ))
}

/// What a caught panic said.
pub(crate) fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// The write and delete modes a seed runs in.
pub(crate) fn modes(rng: &mut Rng) -> (WriteMode, DeleteMode) {
    let mode = if rng.percent(50) {
        WriteMode::Cow
    } else {
        WriteMode::Mor
    };
    let deletes = if rng.percent(50) {
        DeleteMode::Soft
    } else {
        DeleteMode::Hard
    };
    (mode, deletes)
}

async fn sequence(seed: u64, faulty: bool, log: &mut Vec<String>) -> Result<(), String> {
    let mut rng = Rng(seed);
    let (mode, deletes) = modes(&mut rng);
    let recs = generate(&mut rng);
    log.push(format!(
        "mode {mode:?}, deletes {deletes:?}, partition_by {:?}",
        model_partitioning(seed)
    ));
    log.push(format!("records: {}", show(&recs, 0, recs.len())));
    MODE.scope(mode, async {
        let mut fx = if faulty {
            Fixture::faulty(deletes, seed)
        } else {
            Fixture::new(deletes)
        };
        fx.partition_by = model_partitioning(seed);
        let w = fx.writer().await;
        let run = Run {
            rng,
            recs: &recs,
            fx,
            w,
            model: Model {
                soft: deletes == DeleteMode::Soft,
                rows: BTreeMap::new(),
                empty_is_null: !model_partitioning(seed).is_empty(),
            },
            reader: None,
            applied: 0,
            delivered: Vec::new(),
            pending: None,
            log,
        };
        run.go().await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn regressions_file(faulty: bool) -> &'static str {
    if faulty { FAULT_REGRESSIONS } else { REGRESSIONS }
}

fn regression_seeds(faulty: bool) -> Vec<u64> {
    let file = regressions_file(faulty);
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap_or_else(|_| panic!("{file}: not a seed: {l:?}")))
        .collect()
}

fn record_regression(seed: u64, faulty: bool) {
    let file = regressions_file(faulty);
    if regression_seeds(faulty).contains(&seed) {
        return;
    }
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .and_then(|mut f| writeln!(f, "{seed}"));
    if let Err(e) = appended {
        eprintln!("could not record seed {seed} in {file}: {e}");
    }
}

/// This shard's share (of `shards`) of the regression seeds (first), then of the seed range.
async fn shard(i: u64, shards: u64, faulty: bool) {
    let first = env_u64("CORMORANT_MODEL_SEED", 1);
    let count = if faulty {
        env_u64("CORMORANT_MODEL_FAULT_SEQUENCES", 200)
    } else {
        env_u64("CORMORANT_MODEL_SEQUENCES", 700)
    };
    let regressions = regression_seeds(faulty);
    let mine = regressions.iter().skip(i as usize).step_by(shards as usize).copied();
    let range = (count * i / shards..count * (i + 1) / shards).map(|k| first + k);
    for seed in mine.chain(range) {
        if let Err(report) = run_seed(seed, faulty).await {
            record_regression(seed, faulty);
            panic!("{report}\n(seed {seed} recorded in {})", regressions_file(faulty));
        }
    }
}

#[tokio::test]
async fn model_shard_0() {
    shard(0, SHARDS, false).await;
}

#[tokio::test]
async fn model_shard_1() {
    shard(1, SHARDS, false).await;
}

#[tokio::test]
async fn model_shard_2() {
    shard(2, SHARDS, false).await;
}

#[tokio::test]
async fn model_shard_3() {
    shard(3, SHARDS, false).await;
}

#[tokio::test]
async fn model_faults_shard_0() {
    shard(0, 2, true).await;
}

#[tokio::test]
async fn model_faults_shard_1() {
    shard(1, 2, true).await;
}
