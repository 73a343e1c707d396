//! Primary keys as fixed-width 128-bit ids.
//!
//! The index keeps one [`KeyId`] per key instead of the key's bytes: 16 bytes, no heap
//! allocation per key, cheap to hash and compare. Two encodings, chosen per table from the key
//! columns' types:
//! - **exact**: when every key column is a fixed-width integer-like type (integers, dates,
//!   timestamps, decimals) and their widths add up to at most 16 bytes — the common Debezium
//!   keys (`int`, `bigint`, `(bigint, int)`, `uuid`-less composites) — the id IS the key: the
//!   columns' bits concatenated, so two keys share an id only if they are equal;
//! - **hashed**: otherwise (text, uuid strings, wide composites) the id is the 128-bit XXH3 of
//!   the key's Arrow row encoding (which is injective over the key columns' values). Two
//!   different keys collide with probability about n²/2¹²⁹ — for 10¹⁰ keys, 1.5·10⁻¹⁹ —
//!   far below the odds of an undetected memory or disk error, which is the standard content-
//!   addressed stores rely on too.
//!
//! Invariant: the same key value always yields the same id for a given table schema; ids of
//! different encodings never meet (one table, one encoding).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};

use crate::error::{Result, TableError};

/// A primary key, as the index stores it.
pub type KeyId = u128;

/// How one key column maps into an exact id.
#[derive(Clone, Copy, Debug)]
struct FixedColumn {
    /// width in bits
    bits: u32,
}

enum Encoding {
    Exact(Vec<FixedColumn>),
    Hashed(RowConverter),
}

/// Encodes key columns into [`KeyId`]s.
pub struct KeyEncoder {
    columns: Vec<String>,
    encoding: Encoding,
}

/// The width in bytes of a type that fits the exact encoding, if it does.
fn fixed_width(t: &DataType) -> Option<u32> {
    use DataType::*;
    Some(match t {
        Int8 | UInt8 => 1,
        Int16 | UInt16 => 2,
        Int32 | UInt32 | Date32 | Time32(_) => 4,
        Int64 | UInt64 | Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => 8,
        Decimal128(_, _) => 16,
        _ => return None,
    })
}

impl KeyEncoder {
    pub fn new(schema: &SchemaRef, columns: &[String], table: &str) -> Result<Self> {
        if columns.is_empty() {
            return Err(TableError::Schema {
                table: table.to_string(),
                reason: "no primary-key columns; Debezium topics carry the key in the record key".into(),
            });
        }
        let types = columns
            .iter()
            .map(|c| {
                schema
                    .field_with_name(c)
                    .map(|f| f.data_type().clone())
                    .map_err(|_| TableError::Schema {
                        table: table.to_string(),
                        reason: format!("key column {c} is not in the table"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let widths: Option<Vec<u32>> = types.iter().map(fixed_width).collect();
        let encoding = match widths {
            Some(w) if w.iter().sum::<u32>() <= 16 => {
                Encoding::Exact(w.into_iter().map(|b| FixedColumn { bits: b * 8 }).collect())
            }
            _ => Encoding::Hashed(RowConverter::new(types.into_iter().map(SortField::new).collect())?),
        };
        Ok(Self {
            columns: columns.to_vec(),
            encoding,
        })
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether ids are the keys themselves (no collision possible).
    pub fn is_exact(&self) -> bool {
        matches!(self.encoding, Encoding::Exact(_))
    }

    /// The id of every row of `batch` (which must have the key columns).
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<KeyId>> {
        let arrays: Vec<ArrayRef> =
            self.columns
                .iter()
                .map(|c| {
                    // the encoder was built for another schema than the data: a stale index
                    batch.column_by_name(c).cloned().ok_or_else(|| {
                        TableError::Corrupt(format!("key column {c} missing from the rows being indexed"))
                    })
                })
                .collect::<Result<_>>()?;
        match &self.encoding {
            Encoding::Exact(cols) => {
                let mut ids = vec![0u128; batch.num_rows()];
                for (array, col) in arrays.iter().zip(cols) {
                    shift_in(&mut ids, array.as_ref(), col.bits)?;
                }
                Ok(ids)
            }
            Encoding::Hashed(converter) => {
                let rows = converter.convert_columns(&arrays)?;
                Ok(rows
                    .iter()
                    .map(|r| twox_hash::XxHash3_128::oneshot(r.as_ref()))
                    .collect())
            }
        }
    }
}

/// `ids[i] = ids[i] << bits | value[i]` (the value's bits, two's complement, zero-extended).
fn shift_in(ids: &mut [u128], array: &dyn Array, bits: u32) -> Result<()> {
    use arrow::datatypes::*;
    let mask: u128 = if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 };
    macro_rules! each {
        ($t:ty, $conv:expr) => {{
            let values = array.as_primitive::<$t>().values();
            for (id, v) in ids.iter_mut().zip(values.iter()) {
                let v: u128 = $conv(*v);
                *id = id.checked_shl(bits).unwrap_or(0) | (v & mask);
            }
        }};
    }
    match array.data_type() {
        DataType::Int8 => each!(Int8Type, |v: i8| v as u8 as u128),
        DataType::UInt8 => each!(UInt8Type, |v: u8| v as u128),
        DataType::Int16 => each!(Int16Type, |v: i16| v as u16 as u128),
        DataType::UInt16 => each!(UInt16Type, |v: u16| v as u128),
        DataType::Int32 => each!(Int32Type, |v: i32| v as u32 as u128),
        DataType::UInt32 => each!(UInt32Type, |v: u32| v as u128),
        DataType::Date32 => each!(Date32Type, |v: i32| v as u32 as u128),
        DataType::Time32(TimeUnit::Second) => each!(Time32SecondType, |v: i32| v as u32 as u128),
        DataType::Time32(_) => each!(Time32MillisecondType, |v: i32| v as u32 as u128),
        DataType::Int64 => each!(Int64Type, |v: i64| v as u64 as u128),
        DataType::UInt64 => each!(UInt64Type, |v: u64| v as u128),
        DataType::Date64 => each!(Date64Type, |v: i64| v as u64 as u128),
        DataType::Time64(TimeUnit::Nanosecond) => each!(Time64NanosecondType, |v: i64| v as u64 as u128),
        DataType::Time64(_) => each!(Time64MicrosecondType, |v: i64| v as u64 as u128),
        DataType::Timestamp(TimeUnit::Second, _) => each!(TimestampSecondType, |v: i64| v as u64 as u128),
        DataType::Timestamp(TimeUnit::Millisecond, _) => each!(TimestampMillisecondType, |v: i64| v as u64 as u128),
        DataType::Timestamp(TimeUnit::Microsecond, _) => each!(TimestampMicrosecondType, |v: i64| v as u64 as u128),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => each!(TimestampNanosecondType, |v: i64| v as u64 as u128),
        DataType::Duration(TimeUnit::Second) => each!(DurationSecondType, |v: i64| v as u64 as u128),
        DataType::Duration(TimeUnit::Millisecond) => each!(DurationMillisecondType, |v: i64| v as u64 as u128),
        DataType::Duration(TimeUnit::Microsecond) => each!(DurationMicrosecondType, |v: i64| v as u64 as u128),
        DataType::Duration(TimeUnit::Nanosecond) => each!(DurationNanosecondType, |v: i64| v as u64 as u128),
        DataType::Decimal128(_, _) => each!(Decimal128Type, |v: i128| v as u128),
        other => {
            return Err(TableError::Corrupt(format!(
                "key column of type {other} where the index expected a fixed-width key"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(fields: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let schema = Arc::new(Schema::new(
            fields
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        RecordBatch::try_new(schema, fields.into_iter().map(|(_, a)| a).collect()).expect("batch")
    }

    #[test]
    fn composite_integer_keys_are_exact_and_distinct() {
        let b = batch(vec![
            (
                "order_id",
                Arc::new(Int64Array::from(vec![1, 1, 2, -1, 10_000_000_001])) as ArrayRef,
            ),
            ("line_no", Arc::new(Int32Array::from(vec![1, 2, 1, 1, -5])) as ArrayRef),
        ]);
        let enc = KeyEncoder::new(&b.schema(), &["order_id".into(), "line_no".into()], "t").expect("encoder");
        assert!(enc.is_exact());
        let ids = enc.encode(&b).expect("ids");
        let distinct: HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 5);
        // (1, 2) and (2, 1) differ; so do the same pairs swapped into other columns
        assert_ne!(ids[1], ids[2]);
        // stable across batches
        assert_eq!(enc.encode(&b.slice(1, 1)).expect("ids")[0], ids[1]);
    }

    #[test]
    fn text_keys_are_hashed_and_stable() {
        let b = batch(vec![(
            "email",
            Arc::new(StringArray::from(vec!["a@x", "b@x", "", "a@x"])) as ArrayRef,
        )]);
        let enc = KeyEncoder::new(&b.schema(), &["email".into()], "t").expect("encoder");
        assert!(!enc.is_exact());
        let ids = enc.encode(&b).expect("ids");
        assert_eq!(ids[0], ids[3]);
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
    }

    #[test]
    fn a_missing_key_column_is_a_schema_error() {
        let b = batch(vec![("id", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]);
        assert!(KeyEncoder::new(&b.schema(), &["nope".into()], "t").is_err());
        assert!(KeyEncoder::new(&b.schema(), &[], "t").is_err());
    }
}
