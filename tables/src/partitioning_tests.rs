use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Date32Array, Int32Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::*;

fn items(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parses_items_and_refuses_with_a_hint() {
    let p = Partitioning::parse(&items(&["tier", "date(created_at)", "DATE( at ) as day"])).expect("parse");
    assert_eq!(p.names(), ["tier", "created_at_date", "day"]);
    assert_eq!(
        p.canonical(),
        r#"["tier","date(created_at) AS created_at_date","date(at) AS day"]"#
    );
    let back: Vec<String> = serde_json::from_str(&p.canonical()).expect("json");
    assert_eq!(Partitioning::parse(&back).expect("reparse"), p);
    for (bad, says) in [
        (vec!["__deleted"], "metadata column"),
        (vec!["a", "a"], "twice"),
        (vec!["a b"], "not a column name"),
        (vec!["date(x"], "lacks ')'"),
        (vec!["date(x) y"], "expected AS"),
        (vec!["a", "b", "c", "d", "e"], "at most 4"),
    ] {
        let e = Partitioning::parse(&items(&bad)).expect_err("refused");
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

fn source() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("tier", DataType::Utf8, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("score", DataType::Float64, true),
    ])
}

#[test]
fn realize_checks_types_and_leaves_missing_columns_pending() {
    let p = Partitioning::parse(&items(&["tier", "date(at) AS day", "later", "date(then)"])).expect("parse");
    let (realized, derived) = p.realize(&source()).expect("realize");
    assert_eq!(realized, ["tier", "day"]);
    assert_eq!(derived, vec![Field::new("day", DataType::Date32, true)]);
    assert_eq!(p.pending(&realized), ["later", "then"]);
    assert_eq!(p.restrict(&realized).names(), ["tier", "day"]);
    // a table schema already holding the derived column adds no field
    let mut with_day: Vec<Field> = source().fields().iter().map(|f| f.as_ref().clone()).collect();
    with_day.push(Field::new("day", DataType::Date32, true));
    assert!(p.realize(&Schema::new(with_day.clone())).expect("realize").1.is_empty());
    assert!(
        p.clash(&Schema::new(with_day))
            .expect("clash")
            .contains("the source has a column day too")
    );
    for (bad, says) in [
        ("score", "has type Float64"),
        ("date(tier)", "date() takes a date or timestamp"),
    ] {
        let e = Partitioning::parse(&items(&[bad]))
            .expect("parse")
            .realize(&source())
            .expect_err("refused");
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn split_groups_rows_in_order_and_serializes_values() {
    let p = Partitioning::parse(&items(&["tier", "date(at) AS day"])).expect("parse");
    let mut fields: Vec<Field> = source().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("day", DataType::Date32, true));
    let schema = Arc::new(Schema::new(fields));
    let day = 86_400_000_000i64;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(StringArray::from(vec![
                Some("gold"),
                None,
                Some("gold"),
                Some(""),
                None,
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(day + 5), Some(-1), Some(day + 7), Some(0), Some(-day)])
                    .with_timezone("UTC"),
            ),
            Arc::new(arrow::array::Float64Array::from(vec![0.0; 5])),
            Arc::new(Date32Array::from(vec![None::<i32>; 5])),
        ],
    )
    .expect("batch");
    let (rows, groups) = p.split(&p.derive(&batch).expect("derive")).expect("split");
    let ids: Vec<i32> = rows
        .column(0)
        .as_any()
        .downcast_ref::<Int32Array>()
        .expect("ids")
        .values()
        .to_vec();
    assert_eq!(
        ids,
        [1, 3, 2, 5, 4],
        "groups in order of first appearance, rows in input order"
    );
    let expect = |tier: Option<&str>, day: &str| -> Values {
        [
            ("tier".to_string(), tier.map(str::to_string)),
            ("day".to_string(), Some(day.to_string())),
        ]
        .into()
    };
    assert_eq!(
        groups,
        vec![
            (2, expect(Some("gold"), "1970-01-02")),
            (2, expect(None, "1969-12-31")),
            (1, expect(None, "1970-01-01")),
        ]
    );
    // read back: the values injected into rows whose file lacks them
    let blank = RecordBatch::try_new(
        rows.schema(),
        rows.columns()
            .iter()
            .enumerate()
            .map(|(i, c)| match i {
                0 => c.slice(0, 2),
                _ => arrow::array::new_null_array(c.data_type(), 2),
            })
            .collect(),
    )
    .expect("blank");
    let back = inject(&blank, &groups[0].1).expect("inject");
    let tier = back.column(1).as_any().downcast_ref::<StringArray>().expect("tier");
    assert_eq!((tier.value(0), tier.value(1)), ("gold", "gold"));
    let day = back.column(4).as_any().downcast_ref::<Date32Array>().expect("day");
    assert_eq!(day.value(0), 1);
    let back = inject(&blank, &groups[1].1).expect("inject null");
    assert!(back.column(1).is_null(0));
}

#[test]
fn every_allowed_type_round_trips() {
    let cases: Vec<(DataType, ArrayRef)> = vec![
        (DataType::Int32, Arc::new(Int32Array::from(vec![-7]))),
        (DataType::Boolean, Arc::new(BooleanArray::from(vec![false]))),
        (DataType::Date32, Arc::new(Date32Array::from(vec![-400]))),
        (DataType::Utf8, Arc::new(StringArray::from(vec!["o'neil zoë / %2F"]))),
    ];
    for (t, a) in cases {
        let schema = Arc::new(Schema::new(vec![Field::new("c", t.clone(), true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![a.clone()]).expect("batch");
        let p = Partitioning::parse(&items(&["c"])).expect("parse");
        let (_, groups) = p.split(&batch).expect("split");
        let blank = RecordBatch::try_new(schema, vec![arrow::array::new_null_array(&t, 1)]).expect("blank");
        let back = inject(&blank, &groups[0].1).expect("inject");
        assert_eq!(back.column(0).as_ref(), a.as_ref(), "{t}: {:?}", groups[0].1);
    }
}

#[test]
fn infinite_timestamps_have_a_null_date_and_odd_items_do_not_panic() {
    let p = Partitioning::parse(&items(&["date(at) AS day"])).expect("parse");
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("day", DataType::Date32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(i64::MAX), Some(i64::MIN), Some(-1), None])
                    .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from(vec![None::<i32>; 4])),
        ],
    )
    .expect("batch");
    let derived = p.derive(&batch).expect("PostgreSQL's infinity does not fail the write");
    let day = derived.column(1).as_any().downcast_ref::<Date32Array>().expect("dates");
    assert_eq!(day.iter().collect::<Vec<_>>(), [None, None, Some(-1), None]);
    let (_, groups) = p.split(&derived).expect("split");
    assert_eq!(groups.len(), 2, "{groups:?}");
    for bad in ["date(ts) abé", "date(ts) as", "date()"] {
        assert!(Partitioning::parse(&items(&[bad])).is_err(), "{bad}");
    }
}
