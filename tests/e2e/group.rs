//! Several worker processes of one consumer group on a 6-partition copy of the fixture (every
//! record on its key's partition, as Kafka Connect writes Debezium topics) reach exactly
//! PostgreSQL's dump — no key twice, no change lost — with every data file holding rows of one
//! partition only, committing to the same tables at once.
//!
//! The takeover tests kill one worker with SIGKILL mid-stream; the others must take its
//! partitions over from the tables' offsets. They run against librdkafka's mock cluster
//! (hosted by the test process, reached over TCP by the worker processes like any broker),
//! because Tansu 0.6 never expires a dead member: it keeps the killed worker's partitions
//! assigned to it, and nobody consumes them again (seen here: no rebalance in 300 s, whatever
//! the session and poll timeouts). Registry and S3 are the real services in every test.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tables::{DeleteMode, WriteMode};

use crate::support::*;

const PARTITIONS: i32 = 6;

fn spawn_worker(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("worker log");
    std::process::Command::new(env!("CARGO_BIN_EXE_cormorant"))
        .args([
            "--config",
            config.to_str().expect("utf-8 path"),
            "run",
            "--until-caught-up",
        ])
        .env("CORMORANT_LOG", "info,buoyant_kernel=warn,deltalake_core=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn worker")
}

/// Every active data file is tagged with one partition, and its `__kafka_partition`
/// statistics say all its rows are of that partition; every partition's offsets are recorded.
async fn assert_partition_owned_files(cfg: &cormorant::config::Config) {
    let lake = cfg.lake.open().expect("lake");
    for (table, _) in TABLES {
        let t = lake.open(table, None).await.expect("open");
        for add in tables::lake::active_adds(&t).expect("active files") {
            let tag = tables::index::partition_of(&add)
                .unwrap_or_else(|| panic!("{table}: file {} has no partition tag", add.path));
            let stats: serde_json::Value =
                serde_json::from_str(add.stats.as_deref().expect("stats")).expect("stats json");
            let (min, max) = (
                &stats["minValues"]["__kafka_partition"],
                &stats["maxValues"]["__kafka_partition"],
            );
            assert_eq!(
                (min.as_i64(), max.as_i64()),
                (Some(i64::from(tag)), Some(i64::from(tag))),
                "{table}: file {} tagged {tag} holds rows of partitions {min}..{max}",
                add.path
            );
        }
        let topic = &cfg.tables.iter().find(|t| t.name == table).expect("table config").topic;
        for p in 0..PARTITIONS {
            let app = change::StreamId::new(&cfg.kafka.group_id, topic).app_id(p);
            let next = t
                .snapshot()
                .expect("snapshot")
                .transaction_version(t.log_store().as_ref(), &app)
                .await
                .expect("txn");
            assert!(next.is_some(), "{table}: partition {p} has no recorded offset");
        }
    }
}

/// Where the group's broker is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Broker {
    Tansu,
    Mock,
}

async fn group_run(
    workers: usize,
    broker: Broker,
    kill: bool,
    storage: Storage,
    mode: WriteMode,
    deletes: DeleteMode,
    tag: &str,
) {
    let mock = (broker == Broker::Mock).then(|| rdkafka::mocking::MockCluster::new(1).expect("mock cluster"));
    let brokers = mock.as_ref().map_or_else(brokers, |m| m.bootstrap_servers());
    let loaded = keyed_fixture(&brokers, mock.as_ref(), tag, PARTITIONS).await;
    let mut cfg = config(&loaded.prefix, storage, deletes, mode, tag);
    cfg.kafka.brokers = brokers;
    // many small commits, so that the run is still going when one worker is killed
    cfg.kafka.batch_max_records = 150;
    cfg.kafka.batch_linger_ms = 20;
    cfg.kafka.properties.insert("session.timeout.ms".into(), "6000".into());
    cfg.kafka
        .properties
        .insert("heartbeat.interval.ms".into(), "1000".into());

    let path = write_config(&cfg, &format!("{tag}-cfg"));
    let dir = path.parent().expect("config dir").to_path_buf();
    let logs: Vec<_> = (0..workers).map(|i| dir.join(format!("worker-{i}.log"))).collect();
    let mut children: Vec<Child> = logs.iter().map(|l| spawn_worker(&path, l)).collect();

    // kill -9 the first worker once the orders table has several commits
    let lake = cfg.lake.open().expect("lake");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(t) = lake.open("orders", None).await
            && t.version().unwrap_or(0) >= 6
        {
            break;
        }
        assert!(Instant::now() < deadline, "the group made no progress in 180 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors = usize::from(kill);
    if kill {
        children[0].kill().expect("kill -9");
        children[0].wait().expect("reaped");
    }
    for (i, child) in children.iter_mut().enumerate().skip(survivors) {
        let status = wait_exit(child, Duration::from_secs(300), &format!("worker {i}"), &logs[i]);
        assert!(
            status.success(),
            "worker {i} exited with {status}; log:\n{}",
            std::fs::read_to_string(&logs[i]).unwrap_or_default()
        );
    }
    assert_point(&cfg, "final", None, storage == Storage::Local).await;
    assert_partition_owned_files(&cfg).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_on_tansu_local_mor() {
    group_run(
        3,
        Broker::Tansu,
        false,
        Storage::Local,
        WriteMode::Mor,
        DeleteMode::Soft,
        "group3t",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_one_killed_local_mor() {
    group_run(
        2,
        Broker::Mock,
        true,
        Storage::Local,
        WriteMode::Mor,
        DeleteMode::Soft,
        "group2k",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_one_killed_s3_cow() {
    group_run(
        3,
        Broker::Mock,
        true,
        Storage::S3,
        WriteMode::Cow,
        DeleteMode::Hard,
        "group3k",
    )
    .await;
}
