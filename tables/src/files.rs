//! Reading and writing one table's data files.
//!
//! Reads come in three shapes, from cheapest to dearest: the key columns only (to index a
//! file), selected rows (the previous values a soft delete or a TOASTed cell needs, read with
//! a row selection so untouched pages are skipped), and whole files (copy-on-write rewrites,
//! compaction); every read puts back the file's Delta partition values, which the Parquet file
//! does not hold. Writes produce one file per call — one per set of partition values of a
//! partitioned table (see [`crate::partitioning`]) — tagged with the source partition it
//! belongs to, with Parquet settings chosen for this workload (see [`writer_properties`]).

use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use change::align;
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use deltalake::operations::write::WriterStatsConfig;
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{
    ArrowReaderBuilder, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
#[allow(deprecated)] // its replacement needs a hand-written AsyncFileReader; this one is still correct
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::error::Result;
use crate::index::PARTITION_TAG;
use crate::partitioning::{self, Partitioning, Values};

/// Where a data file is, how big, and the partition values its rows hold (not stored in it).
#[derive(Clone, Debug)]
pub struct FileRef {
    pub path: Path,
    pub size: u64,
    pub values: Values,
}

impl FileRef {
    /// From an `add` action (its path is URL-encoded and relative to the table root).
    pub fn of(add: &Add) -> Self {
        let path = Path::from_url_path(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()));
        Self {
            path,
            size: add.size.max(0) as u64,
            values: add.partition_values.clone(),
        }
    }
}

/// Every row (deletion vector NOT applied) of a file, or the rows `rows` selects (ascending),
/// aligned to `schema` (older files lack added columns: they read their default), projected
/// to `only` when given.
pub async fn read(
    store: Arc<dyn ObjectStore>,
    file: &FileRef,
    schema: &SchemaRef,
    only: Option<&[String]>,
    rows: Option<&[u32]>,
) -> Result<RecordBatch> {
    let target: SchemaRef = match only {
        Some(cols) => Arc::new(Schema::new(
            cols.iter()
                .filter_map(|c| schema.field_with_name(c).ok().cloned())
                .collect::<Vec<_>>(),
        )),
        None => schema.clone(),
    };
    let batches = if only.is_none() && file.size <= FETCH_WHOLE_BYTES {
        let bytes = store.get(&file.path).await?.bytes().await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options(rows))?;
        let reader = narrow(builder, only, rows).build()?;
        reader.collect::<std::result::Result<Vec<_>, _>>()?
    } else {
        #[allow(deprecated)]
        let reader = ParquetObjectReader::new(store, file.path.clone()).with_file_size(file.size);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options(rows)).await?;
        narrow(builder, only, rows).build()?.try_collect().await?
    };
    let aligned = batches
        .iter()
        .map(|b| align(b, &target))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = arrow::compute::concat_batches(&target, &aligned)?;
    partitioning::inject(&rows, &file.values)
}

/// Files up to this size are fetched in one request and decoded in memory when every column
/// is wanted (a read of some columns, e.g. the keys to index a file, fetches only theirs). A
/// ranged read costs three requests (footer, page index, column chunks; on local disk each is
/// a blocking task), which on the small files ingest writes cost more than the bytes they
/// save: `perf` of the upsert bench had reads for soft deletes at 18% of the worker.
pub const FETCH_WHOLE_BYTES: u64 = 4 * 1024 * 1024;

/// The page index helps a selected-row read skip pages; a whole-file read never needs it.
fn options(rows: Option<&[u32]>) -> ArrowReaderOptions {
    let policy = if rows.is_some() {
        PageIndexPolicy::Optional
    } else {
        PageIndexPolicy::Skip
    };
    ArrowReaderOptions::new().with_page_index_policy(policy)
}

/// `builder` reading only the columns `only` names (all when `None`) and the rows `rows`
/// selects (all when `None`).
fn narrow<T>(
    mut builder: ArrowReaderBuilder<T>,
    only: Option<&[String]>,
    rows: Option<&[u32]>,
) -> ArrowReaderBuilder<T> {
    if let Some(cols) = only {
        let file_schema = builder.schema().clone();
        let roots: Vec<usize> = cols.iter().filter_map(|c| file_schema.index_of(c).ok()).collect();
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    if let Some(rows) = rows {
        builder = builder.with_row_selection(selection(rows));
    }
    builder.with_batch_size(64 * 1024)
}

/// A row selection picking the ascending `rows`.
fn selection(rows: &[u32]) -> RowSelection {
    let mut selectors = Vec::new();
    let mut at = 0usize;
    for &r in rows {
        let r = r as usize;
        if r < at {
            continue; // duplicate
        }
        if r > at {
            selectors.push(RowSelector::skip(r - at));
        }
        selectors.push(RowSelector::select(1));
        at = r + 1;
    }
    RowSelection::from(selectors)
}

/// The live rows of a file: [`read`] with its deletion vector applied.
pub async fn read_live(store: Arc<dyn ObjectStore>, add: &Add, schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = read(store.clone(), &FileRef::of(add), schema, None, None).await?;
    match &add.deletion_vector {
        Some(d) => {
            let deleted = crate::dv::read(store.as_ref(), d).await?;
            let keep: BooleanArray = (0..rows.num_rows())
                .map(|i| Some(!deleted.contains(i as u64)))
                .collect();
            Ok(filter_record_batch(&rows, &keep)?)
        }
        None => Ok(rows),
    }
}

/// What a data file is written for, which decides how it is rolled and compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A commit's new rows: one file per call, Snappy. Such files are small (a batch's rows of
    /// one source partition), many per commit (one per partition) and short-lived (compaction
    /// folds them), so the cost per column chunk is what counts: the parquet crate makes a
    /// zstd compression *and* decompression context for every column chunk it writes or
    /// reads (`ZSTDCodec::new`), and a profile of the 1M-event upsert stream over 48
    /// partitions had `ZSTD_createCCtx`/`ZSTD_createDCtx` alone at 10.6% of the worker's
    /// samples (121 of them in reads of fresh files for soft deletes and compaction, 55 in
    /// writes). Snappy's codec is a small table; its files are larger (see `README.md`).
    /// Uncompressed and LZ4_RAW fresh files were measured against it on the 1M-event upsert
    /// stream (four alternated rounds, `benches/results/stream.md`): the same events per
    /// CPU-second (179k, 179k, 177k), and uncompressed ones doubled the table's bytes.
    Fresh,
    /// Files meant to last (compaction, schema rewrites, copy-on-write rewrites): zstd(1), the
    /// smallest files, read many times, few column chunks per byte; rolled at `target` bytes
    /// (one file when `None`).
    Lasting { target: Option<u64> },
}

/// Parquet settings for Cormorant's files of `kind`, chosen by measurement
/// (`benches/pipeline.rs`, 1M events of the customers stream, one partition, release, this
/// 2-core machine):
///
/// | settings                  | upsert events/CPU-s | insert events/CPU-s | bytes on disk per byte of Avro |
/// |---------------------------|--------------------:|--------------------:|-------------------------------:|
/// | zstd(1), dictionary on    | 156k | 152k | 0.22 (upsert) / 0.32 (insert) |
/// | zstd(1), dictionary off   | 188k | 170k | 0.19 / 0.29 |
/// | snappy, dictionary on     | 188k | 175k | 0.34 / 0.52 |
/// | snappy, dictionary off    | 221k | 179k | 0.32 / 0.51 |
///
/// Dictionaries are off: change data is mostly high-cardinality text (emails, ids, JSON)
/// where building them costs time and saves little. Compression depends on [`Kind`]: fresh
/// files pay per column chunk, compacted ones per byte. Statistics stay at page level (with
/// the page index) so readers prune pages and selected-row reads skip them.
pub fn writer_properties(kind: Kind) -> WriterProperties {
    let compression = match kind {
        Kind::Fresh => Compression::SNAPPY,
        Kind::Lasting { .. } => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1024 * 1024))
        .build()
}

/// New data files and the rows they hold.
pub struct Written {
    pub adds: Vec<Add>,
    /// The rows written, in file order: the first add's `numRecords` rows are its own, and so
    /// on. The input rows reordered when the table is partitioned (each file holds one set of
    /// partition values), with derived partition columns computed; the input as is otherwise.
    pub rows: RecordBatch,
}

/// Writes `data` as new data file(s) of the table of `kind` (rolled at its target size, one
/// file when it has none; one file or more per set of partition values of a partitioned table), tagged
/// with the source `partition` when given, and returns their `add`s with statistics.
pub async fn write(table: &DeltaTable, data: &RecordBatch, kind: Kind, partition: Option<i32>) -> Result<Written> {
    let metadata = table.snapshot()?.metadata().clone();
    let parts = Partitioning::of_table(metadata.partition_columns(), metadata.configuration())?
        .restrict(metadata.partition_columns());
    write_with(table, &parts, data, kind, partition).await
}

/// [`write`] split by `parts` (the table's realized partition columns, or the ones a schema
/// rewrite is about to realize).
pub async fn write_with(
    table: &DeltaTable,
    parts: &Partitioning,
    data: &RecordBatch,
    kind: Kind,
    partition: Option<i32>,
) -> Result<Written> {
    let snapshot = table.snapshot()?;
    let (rows, groups) = if parts.is_empty() {
        (data.clone(), vec![(data.num_rows(), Values::new())])
    } else {
        parts.split(&parts.derive(data)?)?
    };
    let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
    let file_schema = parts.file_schema(&rows.schema());
    let store = table.log_store().object_store(None);
    let mut adds = Vec::new();
    let mut start = 0;
    for (n, values) in groups {
        let group = rows.slice(start, n);
        start += n;
        let group = group.project(&projection(&rows.schema(), &file_schema))?;
        let config = WriterConfig::new(
            file_schema.clone(),
            Vec::new(),
            Some(writer_properties(kind)),
            match kind {
                Kind::Fresh => None,
                Kind::Lasting { target } => target.and_then(NonZeroU64::new),
            },
            Some(64 * 1024),
            stats.num_indexed_cols,
            stats.stats_columns.clone(),
        );
        let mut writer = DeltaWriter::new(store.clone(), config);
        writer.write(&group).await?;
        let mut written = writer.close().await?;
        crate::stats::make_exact(&mut written, &group)?;
        for add in &mut written {
            add.partition_values = values.clone();
            if let Some(p) = partition {
                add.tags
                    .get_or_insert_with(Default::default)
                    .insert(PARTITION_TAG.to_string(), Some(p.to_string()));
            }
        }
        adds.extend(written);
    }
    Ok(Written { adds, rows })
}

/// Indices of `part`'s fields in `all`.
fn projection(all: &SchemaRef, part: &SchemaRef) -> Vec<usize> {
    part.fields()
        .iter()
        .filter_map(|f| all.index_of(f.name()).ok())
        .collect()
}

/// Deletes files written for a commit that will never be made (best effort: a file left
/// behind is unreferenced and vacuum removes it).
pub async fn discard(store: &dyn ObjectStore, adds: &[Add]) {
    for add in adds {
        if let Err(e) = store.delete(&FileRef::of(add).path).await {
            tracing::debug!(path = %add.path, error = %e, "could not delete an unused file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_skip_between_rows() {
        let s = selection(&[0, 1, 5, 5, 9]);
        let v: Vec<RowSelector> = s.into();
        let shape: Vec<(bool, usize)> = v.iter().map(|r| (r.skip, r.row_count)).collect();
        assert_eq!(shape, vec![(false, 2), (true, 3), (false, 1), (true, 3), (false, 1)]);
    }
}
