//! The decode-and-apply pipeline fed from memory: what Cormorant itself costs per event,
//! whatever the broker. A realistic Debezium stream (benches/common) is generated up front,
//! cut into batches as the consumer would, and pushed through `cormorant::pipeline::Pipeline`
//! into a local lake, with the project's own schema registry serving the real schemas.
//!
//! Settings (environment): `BENCH_SHAPE` insert|upsert (default upsert), `BENCH_EVENTS`
//! (500000), `BENCH_KEYS` for upsert (100000), `BENCH_MODE` mor|cow (mor), `BENCH_PARTITIONS`
//! (1), `BENCH_BATCH` records per batch (50000), `BENCH_COMPACTION` on|off (on, as a worker
//! runs), `BENCH_MARK` a file written when the timed
//! part starts (for `perf record -p`). Results are appended to
//! `benches/results/pipeline.md`. Run with `scripts/bench pipeline` (release build).

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use common::{Generator, Shape, env};
use connectors::RawRecord;
use connectors::kafka::{Assignment, RawBatch};
use cormorant::config::{Config, TableConfig};
use cormorant::pipeline::Pipeline;
use tables::{DeleteMode, Lake, WriteMode};

// the allocator the `cormorant` binary uses
#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    cormorant::memory::tune_allocator(); // as the binary does
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let shape_name: String = env("BENCH_SHAPE", "upsert".to_string());
    let events: u64 = env("BENCH_EVENTS", 500_000);
    let keys: u64 = env("BENCH_KEYS", 100_000);
    let mode_name: String = env("BENCH_MODE", "mor".to_string());
    let partitions: i32 = env("BENCH_PARTITIONS", 1);
    let batch: usize = env("BENCH_BATCH", 50_000);
    let shape = if shape_name == "insert" {
        Shape::Insert
    } else {
        Shape::Upsert { keys }
    };
    let mode = if mode_name == "cow" {
        WriteMode::Cow
    } else {
        WriteMode::Mor
    };

    let (addr, _registry) = cormorant::registry::spawn(None).await?;
    let registry = format!("http://{addr}");
    let topic = "bench.public.customers";
    let (key_id, value_id) = common::register(&registry, topic).await?;

    // the stream, generated before the clock starts
    let mut generator = Generator::new(shape, key_id, value_id, 42)?;
    let topic_name: Arc<str> = topic.into();
    let mut offsets = vec![0i64; partitions as usize];
    let mut records = Vec::with_capacity(events as usize);
    let mut input_bytes = 0u64;
    let ts = chrono::Utc::now().timestamp_millis();
    for _ in 0..events {
        let r = generator.next_record(ts)?;
        let p = common::partition_of(&r.key, partitions);
        input_bytes += (r.key.len() + r.value.as_ref().map_or(0, Vec::len)) as u64;
        records.push(RawRecord {
            topic: topic_name.clone(),
            partition: p,
            offset: offsets[p as usize],
            key: Some(r.key.into()),
            value: r.value.map(Into::into),
            timestamp_ms: Some(ts),
        });
        offsets[p as usize] += 1;
    }

    let dir = std::env::temp_dir().join(format!("cormorant-bench-pipeline-{}", std::process::id()));
    let mut cfg = Config::default();
    cfg.registry.url = registry;
    cfg.kafka.group_id = "bench".into();
    cfg.lake.uri = dir.to_string_lossy().into_owned();
    cfg.tables = vec![TableConfig {
        name: "customers".into(),
        topic: topic.into(),
        mode,
        deletes: DeleteMode::Soft,
        ..Default::default()
    }];
    // inline compaction (on by default, as in a worker) rewrites the small files every 20
    // commits; BENCH_COMPACTION=off measures ingest alone
    cfg.compaction.inline = env("BENCH_COMPACTION", "on".to_string()) == "on";
    let lake = Lake::new(&cfg.lake.uri, Default::default())?;
    let pipeline = Pipeline::new(
        &cfg,
        &lake,
        &cfg.tables,
        Assignment::everything(),
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if let Ok(mark) = std::env::var("BENCH_MARK") {
        // for profilers: the timed part starts now (`perf record -p` once this file exists)
        std::fs::write(mark, std::process::id().to_string())?;
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let cpu0 = common::cpu_seconds();
    let started = Instant::now();
    let applying = tokio::spawn(pipeline.run(rx));
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<RawRecord> = records.by_ref().take(batch).collect();
        let bytes = chunk.iter().map(RawRecord::bytes).sum();
        tx.send(RawBatch { records: chunk, bytes }).await?;
    }
    drop(tx);
    let stats = applying.await??;
    let secs = started.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds() - cpu0;
    let written = common::dir_bytes(&dir.join("customers"));
    let line = format!(
        "| {} | {} | {shape_name} | {} | {mode_name} | {partitions} | {batch} | {} | {events} | {:.2} | {:.0} | {:.2} | {:.0} | {} | {:.2} | {} |",
        chrono::Utc::now().format("%Y-%m-%d"),
        common::profile(),
        if shape == Shape::Insert {
            "-".to_string()
        } else {
            keys.to_string()
        },
        if cfg.compaction.inline { "on" } else { "off" },
        secs,
        events as f64 / secs,
        cpu,
        events as f64 / cpu,
        stats.commits,
        written as f64 / input_bytes as f64,
        common::peak_rss() / (1 << 20),
    );
    println!("{line}");
    common::append_result(
        "pipeline.md",
        "# benches/pipeline.rs results\n\nThe pipeline fed from memory (no broker): a generated Debezium stream (real customers schemas) decoded and applied to a local lake. `events/CPU-s` is what Cormorant costs per event. `write amp.` = bytes written to the table / bytes of the Avro records. Peak RSS includes the generated input held in memory.\n\n| date | profile | shape | keys | mode | partitions | batch | inline compaction | events | wall s | events/s | CPU s | events/CPU-s | commits | write amp. | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        &line,
    )?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
