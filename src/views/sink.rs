//! A view's changes as a Kafka stream (`sink_topic` of a `[[views]]` entry): every row a step
//! upserts is produced as a record keyed by the view's key (window and group columns), every
//! row it deletes as a tombstone of that key — what a compacted topic, ksqlDB table or Kafka
//! Streams `KTable` folds into the view. Keys and values are Avro in the Confluent wire format,
//! their schemas registered under `<topic>-key` and `<topic>-value` (TopicNameStrategy).
//!
//! Invariants:
//! - a step produces its records and waits for every delivery BEFORE it commits the view, so
//!   a crash between the two re-sends the same changes at the next step (it compares with the
//!   unchanged view table): at least once, and since records are upserts by key, a consumer
//!   that folds by key ends equal to the view;
//! - records of one key go to one partition (librdkafka's key hash), so they stay in order.

use anyhow::Context;
use apache_avro::Schema as AvroSchema;
use apache_avro::types::Value;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int64Type, SchemaRef, TimeUnit,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::config::Config;

/// The producer of one view's sink topic; schemas are registered at the first send.
pub struct Sink {
    topic: String,
    producer: FutureProducer,
    /// the producer's settings, for the admin client that creates a missing topic
    client: ClientConfig,
    registry: SrSettings,
    /// view name, for the Avro record names
    view: String,
    /// key and value writers, from the view's schema at the first send
    schemas: Option<Schemas>,
}

struct Schemas {
    arrow: SchemaRef,
    key: (u32, AvroSchema),
    value: (u32, AvroSchema),
}

impl Sink {
    pub fn new(cfg: &Config, view: &str, topic: &str) -> anyhow::Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &cfg.kafka.brokers)
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "60000")
            .set("linger.ms", "5");
        for (k, v) in &cfg.kafka.properties {
            client.set(k, v); // security settings apply to the sink as to the consumer
        }
        let producer: FutureProducer = client
            .create()
            .with_context(|| format!("creating the producer of view {view}'s sink_topic {topic}; check [kafka]"))?;
        Ok(Self {
            topic: topic.to_string(),
            producer,
            client,
            registry: registry_settings(cfg)?,
            view: view.to_string(),
            schemas: None,
        })
    }

    /// Produces `upserts` (whole rows) and tombstones for `deletes` (key columns), and waits
    /// until the broker has every record.
    pub async fn send(
        &mut self,
        schema: &SchemaRef,
        keys: &[usize],
        upserts: &RecordBatch,
        deletes: &RecordBatch,
    ) -> anyhow::Result<()> {
        if upserts.num_rows() + deletes.num_rows() == 0 {
            return Ok(());
        }
        if self.schemas.as_ref().is_none_or(|s| &s.arrow != schema) {
            if self.schemas.is_none() {
                self.create_topic().await?;
            }
            self.schemas = Some(self.register(schema, keys).await?);
        }
        let Some(s) = &self.schemas else { return Ok(()) };
        let mut records = Vec::with_capacity(upserts.num_rows() + deletes.num_rows());
        for row in 0..upserts.num_rows() {
            let key = encode(&s.key, upserts, keys.iter().copied(), row)?;
            let value = encode(&s.value, upserts, 0..schema.fields().len(), row)?;
            records.push((key, Some(value)));
        }
        for row in 0..deletes.num_rows() {
            records.push((encode(&s.key, deletes, 0..keys.len(), row)?, None));
        }
        let mut pending = Vec::with_capacity(records.len());
        for (key, value) in &records {
            let mut r = FutureRecord::to(&self.topic).key(key);
            if let Some(v) = value {
                r = r.payload(v);
            }
            let delivery = self
                .producer
                .send_result(r)
                .map_err(|(e, _)| anyhow::anyhow!("producing to {}: {e}", self.topic))?;
            pending.push(delivery);
        }
        for d in pending {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!(
                    "the broker did not take view {}'s changes for topic {}: {e}; the step is retried at the table's next commit",
                    self.view,
                    self.topic
                ),
                Err(_) => anyhow::bail!("producer of topic {} closed", self.topic),
            }
        }
        Ok(())
    }

    /// Creates the topic (one partition) unless it exists: brokers often refuse to create
    /// topics on first produce. Create it yourself for more partitions or compaction.
    async fn create_topic(&self) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = self.client.create()?;
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
        let results = admin.create_topics([&topic], &options).await.with_context(|| {
            format!(
                "creating sink topic {} of view {}; is the broker reachable?",
                self.topic, self.view
            )
        })?;
        for r in results {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                // a broker that lets no one create topics may still have this one: producing tells
                Err((t, e)) => {
                    tracing::warn!(topic = t, error = %e, "could not create a view's sink topic; producing to it anyway")
                }
            }
        }
        Ok(())
    }

    /// Registers the key and value schemas of `schema` (ids: the registry's, existing or new).
    async fn register(&self, schema: &SchemaRef, keys: &[usize]) -> anyhow::Result<Schemas> {
        let name = avro_name(&self.view);
        let key_json = avro_schema(&format!("{name}_key"), schema, keys.iter().copied())?;
        let value_json = avro_schema(&format!("{name}_value"), schema, 0..schema.fields().len())?;
        let mut ids = Vec::new();
        for (suffix, json) in [("key", &key_json), ("value", &value_json)] {
            let subject = format!("{}-{suffix}", self.topic);
            let supplied = SuppliedSchema::new(None, SchemaType::Avro, json.clone());
            let got = post_schema(&self.registry, subject.clone(), supplied).await.map_err(|e| {
                anyhow::anyhow!(
                    "registering subject {subject} for view {}: {e}; is the registry reachable, and does the subject accept this schema (a changed view SQL may need a new sink_topic)?",
                    self.view
                )
            })?;
            ids.push((got.id, AvroSchema::parse_str(json)?));
        }
        let value = ids.pop().context("value schema")?;
        let key = ids.pop().context("key schema")?;
        tracing::info!(
            view = %self.view,
            topic = %self.topic,
            key_schema_id = key.0,
            value_schema_id = value.0,
            "view sink ready"
        );
        Ok(Schemas {
            arrow: schema.clone(),
            key,
            value,
        })
    }
}

fn registry_settings(cfg: &Config) -> anyhow::Result<SrSettings> {
    let r = &cfg.registry;
    let mut b = SrSettings::new_builder(r.url.clone());
    if let Some(user) = &r.username {
        b.set_basic_authorization(user, r.password.as_deref());
    }
    if let Some(token) = &r.bearer_token {
        b.set_token_authorization(token);
    }
    let client = connectors::registry::http_client(&r.settings())?;
    b.build_with(client)
        .map_err(|e| anyhow::anyhow!("registry settings for a view sink: {e}"))
}

/// An Avro name from a view name (letters, digits, `_`; not starting with a digit).
fn avro_name(view: &str) -> String {
    let mut s: String = view
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// The Avro schema (JSON) of a record of `columns` of `schema`; every field nullable.
fn avro_schema(name: &str, schema: &SchemaRef, columns: impl Iterator<Item = usize>) -> anyhow::Result<String> {
    let mut fields = Vec::new();
    for i in columns {
        let f = schema.field(i);
        let t = avro_type(f.data_type()).with_context(|| {
            format!(
                "column {} of type {} cannot go to a sink topic; cast it in the view's SQL (to BIGINT, DOUBLE, DECIMAL, VARCHAR, DATE or TIMESTAMP)",
                f.name(),
                f.data_type()
            )
        })?;
        fields.push(serde_json::json!({"name": avro_name(f.name()), "type": ["null", t], "default": null}));
    }
    Ok(
        serde_json::json!({"type": "record", "name": name, "namespace": "cormorant.views", "fields": fields})
            .to_string(),
    )
}

fn avro_type(t: &DataType) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match t {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => json!("int"),
        DataType::Int64 | DataType::UInt32 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => json!("bytes"),
        DataType::Date32 => json!({"type": "int", "logicalType": "date"}),
        DataType::Timestamp(TimeUnit::Microsecond, _) => json!({"type": "long", "logicalType": "timestamp-micros"}),
        DataType::Decimal128(p, s) => json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s}),
        _ => return None,
    })
}

/// Row `row` of `columns` of `batch` as one framed Avro record.
fn encode(
    schema: &(u32, AvroSchema),
    batch: &RecordBatch,
    columns: impl Iterator<Item = usize>,
    row: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut fields = Vec::new();
    for i in columns {
        let name = avro_name(batch.schema().field(i).name());
        let v = match value(batch.column(i).as_ref(), row)? {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(v) => Value::Union(1, Box::new(v)),
        };
        fields.push((name, v));
    }
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema.1)
        .build()?
        .write_value_to_vec(Value::Record(fields))?;
    Ok(connectors::frame::frame(schema.0, &bytes))
}

/// One cell as an Avro value (`None`: NULL), by the mapping of [`avro_type`].
fn value(a: &dyn Array, row: usize) -> anyhow::Result<Option<Value>> {
    if a.is_null(row) {
        return Ok(None);
    }
    let wide = |t: DataType| arrow::compute::cast(&a.slice(row, 1), &t);
    Ok(Some(match a.data_type() {
        DataType::Boolean => Value::Boolean(a.as_boolean().value(row)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => Value::Int(
            wide(DataType::Int32)?
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
        ),
        DataType::Int64 | DataType::UInt32 => Value::Long(wide(DataType::Int64)?.as_primitive::<Int64Type>().value(0)),
        DataType::Float32 => Value::Float(a.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Value::Double(a.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Value::String(wide(DataType::Utf8)?.as_string::<i32>().value(0).to_string())
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            Value::Bytes(wide(DataType::Binary)?.as_binary::<i32>().value(0).to_vec())
        }
        DataType::Date32 => Value::Date(a.as_primitive::<Date32Type>().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Value::TimestampMicros(wide(DataType::Int64)?.as_primitive::<Int64Type>().value(0))
        }
        DataType::Decimal128(_, _) => {
            let v = a.as_primitive::<Decimal128Type>().value(row);
            Value::Decimal(apache_avro::Decimal::from(minimal_be(v)))
        }
        other => anyhow::bail!("a {other} value cannot go to a sink topic"),
    }))
}

/// Big-endian two's complement in the fewest bytes (Avro's decimal encoding).
fn minimal_be(v: i128) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (cur, next) = (b[start], b[start + 1]);
        let redundant = (cur == 0x00 && next & 0x80 == 0) || (cur == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    b[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_take_the_fewest_bytes() {
        assert_eq!(minimal_be(0), vec![0]);
        assert_eq!(minimal_be(127), vec![0x7f]);
        assert_eq!(minimal_be(128), vec![0x00, 0x80]);
        assert_eq!(minimal_be(-1), vec![0xff]);
        assert_eq!(minimal_be(-129), vec![0xff, 0x7f]);
        assert_eq!(minimal_be(123_456), vec![0x01, 0xe2, 0x40]);
    }

    #[test]
    fn view_names_become_avro_names() {
        assert_eq!(avro_name("orders_per_day"), "orders_per_day");
        assert_eq!(avro_name("7-day.view"), "_7_day_view");
    }

    #[test]
    fn a_row_round_trips_through_its_schema() {
        use arrow::array::{Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("tier", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("total", DataType::Decimal128(12, 2), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_000_000]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![None::<&str>])),
                Arc::new(Int64Array::from(vec![3])),
                Arc::new(
                    Decimal128Array::from(vec![-12_345])
                        .with_precision_and_scale(12, 2)
                        .expect("decimal"),
                ),
            ],
        )
        .expect("batch");
        let json = avro_schema("v_value", &schema, 0..4).expect("schema");
        let avro = AvroSchema::parse_str(&json).expect("valid Avro schema");
        let framed = encode(&(7, avro.clone()), &batch, 0..4, 0).expect("encode");
        assert_eq!(framed.get(..5), Some(&[0u8, 0, 0, 0, 7][..]));
        let back = apache_avro::reader::datum::GenericDatumReader::builder(&avro)
            .build()
            .expect("reader")
            .read_value(&mut &framed[5..])
            .expect("decode");
        let Value::Record(fields) = back else {
            panic!("a record")
        };
        assert_eq!(
            fields[0].1,
            Value::Union(1, Box::new(Value::TimestampMicros(1_700_000_000_000_000)))
        );
        assert_eq!(fields[1].1, Value::Union(0, Box::new(Value::Null)));
        assert_eq!(fields[2].1, Value::Union(1, Box::new(Value::Long(3))));
        assert_eq!(
            fields[3].1,
            Value::Union(
                1,
                Box::new(Value::Decimal(apache_avro::Decimal::from(minimal_be(-12_345))))
            )
        );
    }
}
