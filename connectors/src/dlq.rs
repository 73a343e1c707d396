//! Dead letters: records that cannot be applied, kept whole with the reason.
//!
//! The `_dlq` table's rows carry the exact raw key and value bytes, so nothing is lost: a
//! fixed schema or a fixed worker can re-drive them.

use std::sync::Arc;

use arrow::array::{BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::debezium::RawRecord;
use crate::error::ConnectorError;

/// One record that went to the dead-letter table.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub record: RawRecord,
    pub error_kind: &'static str,
    pub error: String,
}

impl DeadLetter {
    pub fn new(record: RawRecord, error: &ConnectorError) -> Self {
        Self {
            record,
            error_kind: error.kind(),
            error: error.to_string(),
        }
    }
}

/// Schema of the `_dlq` table.
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, true),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("error_kind", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("record_timestamp", ts.clone(), true),
        Field::new("dead_lettered_at", ts, true),
    ]))
}

/// The `_dlq` rows of `letters`.
pub fn to_batch(letters: &[DeadLetter]) -> Result<RecordBatch, ConnectorError> {
    let now = chrono::Utc::now().timestamp_micros();
    let r = |f: fn(&DeadLetter) -> Option<&str>| StringArray::from_iter(letters.iter().map(f));
    let cols: Vec<Arc<dyn arrow::array::Array>> = vec![
        Arc::new(r(|d| Some(d.record.topic.as_ref()))),
        Arc::new(Int32Array::from_iter_values(letters.iter().map(|d| d.record.partition))),
        Arc::new(Int64Array::from_iter_values(letters.iter().map(|d| d.record.offset))),
        Arc::new(BinaryArray::from_iter(letters.iter().map(|d| d.record.key.as_deref()))),
        Arc::new(BinaryArray::from_iter(
            letters.iter().map(|d| d.record.value.as_deref()),
        )),
        Arc::new(r(|d| Some(d.error_kind))),
        Arc::new(r(|d| Some(d.error.as_str()))),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                letters
                    .iter()
                    .map(|d| d.record.timestamp_ms.and_then(|t| t.checked_mul(1000))),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(TimestampMicrosecondArray::from_iter_values(letters.iter().map(|_| now)).with_timezone("UTC")),
    ];
    RecordBatch::try_new(schema(), cols).map_err(|e| ConnectorError::Internal(e.to_string()))
}
