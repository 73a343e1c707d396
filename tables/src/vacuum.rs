//! Vacuum: deletes data files and deletion-vector files that no table version inside the
//! retention needs.
//!
//! delta-rs's vacuum does not know deletion vectors (it would leave every superseded DV file on
//! storage forever, or, asked to delete unknown files, delete the ones old versions read), so
//! Cormorant computes what is needed itself:
//!
//! * needed = every file of the current snapshot (data file and its DV file) plus every file a
//!   `remove` (tombstone) names whose `deletionTimestamp` lies inside the retention, again with
//!   the DV file it names — a version inside the retention reads only files that are still
//!   active or were removed after it;
//! * a candidate is any file under the table root, outside `_delta_log` and other `_`/`.`
//!   directories, that is not needed AND was last modified before the retention horizon.
//!   Files newer than the horizon are never candidates: a concurrent writer's files are not in
//!   the log yet.
//!
//! Tombstones come from the last checkpoint (its `remove` column) and the commits after it.
//! Checkpoints keep tombstones only for `delta.deletedFileRetentionDuration`, so a longer
//! retention is refused rather than guessed. A run is recorded in the log as a pair of
//! commit-info-only commits (`VACUUM START` with the retention, `VACUUM END`), as Delta's own
//! vacuum does, so `history()` knows which old versions may no longer be readable.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch, StructArray};
use arrow::datatypes::DataType;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::{LogStore, get_actions};
use deltalake::protocol::DeltaOperation;
use deltalake::table::config::TablePropertiesExt as _;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
#[allow(deprecated)] // as in files.rs: the replacement needs a hand-written AsyncFileReader
use parquet::arrow::async_reader::ParquetObjectReader;

use crate::commit::try_commit;
use crate::error::{Result, TableError};

/// How many deletes run at once.
const DELETE_CONCURRENCY: usize = 16;

/// What a vacuum found (and, unless it was a dry run, deleted).
#[derive(Clone, Debug, Default)]
pub struct VacuumReport {
    /// Table-relative paths with their sizes.
    pub files: Vec<(String, u64)>,
    pub bytes: u64,
    /// Of which deletion-vector files.
    pub dv_files: usize,
    pub dry_run: bool,
    /// Commit time before which versions may no longer be readable (ms since the epoch).
    pub horizon_ms: i64,
}

/// Vacuums `table` (at its latest version) keeping everything versions of the last `retain`
/// need; `retain = None` uses the table's `delta.deletedFileRetentionDuration` (7 days unless
/// set).
pub async fn vacuum(table: &mut DeltaTable, retain: Option<Duration>, dry_run: bool) -> Result<VacuumReport> {
    crate::lake::update_state(table).await?;
    let limit = table.snapshot()?.table_config().deleted_file_retention_duration();
    let retain = retain.unwrap_or(limit);
    if retain > limit {
        return Err(TableError::Refused(format!(
            "a retention of {} is longer than the table's delta.deletedFileRetentionDuration ({}): checkpoints drop older tombstones, so vacuum cannot tell which files versions that old read. Use --retain {} or less, or raise the table property (maintenance.deleted_file_retention)",
            humanize(retain),
            humanize(limit),
            humanize(limit)
        )));
    }
    let horizon_ms = chrono::Utc::now().timestamp_millis() - retain.as_millis() as i64;
    let needed = needed_files(table, horizon_ms).await?;
    let store = table.log_store().object_store(None);
    let files = candidates(store.as_ref(), &needed, horizon_ms).await?;
    let report = VacuumReport {
        bytes: files.iter().map(|(_, b)| b).sum(),
        dv_files: files.iter().filter(|(p, _)| is_dv_file(p)).count(),
        files,
        dry_run,
        horizon_ms,
    };
    if dry_run || report.files.is_empty() {
        return Ok(report);
    }
    record_run(table, retain, true).await?;
    delete_all(store, &report).await?;
    record_run(table, retain, false).await?;
    crate::maintain::record(table, |s| {
        s.vacuumed_files += report.files.len() as u64;
        s.vacuumed_bytes += report.bytes;
    });
    Ok(report)
}

/// `VACUUM START` (with the retention) or `VACUUM END`: commits without actions.
async fn record_run(table: &mut DeltaTable, retain: Duration, start: bool) -> Result<()> {
    let op = if start {
        DeltaOperation::VacuumStart {
            retention_check_enabled: true,
            specified_retention_millis: Some(retain.as_millis() as i64),
            default_retention_millis: retain.as_millis() as i64,
        }
    } else {
        DeltaOperation::VacuumEnd {
            status: "COMPLETED".to_string(),
        }
    };
    // an action-less commit conflicts with nothing: after a lost race, commit again on top
    for _ in 0..100 {
        if let crate::commit::Outcome::Committed(_) = try_commit(table, &[], op.clone()).await? {
            return Ok(());
        }
        crate::lake::update_state(table).await?;
    }
    Err(TableError::Refused(
        "vacuum could not record itself in the log after 100 lost commit races; run it again".into(),
    ))
}

async fn delete_all(store: Arc<dyn ObjectStore>, report: &VacuumReport) -> Result<()> {
    // owned paths: a stream over borrowed ones is not `Send` for every lifetime (spawned tasks)
    let paths: Vec<Path> = report.files.iter().map(|(p, _)| Path::from(p.as_str())).collect();
    let deletes = paths.into_iter().map(move |path| {
        let store = store.clone();
        async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()), // gone already: another vacuum
                Err(e) => Err(TableError::from(e)),
            }
        }
    });
    let results: Vec<Result<()>> = futures::stream::iter(deletes)
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Files of the current snapshot and of tombstones newer than `horizon_ms`, with their DV files.
async fn needed_files(table: &DeltaTable, horizon_ms: i64) -> Result<HashSet<String>> {
    let mut needed = HashSet::new();
    #[allow(deprecated)] // the Arrow-array replacement does not give the descriptor
    for f in table.snapshot()?.log_data().iter() {
        let add = f.add_action();
        if let Some(d) = &add.deletion_vector {
            needed.extend(dv_path(d.storage_type.as_ref(), &d.path_or_inline_dv));
        }
        needed.insert(decode(&add.path));
    }
    let log = table.log_store();
    add_tombstoned(log.as_ref(), table.version().unwrap_or(0), horizon_ms, &mut needed).await?;
    Ok(needed)
}

/// A `remove` inside the retention keeps its file and the DV file it named.
fn keep(needed: &mut HashSet<String>, horizon_ms: i64, path: &str, deleted_ms: Option<i64>, dv: Option<String>) {
    if deleted_ms.is_none_or(|ms| ms >= horizon_ms) {
        needed.insert(decode(path));
        needed.extend(dv);
    }
}

/// Adds to `needed` what the removes of the last checkpoint (at or below `latest`) and of
/// every commit after it keep. Streams: a table holds a week of tombstones (up to millions at
/// a commit a second), so they go straight into the set — a file named by many removes (a
/// data file re-added with new deletion vectors, one DV file shared by a commit) once.
async fn add_tombstoned(log: &dyn LogStore, latest: u64, horizon_ms: i64, needed: &mut HashSet<String>) -> Result<()> {
    let store = log.object_store(None);
    let checkpoint = last_checkpoint(store.as_ref()).await?.filter(|(v, _)| *v <= latest);
    let first = match &checkpoint {
        Some((v, parts)) => {
            for part in checkpoint_files(*v, *parts) {
                checkpoint_removes(store.clone(), &part, horizon_ms, needed).await?;
            }
            v + 1
        }
        None => 0,
    };
    for version in first..=latest {
        let Some(bytes) = log.read_commit_entry(version).await? else {
            return Err(TableError::LogGap(format!(
                "commit {version} is missing after checkpoint {checkpoint:?}"
            )));
        };
        for action in get_actions(version, &bytes)? {
            if let Action::Remove(r) = action {
                let dv = r
                    .deletion_vector
                    .as_ref()
                    .and_then(|d| dv_path(d.storage_type.as_ref(), &d.path_or_inline_dv));
                keep(needed, horizon_ms, &r.path, r.deletion_timestamp, dv);
            }
        }
    }
    Ok(())
}

/// `_delta_log/_last_checkpoint`: version and number of parts.
pub(crate) async fn last_checkpoint(store: &dyn ObjectStore) -> Result<Option<(u64, Option<u64>)>> {
    let bytes = match store.get(&Path::from("_delta_log/_last_checkpoint")).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let hint: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| TableError::Corrupt(format!("_delta_log/_last_checkpoint is not JSON: {e}")))?;
    let version = hint.get("version").and_then(|v| v.as_u64());
    Ok(version.map(|v| (v, hint.get("parts").and_then(|p| p.as_u64()))))
}

pub(crate) fn checkpoint_files(version: u64, parts: Option<u64>) -> Vec<Path> {
    match parts {
        Some(n) if n > 1 => (1..=n)
            .map(|i| Path::from(format!("_delta_log/{version:020}.checkpoint.{i:010}.{n:010}.parquet")))
            .collect(),
        _ => vec![Path::from(format!("_delta_log/{version:020}.checkpoint.parquet"))],
    }
}

/// The `remove` column of one checkpoint file, batch by batch, into `needed`.
async fn checkpoint_removes(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    horizon_ms: i64,
    needed: &mut HashSet<String>,
) -> Result<()> {
    // only the leaves vacuum reads, not the tags, partition values and stats of every remove
    let leaves = [
        "remove.path",
        "remove.deletionTimestamp",
        "remove.deletionVector.storageType",
        "remove.deletionVector.pathOrInlineDv",
    ];
    scan_checkpoint(store, path, &leaves, |batch| removes_of(batch, horizon_ms, needed)).await
}

/// Reads the checkpoint file `path` projected to `leaves` (dotted column paths), handing each
/// batch to `each` as it is decoded: a checkpoint holds every active file, so it is streamed.
pub(crate) async fn scan_checkpoint(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    leaves: &[&str],
    mut each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    #[allow(deprecated)] // as in files.rs: the replacement needs a hand-written AsyncFileReader
    let reader = ParquetObjectReader::new(store, path.clone());
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), leaves.iter().copied());
    let mut batches = builder.with_projection(mask).build()?;
    while let Some(batch) = batches.try_next().await? {
        each(&batch)?;
    }
    Ok(())
}

fn removes_of(batch: &RecordBatch, horizon_ms: i64, needed: &mut HashSet<String>) -> Result<()> {
    let Some(remove) = batch.column_by_name("remove") else {
        return Ok(());
    };
    let remove = remove.as_struct();
    let paths = string_field(remove, "path")?;
    let deleted = remove
        .column_by_name("deletionTimestamp")
        .map(|c| arrow::compute::cast(c, &DataType::Int64))
        .transpose()?;
    let dvs = remove.column_by_name("deletionVector").map(|c| c.as_struct().clone());
    let (types, encoded) = match &dvs {
        Some(d) => (
            Some(string_field(d, "storageType")?),
            Some(string_field(d, "pathOrInlineDv")?),
        ),
        None => (None, None),
    };
    for row in 0..remove.len() {
        if remove.is_null(row) || paths.is_null(row) {
            continue;
        }
        let dv = match (&dvs, &types, &encoded) {
            (Some(d), Some(t), Some(e)) if d.is_valid(row) && t.is_valid(row) => dv_path(t.value(row), e.value(row)),
            _ => None,
        };
        let deleted_ms = deleted
            .as_ref()
            .filter(|c| c.is_valid(row))
            .map(|c| c.as_primitive::<arrow::datatypes::Int64Type>().value(row));
        keep(needed, horizon_ms, paths.value(row), deleted_ms, dv);
    }
    Ok(())
}

pub(crate) fn string_field(s: &StructArray, name: &str) -> Result<arrow::array::StringArray> {
    let c = s
        .column_by_name(name)
        .ok_or_else(|| TableError::Corrupt(format!("checkpoint struct has no field {name}")))?;
    Ok(arrow::compute::cast(c, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// The table-relative file of a DV descriptor (`u`: Z85 UUID; `p`: a path under the table);
/// `None` for inline vectors.
pub(crate) fn dv_path(storage_type: &str, encoded: &str) -> Option<String> {
    match storage_type {
        "u" => crate::dv::relative_path_of(encoded).ok(),
        "p" => Some(encoded.to_string()),
        _ => None,
    }
}

/// Log paths are URL-encoded; storage paths are not.
fn decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_or_else(|_| path.to_string(), |p| p.into_owned())
}

fn is_dv_file(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|f| f.starts_with("deletion_vector_"))
}

/// Files under the table root, outside hidden directories, not needed and older than the horizon.
async fn candidates(store: &dyn ObjectStore, needed: &HashSet<String>, horizon_ms: i64) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut listing = store.list(None);
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let path = meta.location.to_string();
        let hidden = path
            .split('/')
            .next()
            .is_some_and(|first| first.starts_with('_') || first.starts_with('.'));
        if hidden || needed.contains(&path) || meta.last_modified.timestamp_millis() >= horizon_ms {
            continue;
        }
        out.push((path, meta.size));
    }
    out.sort();
    Ok(out)
}

/// "168h" style, for messages.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
#[path = "vacuum_tests.rs"]
mod tests;
