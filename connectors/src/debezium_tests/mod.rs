//! Debezium envelope → `ChangeBatch`, driven by the real capture in `tests/fixtures/debezium`
//! (registry schemas, Confluent-framed key/value bytes) and by synthetic envelopes written with
//! `apache_avro` from the real `customers` value schema.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Decimal, Schema};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use base64::Engine;
use serde_json::{Value as Json, json};

use super::{EnvelopePlan, TableDecoder};
use crate::avro::{Plan, UNAVAILABLE};
use crate::error::ConnectorError;
use crate::frame;
use change::{ChangeBatch, ChangeKind, Position, StreamId};

// ---------------------------------------------------------------------------------------------
// fixture access

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/debezium");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURE}/{path}")).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every registry schema by id, as text, as a plan, and (for value schemas) as an envelope.
struct Registry {
    text: HashMap<u32, String>,
    plans: HashMap<u32, Plan>,
    envs: HashMap<u32, Arc<EnvelopePlan>>,
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let subjects: Json = serde_json::from_str(&read("schemas.json")).expect("schemas.json");
        let mut reg = Registry {
            text: HashMap::new(),
            plans: HashMap::new(),
            envs: HashMap::new(),
        };
        for (subject, versions) in subjects.as_object().expect("subjects") {
            for v in versions.as_array().expect("versions") {
                let id = v["id"].as_u64().expect("id") as u32;
                let text = v["schema"].as_str().expect("schema").to_string();
                let plan = Plan::parse(&text).unwrap_or_else(|e| panic!("{subject} id {id}: {e}"));
                if subject.ends_with("-value") {
                    reg.envs
                        .insert(id, Arc::new(EnvelopePlan::new(&plan).expect("envelope")));
                }
                reg.plans.insert(id, plan);
                reg.text.insert(id, text);
            }
        }
        reg
    })
}

/// Pushes one framed record like the pipeline does (frame split, plans by schema id).
fn push(
    dec: &mut TableDecoder,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<(), ConnectorError> {
    let reg = registry();
    let key = key.map(|k| frame::split(k).expect("key frame"));
    let value = value.map(|v| frame::split(v).expect("value frame"));
    dec.push(
        Position { partition, offset },
        key.map(|(id, payload)| (id, &reg.plans[&id], payload)),
        value.map(|(id, payload)| (id, reg.envs[&id].clone(), payload)),
    )
}

/// One `examples/*.json` record.
struct Example {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    json: Json,
}

fn example(name: &str) -> Example {
    let json: Json = serde_json::from_str(&read(&format!("examples/{name}.json"))).expect("example json");
    Example {
        partition: json["partition"].as_i64().expect("partition") as i32,
        offset: json["offset"].as_i64().expect("offset"),
        key: json["key_bytes_hex"].as_str().map(hex),
        value: json["value_bytes_b64"].as_str().map(b64),
        json,
    }
}

fn push_example(dec: &mut TableDecoder, ex: &Example) -> Result<(), ConnectorError> {
    push(dec, ex.partition, ex.offset, ex.key.as_deref(), ex.value.as_deref())
}

fn finish(dec: TableDecoder) -> ChangeBatch {
    dec.finish().expect("finish").expect("a batch")
}

// ---------------------------------------------------------------------------------------------
// reading cells back

fn col<'a>(batch: &'a ChangeBatch, name: &str) -> &'a ArrayRef {
    batch
        .data
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// A cell in the form fastavro gave it in the examples' decoded `after`.
fn json_cell(a: &ArrayRef, row: usize) -> Json {
    if a.is_null(row) {
        return Json::Null;
    }
    match a.data_type() {
        DataType::Int16 => json!(a.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(a.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(a.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => json!(a.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => json!(a.as_boolean().value(row)),
        DataType::Utf8 => json!(a.as_string::<i32>().value(row)),
        DataType::Decimal128(..) => json!({"$decimal": a.as_primitive::<Decimal128Type>().value_as_string(row)}),
        DataType::Date32 => json!(a.as_primitive::<Date32Type>().value(row)),
        // MicroTimestamp: fastavro shows the raw µs
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            json!(a.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        // ZonedTimestamp: Debezium's text, always 6 fraction digits and `Z`
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(row);
            let t = chrono::DateTime::from_timestamp_micros(us).expect("in range");
            json!(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        }
        other => panic!("unexpected column type {other}"),
    }
}

/// The source columns of `row` as a JSON object (only columns present in `expected`, plus any
/// non-null extra column, which would then fail the comparison).
fn json_row(batch: &ChangeBatch, row: usize) -> serde_json::Map<String, Json> {
    batch
        .columns
        .fields()
        .iter()
        .map(|f| (f.name().clone(), json_cell(col(batch, f.name()), row)))
        .collect()
}

fn assert_row_is_after(batch: &ChangeBatch, row: usize, ex: &Example) {
    let after = ex.json["value"]["after"].as_object().expect("after");
    let mut got = json_row(batch, row);
    // columns this record's schema does not have must be null (added later by another version)
    got.retain(|name, v| after.contains_key(name) || !v.is_null());
    assert_eq!(&got, after, "row {row} vs {} offset {}", ex.json["topic"], ex.offset);
}

/// A cell as PostgreSQL's `COPY … CSV` prints it (session TimeZone UTC, DateStyle ISO).
fn pg_text(a: &ArrayRef, row: usize) -> Option<String> {
    if a.is_null(row) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Int16 => a.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => a.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Boolean => if a.as_boolean().value(row) { "t" } else { "f" }.to_string(),
        DataType::Utf8 => a.as_string::<i32>().value(row).to_string(),
        DataType::Decimal128(..) => a.as_primitive::<Decimal128Type>().value_as_string(row),
        DataType::Date32 => a
            .as_primitive::<Date32Type>()
            .value_as_date(row)
            .expect("date")
            .format("%Y-%m-%d")
            .to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(row);
            let t = chrono::DateTime::from_timestamp_micros(us).expect("in range");
            let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
            let frac = us.rem_euclid(1_000_000);
            if frac != 0 {
                s.push('.');
                s.push_str(format!("{frac:06}").trim_end_matches('0'));
            }
            if tz.is_some() {
                s.push_str("+00");
            }
            s
        }
        other => panic!("unexpected column type {other}"),
    })
}

/// RFC 4180 CSV as PostgreSQL writes it: an unquoted empty field is NULL, `""` is ''.
fn parse_csv(text: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes) = (false, false);
    let mut chars = text.chars().peekable();
    let take = |field: &mut String, quoted: &mut bool| {
        let out = if field.is_empty() && !*quoted {
            None
        } else {
            Some(std::mem::take(field))
        };
        *quoted = false;
        out
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted = true;
            }
            ',' => row.push(take(&mut field, &mut quoted)),
            '\n' => {
                row.push(take(&mut field, &mut quoted));
                rows.push(std::mem::take(&mut row));
            }
            '\r' => {}
            c => field.push(c),
        }
    }
    if !field.is_empty() || quoted || !row.is_empty() {
        row.push(take(&mut field, &mut quoted));
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// synthetic envelopes from the real customers value schema

fn union(i: u32, v: Value) -> Value {
    Value::Union(i, Box::new(v))
}

fn null() -> Value {
    union(0, Value::Null)
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

/// A `dbz.public.customers.Value` row; `v2` adds `loyalty_tier` (schema id 7).
fn customer(id: i32, email: &str, v2: bool) -> Vec<(String, Value)> {
    let mut row = vec![
        ("id".to_string(), Value::Int(id)),
        ("email".to_string(), text(email)),
        ("full_name".to_string(), text("Ada Lovelace")),
        ("notes".to_string(), union(1, text("some notes"))),
        ("is_active".to_string(), Value::Boolean(true)),
        ("balance".to_string(), Value::Decimal(Decimal::from(vec![0x30, 0x39]))), // 123.45
        ("created_at".to_string(), text("2015-05-31T16:29:18.747000Z")),
        ("birth_date".to_string(), union(1, Value::Int(-2432))),
        ("profile".to_string(), union(1, text(r#"{"a": 1}"#))),
        ("external_id".to_string(), text("037ea5a9-ca3f-415a-bdd5-040ba3cf5552")),
    ];
    if v2 {
        row.push(("loyalty_tier".to_string(), null()));
    }
    row
}

fn set(row: &mut [(String, Value)], name: &str, v: Value) {
    row.iter_mut().find(|(n, _)| n == name).expect("field").1 = v;
}

struct Synth {
    op: &'static str,
    before: Option<Vec<(String, Value)>>,
    after: Option<Vec<(String, Value)>>,
    source_ts_ms: i64,
    lsn: Option<i64>,
}

/// A framed `dbz.public.customers.Envelope` value written with apache_avro (schema id 2 or 7).
fn envelope(schema_id: u32, s: Synth) -> Vec<u8> {
    let row = |r: Option<Vec<(String, Value)>>| r.map_or_else(null, |r| union(1, Value::Record(r)));
    let source = Value::Record(vec![
        ("version".into(), text("3.6.3.Final")),
        ("connector".into(), text("postgresql")),
        ("name".into(), text("dbz")),
        ("ts_ms".into(), Value::Long(s.source_ts_ms)),
        ("snapshot".into(), union(0, text("false"))), // [Enum-string, "null"]: non-null first
        ("db".into(), text("inventory")),
        ("sequence".into(), union(1, text(r#"[null,"1"]"#))),
        ("ts_us".into(), union(1, Value::Long(s.source_ts_ms * 1000))),
        ("ts_ns".into(), union(1, Value::Long(s.source_ts_ms * 1_000_000))),
        ("schema".into(), text("public")),
        ("table".into(), text("customers")),
        ("txId".into(), union(1, Value::Long(4242))),
        ("lsn".into(), s.lsn.map_or_else(null, |l| union(1, Value::Long(l)))),
        ("xmin".into(), null()),
        ("origin".into(), null()),
        ("origin_lsn".into(), null()),
    ]);
    let value = Value::Record(vec![
        ("before".into(), row(s.before)),
        ("after".into(), row(s.after)),
        ("source".into(), source),
        ("transaction".into(), null()),
        ("op".into(), text(s.op)),
        // the envelope ts_ms differs from source.ts_ms on purpose
        ("ts_ms".into(), union(1, Value::Long(s.source_ts_ms + 777))),
        ("ts_us".into(), null()),
        ("ts_ns".into(), null()),
    ]);
    let schema = Schema::parse_str(&registry().text[&schema_id]).expect("apache_avro parses the value schema");
    let bytes = GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("envelope encodes");
    frame::frame(schema_id, &bytes)
}

/// A framed `dbz.public.customers.Key` (schema id 1).
fn customer_key(id: i32) -> Vec<u8> {
    let schema = Schema::parse_str(&registry().text[&1]).expect("key schema");
    let bytes = GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer")
        .write_value_to_vec(Value::Record(vec![("id".into(), Value::Int(id))]))
        .expect("key encodes");
    frame::frame(1, &bytes)
}

fn upsert(schema_id: u32, op: &'static str, after: Vec<(String, Value)>) -> Vec<u8> {
    envelope(
        schema_id,
        Synth {
            op,
            before: None,
            after: Some(after),
            source_ts_ms: 1_795_292_983_865,
            lsn: Some(43_446_768),
        },
    )
}

const CUSTOMER_COLUMNS: [&str; 10] = [
    "id",
    "email",
    "full_name",
    "notes",
    "is_active",
    "balance",
    "created_at",
    "birth_date",
    "profile",
    "external_id",
];

// ---------------------------------------------------------------------------------------------
// upserts

#[test]
fn snapshot_insert_update_are_upserts_with_the_after_values() {
    let names = ["customers_r_snapshot", "customers_c_insert", "customers_u_update"];
    let examples: Vec<Example> = names.iter().map(|n| example(n)).collect();
    let mut dec = TableDecoder::new(StreamId::new("g", "dbz.public.customers"));
    for ex in &examples {
        push_example(&mut dec, ex).expect("decodes");
    }
    let batch = finish(dec);
    assert_eq!(batch.len(), 3);
    assert_eq!(batch.data.num_rows(), 3);
    assert_eq!(batch.kinds, vec![ChangeKind::Upsert; 3]);
    assert_eq!(batch.key_columns, vec!["id".to_string()]);
    assert!(batch.unavailable.is_empty());
    let names: Vec<&str> = batch.columns.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, CUSTOMER_COLUMNS);
    // the type mapping of the real schema
    let types: Vec<DataType> = batch.columns.fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        vec![
            DataType::Int32,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Decimal128(10, 2),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Date32,
            DataType::Utf8,
            DataType::Utf8,
        ]
    );
    for (row, ex) in examples.iter().enumerate() {
        assert_row_is_after(&batch, row, ex);
        assert_eq!(
            batch.positions[row],
            Position {
                partition: 0,
                offset: ex.offset
            }
        );
    }
    let ops = col(&batch, "__op").as_string::<i32>();
    assert_eq!((ops.value(0), ops.value(1), ops.value(2)), ("r", "c", "u"));
    let deleted = col(&batch, "__deleted").as_boolean();
    assert!((0..3).all(|i| deleted.is_valid(i) && !deleted.value(i)));
    assert_eq!(batch.offsets.len(), 1);
    assert_eq!(batch.offsets[0].next_offset, examples[2].offset + 1);
    assert_eq!(batch.offsets[0].app_id(), "g:dbz.public.customers:0");
}

#[test]
fn other_tables_upserts_match_their_after_values() {
    for name in ["orders_r_snapshot", "products_u_replica_identity_full"] {
        let ex = example(name);
        let mut dec = TableDecoder::new(StreamId::new("g", "s"));
        push_example(&mut dec, &ex).expect("decodes");
        let batch = finish(dec);
        assert_eq!(batch.kinds, vec![ChangeKind::Upsert]);
        assert_row_is_after(&batch, 0, &ex);
    }
    // orders: composite key, bigint above int32, MicroTimestamp → timestamp without zone
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push_example(&mut dec, &example("orders_r_snapshot")).unwrap();
    let batch = finish(dec);
    assert_eq!(batch.key_columns, vec!["order_id".to_string(), "line_no".to_string()]);
    assert_eq!(
        col(&batch, "order_id").as_primitive::<Int64Type>().value(0),
        10_000_000_001
    );
    assert_eq!(
        col(&batch, "created_at").data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(col(&batch, "price").data_type(), &DataType::Decimal128(12, 4));
    // products: smallint → Int16, double → Float64
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push_example(&mut dec, &example("products_u_replica_identity_full")).unwrap();
    let batch = finish(dec);
    assert_eq!(col(&batch, "stock").data_type(), &DataType::Int16);
    assert_eq!(col(&batch, "weight_kg").data_type(), &DataType::Float64);
}

// ---------------------------------------------------------------------------------------------
// deletes, tombstones, key changes

#[test]
fn delete_takes_the_key_from_the_record_key_and_nulls_everything_else() {
    let ex = example("customers_d_delete");
    // the before image holds placeholders: "" for varchar, epoch for timestamptz, defaults
    assert_eq!(ex.json["value"]["before"]["email"], json!(""));
    assert_eq!(ex.json["value"]["before"]["created_at"], json!("1970-01-01T00:00:00Z"));
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push_example(&mut dec, &ex).expect("decodes");
    let batch = finish(dec);
    assert_eq!(batch.kinds, vec![ChangeKind::Delete]);
    assert_eq!(col(&batch, "id").as_primitive::<Int32Type>().value(0), 298);
    assert_eq!(ex.json["key"]["id"], json!(298));
    for name in &CUSTOMER_COLUMNS[1..] {
        assert!(
            col(&batch, name).is_null(0),
            "{name} must be null on a delete, not the before placeholder"
        );
    }
    assert_eq!(col(&batch, "__op").as_string::<i32>().value(0), "d");
    assert!(col(&batch, "__deleted").as_boolean().value(0));

    // REPLICA IDENTITY FULL makes no difference: still only the key
    let ex = example("products_d_replica_identity_full");
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push_example(&mut dec, &ex).expect("decodes");
    let batch = finish(dec);
    assert_eq!(batch.kinds, vec![ChangeKind::Delete]);
    assert_eq!(col(&batch, "id").as_primitive::<Int32Type>().value(0), 44);
    for f in batch.columns.fields().iter().filter(|f| f.name() != "id") {
        assert!(col(&batch, f.name()).is_null(0), "{}", f.name());
    }
}

#[test]
fn delete_key_comes_from_the_key_even_when_before_disagrees() {
    // a synthetic delete whose `before` carries another id and real-looking values
    let mut before = customer(5, "old@example.com", false);
    set(&mut before, "id", Value::Int(999));
    let value = envelope(
        2,
        Synth {
            op: "d",
            before: Some(before),
            after: None,
            source_ts_ms: 1_000,
            lsn: Some(1),
        },
    );
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push(&mut dec, 0, 10, Some(&customer_key(5)), Some(&value)).expect("decodes");
    let batch = finish(dec);
    assert_eq!(batch.kinds, vec![ChangeKind::Delete]);
    assert_eq!(col(&batch, "id").as_primitive::<Int32Type>().value(0), 5);
    assert!(col(&batch, "email").is_null(0));
}

#[test]
fn tombstone_yields_no_row_but_advances_the_offset() {
    let ex = example("customers_tombstone");
    assert!(ex.value.is_none());
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push_example(&mut dec, &ex).expect("a tombstone is fine");
    assert!(!dec.is_empty());
    let batch = finish(dec);
    assert_eq!(batch.len(), 0);
    assert_eq!(batch.data.num_rows(), 0);
    assert_eq!(batch.offsets.len(), 1);
    assert_eq!(batch.offsets[0].partition, 0);
    assert_eq!(batch.offsets[0].next_offset, ex.offset + 1);
    // the data still has the meta columns
    assert!(batch.data.column_by_name("__kafka_offset").is_some());

    // nothing pushed at all: no batch
    assert!(TableDecoder::new(StreamId::new("g", "s")).finish().unwrap().is_none());
}

#[test]
fn key_change_is_delete_of_old_key_then_upsert_of_new_key() {
    let triple = [
        example("customers_pk_change_1_delete"),
        example("customers_pk_change_2_tombstone"),
        example("customers_pk_change_3_create"),
    ];
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    for ex in &triple {
        push_example(&mut dec, ex).expect("decodes");
    }
    let batch = finish(dec);
    assert_eq!(batch.kinds, vec![ChangeKind::Delete, ChangeKind::Upsert]);
    let ids = col(&batch, "id").as_primitive::<Int32Type>();
    assert_eq!((ids.value(0), ids.value(1)), (222, 100_222));
    assert_eq!(
        batch.positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![triple[0].offset, triple[2].offset]
    );
    assert_eq!(batch.offsets[0].next_offset, triple[2].offset + 1);
    assert!(col(&batch, "email").is_null(0));
    assert_row_is_after(&batch, 1, &triple[2]);
}

// ---------------------------------------------------------------------------------------------
// schema change

#[test]
fn schema_change_mixed_with_v1_records_gives_one_batch_with_the_new_column() {
    let v1a = example("customers_c_insert");
    let v1b = example("customers_u_update");
    let v2 = example("customers_u_after_schema_change");
    let v1 = frame::split(v1a.value.as_deref().unwrap()).unwrap().0;
    assert_eq!(v1, 2);
    assert_eq!(frame::split(v2.value.as_deref().unwrap()).unwrap().0, 7);
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push_example(&mut dec, &v1a).unwrap();
    push_example(&mut dec, &v1b).unwrap();
    push_example(&mut dec, &v2).unwrap();
    // another v2 row, then a v1-schema delete (another partition can still be behind)
    let mut row = customer(77, "new@example.com", true);
    set(&mut row, "loyalty_tier", union(1, text("gold")));
    push(&mut dec, 0, 5_000, Some(&customer_key(77)), Some(&upsert(7, "c", row))).unwrap();
    let del = envelope(
        2,
        Synth {
            op: "d",
            before: None,
            after: None,
            source_ts_ms: 5,
            lsn: None,
        },
    );
    push(&mut dec, 1, 3, Some(&customer_key(1)), Some(&del)).unwrap();
    let batch = finish(dec);

    let names: Vec<&str> = batch.columns.fields().iter().map(|f| f.name().as_str()).collect();
    let mut expected = CUSTOMER_COLUMNS.to_vec();
    expected.push("loyalty_tier");
    assert_eq!(names, expected);
    assert_eq!(batch.data.num_rows(), 5);
    assert_eq!(batch.data.num_columns(), 11 + 6);
    let tier = col(&batch, "loyalty_tier").as_string::<i32>();
    assert!(tier.is_null(0) && tier.is_null(1), "v1 rows have no loyalty_tier");
    assert_eq!(tier.value(2), "silver");
    assert_eq!(tier.value(3), "gold");
    assert!(tier.is_null(4));
    assert_row_is_after(&batch, 0, &v1a);
    assert_row_is_after(&batch, 1, &v1b);
    assert_row_is_after(&batch, 2, &v2);
    assert_eq!(
        batch.kinds,
        vec![
            ChangeKind::Upsert,
            ChangeKind::Upsert,
            ChangeKind::Upsert,
            ChangeKind::Upsert,
            ChangeKind::Delete
        ]
    );
    assert_eq!(col(&batch, "id").as_primitive::<Int32Type>().value(4), 1);
    // arrival order kept across segments, per-partition offsets
    let offsets: Vec<(i32, i64)> = batch.offsets.iter().map(|o| (o.partition, o.next_offset)).collect();
    assert_eq!(offsets, vec![(0, 5_001), (1, 4)]);
    let kafka_offsets = col(&batch, "__kafka_offset").as_primitive::<Int64Type>();
    assert_eq!(
        kafka_offsets.values().to_vec(),
        vec![v1a.offset, v1b.offset, v2.offset, 5_000, 3]
    );
    let partitions = col(&batch, "__kafka_partition").as_primitive::<Int32Type>();
    assert_eq!(partitions.values().to_vec(), vec![0, 0, 0, 0, 1]);
}

// ---------------------------------------------------------------------------------------------
// TOAST placeholder, truncate

#[test]
fn toast_placeholder_is_reported_and_null() {
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    // row 0: plain
    push(
        &mut dec,
        0,
        1,
        Some(&customer_key(1)),
        Some(&upsert(2, "r", customer(1, "a@x", false))),
    )
    .unwrap();
    // row 1: notes (nullable text) and profile (jsonb) unchanged-TOASTed
    let mut row = customer(2, "b@x", false);
    set(&mut row, "notes", union(1, text(UNAVAILABLE)));
    set(&mut row, "profile", union(1, text(UNAVAILABLE)));
    push(&mut dec, 0, 2, Some(&customer_key(2)), Some(&upsert(2, "u", row))).unwrap();
    // row 2: full_name (NOT NULL varchar) TOASTed, in the v2 schema
    let mut row = customer(3, "c@x", true);
    set(&mut row, "full_name", text(UNAVAILABLE));
    set(&mut row, "loyalty_tier", union(1, text(UNAVAILABLE)));
    push(&mut dec, 0, 3, Some(&customer_key(3)), Some(&upsert(7, "u", row))).unwrap();
    let batch = finish(dec);

    assert_eq!(batch.len(), 3);
    let mut unavailable = batch.unavailable.clone();
    unavailable.sort();
    // columns: notes 3, profile 8, full_name 2, loyalty_tier 10
    assert_eq!(unavailable, vec![(1, 3), (1, 8), (2, 2), (2, 10)]);
    for (row, c) in &unavailable {
        assert!(batch.data.column(*c).is_null(*row), "cell ({row}, {c}) must be null");
    }
    // the placeholder text never reaches the data
    for c in 0..batch.columns.fields().len() {
        if let Some(s) = batch.data.column(c).as_string_opt::<i32>() {
            assert!(s.iter().all(|v| v != Some(UNAVAILABLE)));
        }
    }
    assert_eq!(col(&batch, "notes").as_string::<i32>().value(0), "some notes");
    assert_eq!(col(&batch, "full_name").as_string::<i32>().value(1), "Ada Lovelace");
}

#[test]
fn truncate_without_key_is_a_truncate_row() {
    let value = envelope(
        2,
        Synth {
            op: "t",
            before: None,
            after: None,
            source_ts_ms: 1_795_292_990_000,
            lsn: Some(43_999_999),
        },
    );
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push(
        &mut dec,
        0,
        1,
        Some(&customer_key(1)),
        Some(&upsert(2, "c", customer(1, "a@x", false))),
    )
    .unwrap();
    push(&mut dec, 0, 2, None, Some(&value)).expect("a truncate has no key");
    let batch = finish(dec);
    assert_eq!(batch.kinds, vec![ChangeKind::Upsert, ChangeKind::Truncate]);
    assert_eq!(col(&batch, "__op").as_string::<i32>().value(1), "t");
    assert!(col(&batch, "__deleted").as_boolean().value(1));
    assert_eq!(
        col(&batch, "__source_lsn").as_primitive::<Int64Type>().value(1),
        43_999_999
    );
    for name in CUSTOMER_COLUMNS {
        assert!(col(&batch, name).is_null(1), "{name}");
    }
    assert_eq!(batch.key_columns, vec!["id".to_string()]);
}

mod corrupt;
mod records;

/// `decode_cached` decodes nothing while the cache lacks a schema the records name (and
/// dead-letters nothing for it); once the schemas are in the cache it decodes what `decode`
/// does. `decode` without them dead-letters the record.
#[test]
fn decode_cached_waits_for_schemas_decode_dead_letters() {
    let ex = example("customers_c_insert");
    let rec = crate::RawRecord {
        topic: "dbz.public.customers".into(),
        partition: ex.partition,
        offset: ex.offset,
        key: ex.key.clone().map(Into::into),
        value: ex.value.clone().map(Into::into),
        timestamp_ms: None,
    };
    let cache = Arc::new(crate::registry::SchemaCache::new(&Default::default()).unwrap());
    let decoder = crate::Decoder::new(cache.clone());
    let stream = StreamId::new("g", "dbz.public.customers");
    let records = [rec];
    assert!(decoder.decode_cached("customers", &stream, &records).unwrap().is_none());
    let strict = decoder.decode("customers", &stream, &records).unwrap();
    assert_eq!(strict.dead_letters.len(), 1);
    // the record's offset still moves on, with no row
    assert!(strict.batch.is_none_or(|b| b.kinds.is_empty()));
    for bytes in [&ex.key, &ex.value] {
        let (id, _) = frame::split(bytes.as_deref().unwrap()).unwrap();
        cache.insert(id, &registry().text[&id]).unwrap();
    }
    let cached = decoder.decode_cached("customers", &stream, &records).unwrap().unwrap();
    assert!(cached.dead_letters.is_empty());
    let batch = cached.batch.unwrap();
    assert_eq!(batch.kinds, vec![ChangeKind::Upsert]);
    assert_row_is_after(&batch, 0, &ex);
}
