//! The shapes of a view's rows: the metadata columns of its change rows, the column types
//! its Delta table keeps, and query output cast to them.
//!
//! Invariant: every column a view writes is nullable, with timestamps in microseconds and
//! strings and binaries as plain (not view) arrays — what Delta stores and readers expect.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The metadata columns of a view's change rows: `__op` `u`/`d`, the commit time as
/// `__source_ts`, partition 0 and the source version as `__kafka_offset`.
pub(super) fn meta(upserts: usize, deletes: usize, source_version: i64) -> Vec<ArrayRef> {
    let n = upserts + deletes;
    let ops: StringArray = std::iter::repeat_n(Some("u"), upserts)
        .chain(std::iter::repeat_n(Some("d"), deletes))
        .collect();
    let now = chrono::Utc::now().timestamp_micros();
    vec![
        Arc::new(ops),
        Arc::new(BooleanArray::from(vec![false; n])),
        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        Arc::new(Int64Array::new_null(n)),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from(vec![source_version; n])),
    ]
}

/// A view column as its Delta table keeps it: nullable like every column Cormorant writes,
/// timestamps in microseconds (window bounds come out of `date_bin` in nanoseconds; Delta
/// stores microseconds), strings as plain Utf8 (DataFusion reads them as views).
fn storable(f: &Field) -> Field {
    let t = match f.data_type() {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    };
    Field::new(f.name(), t, true)
}

/// A query's output schema as the view's table keeps it ([`storable`]).
pub(in crate::views) fn storable_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema.fields().iter().map(|f| storable(f)).collect::<Vec<_>>(),
    ))
}

/// `batches` (query output, maybe typed a little differently) as one batch of `schema`.
pub(in crate::views) fn concat_as(schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<RecordBatch> {
    let cast: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<_, _>>()?;
    Ok(arrow::compute::concat_batches(schema, &cast)?)
}

pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
