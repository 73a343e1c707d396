//! Reading and writing one table's data files.

use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use connectors::change::align;
use deltalake::DeltaTable;
use deltalake::kernel::{Add, LogicalFileView};
use deltalake::operations::write::WriterStatsConfig;
use deltalake::operations::write::writer::{DeltaWriter, WriterConfig};
use futures::TryStreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
#[allow(deprecated)] // its replacement needs a hand-written AsyncFileReader; this one is still correct
use parquet::arrow::async_reader::ParquetObjectReader;

use crate::error::Result;

/// Every row of one data file (deletion vector NOT applied), aligned to `schema` (older
/// files lack added columns: they read null), projected to `only` when given.
pub async fn read(
    table: &DeltaTable,
    f: &LogicalFileView,
    schema: &SchemaRef,
    only: Option<&[String]>,
) -> Result<RecordBatch> {
    let store = table.log_store().object_store(None);
    #[allow(deprecated)]
    let reader = ParquetObjectReader::new(store, f.object_store_path()).with_file_size(f.size() as u64);
    let mut builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let target: SchemaRef = match only {
        Some(cols) => Arc::new(Schema::new(
            cols.iter()
                .filter_map(|c| schema.field_with_name(c).ok().cloned())
                .collect::<Vec<_>>(),
        )),
        None => schema.clone(),
    };
    if let Some(cols) = only {
        let file_schema = builder.schema().clone();
        let roots: Vec<usize> = cols.iter().filter_map(|c| file_schema.index_of(c).ok()).collect();
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    let batches: Vec<RecordBatch> = builder.build()?.try_collect().await?;
    let aligned = batches
        .iter()
        .map(|b| align(b, &target))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&target, &aligned)?)
}

/// The live rows of one data file: [`read`] with its deletion vector applied.
pub async fn read_live(table: &DeltaTable, f: &LogicalFileView, schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = read(table, f, schema, None).await?;
    match f.deletion_vector_descriptor() {
        Some(d) => {
            let store = table.log_store().object_store(None);
            let deleted = crate::dv::read(store.as_ref(), &d).await?;
            let keep: BooleanArray = (0..rows.num_rows())
                .map(|i| Some(!deleted.contains(i as u64)))
                .collect();
            Ok(filter_record_batch(&rows, &keep)?)
        }
        None => Ok(rows),
    }
}

/// Writes `data` as new data file(s) of the table (rolled at `target_size` bytes, one file
/// when `None`) and returns their `add` actions, with statistics.
pub async fn write(table: &DeltaTable, data: &RecordBatch, target_size: Option<u64>) -> Result<Vec<Add>> {
    let snapshot = table.snapshot()?;
    let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
    let config = WriterConfig::new(
        data.schema(),
        Vec::new(),
        None,
        target_size.and_then(NonZeroU64::new),
        None,
        stats.num_indexed_cols,
        stats.stats_columns,
    );
    let mut writer = DeltaWriter::new(table.log_store().object_store(None), config);
    writer.write(data).await?;
    Ok(writer.close().await?)
}
