//! Views kept per commit against views recomputed per commit, side by side in one run: the
//! pipeline fed from memory (no broker, as benches/pipeline.rs) at a fixed rate, into a
//! customers table that already holds a history, with a windowed view over it.
//!
//! Three runs over the same generated stream, each on a fresh lake: no view (the ingest
//! alone), the view with `refresh = "incremental"` (a step recomputes only the windows the
//! commit touched), and with `refresh = "full"` (a step recomputes the whole view, what a
//! scheduled batch query would do). Each run first loads the history unpaced, restarts the
//! pipeline (the view's first step happens there, before the clock), then feeds batches on a
//! fixed schedule. Freshness is read from the Delta logs afterwards: for every batch, the
//! time from its scheduled arrival to the commit of the table that holds it, and to the view
//! commit whose `txn` covers that table version. A run that cannot keep the rate falls
//! behind the schedule, and its freshness shows it.
//!
//! The view: `tumble('customers', '__source_ts', INTERVAL '10 seconds')` grouped by
//! `loyalty_tier` with count, sum, avg and max (max needs a recomputation on retraction).
//! Event times follow the schedule (the history is 10 ms of event time apart per event),
//! so a batch of inserts touches the newest window or two; an update also touches the window
//! of the row it replaces, anywhere in the history.
//!
//! Settings (environment): `BENCH_SHAPE` insert|upsert (upsert: 70/10/20 over `BENCH_KEYS`),
//! `BENCH_VIEW` tumble|sums|session (the view above, `SUMS_SQL` or `SESSION_SQL`),
//! `BENCH_KEYS` (100000), `BENCH_HISTORY` events loaded first (200000), `BENCH_RATE` events/s
//! (5000), `BENCH_SECS` (30), `BENCH_TICK_MS` batch interval (200), `BENCH_ONLY` (comma list of
//! none,incremental,windows,full; `windows` recomputes touched windows where `incremental`
//! would use arithmetic), `RUST_LOG` (e.g. `cormorant::views=debug`: the phases of each view
//! step). Results are appended to `benches/results/views.md`. Run with
//! `scripts/bench views` (release build).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{Generator, Shape, env};
use connectors::RawRecord;
use connectors::kafka::{Assignment, RawBatch};
use cormorant::config::{Config, TableConfig};
use cormorant::pipeline::Pipeline;
use cormorant::views::{Refresh, ViewConfig};
use tables::{DeleteMode, Lake, WriteMode};

#[cfg(not(feature = "heap-profile"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPIC: &str = "bench.public.customers";
const VIEW_SQL: &str = "SELECT window_start, window_end, loyalty_tier, count(*) AS customers, \
    sum(balance) AS balance, avg(balance) AS avg_balance, max(balance) AS top_balance \
    FROM tumble('customers', '__source_ts', INTERVAL '10 seconds') \
    GROUP BY window_start, window_end, loyalty_tier";
/// `BENCH_VIEW=sums`: the view above without max, so that count, sum and avg are kept by
/// arithmetic (`incremental`) rather than by recomputing the touched windows (`windows`).
const SUMS_SQL: &str = "SELECT window_start, window_end, loyalty_tier, count(*) AS customers, \
    sum(balance) AS balance, avg(balance) AS avg_balance \
    FROM tumble('customers', '__source_ts', INTERVAL '10 seconds') \
    GROUP BY window_start, window_end, loyalty_tier";
/// `BENCH_VIEW=session`: sessions per name (12 names, so about 120 ms of event time between a
/// name's events) with a 250 ms gap: a batch of inserts reaches the newest session of each
/// name; an update also the sessions of the row it replaces.
const SESSION_SQL: &str = "SELECT window_start, window_end, full_name, count(*) AS customers, \
    sum(balance) AS balance, max(balance) AS top_balance \
    FROM session('customers', '__source_ts', INTERVAL '250 milliseconds', 'full_name') \
    GROUP BY window_start, window_end, full_name";

fn main() -> anyhow::Result<()> {
    cormorant::memory::tune_allocator();
    if std::env::var_os("RUST_LOG").is_some() {
        // e.g. RUST_LOG=cormorant::views=debug: each step's phases
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

/// The stream: the history, then the paced part.
struct Stream {
    history: Vec<RawRecord>,
    paced: Vec<RawRecord>,
}

/// What one run measured.
struct Measured {
    events_per_sec: f64,
    cpu: f64,
    commits: usize,
    view_commits: usize,
    /// arrival → table commit, arrival → view commit (ms, per batch)
    table_lag: Vec<i64>,
    view_lag: Vec<i64>,
}

async fn run() -> anyhow::Result<()> {
    let shape_name: String = env("BENCH_SHAPE", "upsert".to_string());
    let keys: u64 = env("BENCH_KEYS", 100_000);
    let history: usize = env("BENCH_HISTORY", 200_000);
    let rate: u64 = env("BENCH_RATE", 5_000);
    let secs: u64 = env("BENCH_SECS", 30);
    let tick_ms: u64 = env("BENCH_TICK_MS", 200);
    let only: String = env("BENCH_ONLY", "none,incremental,full".to_string());
    let shape = if shape_name == "insert" {
        Shape::Insert
    } else {
        Shape::Upsert { keys }
    };

    let (addr, _registry) = cormorant::registry::spawn(None).await?;
    let registry = format!("http://{addr}");
    let (key_id, value_id) = common::register(&registry, TOPIC).await?;
    let stream = generate(shape, (key_id, value_id), history, rate * secs, rate)?;

    for variant in only.split(',') {
        let refresh = match variant {
            "none" => None,
            "incremental" => Some(Refresh::Incremental),
            "windows" => Some(Refresh::Windows),
            "full" => Some(Refresh::Full),
            other => anyhow::bail!("BENCH_ONLY: unknown run {other:?} (none, incremental, windows, full)"),
        };
        let m = measure(&registry, &stream, refresh, rate, tick_ms).await?;
        let q = |v: &[i64], f: f64| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", v[((v.len() - 1) as f64 * f) as usize])
            }
        };
        let variant = match env("BENCH_VIEW", "tumble".to_string()).as_str() {
            "session" if variant != "none" => format!("session {variant}"),
            "sums" if variant != "none" => format!("sums {variant}"),
            _ => variant.to_string(),
        };
        let line = format!(
            "| {} | {} | {shape_name} | {} | {history} | {rate} | {tick_ms} | {secs} | {variant} | {:.0} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} |",
            chrono::Utc::now().format("%Y-%m-%d"),
            common::profile(),
            if shape == Shape::Insert {
                "-".to_string()
            } else {
                keys.to_string()
            },
            m.events_per_sec,
            m.cpu,
            (rate * secs) as f64 / m.cpu,
            m.commits,
            m.view_commits,
            q(&m.table_lag, 0.5),
            q(&m.table_lag, 0.99),
            q(&m.view_lag, 0.5),
            q(&m.view_lag, 0.99),
        );
        println!("{line}");
        common::append_result(
            "views.md",
            "# benches/views.rs results\n\nA windowed view kept per commit (`incremental`: only the windows a commit touched; `full`: the whole view recomputed at every commit) against no view, at a fixed rate, the pipeline fed from memory (see the top of benches/views.rs). `events/s` is what the run achieved of the rate; `CPU s` and `events/CPU-s` cover the paced part. Freshness in ms from a batch's scheduled arrival to the commit of the table holding it (`table`) and to the view commit covering that table version (`view`).\n\n| date | profile | shape | keys | history | rate | tick ms | secs | view | events/s | CPU s | events/CPU-s | table commits | view commits | table p50 | table p99 | view p50 | view p99 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            &line,
        )?;
    }
    Ok(())
}

/// The records of the history and of the paced part, with event times on the schedule.
fn generate(shape: Shape, ids: (u32, u32), history: usize, paced: u64, rate: u64) -> anyhow::Result<Stream> {
    let mut generator = Generator::new(shape, ids.0, ids.1, 42)?;
    let topic: Arc<str> = TOPIC.into();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?.timestamp_millis();
    let mut offset = 0i64;
    let mut next = |ts_ms: i64| -> anyhow::Result<RawRecord> {
        let r = generator.next_record(ts_ms)?;
        offset += 1;
        Ok(RawRecord {
            topic: topic.clone(),
            partition: 0,
            offset: offset - 1,
            key: Some(r.key.into()),
            value: r.value.map(Into::into),
            timestamp_ms: Some(ts_ms),
        })
    };
    let mut h = Vec::with_capacity(history);
    for i in 0..history {
        h.push(next(start + i as i64 * 10)?);
    }
    let paced_start = start + history as i64 * 10;
    let mut p = Vec::with_capacity(paced as usize);
    for i in 0..paced {
        p.push(next(paced_start + (i * 1000 / rate) as i64)?);
    }
    Ok(Stream { history: h, paced: p })
}

fn config(registry: &str, dir: &Path, refresh: Option<Refresh>) -> Config {
    let mut cfg = Config::default();
    cfg.registry.url = registry.to_string();
    cfg.kafka.group_id = "bench".into();
    cfg.lake.uri = dir.to_string_lossy().into_owned();
    cfg.tables = vec![TableConfig {
        name: "customers".into(),
        topic: TOPIC.into(),
        mode: WriteMode::Mor,
        deletes: DeleteMode::Soft,
        ..Default::default()
    }];
    if let Some(refresh) = refresh {
        cfg.views = vec![ViewConfig {
            name: "tier_windows".into(),
            sql: match env("BENCH_VIEW", "tumble".to_string()).as_str() {
                "session" => SESSION_SQL.into(),
                "sums" => SUMS_SQL.into(),
                _ => VIEW_SQL.into(),
            },
            refresh,
            ..Default::default()
        }];
    }
    cfg
}

async fn pipeline(cfg: &Config, lake: &Lake) -> anyhow::Result<Pipeline> {
    Pipeline::new(
        cfg,
        lake,
        &cfg.tables,
        Assignment::everything(),
        Arc::new(AtomicBool::new(false)),
    )
    .await
}

fn raw(records: &[RawRecord]) -> RawBatch {
    let bytes = records.iter().map(RawRecord::bytes).sum();
    RawBatch {
        records: records.to_vec(),
        bytes,
    }
}

async fn measure(
    registry: &str,
    stream: &Stream,
    refresh: Option<Refresh>,
    rate: u64,
    tick_ms: u64,
) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!("cormorant-bench-views-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = config(registry, &dir, refresh);
    let lake = Lake::new(&cfg.lake.uri, Default::default())?;

    // the history, unpaced; its pipeline ends when the channel closes
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let loading = tokio::spawn(pipeline(&cfg, &lake).await?.run(rx));
    for chunk in stream.history.chunks(50_000) {
        tx.send(raw(chunk)).await?;
    }
    drop(tx);
    loading.await??;

    // the paced part: the view's first step (catch-up) runs before the first batch is due
    let per_tick = (rate * tick_ms / 1000).max(1) as usize;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let p = pipeline(&cfg, &lake).await?;
    let applying = tokio::spawn(p.run(rx));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = common::cpu_seconds();
    let started = Instant::now();
    let wall0 = chrono::Utc::now().timestamp_millis();
    let mut due: Vec<(i64, i64)> = Vec::new(); // (scheduled arrival ms, last offset) per batch
    for (k, chunk) in stream.paced.chunks(per_tick).enumerate() {
        let at = Duration::from_millis(k as u64 * tick_ms);
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        due.push((wall0 + at.as_millis() as i64, chunk.last().map_or(0, |r| r.offset)));
        tx.send(raw(chunk)).await?;
    }
    drop(tx);
    applying.await??;
    let secs = started.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds() - cpu0;

    let table = commits(&dir.join("customers"))?;
    let view = commits(&dir.join("tier_windows"))?;
    let (mut table_lag, mut view_lag) = (Vec::new(), Vec::new());
    for (arrival, last) in &due {
        let Some((&v, c)) = table.iter().find(|(_, c)| c.txn.is_some_and(|n| n > *last)) else {
            continue;
        };
        table_lag.push(c.at - arrival);
        if let Some(vc) = view.values().find(|c| c.txn.is_some_and(|n| n > v as i64)) {
            view_lag.push(vc.at - arrival);
        }
    }
    table_lag.sort_unstable();
    view_lag.sort_unstable();
    let paced_from = table.values().filter(|c| c.at >= wall0).count();
    let view_commits = view.values().filter(|c| c.at >= wall0).count();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measured {
        events_per_sec: stream.paced.len() as f64 / secs,
        cpu,
        commits: paced_from,
        view_commits,
        table_lag,
        view_lag,
    })
}

/// A commit of a table: when (commitInfo timestamp, ms) and the `txn` version it records.
struct Commit {
    at: i64,
    txn: Option<i64>,
}

/// The commits of the table at `path`, by version, read from its JSON log.
fn commits(path: &Path) -> anyhow::Result<BTreeMap<u64, Commit>> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(path.join("_delta_log")) else {
        return Ok(out);
    };
    for e in dir.flatten() {
        let p = e.path();
        let Some(version) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let mut c = Commit { at: 0, txn: None };
        for line in std::fs::read_to_string(&p)?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            if let Some(t) = v.pointer("/commitInfo/timestamp").and_then(|x| x.as_i64()) {
                c.at = t;
            }
            if let Some(n) = v.pointer("/txn/version").and_then(|x| x.as_i64()) {
                c.txn = Some(n);
            }
        }
        out.insert(version, c);
    }
    Ok(out)
}
