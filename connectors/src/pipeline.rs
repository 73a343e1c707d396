//! Routes a poll's worth of records to per-table decoders and the dead-letter list.
//!
//! Invariant: every record handed to [`BatchDecoder::push`] ends up in exactly one place — a
//! table's `ChangeBatch`, the dead letters, or (tombstones, logical messages) nowhere but the
//! offsets — and always advances its partition's offset, so a batch is either applied whole or
//! re-read whole.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::Field;

use crate::avro::Plan;
use crate::change::{ChangeBatch, Position};
use crate::debezium::{EnvelopePlan, RawRecord, TableDecoder};
use crate::dlq::DeadLetter;
use crate::error::ConnectorError;
use crate::frame;
use crate::registry::SchemaCache;

/// The decoded output of one batch of records.
#[derive(Default)]
pub struct Decoded {
    /// Table name → its changes.
    pub tables: HashMap<String, ChangeBatch>,
    pub dead_letters: Vec<DeadLetter>,
}

/// Decides whether a table can take a value schema's columns (`Err` says why not): records
/// of a schema a table cannot take go to the dead-letter table instead of stopping the worker.
pub type SchemaGuard = Arc<dyn Fn(&str, &[Field]) -> Result<(), String> + Send + Sync>;

/// Decodes records of many topics into per-table batches.
pub struct BatchDecoder {
    guard: Option<SchemaGuard>,
    checked: HashMap<(String, u32), Result<(), String>>,
    cache: Arc<SchemaCache>,
    /// The `stream` prefix of txn app ids: `<group id>` (app id = `<group>:<topic>:<partition>`).
    group: String,
    envelopes: HashMap<u32, Arc<EnvelopePlan>>,
    tables: HashMap<String, TableDecoder>,
    dead: Vec<DeadLetter>,
}

impl BatchDecoder {
    pub fn new(cache: Arc<SchemaCache>, group: impl Into<String>) -> Self {
        Self {
            guard: None,
            checked: HashMap::new(),
            cache,
            group: group.into(),
            envelopes: HashMap::new(),
            tables: HashMap::new(),
            dead: Vec::new(),
        }
    }

    /// Checks every new value schema against `guard` before its records are decoded.
    pub fn with_guard(mut self, guard: SchemaGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    fn check(&mut self, table: &str, id: u32, env: &EnvelopePlan) -> Result<(), ConnectorError> {
        let Some(guard) = &self.guard else { return Ok(()) };
        let verdict = match self.checked.get(&(table.to_string(), id)) {
            Some(v) => v.clone(),
            None => {
                let v = guard(table, &env.columns()?);
                self.checked.insert((table.to_string(), id), v.clone());
                v
            }
        };
        verdict.map_err(|reason| ConnectorError::IncompatibleSchema(format!("schema id {id}: {reason}")))
    }

    /// Decodes `rec` for `table`. Returns an error only for retryable failures (registry
    /// outage); the caller must then retry the same record, nothing was recorded for it.
    pub async fn push(&mut self, table: &str, rec: RawRecord) -> Result<(), ConnectorError> {
        let stream = format!("{}:{}", self.group, rec.topic);
        let position = Position {
            partition: rec.partition,
            offset: rec.offset,
        };
        match self.decode(table, &stream, position, &rec).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                tracing::warn!(table, topic = %rec.topic, partition = rec.partition, offset = rec.offset, error = %e, "record sent to the dead-letter table");
                self.decoder(table, &stream)
                    .advance(position.partition, position.offset);
                self.dead.push(DeadLetter::new(rec, &e));
                Ok(())
            }
        }
    }

    fn decoder(&mut self, table: &str, stream: &str) -> &mut TableDecoder {
        self.tables
            .entry(table.to_string())
            .or_insert_with(|| TableDecoder::new(stream))
    }

    async fn envelope(&mut self, id: u32) -> Result<Arc<EnvelopePlan>, ConnectorError> {
        if let Some(e) = self.envelopes.get(&id) {
            return Ok(e.clone());
        }
        let plan = self.cache.plan(id).await?;
        let env = Arc::new(EnvelopePlan::new(&plan)?);
        self.envelopes.insert(id, env.clone());
        Ok(env)
    }

    async fn decode(
        &mut self,
        table: &str,
        stream: &str,
        position: Position,
        rec: &RawRecord,
    ) -> Result<(), ConnectorError> {
        let key = match rec.key.as_deref() {
            Some(k) => {
                let (id, payload) = frame::split(k)?;
                Some((id, self.cache.plan(id).await?, payload))
            }
            None => None,
        };
        let value = match rec.value.as_deref() {
            Some(v) => {
                let (id, payload) = frame::split(v)?;
                let env = self.envelope(id).await?;
                self.check(table, id, &env)?;
                Some((id, env, payload))
            }
            None => None,
        };
        let key_ref: Option<(u32, &Plan, &[u8])> = key.as_ref().map(|(id, p, b)| (*id, p.as_ref(), *b));
        self.decoder(table, stream).push(position, key_ref, value)
    }

    /// The decoded batches and dead letters.
    pub fn finish(self) -> Result<Decoded, ConnectorError> {
        let mut out = Decoded {
            tables: HashMap::new(),
            dead_letters: self.dead,
        };
        for (name, dec) in self.tables {
            if let Some(batch) = dec.finish()? {
                out.tables.insert(name, batch);
            }
        }
        Ok(out)
    }
}
