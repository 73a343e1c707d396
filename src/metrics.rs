//! Prometheus metrics of the worker, served at `GET /metrics` on `[metrics] address`.
//!
//! Counters are per table: events read, rows applied, dead letters; histograms of batch and
//! commit latency; a lag gauge per topic partition; compaction runs and bytes written;
//! checkpoints, expired log files and vacuumed files.

use std::net::SocketAddr;
use std::sync::LazyLock;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    pub registry: Registry,
    pub events_read: IntCounterVec,
    pub rows_applied: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub batch_seconds: HistogramVec,
    pub commit_seconds: HistogramVec,
    pub lag: IntGaugeVec,
    pub compactions: IntCounterVec,
    pub compaction_bytes: IntCounterVec,
    /// files (and their bytes) of the owned partitions past the compaction thresholds,
    /// updated every `compaction.every_commits` commits
    pub compaction_backlog_files: IntGaugeVec,
    pub compaction_backlog_bytes: IntGaugeVec,
    /// keys in the primary-key index of the partitions this worker owns
    pub index_keys: IntGaugeVec,
    /// approximate heap bytes of that index
    pub index_bytes: IntGaugeVec,
    /// source partitions whose index is loaded
    pub partitions_owned: IntGaugeVec,
    /// bytes of recently written rows the writer keeps for previous values
    pub recent_rows_bytes: IntGaugeVec,
    /// commits lost to another writer and made again at a later version without a new plan
    pub commits_rebased: IntCounterVec,
    /// batches planned again because another writer touched the same files or offsets
    pub commits_replanned: IntCounterVec,
    /// data files read from storage for previous rows (soft deletes, TOASTed cells, rewrites)
    pub files_read: IntCounterVec,
    /// data files whose previous rows were found among the recent rows instead
    pub files_recalled: IntCounterVec,
    /// batches applied again after a retryable failure (S3 timeout, lost commit race)
    pub apply_retries: IntCounterVec,
    /// records the topic's retention deleted before they were applied, skipped by
    /// `on_data_loss = "skip"`
    pub data_loss_skipped: IntCounterVec,
    /// the newest checkpoint this worker wrote
    pub last_checkpoint: IntGaugeVec,
    /// expired log files removed (this process)
    pub log_files_removed: IntGaugeVec,
    /// files and bytes vacuum deleted (this process)
    pub vacuumed_files: IntGaugeVec,
    pub vacuumed_bytes: IntGaugeVec,
    /// seconds without progress while records wait, once past the stall bound (else 0)
    pub stalled_seconds: prometheus::IntGauge,
    /// time of one view step, by view
    pub view_seconds: HistogramVec,
    /// source table commit → the view commit reflecting it, by view
    pub view_freshness: HistogramVec,
    /// final windows a late change reached, by view
    pub view_late: IntCounterVec,
}

impl Metrics {
    /// Copies the table's maintenance figures ([`tables::maintain::stats`]) into the gauges.
    pub fn maintenance(&self, table: &str, root: &str) {
        let s = tables::maintain::stats(root);
        let label = [table];
        if let Some(v) = s.last_checkpoint {
            self.last_checkpoint.with_label_values(&label).set(v as i64);
        }
        self.log_files_removed
            .with_label_values(&label)
            .set(s.log_files_removed as i64);
        self.vacuumed_files
            .with_label_values(&label)
            .set(s.vacuumed_files as i64);
        self.vacuumed_bytes
            .with_label_values(&label)
            .set(s.vacuumed_bytes as i64);
    }
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &["table"]).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &["table"]).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str) -> HistogramVec {
    let buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["table"]).expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let lag = IntGaugeVec::new(
        Opts::new(
            "cormorant_lag_records",
            "high watermark minus the next offset the table has applied",
        ),
        &["table", "partition"],
    )
    .expect("valid metric");
    registry.register(Box::new(lag.clone())).expect("registered once");
    Metrics {
        events_read: counter(&registry, "cormorant_events_read_total", "records read from the topic"),
        rows_applied: counter(
            &registry,
            "cormorant_rows_applied_total",
            "change rows committed to the table",
        ),
        dead_letters: counter(
            &registry,
            "cormorant_dead_letters_total",
            "records sent to the dead-letter table",
        ),
        batch_seconds: histogram(
            &registry,
            "cormorant_batch_seconds",
            "time to decode and apply one batch",
        ),
        commit_seconds: histogram(
            &registry,
            "cormorant_commit_seconds",
            "time of one table's apply and Delta commit",
        ),
        view_seconds: histogram(
            &registry,
            "cormorant_view_step_seconds",
            "time of one view step: read what the table's commits touched, recompute, commit (label: the view)",
        ),
        view_freshness: histogram(
            &registry,
            "cormorant_view_freshness_seconds",
            "time from a table's commit to the commit of a view reflecting it (label: the view)",
        ),
        view_late: counter(
            &registry,
            "cormorant_view_late_changes_total",
            "windows a change reached after they were final, applied or sent to _view_late as the view's `late` says (label: the view)",
        ),
        compactions: counter(&registry, "cormorant_compactions_total", "compaction commits"),
        data_loss_skipped: counter(
            &registry,
            "cormorant_data_loss_skipped_records_total",
            "records deleted by the topic's retention before they were applied, skipped (on_data_loss = skip)",
        ),
        compaction_bytes: counter(
            &registry,
            "cormorant_compaction_bytes_written_total",
            "bytes written by compaction",
        ),
        compaction_backlog_files: gauge(
            &registry,
            "cormorant_compaction_backlog_files",
            "files of the owned partitions past the compaction thresholds (small or mostly deleted)",
        ),
        compaction_backlog_bytes: gauge(
            &registry,
            "cormorant_compaction_backlog_bytes",
            "bytes of the files past the compaction thresholds",
        ),
        index_keys: gauge(
            &registry,
            "cormorant_index_keys",
            "keys in the primary-key index of the owned partitions",
        ),
        index_bytes: gauge(
            &registry,
            "cormorant_index_bytes",
            "approximate heap bytes of the primary-key index",
        ),
        partitions_owned: gauge(
            &registry,
            "cormorant_partitions_indexed",
            "source partitions whose keys are indexed",
        ),
        recent_rows_bytes: gauge(
            &registry,
            "cormorant_recent_rows_bytes",
            "bytes of recently written rows kept in memory for previous values",
        ),
        commits_rebased: counter(
            &registry,
            "cormorant_commits_rebased_total",
            "commits that lost a race and were made again at the next version without re-planning",
        ),
        commits_replanned: counter(
            &registry,
            "cormorant_commits_replanned_total",
            "batches planned again because a concurrent commit touched the same files or offsets",
        ),
        files_read: counter(
            &registry,
            "cormorant_files_read_total",
            "data files read from storage for previous rows (soft deletes, TOASTed cells, copy-on-write)",
        ),
        files_recalled: counter(
            &registry,
            "cormorant_files_recalled_total",
            "data files whose previous rows were found in memory (recent rows) instead of read",
        ),
        apply_retries: counter(
            &registry,
            "cormorant_apply_retries_total",
            "batches applied again after a retryable failure, through a writer reloaded from the table",
        ),
        last_checkpoint: gauge(
            &registry,
            "cormorant_last_checkpoint_version",
            "the newest Delta checkpoint this worker wrote",
        ),
        log_files_removed: gauge(
            &registry,
            "cormorant_log_files_removed",
            "expired Delta log files this worker removed",
        ),
        vacuumed_files: gauge(
            &registry,
            "cormorant_vacuumed_files",
            "data and deletion-vector files this worker's vacuum deleted",
        ),
        vacuumed_bytes: gauge(
            &registry,
            "cormorant_vacuumed_bytes",
            "bytes this worker's vacuum deleted",
        ),
        stalled_seconds: {
            let g = prometheus::IntGauge::new(
                "cormorant_stalled_seconds",
                "seconds without progress while records wait, once past metrics.stall_seconds (else 0)",
            )
            .expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        },
        lag,
        registry,
    }
});

/// The metrics in Prometheus's text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Serves `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { ([("content-type", "text/plain; version=0.0.4")], render()) }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(|| async {
                match crate::health::HEALTH.readiness() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics at /metrics, liveness at /healthz, readiness at /readyz");
    axum::serve(listener, app).await?;
    Ok(())
}
