//! Table-engine measurements, run on demand (`cargo bench --profile dev --bench lake`, or
//! `--release` when a release build is affordable); results are appended to
//! `benches/results/lake.md`.
//!
//! 1. Write amplification: 100,000 rows loaded, then 100,000 updates of random keys in batches
//!    of 1,000, in copy-on-write and in merge-on-read; bytes written to storage (data files
//!    and deletion vectors) per byte of change data (Arrow size of the batches).
//! 2. Restart on `BENCH_RESTART_KEYS` keys (10,000,000): a fresh writer's first commit, which
//!    loads the primary-key index from the table's key columns, and the index's memory per key.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, meta_fields};
use tables::{DeleteMode, Lake, TableWriter, WriteMode, WriterOptions};

// seeded, so every run measures the same workload
use tables::fault::SplitMix64 as Rng;

fn columns() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("payload", DataType::Utf8, true),
    ]))
}

/// Upserts of `ids` at stream offsets starting at `first_offset`.
fn upserts(ids: &[i64], first_offset: i64, rng: &mut Rng) -> ChangeBatch {
    let n = ids.len();
    let offsets: Vec<i64> = (0..n as i64).map(|i| first_offset + i).collect();
    let payload: Vec<String> = (0..n).map(|_| format!("{:0>96x}", rng.next_u64())).collect();
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("name-{i}")))),
        Arc::new(
            Decimal128Array::from_iter_values((0..n).map(|_| (rng.next_u64() % 1_000_000) as i128))
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
        ),
        Arc::new(StringArray::from_iter_values(payload)),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n("u", n))),
        Arc::new(BooleanArray::from(vec![false; n])),
        Arc::new(TimestampMicrosecondArray::from_iter_values(offsets.iter().map(|o| o * 1000)).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![None::<i64>; n])),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from(offsets.clone())),
    ];
    let mut fields: Vec<Field> = columns().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(meta_fields());
    ChangeBatch {
        columns: columns(),
        key_columns: vec!["id".into()],
        data: RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch"),
        kinds: vec![ChangeKind::Upsert; n],
        positions: offsets
            .iter()
            .map(|o| Position {
                partition: 0,
                offset: *o,
            })
            .collect(),
        unavailable: Vec::new(),
        offsets: vec![SourceOffset {
            stream: change::StreamId::new("bench", "t"),
            partition: 0,
            next_offset: first_offset + n as i64,
        }],
    }
}

async fn write_amplification(mode: WriteMode, root: &Path) -> anyhow::Result<(u64, u64, f64)> {
    let lake_dir = root.join(format!("wa-{mode:?}"));
    let lake = Lake::new(&lake_dir.to_string_lossy(), Default::default())?;
    let opts = WriterOptions {
        deletes: DeleteMode::Soft,
        mode,
        ..Default::default()
    };
    let mut w = TableWriter::open(&lake, "t", opts).await?;
    let mut rng = Rng(42);
    let keys = 100_000i64;
    let ids: Vec<i64> = (0..keys).collect();
    w.apply(&upserts(&ids, 0, &mut rng)).await?;
    let before = common::dir_bytes(&lake_dir.join("t"));
    let mut input = 0u64;
    let mut offset = keys;
    let started = Instant::now();
    for _ in 0..100 {
        let ids: Vec<i64> = (0..1000).map(|_| (rng.next_u64() % keys as u64) as i64).collect();
        let b = upserts(&ids, offset, &mut rng);
        offset += 1000;
        input += b.data.get_array_memory_size() as u64;
        w.apply(&b).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let written = common::dir_bytes(&lake_dir.join("t")) - before;
    Ok((written, input, secs))
}

/// A table of `keys` keys (one partition, files of 1,000,000 rows), then a fresh writer: the
/// time from opening it to its first commit (the index loaded from the table's key columns),
/// the index's heap bytes per key, and how much the process's resident set grew.
async fn restart(root: &Path, keys: i64) -> anyhow::Result<(f64, f64, f64, f64)> {
    let lake_dir = root.join("restart");
    let lake = Lake::new(&lake_dir.to_string_lossy(), Default::default())?;
    let opts = WriterOptions {
        deletes: DeleteMode::Soft,
        mode: WriteMode::Mor,
        ..Default::default()
    };
    let mut rng = Rng(7);
    let chunk = 1_000_000i64;
    {
        let mut w = TableWriter::open(&lake, "t", opts.clone()).await?;
        let mut start = 0;
        while start < keys {
            let ids: Vec<i64> = (start..(start + chunk).min(keys)).collect();
            w.apply(&upserts(&ids, start, &mut rng)).await?;
            start += chunk;
        }
    }
    let before = common::rss();
    let started = Instant::now();
    let mut w = TableWriter::open(&lake, "t", opts).await?;
    w.apply(&upserts(&[5, keys / 2], keys, &mut rng)).await?;
    let secs = started.elapsed().as_secs_f64();
    let keys_indexed = w.indexed_keys().unwrap_or(0) as f64;
    let bytes = w.index_heap_bytes().unwrap_or(0) as f64;
    let grown = common::rss().saturating_sub(before) as f64;
    Ok((
        secs,
        keys_indexed,
        bytes / keys_indexed.max(1.0),
        grown / keys_indexed.max(1.0),
    ))
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let root = std::env::temp_dir().join(format!("cormorant-bench-lake-{}", std::process::id()));
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let mut lines = Vec::new();
    let mut results = BTreeMap::new();
    for mode in [WriteMode::Cow, WriteMode::Mor] {
        let (written, input, secs) = rt.block_on(write_amplification(mode, &root))?;
        results.insert(format!("{mode:?}"), written);
        lines.push(format!(
            "| {date} | {profile} | write amplification, 100k updates of 100k keys, {mode:?} | {written} bytes written / {input} bytes of changes = {:.1}x | {secs:.1} s |",
            written as f64 / input as f64
        ));
    }
    let restart_keys: i64 = std::env::var("BENCH_RESTART_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let (secs, keys, per_key, rss_per_key) = rt.block_on(restart(&root, restart_keys))?;
    lines.push(format!(
        "| {date} | {profile} | restart on {keys} keys: open + first commit (index loaded from the table's key columns) | {per_key:.0} bytes/key in the index ({rss_per_key:.0} bytes/key of resident set) | {secs:.2} s |"
    ));
    let text = lines.join("\n") + "\n";
    print!("{text}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/lake.md");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}
