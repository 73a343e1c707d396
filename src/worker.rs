//! The streaming worker (`cormorant run`): poll → decode → one commit per table per batch.
//!
//! Invariants:
//! - a table's offsets live in its own `txn` actions; on every assignment the consumer is
//!   positioned from them (never from Kafka's committed offsets);
//! - dead letters are committed to `_dlq` (with their own `txn` offsets, so re-reading a
//!   batch does not duplicate them) BEFORE the tables move past those records — a crash in
//!   between re-reads the batch, it never loses a record;
//! - a batch that cannot be applied stops the worker with an error; nothing is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use connectors::kafka::{KafkaSettings, KafkaSource, OffsetLookup};
use connectors::registry::SchemaCache;
use connectors::{BatchDecoder, Position, RawRecord, SourceOffset, dlq};
use tables::{Lake, TableWriter, WriterOptions};

use crate::config::{Config, TableConfig};

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

pub(crate) type Offsets = Arc<Mutex<HashMap<(String, i32), i64>>>;
pub(crate) type Schemas = Arc<Mutex<HashMap<String, arrow::datatypes::SchemaRef>>>;

/// Runs the worker until `stop` is set (or, with `until_caught_up`, until everything that was
/// in the topics at start is committed).
pub async fn run(cfg: &Config, until_caught_up: bool, stop: Arc<AtomicBool>) -> anyhow::Result<RunStats> {
    anyhow::ensure!(
        !cfg.tables.is_empty() || cfg.kafka.topic_pattern.is_some(),
        "no tables configured: add a [[tables]] entry (name, topic) or kafka.topic_pattern to the config file"
    );
    let lake = Lake::new(&cfg.lake.uri, cfg.lake.storage_options.clone())?;
    let group = cfg.kafka.group_id.clone();
    if let Some(addr) = &cfg.metrics.address {
        let addr = addr
            .parse()
            .with_context(|| format!("metrics.address {addr:?} is not host:port"))?;
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(addr).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let mut writers: HashMap<String, TableWriter> = HashMap::new();
    let mut dlq_writer = TableWriter::open(&lake, DLQ_TABLE, WriterOptions::default()).await?;

    let offsets: Offsets = Arc::new(Mutex::new(HashMap::new()));
    let lookup_map = offsets.clone();
    let lookup: OffsetLookup =
        Arc::new(move |topic: &str, p: i32| lookup_map.lock().ok()?.get(&(topic.to_string(), p)).copied());
    let mut properties = cfg.kafka.properties.clone();
    if cfg.kafka.topic_pattern.is_some() {
        // notice topics created while running within seconds, not librdkafka's default 5 minutes
        properties
            .entry("topic.metadata.refresh.interval.ms".into())
            .or_insert_with(|| "5000".into());
    }
    let source = KafkaSource::new(
        &KafkaSettings {
            brokers: cfg.kafka.brokers.clone(),
            group_id: group.clone(),
            properties,
        },
        lookup,
    )?;
    // The topics there are now; where each partition stands, from the tables; and what
    // "caught up" means.
    let mut present: Vec<TableConfig> = cfg.tables.iter().filter(|t| !t.topic.is_empty()).cloned().collect();
    if cfg.kafka.topic_pattern.is_some() {
        for topic in source.topics(Duration::from_secs(10))? {
            if !present.iter().any(|t| t.topic == topic)
                && let Some(t) = cfg.table_for_topic(&topic)
            {
                present.push(t);
            }
        }
    }
    let mut targets: HashMap<(String, i32), i64> = HashMap::new();
    for t in &present {
        let parts = source
            .partitions(&t.topic, Duration::from_secs(10))
            .with_context(|| format!("table {}: reading topic {}", t.name, t.topic))?;
        let writer = match writers.entry(t.name.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(TableWriter::open(&lake, &t.name, options(t)).await?)
            }
        };
        for p in parts {
            let app = connectors::change::app_id(&format!("{group}:{}", t.topic), p);
            if let Some(next) = writer.next_offset(&app).await? {
                lock(&offsets).insert((t.topic.clone(), p), next);
            }
            if until_caught_up {
                let (_, high) = source.watermarks(&t.topic, p, Duration::from_secs(10))?;
                targets.insert((t.topic.clone(), p), high);
            }
        }
    }
    let mut topics: Vec<String> = cfg
        .tables
        .iter()
        .filter(|t| !t.topic.is_empty())
        .map(|t| t.topic.clone())
        .collect();
    topics.extend(cfg.kafka.topic_pattern.clone());
    source.subscribe(&topics)?;
    tracing::info!(?topics, group, lake = %lake.root(), "worker started");

    let cache = Arc::new(SchemaCache::new(&cfg.registry.settings())?);
    // Table schemas as of their last commit: a record whose schema a table cannot take goes to
    // the dead-letter table with the reason instead of stopping the worker.
    let schemas: Schemas = Arc::new(Mutex::new(HashMap::new()));
    for (name, w) in &writers {
        if let Ok(s) = w.table().snapshot() {
            lock(&schemas).insert(name.clone(), s.snapshot().arrow_schema());
        }
    }
    let mut stats = RunStats::default();
    let mut commits_since_compaction: HashMap<String, u64> = HashMap::new();
    let mut last_lag: Option<std::time::Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            tracing::info!("stop requested; last batch committed, exiting");
            break;
        }
        if until_caught_up && caught_up(&targets, &offsets) {
            tracing::info!("caught up with the topics' end offsets at start, exiting");
            break;
        }
        let records = match source
            .poll_batch(
                cfg.kafka.batch_max_records,
                Duration::from_secs(1),
                Duration::from_millis(cfg.kafka.batch_linger_ms),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "poll failed, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        let n = records.len();
        let batch_started = std::time::Instant::now();
        let mut sinks = Sinks {
            lake: &lake,
            writers: &mut writers,
            dlq: &mut dlq_writer,
            offsets: &offsets,
            schemas: &schemas,
        };
        let letters = apply_records(cfg, &cache, &mut sinks, records, &mut stats).await?;
        crate::metrics::METRICS
            .batch_seconds
            .with_label_values(&["*"])
            .observe(batch_started.elapsed().as_secs_f64());
        stats.batches += 1;
        stats.records += n as u64;
        stats.dead_letters += letters as u64;
        let done: Vec<(String, i32, i64)> = lock(&offsets).iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        source.commit(&done);
        // the lag gauge asks the broker for every partition's end: not on every batch
        let lag_due = last_lag.is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(10));
        if lag_due {
            last_lag = Some(std::time::Instant::now());
        }
        for (topic, p, next) in done.iter().filter(|_| lag_due) {
            if let (Some(t), Ok((_, high))) = (
                cfg.table_for_topic(topic),
                source.watermarks(topic, *p, Duration::from_secs(2)),
            ) {
                crate::metrics::METRICS
                    .lag
                    .with_label_values(&[t.name.as_str(), &p.to_string()])
                    .set(high - next);
            }
        }
        if cfg.compaction.inline {
            compact_due(cfg, &lake, &writers, &mut commits_since_compaction).await;
        }
    }
    Ok(stats)
}

/// Inline compaction of the tables that committed `every_commits` times since their last one.
/// Failures are logged, never fatal: compaction only reorganizes committed data.
async fn compact_due(
    cfg: &Config,
    lake: &Lake,
    writers: &HashMap<String, TableWriter>,
    since: &mut HashMap<String, u64>,
) {
    for (name, w) in writers {
        let version = w.table().version().unwrap_or(0);
        let last = since.entry(name.clone()).or_insert(version);
        if version < *last + cfg.compaction.every_commits {
            continue;
        }
        *last = version;
        match lake.open(name, None).await {
            Ok(mut table) => match tables::compact(&mut table, &cfg.compaction.options).await {
                Ok(r) if r.version.is_some() => {
                    tracing::info!(table = %name, version = ?r.version, removed = r.files_removed, added = r.files_added, "compacted");
                    let m = &crate::metrics::METRICS;
                    m.compactions.with_label_values(&[name.as_str()]).inc();
                    m.compaction_bytes
                        .with_label_values(&[name.as_str()])
                        .inc_by(r.bytes_written);
                    *last = r.version.unwrap_or(version);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(table = %name, error = %e, "inline compaction failed; will retry later"),
            },
            Err(e) => tracing::warn!(table = %name, error = %e, "cannot open table for compaction"),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn options(t: &TableConfig) -> WriterOptions {
    WriterOptions {
        deletes: t.deletes,
        mode: t.mode,
    }
}

fn caught_up(targets: &HashMap<(String, i32), i64>, offsets: &Offsets) -> bool {
    let done = lock(offsets);
    targets
        .iter()
        .all(|(k, high)| done.get(k).copied().unwrap_or(0) >= *high)
}

/// Where a batch's results go.
pub(crate) struct Sinks<'a> {
    pub(crate) lake: &'a Lake,
    /// writers by table name; a table named by `kafka.topic_pattern` gets one on first use
    pub(crate) writers: &'a mut HashMap<String, TableWriter>,
    pub(crate) dlq: &'a mut TableWriter,
    /// next offsets applied, per (topic, partition)
    pub(crate) offsets: &'a Offsets,
    /// table schemas as of their last commit
    pub(crate) schemas: &'a Schemas,
}

/// Decodes and applies one poll's records. Returns the number of dead letters.
pub(crate) async fn apply_records(
    cfg: &Config,
    cache: &Arc<SchemaCache>,
    sinks: &mut Sinks<'_>,
    records: Vec<RawRecord>,
    stats: &mut RunStats,
) -> anyhow::Result<usize> {
    let (writers, dlq_writer, offsets, schemas) = (&mut *sinks.writers, &mut *sinks.dlq, sinks.offsets, sinks.schemas);
    let lake = sinks.lake;
    let known = schemas.clone();
    let guard: connectors::SchemaGuard = Arc::new(move |table: &str, fields: &[arrow::datatypes::Field]| {
        let mut known = lock(&known);
        match known.get(table) {
            Some(schema) => tables::evolve::plan(schema, fields).map(|_| ()),
            None => {
                // a table this batch creates: its first schema is the one the rest must fit
                let mut all = fields.to_vec();
                all.extend(connectors::change::meta_fields());
                known.insert(table.to_string(), Arc::new(arrow::datatypes::Schema::new(all)));
                Ok(())
            }
        }
    });
    let mut decoder = BatchDecoder::new(cache.clone(), cfg.kafka.group_id.clone()).with_guard(guard);
    for rec in records {
        let Some(table) = cfg.table_for_topic(&rec.topic).map(|t| t.name.clone()) else {
            continue;
        };
        crate::metrics::METRICS
            .events_read
            .with_label_values(&[table.as_str()])
            .inc();
        let mut delay = Duration::from_millis(500);
        loop {
            match decoder.push(&table, rec.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "transient failure while decoding, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    let decoded = decoder.finish()?;
    let letters = decoded.dead_letters.len();
    for d in &decoded.dead_letters {
        let table = cfg
            .table_for_topic(&d.record.topic)
            .map_or(d.record.topic.clone(), |t| t.name);
        crate::metrics::METRICS
            .dead_letters
            .with_label_values(&[table.as_str()])
            .inc();
    }
    if !decoded.dead_letters.is_empty() {
        let batch = dlq::to_batch(&decoded.dead_letters)?;
        let positions: Vec<Position> = decoded
            .dead_letters
            .iter()
            .map(|d| Position {
                partition: d.record.partition,
                offset: d.record.offset,
            })
            .collect();
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for d in &decoded.dead_letters {
            let e = next.entry((d.record.topic.clone(), d.record.partition)).or_insert(0);
            *e = (*e).max(d.record.offset + 1);
        }
        // one append per topic: app ids are per topic-partition
        for topic in next
            .keys()
            .map(|(t, _)| t.clone())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let rows: Vec<bool> = decoded.dead_letters.iter().map(|d| d.record.topic == topic).collect();
            let part = arrow::compute::filter_record_batch(&batch, &arrow::array::BooleanArray::from(rows.clone()))?;
            let pos: Vec<Position> = positions
                .iter()
                .zip(&rows)
                .filter(|(_, k)| **k)
                .map(|(p, _)| *p)
                .collect();
            let offs: Vec<SourceOffset> = next
                .iter()
                .filter(|((t, _), _)| *t == topic)
                .map(|((t, p), o)| SourceOffset {
                    stream: format!("{}:{t}", cfg.kafka.group_id),
                    partition: *p,
                    next_offset: *o,
                })
                .collect();
            dlq_writer
                .append(&part, &pos, &offs)
                .await
                .context("writing the dead-letter table")?;
            stats.commits += 1;
        }
    }
    for (table, batch) in decoded.tables {
        if !writers.contains_key(&table) {
            // a table named by kafka.topic_pattern, first seen in this batch
            let topic = batch
                .offsets
                .first()
                .and_then(|o| o.stream.rsplit_once(':'))
                .map(|(_, t)| t.to_string());
            let Some(tc) = topic.and_then(|t| cfg.table_for_topic(&t)) else {
                continue;
            };
            tracing::info!(table, topic = %tc.topic, "new table from a topic");
            writers.insert(table.clone(), TableWriter::open(lake, &table, options(&tc)).await?);
        }
        let Some(writer) = writers.get_mut(&table) else {
            continue;
        };
        let commit_started = std::time::Instant::now();
        let applied = writer
            .apply(&batch)
            .await
            .with_context(|| format!("applying a batch to table {table}; the worker stops so that nothing is skipped — fix the cause and restart, it resumes from the table's offsets"))?;
        let m = &crate::metrics::METRICS;
        m.commit_seconds
            .with_label_values(&[table.as_str()])
            .observe(commit_started.elapsed().as_secs_f64());
        m.rows_applied
            .with_label_values(&[table.as_str()])
            .inc_by((applied.rows_in - applied.rows_skipped) as u64);
        if applied.version.is_some() {
            stats.commits += 1;
            if let Ok(s) = writer.table().snapshot() {
                lock(schemas).insert(table.clone(), s.snapshot().arrow_schema());
            }
        }
        tracing::info!(table, version = ?applied.version, rows = applied.rows_in, skipped = applied.rows_skipped, written = applied.rows_written, "batch applied");
        let topic = cfg
            .tables
            .iter()
            .find(|t| t.name == table)
            .map(|t| t.topic.clone())
            .unwrap_or_default();
        let mut m = lock(offsets);
        for o in &batch.offsets {
            let e = m.entry((topic.clone(), o.partition)).or_insert(o.next_offset);
            *e = (*e).max(o.next_offset);
        }
    }
    Ok(letters)
}
