//! Never skip silently: when the topic's retention deleted records a table never applied, the
//! worker stops and names the table, the partition and the gap — unless that table says
//! `on_data_loss = "skip"`, which goes on from the earliest retained record, logged and counted.
//!
//! librdkafka's mock cluster keeps about 5 MB per partition and drops the oldest segments
//! beyond that, which is retention at work in a few seconds.

use std::process::{Command, Stdio};
use std::time::Duration;

use cormorant::config::{Config, OnDataLoss};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tables::{DeleteMode, WriteMode};

use crate::support::*;

/// Runs `cormorant run --until-caught-up`; exit status and stderr.
fn run(cfg: &Config, tag: &str) -> (std::process::ExitStatus, String) {
    let path = write_config(cfg, tag);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cormorant"))
        .args([
            "--config",
            path.to_str().expect("utf-8 path"),
            "run",
            "--until-caught-up",
        ])
        .env("CORMORANT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker neither caught up nor stopped in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The table's next offset for partition 0 of its topic.
async fn table_offset(cfg: &Config, table: &str, topic: &str) -> i64 {
    let lake = cfg.lake.open().expect("lake");
    let table = lake.open(table, None).await.expect("open");
    let app = change::StreamId::new(&cfg.kafka.group_id, topic).app_id(0);
    let snapshot = table.snapshot().expect("snapshot");
    snapshot
        .transaction_version(table.log_store().as_ref(), &app)
        .await
        .expect("txn")
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_gap_stops_the_worker_unless_the_table_skips_it() {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let fx = fixture();
    let prefix = format!("{}.", unique("retention"));
    let ids = fx.register(&registry(), &prefix).await.expect("registry");
    for t in fx.topics() {
        mock.create_topic(&format!("{prefix}{t}"), 1, 1).expect("mock topic");
    }
    let mut cfg = config(&prefix, Storage::Local, DeleteMode::Soft, WriteMode::Mor, "retention");
    cfg.kafka.brokers = brokers.clone();
    cfg.tables.retain(|t| t.name == "customers");
    let topic = cfg.tables[0].topic.clone();

    fx.produce(&brokers, &prefix, &ids, 0..fx.events.len())
        .await
        .expect("produce");
    let (status, log) = run(&cfg, "retention-1");
    assert!(status.success(), "first run: {log}");
    let applied = table_offset(&cfg, "customers", &topic).await;
    assert!(applied > 0);

    // more records than the mock broker keeps: the ones after `applied` start to go
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("reader");
    let mut earliest = 0;
    for _ in 0..60 {
        fx.produce(&brokers, &prefix, &ids, 0..fx.events.len())
            .await
            .expect("produce");
        earliest = reader
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .expect("watermarks")
            .0;
        if earliest > applied {
            break;
        }
    }
    assert!(
        earliest > applied,
        "the mock broker kept everything (earliest {earliest})"
    );

    let (status, log) = run(&cfg, "retention-2");
    assert_eq!(status.code(), Some(1), "a gap must stop the worker: {log}");
    for needle in [
        "\"customers\"".to_string(),
        format!("{topic} [0]"),
        format!("next offset is {applied}"),
        format!("earliest is {earliest}"),
        "on_data_loss = \"skip\"".to_string(),
    ] {
        assert!(log.contains(&needle), "the error does not say {needle}: {log}");
    }
    assert_eq!(
        table_offset(&cfg, "customers", &topic).await,
        applied,
        "nothing applied past the gap"
    );

    cfg.tables[0].on_data_loss = OnDataLoss::Skip;
    let (status, log) = run(&cfg, "retention-3");
    assert!(status.success(), "with on_data_loss = skip the worker goes on: {log}");
    assert!(log.contains("skipping them"), "the skip is logged: {log}");
    let high = reader
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .expect("watermarks")
        .1;
    assert_eq!(
        table_offset(&cfg, "customers", &topic).await,
        high,
        "caught up past the gap"
    );
}
