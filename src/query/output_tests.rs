//! Golden test: one batch holding every type the Avro mapping produces (and nested lists),
//! with empty strings, NULLs, NaN/±Infinity, decimals and binary, printed in every format and
//! compared as text with `tests/sql/output/all_types.*`. The CSV file was written by hand from
//! PostgreSQL's rules (COPY CSV, array_out, float8out with extra_float_digits=1, bytea hex).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int32Array,
    ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::array::{Int32Builder, RecordBatch};

use super::*;

fn tags() -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    b.append_value([Some("a"), Some("b c"), None]);
    b.append_value(Vec::<Option<&str>>::new());
    b.append_value([Some("NULL"), Some("quo\"te"), Some("back\\slash"), Some("")]);
    b.append_null();
    Arc::new(b.finish())
}

fn matrix() -> ArrayRef {
    let mut b = ListBuilder::new(ListBuilder::new(Int32Builder::new()));
    b.append_value([Some(vec![Some(1), Some(2)]), Some(vec![Some(3), None])]);
    b.append_value([None::<Vec<Option<i32>>>]);
    b.append_value(Vec::<Option<Vec<Option<i32>>>>::new());
    b.append_null();
    Arc::new(b.finish())
}

fn all_types() -> RecordBatch {
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int32Array::from(vec![1, 2, 3, 4]))),
        (
            "name",
            Arc::new(StringArray::from(vec![Some("plain"), Some(""), None, Some(" padded ")])),
        ),
        (
            "note",
            Arc::new(StringArray::from(vec![
                Some("with \"quote\", comma"),
                Some("line\nbreak"),
                Some("\\."),
                Some("{braces}"),
            ])),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)])),
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from(vec![Some(1230), Some(-5), None, Some(9_999_999_999)])
                    .with_precision_and_scale(12, 2)
                    .expect("decimal"),
            ),
        ),
        (
            "ratio",
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(f64::INFINITY),
                Some(1e20),
                Some(0.1),
            ])),
        ),
        (
            "tiny",
            Arc::new(Float64Array::from(vec![
                Some(f64::NEG_INFINITY),
                Some(1e-5),
                Some(1.5e-4),
                None,
            ])),
        ),
        (
            "small",
            Arc::new(Float32Array::from(vec![Some(1.5f32), Some(1e7), Some(123456.0), None])),
        ),
        (
            "born",
            Arc::new(Date32Array::from(vec![Some(19782), Some(0), None, Some(-1)])),
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1_704_164_645_500_000),
                    Some(0),
                    None,
                    Some(1_704_164_645_000_001),
                ])
                .with_timezone("UTC"),
            ),
        ),
        (
            "local",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_704_164_645_120),
                None,
                Some(0),
                Some(1),
            ])),
        ),
        (
            "raw",
            Arc::new(BinaryArray::from(vec![
                Some(&[0xde_u8, 0xad][..]),
                Some(&[][..]),
                None,
                Some(&[0, 255][..]),
            ])),
        ),
        ("tags", tags()),
        ("matrix", matrix()),
    ];
    RecordBatch::try_from_iter(columns).expect("batch")
}

/// Compares `actual` with golden file `name`; `CORMORANT_BLESS=1` rewrites the file instead
/// (then read the diff: the golden files are the specification).
fn assert_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sql/output")
        .join(name);
    if std::env::var_os("CORMORANT_BLESS").is_some() {
        std::fs::write(&path, actual).expect("bless");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "{name}");
}

fn render(f: impl Fn(&[RecordBatch], &mut dyn Write) -> anyhow::Result<()>) -> String {
    let mut out = Vec::new();
    f(&[all_types()], &mut out).expect("render");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn csv_is_postgres_copy_csv() {
    assert_golden("all_types.csv", &render(write_csv));
}

#[test]
fn json_keeps_nulls_and_lists() {
    assert_golden("all_types.json", &render(|b, w| write_json(b, false, w)));
    assert_golden("all_types.ndjson", &render(|b, w| write_json(b, true, w)));
}

#[test]
fn table_shows_null_apart_from_empty() {
    assert_golden("all_types.txt", &render(write_table));
}

#[test]
fn floats_print_as_postgres_does() {
    for (v, text) in [
        (1e15, "1e+15"),
        (123_456_789_012_345.0, "123456789012345"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5e-300, "-2.5e-300"),
        (1.0 / 3.0, "0.3333333333333333"),
        (-0.0, "-0"),
    ] {
        assert_eq!(pg_float(v, 15), text, "{v}");
    }
    assert_eq!(pg_float(1e6, 6), "1e+06");
    assert_eq!(pg_float(123_456.0, 6), "123456");
    assert_eq!(pg_float(f64::from(0.1f32), 6), "0.1");
}

#[test]
fn an_untyped_null_is_null() {
    let batch = RecordBatch::try_from_iter([
        ("x", Arc::new(arrow::array::NullArray::new(1)) as ArrayRef),
        ("y", Arc::new(StringArray::from(vec![""])) as ArrayRef),
    ])
    .expect("batch");
    let mut out = Vec::new();
    write_csv(&[batch], &mut out).expect("csv");
    assert_eq!(String::from_utf8(out).expect("utf-8"), "x,y\n,\"\"\n");
}
