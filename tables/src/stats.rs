//! Exact file statistics for the types deltalake's writer gets wrong.
//!
//! deltalake 1.1 computes an `add`'s min/max from the Parquet footer and converts decimals to
//! `f64` on the way: a decimal(38,10) column whose minimum is
//! `-9999999999999999999999999999.9999999999` is written as `-9.999999999999997e+27` — LARGER
//! than the true minimum, and a number older readers (python deltalake 0.25) refuse to parse
//! back into decimal(38,10) ("parse decimal overflow"). It also truncates timestamp maxima to
//! milliseconds, below the true maximum when the values carry microseconds. The Delta protocol
//! requires min/max to bound every value of the file; an engine that skips files by statistics
//! would drop rows. This module rewrites those entries from the rows the file holds.
//!
//! Invariants: a decimal's min/max is its exact value, written as a JSON number literal with
//! the column's scale; a timestamp's maximum is rounded UP to the next millisecond when it has
//! a sub-millisecond part; entries deltalake left out (columns past the indexed-column limit,
//! all-null columns) stay out; every other entry is kept as deltalake wrote it.

use std::collections::BTreeMap;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::{max, min};
use arrow::datatypes::{
    DataType, Decimal128Type, DecimalType, TimeUnit, TimestampMicrosecondType, TimestampNanosecondType,
};
use deltalake::kernel::Add;
use serde_json::{Map, Value};

use crate::error::{Result, TableError};

/// Replaces the inexact entries of the `adds`' statistics; `data` holds the rows the adds'
/// files were written from, in order (a rolled write's files hold consecutive slices).
pub(crate) fn make_exact(adds: &mut [Add], data: &RecordBatch) -> Result<()> {
    let mut start = 0usize;
    for add in adds {
        let Some(text) = add.stats.as_deref() else { continue };
        let Ok(Value::Object(stats)) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let rows = stats.get("numRecords").and_then(Value::as_u64).unwrap_or(0) as usize;
        if start + rows > data.num_rows() {
            return Err(TableError::Corrupt(format!(
                "file {} claims {rows} rows past the {} written",
                add.path,
                data.num_rows()
            )));
        }
        let slice = data.slice(start, rows);
        start += rows;
        let bounds = exact_bounds(&slice);
        if bounds.iter().any(|b| !b.is_empty()) {
            add.stats = Some(render(&stats, &bounds)?);
        }
    }
    Ok(())
}

/// Exact JSON literals for the min (`[0]`) and max (`[1]`) of the columns deltalake gets
/// wrong, by top-level column name.
fn exact_bounds(rows: &RecordBatch) -> [BTreeMap<String, String>; 2] {
    let mut out = [BTreeMap::new(), BTreeMap::new()];
    for (field, column) in rows.schema().fields().iter().zip(rows.columns()) {
        let name = field.name().clone();
        match field.data_type() {
            DataType::Decimal128(precision, scale) => {
                let values = column.as_primitive::<Decimal128Type>();
                let literal = |v: i128| Decimal128Type::format_decimal(v, *precision, *scale);
                if let (Some(lo), Some(hi)) = (min(values), max(values)) {
                    out[0].insert(name.clone(), literal(lo));
                    out[1].insert(name, literal(hi));
                }
            }
            DataType::Timestamp(unit, tz) => {
                let micros = match unit {
                    TimeUnit::Microsecond => max(column.as_primitive::<TimestampMicrosecondType>()),
                    // nanoseconds round up to whole microseconds first: still an upper bound
                    TimeUnit::Nanosecond => max(column.as_primitive::<TimestampNanosecondType>())
                        .map(|n| n.div_euclid(1000) + i64::from(n.rem_euclid(1000) != 0)),
                    TimeUnit::Second | TimeUnit::Millisecond => None, // exact in milliseconds
                };
                if let Some(literal) = micros.and_then(|m| ceil_millis(m, tz.is_some())) {
                    out[1].insert(name, literal);
                }
            }
            _ => {}
        }
    }
    out
}

/// A timestamp maximum in microseconds, rounded up to the millisecond and formatted as
/// deltalake formats timestamps (UTC with `Z`, or without a zone); `None` when it is a whole
/// millisecond already (deltalake's entry is exact).
fn ceil_millis(micros: i64, zoned: bool) -> Option<String> {
    if micros.rem_euclid(1000) == 0 {
        return None;
    }
    let millis = micros.div_euclid(1000) + 1;
    let t = chrono::DateTime::from_timestamp_millis(millis)?;
    let format = if zoned {
        "%Y-%m-%dT%H:%M:%S%.3fZ"
    } else {
        "%Y-%m-%d %H:%M:%S%.3f"
    };
    serde_json::to_string(&t.format(format).to_string()).ok()
}

/// The statistics object as JSON text with `bounds` written verbatim into `minValues` and
/// `maxValues` — by hand because a `serde_json::Value` number is an `f64` or an integer and
/// cannot carry a 38-digit decimal (serde_json's `arbitrary_precision` would change number
/// parsing for every crate in the build).
fn render(stats: &Map<String, Value>, bounds: &[BTreeMap<String, String>; 2]) -> Result<String> {
    let json = |v: &Value| serde_json::to_string(v).map_err(|e| TableError::Corrupt(format!("file statistics: {e}")));
    let mut out = String::from("{");
    for (i, (key, value)) in stats.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json(&Value::String(key.clone()))?);
        out.push(':');
        let exact = match key.as_str() {
            "minValues" => Some(&bounds[0]),
            "maxValues" => Some(&bounds[1]),
            _ => None,
        };
        match (exact, value) {
            (Some(exact), Value::Object(columns)) => {
                out.push('{');
                for (j, (column, v)) in columns.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push_str(&json(&Value::String(column.clone()))?);
                    out.push(':');
                    match exact.get(column) {
                        Some(literal) => out.push_str(literal),
                        None => out.push_str(&json(v)?),
                    }
                }
                out.push('}');
            }
            _ => out.push_str(&json(value)?),
        }
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Decimal128Array, Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn add_with(stats: &str) -> Add {
        Add {
            path: "f.parquet".into(),
            stats: Some(stats.into()),
            ..Default::default()
        }
    }

    #[test]
    fn decimals_and_timestamp_maxima_become_exact_bounds() {
        let extreme = 99_999_999_999_999_999_999_999_999_999_999_999_999i128; // 38 nines
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("balance", DataType::Decimal128(38, 10), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let data = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(
                    Decimal128Array::from(vec![Some(-extreme), None, Some(extreme)])
                        .with_precision_and_scale(38, 10)
                        .unwrap(),
                ),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_000_000), Some(1_000_001_500), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let written = r#"{"numRecords":3,"minValues":{"id":1,"balance":-9.999999999999997e27,"at":"1970-01-01T00:00:01Z"},"maxValues":{"id":3,"balance":9.999999999999997e27,"at":"1970-01-01T00:16:40.001Z"},"nullCount":{"id":0,"balance":1,"at":1}}"#;
        let mut adds = vec![add_with(written)];
        make_exact(&mut adds, &data).unwrap();
        let stats = adds[0].stats.as_deref().unwrap();
        assert!(
            stats.contains(r#""balance":-9999999999999999999999999999.9999999999"#),
            "{stats}"
        );
        assert!(
            stats.contains(r#""balance":9999999999999999999999999999.9999999999"#),
            "{stats}"
        );
        assert!(
            stats.contains(r#""at":"1970-01-01T00:16:40.002Z""#),
            "max rounds up: {stats}"
        );
        assert!(stats.contains(r#""at":"1970-01-01T00:00:01Z""#), "min stays: {stats}");
        let parsed: Value = serde_json::from_str(stats).unwrap();
        assert_eq!(parsed["nullCount"]["balance"], 1);
        assert_eq!(parsed["maxValues"]["id"], 3);
    }

    #[test]
    fn rolled_files_take_their_own_slices() {
        let schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Decimal128(5, 2), true)]));
        let data = RecordBatch::try_new(
            schema,
            vec![Arc::new(
                Decimal128Array::from(vec![100, 250, -75, 5])
                    .with_precision_and_scale(5, 2)
                    .unwrap(),
            )],
        )
        .unwrap();
        let mut adds = vec![
            add_with(r#"{"numRecords":2,"minValues":{"d":1.0},"maxValues":{"d":2.5},"nullCount":{"d":0}}"#),
            add_with(r#"{"numRecords":2,"minValues":{"d":-0.75},"maxValues":{"d":0.05},"nullCount":{"d":0}}"#),
        ];
        make_exact(&mut adds, &data).unwrap();
        assert!(adds[0].stats.as_deref().unwrap().contains(r#""minValues":{"d":1.00}"#));
        assert!(adds[1].stats.as_deref().unwrap().contains(r#""maxValues":{"d":0.05}"#));
        assert!(adds[1].stats.as_deref().unwrap().contains(r#""minValues":{"d":-0.75}"#));
        assert!(make_exact(&mut [add_with(r#"{"numRecords":9}"#)], &data).is_err());
    }
}
