//! `ChangeBatch`: the contract between the stream side (`connectors`) and the lake side
//! (`tables`).
//!
//! A batch holds the decoded changes of ONE table in stream order. It speaks only Arrow and
//! opaque stream positions, so the lake side never learns where the changes came from.
//!
//! Invariants a producer keeps:
//! - `data` has the source columns (`columns`) followed by [`META_COLUMNS`], one row per change,
//!   rows in the order the changes happened (within a partition, by offset);
//! - `kinds.len() == positions.len() == data.num_rows()`;
//! - for `Delete` rows only the key columns are meaningful: a delete's `before` image holds
//!   placeholders unless the source has REPLICA IDENTITY FULL, so the decoder never copies it;
//! - `unavailable` lists `(row, column)` cells whose value the source did not send (TOASTed
//!   data); the row's previous value must be kept;
//! - `offsets` says, per partition, the next position to read once this batch is applied. It may
//!   cover more than the rows (tombstones and dead-lettered records also move it).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

pub use crate::avro::default::DEFAULT_KEY;

/// Debezium operation code of the change (`c`, `r`, `u`, `d`, `t`).
pub const OP: &str = "__op";
/// Soft-delete marker.
pub const DELETED: &str = "__deleted";
/// `source.ts_ms` as a UTC timestamp.
pub const SOURCE_TS: &str = "__source_ts";
/// `source.lsn` (null where the source has none).
pub const SOURCE_LSN: &str = "__source_lsn";
/// Stream partition the change was read from.
pub const PARTITION: &str = "__kafka_partition";
/// Stream offset of the change.
pub const OFFSET: &str = "__kafka_offset";

/// Metadata columns, in table order, after the source columns.
pub const META_COLUMNS: [&str; 6] = [OP, DELETED, SOURCE_TS, SOURCE_LSN, PARTITION, OFFSET];

/// The Arrow fields of [`META_COLUMNS`].
pub fn meta_fields() -> Vec<Field> {
    vec![
        Field::new(OP, DataType::Utf8, true),
        Field::new(DELETED, DataType::Boolean, true),
        Field::new(
            SOURCE_TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(SOURCE_LSN, DataType::Int64, true),
        Field::new(PARTITION, DataType::Int32, true),
        Field::new(OFFSET, DataType::Int64, true),
    ]
}

/// Whether `name` is one of Cormorant's metadata columns.
pub fn is_meta_column(name: &str) -> bool {
    META_COLUMNS.contains(&name)
}

/// What a change does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Insert, snapshot read or update: the row's new values.
    Upsert,
    /// Delete of the key.
    Delete,
    /// Every row present at this point is deleted (`op = 't'`, no key).
    Truncate,
}

/// Where a change sits in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// The next position to read in one partition once a batch is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceOffset {
    /// Opaque identity of the stream (e.g. `<group>:<topic>`); with the partition it names the
    /// Delta `txn` application id.
    pub stream: String,
    pub partition: i32,
    pub next_offset: i64,
}

impl SourceOffset {
    /// The Delta `txn` application id for this stream partition.
    pub fn app_id(&self) -> String {
        app_id(&self.stream, self.partition)
    }
}

/// `<stream>:<partition>`, the Delta `txn` application id of one stream partition.
pub fn app_id(stream: &str, partition: i32) -> String {
    format!("{stream}:{partition}")
}

/// Decoded changes of one table, ready to apply. See the module docs for the invariants.
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    /// Source columns only (no metadata columns), in source order.
    pub columns: SchemaRef,
    /// The primary-key column names (the Debezium key fields).
    pub key_columns: Vec<String>,
    /// Source columns + metadata columns, one row per change.
    pub data: RecordBatch,
    pub kinds: Vec<ChangeKind>,
    pub positions: Vec<Position>,
    /// `(row, source column index)` cells whose value was not sent (keep the previous value).
    pub unavailable: Vec<(usize, usize)>,
    pub offsets: Vec<SourceOffset>,
}

impl ChangeBatch {
    /// A batch without rows that only moves offsets forward (tombstones, dead letters).
    pub fn offsets_only(columns: SchemaRef, key_columns: Vec<String>, offsets: Vec<SourceOffset>) -> Self {
        let mut fields: Vec<Field> = columns.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(meta_fields());
        let data = RecordBatch::new_empty(Arc::new(Schema::new(fields)));
        Self {
            columns,
            key_columns,
            data,
            kinds: Vec::new(),
            positions: Vec::new(),
            unavailable: Vec::new(),
            offsets,
        }
    }

    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// A column of `len` copies of `field`'s default (from its [`DEFAULT_KEY`] metadata), or of
/// nulls when it has none.
pub fn default_column(field: &Field, len: usize) -> Result<ArrayRef, ArrowError> {
    match field.metadata().get(DEFAULT_KEY) {
        Some(text) => cast_with_options(&StringArray::from(vec![text.as_str(); len]), field.data_type(), &STRICT),
        None => Ok(new_null_array(field.data_type(), len)),
    }
}

/// Casts that fail instead of turning values that do not fit into nulls.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// Casts and pads `batch` to `schema` by column name: missing columns take the column's
/// default (null when it has none), types are cast — widening keeps every value, and a cast
/// that would lose a value fails.
pub fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let arrays = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(a) if a.data_type() == f.data_type() => Ok(a.clone()),
            Some(a) => cast_with_options(a, f.data_type(), &STRICT).map_err(|e| {
                ArrowError::CastError(format!(
                    "column {} {} -> {}: {e}",
                    f.name(),
                    a.data_type(),
                    f.data_type()
                ))
            }),
            None => default_column(f, batch.num_rows()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// Whether every value of `from` is exactly representable in `to` (and they differ): the type
/// changes schema evolution applies by widening the column.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Int8, Int16 | Int32 | Int64) | (Int16, Int32 | Int64) | (Int32, Int64) | (Float32, Float64) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && (i16::from(*p2) - i16::from(*s2)) >= (i16::from(*p1) - i16::from(*s1)) && from != to
        }
        _ => false,
    }
}
