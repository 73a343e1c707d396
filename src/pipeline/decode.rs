//! The decode stage: raw records → one `ChangeBatch` per table plus dead letters.
//!
//! Records are grouped by table, in arrival order; every table decodes on a blocking thread of
//! its own. Every core is used by decoding several batches at once (up to one per core), handed
//! on in arrival order — not by cutting one table's records into chunks decoded side by side,
//! whose batches had to be concatenated: a copy of every decoded value, 4-5% of the worker's
//! CPU in `perf`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use change::{ChangeBatch, StreamId};
use connectors::dlq::DeadLetter;
use connectors::kafka::RawBatch;
use connectors::{Decoded, Decoder, RawRecord};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::config::{Config, TableConfig};

/// One batch, decoded.
pub(crate) struct DecodedBatch {
    /// Per table (by name): its config and its changes.
    pub tables: BTreeMap<String, (TableConfig, ChangeBatch)>,
    pub dead_letters: Vec<DeadLetter>,
    pub records: usize,
    /// When its first record was handed over (for the batch latency histogram).
    pub started: Instant,
}

/// The records of each configured table, in arrival order. Each topic is looked up once per
/// batch: a lookup clones the table's config, which per record showed in a profile.
fn by_table(cfg: &Config, records: Vec<RawRecord>) -> BTreeMap<String, (TableConfig, Vec<RawRecord>)> {
    // most batches hold one topic: its records go on in the vector they came in, not copied
    // into a new one (whose fresh pages the kernel faulted in: 0.7% of the upsert worker's
    // samples in `perf`, under this function)
    if let Some(first) = records.first()
        && records.iter().all(|r| same_topic(&r.topic, &first.topic))
    {
        let mut out = BTreeMap::new();
        if let Some(tc) = cfg.table_for_topic(&first.topic) {
            out.insert(tc.name.clone(), (tc, records));
        }
        return out;
    }
    let n = records.len();
    let mut tables: HashMap<Arc<str>, Option<String>> = HashMap::new();
    let mut out: BTreeMap<String, (TableConfig, Vec<RawRecord>)> = BTreeMap::new();
    // records of one topic share one `Arc<str>` and come in runs: the previous record's table
    // is found by pointer, without hashing the topic name per record
    let mut last: Option<(Arc<str>, Option<String>)> = None;
    for rec in records {
        if !last.as_ref().is_some_and(|(topic, _)| same_topic(topic, &rec.topic)) {
            let name = tables.entry(rec.topic.clone()).or_insert_with(|| {
                let tc = cfg.table_for_topic(&rec.topic)?;
                let name = tc.name.clone();
                // most batches hold one table: its records get room for all at once
                let room = if out.is_empty() { n } else { 0 };
                out.entry(name.clone())
                    .or_insert_with(|| (tc, Vec::with_capacity(room)));
                Some(name)
            });
            last = Some((rec.topic.clone(), name.clone()));
        }
        let name = last.as_ref().and_then(|(_, name)| name.as_deref());
        if let Some((_, recs)) = name.and_then(|n| out.get_mut(n)) {
            recs.push(rec);
        }
    }
    out
}

/// Topic names of one consumer share one `Arc` (compared first); records made elsewhere may not.
fn same_topic(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// The decode stage: decodes the batches of `batches` as they come, up to one per core at once,
/// and hands them to `tx` in arrival order. Ends when `batches` closes, `tx` closes (the apply
/// stage failed; it reports why), or a stop comes while the registry is unavailable; batches
/// still decoding then are aborted (nothing of them was handed on, so nothing is lost: the
/// table's offsets bring them back).
pub(crate) async fn stage(
    cfg: Arc<Config>,
    decoder: Arc<Decoder>,
    stop: Arc<AtomicBool>,
    mut batches: mpsc::Receiver<RawBatch>,
    tx: mpsc::Sender<DecodedBatch>,
) -> anyhow::Result<()> {
    let most = std::thread::available_parallelism().map_or(2, usize::from);
    let mut inflight = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                let done: anyhow::Result<Option<DecodedBatch>> = done?;
                let Some(d) = done? else {
                    break; // stopped while the registry was unavailable: nothing of it applied
                };
                if tx.send(d).await.is_err() {
                    break;
                }
            }
            raw = batches.recv(), if open && inflight.len() < most => match raw {
                // a task of its own: it goes on while the stage waits for the apply stage, and
                // is aborted when the stage ends before it is handed on
                Some(raw) => inflight.push_back(AbortOnDropHandle::new(tokio::spawn({
                    let (cfg, decoder, stop) = (cfg.clone(), decoder.clone(), stop.clone());
                    async move {
                        let group = &cfg.kafka.group_id;
                        decode(&cfg, group, &decoder, raw.records, &stop).await
                    }
                }))),
                None => open = false,
            },
            else => break,
        }
    }
    Ok(())
}

/// Decodes `records`. Every table's records decode first with the schemas already cached;
/// a table whose records name a schema the cache lacks has its schemas fetched (retried while
/// the registry is unavailable, until `stop` is set: then `None`, nothing decoded) and decodes
/// again.
pub(crate) async fn decode(
    cfg: &Config,
    group: &str,
    decoder: &Arc<Decoder>,
    records: Vec<RawRecord>,
    stop: &AtomicBool,
) -> anyhow::Result<Option<DecodedBatch>> {
    let started = Instant::now();
    let n = records.len();
    let tables = by_table(cfg, records);
    for (name, (_, recs)) in &tables {
        crate::metrics::METRICS
            .events_read
            .with_label_values(&[name.as_str()])
            .inc_by(recs.len() as u64);
    }
    let mut done = BTreeMap::new();
    let mut missing = BTreeMap::new();
    for (name, tc, d) in decode_tables(group, decoder, tables, true).await? {
        match d {
            Ok(d) => {
                done.insert(name, (tc, d));
            }
            Err(recs) => {
                missing.insert(name, (tc, recs));
            }
        }
    }
    if !missing.is_empty() {
        if !fetch_schemas(decoder, &missing, stop).await? {
            return Ok(None);
        }
        for (name, tc, d) in decode_tables(group, decoder, missing, false).await? {
            if let Ok(d) = d {
                done.insert(name, (tc, d));
            }
        }
    }
    let mut out = DecodedBatch {
        tables: BTreeMap::new(),
        dead_letters: Vec::new(),
        records: n,
        started,
    };
    for (name, (tc, d)) in done {
        out.dead_letters.extend(d.dead_letters);
        if let Some(batch) = d.batch {
            out.tables.insert(name, (tc, batch));
        }
    }
    Ok(Some(out))
}

/// A table's name, config and what its records decoded to; `Err`: the records, which name a
/// schema the cache lacks (only when decoding `cached_only`).
type TableRun = (String, TableConfig, Result<Decoded, Vec<RawRecord>>);

/// Decodes every table's records on a blocking thread of its own, all at once.
async fn decode_tables(
    group: &str,
    decoder: &Arc<Decoder>,
    tables: BTreeMap<String, (TableConfig, Vec<RawRecord>)>,
    cached_only: bool,
) -> anyhow::Result<Vec<TableRun>> {
    let tasks: Vec<_> = tables
        .into_iter()
        .map(|(name, (tc, recs))| {
            let stream = StreamId::new(group, &tc.topic);
            let decoder = decoder.clone();
            tokio::task::spawn_blocking(move || {
                let d = if cached_only {
                    decoder.decode_cached(&name, &stream, &recs)?.ok_or(recs)
                } else {
                    Ok(decoder.decode(&name, &stream, &recs)?)
                };
                Ok::<_, connectors::ConnectorError>((name, tc, d))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}

/// Fetches the schemas `tables`' records name, retried while the registry is unavailable:
/// `false` when a stop came first (a hung registry must not hold a stop; nothing was applied).
async fn fetch_schemas(
    decoder: &Decoder,
    tables: &BTreeMap<String, (TableConfig, Vec<RawRecord>)>,
    stop: &AtomicBool,
) -> anyhow::Result<bool> {
    let mut delay = Duration::from_millis(500);
    loop {
        let fetch = async {
            for (_, recs) in tables.values() {
                decoder.prefetch(recs).await?;
            }
            Ok::<_, connectors::ConnectorError>(())
        };
        let e = tokio::select! {
            r = fetch => match r {
                Ok(()) => return Ok(true),
                Err(e) => e,
            },
            _ = crate::stop::requested(stop) => return Ok(false),
        };
        if e.is_fatal() {
            anyhow::bail!("{e}; the worker stops (no record was dead-lettered for this) — fix the setting and restart");
        }
        tracing::warn!(error = %e, retry_in = ?delay, "schema registry unavailable while decoding; retrying (the batch waits, nothing is skipped)");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::stop::requested(stop) => return Ok(false),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use connectors::RawRecord;

    use crate::config::{Config, TableConfig};

    fn rec(topic: &Arc<str>, offset: i64) -> RawRecord {
        RawRecord {
            topic: topic.clone(),
            partition: 0,
            offset,
            key: None,
            value: None,
            timestamp_ms: None,
        }
    }

    /// Records go to their table in arrival order; a topic no table reads is left out.
    #[test]
    fn records_are_grouped_by_table_in_order() {
        let mut cfg = Config::default();
        cfg.tables = ["a", "b"]
            .into_iter()
            .map(|t| TableConfig {
                name: format!("t_{t}"),
                topic: t.to_string(),
                ..Default::default()
            })
            .collect();
        let (a, b, other): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "other".into());
        let records = vec![
            rec(&b, 0),
            rec(&b, 1),
            rec(&a, 2),
            rec(&other, 3),
            rec(&other, 4),
            rec(&b, 5),
            rec(&a, 6),
        ];
        let grouped = super::by_table(&cfg, records);
        let offsets: Vec<(String, Vec<i64>)> = grouped
            .into_iter()
            .map(|(name, (tc, recs))| {
                assert_eq!(tc.name, name);
                (name, recs.iter().map(|r| r.offset).collect())
            })
            .collect();
        assert_eq!(
            offsets,
            [("t_a".to_string(), vec![2, 6]), ("t_b".to_string(), vec![0, 1, 5])]
        );
    }

    /// A batch of one topic keeps its vector (no copy), also when its records do not share
    /// one `Arc` of the name; a batch of a topic no table reads gives nothing.
    #[test]
    fn a_batch_of_one_topic_goes_on_in_its_own_vector() {
        let mut cfg = Config::default();
        cfg.tables = vec![TableConfig {
            name: "t_a".into(),
            topic: "a".into(),
            ..Default::default()
        }];
        let (a, a_again): (Arc<str>, Arc<str>) = ("a".into(), "a".into());
        let records = vec![rec(&a, 0), rec(&a_again, 1), rec(&a, 2)];
        let at = records.as_ptr();
        let grouped = super::by_table(&cfg, records);
        let (tc, recs) = &grouped["t_a"];
        assert_eq!((grouped.len(), tc.name.as_str(), recs.as_ptr()), (1, "t_a", at));
        assert_eq!(recs.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2]);
        let other: Arc<str> = "other".into();
        assert!(super::by_table(&cfg, vec![rec(&other, 0)]).is_empty());
        assert!(super::by_table(&cfg, Vec::new()).is_empty());
    }

    /// The fixture's first customers record as the consumer hands it over, and the registry's
    /// schemas by id (read by the fixture loader `load-fixture` uses).
    fn first_customers_record() -> (RawRecord, std::collections::HashMap<u64, String>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/debezium");
        let fixture = crate::fixture::Fixture::load(std::path::Path::new(dir)).expect("fixture");
        let ev = fixture
            .events
            .iter()
            .find(|e| e.topic == "dbz.public.customers")
            .expect("a customers event");
        let schemas = fixture
            .schemas
            .iter()
            .map(|(id, _, text)| (u64::from(*id), text.clone()))
            .collect();
        let rec = RawRecord {
            topic: ev.topic.as_str().into(),
            partition: ev.partition,
            offset: ev.offset,
            key: ev.key.clone().map(Into::into),
            value: ev.value.clone().map(Into::into),
            timestamp_ms: None,
        };
        (rec, schemas)
    }

    /// A registry on a real socket that answers 503 to its first `refusals` requests, then
    /// serves `/schemas/ids/{id}`; returns its URL and how many requests it got.
    async fn flaky_registry(
        schemas: std::collections::HashMap<u64, String>,
        refusals: usize,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request);
                let id = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|path| path.strip_prefix("/schemas/ids/"))
                    .and_then(|id| id.parse::<u64>().ok());
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (status, body) = match id.and_then(|id| schemas.get(&id)) {
                    Some(_) if n < refusals => ("503 Service Unavailable", "{}".to_string()),
                    Some(text) => ("200 OK", serde_json::json!({ "schema": text }).to_string()),
                    None => (
                        "404 Not Found",
                        r#"{"error_code":40403,"message":"not found"}"#.to_string(),
                    ),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (url, served)
    }

    /// A batch whose schemas are not cached yet, while the registry answers 503, waits and
    /// retries, then decodes whole (nothing dead-lettered); a later batch of the same schemas
    /// decodes from the cache without asking the registry again.
    #[tokio::test]
    async fn a_batch_waits_for_its_schemas_then_decodes_and_the_next_one_asks_nothing() {
        let (rec, schemas) = first_customers_record();
        let (url, served) = flaky_registry(schemas, 2).await;
        let mut cfg = Config::default();
        cfg.tables = vec![TableConfig {
            name: "customers".into(),
            topic: "dbz.public.customers".into(),
            ..Default::default()
        }];
        let settings = connectors::registry::RegistrySettings {
            url,
            ..Default::default()
        };
        let cache = Arc::new(connectors::registry::SchemaCache::new(&settings).expect("cache"));
        let decoder = Arc::new(connectors::Decoder::new(cache));
        let stop = std::sync::atomic::AtomicBool::new(false);
        for round in 0..2 {
            let out = super::decode(&cfg, "g", &decoder, vec![rec.clone()], &stop)
                .await
                .expect("decode")
                .expect("not stopped");
            assert!(out.dead_letters.is_empty(), "round {round}");
            let (_, batch) = &out.tables["customers"];
            assert_eq!(batch.kinds, vec![change::ChangeKind::Upsert], "round {round}");
            // two refused lookups, then one per schema (key and value); none the second round
            assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 4, "round {round}");
        }
    }
}
