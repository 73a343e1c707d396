//! `cormorant status`: per table — version, rows, live rows, files, the share of rows hidden by
//! deletion vectors, last commit time, and lag per partition (the broker's high watermark
//! minus the next offset recorded in the table's `txn` actions), and the log's state: last
//! checkpoint, files in `_delta_log`, oldest version time travel can read; and the compaction
//! backlog (files past the `[compaction]` thresholds); for a partitioned table, its
//! `partition_by` (columns still absent from the source marked pending) and how many
//! partitions its files hold. For a view, the lag says which version of its table it
//! reflects and how many versions behind that is.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use connectors::kafka::KafkaSource;

use crate::config::Config;

/// One table's line.
#[derive(Default)]
struct Row {
    table: String,
    version: Option<i64>,
    rows: Option<i64>,
    files: Option<i64>,
    backlog: Option<i64>,
    dv_share: Option<f64>,
    last: Option<i64>,
    last_checkpoint: Option<i64>,
    log_files: Option<i64>,
    oldest_readable: Option<i64>,
    lag: Option<String>,
    partition_by: Option<String>,
    partitions: Option<i64>,
}

/// The status of every table in the lake (and every configured one) as one batch.
pub async fn status(cfg: &Config) -> anyhow::Result<RecordBatch> {
    let lake = cfg.lake.open()?;
    let mut names = lake.list_tables().await?;
    for t in &cfg.tables {
        if !names.contains(&t.name) {
            names.push(t.name.clone());
        }
    }
    let reader = KafkaSource::reader(&cfg.kafka.settings()).ok();
    let mut out = Vec::new();
    for name in names {
        let Ok(t) = lake.open(&name, None).await else {
            out.push(Row {
                table: name,
                lag: Some("not created yet".to_string()),
                ..Row::default()
            });
            continue;
        };
        out.push(table_row(cfg, &lake, &t, name, reader.as_ref()).await?);
    }
    to_batch(out)
}

async fn table_row(
    cfg: &Config,
    lake: &tables::Lake,
    t: &deltalake::DeltaTable,
    name: String,
    reader: Option<&KafkaSource>,
) -> anyhow::Result<Row> {
    let snapshot = t.snapshot()?;
    let v = snapshot.version();
    let (mut total, mut hidden, mut n_files) = (0i64, 0i64, 0i64);
    let mut partitions = std::collections::HashSet::new();
    let partitioned = !snapshot.metadata().partition_columns().is_empty();
    for f in snapshot.log_data().iter() {
        n_files += 1;
        total += f.num_records().unwrap_or(0) as i64;
        hidden += f.deletion_vector_descriptor().map_or(0, |d| d.cardinality);
        if partitioned {
            #[allow(deprecated)] // the replacement hands values as a kernel struct, not strings
            let mut values: Vec<_> = f.add_action().partition_values.into_iter().collect();
            values.sort();
            partitions.insert(values);
        }
    }
    let mut lags = Vec::new();
    if let (Some(reader), Some(tc)) = (reader, cfg.tables.iter().find(|c| c.name == name)) {
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
    if let Some(view) = cfg.views.iter().find(|v| v.name == name) {
        lags.push(view_lag(lake, t, view).await);
    }
    let log = tables::maintain::log_extent(t).await?;
    Ok(Row {
        table: name,
        version: Some(v as i64),
        rows: Some(total - hidden),
        files: Some(n_files),
        backlog: Some(tables::compact::backlog(t, &cfg.compaction.options)?.0 as i64),
        dv_share: Some(if total > 0 { hidden as f64 / total as f64 } else { 0.0 }),
        last: snapshot.version_timestamp(v),
        last_checkpoint: log.last_checkpoint.map(|c| c as i64),
        log_files: Some(log.log_files as i64),
        oldest_readable: log.oldest_readable.map(|c| c as i64),
        lag: (!lags.is_empty()).then(|| lags.join(",")),
        partition_by: partition_by(snapshot.metadata()),
        partitions: partitioned.then_some(partitions.len() as i64),
    })
}

/// How far a view is behind its table: "view of T at vN of vM (K behind)".
async fn view_lag(lake: &tables::Lake, t: &deltalake::DeltaTable, view: &crate::views::ViewConfig) -> String {
    let def = match crate::views::ViewDef::of(view) {
        Ok(d) => d,
        Err(e) => return format!("view: {e:#}"),
    };
    let latest = match lake.open(&def.source, None).await {
        Ok(s) => s.version().unwrap_or(0),
        Err(e) => return format!("view of {}: ? ({e})", def.source),
    };
    let app = crate::views::maintain::txn_app_id(&def.source);
    let read = match t.snapshot() {
        Ok(s) => s.transaction_version(t.log_store().as_ref(), &app).await,
        Err(e) => Err(e),
    };
    let at = match read {
        Ok(at) => at,
        Err(e) => return format!("view of {}: ? (reading its log: {e})", def.source),
    };
    match at.and_then(|next| u64::try_from(next - 1).ok()) {
        Some(at) => format!(
            "view of {} at v{at} of v{latest} ({} behind)",
            def.source,
            latest.saturating_sub(at)
        ),
        None => format!("view of {}: no step committed yet", def.source),
    }
}

/// The table's `partition_by` items, those not realized yet marked pending.
fn partition_by(md: &deltalake::kernel::Metadata) -> Option<String> {
    let spec = tables::partitioning::Partitioning::of_table(md.partition_columns(), md.configuration()).ok()?;
    let items: Vec<String> = spec
        .items()
        .into_iter()
        .zip(spec.names())
        .map(|(item, name)| match md.partition_columns().contains(&name) {
            true => item,
            false => format!("{item} (pending)"),
        })
        .collect();
    (!items.is_empty()).then(|| items.join(", "))
}

fn to_batch(rows: Vec<Row>) -> anyhow::Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("version", DataType::Int64, true),
        Field::new("rows", DataType::Int64, true),
        Field::new("files", DataType::Int64, true),
        Field::new("compaction_backlog", DataType::Int64, true),
        Field::new("deleted_by_dv", DataType::Float64, true),
        Field::new(
            "last_commit",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("last_checkpoint", DataType::Int64, true),
        Field::new("log_files", DataType::Int64, true),
        Field::new("oldest_readable", DataType::Int64, true),
        Field::new("lag", DataType::Utf8, true),
        Field::new("partition_by", DataType::Utf8, true),
        Field::new("partitions", DataType::Int64, true),
    ]));
    let int = |f: fn(&Row) -> Option<i64>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<Int64Array>()) };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| Some(r.table.as_str())).collect::<StringArray>()),
        int(|r| r.version),
        int(|r| r.rows),
        int(|r| r.files),
        int(|r| r.backlog),
        Arc::new(rows.iter().map(|r| r.dv_share).collect::<Float64Array>()),
        Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.last).collect::<Vec<_>>()).with_timezone("UTC")),
        int(|r| r.last_checkpoint),
        int(|r| r.log_files),
        int(|r| r.oldest_readable),
        Arc::new(rows.iter().map(|r| r.lag.as_deref()).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| r.partition_by.as_deref()).collect::<StringArray>()),
        int(|r| r.partitions),
    ];
    Ok(RecordBatch::try_new(schema, cols)?)
}
