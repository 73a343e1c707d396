//! `cormorant status`: per table — version, rows, live rows, files, the share of rows hidden by
//! deletion vectors, last commit time, and lag per partition (the broker's high watermark
//! minus the next offset recorded in the table's `txn` actions).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use connectors::kafka::KafkaSource;
use tables::Lake;

use crate::config::Config;

/// The status of every table in the lake (and every configured one) as one batch.
pub async fn status(cfg: &Config) -> anyhow::Result<RecordBatch> {
    let lake = Lake::new(&cfg.lake.uri, cfg.lake.storage_options.clone())?;
    let mut names = lake.list_tables().await?;
    for t in &cfg.tables {
        if !names.contains(&t.name) {
            names.push(t.name.clone());
        }
    }
    let reader = KafkaSource::reader(&cfg.kafka.settings()).ok();
    let (mut table, mut version, mut rows, mut files, mut dv_share, mut last, mut lag) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for name in names {
        let Ok(t) = lake.open(&name, None).await else {
            table.push(name);
            version.push(None);
            rows.push(None);
            files.push(None);
            dv_share.push(None);
            last.push(None);
            lag.push(Some("not created yet".to_string()));
            continue;
        };
        let snapshot = t.snapshot()?;
        let v = snapshot.version();
        let (mut total, mut hidden, mut n_files) = (0i64, 0i64, 0i64);
        for f in snapshot.log_data().iter() {
            n_files += 1;
            total += f.num_records().unwrap_or(0) as i64;
            hidden += f.deletion_vector_descriptor().map_or(0, |d| d.cardinality);
        }
        let mut lags = Vec::new();
        if let (Some(reader), Some(tc)) = (&reader, cfg.tables.iter().find(|c| c.name == name)) {
            match reader.partitions(&tc.topic, Duration::from_secs(5)) {
                Ok(parts) => {
                    for p in parts {
                        let app = change::StreamId::new(&cfg.kafka.group_id, &tc.topic).app_id(p);
                        let next = snapshot.transaction_version(t.log_store().as_ref(), &app).await?;
                        match reader.watermarks(&tc.topic, p, Duration::from_secs(5)) {
                            Ok((low, high)) => lags.push(format!("{p}:{}", high - next.unwrap_or(low))),
                            Err(e) => lags.push(format!("{p}:? ({e})")),
                        }
                    }
                }
                Err(e) => lags.push(format!("? ({e})")),
            }
        }
        table.push(name);
        version.push(Some(v as i64));
        rows.push(Some(total - hidden));
        files.push(Some(n_files));
        dv_share.push(Some(if total > 0 { hidden as f64 / total as f64 } else { 0.0 }));
        last.push(snapshot.version_timestamp(v));
        lag.push((!lags.is_empty()).then(|| lags.join(",")));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("version", DataType::Int64, true),
        Field::new("rows", DataType::Int64, true),
        Field::new("files", DataType::Int64, true),
        Field::new("deleted_by_dv", DataType::Float64, true),
        Field::new(
            "last_commit",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("lag", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(table)),
        Arc::new(Int64Array::from(version)),
        Arc::new(Int64Array::from(rows)),
        Arc::new(Int64Array::from(files)),
        Arc::new(Float64Array::from(dv_share)),
        Arc::new(TimestampMillisecondArray::from(last).with_timezone("UTC")),
        Arc::new(StringArray::from(lag)),
    ];
    Ok(RecordBatch::try_new(schema, cols)?)
}
