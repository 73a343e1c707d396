//! Compaction racing the worker must never lose, duplicate or resurrect a row: the worker
//! streams the whole fixture in small merge-on-read batches while compaction runs over and
//! over; the result still equals PostgreSQL's dump, through both readers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tables::{CompactionOptions, DeleteMode, WriteMode};

use crate::support::*;

fn aggressive() -> CompactionOptions {
    CompactionOptions {
        deleted_fraction: 0.01,
        small_file_bytes: 64 * 1024 * 1024,
        target_file_bytes: 256 * 1024 * 1024,
        max_seconds: 10,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_racing_the_worker_loses_nothing() {
    let loaded = full_fixture().await;
    let mut cfg = config(&loaded.prefix, Storage::Local, DeleteMode::Soft, WriteMode::Mor, "race");
    cfg.kafka.batch_max_records = 300;
    cfg.compaction.inline = false;
    let done = Arc::new(AtomicBool::new(false));
    let worker_cfg = cfg.clone();
    let flag = done.clone();
    let worker = tokio::spawn(async move {
        let stats = run_until_caught_up(&worker_cfg).await;
        flag.store(true, Ordering::SeqCst);
        stats
    });
    let lake = cfg.lake.open().expect("lake");
    let (mut compacted, mut conflicts) = (0, 0);
    while !done.load(Ordering::SeqCst) {
        for (table, _) in TABLES {
            let Ok(mut t) = lake.open(table, None).await else {
                continue;
            };
            let r = tables::compact(&mut t, &aggressive())
                .await
                .expect("compaction never fails");
            compacted += usize::from(r.version.is_some());
            conflicts += usize::from(r.conflicted);
        }
    }
    let stats = worker.await.expect("worker task");
    assert_eq!(stats.dead_letters, 0);
    assert!(
        compacted > 0,
        "compaction ran while the worker wrote ({conflicts} conflicts)"
    );
    assert_point(&cfg, "final", None, true).await;
    // one more compaction over the quiet table, then the same rows again
    for (table, _) in TABLES {
        let mut t = lake.open(table, None).await.expect("open");
        tables::compact(&mut t, &aggressive()).await.expect("compact");
    }
    assert_point(&cfg, "final", None, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inline_compaction_keeps_the_fixture_exact() {
    let loaded = full_fixture().await;
    let mut cfg = config(&loaded.prefix, Storage::S3, DeleteMode::Hard, WriteMode::Mor, "inline");
    cfg.kafka.batch_max_records = 400;
    cfg.compaction.inline = true;
    cfg.compaction.every_commits = 3;
    cfg.compaction.options = aggressive();
    run_until_caught_up(&cfg).await;
    assert_point(&cfg, "final", None, true).await;
    let lake = cfg.lake.open().expect("lake");
    let t = lake.open("orders", None).await.expect("open");
    let mut history = t.history(None);
    let mut optimize = 0;
    use futures::StreamExt;
    while let Some(c) = history.next().await {
        if c.expect("commit info").operation.as_deref() == Some("OPTIMIZE") {
            optimize += 1;
        }
    }
    assert!(optimize > 0, "inline compaction committed at least once");
}
