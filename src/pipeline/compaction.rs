//! Compaction beside ingest: every `compaction.every_commits` commits of a table, a
//! compaction job of the file groups this worker owns starts on a task of its own (reading
//! and rewriting files while batches keep committing); when it is done, the apply stage
//! commits its result between two batches through the table's writer, which carries the
//! deletes made meanwhile and patches its index ([`tables::TableWriter::finish_compaction`]).
//!
//! Invariants: at most one job per table at a time; a job's result is committed only by the
//! writer that made it, between batches (never concurrently with that table's ingest commit);
//! a job still running when the pipeline ends is awaited (its time budget bounds it) on a
//! normal end and abandoned on a stop — its files are then unreferenced and vacuum removes them.

use std::collections::HashMap;

use tables::{CompactionOptions, ReadyCompaction, TableWriter};
use tokio::task::JoinHandle;

use crate::metrics::METRICS;

type Job = JoinHandle<tables::Result<Option<ReadyCompaction>>>;

pub(super) struct Compactions {
    enabled: bool,
    every: u64,
    opts: CompactionOptions,
    /// commits per table since its last round
    since: HashMap<String, u64>,
    running: HashMap<String, Job>,
}

impl Compactions {
    pub(super) fn new(enabled: bool, every: u64, opts: CompactionOptions) -> Self {
        Self {
            enabled,
            every: every.max(1),
            opts,
            since: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// A table committed: count it; once `every_commits` commits passed and no job of it runs,
    /// publish its backlog (a pass over its files, kept off the other commits) and start a job.
    pub(super) fn committed(&mut self, table: &str, writer: &TableWriter) {
        let n = self.since.entry(table.to_string()).or_default();
        *n += 1;
        if *n < self.every || self.running.contains_key(table) {
            return;
        }
        *n = 0;
        let (files, bytes) = writer.compaction_backlog(&self.opts);
        METRICS
            .compaction_backlog_files
            .with_label_values(&[table])
            .set(files as i64);
        METRICS
            .compaction_backlog_bytes
            .with_label_values(&[table])
            .set(bytes as i64);
        if !self.enabled {
            return;
        }
        if let Some(job) = writer.compaction_job(&self.opts) {
            tracing::debug!(table, files, bytes, "compaction job started");
            self.running.insert(table.to_string(), tokio::spawn(job.run()));
        }
    }

    /// The tables whose job is done, with its result (`wait`: every running job, awaited).
    pub(super) async fn finished(&mut self, wait: bool) -> Vec<(String, tables::Result<Option<ReadyCompaction>>)> {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, job)| wait || job.is_finished())
            .map(|(t, _)| t.clone())
            .collect();
        let mut out = Vec::with_capacity(done.len());
        for table in done {
            if let Some(job) = self.running.remove(&table) {
                let result = job
                    .await
                    .unwrap_or_else(|e| Err(tables::TableError::Corrupt(format!("compaction task failed: {e}"))));
                out.push((table, result));
            }
        }
        out
    }

    /// Abandons running jobs (a stop: their files are left for vacuum).
    pub(super) fn abort_all(&mut self) {
        for (_, job) in self.running.drain() {
            job.abort();
        }
    }
}

/// Commits a finished job through its table's writer and reports it.
pub(super) async fn commit(table: &str, writer: &mut TableWriter, result: tables::Result<Option<ReadyCompaction>>) {
    let ready = match result {
        Ok(Some(ready)) => ready,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(table, error = %e, "compaction job failed; the next round retries");
            return;
        }
    };
    match writer.finish_compaction(ready).await {
        Ok(r) if r.version.is_some() => {
            tracing::info!(table, version = ?r.version, removed = r.files_removed, added = r.files_added, rows = r.rows_written, carried_deletes = r.carried, "compacted");
            METRICS.compactions.with_label_values(&[table]).inc();
            METRICS
                .compaction_bytes
                .with_label_values(&[table])
                .inc_by(r.bytes_written);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(table, error = %e, "committing a compaction failed; the next round retries"),
    }
}
