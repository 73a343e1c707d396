//! Running it in production: `topic_pattern` picks up a topic created while the worker runs,
//! metrics are scraped over HTTP, and SIGTERM mid-stream finishes the batch and loses nothing.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tables::{DeleteMode, WriteMode};

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_pattern_picks_up_new_topics_and_metrics_are_scraped() {
    let loaded = load_prefix(&unique("pattern")).await;
    let fx = fixture();
    let prefix = loaded.prefix.clone();
    let mut cfg = config(&prefix, Storage::Local, DeleteMode::Soft, WriteMode::Mor, "pattern");
    cfg.tables.clear();
    cfg.kafka.topic_pattern = Some(format!("^{}dbz\\.public\\.(.*)$", regex_escape(&prefix)));
    cfg.kafka.batch_linger_ms = 100;
    let port = free_port();
    cfg.metrics.address = Some(format!("127.0.0.1:{port}"));
    // customers and orders exist before the worker starts
    let early = cormorant::fixture::Fixture {
        events: fx
            .events
            .iter()
            .filter(|e| !e.topic.ends_with("products"))
            .cloned()
            .collect(),
        schemas: fx.schemas.clone(),
    };
    early
        .produce(&brokers(), &prefix, &loaded.ids, 0..early.events.len())
        .await
        .expect("produce");
    let stop = Arc::new(AtomicBool::new(false));
    let (worker_cfg, flag) = (cfg.clone(), stop.clone());
    let worker = tokio::spawn(async move { cormorant::worker::run(&worker_cfg, false, flag).await });
    // products appears while the worker runs: a new topic under the pattern
    tokio::time::sleep(Duration::from_secs(3)).await;
    let products_topic = format!("{prefix}dbz.public.products.v2");
    let renamed = cormorant::fixture::Fixture {
        events: fx
            .events
            .iter()
            .filter(|e| e.topic.ends_with("products"))
            .map(|e| cormorant::fixture::Event {
                topic: "dbz.public.products.v2".into(),
                ..e.clone()
            })
            .collect(),
        schemas: fx.schemas.clone(),
    };
    cormorant::fixture::create_topics(&brokers(), std::slice::from_ref(&products_topic), 1)
        .await
        .expect("topic");
    renamed
        .produce(&brokers(), &prefix, &loaded.ids, 0..renamed.events.len())
        .await
        .expect("produce products");
    let lake = cfg.lake.open().expect("lake");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = match lake.open("products.v2", None).await {
            Ok(t) => {
                let next = t
                    .snapshot()
                    .expect("snapshot")
                    .transaction_version(
                        t.log_store().as_ref(),
                        format!("{}:{products_topic}:0", cfg.kafka.group_id),
                    )
                    .await
                    .expect("txn");
                next == Some(renamed.events.len() as i64)
            }
            Err(_) => false,
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new topic was not picked up within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics = scrape(port);
    assert!(metrics.contains("200 OK"), "{metrics}");
    assert!(
        metrics.contains("cormorant_events_read_total{table=\"products.v2\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cormorant_commit_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("cormorant_lag_records"), "{metrics}");
    stop.store(true, Ordering::SeqCst);
    worker.await.expect("join").expect("worker exits cleanly");
    assert_table_matches(
        &cfg,
        "products.v2",
        "id",
        &fixture_dir().join("expected/final/products.csv"),
        None,
    )
    .await;
    assert_table_matches(
        &cfg,
        "customers",
        "id",
        &fixture_dir().join("expected/final/customers.csv"),
        None,
    )
    .await;
}

/// Issue 10: with `topic_pattern` and no `[[tables]]`, `--until-caught-up` must exit once the
/// tables hold everything (it used to apply everything and never exit: the applied offsets were
/// keyed by a topic the pattern tables did not have), and a restart must resume from the
/// tables' offsets.
#[tokio::test(flavor = "multi_thread")]
async fn topic_pattern_catches_up_exits_and_resumes() {
    let loaded = load_prefix(&unique("patcu")).await;
    let fx = fixture();
    let prefix = loaded.prefix.clone();
    let mut cfg = config(&prefix, Storage::Local, DeleteMode::Soft, WriteMode::Mor, "patcu");
    cfg.tables.clear();
    cfg.kafka.topic_pattern = Some(format!("^{}dbz\\.public\\.(.*)$", regex_escape(&prefix)));
    cfg.kafka.batch_linger_ms = 100;
    let (point, half) = markers()[markers().len() / 2].clone();
    // the second run is a restart: it resumes from the tables' offsets (same group)
    for (range, expected) in [(0..half, point.as_str()), (half..fx.events.len(), "final")] {
        fx.produce(&brokers(), &prefix, &loaded.ids, range)
            .await
            .expect("produce");
        let run = tokio::time::timeout(Duration::from_secs(90), run_until_caught_up(&cfg)).await;
        assert!(
            run.is_ok(),
            "run --until-caught-up with topic_pattern did not exit within 90 s"
        );
        assert_point(&cfg, expected, None, false).await;
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_finishes_the_batch_and_loses_nothing() {
    let loaded = full_fixture().await;
    let mut cfg = config(
        &loaded.prefix,
        Storage::Local,
        DeleteMode::Hard,
        WriteMode::Mor,
        "sigterm",
    );
    cfg.kafka.batch_max_records = 300;
    cfg.kafka.batch_linger_ms = 50;
    let path = write_config(&cfg, "sigterm-cfg");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cormorant"))
        .args(["--config", path.to_str().expect("utf-8"), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let lake = cfg.lake.open().expect("lake");
    wait_for_version(&lake, "orders", 3, "no progress").await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(120);
    let exited = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the worker did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "SIGTERM exits 0, got {exited:?}");
    run_until_caught_up(&cfg).await;
    assert_point(&cfg, "final", None, false).await;
}

/// A worker started before Debezium made its topics (it creates a table's topic at the first
/// change) finds them within seconds: librdkafka's default topic metadata refresh left such a
/// worker idle for five minutes.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_started_before_its_topics_exist_streams_them_within_a_minute() {
    let prefix = format!("{}.", unique("late-topics"));
    let fx = fixture();
    let ids = fx.register(&registry(), &prefix).await.expect("registry reachable");
    let cfg = config(&prefix, Storage::Local, DeleteMode::Soft, WriteMode::Mor, "late-topics");
    let path = write_config(&cfg, "late-topics-cfg");
    let log = path.with_file_name("worker.log");
    let mut worker = spawn_worker(&path, &log, &["run"], "info");
    tokio::time::sleep(Duration::from_secs(3)).await;
    fx.create_topics(&brokers(), &prefix, 1)
        .await
        .expect("broker reachable");
    fx.produce(&brokers(), &prefix, &ids, 0..fx.events.len())
        .await
        .expect("produce");
    let lake = cfg.lake.open().expect("lake");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lake.open("orders", None).await.ok().and_then(|t| t.version()).is_none() {
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!(
                "no commit a minute after the topics appeared; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.kill().expect("kill");
    worker.wait().expect("reaped");
}
