//! `history('t')` and `table_changes('t', from_version, to_version)`.
//!
//! - `history` reads the Delta log commit by commit: time, operation, files and rows added and
//!   removed (deletion vectors counted), the source offsets (`txn`) and the highest source
//!   timestamp written in that version.
//! - `table_changes` diffs consecutive versions by primary key, so it is exact for
//!   merge-on-read tables too (where Delta's change data feed is not written): `insert`,
//!   `update_preimage` + `update_postimage`, `delete` (a soft delete — the row turning
//!   `__deleted` — is reported as a `delete` of its last values).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use tables::Lake;

pub fn register(ctx: &SessionContext) {
    ctx.register_udtf("history", Arc::new(History));
    ctx.register_udtf("table_changes", Arc::new(TableChanges));
}

fn df_err(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

/// Runs async work from a table function's synchronous `call` (multi-thread runtime).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

pub fn lake_from(args: &TableFunctionArgs) -> DfResult<Arc<Lake>> {
    args.session()
        .config()
        .get_extension::<Lake>()
        .ok_or_else(|| df_err("table functions need a session from cormorant::query::session"))
}

pub fn string_arg(exprs: &[Expr], i: usize, what: &str) -> DfResult<String> {
    match exprs.get(i) {
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        )) => Ok(s.clone()),
        other => Err(df_err(format!(
            "argument {} ({what}) must be a quoted string, got {other:?}",
            i + 1
        ))),
    }
}

fn int_arg(exprs: &[Expr], i: usize, what: &str) -> DfResult<u64> {
    match exprs.get(i) {
        Some(Expr::Literal(v, _)) => v
            .cast_to(&DataType::UInt64)
            .ok()
            .and_then(|v| match v {
                ScalarValue::UInt64(Some(n)) => Some(n),
                _ => None,
            })
            .ok_or_else(|| df_err(format!("argument {} ({what}) must be a version number", i + 1))),
        other => Err(df_err(format!(
            "argument {} ({what}) must be a version number, got {other:?}",
            i + 1
        ))),
    }
}

fn mem(batch: RecordBatch) -> DfResult<Arc<dyn datafusion::catalog::TableProvider>> {
    Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
}

#[derive(Debug)]
struct History;

impl TableFunctionImpl for History {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn datafusion::catalog::TableProvider>> {
        let table = string_arg(args.exprs(), 0, "table name")?;
        let lake = lake_from(&args)?;
        mem(block_on(history(&lake, &table)).map_err(df_err)?)
    }
}

/// One row per commit of `table`.
pub async fn history(lake: &Lake, table: &str) -> anyhow::Result<RecordBatch> {
    let t = lake.open(table, None).await?;
    let latest = t.version().unwrap_or(0);
    let log = t.log_store();
    // commit files older than the log retention are gone: start at the oldest one left
    let extent = tables::maintain::log_extent(&t).await?;
    let first = extent.oldest_commit.unwrap_or(0);
    // VACUUM START commits: files superseded before (commit time - retention) may be deleted
    let mut vacuum_horizon: Option<i64> = None;
    // live rows per data file, replayed from the adds (removes carry no statistics)
    let mut live: HashMap<String, i64> = HashMap::new();
    let (mut version, mut ts, mut op, mut files_added, mut files_removed) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut rows_added, mut rows_removed, mut offsets, mut max_source) = (vec![], vec![], vec![], vec![]);
    for v in first..=latest {
        let Some(bytes) = log.read_commit_entry(v).await? else {
            continue;
        };
        let (mut when, mut operation) = (None, None);
        let (mut fa, mut fr, mut ra, mut rr) = (0i64, 0i64, 0i64, 0i64);
        let mut txns = Vec::new();
        let mut max_ts: Option<i64> = None;
        let mut removed_now: HashMap<String, i64> = HashMap::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_slice(line)?;
            if let Some(ci) = action.get("commitInfo") {
                when = ci.get("timestamp").and_then(|x| x.as_i64());
                operation = ci.get("operation").and_then(|x| x.as_str()).map(str::to_string);
                if operation.as_deref() == Some("VACUUM START")
                    && let (Some(at), Some(retain)) = (when, retention_millis(ci))
                {
                    vacuum_horizon = vacuum_horizon.max(Some(at - retain));
                }
            } else if let Some(r) = action.get("remove") {
                let path = r["path"].as_str().unwrap_or_default().to_string();
                let before = live.remove(&path).unwrap_or(0);
                removed_now.insert(path, before);
            } else if let Some(a) = action.get("add") {
                let path = a["path"].as_str().unwrap_or_default().to_string();
                let stats: serde_json::Value = a["stats"]
                    .as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default();
                let records = stats["numRecords"].as_i64().unwrap_or(0);
                let deleted = a["deletionVector"]["cardinality"].as_i64().unwrap_or(0);
                let now_live = records - deleted;
                match removed_now.remove(&path) {
                    // the same file re-added with a grown deletion vector
                    Some(before) => rr += before - now_live,
                    None => {
                        fa += 1;
                        ra += now_live;
                        if let Some(t) = stats["maxValues"]["__source_ts"].as_str()
                            && let Ok(t) = chrono::DateTime::parse_from_rfc3339(t)
                        {
                            max_ts = max_ts.max(Some(t.timestamp_micros()));
                        }
                    }
                }
                live.insert(path, now_live);
            } else if let Some(t) = action.get("txn") {
                txns.push(format!(
                    "{}={}",
                    t["appId"].as_str().unwrap_or("?"),
                    t["version"].as_i64().unwrap_or(-1)
                ));
            }
        }
        // files removed and not re-added with a grown deletion vector
        fr += removed_now.len() as i64;
        rr += removed_now.values().sum::<i64>();
        version.push(v as i64);
        ts.push(when);
        op.push(operation);
        files_added.push(fa);
        files_removed.push(fr);
        rows_added.push(ra);
        rows_removed.push(rr);
        offsets.push((!txns.is_empty()).then(|| txns.join(",")));
        max_source.push(max_ts);
    }
    // readable: the log still reaches it, and vacuum kept what it reads (every file it reads was
    // superseded no earlier than the next commit)
    let readable: Vec<bool> = (0..version.len())
        .map(|i| {
            let logged = extent.oldest_readable.is_some_and(|o| version[i] >= o as i64);
            let next = ts.get(i + 1).copied().flatten();
            let vacuumed = matches!((next, vacuum_horizon), (Some(n), Some(h)) if n < h);
            logged && !vacuumed
        })
        .collect();
    let utc = || Some(Arc::<str>::from("UTC"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Millisecond, utc()), true),
        Field::new("operation", DataType::Utf8, true),
        Field::new("files_added", DataType::Int64, false),
        Field::new("files_removed", DataType::Int64, false),
        Field::new("rows_added", DataType::Int64, false),
        Field::new("rows_removed", DataType::Int64, false),
        Field::new("offsets", DataType::Utf8, true),
        Field::new("max_source_ts", DataType::Timestamp(TimeUnit::Microsecond, utc()), true),
        Field::new("readable", DataType::Boolean, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(version)),
        Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
        Arc::new(StringArray::from(op)),
        Arc::new(Int64Array::from(files_added)),
        Arc::new(Int64Array::from(files_removed)),
        Arc::new(Int64Array::from(rows_added)),
        Arc::new(Int64Array::from(rows_removed)),
        Arc::new(StringArray::from(offsets)),
        Arc::new(TimestampMicrosecondArray::from(max_source).with_timezone("UTC")),
        Arc::new(arrow::array::BooleanArray::from(readable)),
    ];
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// `operationParameters.specifiedRetentionMillis` of a VACUUM START commit (a number, or a
/// number in a string, depending on the writer).
fn retention_millis(commit_info: &serde_json::Value) -> Option<i64> {
    let v = commit_info
        .get("operationParameters")?
        .get("specifiedRetentionMillis")?;
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[derive(Debug)]
struct TableChanges;

impl TableFunctionImpl for TableChanges {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn datafusion::catalog::TableProvider>> {
        let table = string_arg(args.exprs(), 0, "table name")?;
        let from = int_arg(args.exprs(), 1, "first version")?;
        let to = int_arg(args.exprs(), 2, "last version")?;
        if from > to {
            return Err(df_err(format!(
                "table_changes: first version {from} is after last version {to}"
            )));
        }
        let lake = lake_from(&args)?;
        mem(block_on(changes(&lake, &table, from, to)).map_err(df_err)?)
    }
}

/// Every row of `t` (all columns), as one batch.
async fn scan(t: &DeltaTable) -> anyhow::Result<RecordBatch> {
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())?;
    ctx.register_table("t", t.table_provider().await?)?;
    let batches = ctx.sql("SELECT * FROM t").await?.collect().await?;
    let schema: SchemaRef = t.snapshot()?.snapshot().arrow_schema();
    let aligned = batches
        .iter()
        .map(|b| change::align(b, &schema))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &aligned)?)
}

/// Row changes of versions `from..=to` (each against the version before it).
pub async fn changes(lake: &Lake, table: &str, from: u64, to: u64) -> anyhow::Result<RecordBatch> {
    let latest = lake.open(table, None).await?;
    let newest = latest.version().unwrap_or(0);
    anyhow::ensure!(
        to <= newest,
        "{table} has no version {to}: its versions are 0..={newest}"
    );
    let snapshot = latest.snapshot()?;
    let keys: Vec<String> = snapshot
        .metadata()
        .configuration()
        .get(tables::writer::PRIMARY_KEY_PROPERTY)
        .map(|k| k.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        !keys.is_empty(),
        "{table} has no primary key recorded; table_changes needs one"
    );
    let schema = snapshot.snapshot().arrow_schema();
    let mut out_fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    out_fields.push(Field::new("_change_type", DataType::Utf8, false));
    out_fields.push(Field::new("_commit_version", DataType::Int64, false));
    out_fields.push(Field::new(
        "_commit_timestamp",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        true,
    ));
    let out_schema = Arc::new(Schema::new(out_fields));
    let deleted_col = schema.index_of(change::DELETED).ok();
    let mut prev = match from {
        0 => RecordBatch::new_empty(schema.clone()),
        v => change::align(&scan(&lake.open(table, Some(v - 1)).await?).await?, &schema)?,
    };
    let mut parts = Vec::new();
    for v in from..=to {
        let t = lake.open(table, Some(v)).await?;
        let when = t.snapshot()?.version_timestamp(v);
        let cur = change::align(&scan(&t).await?, &schema)?;
        parts.push(diff(&prev, &cur, &keys, deleted_col, v, when, &out_schema)?);
        prev = cur;
    }
    Ok(arrow::compute::concat_batches(&out_schema, &parts)?)
}

fn diff(
    prev: &RecordBatch,
    cur: &RecordBatch,
    keys: &[String],
    deleted_col: Option<usize>,
    version: u64,
    when: Option<i64>,
    out: &SchemaRef,
) -> anyhow::Result<RecordBatch> {
    let sort = |b: &RecordBatch| -> Vec<SortField> {
        b.schema()
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect()
    };
    let key_idx: Vec<usize> = keys
        .iter()
        .map(|k| prev.schema().index_of(k))
        .collect::<Result<_, _>>()?;
    let key_conv = RowConverter::new(
        key_idx
            .iter()
            .map(|i| SortField::new(prev.schema().field(*i).data_type().clone()))
            .collect(),
    )?;
    let row_conv = RowConverter::new(sort(prev))?;
    let key_rows =
        |b: &RecordBatch| key_conv.convert_columns(&key_idx.iter().map(|i| b.column(*i).clone()).collect::<Vec<_>>());
    let (pk, ck) = (key_rows(prev)?, key_rows(cur)?);
    let (pr, cr) = (
        row_conv.convert_columns(prev.columns())?,
        row_conv.convert_columns(cur.columns())?,
    );
    let is_deleted = |b: &RecordBatch, r: usize| {
        deleted_col.is_some_and(|c| {
            let a = b.column(c).as_any().downcast_ref::<arrow::array::BooleanArray>();
            a.is_some_and(|a| a.is_valid(r) && a.value(r))
        })
    };
    let before: HashMap<Vec<u8>, usize> = (0..prev.num_rows()).map(|r| (pk.row(r).as_ref().to_vec(), r)).collect();
    let mut picks: Vec<(usize, usize, &'static str)> = Vec::new(); // (source 0=prev 1=cur, row, type)
    let mut seen = std::collections::HashSet::new();
    for r in 0..cur.num_rows() {
        let key = ck.row(r).as_ref().to_vec();
        match before.get(&key) {
            None if !is_deleted(cur, r) => picks.push((1, r, "insert")),
            None => {}
            Some(&p) if pr.row(p) == cr.row(r) => {}
            Some(&p) => match (is_deleted(prev, p), is_deleted(cur, r)) {
                (false, true) => picks.push((1, r, "delete")),
                (true, false) => picks.push((1, r, "insert")),
                (true, true) => {}
                (false, false) => {
                    picks.push((0, p, "update_preimage"));
                    picks.push((1, r, "update_postimage"));
                }
            },
        }
        seen.insert(key);
    }
    for (key, &p) in &before {
        if !seen.contains(key) && !is_deleted(prev, p) {
            picks.push((0, p, "delete"));
        }
    }
    let idx: Vec<(usize, usize)> = picks.iter().map(|(s, r, _)| (*s, *r)).collect();
    let mut cols: Vec<ArrayRef> = (0..prev.num_columns())
        .map(|c| interleave(&[prev.column(c).as_ref() as &dyn Array, cur.column(c).as_ref()], &idx))
        .collect::<Result<_, _>>()?;
    cols.push(Arc::new(StringArray::from_iter_values(picks.iter().map(|p| p.2))));
    cols.push(Arc::new(Int64Array::from(vec![version as i64; picks.len()])));
    cols.push(Arc::new(
        TimestampMillisecondArray::from(vec![when; picks.len()]).with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(out.clone(), cols)?)
}
