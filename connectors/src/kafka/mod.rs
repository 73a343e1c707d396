//! Kafka consumer: group membership, rebalances, and batches cut by count, bytes and time.
//!
//! The TABLE, not Kafka, owns the offsets (DESIGN: exactly-once). On every partition
//! assignment the consumer positions each partition at the offset the caller's
//! [`OffsetLookup`] returns — read from the table's `txn` actions at that moment — and falls
//! back to the group's committed offset (never ahead of the table: it is committed after the
//! table) when the table cannot be read, or to the earliest offset for partitions no table has
//! seen. Group offset commits exist so that standard lag tooling works.
//!
//! The consumer runs on a thread of its own ([`KafkaSource::start`]): it polls, cuts batches
//! and hands them to a bounded channel. When the channel is full it pauses its partitions and
//! keeps polling (so heartbeats and rebalances are served) until there is room again, which
//! bounds memory without leaving the group. Rebalance callbacks run on that thread too: a
//! revocation drops the revoked partitions' records that were not handed over yet and updates
//! the shared [`Assignment`], which the pipeline consults before applying anything.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::mpsc;

use crate::debezium::RawRecord;
use crate::error::ConnectorError;

mod batch;

use batch::{Arena, Pending};
pub use batch::{BatchLimits, RawBatch};

/// Where the table says a partition should resume (next offset to read): `Ok(None)` when the
/// table has never seen the partition, `Err` when the table cannot be read right now.
pub type OffsetLookup = Arc<dyn Fn(&str, i32) -> Result<Option<i64>, String> + Send + Sync>;

/// Records a partition lost before they were read: the broker's retention deleted offsets
/// `from..earliest` while the table's next offset was `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub earliest: i64,
}

/// Whether a gap in `topic` is accepted (reading goes on at the earliest retained offset) or
/// stops the consumer with [`ConnectorError::DataLoss`] (the default).
pub type GapPolicy = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Connection settings (DESIGN `[kafka]`).
#[derive(Clone, Debug, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    /// Passed to librdkafka as is (security.protocol, sasl.*, ssl.*, …); wins over the rest.
    pub properties: HashMap<String, String>,
    /// Static group membership (`group.instance.id`, KIP-345): a member restarted under the
    /// same id gets its partitions back at once instead of after the session timeout.
    pub instance_id: Option<String>,
    /// How long the group waits for a silent member before reassigning its partitions.
    pub session_timeout_ms: u32,
    /// Longest time between two polls before the member is considered stuck.
    pub max_poll_interval_ms: u32,
}

impl KafkaSettings {
    fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Debezium creates a table's topic at its first change, often after the worker
            // subscribed; librdkafka's default (5 minutes) left such a worker idle that long.
            // Also how soon added partitions are seen. `[kafka.properties]` can override it.
            .set("topic.metadata.refresh.interval.ms", "10000");
        if self.session_timeout_ms > 0 {
            cfg.set("session.timeout.ms", self.session_timeout_ms.to_string())
                // the broker expects a heartbeat well within the session
                .set(
                    "heartbeat.interval.ms",
                    (self.session_timeout_ms / 4).max(100).to_string(),
                );
        }
        if self.max_poll_interval_ms > 0 {
            cfg.set("max.poll.interval.ms", self.max_poll_interval_ms.to_string());
        }
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

fn kafka_err(e: KafkaError) -> ConnectorError {
    ConnectorError::Kafka(e.to_string())
}

/// The partitions this member owns right now, shared between the consumer thread (which
/// changes it in rebalance callbacks) and the pipeline (which applies nothing else).
#[derive(Debug, Default)]
pub struct Assignment {
    owned: Mutex<HashSet<(String, i32)>>,
    generation: AtomicU64,
}

impl Assignment {
    /// An assignment that owns every partition and never changes (replay, tools).
    pub fn everything() -> Arc<Self> {
        let a = Self::default();
        a.generation.store(u64::MAX, Ordering::SeqCst);
        Arc::new(a)
    }

    fn static_all(&self) -> bool {
        self.generation.load(Ordering::SeqCst) == u64::MAX
    }

    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.static_all() || lock(&self.owned).contains(&(topic.to_string(), partition))
    }

    /// The owned partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        lock(&self.owned)
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect()
    }

    /// Owns no partition (yet, or any more).
    pub fn is_empty(&self) -> bool {
        !self.static_all() && lock(&self.owned).is_empty()
    }

    /// Bumped by every rebalance.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn update(&self, change: impl FnOnce(&mut HashSet<(String, i32)>)) {
        change(&mut lock(&self.owned));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Positions assigned partitions from the table's offsets; drops revoked records.
pub struct TableOffsetsContext {
    lookup: OffsetLookup,
    assignment: Arc<Assignment>,
    /// the batch being filled on the consumer thread, and cut batches waiting for the pipeline
    pending: Mutex<Pending>,
    /// partitions are paused because the pipeline is full
    paused: AtomicBool,
    /// which topics accept a gap; none when unset
    gap_policy: Mutex<Option<GapPolicy>>,
    /// gaps accepted and skipped, until the caller takes them ([`KafkaSource::take_gaps`])
    gaps: Mutex<Vec<Gap>>,
    /// why the poll loop stopped on its own, for the caller ([`KafkaSource::take_fatal`])
    fatal: Mutex<Option<ConnectorError>>,
}

impl ClientContext for TableOffsetsContext {}

impl TableOffsetsContext {
    fn position(&self, topic: &str, partition: i32) -> Offset {
        match (self.lookup)(topic, partition) {
            Ok(Some(o)) => Offset::Offset(o),
            Ok(None) => Offset::Beginning,
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "cannot read the table's offset; resuming from the group's committed offset (the table skips anything it already has)");
                Offset::Stored
            }
        }
    }
}

impl ConsumerContext for TableOffsetsContext {
    // Overridden whole (not `pre_rebalance`): the default would assign the unpositioned list.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut positioned = TopicPartitionList::new();
                for e in tpl.elements() {
                    let offset = self.position(e.topic(), e.partition());
                    tracing::info!(
                        topic = e.topic(),
                        partition = e.partition(),
                        ?offset,
                        "partition assigned"
                    );
                    if let Err(err) = positioned.add_partition_offset(e.topic(), e.partition(), offset) {
                        tracing::error!(%err, "cannot position partition");
                    }
                }
                let parts = partition_set(tpl);
                let result = if cooperative {
                    self.assignment.update(|owned| owned.extend(parts));
                    consumer.incremental_assign(&positioned)
                } else {
                    self.assignment.update(|owned| *owned = parts);
                    consumer.assign(&positioned)
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "assign failed");
                }
                if self.paused.load(Ordering::SeqCst)
                    && let Err(e) = consumer.pause(&positioned)
                {
                    tracing::warn!(error = %e, "pause of new partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = partition_set(tpl);
                tracing::info!(partitions = revoked.len(), "partitions revoked");
                lock(&self.pending).retain_partitions(&revoked);
                let result = if cooperative {
                    self.assignment.update(|owned| owned.retain(|p| !revoked.contains(p)));
                    consumer.incremental_unassign(tpl)
                } else {
                    self.assignment.update(HashSet::clear);
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

fn partition_set(tpl: &TopicPartitionList) -> HashSet<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// A consumer-group member (or, for replay, a reader of explicit ranges outside any group).
pub struct KafkaSource {
    consumer: BaseConsumer<TableOffsetsContext>,
}

impl KafkaSource {
    /// A group member; `lookup` positions assigned partitions.
    pub fn new(settings: &KafkaSettings, lookup: OffsetLookup) -> Result<Self, ConnectorError> {
        let mut cfg = settings.client_config();
        // a position below the earliest retained offset is an error the poll loop examines
        // (`out_of_range`), never a silent jump to the earliest
        cfg.set("auto.offset.reset", "error");
        if let Some(id) = &settings.instance_id
            && !settings.properties.contains_key("group.instance.id")
        {
            cfg.set("group.instance.id", id);
        }
        Self::with_config(cfg, lookup, Arc::new(Assignment::default()))
    }

    /// A reader outside any group (replay, status): explicit assignment, no commits, so it
    /// never disturbs a running worker.
    pub fn reader(settings: &KafkaSettings) -> Result<Self, ConnectorError> {
        let mut cfg = settings.client_config();
        // librdkafka needs a group id even for manual assignment; it is never joined or committed
        cfg.set("group.id", format!("{}-replay", settings.group_id));
        Self::with_config(cfg, Arc::new(|_: &str, _| Ok(None)), Assignment::everything())
    }

    fn with_config(
        cfg: ClientConfig,
        lookup: OffsetLookup,
        assignment: Arc<Assignment>,
    ) -> Result<Self, ConnectorError> {
        let ctx = TableOffsetsContext {
            lookup,
            assignment,
            pending: Mutex::new(Pending::default()),
            paused: AtomicBool::new(false),
            gap_policy: Mutex::new(None),
            gaps: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
        };
        Ok(Self {
            consumer: cfg.create_with_context(ctx).map_err(kafka_err)?,
        })
    }

    /// Which topics accept a gap left by the broker's retention (default: none; the consumer
    /// stops with [`ConnectorError::DataLoss`]).
    pub fn set_gap_policy(&self, policy: GapPolicy) {
        *lock(&self.consumer.context().gap_policy) = Some(policy);
    }

    /// Gaps skipped since the last call.
    pub fn take_gaps(&self) -> Vec<Gap> {
        std::mem::take(&mut *lock(&self.consumer.context().gaps))
    }

    /// Why the poll loop stopped by itself (it then closes the batch channel).
    pub fn take_fatal(&self) -> Option<ConnectorError> {
        lock(&self.consumer.context().fatal).take()
    }

    /// The partitions this member owns (changes with every rebalance).
    pub fn assignment(&self) -> Arc<Assignment> {
        self.consumer.context().assignment.clone()
    }

    pub fn subscribe(&self, topics: &[String]) -> Result<(), ConnectorError> {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&refs).map_err(kafka_err)
    }

    /// Reads `topic` from the given start offsets (readers only).
    pub fn assign(&self, topic: &str, starts: &[(i32, i64)]) -> Result<(), ConnectorError> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in starts {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(kafka_err)?;
        }
        self.consumer.assign(&tpl).map_err(kafka_err)
    }

    /// Partition ids of `topic`.
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<Vec<i32>, ConnectorError> {
        let md = self
            .consumer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka_err)?;
        let t = md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| {
            ConnectorError::Kafka(format!("topic {topic} not found; create it or fix the table's topic"))
        })?;
        if let Some(e) = t.error() {
            return Err(ConnectorError::Kafka(format!(
                "topic {topic}: {:?}; create it or fix the table's topic",
                rdkafka::error::RDKafkaErrorCode::from(e)
            )));
        }
        Ok(t.partitions().iter().map(|p| p.id()).collect())
    }

    /// Every topic on the broker.
    pub fn topics(&self, timeout: Duration) -> Result<Vec<String>, ConnectorError> {
        let md = self
            .consumer
            .client()
            .fetch_metadata(None, timeout)
            .map_err(kafka_err)?;
        Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
    }

    /// `(low, high)` watermarks of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), ConnectorError> {
        self.consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(kafka_err)
    }

    /// The first offset at or after `ts_ms` per partition (`None`: no record that late).
    pub fn offsets_for_time(
        &self,
        topic: &str,
        partitions: &[i32],
        ts_ms: i64,
        timeout: Duration,
    ) -> Result<Vec<(i32, Option<i64>)>, ConnectorError> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(topic, *p, Offset::Offset(ts_ms))
                .map_err(kafka_err)?;
        }
        let found = self.consumer.offsets_for_times(tpl, timeout).map_err(kafka_err)?;
        Ok(found
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect())
    }

    /// Records the applied positions in the group (for lag tooling only), for partitions
    /// this member still owns.
    pub fn commit(&self, offsets: &[(String, i32, i64)]) {
        let assignment = self.assignment();
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets.iter().filter(|(t, p, _)| assignment.owns(t, *p)) {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "group offset commit failed (informational only)");
        }
    }

    /// Polls on a thread of its own until `stop` is set or `tx` is closed, handing batches
    /// cut by `limits` to `tx`. Returns when the thread is done (after leaving the group).
    pub fn start(
        self: Arc<Self>,
        limits: BatchLimits,
        tx: mpsc::Sender<RawBatch>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("kafka-poll".into())
            .spawn(move || self.poll_loop(limits, tx, stop))
    }

    fn set_paused(&self, paused: bool) {
        let ctx = self.consumer.context();
        if ctx.paused.swap(paused, Ordering::SeqCst) == paused {
            return;
        }
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let result = if paused {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "pause/resume failed");
        }
    }

    fn poll_loop(&self, limits: BatchLimits, tx: mpsc::Sender<RawBatch>, stop: Arc<AtomicBool>) {
        let ctx = self.consumer.context();
        let mut topics: HashSet<Arc<str>> = HashSet::new();
        let mut last_topic: Option<Arc<str>> = None;
        let mut first_at: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        let mut arena = Arena::for_limits(&limits);
        // when a record last arrived: the arena lets its spent blocks go after `IDLE` without one
        const IDLE: Duration = Duration::from_secs(2);
        let mut last_record = Instant::now();
        // the record polled last: it joins the open batch under the lock the next turn takes
        // anyway (one lock per record, not two); no poll runs in between, so a revocation
        // (which runs inside poll) still finds it in the batch
        let mut polled_last: Option<RawRecord> = None;
        // the clock is read when a poll found nothing and every `CLOCK_EVERY` records: at a
        // microsecond per record, linger (milliseconds) loses nothing
        const CLOCK_EVERY: u32 = 64;
        let mut now = Instant::now();
        let mut unclocked = 0;
        while !stop.load(Ordering::SeqCst) {
            if polled_last.is_none() || unclocked >= CLOCK_EVERY {
                now = Instant::now();
                unclocked = 0;
            }
            unclocked += 1;
            let (waiting, full) = {
                let mut pending = lock(&ctx.pending);
                if let Some(r) = polled_last.take() {
                    pending.open.push(r);
                }
                let open = &pending.open;
                if open.records.is_empty() {
                    first_at = None;
                } else if open.full(&limits) || first_at.is_some_and(|t| now.duration_since(t) >= limits.linger) {
                    // the next batch's records are reserved at once, as many as this one's: a
                    // batch grown by doubling copied its records ~twice (a profile of this thread)
                    let batch = std::mem::take(&mut pending.open);
                    pending
                        .open
                        .records
                        .reserve(batch.records.len().min(limits.max_records));
                    pending.enqueue(batch, &limits);
                    first_at = None;
                }
                while let Some(batch) = pending.ready.pop_front() {
                    match tx.try_send(batch) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(batch)) => {
                            pending.ready.push_front(batch);
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return self.consumer.unsubscribe(),
                    }
                }
                (!pending.ready.is_empty(), pending.backlog_full(&limits))
            };
            // a revocation may have emptied the queue: never stay paused without a backlog
            self.set_paused(full);
            let wait = match first_at {
                // batches wait for room: look again soon (the pipeline may take a small batch
                // in milliseconds); poll still serves rebalances meanwhile
                _ if waiting => Duration::from_millis(2),
                Some(t) => limits.linger.saturating_sub(now.duration_since(t)),
                None => Duration::from_millis(100),
            };
            // a record already fetched is taken without a timeout: librdkafka reads the clock
            // for every poll with one (2% of the insert stream's worker in `perf`)
            let polled = self
                .consumer
                .poll(Duration::ZERO)
                .or_else(|| self.consumer.poll(wait.max(Duration::from_millis(1))));
            match polled {
                None => {
                    if now.duration_since(last_record) >= IDLE {
                        arena.trim();
                    }
                }
                Some(Ok(m)) => {
                    backoff = Duration::from_millis(100);
                    last_record = now;
                    // records come in runs of one topic: compared before hashed
                    let topic = match (&last_topic, m.topic()) {
                        (Some(t), name) if t.as_ref() == name => t.clone(),
                        (_, name) => {
                            let t = match topics.get(name) {
                                Some(t) => t.clone(),
                                None => {
                                    let t: Arc<str> = name.into();
                                    topics.insert(t.clone());
                                    t
                                }
                            };
                            last_topic = Some(t.clone());
                            t
                        }
                    };
                    polled_last = Some(RawRecord {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| arena.copy(k)),
                        value: m.payload().map(|v| arena.copy(v)),
                        timestamp_ms: m.timestamp().to_millis(),
                    });
                    first_at.get_or_insert_with(Instant::now);
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    if let Err(e) = self.out_of_range() {
                        tracing::error!(error = %e, "stopping the consumer");
                        *lock(&ctx.fatal) = Some(e);
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // records read but not handed over are dropped: a later run re-reads them from the
        // table's offsets
        self.consumer.unsubscribe();
    }

    /// A partition's position fell below the broker's earliest retained offset (librdkafka
    /// reports it without naming the partition, so every owned one is checked): each gap is
    /// skipped if the policy accepts it, else it is the error that stops the consumer.
    fn out_of_range(&self) -> Result<(), ConnectorError> {
        let ctx = self.consumer.context();
        let positions = self.consumer.position().map_err(kafka_err)?;
        let mut skipped = Vec::new();
        for e in positions.elements() {
            let (topic, partition) = (e.topic(), e.partition());
            let from = match e.offset() {
                Offset::Offset(o) => o,
                // not fetched yet: where the assignment put it
                _ => match (ctx.lookup)(topic, partition) {
                    Ok(Some(o)) => o,
                    _ => continue,
                },
            };
            let (earliest, _) = self
                .consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map_err(kafka_err)?;
            if from >= earliest {
                continue;
            }
            let gap = Gap {
                topic: topic.to_string(),
                partition,
                from,
                earliest,
            };
            let skip = lock(&ctx.gap_policy).as_ref().is_some_and(|accepts| accepts(topic));
            if !skip {
                return Err(ConnectorError::DataLoss {
                    topic: gap.topic,
                    partition,
                    from,
                    earliest,
                });
            }
            tracing::warn!(
                topic,
                partition,
                from,
                earliest,
                lost = earliest - from,
                "records deleted by retention before they were applied; skipping them (on_data_loss = \"skip\")"
            );
            skipped.push(gap);
        }
        if !skipped.is_empty() {
            self.restart_at(&positions, &skipped)?;
            lock(&ctx.gaps).extend(skipped);
        }
        Ok(())
    }

    /// Assigns the owned partitions again, the skipped ones at their earliest offset: a
    /// partition stopped by an offset error refuses a seek ("Erroneous state").
    fn restart_at(&self, positions: &TopicPartitionList, skipped: &[Gap]) -> Result<(), ConnectorError> {
        let ctx = self.consumer.context();
        let mut tpl = TopicPartitionList::new();
        for e in positions.elements() {
            let offset = match skipped
                .iter()
                .find(|g| g.topic == e.topic() && g.partition == e.partition())
            {
                Some(g) => Offset::Offset(g.earliest),
                None => match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => ctx.position(e.topic(), e.partition()),
                },
            };
            tpl.add_partition_offset(e.topic(), e.partition(), offset)
                .map_err(kafka_err)?;
        }
        if matches!(self.consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) {
            self.consumer.incremental_unassign(positions).map_err(kafka_err)?;
            self.consumer.incremental_assign(&tpl).map_err(kafka_err)?;
        } else {
            self.consumer.assign(&tpl).map_err(kafka_err)?;
        }
        if ctx.paused.load(Ordering::SeqCst) {
            self.consumer.pause(&tpl).map_err(kafka_err)?;
        }
        Ok(())
    }
}
