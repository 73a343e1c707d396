//! End to end through a broker that is not the limit: librdkafka's mock cluster, hosted by
//! this process and reached over TCP by the worker processes (release `cormorant run
//! --until-caught-up`) and by kafka-delta-ingest, side by side in the same run.
//!
//! 1. the broker's own ceiling: a plain consumer that only reads the upsert topic, in a
//!    process of its own, so that its CPU per event (the floor under a worker's) is measured;
//! 2. the append stream (inserts): Cormorant, then kafka-delta-ingest (when `KDI_BIN` names
//!    its binary; build it from delta-io/kafka-delta-ingest with
//!    `CARGO_PROFILE_RELEASE_LTO=false cargo build --release --features s3`), timed until its
//!    `txn` offsets reach the end offsets — its `-e` flag never stops on a static topic;
//! 3. the 70/10/20 upsert stream: merge-on-read and copy-on-write with 1 worker, then
//!    merge-on-read with 2 and 3 workers of one group (6 partitions);
//! 4. freshness: a producer at a fixed rate, one worker, every row's source `ts_ms` against
//!    the moment its commit became visible to a reader of the table.
//!
//! Rows give events/s over the whole wall time (process start, group join — 3 s on the mock
//! cluster — and shutdown included) and, in the note, the streaming rate: events per second
//! from the first partition assignment a worker logged to the table's last commit that moved
//! `txn` offsets (its `commitInfo.timestamp`).
//!
//! Settings (environment): `BENCH_EVENTS` (1000000), `BENCH_KEYS` (100000),
//! `BENCH_PARTITIONS` (6), `BENCH_FRESH_RATE` events/s (20000), `BENCH_FRESH_SECS` (30),
//! `BENCH_ONLY` (comma list of ceiling,append,upsert,group,fresh), `BENCH_UPSERT_MODES` (mor,cow),
//! `BENCH_KEEP=1` (keep the lakes and the workers' logs), `BENCH_PIN=1` (worker i on core i),
//! `CORMORANT_BIN` (default
//! target/release/cormorant), `KDI_BIN`. Results go to `benches/results/stream.md`.
//!
//! The lakes go under `TMPDIR`. To compare two binaries, set `TMPDIR` to a tmpfs directory
//! (`/dev/shm/…`): on ext4 a worker creating thousands of files right after the previous
//! run deleted its lake spent ~11% of its samples in the kernel's inode allocator
//! (`find_inode_bit`, `recently_deleted`), and one binary's CPU per event ranged ±40% from
//! run to run there against ±5–15% on tmpfs.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Generator, Shape, env};
use cormorant::config::{Config, TableConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tables::{DeleteMode, WriteMode};

/// What every run shares.
#[derive(Clone)]
struct Bench {
    bootstrap: String,
    registry: String,
    root: PathBuf,
    partitions: i32,
    bin: PathBuf,
    /// `BENCH_PIN=1`: worker `i` runs on core `i` (modulo the cores), see [`pin`].
    pin: bool,
    lines: Vec<String>,
}

/// One measured run.
struct Measured {
    wall: f64,
    cpu: f64,
    rss: u64,
    commits: usize,
    written: u64,
    /// Events per second from the first partition assignment to the last commit that moved
    /// offsets: the rate once the group has formed, without the process start, the group join
    /// (3 s on the mock cluster) and the shutdown that `wall` includes.
    streaming: Option<f64>,
}

/// Waits for `child`; its CPU seconds (from the kernel) and peak RSS (bytes).
///
/// The peak RSS is the last `VmHWM` of `/proc/<pid>/status` seen while polling, not wait4's
/// `ru_maxrss`: a child forked from this process (which holds the mock broker's data) reports
/// at least the RSS it inherited at fork, before its exec — every worker then "peaked" at the
/// bench's own size.
fn wait_rusage(child: &Child) -> anyhow::Result<(i32, f64, u64)> {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    let status_file = format!("/proc/{}/status", child.id());
    let mut hwm = 0u64;
    let pid = loop {
        if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        }) {
            hwm = kb * 1024;
        }
        // SAFETY: wait4 on our own child's pid fills status and the rusage we pass
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, libc::WNOHANG, usage.as_mut_ptr()) };
        if pid != 0 {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    anyhow::ensure!(pid > 0, "wait4 failed");
    // SAFETY: wait4 returned the child, so it filled `usage`
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, tv(usage.ru_utime) + tv(usage.ru_stime), hwm))
}

/// A producer to the mock broker. `linger_ms`: a stream produced at full speed lingers long,
/// so each partition holds a few large message sets — the mock broker finds a fetch's
/// position by walking a partition's message sets one by one (`rd_kafka_mock_msgset_find`):
/// with 320 partitions and a 20 ms linger (~1,500 sets of ~10 records per partition) that walk
/// was 99% of the broker's CPU and the broker, not the worker, set the pace.
fn producer(bootstrap: &str, linger_ms: u32) -> anyhow::Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        // the mock broker keeps only the last 5 MB of each partition (rdkafka_mock.c,
        // `max_size`): compressed batches let a whole stream fit, as in production Kafka
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Produces `n` records of `shape` to `topic` (at `rate` per second when given); returns the
/// end offset of every partition and the bytes produced.
fn produce(
    b: &Bench,
    topic: &str,
    shape: Shape,
    ids: (u32, u32),
    n: u64,
    rate: Option<u64>,
) -> anyhow::Result<(BTreeMap<i32, i64>, u64)> {
    // at a fixed rate (freshness) records go out within 20 ms, as a live source's would
    let p = producer(&b.bootstrap, if rate.is_some() { 20 } else { 1000 })?;
    let mut g = Generator::new(shape, ids.0, ids.1, 7)?;
    let started = Instant::now();
    let mut bytes = 0u64;
    for i in 0..n {
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(i as f64 / r as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let rec = g.next_record(chrono::Utc::now().timestamp_millis())?;
        bytes += (rec.key.len() + rec.value.as_ref().map_or(0, Vec::len)) as u64;
        let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic).key(&rec.key);
        if let Some(v) = &rec.value {
            record = record.payload(v);
        }
        let mut pending = record;
        loop {
            match p.send(pending) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(10));
                    pending = back;
                }
            }
        }
        if i % 1000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(60))?;
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &b.bootstrap).create()?;
    let mut ends = BTreeMap::new();
    for part in 0..b.partitions {
        let (low, high) = consumer.fetch_watermarks(topic, part, Duration::from_secs(10))?;
        // a figure over a stream the broker already dropped part of would be a lie
        anyhow::ensure!(
            low == 0 || rate.is_some(), // at a fixed rate the worker reads records as they come
            "{topic} [{part}] starts at offset {low}: the mock broker dropped records (it keeps 5 MB per partition); raise BENCH_PARTITIONS or lower BENCH_EVENTS"
        );
        ends.insert(part, high);
    }
    Ok((ends, bytes))
}

/// A plain consumer reading `topic` to its end, in a process of its own (this bench binary
/// again, see [`ceiling_child`]): the broker's ceiling, and the CPU a librdkafka consumer
/// alone spends per event — the floor under any worker's CPU per event. Wall seconds, CPU
/// seconds, records and bytes read.
fn ceiling(b: &Bench, topic: &str, ends: &BTreeMap<i32, i64>) -> anyhow::Result<(f64, f64, u64, u64)> {
    let partitions: Vec<String> = ends.keys().map(i32::to_string).collect();
    let total: i64 = ends.values().sum();
    let started = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .env(
            CEILING_CHILD,
            format!("{}|{topic}|{}|{total}", b.bootstrap, partitions.join(",")),
        )
        .stdout(Stdio::piped())
        .spawn()?;
    let (code, cpu, _) = wait_rusage(&child)?;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(code == 0, "the ceiling consumer exited with {code}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.ok_or_else(|| anyhow::anyhow!("no stdout"))?, &mut out)?;
    let mut it = out.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(n)), Some(Ok(bytes))) = (it.next(), it.next()) else {
        anyhow::bail!("the ceiling consumer printed {out:?}");
    };
    Ok((wall, cpu, n, bytes))
}

/// Environment variable that turns this binary into the ceiling's consumer:
/// `bootstrap|topic|partitions (comma list)|records`.
const CEILING_CHILD: &str = "BENCH_CEILING_CHILD";

/// The ceiling's consumer: reads every partition from the beginning until `records` were
/// read, then prints the records and bytes read.
fn ceiling_child(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split('|').collect();
    let [bootstrap, topic, partitions, total] = parts[..] else {
        anyhow::bail!("{CEILING_CHILD}={spec:?}: expected bootstrap|topic|partitions|records");
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ceiling")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions.split(',') {
        tpl.add_partition_offset(topic, p.parse()?, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let total: u64 = total.parse()?;
    let (mut n, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    while n < total {
        if let Some(Ok(m)) = consumer.poll(Duration::from_secs(1)) {
            n += 1;
            bytes += (m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len)) as u64;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "ceiling consumer stalled");
    }
    println!("{n} {bytes}");
    Ok(())
}

fn worker_config(b: &Bench, topic: &str, mode: WriteMode, tag: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = b.root.join(tag);
    std::fs::create_dir_all(&dir)?;
    let mut cfg = Config::default();
    cfg.kafka.brokers = b.bootstrap.clone();
    cfg.kafka.group_id = format!("bench-{tag}");
    cfg.registry.url = b.registry.clone();
    cfg.lake.uri = dir.join("lake").to_string_lossy().into_owned();
    cfg.tables = vec![TableConfig {
        name: "customers".into(),
        topic: topic.into(),
        mode,
        deletes: DeleteMode::Soft,
        ..Default::default()
    }];
    let path = dir.join("cormorant.toml");
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    Ok((path, dir.join("lake/customers")))
}

/// `workers` Cormorant processes of one group, until every partition is caught up.
fn run_cormorant(b: &Bench, topic: &str, mode: WriteMode, workers: usize, tag: &str) -> anyhow::Result<Measured> {
    let (config, table) = worker_config(b, topic, mode, tag)?;
    let started = Instant::now();
    let logs: Vec<PathBuf> = (0..workers)
        .map(|i| config.with_file_name(format!("worker-{i}.log")))
        .collect();
    let children: Vec<Child> = logs
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let log = std::fs::File::create(path)?;
            let mut cmd = Command::new(&b.bin);
            cmd.args(["--config", &config.to_string_lossy(), "run", "--until-caught-up"])
                .stdout(Stdio::null())
                .stderr(log);
            if b.pin {
                pin(&mut cmd, i);
            }
            Ok(cmd.spawn()?)
        })
        .collect::<anyhow::Result<_>>()?;
    let (mut cpu, mut rss) = (0.0, 0u64);
    for c in &children {
        let (code, c_cpu, c_rss) = wait_rusage(c)?;
        anyhow::ensure!(code == 0, "worker exited with {code}; see {}", config.display());
        cpu += c_cpu;
        rss = rss.max(c_rss);
    }
    Ok(Measured {
        wall: started.elapsed().as_secs_f64(),
        cpu,
        rss,
        commits: commits(&table),
        written: common::dir_bytes(&table),
        streaming: streaming_rate(&table, &logs)?,
    })
}

/// Runs the child on core `i` (modulo the cores this process may use): with `BENCH_PIN=1`
/// every worker of a group has a core of its own and one worker alone has one core, so the
/// group's scaling is measured with the cores, not the machine, as the unit — on two cores a
/// single unpinned worker already keeps both busy (its decode stage uses every core). The
/// broker (this process) is not pinned.
fn pin(cmd: &mut Command, i: usize) {
    use std::os::unix::process::CommandExt as _;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let core = i % cores;
    // SAFETY: between fork and exec the closure only calls sched_setaffinity on a set built
    // on its own stack (async-signal-safe; no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Events per second from the first partition assignment any worker logged (`logs`) to the
/// table's last commit carrying `txn` offsets (its `commitInfo.timestamp`): the events are
/// those offsets' sum. `None` when either moment is missing.
fn streaming_rate(table: &Path, logs: &[PathBuf]) -> anyhow::Result<Option<f64>> {
    let assigned = logs
        .iter()
        .filter_map(|l| std::fs::read_to_string(l).ok())
        .filter_map(|text| {
            let line = text.lines().find(|l| l.contains("partition assigned"))?;
            let ts = chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?).ok()?;
            Some(ts.timestamp_millis())
        })
        .min();
    let mut logs: Vec<(u64, PathBuf)> = std::fs::read_dir(table.join("_delta_log"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    logs.sort();
    let mut offsets: HashMap<String, i64> = HashMap::new();
    let mut last: Option<i64> = None;
    for (_, path) in logs {
        let (mut ts, mut moved) = (None, false);
        for line in std::fs::read_to_string(&path)?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            if let (Some(app), Some(version)) = (
                v.pointer("/txn/appId").and_then(|x| x.as_str()),
                v.pointer("/txn/version").and_then(|x| x.as_i64()),
            ) {
                offsets.insert(app.to_string(), version);
                moved = true;
            }
            ts = ts.or(v.pointer("/commitInfo/timestamp").and_then(|x| x.as_i64()));
        }
        if moved {
            last = ts.or(last);
        }
    }
    let events: i64 = offsets.values().sum();
    Ok(match (assigned, last) {
        (Some(t0), Some(t1)) if t1 > t0 => Some(events as f64 / ((t1 - t0) as f64 / 1000.0)),
        _ => None,
    })
}

fn commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// The table kafka-delta-ingest needs (it never creates one): the `after` columns it can
/// write. Debezium's bytes decimals (`balance`) are left out: KDI's Avro→JSON path turns them
/// into byte arrays that its JSON→Arrow writer refuses for a decimal column.
async fn kdi_table(path: &Path) -> anyhow::Result<()> {
    use deltalake::kernel::{DataType, PrimitiveType, StructField};
    let cols = [
        ("id", PrimitiveType::Integer),
        ("email", PrimitiveType::String),
        ("full_name", PrimitiveType::String),
        ("notes", PrimitiveType::String),
        ("is_active", PrimitiveType::Boolean),
        ("created_at", PrimitiveType::Timestamp),
        ("birth_date", PrimitiveType::Date),
        ("profile", PrimitiveType::String),
        ("external_id", PrimitiveType::String),
        ("loyalty_tier", PrimitiveType::String),
    ];
    std::fs::create_dir_all(path)?;
    let url = url::Url::from_directory_path(path).map_err(|_| anyhow::anyhow!("bad path"))?;
    deltalake::DeltaTableBuilder::from_url(url)?
        .build()?
        .create()
        .with_columns(
            cols.iter()
                .map(|(n, t)| StructField::new(*n, DataType::Primitive(t.clone()), true)),
        )
        .await?;
    Ok(())
}

/// kafka-delta-ingest on `topic`, timed until its offsets reach `ends`.
/// kafka-delta-ingest until its `txn` offsets reach `ends`, or until it made no progress for a
/// minute (seen here: it stops fetching at ~80% of every partition of the mock broker, idle,
/// logging nothing); returns the measurement and the events it committed.
async fn run_kdi(b: &Bench, kdi: &Path, topic: &str, ends: &BTreeMap<i32, i64>) -> anyhow::Result<(Measured, u64)> {
    let dir = b.root.join("kdi");
    let table = dir.join("customers");
    kdi_table(&table).await?;
    let mut cmd = Command::new(kdi);
    cmd.args(["ingest", topic, &table.to_string_lossy()])
        .args([
            "--kafka",
            &b.bootstrap,
            "--consumer_group",
            "bench-kdi",
            "--app_id",
            "kdi",
        ])
        .args(["--avro", &b.registry, "--auto_offset_reset", "earliest"])
        .args(["--allowed_latency", "5", "--max_messages_per_batch", "10000"])
        .args(["--min_bytes_per_file", "67108864"]);
    for c in [
        "id",
        "email",
        "full_name",
        "notes",
        "is_active",
        "created_at",
        "birth_date",
        "profile",
        "external_id",
        "loyalty_tier",
    ] {
        cmd.args(["-t", &format!("{c}: after.{c}")]);
    }
    let log = std::fs::File::create(dir.join("kdi.log"))?;
    let started = Instant::now();
    let child = cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(log).spawn()?;
    let lake = tables::Lake::new(&dir.to_string_lossy(), Default::default())?;
    let mut watch = tables::OffsetsWatch::new(&lake, "customers");
    let total: i64 = ends.values().sum();
    let (mut committed, mut progress_at) = (0i64, started.elapsed().as_secs_f64());
    let done_at = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.refresh().await?;
        let mut now = 0;
        for (p, end) in ends.iter().filter(|(_, e)| **e > 0) {
            // KDI records the last offset it wrote (inclusive)
            now += (watch.get(&format!("kdi-{p}")).await?.unwrap_or(-1) + 1).min(*end);
        }
        if now > committed {
            (committed, progress_at) = (now, started.elapsed().as_secs_f64());
        }
        if committed >= total || started.elapsed().as_secs_f64() - progress_at > 60.0 {
            break progress_at;
        }
    };
    // SAFETY: signalling our own child
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (_, cpu, rss) = wait_rusage(&child)?;
    Ok((
        Measured {
            wall: done_at,
            cpu,
            rss,
            commits: commits(&table),
            written: common::dir_bytes(&table),
            streaming: None,
        },
        committed as u64,
    ))
}

/// Freshness at a fixed producer rate: every committed row's `source.ts_ms` against the time
/// its commit file appeared (seen by a watcher polling the log every 10 ms).
async fn freshness(b: &Bench, ids: (u32, u32), rate: u64, secs: u64) -> anyhow::Result<(f64, f64, usize)> {
    let topic = "fresh.public.customers";
    let (config, table) = worker_config(b, topic, WriteMode::Mor, "fresh")?;
    let worker = Command::new(&b.bin)
        .args(["--config", &config.to_string_lossy(), "run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(config.with_file_name("worker.log"))?)
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await; // joined the group
    let n = rate * secs;
    let shape = Shape::Upsert { keys: 100_000 };
    let producing = {
        let b2 = b.clone();
        std::thread::spawn(move || produce(&b2, topic, shape, ids, n, Some(rate)))
    };
    let mut seen = HashSet::new();
    let mut lags: Vec<i64> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs + 15) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Ok(dir) = std::fs::read_dir(table.join("_delta_log")) else {
            continue;
        };
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") || !seen.insert(p.clone()) {
                continue;
            }
            let visible = chrono::Utc::now().timestamp_millis();
            for line in std::fs::read_to_string(&p)?.lines() {
                let v: serde_json::Value = serde_json::from_str(line)?;
                let Some(path) = v.pointer("/add/path").and_then(|x| x.as_str()) else {
                    continue;
                };
                if v.pointer("/add/deletionVector").is_some_and(|d| !d.is_null()) {
                    continue; // an existing file with a grown deletion vector: no new rows
                }
                if v.pointer("/add/dataChange").and_then(|d| d.as_bool()) == Some(false) {
                    continue; // a compaction's file: rows made visible long before
                }
                for ts in source_ts(&table.join(path))? {
                    lags.push(visible - ts / 1000);
                }
            }
        }
    }
    producing.join().map_err(|_| anyhow::anyhow!("producer panicked"))??;
    // SAFETY: signalling our own child
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    wait_rusage(&worker)?;
    lags.sort_unstable();
    anyhow::ensure!(!lags.is_empty(), "no rows became visible");
    let q = |f: f64| lags[((lags.len() - 1) as f64 * f) as usize] as f64 / 1000.0;
    Ok((q(0.5), q(0.99), lags.len()))
}

/// The `__source_ts` (µs) of every row of a data file.
fn source_ts(path: &Path) -> anyhow::Result<Vec<i64>> {
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampMicrosecondType;
    let file = std::fs::File::open(path)?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let idx = builder
        .schema()
        .index_of("__source_ts")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let mut out = Vec::new();
    for batch in builder.with_projection(mask).build()? {
        let col = batch?.column(0).as_primitive::<TimestampMicrosecondType>().clone();
        out.extend(col.iter().flatten());
    }
    Ok(out)
}

impl Bench {
    fn row(&mut self, what: &str, events: u64, bytes: u64, m: &Measured, note: &str) {
        let streaming = m
            .streaming
            .map(|r| format!("streaming {r:.0} events/s (assignment to last commit)"));
        let pinned = self.pin.then_some("pinned: worker i on core i, broker unpinned");
        let note = [streaming.as_deref(), Some(note).filter(|n| !n.is_empty()), pinned]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
        let line = format!(
            "| {} | {} | {what} | {events} | {:.1} | {:.0} | {:.1} | {:.2} | {:.0} | {} | {} | {:.2} | {note} |",
            chrono::Utc::now().format("%Y-%m-%d"),
            common::profile(),
            m.wall,
            events as f64 / m.wall,
            bytes as f64 / m.wall / 1e6,
            m.cpu,
            events as f64 / m.cpu,
            m.rss / (1 << 20),
            m.commits,
            m.written as f64 / bytes as f64,
        );
        println!("{line}");
        self.lines.push(line);
    }
}

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var(CEILING_CHILD) {
        return ceiling_child(&spec);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let events: u64 = env("BENCH_EVENTS", 1_000_000);
    let keys: u64 = env("BENCH_KEYS", 100_000);
    let partitions: i32 = env("BENCH_PARTITIONS", 6);
    let only: String = env("BENCH_ONLY", "ceiling,append,upsert,group,fresh".to_string());
    let want = |s: &str| only.split(',').any(|o| o.trim() == s);
    // the broker lives as long as this function; the workers reach it over TCP
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    let bootstrap = mock.bootstrap_servers();
    let (addr, _registry) = cormorant::registry::spawn(None).await?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut b = Bench {
        bootstrap,
        registry: format!("http://{addr}"),
        root: std::env::temp_dir().join(format!("cormorant-bench-stream-{}", std::process::id())),
        partitions,
        bin: std::env::var("CORMORANT_BIN").map_or_else(|_| manifest.join("target/release/cormorant"), PathBuf::from),
        pin: env("BENCH_PIN", 0u8) == 1,
        lines: Vec::new(),
    };
    anyhow::ensure!(
        b.bin.exists(),
        "{} missing: build it with cargo build --release --bin cormorant",
        b.bin.display()
    );
    let (append, upsert) = ("append.public.customers", "upsert.public.customers");
    for t in [append, upsert, "fresh.public.customers"] {
        mock.create_topic(t, partitions, 1)?;
    }
    let ids = common::register(&b.registry, append).await?;
    common::register(&b.registry, upsert).await?;
    common::register(&b.registry, "fresh.public.customers").await?;
    if want("append") {
        let (ends, bytes) = produce(&b, append, Shape::Insert, ids, events, None)?;
        let m = run_cormorant(&b, append, WriteMode::Mor, 1, "append-cormorant")?;
        b.row("append (inserts), Cormorant MoR, 1 worker", events, bytes, &m, "");
        if let Ok(kdi) = std::env::var("KDI_BIN") {
            let (k, done) = run_kdi(&b, Path::new(&kdi), append, &ends).await?;
            let stalled = if done < events {
                format!("; it stopped (idle, no error) after {done} of {events} events: figures over those")
            } else {
                String::new()
            };
            let per = |n: u64, x: f64| n as f64 / x;
            b.row(
                "append (inserts), kafka-delta-ingest 0.4.0, 1 process",
                done,
                bytes * done / events.max(1),
                &k,
                &format!(
                    "without the decimal column{stalled}; Cormorant/KDI: {:.1}x events/s, {:.1}x events/CPU-s",
                    per(events, m.wall) / per(done, k.wall),
                    per(events, m.cpu) / per(done, k.cpu)
                ),
            );
        }
    }
    if want("upsert") || want("group") || want("ceiling") {
        let (ends, bytes) = produce(&b, upsert, Shape::Upsert { keys }, ids, events, None)?;
        if want("ceiling") {
            let (secs, cpu, n, read) = ceiling(&b, upsert, &ends)?;
            let line = format!(
                "| {} | {} | broker ceiling: a plain consumer reading the upsert topic (a process of its own) | {n} | {secs:.1} | {:.0} | {:.1} | {cpu:.2} | {:.0} | - | - | - | librdkafka mock cluster, 1 broker, {} partitions; its CPU per event is the floor under a worker's |",
                chrono::Utc::now().format("%Y-%m-%d"),
                common::profile(),
                n as f64 / secs,
                read as f64 / secs / 1e6,
                n as f64 / cpu,
                b.partitions
            );
            println!("{line}");
            b.lines.push(line);
        }
        if want("upsert") {
            let modes: String = env("BENCH_UPSERT_MODES", "mor,cow".to_string());
            let modes = [(WriteMode::Mor, "MoR"), (WriteMode::Cow, "CoW")]
                .into_iter()
                .filter(|(_, name)| modes.split(',').any(|m| m.trim().eq_ignore_ascii_case(name)));
            for (mode, name) in modes {
                let m = run_cormorant(&b, upsert, mode, 1, &format!("upsert-{name}"))?;
                b.row(
                    &format!("upsert 70/10/20 over {keys} keys, {name}, 1 worker"),
                    events,
                    bytes,
                    &m,
                    "",
                );
            }
        }
        if want("group") {
            for workers in [2, 3] {
                let m = run_cormorant(&b, upsert, WriteMode::Mor, workers, &format!("group-{workers}"))?;
                b.row(
                    &format!("upsert 70/10/20 over {keys} keys, MoR, {workers} workers, {partitions} partitions"),
                    events,
                    bytes,
                    &m,
                    "CPU and RSS: sum and max over the workers",
                );
            }
        }
    }
    if want("fresh") {
        let rate: u64 = env("BENCH_FRESH_RATE", 20_000);
        let secs: u64 = env("BENCH_FRESH_SECS", 30);
        let (p50, p99, rows) = freshness(&b, ids, rate, secs).await?;
        let line = format!(
            "| {} | {} | freshness at {rate} events/s for {secs} s, MoR, 1 worker: source ts_ms → commit visible | {rows} rows | p50 {p50:.2} s | p99 {p99:.2} s | | | | | | | default batch linger 500 ms |",
            chrono::Utc::now().format("%Y-%m-%d"),
            common::profile(),
        );
        println!("{line}");
        b.lines.push(line);
    }
    let header = "# benches/stream.rs results\n\nEnd to end through librdkafka's mock cluster (a broker that is not the limit), 6 partitions, release build, 2-core machine. Events = Kafka records (upsert streams include one tombstone per delete). CPU = the worker processes' user+system seconds (kernel rusage); RSS = peak resident set. `write amp.` = bytes of the table on disk / bytes of the Avro records.\n\n| date | profile | run | events | wall s | events/s | MB/s | CPU s | events/CPU-s | peak RSS MiB | commits | write amp. | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for line in &b.lines {
        common::append_result("stream.md", header, line)?;
    }
    if env("BENCH_KEEP", 0u8) == 1 {
        println!("kept the lakes and worker logs in {}", b.root.display());
    } else {
        let _ = std::fs::remove_dir_all(&b.root);
    }
    Ok(())
}
