//! The apply stage: ownership filter, dead letters, finished compactions, then every table's
//! commit at once.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use arrow::array::BooleanArray;
use change::{Position, SourceOffset, StreamId};
use connectors::dlq;
use tables::TableWriter;

use super::decode::DecodedBatch;
use super::{Pipeline, RETRIES, lock};
use crate::config::TableConfig;
use crate::metrics::METRICS;

impl Pipeline {
    /// Applies one decoded batch; see the module docs of [`super`] for the order.
    pub(super) async fn apply(&mut self, mut batch: DecodedBatch) -> anyhow::Result<()> {
        let assignment = self.assignment.clone();
        for (tc, changes) in batch.tables.values_mut() {
            changes.retain_partitions(|p| assignment.owns(&tc.topic, p))?;
        }
        batch
            .dead_letters
            .retain(|d| assignment.owns(&d.record.topic, d.record.partition));
        for (name, w) in self.writers.iter_mut() {
            if let Some(tc) = self.configs.get(name) {
                w.release_partitions(|p| assignment.owns(&tc.topic, p));
            }
        }
        self.apply_dead_letters(&batch).await?;
        self.commit_compactions(false).await;
        let mut running = Vec::new();
        for (name, (tc, changes)) in std::mem::take(&mut batch.tables) {
            if changes.is_empty() && changes.offsets.is_empty() {
                continue; // every partition of it was revoked
            }
            let mut writer = self.writer_for(&tc).await?;
            running.push(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = writer.apply(&changes).await;
                (name, tc, changes, writer, result, started.elapsed())
            }));
        }
        let mut failed = Vec::new();
        for task in running {
            let (name, tc, changes, writer, result, took) = task.await?;
            match result {
                Ok(applied) => {
                    self.applied(&name, &tc, &changes.offsets, &writer, &applied, took);
                    self.writers.insert(name, writer);
                }
                Err(e) => failed.push((name, tc, changes, writer, e)),
            }
        }
        for (name, tc, changes, writer, error) in failed {
            self.retry(name, tc, changes, writer, error).await?;
            if self.halted {
                return Ok(()); // stopped while waiting to retry: the rest is re-read on restart
            }
        }
        for table in std::mem::take(&mut self.committed) {
            self.views.committed(&table);
            for view in self.views.views_of(&table) {
                self.vacuums.poke(view); // a view's table is vacuumed like the tables it reads
            }
        }
        METRICS
            .batch_seconds
            .with_label_values(&["*"])
            .observe(batch.started.elapsed().as_secs_f64());
        let p = &self.progress;
        p.batches.fetch_add(1, Ordering::Relaxed);
        p.records.fetch_add(batch.records as u64, Ordering::Relaxed);
        p.dead_letters
            .fetch_add(batch.dead_letters.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Applies `changes` again after `error` while the error is retryable (an S3 timeout, a
    /// commit race), with backoff, up to [`RETRIES`] times, a stop cutting any wait short: the
    /// first retry through the same writer (it re-reads the table first and keeps its index),
    /// later ones through a writer opened anew from the table, in case what fails is the
    /// writer's own state. The table's `txn` offsets make this exact: a batch whose commit was
    /// made before the error was reported is found applied and skipped. A permanent error, or
    /// the last retryable one, stops the pipeline. This is the only retry layer of an apply.
    async fn retry(
        &mut self,
        name: String,
        tc: TableConfig,
        changes: change::ChangeBatch,
        writer: TableWriter,
        mut error: tables::TableError,
    ) -> anyhow::Result<()> {
        let stop = self.stop.clone();
        let mut kept = Some(writer);
        for attempt in 1..=RETRIES {
            if !error.is_retryable() {
                break;
            }
            let delay = super::backoff(attempt);
            let how = if kept.is_some() {
                "the same writer"
            } else {
                "a writer reloaded from the table"
            };
            tracing::warn!(table = %name, attempt, of = RETRIES, retry_in = ?delay, error = %error, "applying a batch failed; retrying through {how}");
            METRICS.apply_retries.with_label_values(&[name.as_str()]).inc();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = crate::stop::requested(&stop) => {
                    tracing::info!(table = %name, "stopped while waiting to retry; the batch is re-read on restart");
                    self.halted = true;
                    return Ok(());
                }
            }
            let started = Instant::now();
            let reuse = kept.take();
            let again = async {
                let mut writer = match reuse {
                    Some(w) => w,
                    None => TableWriter::open(&self.lake, &name, super::options(&self.cfg, &tc)).await?,
                };
                let applied = writer.apply(&changes).await?;
                Ok::<_, tables::TableError>((writer, applied))
            };
            match again.await {
                Ok((writer, applied)) => {
                    tracing::info!(table = %name, attempt, "batch applied after a retry");
                    self.applied(&name, &tc, &changes.offsets, &writer, &applied, started.elapsed());
                    self.writers.insert(name, writer);
                    return Ok(());
                }
                Err(e) => error = e,
            }
        }
        let hint = if error.is_retryable() {
            format!("it still failed after {RETRIES} retries; check the lake's store, then restart")
        } else {
            "fix the cause and restart".to_string()
        };
        Err(anyhow::Error::new(error).context(format!(
            "applying a batch to table {name}; the worker stops so that nothing is skipped — {hint}: it resumes from the table's offsets"
        )))
    }

    /// Bookkeeping after a table's commit: metrics, schema for the guard, offsets.
    fn applied(
        &mut self,
        name: &str,
        tc: &TableConfig,
        offsets: &[SourceOffset],
        writer: &TableWriter,
        applied: &tables::Applied,
        took: std::time::Duration,
    ) {
        let label = [name];
        METRICS
            .commit_seconds
            .with_label_values(&label)
            .observe(took.as_secs_f64());
        METRICS
            .rows_applied
            .with_label_values(&label)
            .inc_by((applied.rows_in - applied.rows_skipped) as u64);
        METRICS
            .commits_rebased
            .with_label_values(&label)
            .inc_by(u64::from(applied.rebased));
        METRICS
            .commits_replanned
            .with_label_values(&label)
            .inc_by(u64::from(applied.replanned));
        METRICS
            .files_read
            .with_label_values(&label)
            .inc_by(applied.files_read as u64);
        METRICS
            .files_recalled
            .with_label_values(&label)
            .inc_by(applied.files_recalled as u64);
        METRICS
            .index_keys
            .with_label_values(&label)
            .set(writer.indexed_keys().unwrap_or(0) as i64);
        METRICS
            .index_bytes
            .with_label_values(&label)
            .set(writer.index_heap_bytes().unwrap_or(0) as i64);
        METRICS
            .partitions_owned
            .with_label_values(&label)
            .set(writer.loaded_partitions().len() as i64);
        METRICS
            .recent_rows_bytes
            .with_label_values(&label)
            .set(writer.recent_rows_bytes() as i64);
        if applied.version.is_some() {
            self.committed.push(name.to_string());
            self.progress.commits.fetch_add(1, Ordering::Relaxed);
            self.compactions.committed(name, writer);
            METRICS.maintenance(name, writer.table().log_store().root_url().as_str());
            self.vacuums.poke(name);
            if let Ok(s) = writer.table().snapshot() {
                lock(&self.schemas).insert(name.to_string(), s.snapshot().arrow_schema());
            }
        }
        tracing::debug!(table = name, version = ?applied.version, rows = applied.rows_in, skipped = applied.rows_skipped, written = applied.rows_written, rebased = applied.rebased, replanned = applied.replanned, files_read = applied.files_read, files_recalled = applied.files_recalled, "batch applied");
        for o in offsets {
            self.progress.advance(&tc.topic, o.partition, o.next_offset);
        }
    }

    /// Commits the compaction jobs that are done (`wait`: all of them, awaited), each through
    /// its table's writer, between batches.
    pub(super) async fn commit_compactions(&mut self, wait: bool) {
        for (name, result) in self.compactions.finished(wait).await {
            if let Some(writer) = self.writers.get_mut(&name) {
                super::compaction::commit(&name, writer, result).await;
            }
        }
    }

    /// Commits the batch's dead letters, one append per topic (app ids are per topic).
    async fn apply_dead_letters(&mut self, batch: &DecodedBatch) -> anyhow::Result<()> {
        let letters = &batch.dead_letters;
        if letters.is_empty() {
            return Ok(());
        }
        for d in letters {
            let table = self
                .cfg
                .table_for_topic(&d.record.topic)
                .map_or(d.record.topic.to_string(), |t| t.name);
            METRICS.dead_letters.with_label_values(&[table.as_str()]).inc();
        }
        let all = dlq::to_batch(letters)?;
        let topics: BTreeSet<&str> = letters.iter().map(|d| d.record.topic.as_ref()).collect();
        for topic in topics {
            let mask: Vec<bool> = letters.iter().map(|d| d.record.topic.as_ref() == topic).collect();
            let rows = arrow::compute::filter_record_batch(&all, &BooleanArray::from(mask.clone()))?;
            let mine = letters.iter().zip(&mask).filter(|(_, m)| **m).map(|(d, _)| d);
            let positions: Vec<Position> = mine
                .clone()
                .map(|d| Position {
                    partition: d.record.partition,
                    offset: d.record.offset,
                })
                .collect();
            let stream = StreamId::new(&self.cfg.kafka.group_id, topic);
            let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
            for d in mine {
                let e = next.entry(d.record.partition).or_insert(0);
                *e = (*e).max(d.record.offset + 1);
            }
            let offsets: Vec<SourceOffset> = next
                .into_iter()
                .map(|(partition, next_offset)| SourceOffset {
                    stream: stream.clone(),
                    partition,
                    next_offset,
                })
                .collect();
            let applied = self
                .dlq
                .append(&rows, &positions, &offsets)
                .await
                .context("writing the dead-letter table")?;
            if applied.version.is_some() {
                self.progress.commits.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
