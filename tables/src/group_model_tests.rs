//! Seeded randomized model test of a consumer group's writers on one table.
//!
//! Each seed picks a write mode and a delete mode, 2–3 source partitions and 2–3 writers.
//! Keys 1..=9 are hashed to partitions (`id % partitions`, as Kafka keeps a key on one
//! partition); each partition gets its own stream (upserts, TOASTed upserts, deletes with and
//! without tombstones, key changes within the partition). Partitions are owned by writers, and
//! the steps are:
//! - a writer delivers the next records of one or two of its partitions in one batch, from its
//!   consumer position;
//! - a handoff moves a partition to another writer, which resumes from the TABLE's offset
//!   (as the worker does on assignment); the old owner may still deliver its in-flight batch
//!   (a zombie), which must change nothing that was applied;
//! - a delivery races another writer's delivery or a compaction, committed between the
//!   writer's sync and its commit (rebased or planned again);
//! - a compaction; a writer crashes and restarts (a fresh index).
//!
//! After every step the table must equal the model — each partition's records below the
//! table's offset for it, applied in order — with no key twice.
//!
//! `CORMORANT_GROUP_MODEL_SEQUENCES` (default 40, the CI run) seeds from `CORMORANT_MODEL_SEED`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::Mutex;

use crate::model_tests::{Model, Rec, Rng, env_u64, modes, panic_text, show};
use crate::test_support::*;
use crate::writer::{DeleteMode, TableWriter};

const KEYS: i32 = 9;

/// A stream of 6..=25 records for partition `p` of `n`.
fn generate(rng: &mut Rng, p: i32, n: i32) -> Vec<Rec> {
    let keys: Vec<i32> = (1..=KEYS).filter(|k| k % n == p).collect();
    let key = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize];
    let target = rng.range(6, 25) as usize;
    let mut recs = Vec::new();
    while recs.len() < target {
        let id = key(rng);
        match rng.below(100) {
            0..55 => recs.push(Rec::Upsert {
                id,
                name: rng.name(),
                cents: rng.cents(),
                toast: false,
            }),
            55..67 => recs.push(Rec::Upsert {
                id,
                name: rng.name(),
                cents: rng.cents(),
                toast: true,
            }),
            67..85 => {
                recs.push(Rec::Delete { id });
                if rng.percent(60) {
                    recs.push(Rec::Tombstone);
                }
            }
            _ => {
                let new = key(rng);
                recs.push(Rec::Delete { id });
                recs.push(Rec::Tombstone);
                recs.push(Rec::Upsert {
                    id: new,
                    name: rng.name(),
                    cents: rng.cents(),
                    toast: false,
                });
            }
        }
    }
    recs
}

/// The changes of records `start..end` of partition `p`, with toasted row indexes.
fn changes(recs: &[Rec], p: i32, start: usize, end: usize, out: &mut Vec<Change>, toasted: &mut Vec<usize>) {
    for (o, rec) in recs.iter().enumerate().take(end).skip(start) {
        let o = o as i64;
        match *rec {
            Rec::Upsert { id, name, cents, toast } => {
                if toast {
                    toasted.push(out.len());
                }
                out.push(up(o, id, name, cents).p(p));
            }
            Rec::Delete { id } => out.push(del(o, id).p(p)),
            Rec::Truncate => out.push(trunc(o).p(p)),
            Rec::Tombstone => {}
        }
    }
}

/// One batch of several partitions' ranges; each partition's offset moves to its range's end.
fn delivery(streams: &[Vec<Rec>], ranges: &[(i32, usize, usize)]) -> change::ChangeBatch {
    let (mut all, mut toasted) = (Vec::new(), Vec::new());
    for (p, start, end) in ranges {
        changes(&streams[*p as usize], *p, *start, *end, &mut all, &mut toasted);
    }
    let mut b = toast_batch(&all, &toasted);
    b.offsets = ranges
        .iter()
        .map(|(p, _, end)| change::SourceOffset {
            stream: stream(),
            partition: *p,
            next_offset: *end as i64,
        })
        .collect();
    b
}

struct Group<'a> {
    rng: Rng,
    fx: Fixture,
    streams: Vec<Vec<Rec>>,
    writers: Vec<Arc<Mutex<TableWriter>>>,
    /// owner of each partition
    owner: Vec<usize>,
    /// consumer position per (writer, partition)
    cursor: BTreeMap<(usize, i32), usize>,
    soft: bool,
    log: &'a mut Vec<String>,
}

impl Group<'_> {
    fn partitions(&self) -> i32 {
        self.streams.len() as i32
    }

    /// The next range (at most 6 records) of `p` from writer `w`'s position, if any is left.
    fn next_range(&mut self, w: usize, p: i32) -> Option<(i32, usize, usize)> {
        let start = *self.cursor.get(&(w, p)).unwrap_or(&0);
        let len = self.streams[p as usize].len();
        (start < len).then(|| {
            let end = (start + self.rng.range(1, 6) as usize).min(len);
            (p, start, end)
        })
    }

    /// A batch for writer `w`: one or two of its partitions.
    fn batch_for(&mut self, w: usize) -> Option<Vec<(i32, usize, usize)>> {
        let mine: Vec<i32> = (0..self.partitions())
            .filter(|p| self.owner[*p as usize] == w)
            .collect();
        let mut ranges = Vec::new();
        for p in mine {
            if (ranges.is_empty() || self.rng.percent(40))
                && let Some(r) = self.next_range(w, p)
            {
                ranges.push(r);
            }
        }
        (!ranges.is_empty()).then_some(ranges)
    }

    fn describe(&self, w: usize, ranges: &[(i32, usize, usize)]) -> String {
        let parts: Vec<String> = ranges
            .iter()
            .map(|(p, s, e)| format!("p{p} [{s},{e}): {}", show(&self.streams[*p as usize], *s, *e)))
            .collect();
        format!("writer {w} applies {}", parts.join(" + "))
    }

    async fn deliver(&mut self, w: usize, race: bool) -> Result<(), String> {
        let Some(ranges) = self.batch_for(w) else { return Ok(()) };
        let b = delivery(&self.streams, &ranges);
        let mut desc = self.describe(w, &ranges);
        let raced: Arc<Mutex<Vec<(usize, i32, usize)>>> = Arc::default();
        if race {
            let other = (w + 1 + self.rng.below(self.writers.len() as u64 - 1) as usize) % self.writers.len();
            let racing: crate::writer::Race = match self.batch_for(other) {
                Some(r) if self.rng.percent(70) => {
                    desc.push_str(&format!(", racing {}", self.describe(other, &r)));
                    let (writer, ob) = (self.writers[other].clone(), delivery(&self.streams, &r));
                    // the other writer's position moves only if the race runs (a writer with
                    // nothing left to apply returns before its commit)
                    let moved = raced.clone();
                    let ranges: Vec<(usize, i32, usize)> = r.iter().map(|(p, _, e)| (other, *p, *e)).collect();
                    Box::new(move || {
                        async move {
                            writer.lock().await.apply(&ob).await.map(|_| ()).expect("racing apply");
                            moved.lock().await.extend(ranges);
                        }
                        .boxed()
                    })
                }
                _ if self.fx.lake.open(TABLE, None).await.is_ok() => {
                    desc.push_str(", racing a compaction");
                    let lake = self.fx.lake.clone();
                    Box::new(move || {
                        async move {
                            let mut t = lake.open(TABLE, None).await.expect("open");
                            crate::compact(&mut t, &eager())
                                .await
                                .map(|_| ())
                                .expect("racing compaction")
                        }
                        .boxed()
                    })
                }
                _ => Box::new(|| async {}.boxed()),
            };
            self.writers[w].lock().await.race = Some(racing);
        }
        self.log.push(desc);
        let mut writer = self.writers[w].lock().await;
        writer.apply(&b).await.map_err(|e| format!("apply failed: {e}"))?;
        writer.race = None;
        drop(writer);
        for (other, p, e) in raced.lock().await.drain(..) {
            self.cursor.insert((other, p), e);
        }
        for (p, _, e) in ranges {
            self.cursor.insert((w, p), e);
        }
        Ok(())
    }

    /// Partition `p` moves to another writer, which resumes from the table's offset; the old
    /// owner may deliver its in-flight batch after the handoff (a zombie).
    async fn handoff(&mut self) -> Result<(), String> {
        let p = self.rng.below(self.partitions() as u64) as i32;
        let from = self.owner[p as usize];
        let to = (from + 1 + self.rng.below(self.writers.len() as u64 - 1) as usize) % self.writers.len();
        let zombie = self.rng.percent(50).then(|| self.next_range(from, p)).flatten();
        self.owner[p as usize] = to;
        let next = self.writers[to]
            .lock()
            .await
            .next_offset(&app_id(p))
            .await
            .map_err(|e| e.to_string())?;
        self.cursor.insert((to, p), next.unwrap_or(0) as usize);
        self.log.push(format!(
            "partition {p}: writer {from} -> writer {to} (from offset {next:?})"
        ));
        if let Some(r) = zombie {
            self.log.push(format!("zombie {}", self.describe(from, &[r])));
            let b = delivery(&self.streams, &[r]);
            self.writers[from]
                .lock()
                .await
                .apply(&b)
                .await
                .map_err(|e| format!("zombie apply failed: {e}"))?;
        }
        self.writers[from].lock().await.release_partitions(|q| q != p);
        Ok(())
    }

    async fn check(&mut self) -> Result<(), String> {
        let mut model = Model {
            soft: self.soft,
            rows: BTreeMap::new(),
            empty_is_null: !self.fx.partition_by.is_empty(),
        };
        let mut w = self.writers[0].lock().await;
        for p in 0..self.partitions() {
            let next = w.next_offset(&app_id(p)).await.map_err(|e| e.to_string())?.unwrap_or(0);
            for (o, rec) in self.streams[p as usize].iter().enumerate().take(next as usize) {
                model.apply(o as i64, *rec);
            }
        }
        drop(w);
        let exists = self.fx.lake.open(TABLE, None).await.is_ok();
        let actual = if exists { self.fx.rows().await } else { Vec::new() };
        let expected = model.render();
        if actual != expected {
            return Err(format!(
                "the table differs from the model\n  expected: {expected:#?}\n  actual:   {actual:#?}"
            ));
        }
        Ok(())
    }

    async fn go(mut self, steps: usize) -> Result<(), String> {
        for _ in 0..steps {
            let w = self.rng.below(self.writers.len() as u64) as usize;
            match self.rng.below(100) {
                0..50 => self.deliver(w, false).await?,
                50..70 => self.deliver(w, true).await?,
                70..82 => self.handoff().await?,
                82..91 => {
                    self.log.push("compaction".into());
                    if let Ok(mut t) = self.fx.lake.open(TABLE, None).await {
                        crate::compact(&mut t, &eager()).await.map_err(|e| e.to_string())?;
                    }
                }
                _ => {
                    self.log.push(format!("writer {w} crashes and restarts"));
                    *self.writers[w].lock().await = self.fx.writer().await;
                }
            }
            self.check().await?;
        }
        Ok(())
    }
}

async fn sequence(seed: u64, log: &mut Vec<String>) -> Result<(), String> {
    let mut rng = Rng(seed);
    let (mode, deletes) = modes(&mut rng);
    let n = rng.range(2, 3) as i32;
    let writers = rng.range(2, 3) as usize;
    let streams: Vec<Vec<Rec>> = (0..n).map(|p| generate(&mut rng, p, n)).collect();
    log.push(format!(
        "mode {mode:?}, deletes {deletes:?}, {n} partitions, {writers} writers, partition_by {:?}",
        model_partitioning(seed)
    ));
    for (p, s) in streams.iter().enumerate() {
        log.push(format!("p{p}: {}", show(s, 0, s.len())));
    }
    MODE.scope(mode, async {
        let mut fx = Fixture::new(deletes);
        fx.partition_by = model_partitioning(seed);
        let mut ws = Vec::new();
        for _ in 0..writers {
            ws.push(Arc::new(Mutex::new(fx.writer().await)));
        }
        let group = Group {
            owner: (0..n as usize).map(|p| p % writers).collect(),
            rng,
            fx,
            streams,
            writers: ws,
            cursor: BTreeMap::new(),
            soft: deletes == DeleteMode::Soft,
            log,
        };
        group.go(30).await
    })
    .await
}

async fn shard(i: u64, shards: u64) {
    let first = env_u64("CORMORANT_MODEL_SEED", 1);
    let count = env_u64("CORMORANT_GROUP_MODEL_SEQUENCES", 40);
    for seed in (count * i / shards..count * (i + 1) / shards).map(|k| first + k) {
        let mut log = Vec::new();
        let outcome = std::panic::AssertUnwindSafe(sequence(seed, &mut log))
            .catch_unwind()
            .await;
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(panic) => panic_text(panic),
        };
        panic!("group model test failed, seed {seed}\n{}\n=> {error}", log.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_model_shard_0() {
    shard(0, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_model_shard_1() {
    shard(1, 2).await;
}
