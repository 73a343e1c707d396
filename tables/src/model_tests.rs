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
//! `CORMORANT_MODEL_SEQUENCES` (default 1000) seeds from `CORMORANT_MODEL_SEED` (default 1)
//! run, after the seeds of `model_regressions.txt`; a failing seed is appended there.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;

use change::{ChangeBatch, SourceOffset};
use deltalake::DeltaTable;
use futures::FutureExt;

use crate::compact;
use crate::test_support::*;
use crate::writer::{DeleteMode, TableWriter, WriteMode};

/// Keys are 1..=KEYS.
const KEYS: u64 = 6;
/// Names an upsert may carry: an empty string is not a null, and non-ASCII survives.
const NAMES: [&str; 8] = ["ann", "bob", "cy", "", "dörte", "eve", "o'neil", "zoë"];
/// Test functions the seed range is split over (they run in parallel).
const SHARDS: u64 = 4;
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/model_regressions.txt");

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// splitmix64: small, fast, and every seed (0 included) gives a good stream.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub(crate) fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

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
                    cell(r.name),
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
        let a = self
            .w
            .apply(&delivery(self.recs, start, end))
            .await
            .map_err(|e| format!("apply failed: {e}"))?;
        if a.rows_skipped
            != (start..self.applied)
                .filter(|o| !matches!(self.recs[*o], Rec::Tombstone))
                .count()
        {
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
        let a = self
            .w
            .apply(&delivery(self.recs, start, end))
            .await
            .map_err(|e| format!("redelivery failed: {e}"))?;
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
            crate::files::write(table, &batch(&rows).data, None, Some(0))
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
        let r = compact(&mut table, &eager())
            .await
            .map_err(|e| format!("compaction failed: {e}"))?;
        self.log.push(format!(
            "compact: version {:?}, files -{} +{}, rows {}",
            r.version, r.files_removed, r.files_added, r.rows_written
        ));
        if r.conflicted {
            return Err("compaction conflicted without a concurrent writer".into());
        }
        self.check(false).await
    }

    /// The table (through deltalake's DataFusion provider) against the model; `fresh`: load
    /// the table anew rather than update the reader's handle.
    async fn check(&mut self, fresh: bool) -> Result<(), String> {
        if fresh || self.reader.is_none() || self.rng.percent(10) {
            self.reader = Some(self.fx.lake.open(TABLE, None).await.map_err(|e| format!("open: {e}"))?);
        }
        let actual = rows_of(self.reader.as_mut().expect("opened")).await;
        let expected = self.model.render();
        if actual != expected {
            return Err(format!(
                "the table differs from the model\n  expected: {expected:#?}\n  actual:   {actual:#?}"
            ));
        }
        let next = self.w.next_offset(&app_id(0)).await.map_err(|e| e.to_string())?;
        if next != Some(self.applied as i64) {
            return Err(format!("recorded next offset {next:?}, expected {}", self.applied));
        }
        Ok(())
    }

    /// Compaction beside ingest: a job reads and rewrites files now; the writer commits it
    /// a few steps later, after batches (and maybe a crash) changed those files.
    async fn background_compaction(&mut self) -> Result<(), String> {
        if let Some(ready) = self.pending.take() {
            let r = self
                .w
                .finish_compaction(ready)
                .await
                .map_err(|e| format!("finishing a compaction failed: {e}"))?;
            self.log.push(format!(
                "finish background compaction: version {:?}, files -{} +{}, rows {}, dropped {}",
                r.version, r.files_removed, r.files_added, r.rows_written, r.conflicted
            ));
            return self.check(false).await;
        }
        let Some(job) = self.w.compaction_job(&eager()) else {
            return Ok(());
        };
        self.pending = job.run().await.map_err(|e| format!("compaction job failed: {e}"))?;
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
async fn run_seed(seed: u64) -> Result<(), String> {
    let mut log = Vec::new();
    let outcome = AssertUnwindSafe(sequence(seed, &mut log)).catch_unwind().await;
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

async fn sequence(seed: u64, log: &mut Vec<String>) -> Result<(), String> {
    let mut rng = Rng(seed);
    let (mode, deletes) = modes(&mut rng);
    let recs = generate(&mut rng);
    log.push(format!("mode {mode:?}, deletes {deletes:?}"));
    log.push(format!("records: {}", show(&recs, 0, recs.len())));
    MODE.scope(mode, async {
        let fx = Fixture::new(deletes);
        let w = fx.writer().await;
        let run = Run {
            rng,
            recs: &recs,
            fx,
            w,
            model: Model {
                soft: deletes == DeleteMode::Soft,
                rows: BTreeMap::new(),
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

fn regression_seeds() -> Vec<u64> {
    let text = std::fs::read_to_string(REGRESSIONS).unwrap_or_default();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap_or_else(|_| panic!("{REGRESSIONS}: not a seed: {l:?}")))
        .collect()
}

fn record_regression(seed: u64) {
    if regression_seeds().contains(&seed) {
        return;
    }
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(REGRESSIONS)
        .and_then(|mut f| writeln!(f, "{seed}"));
    if let Err(e) = appended {
        eprintln!("could not record seed {seed} in {REGRESSIONS}: {e}");
    }
}

/// This shard's share of the regression seeds (first), then of the seed range.
async fn shard(i: u64) {
    let first = env_u64("CORMORANT_MODEL_SEED", 1);
    let count = env_u64("CORMORANT_MODEL_SEQUENCES", 1000);
    let regressions = regression_seeds();
    let mine = regressions.iter().skip(i as usize).step_by(SHARDS as usize).copied();
    let range = (count * i / SHARDS..count * (i + 1) / SHARDS).map(|k| first + k);
    for seed in mine.chain(range) {
        if let Err(report) = run_seed(seed).await {
            record_regression(seed);
            panic!("{report}\n(seed {seed} recorded in {REGRESSIONS})");
        }
    }
}

#[tokio::test]
async fn model_shard_0() {
    shard(0).await;
}

#[tokio::test]
async fn model_shard_1() {
    shard(1).await;
}

#[tokio::test]
async fn model_shard_2() {
    shard(2).await;
}

#[tokio::test]
async fn model_shard_3() {
    shard(3).await;
}
