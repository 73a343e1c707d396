//! Bad records, the metadata columns, and the whole capture against PostgreSQL's own dumps.

use super::*;

// ---------------------------------------------------------------------------------------------
// bad records

#[test]
fn bad_records_fail_leave_no_row_and_still_advance_the_offset() {
    let good = example("customers_c_insert");
    let key = good.key.clone().unwrap();
    let value = good.value.clone().unwrap();
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push(&mut dec, 0, 10, Some(&key), Some(&value)).unwrap();

    // truncated value
    let err = push(&mut dec, 0, 11, Some(&key), Some(&value[..value.len() - 3])).unwrap_err();
    assert!(matches!(err, ConnectorError::CorruptAvro(_)), "{err:?}");
    // trailing garbage
    let mut long = value.clone();
    long.push(0);
    let err = push(&mut dec, 0, 12, Some(&key), Some(&long)).unwrap_err();
    assert!(matches!(err, ConnectorError::CorruptAvro(_)), "{err:?}");
    // garbage after the frame header
    let err = push(&mut dec, 0, 13, Some(&key), Some(&frame::frame(2, &[0xff; 40]))).unwrap_err();
    assert!(matches!(err, ConnectorError::CorruptAvro(_)), "{err:?}");
    // corrupt key
    let err = push(&mut dec, 0, 14, Some(&frame::frame(1, &[0x80])), Some(&value)).unwrap_err();
    assert!(matches!(err, ConnectorError::CorruptAvro(_)), "{err:?}");
    // rows that pass the structural scan but fail half way: a placeholder is recorded in
    // `notes` (column 3), then `created_at` (column 6) is not a timestamp; and invalid UTF-8 in
    // `email` (column 1)
    let mut row = customer(50, "e@x", false);
    set(&mut row, "notes", union(1, text(UNAVAILABLE)));
    set(&mut row, "created_at", text("NOT-A-TIMESTAMP-AT-ALL!!"));
    let bad = upsert(2, "u", row);
    let err = push(&mut dec, 0, 15, Some(&customer_key(50)), Some(&bad)).unwrap_err();
    assert!(matches!(err, ConnectorError::CorruptAvro(_)), "{err:?}");
    let mut row = customer(51, "BADUTF8", false);
    set(&mut row, "notes", union(1, text(UNAVAILABLE)));
    let mut bad = upsert(2, "c", row);
    let at = bad.windows(7).position(|w| w == b"BADUTF8").unwrap();
    bad[at] = 0xff;
    let err = push(&mut dec, 0, 16, Some(&customer_key(51)), Some(&bad)).unwrap_err();
    assert!(matches!(err, ConnectorError::CorruptAvro(_)), "{err:?}");
    // not Debezium: unknown op; a change without a key
    let err = push(
        &mut dec,
        0,
        17,
        Some(&key),
        Some(&upsert(2, "x", customer(1, "a", false))),
    )
    .unwrap_err();
    assert!(matches!(err, ConnectorError::NotDebezium(_)), "{err:?}");
    let err = push(&mut dec, 0, 18, None, Some(&value)).unwrap_err();
    assert!(matches!(err, ConnectorError::MissingKey(_)), "{err:?}");

    // a good row after all that, with a placeholder, keeps the right row number
    let mut row = customer(52, "ok@x", false);
    set(&mut row, "notes", union(1, text(UNAVAILABLE)));
    push(&mut dec, 0, 19, Some(&customer_key(52)), Some(&upsert(2, "u", row))).unwrap();

    let batch = finish(dec);
    assert_eq!(batch.len(), 2);
    assert_eq!(batch.data.num_rows(), 2);
    batch
        .data
        .columns()
        .iter()
        .for_each(|c| c.to_data().validate_full().unwrap());
    assert_eq!(
        batch.positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![10, 19]
    );
    assert_eq!(
        col(&batch, "id").as_primitive::<Int32Type>().values().to_vec(),
        vec![1001, 52]
    );
    assert_row_is_after(&batch, 0, &good);
    assert_eq!(batch.unavailable, vec![(1, 3)]);
    assert_eq!(batch.offsets[0].next_offset, 20);
}

#[test]
fn only_bad_records_still_move_the_offset() {
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    let ex = example("customers_r_snapshot");
    let mut v = ex.value.clone().unwrap();
    v.truncate(20);
    assert!(push(&mut dec, 0, 41, ex.key.as_deref(), Some(&v)).is_err());
    let batch = finish(dec);
    assert_eq!(batch.len(), 0);
    assert_eq!(batch.offsets[0].next_offset, 42);
}

/// The row is decoded in the same pass that reads op: an `after` a delete, a truncate or a
/// message should not carry is dropped again, and a bad record of a new schema adds no columns.
#[test]
fn rows_decoded_before_op_is_known_are_dropped_when_op_says_so() {
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    let delete_with_after = envelope(
        2,
        Synth {
            op: "d",
            before: None,
            after: Some(customer(7, "after@x", false)),
            source_ts_ms: 1_000,
            lsn: Some(1),
        },
    );
    push(&mut dec, 0, 1, Some(&customer_key(7)), Some(&delete_with_after)).unwrap();
    push(
        &mut dec,
        0,
        2,
        Some(&customer_key(8)),
        Some(&upsert(2, "m", customer(8, "m@x", false))),
    )
    .unwrap();
    // schema 7 (v2: one more column), but not Debezium: dead-lettered, no trace
    let err = push(
        &mut dec,
        0,
        3,
        Some(&customer_key(9)),
        Some(&upsert(7, "x", customer(9, "v2@x", true))),
    )
    .unwrap_err();
    assert!(matches!(err, ConnectorError::NotDebezium(_)), "{err:?}");
    push(
        &mut dec,
        0,
        4,
        Some(&customer_key(10)),
        Some(&upsert(2, "c", customer(10, "c@x", false))),
    )
    .unwrap();
    // a truncate carrying a row (with a TOAST placeholder) is still an empty truncate row
    let mut row = customer(11, "t@x", false);
    set(&mut row, "notes", union(1, text(UNAVAILABLE)));
    push(&mut dec, 0, 5, None, Some(&upsert(2, "t", row))).unwrap();

    let batch = finish(dec);
    assert_eq!(
        batch.kinds,
        vec![ChangeKind::Delete, ChangeKind::Upsert, ChangeKind::Truncate]
    );
    assert_eq!(
        batch.positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![1, 4, 5]
    );
    let ids = col(&batch, "id").as_primitive::<Int32Type>();
    assert_eq!((ids.value(0), ids.value(1)), (7, 10));
    assert!(col(&batch, "email").is_null(0), "a delete takes only its key");
    assert_eq!(col(&batch, "email").as_string::<i32>().value(1), "c@x");
    for name in CUSTOMER_COLUMNS {
        assert!(col(&batch, name).is_null(2), "{name} of the truncate row");
    }
    assert!(batch.unavailable.is_empty(), "{:?}", batch.unavailable);
    assert_eq!(
        batch.columns.fields().len(),
        CUSTOMER_COLUMNS.len(),
        "the dead-lettered v2 record added no column"
    );
    assert_eq!(batch.offsets[0].next_offset, 6);
}

// ---------------------------------------------------------------------------------------------
// metadata columns

#[test]
fn meta_columns_hold_op_deleted_source_ts_lsn_partition_offset() {
    let del = example("customers_d_delete");
    let snap = example("customers_r_snapshot");
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push_example(&mut dec, &snap).unwrap();
    // the same delete bytes as if read from partition 3
    push(&mut dec, 3, del.offset, del.key.as_deref(), del.value.as_deref()).unwrap();
    let batch = finish(dec);

    let schema = batch.data.schema();
    let names: Vec<&str> = schema.fields()[10..].iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "__op",
            "__deleted",
            "__source_ts",
            "__source_lsn",
            "__kafka_partition",
            "__kafka_offset"
        ]
    );
    let ops = col(&batch, "__op").as_string::<i32>();
    assert_eq!((ops.value(0), ops.value(1)), ("r", "d"));
    let deleted = col(&batch, "__deleted").as_boolean();
    assert_eq!((deleted.value(0), deleted.value(1)), (false, true));

    let ts = col(&batch, "__source_ts");
    assert_eq!(
        ts.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    for (row, ex) in [(0, &snap), (1, &del)] {
        let source_ms = ex.json["value"]["source"]["ts_ms"].as_i64().unwrap();
        let envelope_ms = ex.json["value"]["ts_ms"].as_i64().unwrap();
        assert_ne!(source_ms, envelope_ms);
        assert_eq!(
            ts.value(row),
            source_ms * 1000,
            "__source_ts is source.ts_ms, not the envelope's ts_ms"
        );
    }
    let lsn = col(&batch, "__source_lsn").as_primitive::<Int64Type>();
    assert_eq!(lsn.value(0), snap.json["value"]["source"]["lsn"].as_i64().unwrap());
    assert_eq!(lsn.value(1), 43_446_768);
    let partition = col(&batch, "__kafka_partition").as_primitive::<Int32Type>();
    assert_eq!((partition.value(0), partition.value(1)), (0, 3));
    let offset = col(&batch, "__kafka_offset").as_primitive::<Int64Type>();
    assert_eq!((offset.value(0), offset.value(1)), (snap.offset, del.offset));
    let offsets: Vec<(i32, i64)> = batch.offsets.iter().map(|o| (o.partition, o.next_offset)).collect();
    assert_eq!(offsets, vec![(0, snap.offset + 1), (3, del.offset + 1)]);
}

#[test]
fn null_lsn_is_a_null_source_lsn() {
    let value = envelope(
        2,
        Synth {
            op: "c",
            before: None,
            after: Some(customer(9, "n@x", false)),
            source_ts_ms: 123,
            lsn: None,
        },
    );
    let mut dec = TableDecoder::new(StreamId::new("g", "s"));
    push(&mut dec, 0, 0, Some(&customer_key(9)), Some(&value)).unwrap();
    let batch = finish(dec);
    assert!(col(&batch, "__source_lsn").is_null(0));
    assert_eq!(
        col(&batch, "__source_ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        123_000
    );
}

// ---------------------------------------------------------------------------------------------
// the whole capture, checked against PostgreSQL's own COPY output

pub(super) struct Event {
    pub(super) topic: String,
    partition: i32,
    offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
}

pub(super) fn events() -> Vec<Event> {
    read("events.jsonl")
        .lines()
        .map(|line| {
            let j: Json = serde_json::from_str(line).expect("event json");
            Event {
                topic: j["topic"].as_str().expect("topic").to_string(),
                partition: j["partition"].as_i64().expect("partition") as i32,
                offset: j["offset"].as_i64().expect("offset"),
                key: j["key"].as_str().map(b64),
                value: j["value"].as_str().map(b64),
            }
        })
        .collect()
}

/// Applies the batch rows with `offset < end` the way the lake must (last change per key wins;
/// deletes remove; truncate clears; unavailable cells keep the old value) and renders the
/// table as PostgreSQL text, keyed by the rendered key.
fn replay(batch: &ChangeBatch, end: i64, header: &[Option<String>]) -> BTreeMap<Vec<String>, Vec<Option<String>>> {
    let cols: Vec<usize> = header
        .iter()
        .map(|h| {
            batch
                .columns
                .index_of(h.as_deref().unwrap())
                .expect("csv column in batch")
        })
        .collect();
    let keys: Vec<usize> = batch
        .key_columns
        .iter()
        .map(|k| batch.columns.index_of(k).unwrap())
        .collect();
    let data: &RecordBatch = &batch.data;
    let mut table: BTreeMap<Vec<String>, Vec<Option<String>>> = BTreeMap::new();
    for row in 0..batch.len() {
        if batch.positions[row].offset >= end {
            continue;
        }
        let key: Vec<String> = keys
            .iter()
            .map(|c| pg_text(data.column(*c), row).expect("key never null"))
            .collect();
        match batch.kinds[row] {
            ChangeKind::Upsert => {
                let old = table.get(&key).cloned();
                let new = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match (&old, batch.unavailable.contains(&(row, *c))) {
                        (Some(old), true) => old[i].clone(),
                        _ => pg_text(data.column(*c), row),
                    })
                    .collect();
                table.insert(key, new);
            }
            ChangeKind::Delete => {
                table.remove(&key);
            }
            ChangeKind::Truncate => table.clear(),
        }
    }
    table
}

#[test]
fn whole_capture_decodes_and_replays_to_postgres_state_at_every_marker() {
    let events = events();
    assert_eq!(events.len(), 9211);
    let summary: Json = serde_json::from_str(&read("summary.json")).unwrap();
    let markers: Json = serde_json::from_str(&read("expected/markers.json")).unwrap();
    for table in ["customers", "orders", "products"] {
        let topic = format!("dbz.public.{table}");
        let mut dec = TableDecoder::new(StreamId::new("g", &topic));
        let mut last = 0;
        for e in events.iter().filter(|e| e.topic == topic) {
            push(&mut dec, e.partition, e.offset, e.key.as_deref(), e.value.as_deref())
                .unwrap_or_else(|err| panic!("{topic} offset {}: {err}", e.offset));
            last = e.offset;
        }
        let batch = finish(dec);
        let counts = &summary["events_by_topic_and_op"][&topic];
        let n = |op: &str| counts[op].as_u64().unwrap() as usize;
        assert_eq!(
            batch.len(),
            n("r") + n("c") + n("u") + n("d"),
            "{table}: one row per non-tombstone"
        );
        assert_eq!(batch.kinds.iter().filter(|k| **k == ChangeKind::Delete).count(), n("d"));
        assert_eq!(
            batch.offsets[0].next_offset,
            last + 1,
            "{table}: tombstones move the offset too"
        );
        assert!(batch.unavailable.is_empty());
        batch
            .data
            .columns()
            .iter()
            .for_each(|c| c.to_data().validate_full().unwrap());
        // every delete row: key columns set, everything else null
        for row in (0..batch.len()).filter(|r| batch.kinds[*r] == ChangeKind::Delete) {
            for (i, f) in batch.columns.fields().iter().enumerate() {
                let is_key = batch.key_columns.contains(f.name());
                assert_eq!(
                    batch.data.column(i).is_null(row),
                    !is_key,
                    "{table} row {row} {}",
                    f.name()
                );
            }
        }
        // the PostgreSQL table at each marker and at the end
        let mut points: Vec<(String, i64)> = markers
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["end_offset_exclusive"][table].as_i64().unwrap(),
                )
            })
            .collect();
        points.push(("final".into(), i64::MAX));
        for (point, end) in points {
            let csv = parse_csv(&read(&format!("expected/{point}/{table}.csv")));
            let (header, rows) = csv.split_first().unwrap();
            let key_idx: Vec<usize> = batch
                .key_columns
                .iter()
                .map(|k| header.iter().position(|h| h.as_deref() == Some(k)).unwrap())
                .collect();
            let expected: BTreeMap<Vec<String>, Vec<Option<String>>> = rows
                .iter()
                .map(|r| (key_idx.iter().map(|i| r[*i].clone().unwrap()).collect(), r.clone()))
                .collect();
            let got = replay(&batch, end, header);
            assert_eq!(got.len(), expected.len(), "{table} at {point}: row count");
            for (key, want) in &expected {
                let have = got
                    .get(key)
                    .unwrap_or_else(|| panic!("{table} at {point}: key {key:?} missing"));
                assert_eq!(have, want, "{table} at {point}: key {key:?} (columns {header:?})");
            }
        }
    }
}
