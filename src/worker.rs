//! The streaming worker (`cormorant run`): a consumer-group member feeding the
//! [`Pipeline`](crate::pipeline::Pipeline).
//!
//! Invariants:
//! - a table's offsets live in its own `txn` actions; on every assignment the consumer is
//!   positioned from them, read from the table at that moment (so a partition taken over from
//!   another worker resumes exactly where that worker's last commit left it);
//! - with `--until-caught-up`, the worker exits once EVERY partition of the group's topics —
//!   whoever owns it — has reached the end offset it had when this worker started, as recorded
//!   in the tables; a worker done with its own partitions keeps its place in the group until
//!   then, so it can take over the partitions of a member that dies.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use change::StreamId;
use connectors::kafka::{KafkaSource, OffsetLookup};
use tables::{Lake, OffsetsWatch};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::{Config, TableConfig};
pub use crate::pipeline::{DLQ_TABLE, RunStats};
use crate::pipeline::{Pipeline, Progress};

/// Offsets recorded by each table, by table name.
type Watches = Arc<AsyncMutex<HashMap<String, OffsetsWatch>>>;

/// Looks up where the table says a partition resumes; runs on the consumer's thread (in
/// rebalance callbacks), outside the runtime, so it blocks on the runtime's handle.
fn offset_lookup(cfg: &Config, lake: &Lake, watches: &Watches) -> OffsetLookup {
    let (cfg, lake, watches) = (cfg.clone(), lake.clone(), watches.clone());
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |topic: &str, partition: i32| {
        let Some(tc) = cfg.table_for_topic(topic) else {
            return Ok(None);
        };
        let app = StreamId::new(&cfg.kafka.group_id, topic).app_id(partition);
        let lookup = async {
            let mut watches = watches.lock().await;
            let w = watches
                .entry(tc.name.clone())
                .or_insert_with(|| OffsetsWatch::new(&lake, &tc.name));
            w.refresh().await?;
            w.get(&app).await
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // a rebalance callback run by a consumer closed on the runtime (a stop during
            // start-up): blocking here would panic; the group's offset is the safe answer
            return Err("the table's offsets cannot be read from the runtime; using the group's".to_string());
        }
        handle.block_on(async {
            match tokio::time::timeout(Duration::from_secs(30), lookup).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("reading the table's offsets timed out after 30 s".to_string()),
            }
        })
    })
}

/// The tables whose topics exist now (explicit entries, and topics the pattern matches).
fn present_tables(cfg: &Config, source: &KafkaSource) -> anyhow::Result<Vec<TableConfig>> {
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
    Ok(present)
}

/// The end offset of every partition of the tables' topics, as of now.
fn end_offsets(source: &KafkaSource, tables: &[TableConfig]) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let mut targets = HashMap::new();
    for t in tables {
        let parts = source
            .partitions(&t.topic, Duration::from_secs(10))
            .with_context(|| format!("table {}: reading topic {}", t.name, t.topic))?;
        for p in parts {
            let (_, high) = source.watermarks(&t.topic, p, Duration::from_secs(10))?;
            targets.insert((t.topic.clone(), p), high);
        }
    }
    Ok(targets)
}

/// Whether every target partition is recorded (by any member) at or past its end offset.
async fn caught_up(
    cfg: &Config,
    lake: &Lake,
    targets: &HashMap<(String, i32), i64>,
    progress: &Progress,
    watches: &Watches,
) -> anyhow::Result<bool> {
    let mut watches = watches.lock().await;
    let mut refreshed = std::collections::HashSet::new();
    for ((topic, p), high) in targets {
        if progress.applied_to(topic, *p).unwrap_or(0) >= *high || *high == 0 {
            continue;
        }
        let Some(tc) = cfg.table_for_topic(topic) else { continue };
        let w = watches
            .entry(tc.name.clone())
            .or_insert_with(|| OffsetsWatch::new(lake, &tc.name));
        let app = StreamId::new(&cfg.kafka.group_id, topic).app_id(*p);
        let read = async {
            if refreshed.insert(tc.name.clone()) {
                w.refresh().await?;
            }
            w.get(&app).await
        };
        match read.await {
            Ok(next) if next.unwrap_or(0) >= *high => {}
            Ok(_) => return Ok(false),
            // a store hiccup: not caught up as far as we know; the next check reads again
            Err(e) if e.is_retryable() => {
                tracing::debug!(table = %tc.name, error = %e, "reading the table's offsets failed; checking again later");
                return Ok(false);
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading the offsets of table {}", tc.name))),
        }
    }
    Ok(true)
}

/// Runs the worker until `stop` is set (or, with `until_caught_up`, until everything that was
/// in the topics at start is committed by the group).
pub async fn run(cfg: &Config, until_caught_up: bool, stop: Arc<AtomicBool>) -> anyhow::Result<RunStats> {
    anyhow::ensure!(
        !cfg.tables.is_empty() || cfg.kafka.topic_pattern.is_some(),
        "no tables configured: add a [[tables]] entry (name, topic) or kafka.topic_pattern to the config file"
    );
    let lake = cfg.lake.open()?;
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
    let watches: Watches = Arc::new(AsyncMutex::new(HashMap::new()));
    let mut properties = cfg.kafka.properties.clone();
    if cfg.kafka.topic_pattern.is_some() {
        // a pattern's new topics are noticed within 5 s (the consumer's own setting is 10 s,
        // librdkafka's default 5 minutes)
        properties
            .entry("topic.metadata.refresh.interval.ms".into())
            .or_insert_with(|| "5000".into());
    }
    let membership = crate::membership::resolve(&cfg.kafka.instance_id, &cfg.kafka.group_id)
        .context("choosing the worker's group.instance.id (kafka.instance_id)")?;
    let settings = connectors::kafka::KafkaSettings {
        properties,
        instance_id: membership.instance_id.clone(),
        ..cfg.kafka.settings()
    };
    let source = Arc::new(KafkaSource::new(&settings, offset_lookup(cfg, &lake, &watches))?);
    let accepts = cfg.clone();
    source.set_gap_policy(Arc::new(move |topic: &str| {
        accepts
            .table_for_topic(topic)
            .is_some_and(|t| t.on_data_loss == crate::config::OnDataLoss::Skip)
    }));
    let present = present_tables(cfg, &source)?;
    let targets = if until_caught_up {
        end_offsets(&source, &present)?
    } else {
        HashMap::new()
    };
    let mut topics: Vec<String> = cfg
        .tables
        .iter()
        .filter(|t| !t.topic.is_empty())
        .map(|t| t.topic.clone())
        .collect();
    topics.extend(cfg.kafka.topic_pattern.clone());
    source.subscribe(&topics)?;
    tracing::info!(?topics, group = %cfg.kafka.group_id, instance = ?membership.instance_id, lake = %lake.root(), "worker started");

    let poll_stop = Arc::new(AtomicBool::new(false));
    // opening the tables reads the lake, which may hang: a stop does not wait for it
    let pipeline = tokio::select! {
        p = Pipeline::new(cfg, &lake, &present, source.assignment(), poll_stop.clone()) => p?.with_user_stop(stop.clone()),
        _ = crate::stop::requested(&stop) => {
            tracing::info!("stop requested while opening the tables; exiting (nothing was applied)");
            // closing the consumer runs rebalance callbacks that block: off the runtime
            let _ = tokio::time::timeout(Duration::from_secs(1), tokio::task::spawn_blocking(move || drop(source))).await;
            return Ok(RunStats::default());
        }
    };
    let progress = pipeline.progress();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let poller = source.clone().start(cfg.kafka.limits(), tx, poll_stop.clone())?;
    let mut applying = tokio::spawn(pipeline.run(rx));
    let mut last_lag: Option<Instant> = None;
    // lag comes from a client of its own: on the group consumer's connection a watermark query
    // waits behind the broker's long-polled fetch (fetch.wait.max.ms per partition — seen as
    // 24 s for 48 idle partitions), and it runs beside the loop, never in it
    let lag_reader = KafkaSource::reader(&settings).ok().map(Arc::new);
    let mut lag_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut idle = Unassigned::new();
    crate::health::HEALTH.set_stall_after(Duration::from_secs(cfg.metrics.stall_seconds.max(1)));
    let result = loop {
        tokio::select! {
            r = &mut applying => break Some(r),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = crate::stop::requested(&stop) => {}
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!("stop requested; finishing the batches in flight, then exiting");
            break None;
        }
        source.commit(&progress.applied());
        idle.check(&source.assignment(), membership.instance_id.as_deref());
        let stats = progress.stats();
        crate::health::HEALTH.observe(!source.assignment().is_empty(), stats.records + stats.commits);
        count_gaps(cfg, &source);
        let lag_idle = lag_task.as_ref().is_none_or(|t| t.is_finished());
        if lag_idle
            && last_lag.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            && let Some(reader) = &lag_reader
        {
            last_lag = Some(Instant::now());
            lag_task = Some(report_lag(cfg, reader, &source, &progress));
        }
        if until_caught_up && caught_up(cfg, &lake, &targets, &progress, &watches).await? {
            tracing::info!("every partition caught up with its end offset at start; exiting");
            break None;
        }
    };
    poll_stop.store(true, Ordering::Relaxed);
    let stopping = stop.load(Ordering::Relaxed);
    // the poll thread wakes within its poll timeout, but a rebalance callback waiting on a hung
    // lake can hold it: a stop does not wait for it
    let poller = tokio::task::spawn_blocking(move || poller.join());
    let _ = tokio::time::timeout(Duration::from_secs(if stopping { 1 } else { 60 }), poller).await;
    let stats = match result {
        Some(r) => r??,
        None if stopping => finish_or_abandon(applying, &progress).await?,
        None => applying.await??,
    };
    source.commit(&progress.applied());
    count_gaps(cfg, &source);
    if let Some(e) = source.take_fatal() {
        return Err(fatal_consumer_error(cfg, e));
    }
    Ok(stats)
}

/// Counts the gaps the consumer skipped (`on_data_loss = "skip"`) per table; the consumer
/// already logged each one when it skipped it.
fn count_gaps(cfg: &Config, source: &KafkaSource) {
    for gap in source.take_gaps() {
        let table = cfg.table_for_topic(&gap.topic).map(|t| t.name).unwrap_or_default();
        crate::metrics::METRICS
            .data_loss_skipped
            .with_label_values(&[&table])
            .inc_by((gap.earliest - gap.from).max(0) as u64);
    }
}

/// The error that stopped the consumer, naming the table it concerns.
fn fatal_consumer_error(cfg: &Config, e: connectors::ConnectorError) -> anyhow::Error {
    match &e {
        connectors::ConnectorError::DataLoss { topic, .. } => {
            let table = cfg.table_for_topic(topic).map(|t| t.name).unwrap_or_default();
            anyhow::anyhow!("table {table:?}: {e}")
        }
        _ => anyhow::Error::new(e),
    }
}

/// Says so when the group gives this worker no partition for a while: silent, it would look
/// like a worker with nothing to do.
struct Unassigned {
    since: Instant,
    warned: Option<Instant>,
}

impl Unassigned {
    const FIRST: Duration = Duration::from_secs(30);
    const AGAIN: Duration = Duration::from_secs(300);

    fn new() -> Self {
        Self {
            since: Instant::now(),
            warned: None,
        }
    }

    fn check(&mut self, assignment: &connectors::kafka::Assignment, instance_id: Option<&str>) {
        if !assignment.is_empty() {
            self.since = Instant::now();
            self.warned = None;
            return;
        }
        let due = self.warned.map_or(Self::FIRST, |_| Self::AGAIN);
        if self.warned.unwrap_or(self.since).elapsed() < due {
            return;
        }
        self.warned = Some(Instant::now());
        let stalled = self.since.elapsed().as_secs();
        match instance_id {
            Some(id) => tracing::warn!(
                stalled_s = stalled,
                instance = id,
                "no partition assigned for {stalled} s. Either the group has more workers than partitions, or the broker does not hand partitions back to a static member (Tansu does not): set kafka.instance_id = \"none\""
            ),
            None => tracing::warn!(
                stalled_s = stalled,
                "no partition assigned for {stalled} s: the group has more workers than partitions, or the broker is not answering group requests (check its logs)"
            ),
        }
    }
}

/// How long a stop waits for the batches in flight to commit before abandoning them.
const STOP_GRACE: Duration = Duration::from_millis(2500);

/// Lets the pipeline finish what it holds within [`STOP_GRACE`], else abandons it: a Delta
/// commit is atomic, so an abandoned batch is either committed whole or not at all (its data
/// files are orphans for vacuum), and the next start resumes from the tables' offsets.
async fn finish_or_abandon(
    mut applying: tokio::task::JoinHandle<anyhow::Result<RunStats>>,
    progress: &Progress,
) -> anyhow::Result<RunStats> {
    match tokio::time::timeout(STOP_GRACE, &mut applying).await {
        Ok(r) => r?,
        Err(_) => {
            applying.abort();
            tracing::warn!(
                grace = ?STOP_GRACE,
                "the batch in flight did not finish in time (a service is slow or hung); abandoned it uncommitted — the next start re-reads it from the tables' offsets"
            );
            Ok(progress.stats())
        }
    }
}

/// Sets the lag gauge of the partitions this worker owns (asks the broker, off the runtime).
fn report_lag(
    cfg: &Config,
    reader: &Arc<KafkaSource>,
    source: &Arc<KafkaSource>,
    progress: &Arc<Progress>,
) -> tokio::task::JoinHandle<()> {
    let (cfg, reader, source, progress) = (cfg.clone(), reader.clone(), source.clone(), progress.clone());
    tokio::task::spawn_blocking(move || {
        let mut waiting = 0;
        for (topic, p, next) in progress.applied() {
            if !source.assignment().owns(&topic, p) {
                continue;
            }
            if let (Some(t), Ok((_, high))) = (
                cfg.table_for_topic(&topic),
                reader.watermarks(&topic, p, Duration::from_secs(2)),
            ) {
                crate::metrics::METRICS
                    .lag
                    .with_label_values(&[t.name.as_str(), &p.to_string()])
                    .set(high - next);
                waiting += (high - next).max(0);
            }
        }
        crate::health::HEALTH.set_waiting(waiting);
    })
}
