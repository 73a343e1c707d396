//! A compressed long run: one table reaches `SOAK_COMMITS` (20,000) commits of small batches
//! with compaction beside ingest, checkpoints, log expiry and vacuum on, fed from memory through the
//! same pipeline as `cormorant run`. At 1k, 5k, 10k and 20k commits it measures what must stay
//! flat for a worker that runs for months:
//!
//! - start-up to first commit: a second pipeline (a restarted worker) opens the table, loads
//!   its index and commits one batch of its own partition;
//! - snapshot load: opening the table at its latest version (what every reader does);
//! - `SELECT count(*)` through the query engine;
//! - files in `_delta_log`, bytes of the table on storage, and this process's resident set.
//!
//! The stream is a table of `SOAK_KEYS` rows in a steady state (80/10/10 update/delete/
//! re-insert after the first inserts), so the live data does not grow and what the figures
//! show is the cost of running long.
//!
//! Settings (environment): `SOAK_COMMITS` (20000), `SOAK_BATCH` records per commit (20),
//! `SOAK_KEYS` (20000), `SOAK_LOG_RETENTION` (60s), `SOAK_FILE_RETENTION` (60s),
//! `SOAK_VACUUM_EVERY` (30s). Results go to `benches/results/soak.md`; run with `scripts/soak`.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{Generator, Shape, env};
use connectors::RawRecord;
use connectors::kafka::{Assignment, RawBatch};
use cormorant::config::{Config, TableConfig};
use cormorant::pipeline::Pipeline;
use tables::{DeleteMode, Lake, WriteMode};

#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    cormorant::memory::tune_allocator(); // as the binary does
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

const TOPIC: &str = "soak.public.customers";

/// Records of `partition`, offsets from `*next` on.
fn records(g: &mut Generator, partition: i32, next: &mut i64, n: usize) -> anyhow::Result<RawBatch> {
    let ts = chrono::Utc::now().timestamp_millis();
    let mut batch = RawBatch::default();
    for _ in 0..n {
        let r = g.next_record(ts)?;
        batch.bytes += r.key.len() + r.value.as_ref().map_or(0, Vec::len);
        batch.records.push(RawRecord {
            topic: TOPIC.into(),
            partition,
            offset: *next,
            key: Some(r.key.into()),
            value: r.value.map(Into::into),
            timestamp_ms: Some(ts),
        });
        *next += 1;
    }
    Ok(batch)
}

async fn run() -> anyhow::Result<()> {
    let commits: u64 = env("SOAK_COMMITS", 20_000);
    let batch: usize = env("SOAK_BATCH", 20);
    let keys: u64 = env("SOAK_KEYS", 20_000);
    let (addr, _registry) = cormorant::registry::spawn(None).await?;
    let registry = format!("http://{addr}");
    let (key_id, value_id) = common::register(&registry, TOPIC).await?;
    let dir = std::env::temp_dir().join(format!("cormorant-soak-{}", std::process::id()));
    let mut cfg = Config::default();
    cfg.registry.url = registry;
    cfg.kafka.group_id = "soak".into();
    cfg.lake.uri = dir.to_string_lossy().into_owned();
    cfg.tables = vec![TableConfig {
        name: "customers".into(),
        topic: TOPIC.into(),
        mode: WriteMode::Mor,
        deletes: DeleteMode::Soft,
        ..Default::default()
    }];
    cfg.maintenance.log_retention = env("SOAK_LOG_RETENTION", "60s".to_string());
    cfg.maintenance.deleted_file_retention = env("SOAK_FILE_RETENTION", "60s".to_string());
    cfg.maintenance.vacuum_every = env("SOAK_VACUUM_EVERY", "30s".to_string());
    let lake = Lake::new(&cfg.lake.uri, Default::default())?;
    let pipeline = Pipeline::new(
        &cfg,
        &lake,
        &cfg.tables,
        Assignment::everything(),
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    let progress = pipeline.progress();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let applying = tokio::spawn(pipeline.run(rx));
    // a table in a steady state: its rows stay at `keys`, so what grows is maintenance's doing
    let mut g = Generator::new(Shape::Steady { keys }, key_id, value_id, 11)?;
    // the restarted-worker probe writes partition 1 with keys of its own (keys never move
    // between partitions)
    let mut probe_g = Generator::new(Shape::Steady { keys: 1_000 }, key_id, value_id, 12)?.with_first_key(1 << 30);
    let (mut next, mut probe_next) = (0i64, 0i64);
    let marks: Vec<u64> = [1_000, 5_000, 10_000, 20_000, 50_000]
        .into_iter()
        .filter(|m| *m <= commits)
        .collect();
    let started = Instant::now();
    let mut lines = Vec::new();
    for sent in 1..=commits {
        tx.send(records(&mut g, 0, &mut next, batch)?).await?;
        if !marks.contains(&sent) {
            continue;
        }
        while progress.stats().batches < sent {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let line = measure(&cfg, &lake, &dir, sent, &mut probe_g, &mut probe_next, batch, started).await?;
        println!("{line}");
        lines.push(line);
    }
    drop(tx);
    applying.await??;
    for line in lines {
        common::append_result(
            "soak.md",
            "# benches/soak.rs results\n\nOne table, small batches, inline compaction, checkpoints every 100 commits, log retention and vacuum retention 60 s, vacuum every 30 s (release profile, local disk). `start-up` = a second pipeline opening the table, loading its index and committing one batch; `load` = opening the latest snapshot; `count(*)` through the query engine.\n\n| date | profile | batch | commits | table version | elapsed s | start-up to first commit ms | snapshot load ms | count(*) ms | rows | _delta_log files | bytes on storage | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            &line,
        )?;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one bench's measurement, called from one place
async fn measure(
    cfg: &Config,
    lake: &Lake,
    dir: &Path,
    sent: u64,
    g: &mut Generator,
    probe_next: &mut i64,
    batch: usize,
    started: Instant,
) -> anyhow::Result<String> {
    // a restarted worker: open, index, commit one batch of partition 1 (its own offsets)
    let t = Instant::now();
    let probe = Pipeline::new(
        cfg,
        lake,
        &cfg.tables,
        Assignment::everything(),
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    let (ptx, prx) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(probe.run(prx));
    ptx.send(records(g, 1, probe_next, batch)?).await?;
    drop(ptx);
    run.await??;
    let startup = t.elapsed();
    let t = Instant::now();
    let table = lake.open("customers", None).await?;
    let load = t.elapsed();
    let version = table.version().unwrap_or(0);
    let t = Instant::now();
    let ctx = cormorant::query::session(cfg).await?;
    let out = cormorant::query::run_sql(&ctx, "SELECT count(*) FROM customers").await?;
    let count_ms = t.elapsed();
    let rows = out
        .first()
        .and_then(|b| b.first())
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(-1);
    let log_files = std::fs::read_dir(dir.join("customers/_delta_log"))?.count();
    Ok(format!(
        "| {} | {} | {batch} | {sent} | {version} | {:.0} | {} | {} | {} | {rows} | {log_files} | {} | {} |",
        chrono::Utc::now().format("%Y-%m-%d"),
        common::profile(),
        started.elapsed().as_secs_f64(),
        startup.as_millis(),
        load.as_millis(),
        count_ms.as_millis(),
        common::dir_bytes(&dir.join("customers")),
        common::rss() / (1 << 20),
    ))
}
