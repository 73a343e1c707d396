//! Statistics other engines can trust: a table whose decimal(38,10) column holds values near
//! ±10^28 and whose timestamps carry microseconds is scanned with filters by the current python
//! deltalake AND the one DataHub 1.7 pins (0.25), both of which skip files by their `add`
//! statistics. Before the statistics were exact, 0.25 refused to parse them ("parse decimal
//! overflow") and a filter on the true minimum skipped the file that holds it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Decimal128Array, Int32Array, Int64Array, StringArray};
use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, StreamId, meta_fields};
use tables::{Lake, TableWriter, WriteMode, WriterOptions};

use crate::support::unique;

/// 38 nines: the largest decimal(38,10), ±9999999999999999999999999999.9999999999.
const EXTREME: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;
/// The largest timestamp written (µs since the epoch): 2026-01-01T00:00:00.123456Z.
const LATEST_MICROS: i64 = 1_767_225_600_123_456;

fn accounts() -> ChangeBatch {
    let columns = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, true),
        Field::new("balance", DataType::Decimal128(38, 10), true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let n = 3;
    let ts = |v: Vec<Option<i64>>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let balance = Decimal128Array::from(vec![Some(-EXTREME), Some(12_345), Some(EXTREME)])
        .with_precision_and_scale(38, 10)
        .expect("decimal(38,10)");
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3])),
        Arc::new(balance),
        ts(vec![Some(0), None, Some(LATEST_MICROS)]),
        Arc::new(StringArray::from(vec!["c"; n])),
        Arc::new(BooleanArray::from(vec![false; n])),
        ts(vec![Some(0); n]),
        Arc::new(Int64Array::from(vec![None::<i64>; n])),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from(vec![0, 1, 2])),
    ];
    let mut fields: Vec<Field> = columns.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(meta_fields());
    let stream = StreamId::new("stats", "accounts");
    ChangeBatch {
        columns,
        key_columns: vec!["id".into()],
        data: RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch"),
        kinds: vec![ChangeKind::Upsert; n],
        positions: (0..n as i64).map(|offset| Position { partition: 0, offset }).collect(),
        unavailable: Vec::new(),
        offsets: vec![SourceOffset {
            stream,
            partition: 0,
            next_offset: n as i64,
        }],
    }
}

/// Rows a filtered scan returns through `python`'s deltalake, and its version.
fn filtered_rows(python: &str, uri: &str, filter: [&str; 4]) -> (String, u64) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/filter_delta.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(uri)
        .args(filter)
        .output()
        .unwrap_or_else(|e| panic!("running {python} (install it with scripts/python-reader): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{python} failed on {filter:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let version = lines.next().unwrap_or_default().to_string();
    let rows = lines.next().and_then(|l| l.trim().parse().ok()).expect("a row count");
    (version, rows)
}

fn pythons() -> Vec<String> {
    let home = std::env::var("HOME").unwrap_or_default();
    vec![
        std::env::var("CORMORANT_TEST_PYTHON")
            .unwrap_or_else(|_| format!("{home}/.cache/cormorant/delta-py/bin/python")),
        std::env::var("CORMORANT_TEST_PYTHON_OLD")
            .unwrap_or_else(|_| format!("{home}/.cache/cormorant/delta-py-025/bin/python")),
    ]
}

#[tokio::test]
async fn extreme_decimals_and_microsecond_timestamps_are_found_by_old_and_new_readers() {
    let dir = std::env::temp_dir().join("cormorant-tests").join(unique("stats"));
    std::fs::create_dir_all(&dir).expect("lake dir");
    let lake = Lake::new(dir.to_str().expect("utf-8 path"), HashMap::new()).expect("lake");
    for mode in [WriteMode::Cow, WriteMode::Mor] {
        let name = format!("accounts_{mode:?}").to_lowercase();
        let options = WriterOptions {
            mode,
            ..Default::default()
        };
        let mut writer = TableWriter::open(&lake, &name, options).await.expect("writer");
        writer.apply(&accounts()).await.expect("apply");
        let uri = lake.table_url(&name).expect("url").to_string();
        let snapshot = writer.table().snapshot().expect("snapshot");
        let description = snapshot.metadata().description().unwrap_or_default().to_string();
        for part in ["stream accounts", "primary key (id)", "deletes soft"] {
            assert!(description.contains(part), "description {description:?} lacks {part:?}");
        }
        let schema = snapshot.schema();
        let comment = schema
            .field("__deleted")
            .and_then(|f| f.metadata().get("comment").cloned());
        assert!(
            format!("{comment:?}").contains("deleted"),
            "__deleted comment: {comment:?}"
        );
        let min = "-9999999999999999999999999999.9999999999";
        let max = "9999999999999999999999999999.9999999999";
        // deltalake 0.25 cannot read deletion vectors at all: merge-on-read only with 1.x
        let readers = if mode == WriteMode::Cow {
            pythons()
        } else {
            pythons()[..1].to_vec()
        };
        for python in readers {
            for (filter, want) in [
                (["balance", "<=", "decimal", min], 1),
                (["balance", ">=", "decimal", max], 1),
                (["balance", "==", "decimal", "0.0000012345"], 1),
                (["at", ">=", "timestamp", "2026-01-01T00:00:00.123456+00:00"], 1),
            ] {
                let (version, rows) = filtered_rows(&python, &uri, filter);
                assert_eq!(rows, want, "deltalake {version} on {name}, filter {filter:?}");
            }
        }
    }
}
