//! `cormorant replay`: a bounded re-read of a table's topic, for backfill or rebuild.
//!
//! It reads with its own consumer outside the worker's group (explicit assignment, no offset
//! commits), so a running worker is never disturbed; librdkafka fetches the partitions in
//! parallel. Into the table itself it is idempotent — records below the table's `txn` offsets
//! are skipped — and `--into NEW` builds a fresh table from the range.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use connectors::kafka::RangeReader;
use connectors::registry::SchemaCache;
use indicatif::{ProgressBar, ProgressStyle};
use tables::{Lake, TableWriter, WriterOptions};

use crate::config::{Config, TableConfig};
use crate::worker::{DLQ_TABLE, RunStats, Sinks, apply_records, options};

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
    reader: &RangeReader,
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
    let reader = RangeReader::new(&settings)?;
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
    let source = &source;
    let target = into.unwrap_or(table).to_string();
    let mut run_cfg = cfg.clone();
    run_cfg.tables = vec![TableConfig {
        name: target.clone(),
        ..source.clone()
    }];

    let topic = source.topic.clone();
    let parts = reader.partitions(&topic, Duration::from_secs(10))?;
    let mut marks = HashMap::new();
    for p in &parts {
        marks.insert(*p, reader.watermarks(&topic, *p, Duration::from_secs(10))?);
    }
    let starts = resolve(&reader, &topic, &parts, from, &marks, true)?;
    let ends = resolve(&reader, &topic, &parts, to, &marks, false)?;
    let mut pending: HashMap<i32, i64> = parts
        .iter()
        .filter(|p| starts[p] < ends[p])
        .map(|p| (*p, ends[p]))
        .collect();
    let total: i64 = pending.keys().map(|p| ends[p] - starts[p]).sum();
    let assignment: Vec<(i32, i64)> = pending.keys().map(|p| (*p, starts[p])).collect();
    tracing::info!(table, target, topic, ?starts, ?ends, total, "replay range");

    let lake = Lake::new(&cfg.lake.uri, cfg.lake.storage_options.clone())?;
    let mut writers: HashMap<String, TableWriter> = HashMap::new();
    writers.insert(
        target.clone(),
        TableWriter::open(&lake, &target, options(&run_cfg.tables[0])).await?,
    );
    let mut dlq = TableWriter::open(&lake, DLQ_TABLE, WriterOptions::default()).await?;
    let cache = Arc::new(SchemaCache::new(&cfg.registry.settings())?);
    let offsets = Arc::new(Mutex::new(HashMap::new()));
    let schemas = Arc::new(Mutex::new(HashMap::new()));
    if let Ok(s) = writers[&target].table().snapshot() {
        crate::worker::lock(&schemas).insert(target.clone(), s.snapshot().arrow_schema());
    }
    let bar = if progress {
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
    let started = Instant::now();
    let mut stats = RunStats::default();
    if !assignment.is_empty() {
        reader.assign(&topic, &assignment)?;
    }
    let mut idle = 0;
    while !pending.is_empty() {
        let records = reader
            .poll_batch(
                cfg.kafka.batch_max_records,
                Duration::from_secs(1),
                Duration::from_millis(cfg.kafka.batch_linger_ms),
            )
            .await?;
        let mut in_range = Vec::with_capacity(records.len());
        for r in records {
            if let Some(end) = pending.get(&r.partition).copied() {
                if r.offset + 1 >= end {
                    pending.remove(&r.partition);
                }
                if r.offset < end {
                    in_range.push(r);
                }
            }
        }
        if in_range.is_empty() {
            idle += 1;
            // offsets can have holes (compacted topics, transaction markers): give up waiting
            // for the range's last offsets after a quiet spell
            if idle >= 10 {
                tracing::warn!(?pending, "no more records in range; the last offsets may not exist");
                break;
            }
            continue;
        }
        idle = 0;
        let n = in_range.len() as u64;
        let mut sinks = Sinks {
            lake: &lake,
            writers: &mut writers,
            dlq: &mut dlq,
            offsets: &offsets,
            schemas: &schemas,
        };
        let letters = apply_records(&run_cfg, &cache, &mut sinks, in_range, &mut stats).await?;
        stats.records += n;
        stats.dead_letters += letters as u64;
        bar.inc(n);
        bar.set_message(format!("{} partitions left", pending.len()));
    }
    bar.finish_and_clear();
    Ok(ReplaySummary {
        table: target.clone(),
        events: stats.records,
        dead_letters: stats.dead_letters,
        commits: stats.commits,
        seconds: started.elapsed().as_secs_f64(),
        version: lake.open(&target, None).await.ok().and_then(|t| t.version()),
    })
}
