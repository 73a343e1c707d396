//! Writing a table's checkpoint, streaming, in small compressed row groups.
//!
//! The kernel decides what a checkpoint holds (its action reconciliation, its schema, its stats
//! transform, its `_last_checkpoint` hint); this module only encodes and uploads it. Why not
//! deltalake's `create_checkpoint`: the kernel's default engine writes the whole checkpoint as
//! ONE uncompressed row group (Parquet's default of 1,048,576 rows) through an
//! `AsyncArrowWriter`, which hands bytes to the store only when a row group closes — so writing
//! a checkpoint held the whole file in memory, then copied it into the upload buffer. Measured
//! on the 5M-event bench: 59–76 MB checkpoints (640k–830k actions, nearly all tombstones) and
//! the worker's resident set stepping up after each one.
//!
//! Here batches go from the kernel's iterator (on a blocking thread: it is synchronous and
//! blocks on the store inside) through a small bounded channel to a Parquet writer that closes a
//! row group every [`ROW_GROUP_ROWS`] rows and streams it to the store as a multipart upload.
//! Memory: one row group, the channel's few batches, and the kernel's deduplication set.
//!
//! Invariants:
//! - `_last_checkpoint` is written only after the checkpoint file is complete (the upload is
//!   atomic: a local rename or an S3 multipart completion), so a failure leaves the previous
//!   hint in place and readers never follow a hint to a partial file;
//! - the kernel never sees a hint older than one already written (`finalize` skips those);
//! - a checkpoint file that exists is complete, and is not written again.

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{Array, AsArray as _, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use buoyant_kernel::Snapshot;
use buoyant_kernel::engine::arrow_data::EngineDataArrowExt as _;
use deltalake::logstore::LogStoreRef;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::sync::mpsc;

use crate::error::TableError;

/// Rows per checkpoint row group: bounds the writer's memory (~200 B per tombstone row before
/// compression: ~6 MB) and lets readers fetch a checkpoint a piece at a time.
pub const ROW_GROUP_ROWS: usize = 32_768;

/// Batches in flight between the kernel's iterator and the writer.
const IN_FLIGHT: usize = 4;

/// What a written checkpoint holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows (actions) in the file.
    pub actions: u64,
    /// Its `add` actions: the table's live files.
    pub adds: u64,
    /// Its size in the store.
    pub bytes: u64,
    /// Removes left out: they protected no file longer than another one kept ([`Thinning`]).
    pub tombstones_dropped: u64,
}

/// Writes the checkpoint of `version` unless it exists (`None` then).
pub async fn write(log_store: LogStoreRef, version: u64) -> Result<Option<Written>, TableError> {
    write_with(log_store, version, ROW_GROUP_ROWS).await
}

async fn write_with(log_store: LogStoreRef, version: u64, group_rows: usize) -> Result<Option<Written>, TableError> {
    // checked before the kernel reads the log: another worker (or an earlier try of this one)
    // wrote it, and the commits below it may already have expired
    let name = Path::from(format!("_delta_log/{version:020}.checkpoint.parquet"));
    if log_store.object_store(None).head(&name).await.is_ok() {
        return Ok(None);
    }
    let engine = log_store.engine(None);
    let root = log_store.transaction_url(None)?;
    let opened = {
        let engine = engine.clone();
        blocking(move || {
            let snapshot = Snapshot::builder_for(root).at_version(version).build(engine.as_ref())?;
            let writer = snapshot.create_checkpoint_writer(engine.as_ref())?;
            let url = writer.checkpoint_path()?;
            Ok((writer, url))
        })
        .await?
    };
    let (writer, url) = opened;
    let store = log_store.root_object_store(None);
    let path =
        Path::from_url_path(url.path()).map_err(|e| TableError::Corrupt(format!("checkpoint path {url}: {e}")))?;
    let (tx, rx) = mpsc::channel::<Piece>(IN_FLIGHT);
    let producer = {
        // the iterator owns its snapshot, so it can move to a thread of its own
        let data = writer.checkpoint_data(engine.as_ref())?;
        blocking(move || {
            let mut thinning = Thinning::default();
            for batch in data {
                let batch = thinning.keep(batch?.apply_selection_vector()?.try_into_record_batch()?)?;
                if batch.num_rows() > 0 && tx.blocking_send(Piece::Batch(batch)).is_err() {
                    return Err(TableError::Corrupt("checkpoint writer stopped early".into()));
                }
            }
            // the writer completes the file only on this mark: an iterator that failed or
            // panicked leaves an upload that is never completed, so no partial file appears
            let _ = tx.blocking_send(Piece::End);
            Ok(thinning.dropped)
        })
    };
    let encoded = encode(store.clone(), path.clone(), rx, group_rows).await;
    let tombstones_dropped = producer.await?;
    let (actions, adds) = encoded?;
    let bytes = store.head(&path).await?.size;
    let written = Written {
        actions,
        adds,
        bytes,
        tombstones_dropped,
    };
    hint(log_store.object_store(None).as_ref(), version, &written).await?;
    Ok(Some(written))
}

/// Points `_delta_log/_last_checkpoint` at the new checkpoint, unless it already points at a
/// newer one (another worker's). Written here, not by the kernel's `finalize`: the kernel's
/// counts include the tombstones [`Thinning`] left out, and its stats type cannot be built
/// with other counts.
async fn hint(store: &dyn ObjectStore, version: u64, written: &Written) -> Result<(), TableError> {
    if crate::vacuum::last_checkpoint(store)
        .await?
        .is_some_and(|(newest, _)| newest > version)
    {
        return Ok(());
    }
    let body = serde_json::json!({
        "version": version,
        "size": written.actions,
        "sizeInBytes": written.bytes,
        "numOfAddFiles": written.adds,
    });
    store
        .put(&Path::from("_delta_log/_last_checkpoint"), body.to_string().into())
        .await?;
    Ok(())
}

/// Leaves out the tombstones that protect nothing another one does not.
///
/// A `remove` exists only for vacuum (PROTOCOL.md, *Action Reconciliation*): it keeps its data
/// file, and the deletion-vector file it names, until `deletionTimestamp` + the retention.
/// Merge-on-read re-adds a file with a new deletion vector at nearly every commit that touches
/// it, and one commit's vectors share one DV file, so a week of tombstones named the same data
/// files and DV files hundreds of times over (measured: 98–99% of a 640k-action checkpoint).
/// A remove is kept when it extends the protection of its data file or of its DV file, i.e.
/// when its time is later than every remove kept before for either; the set of files an
/// unexpired tombstone protects is therefore the same for every horizon — for Cormorant's
/// vacuum, delta-rs's and Spark's alike. Removes come newest commit first, so nearly every
/// later one is dropped at once; the maps hold one entry per file, not per re-add. This
/// deviates from the protocol's "should remain until expired" on purpose: nothing a reader or
/// vacuum can need is lost (`docs/DESIGN.md`).
#[derive(Default)]
struct Thinning {
    /// Data path → the latest deletion time kept for it.
    paths: HashMap<String, i64>,
    /// DV file (storage type and encoded path) → the latest deletion time kept for it.
    dvs: HashMap<String, i64>,
    dropped: u64,
}

impl Thinning {
    fn keep(&mut self, batch: RecordBatch) -> Result<RecordBatch, TableError> {
        let Some(remove) = batch.column_by_name("remove").map(|c| c.as_struct().clone()) else {
            return Ok(batch);
        };
        if remove.null_count() == remove.len() {
            return Ok(batch);
        }
        let paths = crate::vacuum::string_field(&remove, "path")?;
        let times = remove
            .column_by_name("deletionTimestamp")
            .map(|c| arrow::compute::cast(c, &DataType::Int64))
            .transpose()?;
        let times = times.as_ref().map(|t| t.as_primitive::<Int64Type>());
        let dvs = remove.column_by_name("deletionVector").map(|c| c.as_struct().clone());
        let dv_files = match &dvs {
            Some(d) => Some((
                crate::vacuum::string_field(d, "storageType")?,
                crate::vacuum::string_field(d, "pathOrInlineDv")?,
            )),
            None => None,
        };
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                if remove.is_null(row) || paths.is_null(row) {
                    return Some(true);
                }
                let Some(at) = times.filter(|t| t.is_valid(row)).map(|t| t.value(row)) else {
                    return Some(true); // no time: never expires, kept as it is
                };
                let dv = match (&dvs, &dv_files) {
                    (Some(d), Some((kind, encoded)))
                        if d.is_valid(row) && kind.is_valid(row) && kind.value(row) != "i" =>
                    {
                        Some(format!("{}{}", kind.value(row), encoded.value(row)))
                    }
                    _ => None, // none, or inline: no file to protect
                };
                Some(self.extends(paths.value(row), dv, at))
            })
            .collect();
        let kept = mask.true_count();
        self.dropped += (batch.num_rows() - kept) as u64;
        if kept == batch.num_rows() {
            return Ok(batch);
        }
        Ok(arrow::compute::filter_record_batch(&batch, &mask)?)
    }

    /// Whether a remove at `at` protects its data file or DV file longer than those kept.
    fn extends(&mut self, path: &str, dv: Option<String>, at: i64) -> bool {
        let later = |map: &mut HashMap<String, i64>, key: &str| match map.get_mut(key) {
            Some(t) if *t >= at => false,
            Some(t) => {
                *t = at;
                true
            }
            None => {
                map.insert(key.to_string(), at);
                true
            }
        };
        let for_path = later(&mut self.paths, path);
        let for_dv = dv.is_some_and(|d| later(&mut self.dvs, &d));
        for_path || for_dv
    }
}

/// What the kernel's side hands the writer.
enum Piece {
    Batch(RecordBatch),
    /// Every batch was sent: the file may be completed.
    End,
}

/// Encodes the batches from `rx` into the Parquet file at `path`, completing it only when the
/// end mark arrives; returns the rows and `add` rows written.
async fn encode(
    store: Arc<dyn object_store::ObjectStore>,
    path: Path,
    mut rx: mpsc::Receiver<Piece>,
    group_rows: usize,
) -> Result<(u64, u64), TableError> {
    let stopped = || TableError::Corrupt("the checkpoint's actions stopped before their end".into());
    let first = match rx.recv().await {
        Some(Piece::Batch(b)) => b,
        _ => return Err(stopped()),
    };
    let options = ArrowWriterOptions::new()
        // the kernel's schema, not an Arrow one, is the contract: other Delta readers must not
        // depend on Arrow-specific metadata (the kernel's own writer skips it too)
        .with_skip_arrow_metadata(true)
        .with_properties(properties(group_rows));
    let sink = BufWriter::new(store, path);
    let mut out = AsyncArrowWriter::try_new_with_options(sink, first.schema(), options)?;
    let (mut rows, mut adds) = (0, 0);
    let mut next = Some(first);
    while let Some(batch) = next {
        rows += batch.num_rows() as u64;
        adds += live_files(&batch);
        out.write(&batch).await?;
        next = match rx.recv().await {
            Some(Piece::Batch(b)) => Some(b),
            Some(Piece::End) => None,
            // dropping `out` abandons the upload: nothing appears at `path`
            None => return Err(stopped()),
        };
    }
    out.close().await?;
    Ok((rows, adds))
}

/// Rows of `batch` that are `add` actions.
fn live_files(batch: &RecordBatch) -> u64 {
    batch
        .column_by_name("add")
        .map_or(0, |a| (a.len() - a.null_count()) as u64)
}

/// zstd level 1: checkpoints are mostly repeated paths and timestamps, which compress several
/// times over at little CPU; every Delta reader (Spark, delta-rs, DuckDB, Trino) decodes it.
fn properties(group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(group_rows))
        .build()
}

/// Runs kernel work (synchronous, blocking on the store inside) off the async workers. It
/// starts at once, not when awaited: the checkpoint's producer must run while its consumer is
/// awaited.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TableError> + Send + 'static,
) -> impl Future<Output = Result<T, TableError>> {
    let task = tokio::task::spawn_blocking(f);
    async move {
        task.await
            .map_err(|e| TableError::Corrupt(format!("checkpoint task failed: {e}")))?
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
