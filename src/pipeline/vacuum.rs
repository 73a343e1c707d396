//! Vacuum beside ingest: every `maintenance.vacuum_every`, each table this pipeline writes is
//! vacuumed on a task of its own with its own table handle, so ingest never waits for a listing
//! of the table's storage.
//!
//! Invariants: at most one vacuum per table runs at a time; the first starts one interval after
//! the pipeline (a worker restarted in a loop does not list the lake at every start); a run
//! still going when the pipeline ends is abandoned — deleting is idempotent and a half-done run
//! leaves nothing but files no version needs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tables::Lake;
use tokio::task::JoinHandle;

use crate::metrics::METRICS;

pub(super) struct Vacuums {
    every: Option<Duration>,
    lake: Lake,
    started: Instant,
    /// per table: when its last run started, and the run if it may still be going
    runs: HashMap<String, (Instant, JoinHandle<()>)>,
}

impl Vacuums {
    pub(super) fn new(lake: &Lake, every: Option<Duration>) -> Self {
        Self {
            every,
            lake: lake.clone(),
            started: Instant::now(),
            runs: HashMap::new(),
        }
    }

    /// Starts a vacuum of `table` when one is due and none is running.
    pub(super) fn poke(&mut self, table: &str) {
        let Some(every) = self.every else { return };
        let last = self.runs.get(table).map_or(self.started, |(at, _)| *at);
        let running = self.runs.get(table).is_some_and(|(_, h)| !h.is_finished());
        if running || last.elapsed() < every {
            return;
        }
        let (lake, name) = (self.lake.clone(), table.to_string());
        let run = tokio::spawn(async move {
            let started = Instant::now();
            let result: tables::Result<tables::VacuumReport> = async {
                let mut t = lake.open(&name, None).await?;
                let report = tables::vacuum(&mut t, None, false).await?;
                METRICS.maintenance(&name, t.log_store().root_url().as_str());
                Ok(report)
            }
            .await;
            match result {
                Ok(r) => {
                    tracing::info!(table = %name, files = r.files.len(), dv_files = r.dv_files, bytes = r.bytes, took_ms = started.elapsed().as_millis() as u64, "vacuumed")
                }
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "vacuum failed; it runs again after maintenance.vacuum_every")
                }
            }
        });
        self.runs.insert(table.to_string(), (Instant::now(), run));
    }

    /// Abandons running vacuums (the pipeline is ending).
    pub(super) fn abort_all(&mut self) {
        for (_, (_, run)) in self.runs.drain() {
            run.abort();
        }
    }
}
