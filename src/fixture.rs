//! Loading a captured Debezium stream (`events.jsonl` + `schemas.json`, as written by
//! `tests/fixtures/debezium/gen.py`) into a broker and a registry — for the quickstart and the
//! end-to-end tests.
//!
//! Schema ids baked into the captured frames are remapped to the ids the target registry
//! assigns, so the fixture loads into any Confluent-compatible registry, even one that
//! already holds other schemas. Topics can be prefixed so that tests never share a topic.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use serde::Deserialize;

/// One captured record.
#[derive(Clone, Debug)]
pub struct Event {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Deserialize)]
struct RawEvent {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    timestamp: Option<i64>,
    #[serde(default)]
    headers: Vec<RawHeader>,
}

#[derive(Deserialize)]
struct RawHeader {
    key: String,
    value: Option<String>,
}

#[derive(Deserialize)]
struct RawSchema {
    id: u32,
    schema: String,
}

/// A captured stream and its schemas.
pub struct Fixture {
    pub events: Vec<Event>,
    /// `(fixture id, subject, schema)` in id order.
    pub schemas: Vec<(u32, String, String)>,
}

fn b64(s: &Option<String>) -> anyhow::Result<Option<Vec<u8>>> {
    s.as_deref()
        .map(|v| base64::engine::general_purpose::STANDARD.decode(v))
        .transpose()
        .context("bad base64 in events.jsonl")
}

impl Fixture {
    pub fn load(dir: &Path) -> anyhow::Result<Fixture> {
        let events_text = std::fs::read_to_string(dir.join("events.jsonl"))
            .with_context(|| format!("reading {}/events.jsonl", dir.display()))?;
        let mut events = Vec::new();
        for line in events_text.lines().filter(|l| !l.trim().is_empty()) {
            let r: RawEvent = serde_json::from_str(line)?;
            events.push(Event {
                key: b64(&r.key)?,
                value: b64(&r.value)?,
                headers: r
                    .headers
                    .iter()
                    .map(|h| Ok((h.key.clone(), b64(&h.value)?.unwrap_or_default())))
                    .collect::<anyhow::Result<_>>()?,
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
            });
        }
        let schemas_text = std::fs::read_to_string(dir.join("schemas.json"))?;
        let by_subject: HashMap<String, Vec<RawSchema>> = serde_json::from_str(&schemas_text)?;
        let mut schemas: Vec<(u32, String, String)> = by_subject
            .into_iter()
            .flat_map(|(subject, versions)| versions.into_iter().map(move |v| (v.id, subject.clone(), v.schema)))
            .collect();
        schemas.sort_by_key(|s| s.0);
        Ok(Fixture { events, schemas })
    }

    /// Distinct topics, in first-appearance order.
    pub fn topics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.events {
            if !out.contains(&e.topic) {
                out.push(e.topic.clone());
            }
        }
        out
    }

    /// Registers every schema (subjects prefixed like the topics); returns fixture id → registry id.
    pub async fn register(&self, registry_url: &str, prefix: &str) -> anyhow::Result<HashMap<u32, u32>> {
        let settings = SrSettings::new_builder(registry_url.to_string())
            .no_proxy()
            .build()
            .context("registry client")?;
        let mut ids = HashMap::new();
        for (id, subject, schema) in &self.schemas {
            let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.clone());
            let got = post_schema(&settings, format!("{prefix}{subject}"), supplied)
                .await
                .with_context(|| {
                    format!("registering {subject} at {registry_url}; is the registry running (scripts/services up)?")
                })?;
            ids.insert(*id, got.id);
        }
        Ok(ids)
    }

    /// Creates the (prefixed) topics with `partitions` partitions; existing ones are kept.
    pub async fn create_topics(&self, brokers: &str, prefix: &str, partitions: i32) -> anyhow::Result<()> {
        create_topics(
            brokers,
            &self.topics().iter().map(|t| format!("{prefix}{t}")).collect::<Vec<_>>(),
            partitions,
        )
        .await
    }

    /// Produces events `range` (indexes into `events`) to the prefixed topics, re-framed with
    /// the registry's ids, and waits until all are acknowledged.
    pub async fn produce(
        &self,
        brokers: &str,
        prefix: &str,
        ids: &HashMap<u32, u32>,
        range: std::ops::Range<usize>,
    ) -> anyhow::Result<()> {
        self.produce_to(brokers, prefix, ids, range, false).await
    }

    /// Like [`Fixture::produce`], but every record goes to the partition Kafka's Java client
    /// would pick for its key (murmur2 of the key bytes, as Kafka Connect does for Debezium),
    /// so topics with several partitions get the layout a real deployment has.
    pub async fn produce_by_key(
        &self,
        brokers: &str,
        prefix: &str,
        ids: &HashMap<u32, u32>,
        range: std::ops::Range<usize>,
    ) -> anyhow::Result<()> {
        self.produce_to(brokers, prefix, ids, range, true).await
    }

    async fn produce_to(
        &self,
        brokers: &str,
        prefix: &str,
        ids: &HashMap<u32, u32>,
        range: std::ops::Range<usize>,
        by_key: bool,
    ) -> anyhow::Result<()> {
        let producer = producer(brokers)?;
        let reframe = |b: &Option<Vec<u8>>| -> Option<Vec<u8>> {
            b.as_ref().map(|v| match connectors::frame::split(v) {
                Ok((id, payload)) => connectors::frame::frame(ids.get(&id).copied().unwrap_or(id), payload),
                Err(_) => v.clone(),
            })
        };
        let mut pending = Vec::new();
        let mut sent = 0usize;
        for e in &self.events[range] {
            let topic = format!("{prefix}{}", e.topic);
            let key = reframe(&e.key);
            let value = reframe(&e.value);
            let mut headers = OwnedHeaders::new();
            for (k, v) in &e.headers {
                headers = headers.insert(Header { key: k, value: Some(v) });
            }
            let mut rec: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(&topic).headers(headers);
            if !by_key {
                rec = rec.partition(e.partition);
            }
            if let Some(k) = &key {
                rec = rec.key(k);
            }
            if let Some(v) = &value {
                rec = rec.payload(v);
            }
            if let Some(ts) = e.timestamp {
                rec = rec.timestamp(ts);
            }
            // Enqueued in order; librdkafka keeps that order within a partition.
            let delivery = producer
                .send_result(rec)
                .map_err(|(e, _)| anyhow::anyhow!("produce to {topic} failed: {e}"))?;
            pending.push(delivery);
            sent += 1;
            if pending.len() >= 5000 {
                wait_all(std::mem::take(&mut pending)).await?;
            }
        }
        wait_all(pending).await?;
        producer.flush(Duration::from_secs(30))?;
        tracing::debug!(sent, "fixture produced");
        Ok(())
    }
}

async fn wait_all(pending: Vec<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<()> {
    for d in pending {
        match d.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("delivery failed: {e}"),
            Err(_) => anyhow::bail!("delivery cancelled (producer closed)"),
        }
    }
    Ok(())
}

/// A producer suited to Tansu (no compression codecs it cannot read back, no transactions).
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "none")
        // Kafka's Java partitioner: keyed records land where Kafka Connect would put them
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "false")
        .set("linger.ms", "20")
        // one request in flight per connection keeps order even when a request is retried
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", "60000")
        .create()?)
}

/// Creates `topics` with `partitions` partitions each; existing topics are kept.
pub async fn create_topics(brokers: &str, topics: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("creating topics at {brokers}; is the broker running (scripts/services up)?"))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}
