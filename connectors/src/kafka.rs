//! Kafka consumer: group membership, rebalances, batched polling.
//!
//! The TABLE, not Kafka, owns the offsets (DESIGN: exactly-once). On every partition
//! assignment the consumer positions each partition at the offset the caller's
//! [`OffsetLookup`] returns — the next offset recorded in the table's `txn` actions — and only
//! falls back to the earliest offset for partitions no table has seen. Group offset commits are
//! made after Delta commits only so that standard lag tooling works; they are never read back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use crate::debezium::RawRecord;
use crate::error::ConnectorError;

/// Where the table says a partition should resume (next offset to read), if it knows.
pub type OffsetLookup = Arc<dyn Fn(&str, i32) -> Option<i64> + Send + Sync>;

/// Connection settings (DESIGN `[kafka]`).
#[derive(Clone, Debug, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    /// Passed to librdkafka as is (security.protocol, sasl.*, ssl.*, …).
    pub properties: HashMap<String, String>,
}

impl KafkaSettings {
    fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "30000")
            .set("enable.partition.eof", "false");
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

fn kafka_err(e: KafkaError) -> ConnectorError {
    ConnectorError::Kafka(e.to_string())
}

/// Positions assigned partitions from the table's offsets.
pub struct TableOffsetsContext {
    lookup: OffsetLookup,
}

impl ClientContext for TableOffsetsContext {}

impl ConsumerContext for TableOffsetsContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut positioned = TopicPartitionList::new();
                for e in tpl.elements() {
                    let offset = match (self.lookup)(e.topic(), e.partition()) {
                        Some(o) => Offset::Offset(o),
                        None => Offset::Beginning,
                    };
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
                if let Err(e) = consumer.assign(&positioned) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

/// A consumer-group member reading the configured topics.
pub struct KafkaSource {
    consumer: StreamConsumer<TableOffsetsContext>,
}

impl KafkaSource {
    pub fn new(settings: &KafkaSettings, lookup: OffsetLookup) -> Result<Self, ConnectorError> {
        let consumer: StreamConsumer<TableOffsetsContext> = settings
            .client_config()
            .create_with_context(TableOffsetsContext { lookup })
            .map_err(kafka_err)?;
        Ok(Self { consumer })
    }

    pub fn subscribe(&self, topics: &[String]) -> Result<(), ConnectorError> {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&refs).map_err(kafka_err)
    }

    /// Up to `max` records; waits at most `wait` for the first and `linger` after it.
    pub async fn poll_batch(
        &self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Result<Vec<RawRecord>, ConnectorError> {
        poll_batch(&self.consumer, max, wait, linger).await
    }

    /// Partition ids of `topic`.
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<Vec<i32>, ConnectorError> {
        partitions(self.consumer.client(), topic, timeout)
    }

    /// Every topic on the broker.
    pub fn topics(&self, timeout: Duration) -> Result<Vec<String>, ConnectorError> {
        topics(self.consumer.client(), timeout)
    }

    /// `(low, high)` watermarks of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), ConnectorError> {
        self.consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(kafka_err)
    }

    /// Records the applied positions in the group (for lag tooling only).
    pub fn commit(&self, offsets: &[(String, i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "group offset commit failed (informational only)");
        }
    }
}

fn topics<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    timeout: Duration,
) -> Result<Vec<String>, ConnectorError> {
    let md = client.fetch_metadata(None, timeout).map_err(kafka_err)?;
    Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
}

fn partitions<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, ConnectorError> {
    let md = client.fetch_metadata(Some(topic), timeout).map_err(kafka_err)?;
    let t =
        md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| {
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

/// Up to `max` records from `consumer`; waits at most `wait` for the first and `linger` after it.
async fn poll_batch<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    max: usize,
    wait: Duration,
    linger: Duration,
) -> Result<Vec<RawRecord>, ConnectorError> {
    let mut out = Vec::new();
    let mut deadline = Instant::now() + wait;
    while out.len() < max {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match tokio::time::timeout(deadline - now, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                if out.is_empty() {
                    return Err(kafka_err(e));
                }
                tracing::warn!(error = %e, "consumer error");
                break;
            }
            Ok(Ok(m)) => {
                if out.is_empty() {
                    deadline = Instant::now() + linger;
                }
                out.push(RawRecord {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    timestamp_ms: m.timestamp().to_millis(),
                });
            }
        }
    }
    Ok(out)
}

/// A consumer outside any group (replay, status): explicit partition assignment, no commits,
/// so it never disturbs a running worker.
pub struct RangeReader {
    consumer: StreamConsumer,
}

impl RangeReader {
    pub fn new(settings: &KafkaSettings) -> Result<Self, ConnectorError> {
        let mut cfg = settings.client_config();
        // librdkafka needs a group id even for manual assignment; it is never joined or committed
        cfg.set("group.id", format!("{}-replay", settings.group_id));
        Ok(Self {
            consumer: cfg.create().map_err(kafka_err)?,
        })
    }

    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<Vec<i32>, ConnectorError> {
        partitions(self.consumer.client(), topic, timeout)
    }

    /// Every topic on the broker.
    pub fn topics(&self, timeout: Duration) -> Result<Vec<String>, ConnectorError> {
        topics(self.consumer.client(), timeout)
    }

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

    /// Reads `topic` from the given start offsets.
    pub fn assign(&self, topic: &str, starts: &[(i32, i64)]) -> Result<(), ConnectorError> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in starts {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(kafka_err)?;
        }
        self.consumer.assign(&tpl).map_err(kafka_err)
    }

    pub async fn poll_batch(
        &self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Result<Vec<RawRecord>, ConnectorError> {
        poll_batch(&self.consumer, max, wait, linger).await
    }
}
