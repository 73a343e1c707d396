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

// ---------------------------------------------------------------------------------------------
// integers

#[test]
fn int16_from_connect_type() {
    let schema = r#"{"type":"int","connect.type":"int16"}"#;
    assert!(matches!(Plan::parse(schema).unwrap(), Plan::Int(IntKind::Int16)));
    let (ty, a) = roundtrip(
        schema,
        vec![Value::Int(-32768), Value::Int(0), Value::Int(32767), Value::Int(-7)],
    );
    assert_eq!(ty, DataType::Int16);
    let a = a.as_any().downcast_ref::<Int16Array>().unwrap();
    assert_eq!(a.values().to_vec(), vec![-32768, 0, 32767, -7]);
    // a value outside int16 is not silently wrapped
    assert_corrupt(schema, &encode(schema, Value::Int(40_000)));
    assert_corrupt(schema, &encode(schema, Value::Int(-32769)));
}

#[test]
fn int8_from_connect_type() {
    let schema = r#"{"type":"int","connect.type":"int8"}"#;
    let (ty, a) = roundtrip(schema, vec![Value::Int(-128), Value::Int(127)]);
    assert_eq!(ty, DataType::Int8);
    assert_eq!(
        a.as_primitive::<arrow::datatypes::Int8Type>().values().to_vec(),
        vec![-128, 127]
    );
    assert_corrupt(schema, &encode(schema, Value::Int(128)));
}

#[test]
fn int32_plain() {
    let schema = r#""int""#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::Int(i32::MIN),
            Value::Int(-1),
            Value::Int(0),
            Value::Int(i32::MAX),
        ],
    );
    assert_eq!(ty, DataType::Int32);
    let a = a.as_any().downcast_ref::<Int32Array>().unwrap();
    assert_eq!(a.values().to_vec(), vec![i32::MIN, -1, 0, i32::MAX]);
    // an `int` whose varint holds a value beyond i32 is corrupt
    assert_corrupt(schema, &varint(i64::from(i32::MAX) + 1));
}

#[test]
fn int64_plain() {
    let schema = r#""long""#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::Long(i64::MIN),
            Value::Long(-1),
            Value::Long(10_000_000_001),
            Value::Long(i64::MAX),
        ],
    );
    assert_eq!(ty, DataType::Int64);
    let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(a.values().to_vec(), vec![i64::MIN, -1, 10_000_000_001, i64::MAX]);
}

#[test]
fn boolean_plain_and_with_connect_default() {
    let schema = r#"{"type":"boolean","connect.default":true}"#;
    let (ty, a) = roundtrip(schema, vec![Value::Boolean(true), Value::Boolean(false)]);
    assert_eq!(ty, DataType::Boolean);
    let a = a.as_any().downcast_ref::<BooleanArray>().unwrap();
    assert!(a.value(0));
    assert!(!a.value(1));
    assert_corrupt(schema, &[2]);
}

// ---------------------------------------------------------------------------------------------
// floating point

#[test]
fn float_keeps_nan_and_infinities() {
    let schema = r#""float""#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::Float(f32::NAN),
            Value::Float(f32::INFINITY),
            Value::Float(f32::NEG_INFINITY),
            Value::Float(-0.0),
            Value::Float(1.5),
            Value::Float(f32::MIN_POSITIVE),
        ],
    );
    assert_eq!(ty, DataType::Float32);
    let a = a.as_any().downcast_ref::<Float32Array>().unwrap();
    assert!(a.value(0).is_nan());
    assert_eq!(a.value(1), f32::INFINITY);
    assert_eq!(a.value(2), f32::NEG_INFINITY);
    assert!(a.value(3) == 0.0 && a.value(3).is_sign_negative());
    assert_eq!(a.value(4), 1.5);
    assert_eq!(a.value(5), f32::MIN_POSITIVE);
    assert_eq!(a.null_count(), 0, "NaN is a value, not a null");
}

#[test]
fn double_keeps_nan_and_infinities() {
    let schema = r#"["null","double"]"#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            union(1, Value::Double(f64::NAN)),
            union(1, Value::Double(f64::INFINITY)),
            union(1, Value::Double(f64::NEG_INFINITY)),
            union(0, Value::Null),
            union(1, Value::Double(220.123_456_789_012_34)),
        ],
    );
    assert_eq!(ty, DataType::Float64);
    let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(a.value(0).is_nan());
    assert_eq!(a.value(1), f64::INFINITY);
    assert_eq!(a.value(2), f64::NEG_INFINITY);
    assert!(a.is_null(3));
    assert_eq!(a.value(4), 220.123_456_789_012_34);
    assert_eq!(a.null_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// text and bytes

#[test]
fn string_plain() {
    let schema = r#""string""#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::String(String::new()),
            Value::String("Raúl 王".into()),
            Value::String("quote \" in \\ text\n".into()),
        ],
    );
    assert_eq!(ty, DataType::Utf8);
    let a = a.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(a.value(0), "");
    assert!(a.is_valid(0), "empty string is not null");
    assert_eq!(a.value(1), "Raúl 王");
    assert_eq!(a.value(2), "quote \" in \\ text\n");
}

#[test]
fn bytes_plain() {
    let schema = r#""bytes""#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::Bytes(vec![]),
            Value::Bytes(vec![0, 255, 128, 1]),
            Value::Bytes(b"\\x00".to_vec()),
        ],
    );
    assert_eq!(ty, DataType::Binary);
    let a = a.as_any().downcast_ref::<BinaryArray>().unwrap();
    assert_eq!(a.value(0), b"");
    assert!(a.is_valid(0));
    assert_eq!(a.value(1), &[0, 255, 128, 1]);
    assert_eq!(a.value(2), b"\\x00");
}

#[test]
fn debezium_json_uuid_enum_strings_are_utf8() {
    for (schema, text) in [
        (
            r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.data.Json"}"#,
            r#"{"tags": ["x y", "ü"], "prefs": {"lang": "de"}}"#,
        ),
        (
            r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.data.Uuid"}"#,
            "4285a3e8-2671-43ee-aacc-5fa209ae3ad4",
        ),
        (
            r#"{"type":"string","connect.version":1,"connect.parameters":{"allowed":"small,medium,large"},"connect.name":"io.debezium.data.Enum"}"#,
            "medium",
        ),
        (
            r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTime"}"#,
            "12:34:56.789Z",
        ),
    ] {
        assert!(
            matches!(Plan::parse(schema).unwrap(), Plan::String(StrKind::Utf8)),
            "{schema}"
        );
        let (ty, a) = roundtrip(schema, vec![Value::String(text.into())]);
        assert_eq!(ty, DataType::Utf8, "{schema}");
        assert_eq!(a.as_string::<i32>().value(0), text);
    }
}

#[test]
fn zoned_time_is_text() {
    let schema = r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTime"}"#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::String("23:59:59.999999+05:30".into()),
            Value::String("00:00:00Z".into()),
        ],
    );
    assert_eq!(ty, DataType::Utf8);
    let a = a.as_string::<i32>();
    assert_eq!(a.value(0), "23:59:59.999999+05:30");
    assert_eq!(a.value(1), "00:00:00Z");
}

// ---------------------------------------------------------------------------------------------
// decimals

/// `numeric(10,2)` exactly as Debezium + AvroConverter write it (customers.balance).
const BALANCE: &str = r#"{"type":"bytes","scale":2,"precision":10,"connect.version":1,"connect.parameters":{"scale":"2","connect.decimal.precision":"10"},"connect.default":"\u0000","connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}"#;

fn dec(bytes: Vec<u8>) -> Value {
    Value::Decimal(Decimal::from(bytes))
}

#[test]
fn decimal_up_to_38_digits_is_decimal128() {
    assert!(matches!(
        Plan::parse(BALANCE).unwrap(),
        Plan::Bytes(BytesKind::Decimal {
            precision: 10,
            scale: 2
        })
    ));
    let mut datums: Vec<Vec<u8>> = [
        twos(12_345),
        twos(-12_345),
        twos(-1),
        vec![0], // the Debezium "\u0000" default: one zero byte
        twos(9_999_999_999),
        twos(-9_999_999_999),
        twos(128),  // needs a leading 0x00 sign byte
        twos(-128), // a single 0x80 byte
    ]
    .into_iter()
    .map(|b| encode(BALANCE, dec(b)))
    .collect();
    // zero bytes (apache_avro cannot write them; other writers can): also zero
    datums.insert(4, varint(0));
    let (ty, a, _) = decode_datums(BALANCE, &datums);
    assert_eq!(ty, DataType::Decimal128(10, 2));
    let a = a.as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!(
        a.values().to_vec(),
        vec![12_345, -12_345, -1, 0, 0, 9_999_999_999, -9_999_999_999, 128, -128]
    );
    let text: Vec<String> = (0..a.len()).map(|i| a.value_as_string(i)).collect();
    assert_eq!(
        text,
        vec![
            "123.45",
            "-123.45",
            "-0.01",
            "0.00",
            "0.00",
            "99999999.99",
            "-99999999.99",
            "1.28",
            "-1.28"
        ]
    );
}

#[test]
fn decimal_debezium_default_is_kept_in_plan() {
    // The field default "\u0000" (one zero byte = 0.00) parses and is kept for schema evolution.
    let schema = format!(
        r#"{{"type":"record","name":"Value","namespace":"dbz.public.customers","fields":[{{"name":"balance","type":{BALANCE},"default":"\u0000"}}]}}"#
    );
    let plan = Plan::parse(&schema).unwrap();
    let Plan::Record(rec) = plan else { panic!("record") };
    assert_eq!(rec.fields[0].default, Some(Json::String("\u{0}".into())));
    assert!(matches!(
        rec.fields[0].plan,
        Plan::Bytes(BytesKind::Decimal {
            precision: 10,
            scale: 2
        })
    ));
}

#[test]
fn decimal_precision_38_boundary() {
    let schema = r#"{"type":"bytes","scale":0,"precision":38,"connect.version":1,"connect.parameters":{"scale":"0","connect.decimal.precision":"38"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}"#;
    let max = 10_i128.pow(38) - 1;
    let (ty, a) = roundtrip(schema, vec![dec(twos(max)), dec(twos(-max))]);
    assert_eq!(ty, DataType::Decimal128(38, 0));
    let a = a.as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!(a.value(0), max);
    assert_eq!(a.value(1), -max);
}

#[test]
fn decimal_from_connect_parameters_only() {
    // No Avro `precision`/`scale` keys: the Connect parameters decide.
    let schema = r#"{"type":"bytes","connect.version":1,"connect.parameters":{"scale":"4","connect.decimal.precision":"12"},"connect.name":"org.apache.kafka.connect.data.Decimal"}"#;
    let (ty, a) = roundtrip(schema, vec![Value::Bytes(twos(-1_234_567))]);
    assert_eq!(ty, DataType::Decimal128(12, 4));
    assert_eq!(
        a.as_any().downcast_ref::<Decimal128Array>().unwrap().value_as_string(0),
        "-123.4567"
    );
}

/// 70 significant digits, as PostgreSQL `numeric` can carry.
const SEVENTY: &str = "1234567890123456789012345678901234567890123456789012345678901234567890";

#[test]
fn decimal_over_38_digits_is_exact_text() {
    let schema = r#"{"type":"bytes","scale":10,"precision":70,"connect.version":1,"connect.parameters":{"scale":"10","connect.decimal.precision":"70"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}"#;
    assert!(matches!(
        Plan::parse(schema).unwrap(),
        Plan::Bytes(BytesKind::DecimalText { scale: 10 })
    ));
    let neg = format!("-{SEVENTY}");
    let (ty, a) = roundtrip(
        schema,
        vec![
            dec(big_twos(SEVENTY)),
            dec(big_twos(&neg)),
            dec(vec![0]),
            dec(twos(-1)),
            dec(twos(5)),
        ],
    );
    assert_eq!(ty, DataType::Utf8);
    let a = a.as_string::<i32>();
    assert_eq!(
        a.value(0),
        "123456789012345678901234567890123456789012345678901234567890.1234567890"
    );
    assert_eq!(
        a.value(1),
        "-123456789012345678901234567890123456789012345678901234567890.1234567890"
    );
    assert_eq!(a.value(2), "0.0000000000");
    assert_eq!(a.value(3), "-0.0000000001");
    assert_eq!(a.value(4), "0.0000000005");
}

#[test]
fn decimal_without_precision_is_text() {
    // Connect Decimal with no precision parameter (unbounded): never squeezed into Decimal128.
    let schema = r#"{"type":"bytes","connect.version":1,"connect.parameters":{"scale":"3"},"connect.name":"org.apache.kafka.connect.data.Decimal"}"#;
    let (ty, a) = roundtrip(schema, vec![Value::Bytes(big_twos(SEVENTY))]);
    assert_eq!(ty, DataType::Utf8);
    assert_eq!(
        a.as_string::<i32>().value(0),
        "1234567890123456789012345678901234567890123456789012345678901234567.890"
    );
}

#[test]
fn decimal_with_negative_scale_is_exact_text() {
    // Kafka Connect allows a negative decimal scale (e.g. Oracle NUMBER(5,-2)): value = unscaled × 10^-scale.
    let schema = r#"{"type":"bytes","connect.version":1,"connect.parameters":{"scale":"-2","connect.decimal.precision":"5"},"connect.name":"org.apache.kafka.connect.data.Decimal"}"#;
    let (ty, a) = roundtrip(
        schema,
        vec![Value::Bytes(twos(123)), Value::Bytes(twos(-7)), Value::Bytes(vec![0])],
    );
    assert_eq!(ty, DataType::Utf8);
    let a = a.as_string::<i32>();
    assert_eq!(a.value(0), "12300");
    assert_eq!(a.value(1), "-700");
    assert_eq!(a.value(2), "0");
}

/// `io.debezium.data.VariableScaleDecimal` exactly as Debezium writes it (nullable column).
const VSD: &str = r#"["null",{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}],"connect.doc":"Variable scaled decimal","connect.version":1,"connect.name":"io.debezium.data.VariableScaleDecimal"}]"#;

fn vsd(scale: i32, unscaled: Vec<u8>) -> Value {
    union(
        1,
        Value::Record(vec![
            ("scale".into(), Value::Int(scale)),
            ("value".into(), Value::Bytes(unscaled)),
        ]),
    )
}

#[test]
fn variable_scale_decimal_is_exact_text() {
    let plan = Plan::parse(VSD).unwrap();
    assert!(matches!(plan.non_null(), Plan::VariableScaleDecimal));
    let neg = format!("-{SEVENTY}");
    let (ty, a) = roundtrip(
        VSD,
        vec![
            vsd(0, big_twos(SEVENTY)),
            vsd(20, big_twos(&neg)),
            vsd(2, twos(-5)),
            vsd(0, vec![0]),
            vsd(3, vec![0]),
            union(0, Value::Null),
            vsd(5, twos(-12_345_678)),
            vsd(-3, twos(42)),
        ],
    );
    assert_eq!(ty, DataType::Utf8);
    let a = a.as_string::<i32>();
    assert_eq!(a.value(0), SEVENTY);
    assert_eq!(
        a.value(1),
        "-12345678901234567890123456789012345678901234567890.12345678901234567890"
    );
    assert_eq!(a.value(2), "-0.05");
    assert_eq!(a.value(3), "0");
    assert_eq!(a.value(4), "0.000");
    assert!(a.is_null(5));
    assert_eq!(a.value(6), "-123.45678");
    assert_eq!(a.value(7), "42000");
}

#[test]
fn corrupt_variable_scale_decimal_scale() {
    // a scale no database has: refused instead of building a gigabyte of zeros
    for scale in [i32::MAX, i32::MIN, 2_000_000] {
        assert_corrupt(VSD, &encode(VSD, vsd(scale, twos(1))));
    }
}

#[test]
fn fixed_decimal_is_decimal128() {
    let schema = r#"{"type":"fixed","name":"Amount","size":8,"logicalType":"decimal","precision":18,"scale":3}"#;
    let (ty, a) = roundtrip(schema, vec![dec(twos(-1_500)), dec(twos(123_456_789_012))]);
    assert_eq!(ty, DataType::Decimal128(18, 3));
    let a = a.as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert_eq!(a.value_as_string(0), "-1.500");
    assert_eq!(a.value_as_string(1), "123456789.012");
}

// ---------------------------------------------------------------------------------------------
// dates and times

#[test]
fn debezium_date_is_date32_including_negative_days() {
    let schema = r#"["null",{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}]"#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            union(1, Value::Int(-1)),       // 1969-12-31
            union(1, Value::Int(-719_162)), // 0001-01-01
            union(1, Value::Int(0)),
            union(1, Value::Int(16_587)), // 2015-06-01
            union(0, Value::Null),
        ],
    );
    assert_eq!(ty, DataType::Date32);
    let a = a.as_any().downcast_ref::<Date32Array>().unwrap();
    assert_eq!(&a.values()[..4], &[-1, -719_162, 0, 16_587]);
    assert!(a.is_null(4));
    assert_eq!(a.value_as_date(0).unwrap().to_string(), "1969-12-31");
    assert_eq!(a.value_as_date(1).unwrap().to_string(), "0001-01-01");
}

#[test]
fn connect_date_is_date32() {
    let schema = r#"{"type":"int","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Date","logicalType":"date"}"#;
    let (ty, a) = roundtrip(schema, vec![Value::Date(-365)]);
    assert_eq!(ty, DataType::Date32);
    assert_eq!(a.as_any().downcast_ref::<Date32Array>().unwrap().value(0), -365);
}

fn ts_values(a: &ArrayRef) -> Vec<i64> {
    a.as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("µs timestamps")
        .values()
        .to_vec()
}

const NTZ: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

#[test]
fn debezium_timestamp_millis_is_micros_ntz() {
    let schema = r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.Timestamp"}"#;
    assert!(matches!(
        Plan::parse(schema).unwrap(),
        Plan::Long(LongKind::TimestampMillis)
    ));
    let (ty, a) = roundtrip(
        schema,
        vec![Value::Long(1_433_089_758_747), Value::Long(-1), Value::Long(0)],
    );
    assert_eq!(ty, NTZ);
    assert_eq!(ts_values(&a), vec![1_433_089_758_747_000, -1_000, 0]);
    // a millisecond value whose µs does not fit i64 is refused, not wrapped
    assert_corrupt(schema, &encode(schema, Value::Long(i64::MAX / 10)));
}

#[test]
fn connect_timestamp_is_micros_ntz() {
    let schema = r#"{"type":"long","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Timestamp","logicalType":"timestamp-millis"}"#;
    let (ty, a) = roundtrip(schema, vec![Value::TimestampMillis(1_600_000_000_123)]);
    assert_eq!(ty, NTZ);
    assert_eq!(ts_values(&a), vec![1_600_000_000_123_000]);
}

#[test]
fn debezium_micro_timestamp_is_micros_ntz() {
    let schema = r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}"#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::Long(1_433_089_758_747_123),
            Value::Long(-62_135_596_800_000_000),
            Value::Long(0),
        ],
    );
    assert_eq!(ty, NTZ);
    assert_eq!(ts_values(&a), vec![1_433_089_758_747_123, -62_135_596_800_000_000, 0]);
}

#[test]
fn debezium_nano_timestamp_is_micros_ntz() {
    let schema = r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.NanoTimestamp"}"#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::Long(1_433_089_758_747_123_456),
            Value::Long(-1),
            Value::Long(-1_000),
            Value::Long(999),
        ],
    );
    assert_eq!(ty, NTZ);
    // floor to µs: -1 ns lies in the microsecond before the epoch
    assert_eq!(ts_values(&a), vec![1_433_089_758_747_123, -1, -1, 0]);
}

#[test]
fn debezium_zoned_timestamp_is_micros_utc() {
    let schema = r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTimestamp"}"#;
    assert!(matches!(
        Plan::parse(schema).unwrap(),
        Plan::String(StrKind::ZonedTimestamp)
    ));
    let (ty, a) = roundtrip(
        schema,
        vec![
            Value::String("2015-05-31T16:29:18.747000Z".into()),
            Value::String("2015-05-31T18:29:18.747000+02:00".into()),
            Value::String("2015-05-31T10:59:18.747000-05:30".into()),
            Value::String("1970-01-01T00:00:00Z".into()),
            Value::String("1969-12-31T23:59:59.999999Z".into()),
            Value::String("2015-05-31T16:29:18.747Z".into()),
        ],
    );
    assert_eq!(ty, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    let v = ts_values(&a);
    assert_eq!(v[0], 1_433_089_758_747_000);
    assert_eq!(v[1], v[0], "+02:00 is the same instant");
    assert_eq!(v[2], v[0], "-05:30 is the same instant");
    assert_eq!(v[3], 0);
    assert_eq!(v[4], -1);
    assert_eq!(v[5], v[0], "fewer fraction digits");
    // not a timestamp → corrupt, not a panic
    assert_corrupt(schema, &encode(schema, Value::String("not a time".into())));
}

#[test]
fn zoned_timestamp_infinity_is_kept() {
    // PostgreSQL timestamptz 'infinity' / '-infinity': Debezium sends the words; they map to the
    // same extremes Debezium sends for an infinite `timestamp` (MicroTimestamp Long.MAX/MIN).
    let schema = r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTimestamp"}"#;
    let (_, a) = roundtrip(
        schema,
        vec![Value::String("infinity".into()), Value::String("-infinity".into())],
    );
    assert_eq!(ts_values(&a), vec![i64::MAX, i64::MIN]);
    let micro = r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}"#;
    let (_, a) = roundtrip(micro, vec![Value::Long(i64::MAX), Value::Long(i64::MIN)]);
    assert_eq!(ts_values(&a), vec![i64::MAX, i64::MIN]);
}

#[test]
fn micro_time_and_time_are_int64_micros() {
    let micro = r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTime"}"#;
    let (ty, a) = roundtrip(micro, vec![Value::Long(86_399_999_999), Value::Long(0)]);
    assert_eq!(ty, DataType::Int64);
    assert_eq!(
        a.as_primitive::<arrow::datatypes::Int64Type>().values().to_vec(),
        vec![86_399_999_999, 0]
    );

    let millis = r#"{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Time"}"#;
    let (ty, a) = roundtrip(millis, vec![Value::Int(86_399_999), Value::Int(45_296_789)]);
    assert_eq!(ty, DataType::Int64);
    assert_eq!(
        a.as_primitive::<arrow::datatypes::Int64Type>().values().to_vec(),
        vec![86_399_999_000, 45_296_789_000]
    );

    let nano = r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.NanoTime"}"#;
    let (ty, a) = roundtrip(nano, vec![Value::Long(45_296_789_123_456)]);
    assert_eq!(ty, DataType::Int64);
    assert_eq!(a.as_primitive::<arrow::datatypes::Int64Type>().value(0), 45_296_789_123);

    let connect = r#"{"type":"int","connect.version":1,"connect.name":"org.apache.kafka.connect.data.Time","logicalType":"time-millis"}"#;
    let (ty, a) = roundtrip(connect, vec![Value::TimeMillis(1_000)]);
    assert_eq!(ty, DataType::Int64);
    assert_eq!(a.as_primitive::<arrow::datatypes::Int64Type>().value(0), 1_000_000);
}

#[test]
fn micro_duration_is_int64_micros() {
    let schema = r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroDuration"}"#;
    assert!(matches!(Plan::parse(schema).unwrap(), Plan::Long(LongKind::Micros)));
    // 1 year 2 mons 3 days 04:05:06.789 as Debezium counts it, and a negative interval
    let (ty, a) = roundtrip(
        schema,
        vec![Value::Long(37_080_306_789_000), Value::Long(-3_600_000_000)],
    );
    assert_eq!(ty, DataType::Int64);
    assert_eq!(
        a.as_primitive::<arrow::datatypes::Int64Type>().values().to_vec(),
        vec![37_080_306_789_000, -3_600_000_000]
    );
}

// ---------------------------------------------------------------------------------------------
// complex types

#[test]
fn arrays_are_lists() {
    // PostgreSQL text[] as Debezium writes it: nullable array of nullable strings
    let schema = r#"["null",{"type":"array","items":["null","string"]}]"#;
    let (ty, a) = roundtrip(
        schema,
        vec![
            union(
                1,
                Value::Array(vec![
                    union(1, Value::String("a".into())),
                    union(0, Value::Null),
                    union(1, Value::String("".into())),
                ]),
            ),
            union(0, Value::Null),
            union(1, Value::Array(vec![])),
            union(1, Value::Array(vec![union(1, Value::String("z".into()))])),
        ],
    );
    assert_eq!(
        ty,
        DataType::List(std::sync::Arc::new(Field::new("element", DataType::Utf8, true)))
    );
    let a = a.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(a.len(), 4);
    let row0 = a.value(0);
    let row0 = row0.as_string::<i32>();
    assert_eq!(row0.len(), 3);
    assert_eq!(row0.value(0), "a");
    assert!(row0.is_null(1));
    assert_eq!(row0.value(2), "");
    assert!(a.is_null(1));
    assert!(a.is_valid(2));
    assert_eq!(a.value(2).len(), 0);
    assert_eq!(a.value(3).as_string::<i32>().value(0), "z");

    // int[] with typed items
    let schema = r#"{"type":"array","items":{"type":"int","connect.type":"int16"}}"#;
    let (ty, a) = roundtrip(schema, vec![Value::Array(vec![Value::Int(1), Value::Int(-2)])]);
    assert_eq!(
        ty,
        DataType::List(std::sync::Arc::new(Field::new("element", DataType::Int16, true)))
    );
    let a = a.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(
        a.value(0)
            .as_primitive::<arrow::datatypes::Int16Type>()
            .values()
            .to_vec(),
        vec![1, -2]
    );
}

#[test]
fn arrays_in_several_blocks_and_negative_counts() {
    // Avro lets a writer split arrays into blocks; a negative count is followed by the block's
    // byte size. [1,2] [3] as: count 2, items, count -1, size 1, item, end.
    let schema = r#"{"type":"array","items":"long"}"#;
    let mut datum = varint(2);
    datum.extend(varint(1));
    datum.extend(varint(2));
    datum.extend(varint(-1));
    datum.extend(varint(1));
    datum.extend(varint(3));
    datum.push(0);
    let (_, a, _) = decode_datums(schema, &[datum.clone(), vec![0]]);
    let a = a.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(
        a.value(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec(),
        vec![1, 2, 3]
    );
    assert_eq!(a.value(1).len(), 0);
    // skip handles the same layout
    let mut r = Reader::new(&datum);
    r.skip(&Plan::parse(schema).unwrap()).unwrap();
    assert_eq!(r.remaining(), 0);
}

#[test]
fn nullable_union_null_first_and_null_second() {
    let first = r#"["null","long"]"#;
    let second = r#"["long","null"]"#;
    let p1 = Plan::parse(first).unwrap();
    let p2 = Plan::parse(second).unwrap();
    assert!(matches!(p1, Plan::Nullable { null_index: 0, .. }));
    assert!(matches!(p2, Plan::Nullable { null_index: 1, .. }));
    let (ty1, a1) = roundtrip(
        first,
        vec![
            union(1, Value::Long(5)),
            union(0, Value::Null),
            union(1, Value::Long(-5)),
        ],
    );
    let (ty2, a2) = roundtrip(
        second,
        vec![
            union(0, Value::Long(5)),
            union(1, Value::Null),
            union(0, Value::Long(-5)),
        ],
    );
    assert_eq!(ty1, DataType::Int64);
    assert_eq!(ty2, DataType::Int64);
    for a in [a1, a2] {
        let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(a.value(0), 5);
        assert!(a.is_null(1));
        assert_eq!(a.value(2), -5);
    }

    // Debezium's source.snapshot: non-null branch first, an Enum-annotated string
    let snapshot = r#"[{"type":"string","connect.version":1,"connect.parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"connect.default":"false","connect.name":"io.debezium.data.Enum"},"null"]"#;
    let (ty, a) = roundtrip(
        snapshot,
        vec![union(0, Value::String("first".into())), union(1, Value::Null)],
    );
    assert_eq!(ty, DataType::Utf8);
    let a = a.as_string::<i32>();
    assert_eq!(a.value(0), "first");
    assert!(a.is_null(1));
}

#[test]
fn avro_enum_is_utf8_and_named_reference_reuses_it() {
    let schema = r#"{"type":"record","name":"R","namespace":"ns","fields":[
        {"name":"c","type":{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}},
        {"name":"d","type":["null","Color"]},
        {"name":"e","type":["null","ns.Color"]}]}"#;
    let value = Value::Record(vec![
        ("c".into(), Value::Enum(2, "BLUE".into())),
        ("d".into(), union(1, Value::Enum(0, "RED".into()))),
        ("e".into(), union(0, Value::Null)),
    ]);
    let (ty, a) = roundtrip(schema, vec![value]);
    let DataType::Struct(fields) = &ty else {
        panic!("struct")
    };
    assert!(fields.iter().all(|f| f.data_type() == &DataType::Utf8));
    let s = a.as_any().downcast_ref::<StructArray>().unwrap();
    assert_eq!(s.column(0).as_string::<i32>().value(0), "BLUE");
    assert_eq!(s.column(1).as_string::<i32>().value(0), "RED");
    assert!(s.column(2).is_null(0));
    // symbol index out of range
    assert_corrupt(r#"{"type":"enum","name":"Color","symbols":["RED"]}"#, &varint(3));
    assert_corrupt(r#"{"type":"enum","name":"Color","symbols":["RED"]}"#, &varint(-1));
}

#[test]
fn fixed_is_binary() {
    let schema = r#"{"type":"fixed","name":"Md5","size":4}"#;
    let (ty, a) = roundtrip(schema, vec![Value::Fixed(4, vec![1, 2, 3, 255])]);
    assert_eq!(ty, DataType::Binary);
    assert_eq!(
        a.as_any().downcast_ref::<BinaryArray>().unwrap().value(0),
        &[1, 2, 3, 255]
    );
    assert_corrupt(schema, &[1, 2, 3]); // three of four bytes
}

#[test]
fn records_are_structs() {
    // io.debezium.data.geometry.Point-like struct column
    let schema = r#"{"type":"record","name":"Point","namespace":"io.debezium.data.geometry","fields":[{"name":"x","type":"double"},{"name":"y","type":"double"},{"name":"wkb","type":["null","bytes"],"default":null},{"name":"srid","type":["null","int"],"default":null}],"connect.doc":"Geometry (POINT)","connect.version":1,"connect.name":"io.debezium.data.geometry.Point"}"#;
    let (ty, a) = roundtrip(
        schema,
        vec![Value::Record(vec![
            ("x".into(), Value::Double(1.5)),
            ("y".into(), Value::Double(-2.0)),
            ("wkb".into(), union(0, Value::Null)),
            ("srid".into(), union(1, Value::Int(4326))),
        ])],
    );
    assert!(matches!(ty, DataType::Struct(_)));
    let s = a.as_any().downcast_ref::<StructArray>().unwrap();
    assert_eq!(
        s.column(0).as_primitive::<arrow::datatypes::Float64Type>().value(0),
        1.5
    );
    assert_eq!(
        s.column(1).as_primitive::<arrow::datatypes::Float64Type>().value(0),
        -2.0
    );
    assert!(s.column(2).is_null(0));
    assert_eq!(s.column(3).as_primitive::<arrow::datatypes::Int32Type>().value(0), 4326);
}

#[test]
fn map_has_no_column_type() {
    let plan = Plan::parse(r#"{"type":"map","values":"string"}"#).unwrap();
    assert!(matches!(plan.arrow_type(), Err(ConnectorError::UnsupportedType(_))));
    // but a map is still skipped correctly
    let bytes = encode(
        r#"{"type":"map","values":"string"}"#,
        Value::Map([("k".to_string(), Value::String("v".into()))].into_iter().collect()),
    );
    let mut r = Reader::new(&bytes);
    r.skip(&plan).unwrap();
    assert_eq!(r.remaining(), 0);
}

// ---------------------------------------------------------------------------------------------
// the TOAST placeholder

#[test]
fn unavailable_placeholder_in_text_and_bytes_is_null_and_reported() {
    let text = r#"["null","string"]"#;
    let datums = vec![
        encode(text, union(1, Value::String(UNAVAILABLE.into()))),
        encode(text, union(1, Value::String("real".into()))),
    ];
    let (_, a, flags) = decode_datums(text, &datums);
    assert_eq!(flags, vec![true, false]);
    assert!(a.is_null(0));
    assert_eq!(a.as_string::<i32>().value(1), "real");

    let bytes = r#""bytes""#;
    let datums = vec![encode(bytes, Value::Bytes(UNAVAILABLE.as_bytes().to_vec()))];
    let (_, a, flags) = decode_datums(bytes, &datums);
    assert_eq!(flags, vec![true]);
    assert!(a.is_null(0));

    // inside an array (PostgreSQL text[] that was TOASTed)
    let list = r#"{"type":"array","items":"string"}"#;
    let datums = vec![encode(list, Value::Array(vec![Value::String(UNAVAILABLE.into())]))];
    let (_, _, flags) = decode_datums(list, &datums);
    assert_eq!(flags, vec![true]);
}

// ---------------------------------------------------------------------------------------------
// corrupt input: always CorruptAvro, never a panic

#[test]
fn corrupt_truncated_datum() {
    let schema = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"},{"name":"c","type":"double"}]}"#;
    let good = encode(
        schema,
        Value::Record(vec![
            ("a".into(), Value::Long(1 << 40)),
            ("b".into(), Value::String("hello".into())),
            ("c".into(), Value::Double(1.0)),
        ]),
    );
    for cut in 0..good.len() {
        assert_corrupt(schema, &good[..cut]);
    }
    assert_corrupt(r#""float""#, &[0, 0, 0]);
    assert_corrupt(r#""double""#, &[0; 7]);
    assert_corrupt(r#""long""#, &[]);
    assert_corrupt(r#""long""#, &[0x80]); // continuation bit with nothing after it
}

#[test]
fn corrupt_huge_length() {
    // a string/bytes length far beyond the datum
    let mut datum = varint(1 << 40);
    datum.extend_from_slice(b"abc");
    assert_corrupt(r#""string""#, &datum);
    assert_corrupt(r#""bytes""#, &datum);
    assert_corrupt(BALANCE, &datum);
    let mut max = varint(i64::MAX);
    max.push(b'x');
    assert_corrupt(r#""string""#, &max);
    // negative length
    assert_corrupt(r#""string""#, &varint(-3));
    // array block count far beyond the datum
    assert_corrupt(r#"{"type":"array","items":"null"}"#, &varint(1 << 50));
    assert_corrupt(r#"{"type":"array","items":"long"}"#, &varint(i64::MIN));
}

#[test]
fn corrupt_bad_union_index() {
    for schema in [r#"["null","string"]"#, r#"["string","null"]"#] {
        assert_corrupt(schema, &varint(2));
        assert_corrupt(schema, &varint(-1));
        assert_corrupt(schema, &varint(i64::MAX));
    }
    // a general union has no column type, but skipping it checks the branch index too
    let general = Plan::parse(r#"["null","string","long"]"#).unwrap();
    for bad in [varint(3), varint(-1)] {
        assert!(matches!(
            Reader::new(&bad).skip(&general),
            Err(ConnectorError::CorruptAvro(_))
        ));
    }
    // inside a record, after good fields
    let schema =
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":["null","string"]}]}"#;
    let mut datum = varint(5);
    datum.extend(varint(7));
    assert_corrupt(schema, &datum);
}

#[test]
fn corrupt_invalid_utf8() {
    let mut datum = varint(3);
    datum.extend_from_slice(&[0xff, 0xfe, b'a']);
    assert_corrupt(r#""string""#, &datum);
    assert_corrupt(
        r#"{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTimestamp"}"#,
        &datum,
    );
    // truncated multi-byte sequence
    let mut datum = varint(1);
    datum.push(0xc3);
    assert_corrupt(r#""string""#, &datum);
}

#[test]
fn corrupt_overlong_varint() {
    // 11 continuation bytes: longer than any 64-bit varint
    let mut datum = vec![0x80; 10];
    datum.push(0x00);
    assert_corrupt(r#""long""#, &datum);
    // 10 bytes whose last byte carries bits beyond 64
    let mut datum = vec![0xff; 9];
    datum.push(0x02);
    assert_corrupt(r#""long""#, &datum);
    // an overlong varint as a string length or union index
    assert_corrupt(r#""string""#, &[0xff; 12]);
    assert_corrupt(r#"["null","long"]"#, &[0x80; 11]);
    // the largest legal varint still decodes
    let (_, a, _) = decode_datums(r#""long""#, &[varint(i64::MIN), varint(i64::MAX)]);
    assert_eq!(
        a.as_primitive::<arrow::datatypes::Int64Type>().values().to_vec(),
        vec![i64::MIN, i64::MAX]
    );
}

#[test]
fn corrupt_decimal_too_wide_for_decimal128() {
    // 17 bytes do not fit 128 bits
    let mut datum = varint(17);
    datum.extend_from_slice(&[0x7f; 17]);
    assert_corrupt(BALANCE, &datum);
}

/// Deterministic xorshift, so the fuzz cases are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_corruption_never_panics() {
    let schema = r#"{"type":"record","name":"Value","namespace":"t","fields":[
        {"name":"id","type":"int"},
        {"name":"name","type":["null","string"]},
        {"name":"tags","type":["null",{"type":"array","items":["null","string"]}]},
        {"name":"amount","type":{"type":"bytes","scale":2,"precision":10,"connect.version":1,"connect.parameters":{"scale":"2","connect.decimal.precision":"10"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}},
        {"name":"big","type":["null",{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}],"connect.name":"io.debezium.data.VariableScaleDecimal"}]},
        {"name":"at","type":{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTimestamp"}},
        {"name":"day","type":{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}},
        {"name":"small","type":{"type":"int","connect.type":"int16"}},
        {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
        {"name":"f","type":{"type":"fixed","name":"F","size":3}},
        {"name":"pt","type":["null",{"type":"record","name":"P","fields":[{"name":"x","type":"double"},{"name":"s","type":"string"}]}]},
        {"name":"d","type":"double"}]}"#;
    let good = encode(
        schema,
        Value::Record(vec![
            ("id".into(), Value::Int(7)),
            ("name".into(), union(1, Value::String("Zoë".into()))),
            (
                "tags".into(),
                union(
                    1,
                    Value::Array(vec![union(1, Value::String("a".into())), union(0, Value::Null)]),
                ),
            ),
            ("amount".into(), dec(twos(-1234))),
            (
                "big".into(),
                union(
                    1,
                    Value::Record(vec![
                        ("scale".into(), Value::Int(1)),
                        ("value".into(), Value::Bytes(twos(99))),
                    ]),
                ),
            ),
            ("at".into(), Value::String("2015-05-31T16:29:18.747000Z".into())),
            ("day".into(), Value::Int(-3)),
            ("small".into(), Value::Int(12)),
            ("e".into(), Value::Enum(1, "B".into())),
            ("f".into(), Value::Fixed(3, vec![1, 2, 3])),
            (
                "pt".into(),
                union(
                    1,
                    Value::Record(vec![
                        ("x".into(), Value::Double(1.0)),
                        ("s".into(), Value::String("p".into())),
                    ]),
                ),
            ),
            ("d".into(), Value::Double(0.5)),
        ]),
    );
    let plan = Plan::parse(schema).unwrap();
    let ty = plan.arrow_type().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut col = Column::new(&ty).unwrap();
    let mut ok = 0;
    for _ in 0..5_000 {
        let mut bytes = good.clone();
        for _ in 0..=(rng.next() % 3) {
            let i = (rng.next() as usize) % bytes.len();
            bytes[i] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            let len = (rng.next() as usize) % bytes.len();
            bytes.truncate(len);
        }
        let _ = Reader::new(&bytes).skip(&plan);
        let before = col.len();
        match col.append(&plan, &mut Reader::new(&bytes)) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e, ConnectorError::CorruptAvro(_)), "{e:?}");
                // what a segment does after a failed row: pad with a null
                while col.len() <= before {
                    col.append_null();
                }
            }
        }
        assert_eq!(col.len(), before + 1);
    }
    assert!(ok > 0, "some mutations keep the datum valid");
    // the column is still consistent and finishes without panicking
    let a = col.finish();
    assert_eq!(a.len(), 5_000);
    a.to_data().validate_full().unwrap();
}

// ---------------------------------------------------------------------------------------------
// a row that fails half way must not break the rows after it

#[test]
fn struct_failing_half_way_then_null_stays_consistent() {
    let schema = r#"{"type":"record","name":"P","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"}]}"#;
    let plan = Plan::parse(schema).unwrap();
    let mut col = Column::new(&plan.arrow_type().unwrap()).unwrap();
    // a = "x" decodes, b is invalid UTF-8
    let mut bad = varint(1);
    bad.push(b'x');
    bad.extend(varint(1));
    bad.push(0xff);
    assert!(col.append(&plan, &mut Reader::new(&bad)).is_err());
    col.append_null();
    let good = encode(
        schema,
        Value::Record(vec![
            ("a".into(), Value::String("a1".into())),
            ("b".into(), Value::String("b1".into())),
        ]),
    );
    col.append(&plan, &mut Reader::new(&good)).unwrap();
    assert_eq!(col.len(), 2);
    let a = col.finish();
    let s = a.as_any().downcast_ref::<StructArray>().unwrap();
    assert!(s.is_null(0));
    assert_eq!(s.column(0).as_string::<i32>().value(1), "a1");
    assert_eq!(s.column(1).as_string::<i32>().value(1), "b1");
}

#[test]
fn list_failing_half_way_then_null_stays_consistent() {
    let schema = r#"{"type":"array","items":"string"}"#;
    let plan = Plan::parse(schema).unwrap();
    let mut col = Column::new(&plan.arrow_type().unwrap()).unwrap();
    // ["ok", <invalid UTF-8>]
    let mut bad = varint(2);
    bad.extend(varint(2));
    bad.extend_from_slice(b"ok");
    bad.extend(varint(1));
    bad.push(0xff);
    bad.push(0);
    assert!(col.append(&plan, &mut Reader::new(&bad)).is_err());
    col.append_null();
    let good = encode(
        schema,
        Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
    );
    col.append(&plan, &mut Reader::new(&good)).unwrap();
    let a = col.finish();
    let l = a.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(l.len(), 2);
    assert!(l.is_null(0));
    let row1 = l.value(1);
    let row1 = row1.as_string::<i32>();
    assert_eq!(row1.len(), 2);
    assert_eq!(row1.value(0), "a");
    assert_eq!(row1.value(1), "b");
}

#[test]
fn nested_list_of_structs_failing_half_way_stays_consistent() {
    let schema = r#"{"type":"record","name":"O","fields":[
        {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"}]}}},
        {"name":"z","type":"string"}]}"#;
    let plan = Plan::parse(schema).unwrap();
    let mut col = Column::new(&plan.arrow_type().unwrap()).unwrap();
    // items = [{a:"x", b:<bad>}]
    let mut bad = varint(1);
    bad.extend(varint(1));
    bad.push(b'x');
    bad.extend(varint(1));
    bad.push(0xff);
    bad.push(0);
    bad.extend(varint(1));
    bad.push(b'z');
    assert!(col.append(&plan, &mut Reader::new(&bad)).is_err());
    col.append_null();
    let item = |a: &str, b: &str| {
        Value::Record(vec![
            ("a".into(), Value::String(a.into())),
            ("b".into(), Value::String(b.into())),
        ])
    };
    let good = encode(
        schema,
        Value::Record(vec![
            ("items".into(), Value::Array(vec![item("a1", "b1"), item("a2", "b2")])),
            ("z".into(), Value::String("z1".into())),
        ]),
    );
    col.append(&plan, &mut Reader::new(&good)).unwrap();
    let a = col.finish();
    a.to_data().validate_full().unwrap();
    let s = a.as_any().downcast_ref::<StructArray>().unwrap();
    assert!(s.is_null(0));
    let items = s.column(0).as_any().downcast_ref::<ListArray>().unwrap();
    let row1 = items.value(1);
    let row1 = row1.as_any().downcast_ref::<StructArray>().unwrap();
    assert_eq!(row1.len(), 2);
    assert_eq!(row1.column(0).as_string::<i32>().value(0), "a1");
    assert_eq!(row1.column(1).as_string::<i32>().value(1), "b2");
    assert_eq!(s.column(1).as_string::<i32>().value(1), "z1");
}
