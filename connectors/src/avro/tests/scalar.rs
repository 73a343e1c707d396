//! Scalar and logical types: integers, floating point, text, bytes, decimals, dates and times.

use super::*;

// ---------------------------------------------------------------------------------------------
// integers

/// Varints of every length read back exactly; one cut short, one of 11 bytes and one whose
/// 10th byte overflows 64 bits are corrupt, and nothing is read past the datum.
#[test]
fn varints_of_every_length_and_their_corruptions() {
    let values = [
        0,
        -1,
        1,
        63,
        -64,
        64,
        -65,
        8191,
        1 << 20,
        -(1 << 35),
        i64::from(i32::MAX),
        i64::MAX,
        i64::MIN,
    ];
    let mut datum = Vec::new();
    for v in values {
        datum.extend(varint(v));
    }
    let mut r = Reader::new(&datum);
    for v in values {
        assert_eq!(r.long().unwrap(), v);
    }
    assert_eq!(r.remaining(), 0);
    assert!(matches!(r.long(), Err(ConnectorError::CorruptAvro(_))));

    let max = varint(i64::MIN);
    assert_eq!(max.len(), 10);
    for cut in 0..max.len() {
        let mut r = Reader::new(&max[..cut]);
        assert!(matches!(r.long(), Err(ConnectorError::CorruptAvro(_))), "cut at {cut}");
    }
    let mut too_long = vec![0x80; 10];
    too_long.push(0);
    assert!(matches!(
        Reader::new(&too_long).long(),
        Err(ConnectorError::CorruptAvro(_))
    ));
    let mut overflow = vec![0xff; 9];
    overflow.push(0x02);
    assert!(matches!(
        Reader::new(&overflow).long(),
        Err(ConnectorError::CorruptAvro(_))
    ));
}

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
pub(super) const BALANCE: &str = r#"{"type":"bytes","scale":2,"precision":10,"connect.version":1,"connect.parameters":{"scale":"2","connect.decimal.precision":"10"},"connect.default":"\u0000","connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}"#;

pub(super) fn dec(bytes: Vec<u8>) -> Value {
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
