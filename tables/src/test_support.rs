//! Test helpers for the tables crate: synthetic change batches built directly with Arrow, a
//! temporary lake, and reading a table back through deltalake's DataFusion provider.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, meta_fields};
use deltalake::DeltaTable;
use deltalake::datafusion::prelude::SessionContext;

use crate::Lake;
use crate::writer::{Applied, DeleteMode, TableWriter, WriteMode, WriterOptions};

/// The stream the test batches come from.
pub(crate) fn stream() -> change::StreamId {
    change::StreamId::new("grp", "orders")
}

/// The `txn` app id of partition `p` of [`stream`].
pub(crate) fn app_id(p: i32) -> String {
    stream().app_id(p)
}
pub(crate) const TABLE: &str = "orders";
/// What Debezium sends for an unchanged TOASTed value; the writer must never store it.
pub(crate) const UNAVAILABLE: &str = "__debezium_unavailable_value";
/// Column index of `name` among the source columns.
pub(crate) const NAME_COL: usize = 1;

// ---------------------------------------------------------------------------------------------
// Building batches
// ---------------------------------------------------------------------------------------------

/// One change. `ts` (source column and `__source_ts`) is `offset * 1000` µs so that every
/// change's values are recognisable in the output.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) kind: ChangeKind,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) id: Option<i32>,
    pub(crate) name: Option<&'static str>,
    /// `amount` in cents (Decimal128(10, 2)).
    pub(crate) cents: Option<i128>,
    pub(crate) note: Option<&'static str>,
}

impl Change {
    pub(crate) fn ts(&self) -> Option<i64> {
        (self.kind == ChangeKind::Upsert).then_some(self.offset * 1000)
    }
    pub(crate) fn op(&self) -> &'static str {
        match self.kind {
            ChangeKind::Upsert => "u",
            ChangeKind::Delete => "d",
            ChangeKind::Truncate => "t",
        }
    }
    /// On stream partition `p` instead of 0.
    pub(crate) fn p(mut self, p: i32) -> Self {
        self.partition = p;
        self
    }
    pub(crate) fn note(mut self, note: &'static str) -> Self {
        self.note = Some(note);
        self
    }
}

pub(crate) fn up(offset: i64, id: i32, name: &'static str, cents: i128) -> Change {
    Change {
        kind: ChangeKind::Upsert,
        partition: 0,
        offset,
        id: Some(id),
        name: Some(name),
        cents: Some(cents),
        note: None,
    }
}

/// A delete as the decoder produces it: only the key is meaningful.
pub(crate) fn del(offset: i64, id: i32) -> Change {
    Change {
        kind: ChangeKind::Delete,
        id: Some(id),
        name: None,
        cents: None,
        ..up(offset, 0, "", 0)
    }
}

/// A truncate as the decoder produces it: no key at all.
pub(crate) fn trunc(offset: i64) -> Change {
    Change {
        kind: ChangeKind::Truncate,
        id: None,
        ..del(offset, 0)
    }
}

pub(crate) fn columns(with_note: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("id", DataType::Int32, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ];
    if with_note {
        fields.push(Field::new("note", DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// A batch of `changes`; offsets move each partition past its last change.
pub(crate) fn batch(changes: &[Change]) -> ChangeBatch {
    make_batch(changes, false, Vec::new())
}

pub(crate) fn make_batch(changes: &[Change], with_note: bool, unavailable: Vec<(usize, usize)>) -> ChangeBatch {
    let columns = columns(with_note);
    let ts = |v: Vec<Option<i64>>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(changes.iter().map(|c| c.id).collect::<Vec<_>>())),
        Arc::new(StringArray::from(changes.iter().map(|c| c.name).collect::<Vec<_>>())),
        Arc::new(
            Decimal128Array::from(changes.iter().map(|c| c.cents).collect::<Vec<_>>())
                .with_precision_and_scale(10, 2)
                .expect("decimal(10,2)"),
        ),
        ts(changes.iter().map(Change::ts).collect()),
    ];
    if with_note {
        arrays.push(Arc::new(StringArray::from(
            changes.iter().map(|c| c.note).collect::<Vec<_>>(),
        )));
    }
    arrays.push(Arc::new(StringArray::from_iter_values(changes.iter().map(Change::op))));
    arrays.push(Arc::new(BooleanArray::from(
        changes.iter().map(|c| c.kind != ChangeKind::Upsert).collect::<Vec<_>>(),
    )));
    arrays.push(ts(changes.iter().map(|c| Some(c.offset * 1000)).collect()));
    arrays.push(Arc::new(Int64Array::from(vec![None::<i64>; changes.len()])));
    arrays.push(Arc::new(Int32Array::from_iter_values(
        changes.iter().map(|c| c.partition),
    )));
    arrays.push(Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.offset))));
    let mut fields: Vec<Field> = columns.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(meta_fields());
    let data = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("valid batch");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for c in changes {
        let n = next.entry(c.partition).or_insert(0);
        *n = (*n).max(c.offset + 1);
    }
    ChangeBatch {
        columns,
        key_columns: vec!["id".into()],
        data,
        kinds: changes.iter().map(|c| c.kind).collect(),
        positions: changes
            .iter()
            .map(|c| Position {
                partition: c.partition,
                offset: c.offset,
            })
            .collect(),
        unavailable,
        offsets: next
            .into_iter()
            .map(|(partition, next_offset)| SourceOffset {
                stream: stream(),
                partition,
                next_offset,
            })
            .collect(),
    }
}

/// `batch` with the `name` of the given batch rows marked unavailable (TOASTed, unchanged); the
/// rows carry Debezium's placeholder there, which must never reach the table.
pub(crate) fn toast_batch(changes: &[Change], unavailable_name_rows: &[usize]) -> ChangeBatch {
    let mut changes = changes.to_vec();
    for r in unavailable_name_rows {
        changes[*r].name = Some(UNAVAILABLE);
    }
    make_batch(
        &changes,
        false,
        unavailable_name_rows.iter().map(|r| (*r, NAME_COL)).collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Lake, writer and reading back
// ---------------------------------------------------------------------------------------------

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) lake: Lake,
    pub(crate) deletes: DeleteMode,
    /// Switches the lake's injected faults (`Fixture::faulty`); off until set.
    pub(crate) faults: Option<Arc<crate::fault::Faults>>,
    /// The table's `partition_by` items (none by default).
    pub(crate) partition_by: Vec<String>,
}

impl Fixture {
    pub(crate) fn new(deletes: DeleteMode) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = Lake::new(dir.path().to_str().expect("utf-8 temp path"), HashMap::new()).expect("lake");
        Self {
            dir,
            lake,
            deletes,
            faults: None,
            partition_by: Vec::new(),
        }
    }

    /// A lake whose store injects the faults switched on through `faults` (off at first).
    pub(crate) fn faulty(deletes: DeleteMode, seed: u64) -> Self {
        let mut fx = Self::new(deletes);
        let faults = crate::fault::Faults::new(seed, crate::fault::FaultRates::default());
        fx.lake = fx.lake.with_faults(faults.clone()).expect("faulty lake");
        fx.faults = Some(faults);
        fx
    }

    /// A new writer (a fresh process, as far as the table is concerned).
    pub(crate) async fn writer(&self) -> TableWriter {
        TableWriter::open(&self.lake, TABLE, self.options())
            .await
            .expect("writer opens")
    }

    /// The options [`Fixture::writer`] opens with.
    pub(crate) fn options(&self) -> WriterOptions {
        WriterOptions {
            deletes: self.deletes,
            mode: MODE.try_with(|m| *m).unwrap_or(WriteMode::Cow),
            partitioning: crate::partitioning::Partitioning::parse(&self.partition_by).expect("partition_by parses"),
            ..Default::default()
        }
    }

    /// Rows of `sql` over the table registered as `t`, each rendered `a|b|c` (`null` for nulls,
    /// timestamps as µs since the epoch).
    pub(crate) async fn query(&self, sql: &str) -> Vec<String> {
        let table = self.lake.open(TABLE, None).await.expect("table opens");
        query_table(&table, sql).await
    }

    /// Every row of the table, ordered by key, with the source and the interesting meta columns.
    pub(crate) async fn rows(&self) -> Vec<String> {
        self.query(ROWS_SQL).await
    }

    /// The `add` and `remove` actions of commit `version`, as (adds, removes) paths.
    pub(crate) fn log_actions(&self, version: u64) -> (Vec<String>, Vec<String>) {
        let path = self
            .dir
            .path()
            .join(TABLE)
            .join("_delta_log")
            .join(format!("{version:020}.json"));
        let text = std::fs::read_to_string(&path).expect("commit file");
        let (mut adds, mut removes) = (Vec::new(), Vec::new());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: serde_json::Value = serde_json::from_str(line).expect("json action");
            if let Some(p) = action.pointer("/add/path").and_then(|p| p.as_str()) {
                adds.push(p.to_string());
            }
            if let Some(p) = action.pointer("/remove/path").and_then(|p| p.as_str()) {
                removes.push(p.to_string());
            }
        }
        (adds, removes)
    }
}

/// What [`Fixture::rows`] reads.
pub(crate) const ROWS_SQL: &str = "SELECT id, name, amount, ts, __op, __deleted, __kafka_offset FROM t ORDER BY id";

/// [`Fixture::rows`] through a long-lived handle on the table, brought up to date first: an
/// incremental log replay instead of a fresh load, for tests that read after every step.
pub(crate) async fn rows_of(table: &mut DeltaTable) -> Vec<String> {
    table.update_state().await.expect("table updates");
    query_table(table, ROWS_SQL).await
}

/// Rows of `sql` over `table` at the version it holds, registered as `t`, rendered as
/// [`Fixture::query`] does.
pub(crate) async fn query_table(table: &DeltaTable, sql: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).expect("session");
    ctx.register_table("t", table.table_provider().await.expect("provider"))
        .expect("register");
    let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("query");
    render(&batches)
}

pub(crate) fn render(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|col| {
                    if col.is_null(r) {
                        "null".to_string()
                    } else if let DataType::Timestamp(TimeUnit::Microsecond, _) = col.data_type() {
                        col.as_primitive::<TimestampMicrosecondType>().value(r).to_string()
                    } else {
                        arrow::util::display::array_value_to_string(col, r).expect("displayable")
                    }
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

pub(crate) async fn apply(w: &mut TableWriter, b: &ChangeBatch) -> Applied {
    w.apply(b).await.expect("batch applies")
}

/// Expected rows: the live ones always, the soft-deleted ones only in soft mode.
pub(crate) fn expect(deletes: DeleteMode, rows: &[(&str, bool)]) -> Vec<String> {
    rows.iter()
        .filter(|(_, deleted)| !deleted || deletes == DeleteMode::Soft)
        .map(|(r, _)| r.to_string())
        .collect()
}

pub(crate) const LIVE: bool = false;
pub(crate) const GONE: bool = true;

tokio::task_local! {
    /// The write mode a scenario runs under (every scenario runs in both).
    pub(crate) static MODE: WriteMode;
}

/// The `partition_by` the model tests give one seed in three: a string column whose values
/// include `""`, non-ASCII and a quote, and a derived date.
pub(crate) fn model_partitioning(seed: u64) -> Vec<String> {
    match seed % 3 {
        2 => vec!["name".into(), "date(ts) AS ts_day".into()],
        _ => Vec::new(),
    }
}

/// A merge-on-read table of three files on partition 0, two of them with deletion vectors
/// (keys 1, 2 (b2), 3, 5 live; key 4 deleted as `deletes` says).
pub(crate) async fn mor_table_with_deletes(deletes: DeleteMode) -> (Fixture, TableWriter) {
    let fx = Fixture::new(deletes);
    let mut w = MODE.scope(WriteMode::Mor, fx.writer()).await;
    apply(
        &mut w,
        &batch(&[up(0, 1, "a", 100), up(1, 2, "b", 200), up(2, 3, "c", 300)]),
    )
    .await;
    apply(&mut w, &batch(&[up(3, 4, "d", 400), up(4, 5, "e", 500)])).await;
    apply(&mut w, &batch(&[up(5, 2, "b2", 210), del(6, 4)])).await; // DVs on both files
    (fx, w)
}

/// Compaction thresholds that make every file a candidate.
pub(crate) fn eager() -> crate::CompactionOptions {
    crate::CompactionOptions {
        deleted_fraction: 0.01,
        small_file_bytes: 1 << 30,
        target_file_bytes: 1 << 30,
        max_seconds: 60,
    }
}

/// Runs every listed scenario (an `async fn(DeleteMode)` of the calling module) in all four
/// write × delete modes, each as a test of its own.
macro_rules! all_modes {
    ($($scenario:ident),* $(,)?) => {
        $crate::test_support::all_modes!(@mode cow_soft, Cow, Soft; $($scenario),*);
        $crate::test_support::all_modes!(@mode cow_hard, Cow, Hard; $($scenario),*);
        $crate::test_support::all_modes!(@mode mor_soft, Mor, Soft; $($scenario),*);
        $crate::test_support::all_modes!(@mode mor_hard, Mor, Hard; $($scenario),*);
    };
    (@mode $m:ident, $w:ident, $d:ident; $($scenario:ident),*) => {
        mod $m {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                $crate::test_support::MODE
                    .scope(
                        $crate::writer::WriteMode::$w,
                        super::$scenario($crate::writer::DeleteMode::$d),
                    )
                    .await;
            })*
        }
    };
}
pub(crate) use all_modes;

/// The number of active files at the writer's version.
pub(crate) async fn live_files(w: &mut TableWriter) -> usize {
    w.current_table()
        .await
        .expect("table")
        .snapshot()
        .expect("snapshot")
        .log_data()
        .num_files()
}
