//! The real Debezium capture, streamed through broker → worker → Delta, must equal
//! PostgreSQL's own table dumps: at the end, and at every marked point when fed point by point
//! (then also through time travel to each point's version).

use std::collections::HashMap;

use tables::{DeleteMode, WriteMode};

use crate::support::*;

async fn final_state(storage: Storage, deletes: DeleteMode, mode: WriteMode, tag: &str) {
    let loaded = full_fixture().await;
    let mut cfg = config(&loaded.prefix, storage, deletes, mode, tag);
    cfg.kafka.batch_max_records = 2500; // several commits per table, so rows get superseded
    let stats = run_until_caught_up(&cfg).await;
    assert_eq!(stats.records, fixture().events.len() as u64, "every record read once");
    assert_eq!(stats.dead_letters, 0);
    assert_point(&cfg, "final", None, mode == WriteMode::Mor).await;
    // Running again finds nothing new and changes nothing.
    let lake = cfg.lake.open().expect("lake");
    let before = lake.open("customers", None).await.expect("open").version();
    let again = run_until_caught_up(&cfg).await;
    assert_eq!(again.commits, 0, "a caught-up worker commits nothing");
    assert_eq!(lake.open("customers", None).await.expect("open").version(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_local_soft_cow() {
    final_state(Storage::Local, DeleteMode::Soft, WriteMode::Cow, "local-soft-cow").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_local_soft_mor() {
    final_state(Storage::Local, DeleteMode::Soft, WriteMode::Mor, "local-soft-mor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_local_hard_cow() {
    final_state(Storage::Local, DeleteMode::Hard, WriteMode::Cow, "local-hard-cow").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_local_hard_mor() {
    final_state(Storage::Local, DeleteMode::Hard, WriteMode::Mor, "local-hard-mor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_s3_soft_cow() {
    final_state(Storage::S3, DeleteMode::Soft, WriteMode::Cow, "s3-soft-cow").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_s3_soft_mor() {
    final_state(Storage::S3, DeleteMode::Soft, WriteMode::Mor, "s3-soft-mor").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_s3_hard_cow() {
    final_state(Storage::S3, DeleteMode::Hard, WriteMode::Cow, "s3-hard-cow").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn final_state_s3_hard_mor() {
    final_state(Storage::S3, DeleteMode::Hard, WriteMode::Mor, "s3-hard-mor").await;
}

/// Feeds the stream point by point; after each point every table equals that point's dump,
/// and at the end each point's version still reads as that point (time travel).
async fn point_by_point(storage: Storage, deletes: DeleteMode, mode: WriteMode, tag: &str) {
    point_by_point_with(storage, deletes, mode, tag, |_| {}).await;
}

/// [`point_by_point`] with the config changed by `customize` (e.g. partitioned tables); the
/// config, for further checks.
pub async fn point_by_point_with(
    storage: Storage,
    deletes: DeleteMode,
    mode: WriteMode,
    tag: &str,
    customize: impl FnOnce(&mut cormorant::config::Config),
) -> cormorant::config::Config {
    let loaded = load_prefix(&unique(tag)).await;
    let fx = fixture();
    let mut cfg = config(&loaded.prefix, storage, deletes, mode, tag);
    customize(&mut cfg);
    // small batches: many commits per point, as a live stream would make
    cfg.kafka.batch_max_records = 1500;
    let mut start = 0;
    let mut versions_at: Vec<(String, HashMap<String, u64>)> = Vec::new();
    for (point, end) in markers() {
        fx.produce(&brokers(), &loaded.prefix, &loaded.ids, start..end)
            .await
            .expect("produce");
        start = end;
        run_until_caught_up(&cfg).await;
        assert_point(&cfg, &point, None, false).await;
        let lake = cfg.lake.open().expect("lake");
        let mut versions = HashMap::new();
        for (table, _) in TABLES {
            let v = lake
                .open(table, None)
                .await
                .expect("open")
                .version()
                .expect("has a version");
            versions.insert(table.to_string(), v);
        }
        versions_at.push((point, versions));
    }
    for (point, versions) in &versions_at {
        // time travel, also through the independent Python reader
        assert_point(&cfg, point, Some(versions), true).await;
    }
    cfg
}

#[tokio::test(flavor = "multi_thread")]
async fn points_local_soft_cow_with_time_travel() {
    point_by_point(
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Cow,
        "points-local-soft-cow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn points_s3_hard_cow_with_time_travel() {
    point_by_point(Storage::S3, DeleteMode::Hard, WriteMode::Cow, "points-s3-hard-cow").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn points_local_hard_mor_with_time_travel() {
    point_by_point(
        Storage::Local,
        DeleteMode::Hard,
        WriteMode::Mor,
        "points-local-hard-mor",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn points_s3_soft_mor_with_time_travel() {
    point_by_point(Storage::S3, DeleteMode::Soft, WriteMode::Mor, "points-s3-soft-mor").await;
}
