//! Records → per-table [`ChangeBatch`]es and dead letters, on every core.
//!
//! Decoding is split in two so it can run in parallel: [`Decoder::prefetch`] (async) makes
//! sure every schema id a batch names is resolved — the only step that talks to the registry
//! and the only one that can fail in a retryable way — and [`Decoder::decode`] (sync, `&self`)
//! turns one contiguous run of records into a `ChangeBatch`. [`Decoder::decode_cached`] tries
//! the second step first: a run whose schemas are all cached (nearly every batch of a running
//! worker) is read once instead of being scanned for schema ids before it is decoded.
//! Runs decode on several threads at once; the order within every partition is kept.
//!
//! Invariant: every record handed to `decode` ends up in exactly one place — the batch, the
//! dead letters, or (tombstones, logical messages) nowhere but the offsets — and always
//! advances its partition's offset, so a batch is either applied whole or re-read whole.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::datatypes::Field;
use change::{ChangeBatch, Position, StreamId};

use crate::avro::Plan;
use crate::debezium::{EnvelopePlan, RawRecord, TableDecoder};
use crate::dlq::DeadLetter;
use crate::error::ConnectorError;
use crate::frame;
use crate::registry::SchemaCache;

/// Decides whether a table can take a value schema's columns (`Err` says why not): records
/// of a schema a table cannot take go to the dead-letter table instead of stopping the worker.
pub type SchemaGuard = Arc<dyn Fn(&str, &[Field]) -> Result<(), String> + Send + Sync>;

/// What one run of records decoded to.
#[derive(Default)]
pub struct Decoded {
    /// `None` when the records only moved offsets nowhere (no record at all).
    pub batch: Option<ChangeBatch>,
    pub dead_letters: Vec<DeadLetter>,
}

/// Decodes records into change batches; shared by the threads of one pipeline.
pub struct Decoder {
    cache: Arc<SchemaCache>,
    guard: Option<SchemaGuard>,
    envelopes: Mutex<HashMap<u32, Arc<EnvelopePlan>>>,
    /// guard verdicts by (table, value schema id)
    checked: Mutex<HashMap<(String, u32), Result<(), String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Decoder {
    pub fn new(cache: Arc<SchemaCache>) -> Self {
        Self {
            cache,
            guard: None,
            envelopes: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// Checks every new value schema against `guard` before its records are decoded.
    pub fn with_guard(mut self, guard: SchemaGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Resolves every schema id `records` name. `Err` only for retryable failures (registry
    /// outage): the caller retries; ids the registry does not know are left for `decode` to
    /// dead-letter.
    pub async fn prefetch(&self, records: &[RawRecord]) -> Result<(), ConnectorError> {
        let mut ids = HashSet::new();
        for r in records {
            for bytes in [r.key.as_deref(), r.value.as_deref()].into_iter().flatten() {
                if let Ok((id, _)) = frame::split(bytes) {
                    ids.insert(id);
                }
            }
        }
        for id in ids {
            match self.cache.plan(id).await {
                Ok(_) => {}
                Err(e) if e.is_retryable() || e.is_fatal() => return Err(e),
                Err(_) => {} // permanent: `decode` sends the records to the dead letters
            }
        }
        Ok(())
    }

    /// Decodes a contiguous run of one table's records (schemas prefetched): a record whose
    /// schema the cache lacks goes to the dead letters.
    pub fn decode(&self, table: &str, stream: &StreamId, records: &[RawRecord]) -> Result<Decoded, ConnectorError> {
        let decoded = self.run(table, stream, records, false)?;
        decoded.ok_or_else(|| ConnectorError::Internal("a strict decode stopped at a missing schema".into()))
    }

    /// [`Decoder::decode`] without a prefetch: `None` at the first record whose schema id the
    /// cache does not hold yet (nothing is dead-lettered for it); then `prefetch` the run and
    /// `decode` it. Scanning every batch for its ids before decoding touched each record twice
    /// (2.4% of the upsert worker's samples in `perf`, most of it in the first touch).
    pub fn decode_cached(
        &self,
        table: &str,
        stream: &StreamId,
        records: &[RawRecord],
    ) -> Result<Option<Decoded>, ConnectorError> {
        self.run(table, stream, records, true)
    }

    fn run(
        &self,
        table: &str,
        stream: &StreamId,
        records: &[RawRecord],
        cached_only: bool,
    ) -> Result<Option<Decoded>, ConnectorError> {
        let mut dec = TableDecoder::with_capacity(stream.clone(), records.len());
        let mut dead = Vec::new();
        // plans and verdicts of this run, so a record costs no lock and no shared lookup
        let mut local = Local::default();
        for rec in records {
            let position = Position {
                partition: rec.partition,
                offset: rec.offset,
            };
            match self.push(&mut local, &mut dec, table, position, rec) {
                Ok(()) => {}
                // the cache answers only for ids fetched before: this one may just be new
                Err(ConnectorError::UnknownSchema(_)) if cached_only => return Ok(None),
                Err(e) => {
                    tracing::warn!(table, topic = %rec.topic, partition = rec.partition, offset = rec.offset, error = %e, "record sent to the dead-letter table");
                    dec.advance(position.partition, position.offset);
                    dead.push(DeadLetter::new(rec.clone(), &e));
                }
            }
        }
        Ok(Some(Decoded {
            batch: dec.finish()?,
            dead_letters: dead,
        }))
    }

    fn plan(&self, id: u32) -> Result<Arc<Plan>, ConnectorError> {
        self.cache.get(id).ok_or(ConnectorError::UnknownSchema(id))
    }

    fn envelope(&self, id: u32) -> Result<Arc<EnvelopePlan>, ConnectorError> {
        if let Some(e) = lock(&self.envelopes).get(&id) {
            return Ok(e.clone());
        }
        let env = Arc::new(EnvelopePlan::new(self.plan(id)?.as_ref())?);
        lock(&self.envelopes).insert(id, env.clone());
        Ok(env)
    }

    fn check(&self, table: &str, id: u32, env: &EnvelopePlan) -> Result<(), ConnectorError> {
        let Some(guard) = &self.guard else { return Ok(()) };
        let known = lock(&self.checked).get(&(table.to_string(), id)).cloned();
        let verdict = match known {
            Some(v) => v,
            None => {
                let v = guard(table, &env.columns()?);
                lock(&self.checked).insert((table.to_string(), id), v.clone());
                v
            }
        };
        verdict.map_err(|reason| ConnectorError::IncompatibleSchema(format!("schema id {id}: {reason}")))
    }

    fn push(
        &self,
        local: &mut Local,
        dec: &mut TableDecoder,
        table: &str,
        position: Position,
        rec: &RawRecord,
    ) -> Result<(), ConnectorError> {
        let key = match rec.key.as_deref() {
            Some(k) => {
                let (id, payload) = frame::split(k)?;
                let plan = match local.plans.get(&id) {
                    Some(p) => p.clone(),
                    None => {
                        let p = self.plan(id)?;
                        local.plans.insert(id, p.clone());
                        p
                    }
                };
                Some((id, plan, payload))
            }
            None => None,
        };
        let value = match rec.value.as_deref() {
            Some(v) => {
                let (id, payload) = frame::split(v)?;
                let env = match local.envelopes.get(&id) {
                    Some(e) => e.clone(),
                    None => {
                        let e = self.envelope(id)?;
                        local.envelopes.insert(id, e.clone());
                        e
                    }
                };
                match local.checked.get(&id) {
                    Some(Ok(())) => {}
                    _ => {
                        let verdict = self.check(table, id, &env);
                        local.checked.insert(id, verdict.as_ref().map(|_| ()).map_err(|_| ()));
                        verdict?;
                    }
                }
                Some((id, env, payload))
            }
            None => None,
        };
        let key_ref: Option<(u32, &Plan, &[u8])> = key.as_ref().map(|(id, p, b)| (*id, p.as_ref(), *b));
        dec.push(position, key_ref, value)
    }
}

/// What one `decode` call has looked up already. Looked up several times per record, by
/// schema id: hashbrown's default hasher (foldhash) instead of std's SipHash, which showed in
/// `perf` of the decoder.
#[derive(Default)]
struct Local {
    plans: hashbrown::HashMap<u32, Arc<Plan>>,
    envelopes: hashbrown::HashMap<u32, Arc<EnvelopePlan>>,
    /// guard verdicts of this table (`Err`: refused, asked again so the reason is reported)
    checked: hashbrown::HashMap<u32, Result<(), ()>>,
}
