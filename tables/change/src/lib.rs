//! `change`: the contract between the stream side (`connectors`) and the lake side (`tables`).
//!
//! A [`ChangeBatch`] holds the decoded changes of ONE table in stream order. It speaks only
//! Arrow and opaque stream positions ([`StreamId`], partition, offset), so the lake side never
//! learns where the changes came from, and this crate compiles without Kafka, Avro or Delta.
//!
//! Invariants a producer keeps:
//! - `data` has the source columns (`columns`) followed by [`META_COLUMNS`], one row per change,
//!   rows of one partition in the order the changes happened (by offset); rows of different
//!   partitions may interleave in any way (keys never share a partition);
//! - `kinds.len() == positions.len() == data.num_rows()`;
//! - for `Delete` rows only the key columns are meaningful: a delete's `before` image holds
//!   placeholders unless the source has REPLICA IDENTITY FULL, so the decoder never copies it;
//! - `unavailable` lists `(row, column)` cells whose value the source did not send (TOASTed
//!   data), sorted by row; the row's previous value must be kept;
//! - `offsets` says, per partition, the next position to read once this batch is applied. It may
//!   cover more than the rows (tombstones and dead-lettered records also move it).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

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

/// Arrow field metadata key holding a column's default as text (the Avro default of a column
/// a schema version added; rows written before it read as that value).
pub const DEFAULT_KEY: &str = "cormorant.default";

/// The change crate's one error type: a batch that breaks the contract, or an Arrow failure
/// while reshaping one. Neither goes away by retrying.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("Arrow error: {0}")]
    Arrow(#[from] ArrowError),
    #[error("change batch breaks its contract: {0}; this is a bug, please report it")]
    Contract(String),
}

impl ChangeError {
    /// Always `false`: the same batch fails the same way again.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// What a metadata column holds, as the column comment catalogs show.
pub fn meta_comment(column: &str) -> Option<&'static str> {
    Some(match column {
        OP => "Debezium operation of the row's last change: c (insert), r (snapshot read), u (update), d (delete)",
        DELETED => "true when the source row was deleted (soft deletes keep its last values)",
        SOURCE_TS => "when the source database made the row's last change (Debezium source.ts_ms), UTC",
        SOURCE_LSN => {
            "the source's log position of the row's last change (PostgreSQL LSN; null where the source has none)"
        }
        PARTITION => "Kafka partition the row's last change was read from",
        OFFSET => "Kafka offset of the row's last change",
        _ => return None,
    })
}

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

/// The identity of one source stream: a scope (for Kafka, the consumer group id) and a name
/// (the topic). With a partition it names the Delta `txn` application id
/// `<scope>:<name>:<partition>` under which a table records how far it applied that partition.
///
/// The lake side treats it as opaque; it exists so the parts are never formatted into a string
/// and parsed back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    scope: Arc<str>,
    name: Arc<str>,
}

impl StreamId {
    pub fn new(scope: &str, name: &str) -> Self {
        Self {
            scope: scope.into(),
            name: name.into(),
        }
    }

    /// The scope (consumer group id).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The stream's name (topic).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Delta `txn` application id of one partition of this stream.
    pub fn app_id(&self, partition: i32) -> String {
        format!("{}:{}:{partition}", self.scope, self.name)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scope, self.name)
    }
}

/// The next position to read in one partition once a batch is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceOffset {
    pub stream: StreamId,
    pub partition: i32,
    pub next_offset: i64,
}

impl SourceOffset {
    /// The Delta `txn` application id for this stream partition.
    pub fn app_id(&self) -> String {
        self.stream.app_id(self.partition)
    }
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
        let data = RecordBatch::new_empty(with_meta(&columns));
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

    /// The partitions this batch has rows or offsets for, ascending.
    pub fn partitions(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self.offsets.iter().map(|o| o.partition).collect();
        out.extend(self.positions.iter().map(|p| p.partition));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Keeps only the rows and offsets of partitions `keep` accepts (a revoked partition's
    /// changes are abandoned: its new owner re-reads them from the table's offsets).
    pub fn retain_partitions(&mut self, keep: impl Fn(i32) -> bool) -> Result<(), ChangeError> {
        self.offsets.retain(|o| keep(o.partition));
        // `keep` is asked once per partition, not per row (a worker's answer takes a lock);
        // rows of one partition mostly come in runs
        let mut kept: std::collections::HashMap<i32, bool> = std::collections::HashMap::new();
        let mut last: Option<(i32, bool)> = None;
        let mut ask = |p: i32| match last {
            Some((q, k)) if q == p => k,
            _ => {
                let k = *kept.entry(p).or_insert_with(|| keep(p));
                last = Some((p, k));
                k
            }
        };
        let mask: Vec<bool> = self.positions.iter().map(|p| ask(p.partition)).collect();
        if mask.iter().all(|m| *m) {
            return Ok(());
        }
        let mut renumber = Vec::with_capacity(mask.len());
        let mut n = 0;
        for m in &mask {
            renumber.push(n);
            n += usize::from(*m);
        }
        self.data = filter_record_batch(&self.data, &BooleanArray::from(mask.clone()))?;
        let mut i = 0;
        self.kinds.retain(|_| (mask[i], i += 1).0);
        i = 0;
        self.positions.retain(|_| (mask[i], i += 1).0);
        self.unavailable = self
            .unavailable
            .iter()
            .filter(|(r, _)| mask[*r])
            .map(|(r, c)| (renumber[*r], *c))
            .collect();
        Ok(())
    }

    /// Concatenates batches of one table in order: columns are the union (first appearance
    /// fixes the position, the wider of two types wins), offsets the furthest per partition.
    /// `None` when `parts` is empty.
    pub fn concat(parts: Vec<ChangeBatch>) -> Result<Option<ChangeBatch>, ChangeError> {
        if parts.len() <= 1 {
            return Ok(parts.into_iter().next());
        }
        let columns = union_columns(parts.iter().map(|p| p.columns.as_ref()));
        let full = with_meta(&columns);
        let mut key_columns: Vec<String> = Vec::new();
        let mut kinds = Vec::new();
        let mut positions = Vec::new();
        let mut unavailable = Vec::new();
        let mut offsets: BTreeMap<(StreamId, i32), i64> = BTreeMap::new();
        let mut data = Vec::with_capacity(parts.len());
        for part in parts {
            if key_columns.is_empty() {
                key_columns = part.key_columns.clone();
            } else if !part.key_columns.is_empty() && part.key_columns != key_columns {
                return Err(ChangeError::Contract(format!(
                    "key columns {:?} and {:?} in one table",
                    key_columns, part.key_columns
                )));
            }
            let base = kinds.len();
            let col_map: Vec<usize> = part
                .columns
                .fields()
                .iter()
                .map(|f| columns.index_of(f.name()).unwrap_or(usize::MAX))
                .collect();
            unavailable.extend(part.unavailable.iter().map(|(r, c)| (base + r, col_map[*c])));
            kinds.extend_from_slice(&part.kinds);
            positions.extend_from_slice(&part.positions);
            for o in part.offsets {
                let e = offsets.entry((o.stream, o.partition)).or_insert(o.next_offset);
                *e = (*e).max(o.next_offset);
            }
            data.push(align(&part.data, &full)?);
        }
        Ok(Some(ChangeBatch {
            data: concat_batches(&full, &data)?,
            columns,
            key_columns,
            kinds,
            positions,
            unavailable,
            offsets: offsets
                .into_iter()
                .map(|((stream, partition), next_offset)| SourceOffset {
                    stream,
                    partition,
                    next_offset,
                })
                .collect(),
        }))
    }
}

/// `columns` followed by the metadata columns.
pub fn with_meta(columns: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = columns.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(meta_fields());
    Arc::new(Schema::new(fields))
}

/// The union of several versions' columns: first appearance fixes the position; of two types
/// of one column the one that holds both versions' values wins (the newer one otherwise).
pub fn union_columns<'a>(versions: impl IntoIterator<Item = &'a Schema>) -> SchemaRef {
    let mut columns: Vec<Field> = Vec::new();
    for schema in versions {
        for f in schema.fields() {
            match columns.iter_mut().find(|c| c.name() == f.name()) {
                Some(c) if widens(f.data_type(), c.data_type()) => {}
                Some(c) => *c = f.as_ref().clone(),
                None => columns.push(f.as_ref().clone()),
            }
        }
    }
    Arc::new(Schema::new(columns))
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
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
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

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int32Array, Int64Array};

    use super::*;

    fn part(stream: &StreamId, p: i32, rows: &[(i64, i32)], extra: bool) -> ChangeBatch {
        let mut fields = vec![Field::new("id", DataType::Int32, true)];
        if extra {
            fields.push(Field::new("x", DataType::Int64, true));
        }
        let columns = Arc::new(Schema::new(fields));
        let full = with_meta(&columns);
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1)))];
        if extra {
            arrays.push(Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0 * 10))));
        }
        let n = rows.len();
        for f in meta_fields() {
            arrays.push(new_null_array(f.data_type(), n));
        }
        ChangeBatch {
            columns,
            key_columns: vec!["id".into()],
            data: RecordBatch::try_new(full, arrays).expect("batch"),
            kinds: vec![ChangeKind::Upsert; n],
            positions: rows
                .iter()
                .map(|r| Position {
                    partition: p,
                    offset: r.0,
                })
                .collect(),
            unavailable: if n > 0 { vec![(0, 0)] } else { vec![] },
            offsets: vec![SourceOffset {
                stream: stream.clone(),
                partition: p,
                next_offset: rows.last().map_or(0, |r| r.0 + 1),
            }],
        }
    }

    #[test]
    fn app_ids_are_scope_name_partition() {
        let s = StreamId::new("group", "dbz.public.t");
        assert_eq!(s.app_id(3), "group:dbz.public.t:3");
        assert_eq!(s.to_string(), "group:dbz.public.t");
        assert_eq!(s.name(), "dbz.public.t");
    }

    #[test]
    fn concat_unions_columns_and_renumbers() {
        let s = StreamId::new("g", "t");
        let a = part(&s, 0, &[(0, 1), (1, 2)], false);
        let b = part(&s, 1, &[(5, 3)], true);
        let c = part(&s, 0, &[(2, 4)], false);
        let all = ChangeBatch::concat(vec![a, b, c]).expect("concat").expect("some");
        assert_eq!(all.len(), 4);
        assert_eq!(all.columns.fields().len(), 2, "id + x");
        assert_eq!(all.unavailable, vec![(0, 0), (2, 0), (3, 0)]);
        let x = all.data.column_by_name("x").expect("x");
        assert_eq!(x.null_count(), 3);
        let offs: Vec<(i32, i64)> = all.offsets.iter().map(|o| (o.partition, o.next_offset)).collect();
        assert_eq!(offs, vec![(0, 3), (1, 6)]);
    }

    #[test]
    fn retain_partitions_drops_rows_and_offsets() {
        let s = StreamId::new("g", "t");
        let mut all = ChangeBatch::concat(vec![
            part(&s, 0, &[(0, 1)], false),
            part(&s, 1, &[(0, 2), (1, 3)], false),
            part(&s, 0, &[(1, 4)], false),
        ])
        .expect("concat")
        .expect("some");
        all.retain_partitions(|p| p == 0).expect("retain");
        assert_eq!(all.len(), 2);
        assert_eq!(all.data.num_rows(), 2);
        assert_eq!(all.unavailable, vec![(0, 0), (1, 0)]);
        assert_eq!(all.offsets.len(), 1);
        assert_eq!(all.partitions(), vec![0]);
    }
}
