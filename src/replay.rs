//! `cormorant replay`: a bounded re-read of a table's topic, for backfill or rebuild.
//!
//! It reads with its own consumer outside the worker's group (explicit assignment, no offset
//! commits), so a running worker is never disturbed; librdkafka fetches the partitions in
//! parallel, and the records go through the same pipeline as the worker's. Into the table itself it is idempotent — records below the table's `txn` offsets
//! are skipped — and `--into NEW` builds a fresh table from the range.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use connectors::kafka::{Assignment, KafkaSource, RawBatch};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::config::{Config, TableConfig};
use crate::pipeline::Pipeline;

/// One end of a replay range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// `earliest` (from) or `latest` (to: the end offsets when the replay starts)
    Edge,
    /// the first record at or after this time (ms since the epoch)
    Time(i64),
    /// explicit offsets per partition (`0:120,1:98`); `--to` offsets are exclusive
    Offsets(Vec<(i32, i64)>),
}

impl std::str::FromStr for Bound {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "earliest" || s == "latest" {
            return Ok(Bound::Edge);
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(Bound::Time(t.timestamp_millis()));
        }
        let offsets: Result<Vec<(i32, i64)>, String> = s
            .split(',')
            .map(|part| {
                let (p, o) = part
                    .split_once(':')
                    .ok_or_else(|| format!("{part:?} is not partition:offset"))?;
                Ok((
                    p.trim().parse().map_err(|_| format!("bad partition {p:?}"))?,
                    o.trim().parse().map_err(|_| format!("bad offset {o:?}"))?,
                ))
            })
            .collect();
        offsets
            .map(Bound::Offsets)
            .map_err(|e| format!("{e}; use earliest|latest, an RFC 3339 time, or partition:offset,…"))
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    pub table: String,
    pub events: u64,
    pub dead_letters: u64,
    pub commits: u64,
    pub seconds: f64,
    pub version: Option<u64>,
}

fn resolve(
    reader: &KafkaSource,
    topic: &str,
    parts: &[i32],
    bound: &Bound,
    marks: &HashMap<i32, (i64, i64)>,
    start: bool,
) -> anyhow::Result<HashMap<i32, i64>> {
    let edge = |p: &i32| if start { marks[p].0 } else { marks[p].1 };
    Ok(match bound {
        Bound::Edge => parts.iter().map(|p| (*p, edge(p))).collect(),
        Bound::Time(ms) => reader
            .offsets_for_time(topic, parts, *ms, Duration::from_secs(10))?
            .into_iter()
            .map(|(p, o)| (p, o.unwrap_or(marks[&p].1)))
            .collect(),
        Bound::Offsets(list) => {
            let given: HashMap<i32, i64> = list.iter().copied().collect();
            // partitions not named: nothing from them (start at their end / end at their start)
            parts
                .iter()
                .map(|p| {
                    (
                        *p,
                        given
                            .get(p)
                            .copied()
                            .unwrap_or(if start { marks[p].1 } else { marks[p].0 }),
                    )
                })
                .collect()
        }
    })
}

/// Replays `table`'s topic from `from` to `to` into `into` (default: the table itself).
pub async fn replay(
    cfg: &Config,
    table: &str,
    from: &Bound,
    to: &Bound,
    into: Option<&str>,
    progress: bool,
) -> anyhow::Result<ReplaySummary> {
    let settings = cfg.kafka.settings();
    let reader = Arc::new(KafkaSource::reader(&settings)?);
    let source = match cfg.tables.iter().find(|t| t.name == table && !t.topic.is_empty()) {
        Some(t) => t.clone(),
        // a table named by kafka.topic_pattern: the topic that maps to it
        None => reader
            .topics(Duration::from_secs(10))?
            .iter()
            .filter_map(|topic| cfg.table_for_topic(topic))
            .find(|t| t.name == table)
            .with_context(|| format!("no topic feeds table {table}: add a [[tables]] entry with its topic"))?,
    };
    let target = into.unwrap_or(table).to_string();
    let mut run_cfg = cfg.clone();
    run_cfg.tables = vec![TableConfig {
        name: target.clone(),
        ..source.clone()
    }];
    run_cfg.kafka.topic_pattern = None;

    let topic = source.topic.clone();
    let parts = reader.partitions(&topic, Duration::from_secs(10))?;
    let mut marks = HashMap::new();
    for p in &parts {
        marks.insert(*p, reader.watermarks(&topic, *p, Duration::from_secs(10))?);
    }
    let starts = resolve(&reader, &topic, &parts, from, &marks, true)?;
    let ends = resolve(&reader, &topic, &parts, to, &marks, false)?;
    let pending: HashMap<i32, i64> = parts
        .iter()
        .filter(|p| starts[p] < ends[p])
        .map(|p| (*p, ends[p]))
        .collect();
    let total: i64 = pending.keys().map(|p| ends[p] - starts[p]).sum();
    let assignment: Vec<(i32, i64)> = pending.keys().map(|p| (*p, starts[p])).collect();
    tracing::info!(table, target, topic, ?starts, ?ends, total, "replay range");

    let lake = cfg.lake.open()?;
    let stop = Arc::new(AtomicBool::new(false));
    // the pipeline's own flag, never raised: `stop` ends the reader once the range is fed,
    // and a pipeline that saw it would drop the batches it still decodes; it ends when the
    // feed closes its channel
    let pipeline_stop = Arc::new(AtomicBool::new(false));
    let pipeline = Pipeline::new(
        &run_cfg,
        &lake,
        &run_cfg.tables,
        Assignment::everything(),
        pipeline_stop,
    )
    .await?;
    let done = pipeline.progress();
    let bar = progress_bar(progress, total);
    let started = Instant::now();
    let (raw_tx, raw_rx) = mpsc::channel(1);
    let (tx, rx) = mpsc::channel(1);
    let applying = tokio::spawn(pipeline.run(rx));
    let poller = if assignment.is_empty() {
        None
    } else {
        reader.assign(&topic, &assignment)?;
        Some(reader.clone().start(cfg.kafka.limits(), raw_tx, stop.clone())?)
    };
    let fed = feed_range(raw_rx, tx, pending, &bar).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = poller {
        let _ = tokio::task::spawn_blocking(move || p.join()).await;
    }
    let stats = applying.await??;
    bar.finish_and_clear();
    Ok(ReplaySummary {
        table: target.clone(),
        events: fed,
        dead_letters: stats.dead_letters,
        commits: stats.commits.max(done.stats().commits),
        seconds: started.elapsed().as_secs_f64(),
        version: lake.open(&target, None).await.ok().and_then(|t| t.version()),
    })
}

fn progress_bar(visible: bool, total: i64) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(total.max(0) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} events · {per_sec} · ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Forwards the records inside the range to the pipeline until every partition reached its
/// end (or the range's last offsets turn out not to exist); returns how many it forwarded.
async fn feed_range(
    mut raw: mpsc::Receiver<RawBatch>,
    tx: mpsc::Sender<RawBatch>,
    mut pending: HashMap<i32, i64>,
    bar: &ProgressBar,
) -> u64 {
    let mut fed = 0u64;
    while !pending.is_empty() {
        // offsets can have holes (compacted topics, transaction markers): give up waiting for
        // the range's last offsets after a quiet spell
        let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(10), raw.recv()).await else {
            tracing::warn!(?pending, "no more records in range; the last offsets may not exist");
            break;
        };
        let mut in_range = RawBatch::default();
        for r in batch.records {
            if let Some(end) = pending.get(&r.partition).copied() {
                if r.offset + 1 >= end {
                    pending.remove(&r.partition);
                }
                if r.offset < end {
                    in_range.bytes += r.bytes();
                    in_range.records.push(r);
                }
            }
        }
        let n = in_range.records.len() as u64;
        if n > 0 && tx.send(in_range).await.is_err() {
            break; // the pipeline failed; it reports why
        }
        fed += n;
        bar.inc(n);
        bar.set_message(format!("{} partitions left", pending.len()));
    }
    fed
}
