//! Complex types, the TOAST placeholder, corrupt input, and rows that fail half way.

use super::scalar::{BALANCE, dec};
use super::*;

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
