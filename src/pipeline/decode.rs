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
use connectors::{Decoder, RawRecord};
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

/// Decodes `records` (schemas are fetched first, retried while the registry is unavailable,
/// until `stop` is set: then `None`, nothing decoded).
pub(crate) async fn decode(
    cfg: &Config,
    group: &str,
    decoder: &Arc<Decoder>,
    records: Vec<RawRecord>,
    stop: &AtomicBool,
) -> anyhow::Result<Option<DecodedBatch>> {
    let started = Instant::now();
    let n = records.len();
    let mut delay = Duration::from_millis(500);
    loop {
        // a hung registry must not hold a stop: the lookup is dropped (nothing was applied)
        let e = tokio::select! {
            r = decoder.prefetch(&records) => match r {
                Ok(()) => break,
                Err(e) => e,
            },
            _ = crate::stop::requested(stop) => return Ok(None),
        };
        if e.is_fatal() {
            anyhow::bail!("{e}; the worker stops (no record was dead-lettered for this) — fix the setting and restart");
        }
        tracing::warn!(error = %e, retry_in = ?delay, "schema registry unavailable while decoding; retrying (the batch waits, nothing is skipped)");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::stop::requested(stop) => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    let mut out = DecodedBatch {
        tables: BTreeMap::new(),
        dead_letters: Vec::new(),
        records: n,
        started,
    };
    // every table's records decode on a thread of their own, all at once
    let tasks: Vec<_> = by_table(cfg, records)
        .into_iter()
        .map(|(name, (tc, recs))| {
            crate::metrics::METRICS
                .events_read
                .with_label_values(&[name.as_str()])
                .inc_by(recs.len() as u64);
            let stream = StreamId::new(group, &tc.topic);
            let decoder = decoder.clone();
            let task = tokio::task::spawn_blocking({
                let name = name.clone();
                move || decoder.decode(&name, &stream, &recs)
            });
            (name, tc, task)
        })
        .collect();
    for (name, tc, task) in tasks {
        let d = task.await??;
        out.dead_letters.extend(d.dead_letters);
        if let Some(batch) = d.batch {
            out.tables.insert(name, (tc, batch));
        }
    }
    Ok(Some(out))
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
}
