//! Throughput of the data path without a broker: the real Debezium capture decoded
//! (frame → Avro → Arrow → ChangeBatch) and applied (copy-on-write, local disk) in batches.
//!
//! Run on demand: `cargo bench --bench apply` (release build; over an hour cold on 2 cores)
//! or `cargo run --profile dev --bench apply` equivalent: `cargo bench --profile dev --bench apply`.
//! Results are appended to `benches/results/apply.md`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use connectors::registry::{RegistrySettings, SchemaCache};
use connectors::{BatchDecoder, RawRecord};
use cormorant::fixture::Fixture;
use tables::{DeleteMode, Lake, TableWriter, WriteMode, WriterOptions};

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debezium");
    let fx = Fixture::load(&dir)?;
    let cache = Arc::new(SchemaCache::new(&RegistrySettings {
        url: "http://127.0.0.1:1".into(),
        ..RegistrySettings::default()
    })?);
    for (id, _, schema) in &fx.schemas {
        cache.insert(*id, schema)?;
    }
    let batch_size: usize = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let lake_dir = std::env::temp_dir().join(format!("cormorant-bench-{}", std::process::id()));
    let lake = Lake::new(&lake_dir.to_string_lossy(), HashMap::new())?;
    let mut writers = HashMap::new();
    for t in ["customers", "orders", "products"] {
        let opts = WriterOptions {
            deletes: DeleteMode::Soft,
            mode: WriteMode::Cow,
        };
        writers.insert(format!("dbz.public.{t}"), TableWriter::open(&lake, t, opts).await?);
    }
    let mut decode_secs = 0.0;
    let mut apply_secs = 0.0;
    let mut commits = 0;
    for chunk in fx.events.chunks(batch_size) {
        let t0 = Instant::now();
        let mut dec = BatchDecoder::new(cache.clone(), "bench");
        for e in chunk {
            let rec = RawRecord {
                topic: e.topic.clone(),
                partition: e.partition,
                offset: e.offset,
                key: e.key.clone(),
                value: e.value.clone(),
                timestamp_ms: e.timestamp,
            };
            dec.push(&e.topic, rec).await?;
        }
        let decoded = dec.finish()?;
        decode_secs += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for (topic, batch) in &decoded.tables {
            if let Some(w) = writers.get_mut(topic) {
                commits += usize::from(w.apply(batch).await?.version.is_some());
            }
        }
        apply_secs += t1.elapsed().as_secs_f64();
    }
    let n = fx.events.len() as f64;
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    let line = format!(
        "| {} | {profile} | {batch_size} | {} | {commits} | {:.0} | {:.0} | {:.0} |\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        fx.events.len(),
        n / decode_secs,
        n / apply_secs,
        n / (decode_secs + apply_secs)
    );
    print!("date | profile | batch | events | commits | decode ev/s | apply ev/s | total ev/s\n{line}");
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/apply.md");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(results)?;
    f.write_all(line.as_bytes())?;
    let _ = std::fs::remove_dir_all(lake_dir);
    Ok(())
}
