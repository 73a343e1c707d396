//! Avro binary decoding straight into Arrow column builders.
//!
//! [`Reader`] walks one datum; [`Column`] is a growable Arrow column whose type comes from a
//! [`Plan`]. Decoding never panics on input: every read is bounds-checked and every length and
//! count is validated, so corrupt bytes become a [`ConnectorError::CorruptAvro`].
//!
//! Invariant: after a successful `Column::append` or `append_null` the column grew by exactly
//! one slot; on error the caller discards the whole segment being built (see `debezium`).

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, NullArray, StringBuilder,
    StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields};

use super::plan::{BytesKind, IntKind, LongKind, Plan, Record, StrKind};
use crate::error::ConnectorError;

/// Debezium's stand-in for unchanged TOASTed values it did not receive.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

fn corrupt(what: impl Into<String>) -> ConnectorError {
    ConnectorError::CorruptAvro(what.into())
}

/// A cursor over one Avro binary datum.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ConnectorError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| corrupt(format!("datum ends early: need {n} bytes at byte {}", self.pos)))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A zig-zag varint. Lengths, union branches, ints and longs are all read here, most of
    /// them one byte long, so that case returns first and the rest index the slice directly
    /// (per-byte bounds-checked reads showed in `perf` of the decoder).
    pub fn long(&mut self) -> Result<i64, ConnectorError> {
        let zigzag = |v: u64| (v >> 1) as i64 ^ -((v & 1) as i64);
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        if let Some(&byte) = rest.first()
            && byte & 0x80 == 0
        {
            self.pos += 1;
            return Ok(zigzag(u64::from(byte)));
        }
        let mut value: u64 = 0;
        for (i, &byte) in rest.iter().take(10).enumerate() {
            if i == 9 && byte > 1 {
                return Err(corrupt("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(zigzag(value));
            }
        }
        if rest.len() < 10 {
            return Err(corrupt(format!(
                "datum ends early: a varint at byte {} runs past the end",
                self.pos
            )));
        }
        Err(corrupt("varint longer than 10 bytes"))
    }

    pub fn int(&mut self) -> Result<i32, ConnectorError> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| corrupt(format!("int out of range: {v}")))
    }

    fn len(&mut self) -> Result<usize, ConnectorError> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| corrupt(format!("negative length {n}")))?;
        if n > self.remaining() {
            return Err(corrupt(format!(
                "length {n} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], ConnectorError> {
        let n = self.len()?;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<&'a str, ConnectorError> {
        std::str::from_utf8(self.bytes()?).map_err(|e| corrupt(format!("invalid UTF-8 string: {e}")))
    }

    pub fn boolean(&mut self) -> Result<bool, ConnectorError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(corrupt(format!("invalid boolean byte {b}"))),
        }
    }

    pub fn float(&mut self) -> Result<f32, ConnectorError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn double(&mut self) -> Result<f64, ConnectorError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// Reads an array/map block header: item count, or `None` at the end marker.
    fn block(&mut self) -> Result<Option<usize>, ConnectorError> {
        let n = self.long()?;
        if n == 0 {
            return Ok(None);
        }
        if n < 0 {
            self.long()?; // byte size of the block, only useful for skipping
        }
        let n = n.unsigned_abs() as usize;
        // Every item takes at least one byte except nulls; bound the count by what is left so
        // a corrupt count cannot make us loop for ever.
        if n > self.remaining().max(1) * 8 {
            return Err(corrupt(format!("block count {n} is larger than the datum")));
        }
        Ok(Some(n))
    }

    pub fn union_index(&mut self, branches: usize) -> Result<usize, ConnectorError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < branches)
            .ok_or_else(|| corrupt(format!("union branch {i} out of range (0..{branches})")))
    }

    /// Reads the union branch of an optional (`Nullable`) datum: whether a value follows. A
    /// datum of any other plan always has one, and nothing is read.
    pub fn present(&mut self, plan: &Plan) -> Result<bool, ConnectorError> {
        match plan {
            Plan::Nullable { null_index, .. } => Ok(self.union_index(2)? as u64 != *null_index),
            _ => Ok(true),
        }
    }

    /// Skips one datum of the record `rec`.
    pub fn skip_record(&mut self, rec: &Record) -> Result<(), ConnectorError> {
        for f in &rec.fields {
            self.skip(&f.plan)?;
        }
        Ok(())
    }

    /// Skips one datum of `plan`.
    pub fn skip(&mut self, plan: &Plan) -> Result<(), ConnectorError> {
        match plan {
            Plan::Null => {}
            Plan::Boolean => {
                self.boolean()?;
            }
            Plan::Int(_) | Plan::Long(_) | Plan::Enum(_) => {
                self.long()?;
            }
            Plan::Float => {
                self.take(4)?;
            }
            Plan::Double => {
                self.take(8)?;
            }
            Plan::Bytes(_) | Plan::String(_) => {
                self.bytes()?;
            }
            Plan::Fixed(n, _) => {
                self.take(*n)?;
            }
            Plan::VariableScaleDecimal => {
                self.long()?;
                self.bytes()?;
            }
            Plan::Record(r) => self.skip_record(r)?,
            Plan::Array(item) => {
                while let Some(n) = self.block()? {
                    for _ in 0..n {
                        self.skip(item)?;
                    }
                }
            }
            Plan::Map(value) => {
                while let Some(n) = self.block()? {
                    for _ in 0..n {
                        self.bytes()?;
                        self.skip(value)?;
                    }
                }
            }
            Plan::Nullable { inner, .. } => {
                if self.present(plan)? {
                    self.skip(inner)?;
                }
            }
            Plan::Union(branches) => {
                let i = self.union_index(branches.len())?;
                self.skip(&branches[i])?;
            }
        }
        Ok(())
    }
}

/// Two's-complement big-endian bytes → i128.
fn decimal_i128(b: &[u8]) -> Result<i128, ConnectorError> {
    if b.len() > 16 {
        return Err(corrupt(format!("decimal of {} bytes does not fit 128 bits", b.len())));
    }
    if b.is_empty() {
        return Ok(0);
    }
    let fill = if b[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut a = [fill; 16];
    a[16 - b.len()..].copy_from_slice(b);
    Ok(i128::from_be_bytes(a))
}

/// Largest |scale| a decimal may carry (PostgreSQL `numeric` has at most 16383 fraction digits
/// and 131072 integer digits); a bigger scale is corrupt and would make the text absurdly long.
const MAX_DECIMAL_SCALE: u32 = 1 << 20;

/// [`decimal_text`] with the scale checked first.
fn exact_decimal(b: &[u8], scale: i32) -> Result<String, ConnectorError> {
    if scale.unsigned_abs() > MAX_DECIMAL_SCALE {
        return Err(corrupt(format!("decimal scale {scale} out of range")));
    }
    Ok(decimal_text(b, scale))
}

/// Exact text of an unscaled two's-complement big-endian integer with `scale`.
pub fn decimal_text(b: &[u8], scale: i32) -> String {
    // Arbitrary width: long division of the magnitude by 10, so 70-digit numerics stay exact.
    let negative = b.first().is_some_and(|x| x & 0x80 != 0);
    let mut mag: Vec<u8> = if negative {
        // two's complement negate
        let mut v: Vec<u8> = b.iter().map(|x| !x).collect();
        for byte in v.iter_mut().rev() {
            let (r, carry) = byte.overflowing_add(1);
            *byte = r;
            if !carry {
                break;
            }
        }
        v
    } else {
        b.to_vec()
    };
    let mut digits = Vec::new();
    while mag.iter().any(|x| *x != 0) {
        let mut rem = 0u32;
        for byte in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*byte);
            *byte = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    } else if scale < 0 {
        // value = unscaled × 10^-scale (digits are least significant first here)
        digits.splice(0..0, std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
    }
    let scale = scale.max(0) as usize;
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let mut s = String::with_capacity(digits.len() + 2);
    if negative {
        s.push('-');
    }
    let int_len = digits.len() - scale;
    s.push_str(std::str::from_utf8(&digits[..int_len]).unwrap_or("0"));
    if scale > 0 {
        s.push('.');
        s.push_str(std::str::from_utf8(&digits[int_len..]).unwrap_or("0"));
    }
    s
}

/// Parses Debezium's ZonedTimestamp text (RFC 3339) into µs since the epoch, UTC.
///
/// PostgreSQL's `infinity` / `-infinity` arrive as those words; they become i64::MAX / i64::MIN
/// µs, the values Debezium itself sends for infinite `timestamp` (MicroTimestamp) columns.
pub fn zoned_micros(s: &str) -> Result<i64, ConnectorError> {
    match s {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| corrupt(format!("bad ZonedTimestamp {s:?}: {e}")))?;
    Ok(t.timestamp_micros())
}

/// A growable Arrow column of one [`Plan`]'s type.
pub enum Column {
    Null(usize),
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Dec(Decimal128Builder),
    Utf8(StringBuilder),
    Bin(BinaryBuilder),
    List {
        item: Field,
        offsets: Vec<i32>,
        valid: Vec<bool>,
        child: Box<Column>,
    },
    Struct {
        fields: Fields,
        valid: Vec<bool>,
        children: Vec<Column>,
    },
}

impl Column {
    /// An empty column for values of `ty` (from [`Plan::arrow_type`]).
    pub fn new(ty: &DataType) -> Result<Column, ConnectorError> {
        Self::with_capacity(ty, 1024)
    }

    /// An empty column with room for `rows` values (no reallocation while a batch fills it).
    pub fn with_capacity(ty: &DataType, rows: usize) -> Result<Column, ConnectorError> {
        Ok(match ty {
            DataType::Null => Column::Null(0),
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Int8 => Column::I8(Int8Builder::with_capacity(rows)),
            DataType::Int16 => Column::I16(Int16Builder::with_capacity(rows)),
            DataType::Int32 => Column::I32(Int32Builder::with_capacity(rows)),
            DataType::Int64 => Column::I64(Int64Builder::with_capacity(rows)),
            DataType::Float32 => Column::F32(Float32Builder::with_capacity(rows)),
            DataType::Float64 => Column::F64(Float64Builder::with_capacity(rows)),
            DataType::Date32 => Column::Date(Date32Builder::with_capacity(rows)),
            DataType::Timestamp(_, tz) => {
                Column::Ts(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone_opt(tz.clone()))
            }
            DataType::Decimal128(p, s) => Column::Dec(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| ConnectorError::UnsupportedType(e.to_string()))?,
            ),
            // 48 bytes a value: a guess that saves most regrowth of text columns (emails, ids,
            // JSON) for a few MB of slack per batch
            DataType::Utf8 => Column::Utf8(StringBuilder::with_capacity(rows, rows * 48)),
            DataType::Binary => Column::Bin(BinaryBuilder::with_capacity(rows, rows * 48)),
            DataType::List(item) => Column::List {
                item: item.as_ref().clone(),
                offsets: vec![0],
                valid: Vec::new(),
                child: Box::new(Column::new(item.data_type())?),
            },
            DataType::Struct(fields) => Column::Struct {
                fields: fields.clone(),
                valid: Vec::new(),
                children: fields
                    .iter()
                    .map(|f| Column::new(f.data_type()))
                    .collect::<Result<_, _>>()?,
            },
            other => return Err(ConnectorError::UnsupportedType(other.to_string())),
        })
    }

    /// Appends a null. After a failed [`Column::append`] this also closes the entry the failure
    /// left half-built (values already in some struct fields or list items): they end up under
    /// this null, and the column is consistent again.
    pub fn append_null(&mut self) {
        match self {
            Column::Null(n) => *n += 1,
            Column::Bool(b) => b.append_null(),
            Column::I8(b) => b.append_null(),
            Column::I16(b) => b.append_null(),
            Column::I32(b) => b.append_null(),
            Column::I64(b) => b.append_null(),
            Column::F32(b) => b.append_null(),
            Column::F64(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Ts(b) => b.append_null(),
            Column::Dec(b) => b.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::Bin(b) => b.append_null(),
            Column::List {
                offsets, valid, child, ..
            } => {
                child.settle();
                // items a failed append left in the child fall inside this null entry
                offsets.push(i32::try_from(child.len()).unwrap_or(i32::MAX));
                valid.push(false);
            }
            Column::Struct { valid, children, .. } => {
                valid.push(false);
                let n = valid.len();
                for c in children.iter_mut() {
                    c.settle();
                    while c.len() < n {
                        c.append_null();
                    }
                }
            }
        }
    }

    /// Closes an entry a failed append left half-built as a null; no-op on a consistent column.
    fn settle(&mut self) {
        match self {
            Column::List {
                offsets, valid, child, ..
            } => {
                child.settle();
                let end = i32::try_from(child.len()).unwrap_or(i32::MAX);
                if offsets.last().is_some_and(|last| *last < end) {
                    offsets.push(end);
                    valid.push(false);
                }
            }
            Column::Struct { valid, children, .. } => {
                children.iter_mut().for_each(Column::settle);
                if children.iter().any(|c| c.len() > valid.len()) {
                    valid.push(false);
                    let n = valid.len();
                    for c in children.iter_mut() {
                        while c.len() < n {
                            c.append_null();
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Decodes one datum of `plan` from `r` and appends it. Returns `true` when the datum was
    /// Debezium's unavailable-value placeholder, in which case a null was appended instead.
    pub fn append(&mut self, plan: &Plan, r: &mut Reader<'_>) -> Result<bool, ConnectorError> {
        match (plan, &mut *self) {
            (Plan::Nullable { inner, .. }, col) => {
                if r.present(plan)? {
                    col.append(inner, r)
                } else {
                    col.append_null();
                    Ok(false)
                }
            }
            (Plan::Null, col) => {
                col.append_null();
                Ok(false)
            }
            (Plan::Boolean, Column::Bool(b)) => {
                b.append_value(r.boolean()?);
                Ok(false)
            }
            (Plan::Int(k), col) => {
                let v = r.int()?;
                match (k, col) {
                    (IntKind::Int8, Column::I8(b)) => {
                        b.append_value(i8::try_from(v).map_err(|_| corrupt(format!("int8 out of range: {v}")))?)
                    }
                    (IntKind::Int16, Column::I16(b)) => {
                        b.append_value(i16::try_from(v).map_err(|_| corrupt(format!("int16 out of range: {v}")))?)
                    }
                    (IntKind::Int32, Column::I32(b)) => b.append_value(v),
                    (IntKind::Date, Column::Date(b)) => b.append_value(v),
                    (IntKind::TimeMillis, Column::I64(b)) => b.append_value(i64::from(v) * 1000),
                    _ => return Err(mismatch(plan)),
                }
                Ok(false)
            }
            (Plan::Long(k), col) => {
                let v = r.long()?;
                let overflow = || corrupt(format!("time value {v} out of range"));
                let micros = match k {
                    LongKind::Int64 | LongKind::Micros | LongKind::TimestampMicros => v,
                    LongKind::TimestampMillis | LongKind::ConnectTimestampMillis => {
                        v.checked_mul(1000).ok_or_else(overflow)?
                    }
                    LongKind::TimestampNanos | LongKind::NanosToMicros => v.div_euclid(1000),
                };
                match col {
                    Column::I64(b) => b.append_value(micros),
                    Column::Ts(b) => b.append_value(micros),
                    _ => return Err(mismatch(plan)),
                }
                Ok(false)
            }
            (Plan::Float, Column::F32(b)) => {
                b.append_value(r.float()?);
                Ok(false)
            }
            (Plan::Double, Column::F64(b)) => {
                b.append_value(r.double()?);
                Ok(false)
            }
            (Plan::Bytes(k), col) => {
                let bytes = r.bytes()?;
                append_bytes(*k, bytes, col, plan)
            }
            (Plan::Fixed(n, k), col) => {
                let bytes = r.take(*n)?;
                append_bytes(*k, bytes, col, plan)
            }
            (Plan::String(k), col) => {
                let s = r.str()?;
                if s == UNAVAILABLE {
                    col.append_null();
                    return Ok(true);
                }
                match (k, col) {
                    (StrKind::Utf8, Column::Utf8(b)) => b.append_value(s),
                    (StrKind::ZonedTimestamp, Column::Ts(b)) => b.append_value(zoned_micros(s)?),
                    _ => return Err(mismatch(plan)),
                }
                Ok(false)
            }
            (Plan::Enum(symbols), Column::Utf8(b)) => {
                let i = r.long()?;
                let s = usize::try_from(i)
                    .ok()
                    .and_then(|i| symbols.get(i))
                    .ok_or_else(|| corrupt(format!("enum index {i} out of range")))?;
                b.append_value(s);
                Ok(false)
            }
            (Plan::VariableScaleDecimal, Column::Utf8(b)) => {
                let scale = r.int()?;
                let bytes = r.bytes()?;
                b.append_value(exact_decimal(bytes, scale)?);
                Ok(false)
            }
            (Plan::Record(rec), Column::Struct { valid, children, .. }) => {
                if rec.fields.len() != children.len() {
                    return Err(mismatch(plan));
                }
                for (f, c) in rec.fields.iter().zip(children.iter_mut()) {
                    c.append(&f.plan, r)?;
                }
                valid.push(true);
                Ok(false)
            }
            (
                Plan::Array(item_plan),
                Column::List {
                    offsets, valid, child, ..
                },
            ) => {
                let mut len = offsets.last().copied().unwrap_or(0);
                let mut unavailable = false;
                while let Some(n) = r.block()? {
                    for _ in 0..n {
                        unavailable |= child.append(item_plan, r)?;
                        len = len.checked_add(1).ok_or_else(|| corrupt("list too long"))?;
                    }
                }
                offsets.push(len);
                valid.push(true);
                Ok(unavailable)
            }
            (Plan::Union(branches), col) => {
                let i = r.union_index(branches.len())?;
                col.append(&branches[i], r)
            }
            _ => Err(mismatch(plan)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Column::Null(n) => *n,
            Column::Bool(b) => b.len(),
            Column::I8(b) => b.len(),
            Column::I16(b) => b.len(),
            Column::I32(b) => b.len(),
            Column::I64(b) => b.len(),
            Column::F32(b) => b.len(),
            Column::F64(b) => b.len(),
            Column::Date(b) => b.len(),
            Column::Ts(b) => b.len(),
            Column::Dec(b) => b.len(),
            Column::Utf8(b) => b.len(),
            Column::Bin(b) => b.len(),
            Column::List { valid, .. } | Column::Struct { valid, .. } => valid.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Null(n) => Arc::new(NullArray::new(std::mem::take(n))),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::I8(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Ts(b) => Arc::new(b.finish()),
            Column::Dec(b) => Arc::new(b.finish()),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Bin(b) => Arc::new(b.finish()),
            Column::List {
                item,
                offsets,
                valid,
                child,
            } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(ListArray::new(
                    Arc::new(item.clone()),
                    offsets,
                    child.finish(),
                    Some(nulls),
                ))
            }
            Column::Struct {
                fields,
                valid,
                children,
            } => {
                let arrays: Vec<ArrayRef> = children.iter_mut().map(Column::finish).collect();
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(StructArray::new(fields.clone(), arrays, Some(nulls)))
            }
        }
    }
}

fn mismatch(plan: &Plan) -> ConnectorError {
    ConnectorError::Internal(format!("column builder does not match plan {plan:?}"))
}

fn append_bytes(kind: BytesKind, bytes: &[u8], col: &mut Column, plan: &Plan) -> Result<bool, ConnectorError> {
    if bytes == UNAVAILABLE.as_bytes() {
        col.append_null();
        return Ok(true);
    }
    match (kind, col) {
        (BytesKind::Binary, Column::Bin(b)) => b.append_value(bytes),
        (BytesKind::Decimal { .. }, Column::Dec(b)) => b.append_value(decimal_i128(bytes)?),
        (BytesKind::DecimalText { scale }, Column::Utf8(b)) => b.append_value(exact_decimal(bytes, scale)?),
        _ => return Err(mismatch(plan)),
    }
    Ok(false)
}
