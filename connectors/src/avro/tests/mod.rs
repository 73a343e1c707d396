//! Avro → Arrow decoding, one test per Debezium / Kafka Connect logical type (DESIGN.md, "Type
//! mapping"), plus corrupt input.
//!
//! Datums are written with `apache_avro` from schema JSON that carries the annotations exactly as
//! Debezium + Confluent's `AvroConverter` write them (`connect.name`, `connect.version`,
//! `connect.parameters`, `connect.type`, `logicalType`), then read back with [`Plan`] +
//! [`Column`].

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Decimal, Schema};
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, ListArray, StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use serde_json::Value as Json;

use super::plan::{BytesKind, IntKind, LongKind, Plan, StrKind};
use super::{Column, Reader, UNAVAILABLE};
use crate::error::ConnectorError;

// ---------------------------------------------------------------------------------------------
// helpers

/// Writes one datum of `schema` (JSON text) with `apache_avro`, validating it against the schema.
fn encode(schema: &str, value: Value) -> Vec<u8> {
    let schema = Schema::parse_str(schema).unwrap_or_else(|e| panic!("apache_avro rejects {schema}: {e}"));
    GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("apache_avro encodes the value")
}

/// Decodes `datums` (each a whole datum) into one column; every datum must be consumed exactly.
fn decode_datums(schema: &str, datums: &[Vec<u8>]) -> (DataType, ArrayRef, Vec<bool>) {
    let plan = Plan::parse(schema).expect("plan");
    let ty = plan.arrow_type().expect("arrow type");
    let mut col = Column::new(&ty).expect("column");
    let mut flags = Vec::new();
    for d in datums {
        let mut r = Reader::new(d);
        flags.push(col.append(&plan, &mut r).expect("decodes"));
        assert_eq!(r.remaining(), 0, "datum not fully consumed");
    }
    assert_eq!(col.len(), datums.len());
    let array = col.finish();
    assert_eq!(array.data_type(), &ty, "finished array has the plan's type");
    assert_eq!(array.len(), datums.len());
    (ty, array, flags)
}

/// Encodes `values` with apache_avro and decodes them back: (Arrow type, array).
fn roundtrip(schema: &str, values: Vec<Value>) -> (DataType, ArrayRef) {
    let datums: Vec<Vec<u8>> = values.into_iter().map(|v| encode(schema, v)).collect();
    let (ty, array, flags) = decode_datums(schema, &datums);
    assert!(flags.iter().all(|f| !f), "no placeholder expected");
    (ty, array)
}

/// Decodes one datum and returns the error it must produce.
fn decode_err(schema: &str, datum: &[u8]) -> ConnectorError {
    let plan = Plan::parse(schema).expect("plan");
    let mut col = Column::new(&plan.arrow_type().expect("arrow type")).expect("column");
    let err = col
        .append(&plan, &mut Reader::new(datum))
        .expect_err("corrupt datum must not decode");
    // skipping the same bytes fails too (or at least never panics)
    let _ = Reader::new(datum).skip(&plan);
    err
}

fn assert_corrupt(schema: &str, datum: &[u8]) {
    match decode_err(schema, datum) {
        ConnectorError::CorruptAvro(msg) => assert!(!msg.is_empty()),
        other => panic!("expected CorruptAvro, got {other:?}"),
    }
}

/// Avro zig-zag varint of `v`.
fn varint(v: i64) -> Vec<u8> {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Shortest two's-complement big-endian bytes of `v` (what Java's `BigInteger.toByteArray` gives).
fn twos(v: i128) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (cur, next) = (b[start], b[start + 1]);
        if (cur == 0 && next & 0x80 == 0) || (cur == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    b[start..].to_vec()
}

/// Two's-complement big-endian bytes of an arbitrarily long decimal integer (`-` allowed), for
/// values beyond i128. Independent of the decoder's own arithmetic.
fn big_twos(text: &str) -> Vec<u8> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    // magnitude, big-endian base 256
    let mut mag: Vec<u8> = vec![0];
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut().rev() {
            let cur = u32::from(*byte) * 10 + carry;
            *byte = (cur & 0xff) as u8;
            carry = cur >> 8;
        }
        while carry > 0 {
            mag.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    // room for the sign bit
    if mag[0] & 0x80 != 0 {
        mag.insert(0, 0);
    }
    if negative {
        for byte in mag.iter_mut() {
            *byte = !*byte;
        }
        for byte in mag.iter_mut().rev() {
            let (r, carry) = byte.overflowing_add(1);
            *byte = r;
            if !carry {
                break;
            }
        }
    }
    mag
}

fn union(index: u32, v: Value) -> Value {
    Value::Union(index, Box::new(v))
}

mod complex;
mod scalar;
