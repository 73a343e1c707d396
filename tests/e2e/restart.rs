//! A worker killed with SIGKILL between commits resumes exactly where the tables say: the
//! final state equals the fixture and no key appears twice.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tables::{DeleteMode, WriteMode};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_resumes_exactly() {
    let loaded = full_fixture().await;
    let mut cfg = config(
        &loaded.prefix,
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Cow,
        "restart",
    );
    cfg.kafka.batch_max_records = 400;
    cfg.kafka.batch_linger_ms = 50;
    let path = write_config(&cfg, "restart-cfg");
    let bin = env!("CARGO_BIN_EXE_cormorant");

    // First run: kill it once the orders table has a few commits.
    let mut child = std::process::Command::new(bin)
        .args(["--config", path.to_str().expect("utf-8 path"), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let lake = cfg.lake.open().expect("lake");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(t) = lake.open("orders", None).await
            && t.version().unwrap_or(0) >= 4
        {
            break;
        }
        assert!(Instant::now() < deadline, "worker made no progress in 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let mid = lake
        .open("orders", None)
        .await
        .expect("open")
        .version()
        .expect("version");
    let rows_mid = table_as_pg(&cfg, "orders", "order_id, line_no", None).await.len();
    assert!(rows_mid > 1, "the first run committed rows before it was killed");

    // Second run resumes from the tables' txn offsets.
    let status = std::process::Command::new(bin)
        .args([
            "--config",
            path.to_str().expect("utf-8 path"),
            "run",
            "--until-caught-up",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("second run");
    assert!(status.success(), "second run exits 0");
    assert!(
        lake.open("orders", None)
            .await
            .expect("open")
            .version()
            .expect("version")
            > mid
    );
    assert_point(&cfg, "final", None, false).await;
    assert_no_duplicate_keys(&cfg).await;
}

/// Next offsets the tables recorded, summed over the fixture's topics (one partition each):
/// the number of events applied.
async fn applied_events(cfg: &cormorant::config::Config) -> i64 {
    let lake = cfg.lake.open().expect("lake");
    let mut sum = 0;
    for t in &cfg.tables {
        if let Ok(table) = lake.open(&t.name, None).await {
            let app = change::StreamId::new(&cfg.kafka.group_id, &t.topic).app_id(0);
            let snapshot = table.snapshot().expect("snapshot");
            sum += snapshot
                .transaction_version(table.log_store().as_ref(), &app)
                .await
                .expect("txn")
                .unwrap_or(0);
        }
    }
    sum
}

async fn wait_applied(cfg: &cormorant::config::Config, at_least: i64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if applied_events(cfg).await >= at_least {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Kill -9, then restart: how long until the new process applies a record again, and that it
/// resumes exactly. With static membership (`kafka.instance_id = "auto"`, the default) a
/// broker that implements KIP-345 hands the restarted member its partitions at once; neither
/// broker here does — librdkafka's mock cluster adds a rejoining static member as a new one
/// (rdkafka_mock_cgrp.c, `classic_member_add`), and Tansu 0.6 thrashes with static members in
/// a group of several — so here the dead member's partitions wait for its session to time out
/// (`kafka.session_timeout_ms`, 6 s by default, the least a Kafka broker accepts by default:
/// `group.min.session.timeout.ms`). Where the broker allows less, a shorter session bounds the
/// wait; the third run shows it. The timings are printed, not asserted.
async fn restart_to_consuming(instance_id: &str, session_timeout_ms: u32, tag: &str) -> Duration {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let fx = fixture();
    let prefix = format!("{}.", unique(tag));
    let ids = fx.register(&registry(), &prefix).await.expect("registry");
    for t in fx.topics() {
        mock.create_topic(&format!("{prefix}{t}"), 1, 1).expect("mock topic");
    }
    let mut cfg = config(&prefix, Storage::Local, DeleteMode::Hard, WriteMode::Mor, tag);
    cfg.kafka.brokers = brokers.clone();
    cfg.kafka.instance_id = instance_id.to_string();
    cfg.kafka.session_timeout_ms = session_timeout_ms;
    cfg.kafka.batch_linger_ms = 20;
    let half = fx.events.len() / 2;
    fx.produce(&brokers, &prefix, &ids, 0..half).await.expect("produce");
    let path = write_config(&cfg, &format!("{tag}-cfg"));
    let spawn = |n: usize| {
        spawn_worker(
            &path,
            &path.with_file_name(format!("worker-{n}.log")),
            &["run"],
            "info,buoyant_kernel=warn,deltalake_core=warn,rdkafka=debug",
        )
    };
    let mut first = spawn(0);
    assert!(
        wait_applied(&cfg, half as i64, Duration::from_secs(120))
            .await
            .is_some(),
        "the first worker did not apply the first half"
    );
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    fx.produce(&brokers, &prefix, &ids, half..fx.events.len())
        .await
        .expect("produce");
    let mut second = spawn(1);
    let took = wait_applied(&cfg, half as i64 + 1, Duration::from_secs(120))
        .await
        .expect("the restarted worker never consumed");
    assert!(
        wait_applied(&cfg, fx.events.len() as i64, Duration::from_secs(120))
            .await
            .is_some(),
        "the restarted worker did not apply everything"
    );
    second.kill().expect("kill");
    second.wait().expect("reaped");
    assert_point(&cfg, "final", None, false).await;
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_worker_resumes_exactly_static_and_dynamic() {
    let fast = restart_to_consuming("auto", 6_000, "restart-static").await;
    let slow = restart_to_consuming("none", 6_000, "restart-dynamic").await;
    let short = restart_to_consuming("auto", 2_500, "restart-short").await;
    eprintln!(
        "kill -9 → restarted worker applies again: static membership {fast:?}, dynamic {slow:?} \
         (session 6 s); static, session 2.5 s: {short:?}"
    );
}
