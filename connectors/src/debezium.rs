//! Debezium envelope → [`ChangeBatch`] for one table.
//!
//! Each record is read once: one pass over the whole datum decodes the `after` row straight
//! into the segment's Arrow columns and reads op and source (no trailing bytes allowed). A
//! record that fails anywhere goes to the dead-letter table and leaves no trace in the batch:
//! its partly decoded row is padded and marked bad, and bad rows are filtered out at `finish`.
//! (Two passes — a validating skip of the datum, then a decode of the row — cost the row's
//! bytes twice: `perf` of the insert stream had the skip at ~7% of the worker.)
//!
//! Rules (DESIGN.md, "Tables"):
//! - `c`/`r`/`u` → upsert of `after`;
//! - `d` → delete; only the KEY is taken (from the record key), never the `before` image,
//!   whose non-key values are placeholders unless the source has REPLICA IDENTITY FULL;
//! - `t` → truncate; tombstones (null value) and `m` (logical messages) only move offsets;
//! - text/bytes equal to `__debezium_unavailable_value` are reported in `unavailable`.
//!
//! Records with different value schema ids land in different segments (each with its own
//! columns); `finish` aligns segments to their union schema — newer types win, added columns are
//! null in older rows — and concatenates them in arrival order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema};
use bytes::Bytes;

use crate::avro::default::{DEFAULT_KEY, default_text};
use crate::avro::plan::Record;
use crate::avro::{Column, Plan, Reader};
use crate::error::ConnectorError;
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, StreamId, meta_fields};

/// One record as read from the stream, independent of the Kafka client.
#[derive(Clone, Debug)]
pub struct RawRecord {
    /// Shared by every record of the topic (one allocation per topic, not per record).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Slices of a buffer shared by the records the consumer read together (see
    /// `kafka::Arena`): one allocation per megabyte of records, not two per record.
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Producer/broker timestamp in ms, if any.
    pub timestamp_ms: Option<i64>,
}

impl RawRecord {
    /// Bytes of key and value (what batch limits and metrics count).
    pub fn bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len)
    }
}

/// The parts of a Debezium value schema the decoder needs.
#[derive(Debug)]
pub struct EnvelopePlan {
    envelope: Arc<Record>,
    row: Arc<Record>,
    after: usize,
    op: usize,
    source: Option<(usize, Arc<Record>)>,
    /// Indices of `ts_ms` and `lsn` among the source block's fields (found once, not by name
    /// per record).
    source_ts: Option<usize>,
    source_lsn: Option<usize>,
    ts_ms: Option<usize>,
}

impl EnvelopePlan {
    pub fn new(plan: &Plan) -> Result<Self, ConnectorError> {
        let Plan::Record(env) = plan else {
            return Err(ConnectorError::NotDebezium("value schema is not a record".into()));
        };
        let field = |name: &str| {
            env.field_index(name)
                .ok_or_else(|| ConnectorError::NotDebezium(format!("envelope {} has no `{name}` field", env.name)))
        };
        let after = field("after")?;
        let op = field("op")?;
        let Plan::Record(row) = env.fields[after].plan.non_null() else {
            return Err(ConnectorError::NotDebezium("`after` is not a record".into()));
        };
        let source = env
            .field_index("source")
            .and_then(|i| match env.fields[i].plan.non_null() {
                Plan::Record(r) => Some((i, r.clone())),
                _ => None,
            });
        let in_source = |name: &str| source.as_ref().and_then(|(_, r)| r.field_index(name));
        Ok(Self {
            row: row.clone(),
            after,
            op,
            source_ts: in_source("ts_ms"),
            source_lsn: in_source("lsn"),
            source,
            ts_ms: env.field_index("ts_ms"),
            envelope: env.clone(),
        })
    }

    /// Arrow fields of the row's columns (all nullable: soft-deleted rows of unknown keys and
    /// dropped columns hold nulls).
    pub fn columns(&self) -> Result<Vec<Field>, ConnectorError> {
        self.row
            .fields
            .iter()
            .map(|f| {
                let field = Field::new(&f.name, f.plan.arrow_type()?, true);
                // the Avro default, for rows written before this column existed
                Ok(match f.default.as_ref().and_then(|d| default_text(&f.plan, d)) {
                    Some(text) => field.with_metadata([(DEFAULT_KEY.to_string(), text)].into()),
                    None => field,
                })
            })
            .collect()
    }
}

/// What the pass over one value datum found besides the `after` row.
struct Scanned<'a> {
    op: &'a str,
    /// Whether an `after` row was decoded into the segment's columns.
    after: bool,
    ts_ms: Option<i64>,
    lsn: Option<i64>,
}

fn read_long_field(plan: &Plan, r: &mut Reader<'_>) -> Result<Option<i64>, ConnectorError> {
    match plan {
        Plan::Long(_) | Plan::Int(_) => Ok(Some(r.long()?)),
        Plan::Nullable { inner, .. } if matches!(**inner, Plan::Long(_) | Plan::Int(_)) => {
            Ok(if r.present(plan)? { Some(r.long()?) } else { None })
        }
        other => {
            r.skip(other)?;
            Ok(None)
        }
    }
}

/// Reads one value datum of `seg`'s schema: the `after` row, when not null, is decoded into
/// `seg`'s columns as its next row; op and the source position are read; nothing may trail.
fn scan<'a>(seg: &mut Segment, bytes: &'a [u8]) -> Result<Scanned<'a>, ConnectorError> {
    let env = seg.env.clone();
    let mut r = Reader::new(bytes);
    let mut out = Scanned {
        op: "",
        after: false,
        ts_ms: None,
        lsn: None,
    };
    let mut envelope_ts = None;
    for (i, f) in env.envelope.fields.iter().enumerate() {
        if i == env.after {
            if r.present(&f.plan)? {
                out.after = true;
                seg.push_row(&mut r)?;
            }
        } else if i == env.op {
            out.op = r.str()?;
        } else if Some(i) == env.ts_ms {
            envelope_ts = read_long_field(&f.plan, &mut r)?;
        } else if let Some((_, src)) = env.source.as_ref().filter(|(si, _)| *si == i) {
            if !r.present(&f.plan)? {
                continue;
            }
            for (j, sf) in src.fields.iter().enumerate() {
                if Some(j) == env.source_ts {
                    out.ts_ms = read_long_field(&sf.plan, &mut r)?;
                } else if Some(j) == env.source_lsn {
                    out.lsn = read_long_field(&sf.plan, &mut r)?;
                } else {
                    r.skip(&sf.plan)?;
                }
            }
        } else {
            r.skip(&f.plan)?;
        }
    }
    if r.remaining() != 0 {
        return Err(ConnectorError::CorruptAvro(format!(
            "{} trailing bytes after the datum",
            r.remaining()
        )));
    }
    out.ts_ms = out.ts_ms.or(envelope_ts);
    Ok(out)
}

/// A decoded row's metadata columns.
struct RowMeta {
    kind: ChangeKind,
    op: &'static str,
    ts_ms: Option<i64>,
    lsn: Option<i64>,
    position: Position,
}

/// Decodes one record into `seg`'s next row (the caller completes or abandons it); `None` for a
/// record that makes no row (`m`). `key_columns` are the table's key fields, set by the first
/// key seen; a record whose key has other fields is refused.
fn decode_row(
    seg: &mut Segment,
    key_columns: &mut Vec<String>,
    position: Position,
    key: Option<(u32, &Plan, &[u8])>,
    value: &[u8],
) -> Result<Option<RowMeta>, ConnectorError> {
    let unavailable_before = seg.unavailable.len();
    let scanned = scan(seg, value)?;
    let (kind, op) = match scanned.op {
        "c" => (ChangeKind::Upsert, "c"),
        "r" => (ChangeKind::Upsert, "r"),
        "u" => (ChangeKind::Upsert, "u"),
        "d" => (ChangeKind::Delete, "d"),
        "t" => (ChangeKind::Truncate, "t"),
        "m" => {
            if scanned.after {
                // a message makes no row: an `after` it should not have is dropped
                seg.abandon_row(unavailable_before, position);
            }
            return Ok(None);
        }
        other => return Err(ConnectorError::NotDebezium(format!("unknown op {other:?}"))),
    };
    let key_record = match key {
        Some((id, Plan::Record(rec), bytes)) => {
            Reader::new(bytes).skip_record(rec)?;
            check_key_fields(key_columns, rec)?;
            Some((id, rec, bytes))
        }
        Some(_) => return Err(ConnectorError::MissingKey("record key is not an Avro record".into())),
        None if kind == ChangeKind::Truncate => None,
        None => return Err(ConnectorError::MissingKey("record has a null key".into())),
    };
    match (kind, scanned.after, key_record) {
        (ChangeKind::Upsert, false, _) => {
            return Err(ConnectorError::NotDebezium(format!(
                "op {:?} without an `after` row",
                scanned.op
            )));
        }
        (ChangeKind::Delete, after, Some((id, rec, bytes))) => {
            if after {
                // a delete takes only its key: an `after` it should not have is dropped
                seg.abandon_row(unavailable_before, position);
            }
            seg.push_key(id, rec, bytes)?;
        }
        // a truncate's row holds nothing, whatever it carried
        (ChangeKind::Truncate, true, _) => seg.abandon_row(unavailable_before, position),
        // an upsert's row is decoded
        _ => {}
    }
    Ok(Some(RowMeta {
        kind,
        op,
        ts_ms: scanned.ts_ms,
        lsn: scanned.lsn,
        position,
    }))
}

/// Sets the table's key fields from the first key seen; refuses a key with other fields.
fn check_key_fields(key_columns: &mut Vec<String>, key: &Record) -> Result<(), ConnectorError> {
    if key_columns.is_empty() {
        *key_columns = key.fields.iter().map(|f| f.name.clone()).collect();
        return Ok(());
    }
    let same = key_columns.len() == key.fields.len() && key_columns.iter().zip(&key.fields).all(|(a, f)| *a == f.name);
    if same {
        return Ok(());
    }
    let names: Vec<&str> = key.fields.iter().map(|f| f.name.as_str()).collect();
    Err(ConnectorError::IncompatibleSchema(format!(
        "key fields changed from {key_columns:?} to {names:?}"
    )))
}

/// Rows decoded with one value schema.
struct Segment {
    value_id: u32,
    env: Arc<EnvelopePlan>,
    fields: Vec<Field>,
    columns: Vec<Column>,
    /// key schema id → (key field index → column index) for deletes.
    key_maps: HashMap<u32, Vec<Option<usize>>>,
    /// `__op` of each row (one of the codes `kind` accepted; static, no allocation per row)
    ops: Vec<&'static str>,
    ts: Vec<Option<i64>>,
    lsn: Vec<Option<i64>>,
    kinds: Vec<ChangeKind>,
    positions: Vec<Position>,
    unavailable: Vec<(usize, usize)>,
    /// `false` for rows that failed mid-decode: padded with nulls, filtered out at finish.
    good: Vec<bool>,
}

impl Segment {
    /// A segment with room for `rows` records (the records left in the run).
    fn new(value_id: u32, env: Arc<EnvelopePlan>, rows: usize) -> Result<Self, ConnectorError> {
        let fields = env.columns()?;
        let columns = fields
            .iter()
            .map(|f| Column::with_capacity(f.data_type(), rows))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            value_id,
            env,
            fields,
            columns,
            key_maps: HashMap::new(),
            ops: Vec::with_capacity(rows),
            ts: Vec::with_capacity(rows),
            lsn: Vec::with_capacity(rows),
            kinds: Vec::with_capacity(rows),
            positions: Vec::with_capacity(rows),
            unavailable: Vec::new(),
            good: Vec::with_capacity(rows),
        })
    }

    fn rows(&self) -> usize {
        self.good.len()
    }

    /// Brings every column to `rows + 1` entries after a partial decode.
    fn pad(&mut self) {
        let target = self.rows() + 1;
        for c in &mut self.columns {
            while c.len() < target {
                c.append_null();
            }
        }
    }

    /// Decodes a row datum from `r` into the next row's columns.
    fn push_row(&mut self, r: &mut Reader<'_>) -> Result<(), ConnectorError> {
        let row = self.rows();
        let Segment {
            env,
            columns,
            unavailable,
            ..
        } = self;
        for (i, f) in env.row.fields.iter().enumerate() {
            if columns[i].append(&f.plan, r)? {
                unavailable.push((row, i));
            }
        }
        Ok(())
    }

    /// Completes the next row (columns a decode left short get nulls) with its metadata.
    fn finish_row(&mut self, row: RowMeta, good: bool) {
        self.pad();
        self.ops.push(row.op);
        self.ts.push(row.ts_ms);
        self.lsn.push(row.lsn);
        self.kinds.push(row.kind);
        self.positions.push(row.position);
        self.good.push(good);
    }

    /// Gives up the next row, whatever was decoded into it: it is completed as a bad row
    /// (filtered out at finish), and the cells it reported unavailable are forgotten.
    fn abandon_row(&mut self, unavailable_before: usize, position: Position) {
        self.unavailable.truncate(unavailable_before);
        let row = RowMeta {
            kind: ChangeKind::Upsert,
            op: "",
            ts_ms: None,
            lsn: None,
            position,
        };
        self.finish_row(row, false);
    }

    /// Whether a decode has started the next row.
    fn row_started(&self) -> bool {
        let n = self.rows();
        self.columns.iter().any(|c| c.len() > n)
    }

    fn push_key(&mut self, key_id: u32, key: &Record, bytes: &[u8]) -> Result<(), ConnectorError> {
        let map = self
            .key_maps
            .entry(key_id)
            .or_insert_with(|| {
                key.fields
                    .iter()
                    .map(|kf| self.fields.iter().position(|f| f.name() == &kf.name))
                    .collect()
            })
            .clone();
        let mut r = Reader::new(bytes);
        for (kf, col) in key.fields.iter().zip(map) {
            match col {
                Some(c) => {
                    self.columns[c].append(&kf.plan, &mut r)?;
                }
                None => r.skip(&kf.plan)?,
            }
        }
        // every non-key column gets a null (pad does exactly that)
        Ok(())
    }

    /// The segment's good rows as a batch (offsets are set by the table decoder).
    fn into_batch(mut self, key_columns: &[String]) -> Result<ChangeBatch, ConnectorError> {
        let data = self.data()?;
        let mut renumber = Vec::with_capacity(self.good.len());
        let mut n = 0;
        for g in &self.good {
            renumber.push(n);
            n += usize::from(*g);
        }
        let keep = |i: &usize| self.good[*i];
        Ok(ChangeBatch {
            columns: Arc::new(Schema::new(self.fields.clone())),
            key_columns: key_columns.to_vec(),
            data,
            kinds: (0..self.good.len()).filter(keep).map(|i| self.kinds[i]).collect(),
            positions: (0..self.good.len()).filter(keep).map(|i| self.positions[i]).collect(),
            unavailable: self
                .unavailable
                .iter()
                .filter(|(r, _)| self.good[*r])
                .map(|(r, c)| (renumber[*r], *c))
                .collect(),
            offsets: Vec::new(),
        })
    }

    fn data(&mut self) -> Result<RecordBatch, ConnectorError> {
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        let deleted: BooleanArray = self.kinds.iter().map(|k| Some(*k != ChangeKind::Upsert)).collect();
        arrays.push(Arc::new(StringArray::from_iter_values(self.ops.iter().copied())));
        arrays.push(Arc::new(deleted));
        arrays.push(Arc::new(
            TimestampMicrosecondArray::from_iter(self.ts.iter().map(|t| t.and_then(|ms| ms.checked_mul(1000))))
                .with_timezone("UTC"),
        ));
        arrays.push(Arc::new(Int64Array::from(self.lsn.clone())));
        arrays.push(Arc::new(Int32Array::from_iter_values(
            self.positions.iter().map(|p| p.partition),
        )));
        arrays.push(Arc::new(Int64Array::from_iter_values(
            self.positions.iter().map(|p| p.offset),
        )));
        let mut fields = self.fields.clone();
        fields.extend(meta_fields());
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| ConnectorError::Internal(e.to_string()))?;
        if self.good.iter().all(|g| *g) {
            return Ok(batch);
        }
        filter_record_batch(&batch, &BooleanArray::from(self.good.clone()))
            .map_err(|e| ConnectorError::Internal(e.to_string()))
    }
}

/// Builds the [`ChangeBatch`] of one table from its records.
pub struct TableDecoder {
    stream: StreamId,
    /// records still expected (sizes new segments' builders)
    expected: usize,
    key_columns: Vec<String>,
    segments: Vec<Segment>,
    offsets: BTreeMap<i32, i64>,
}

impl TableDecoder {
    /// `stream` names the `txn` app ids the batch's offsets are recorded under.
    pub fn new(stream: StreamId) -> Self {
        Self::with_capacity(stream, 1024)
    }

    /// A decoder expecting about `records` records (its builders do not regrow).
    pub fn with_capacity(stream: StreamId, records: usize) -> Self {
        Self {
            stream,
            expected: records,
            key_columns: Vec::new(),
            segments: Vec::new(),
            offsets: BTreeMap::new(),
        }
    }

    /// Records that the stream moved past `rec` (whatever became of it).
    pub fn advance(&mut self, partition: i32, offset: i64) {
        let next = self.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// Decodes one record. `key` and `value` are the payload plans and bytes after the frame.
    /// On error the record leaves no row in the batch (the caller dead-letters it); the offset
    /// is always advanced.
    pub fn push(
        &mut self,
        position: Position,
        key: Option<(u32, &Plan, &[u8])>,
        value: Option<(u32, Arc<EnvelopePlan>, &[u8])>,
    ) -> Result<(), ConnectorError> {
        self.advance(position.partition, position.offset);
        let Some((value_id, env, value_bytes)) = value else {
            return Ok(()); // tombstone: the delete before it did the work
        };
        if self.segments.last().is_none_or(|s| s.value_id != value_id) {
            let rows = self
                .expected
                .saturating_sub(self.segments.iter().map(Segment::rows).sum());
            self.segments.push(Segment::new(value_id, env, rows.max(16))?);
        }
        let Some(seg) = self.segments.last_mut() else {
            return Err(ConnectorError::NotDebezium("no segment".into()));
        };
        let unavailable_before = seg.unavailable.len();
        match decode_row(seg, &mut self.key_columns, position, key, value_bytes) {
            Ok(Some(row)) => seg.finish_row(row, true),
            Ok(None) => {}
            Err(e) => {
                // a record that failed before its row began leaves nothing to filter out
                if seg.row_started() {
                    seg.abandon_row(unavailable_before, position);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Aligns the segments to one schema and returns the batch (None when no record arrived).
    pub fn finish(self) -> Result<Option<ChangeBatch>, ConnectorError> {
        if self.offsets.is_empty() {
            return Ok(None);
        }
        let offsets: Vec<SourceOffset> = self
            .offsets
            .iter()
            .map(|(p, o)| SourceOffset {
                stream: self.stream.clone(),
                partition: *p,
                next_offset: *o,
            })
            .collect();
        let mut parts = Vec::with_capacity(self.segments.len());
        // a segment of bad rows only (e.g. begun by a dead-lettered record) adds no columns
        for seg in self.segments.into_iter().filter(|s| s.good.contains(&true)) {
            parts.push(seg.into_batch(&self.key_columns)?);
        }
        let incompatible = |e: change::ChangeError| ConnectorError::IncompatibleSchema(e.to_string());
        let batch = ChangeBatch::concat(parts).map_err(incompatible)?;
        let mut batch = batch.unwrap_or_else(|| {
            ChangeBatch::offsets_only(Arc::new(Schema::empty()), self.key_columns.clone(), Vec::new())
        });
        batch.offsets = offsets;
        batch.key_columns = self.key_columns;
        Ok(Some(batch))
    }
}

#[cfg(test)]
#[path = "debezium_tests/mod.rs"]
mod tests;
