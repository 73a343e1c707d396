//! A compressed long run: the real capture in batches of a few records (1,000+ commits on
//! local disk), with checkpoints, log expiry, inline vacuum racing ingest and `cormorant vacuum`
//! — every marked point inside the retention still reads exactly, through Python too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStoreExt as _;
use tables::{DeleteMode, WriteMode};

use crate::support::*;

/// Data and deletion-vector files of `table` (everything outside `_delta_log/`).
async fn data_objects(cfg: &cormorant::config::Config, table: &str) -> Vec<String> {
    let mut all = objects(cfg, table, "").await;
    all.retain(|p| !p.contains("_delta_log/"));
    all
}

/// Object names under `prefix` of `table` (`_delta_log/`, or "" for the whole table).
async fn objects(cfg: &cormorant::config::Config, table: &str, prefix: &str) -> Vec<String> {
    let lake = cfg.lake.open().expect("lake");
    let t = lake.open(table, None).await.expect("open");
    let store = t.log_store().object_store(None);
    let prefix = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
    let metas: Vec<object_store::ObjectMeta> = store.list(prefix.as_ref()).try_collect().await.expect("list");
    let mut names: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

async fn versions(cfg: &cormorant::config::Config) -> HashMap<String, u64> {
    let lake = cfg.lake.open().expect("lake");
    let mut out = HashMap::new();
    for (table, _) in TABLES {
        let v = lake.open(table, None).await.expect("open").version().expect("version");
        out.insert(table.to_string(), v as u64);
    }
    out
}

fn cli(cfg: &cormorant::config::Config, tag: &str, args: &[&str]) -> (bool, String) {
    let path = write_config(cfg, tag);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cormorant"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .expect("cormorant runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The quiet time between phase 1 and phase 2. `cormorant vacuum` is given a retention that
/// puts its horizon in the middle of it, counted when the process is spawned; the vacuum
/// process computes the horizon itself, after starting and after vacuuming the tables before
/// the last one, so half the gap is the delay it may take. With 6 s (a 3 s margin) a CI run
/// on a loaded machine once placed the horizon inside phase 2 and deleted a DV file that
/// point 1 reads: a vacuum doing what it was told, with the test's clock read too early.
const GAP: Duration = Duration::from_secs(20);

async fn long_run(storage: Storage, batch: usize, checkpoint_interval: u64, tag: &str) {
    let loaded = load_prefix(&unique(tag)).await;
    let fx = fixture();
    let mut cfg = config(&loaded.prefix, storage, DeleteMode::Soft, WriteMode::Mor, tag);
    cfg.kafka.batch_max_records = batch;
    cfg.maintenance.checkpoint_interval = checkpoint_interval;
    cfg.maintenance.log_retention = "1h".into();
    cfg.maintenance.deleted_file_retention = "1h".into();
    // inline vacuum: its commits race ingest's (it deletes nothing: 1h retention)
    cfg.maintenance.vacuum_every = "15s".into();
    let marks = markers();
    let mut at: Vec<(String, HashMap<String, u64>)> = Vec::new();
    let mut start = 0;
    let mut phase2 = None;
    for (i, (point, end)) in marks.iter().enumerate() {
        if i == 1 {
            // a gap: what phase 1 superseded is older than the retention vacuum gets below
            tokio::time::sleep(GAP).await;
            phase2 = Some(Instant::now());
        }
        if i == marks.len() - 1 {
            // the last stretch with a short log retention and frequent checkpoints: commit files
            // older than 4 s expire up to the newest checkpoint older than that
            tokio::time::sleep(Duration::from_secs(5)).await;
            cfg.maintenance.log_retention = "4s".into();
            // every 5: the last stretch must reach a due version of each busy table after the
            // retention changed (a `cormorant vacuum` commit may have taken the last one before)
            cfg.maintenance.checkpoint_interval = checkpoint_interval.min(5);
        }
        fx.produce(&brokers(), &loaded.prefix, &loaded.ids, start..*end)
            .await
            .expect("produce");
        start = *end;
        let t = Instant::now();
        let stats = run_until_caught_up(&cfg).await;
        eprintln!(
            "{tag} {point}: {} batches, {} commits in {:.1} s",
            stats.batches,
            stats.commits,
            t.elapsed().as_secs_f64()
        );
        assert_point(&cfg, point, None, false).await;
        at.push((point.clone(), versions(&cfg).await));
        if i == marks.len() - 2 {
            vacuum_keeps_the_retained_points(&cfg, tag, &at, phase2.expect("phase 2 started")).await;
        }
    }
    let final_versions = &at.last().expect("final").1;
    assert!(
        final_versions.values().sum::<u64>() >= (fx.events.len() / batch) as u64,
        "a long run: {final_versions:?} commits"
    );
    log_expired_and_checkpoints_serve_readers(&cfg, final_versions).await;
}

/// `cormorant vacuum` with a retention reaching back to just before phase 2: it deletes data
/// and deletion-vector files phase 1 superseded, and every marked point still reads exactly.
async fn vacuum_keeps_the_retained_points(
    cfg: &cormorant::config::Config,
    tag: &str,
    at: &[(String, HashMap<String, u64>)],
    phase2: Instant,
) {
    // the horizon in the middle of the gap before phase 2, whenever the process reads its clock
    // (up to half the gap later than here)
    let retain = || format!("{}s", phase2.elapsed().as_secs() + 1 + GAP.as_secs() / 2);
    let before = data_objects(cfg, "orders").await;
    let (ok, dry) = cli(
        cfg,
        tag,
        &["vacuum", "--table", "orders", "--retain", &retain(), "--dry-run"],
    );
    assert!(ok, "{dry}");
    assert!(
        dry.contains("orders: would delete") && dry.contains("deletion_vector_"),
        "{dry}"
    );
    assert_eq!(data_objects(cfg, "orders").await, before, "a dry run deletes nothing");
    let (ok, out) = cli(cfg, tag, &["vacuum", "--retain", &retain()]);
    assert!(ok, "{out}");
    let deleted = out
        .lines()
        .filter(|l| l.starts_with("orders: deleted ") && l.ends_with(" bytes)"))
        .count();
    assert!(deleted > 0, "{out}");
    assert_eq!(data_objects(cfg, "orders").await.len(), before.len() - deleted);
    retained_files_exist(cfg, at, &out).await;
    for (point, versions) in at {
        // time travel to every marked point inside the retention, also through Python
        assert_point(cfg, point, Some(versions), true).await;
    }
    // history() marks the versions whose files vacuum deleted
    let (ok, h) = cli(
        cfg,
        tag,
        &[
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT min(version) FILTER (WHERE readable), count(*) FILTER (WHERE NOT readable) FROM history('orders')",
        ],
    );
    assert!(ok, "{h}");
    let row: Vec<i64> = h
        .lines()
        .nth(1)
        .expect("a row")
        .split(',')
        .map(|c| c.parse().expect("number"))
        .collect();
    assert!(row[0] > 0 && row[1] > 0, "phase 1 versions are marked unreadable: {h}");
    assert!(row[0] as u64 <= at[0].1["orders"], "point 1 stays readable: {h}");
    // a horizon in the same quiet gap again: nothing left to delete
    let (ok, again) = cli(cfg, tag, &["vacuum", "--retain", &retain()]);
    assert!(ok && again.contains("orders: deleted 0 files"), "{again}");
    let (ok, refused) = cli(cfg, tag, &["vacuum", "--retain", "30days"]);
    assert!(!ok && refused.contains("deletedFileRetentionDuration"), "{refused}");
}

/// Every data and deletion-vector file that a marked point's version reads is still in the
/// store. On a miss, the panic names the point, the version and what the log says of the file
/// (which commits added and removed it, when), so that a failure can be diagnosed from the
/// test's output alone.
async fn retained_files_exist(
    cfg: &cormorant::config::Config,
    at: &[(String, HashMap<String, u64>)],
    vacuum_out: &str,
) {
    let lake = cfg.lake.open().expect("lake");
    for (point, versions) in at {
        for (table, version) in versions {
            let t = lake.open(table, Some(*version)).await.expect("open a retained version");
            let store = t.log_store().object_store(None);
            let mut reads = Vec::new();
            for add in tables::lake::active_adds(&t).expect("adds") {
                reads.push(
                    object_store::path::Path::from_url_path(&add.path)
                        .expect("path")
                        .to_string(),
                );
                if let Some(d) = &add.deletion_vector {
                    reads.extend(tables::dv::relative_path(d).ok());
                }
            }
            for file in reads {
                if store
                    .head(&object_store::path::Path::from(file.as_str()))
                    .await
                    .is_err()
                {
                    let history = log_mentions(&t, &file).await;
                    panic!(
                        "{point}: {table} version {version} reads {file}, which is gone after vacuum.\nThe log on it:\n{history}\nvacuum said:\n{vacuum_out}"
                    );
                }
            }
        }
    }
}

/// The commits (still in the log) whose `add` or `remove` names `file` (a data file or a
/// deletion-vector file), with their deletion times and the commit's time and operation; read
/// with delta-rs's own action parser, as vacuum reads them.
async fn log_mentions(t: &deltalake::DeltaTable, file: &str) -> String {
    use deltalake::kernel::{Action, DeletionVectorDescriptor};
    use object_store::path::Path;
    let log = t.log_store();
    let metas: Vec<object_store::ObjectMeta> = log
        .object_store(None)
        .list(Some(&Path::from("_delta_log")))
        .try_collect()
        .await
        .unwrap_or_default();
    let names = |path: &str, dv: Option<&DeletionVectorDescriptor>| {
        Path::from_url_path(path).is_ok_and(|p| p.as_ref() == file)
            || dv
                .and_then(|d| tables::dv::relative_path(d).ok())
                .is_some_and(|p| p == file)
    };
    let mut out = Vec::new();
    let versions = metas
        .iter()
        .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok());
    for version in versions {
        let Ok(Some(bytes)) = log.read_commit_entry(version).await else {
            continue;
        };
        let Ok(actions) = deltalake::logstore::get_actions(version, &bytes) else {
            continue;
        };
        let mut commit = String::new();
        let mut hits = Vec::new();
        for action in actions {
            match action {
                Action::CommitInfo(c) => commit = format!("{:?} {:?}", c.timestamp, c.operation),
                Action::Add(a) if names(&a.path, a.deletion_vector.as_ref()) => {
                    hits.push(format!("add {} dv={:?}", a.path, a.deletion_vector));
                }
                Action::Remove(r) if names(&r.path, r.deletion_vector.as_ref()) => hits.push(format!(
                    "remove {} dv={:?} deletionTimestamp={:?}",
                    r.path, r.deletion_vector, r.deletion_timestamp
                )),
                _ => {}
            }
        }
        if !hits.is_empty() {
            out.push(format!("version {version} (commit {commit}): {}", hits.join("; ")));
        }
    }
    let checkpoints: Vec<&str> = metas
        .iter()
        .map(|m| m.location.as_ref())
        .filter(|l| l.contains(".checkpoint"))
        .collect();
    format!("{}\ncheckpoints: {checkpoints:?}", out.join("\n"))
}

/// Checkpoints every interval, `_last_checkpoint`, commit files below the last checkpoint gone
/// once older than the retention, and readers (DataFusion, Python) starting from a checkpoint.
async fn log_expired_and_checkpoints_serve_readers(
    cfg: &cormorant::config::Config,
    final_versions: &HashMap<String, u64>,
) {
    // products gets a handful of commits; the two busy tables cross many checkpoints
    for (table, key) in TABLES.iter().filter(|(t, _)| *t != "products") {
        let log = objects(cfg, table, "_delta_log").await;
        let version = final_versions[*table];
        let checkpoints: Vec<&String> = log.iter().filter(|f| f.contains(".checkpoint.")).collect();
        assert!(!checkpoints.is_empty(), "{table} has checkpoints: {log:?}");
        assert!(log.iter().any(|f| f.ends_with("_last_checkpoint")), "{table}: {log:?}");
        let commits = log.iter().filter(|f| f.ends_with(".json")).count() as u64;
        assert!(
            commits < version / 2,
            "{table}: expired commit files removed ({commits} left of {version})"
        );
        let first = log.iter().find(|f| f.ends_with(".json")).expect("a commit file");
        assert!(
            !first.ends_with("00000000000000000000.json"),
            "{table}: version 0 expired"
        );
        // the independent reader loads from the checkpoint (version 0 is gone) and is exact
        let csv = fixture_dir().join(format!("expected/final/{table}.csv"));
        assert_python_reads(cfg, table, key, &csv, None);
        let lake = cfg.lake.open().expect("lake");
        assert!(lake.open(table, Some(1)).await.is_err(), "{table}: version 1 expired");
        let (ok, out) = cli(
            cfg,
            "expired",
            &["sql", "-c", &format!("SELECT count(*) FROM {table} VERSION AS OF 1")],
        );
        assert!(
            !ok && out.contains("has expired") && out.contains("the oldest readable version is"),
            "{out}"
        );
        status_shows_the_log(cfg, table, &log);
    }
}

/// `cormorant status` reports what the log holds, as a user reads it (CSV text).
fn status_shows_the_log(cfg: &cormorant::config::Config, table: &str, log: &[String]) {
    let (ok, out) = cli(cfg, "status", &["status", "--format", "csv"]);
    assert!(ok, "{out}");
    let mut lines = out.lines().filter(|l| !l.starts_with("20")); // skip log lines
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let row: Vec<&str> = lines
        .find(|l| l.starts_with(&format!("{table},")))
        .unwrap_or_else(|| panic!("a row for {table}: {out}"))
        .split(',')
        .collect();
    let col = |name: &str| -> i64 {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}: {out}"));
        row[i].parse().unwrap_or_else(|_| panic!("{name} is a number: {out}"))
    };
    let newest_checkpoint = log
        .iter()
        .filter(|f| f.contains(".checkpoint.parquet"))
        .filter_map(|f| f.rsplit('/').next()?.split('.').next()?.parse::<i64>().ok())
        .max()
        .expect("a checkpoint");
    assert!(col("last_checkpoint") >= newest_checkpoint, "{out}");
    assert!(col("log_files") >= log.len() as i64 - 2, "{out}"); // vacuum may have committed since
    assert!(col("oldest_readable") > 1, "{out}");
    assert!(col("compaction_backlog") >= 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_run_local_keeps_log_and_storage_bounded() {
    long_run(Storage::Local, 5, 100, "soak-local").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_run_s3_keeps_log_and_storage_bounded() {
    // a few hundred commits: checkpoints every 10 so that some lie behind the log retention
    long_run(Storage::S3, 25, 10, "soak-s3").await;
}
