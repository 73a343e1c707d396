//! Seeded randomized test of view maintenance: random change sequences (updates that move rows
//! between windows and groups, deletes, soft deletes, truncates, redelivered batches, crashes
//! between a source commit and its views' steps) applied to a source table; after every view
//! step each view, read back from its Delta table as CSV, equals the batch query over the
//! source at the same version.
//!
//! `CORMORANT_VIEW_SEQUENCES` seeds (default 8, ~1 min in the dev profile) from `CORMORANT_VIEW_SEED` (default 1).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, StreamId};
use datafusion::prelude::SessionContext;
use tables::fault::SplitMix64 as Rng;
use tables::{DeleteMode, Lake, TableWriter, WriteMode, WriterOptions};

use super::{View, ViewDef};

/// The views every sequence keeps: one of each window kind, and a tumble whose count, sum
/// and avg retract by arithmetic (`sliding` does too).
const VIEWS: [(&str, &str); 4] = [
    (
        "per_hour",
        "SELECT window_start, window_end, grp, count(*) AS n, count(amount) AS n_amount, sum(amount) AS total, \
         avg(amount) AS mean, min(amount) AS lo, max(amount) AS hi, count(DISTINCT amount) AS distinct_amounts \
         FROM tumble('events', 'ts', INTERVAL '1 hour') WHERE id <> 7 GROUP BY window_start, window_end, grp",
    ),
    (
        "sliding",
        "SELECT window_start, window_end, count(*) AS n, sum(amount) AS total \
         FROM hop('events', 'ts', INTERVAL '30 minutes', INTERVAL '2 hours') GROUP BY 1, 2",
    ),
    (
        "visits",
        "SELECT window_start, window_end, grp, count(*) AS n, max(amount) AS hi \
         FROM session('events', 'ts', INTERVAL '20 minutes', 'grp') GROUP BY 1, 2, 3",
    ),
    (
        "totals",
        "SELECT window_start, window_end, grp, count(*) AS n, count(amount) AS n_amount, sum(amount) AS total, \
         avg(amount) AS mean FROM tumble('events', 'ts', INTERVAL '1 hour') WHERE id <> 7 \
         GROUP BY window_start, window_end, grp",
    ),
];

const KEYS: u64 = 25;
/// Event times fall in ten hours, so rows move between windows and sessions merge and split.
const SPAN_US: u64 = 10 * 3_600_000_000;

fn columns() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("grp", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
    ]))
}

/// One source change: `None` values for a delete (key only) or a truncate.
pub(super) struct Change {
    pub(super) kind: ChangeKind,
    pub(super) id: Option<i32>,
    pub(super) ts: Option<i64>,
    pub(super) grp: Option<&'static str>,
    pub(super) amount: Option<i64>,
}

fn random_change(rng: &mut Rng) -> Change {
    let id = Some(rng.below(KEYS) as i32);
    match rng.below(100) {
        0..=69 => Change {
            kind: ChangeKind::Upsert,
            id,
            ts: Some(1_700_000_000_000_000 + rng.below(SPAN_US) as i64),
            grp: [Some("a"), Some("b"), Some("c"), None][rng.below(4) as usize],
            amount: (rng.below(5) > 0).then(|| rng.below(1000) as i64 - 200),
        },
        70..=98 => Change {
            kind: ChangeKind::Delete,
            id,
            ts: None,
            grp: None,
            amount: None,
        },
        _ => Change {
            kind: ChangeKind::Truncate,
            id: None,
            ts: None,
            grp: None,
            amount: None,
        },
    }
}

/// The changes as a batch at offsets `first..`, partition 0.
pub(super) fn source_batch(changes: &[Change], first: i64) -> ChangeBatch {
    let n = changes.len();
    let ts = |v: Vec<Option<i64>>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let offsets: Vec<i64> = (first..first + n as i64).collect();
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(changes.iter().map(|c| c.id).collect::<Vec<_>>())),
        ts(changes.iter().map(|c| c.ts).collect()),
        Arc::new(StringArray::from(changes.iter().map(|c| c.grp).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(changes.iter().map(|c| c.amount).collect::<Vec<_>>())),
        Arc::new(StringArray::from_iter_values(changes.iter().map(|c| match c.kind {
            ChangeKind::Upsert => "u",
            ChangeKind::Delete => "d",
            ChangeKind::Truncate => "t",
        }))),
        Arc::new(BooleanArray::from(
            changes.iter().map(|c| c.kind != ChangeKind::Upsert).collect::<Vec<_>>(),
        )),
        ts(offsets.iter().map(|o| Some(o * 1000)).collect()),
        Arc::new(Int64Array::from(vec![None::<i64>; n])),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from(offsets.clone())),
    ];
    let data = RecordBatch::try_new(change::with_meta(&columns()), arrays).expect("valid batch");
    ChangeBatch {
        columns: columns(),
        key_columns: vec!["id".into()],
        data,
        kinds: changes.iter().map(|c| c.kind).collect(),
        positions: offsets
            .iter()
            .map(|o| Position {
                partition: 0,
                offset: *o,
            })
            .collect(),
        unavailable: Vec::new(),
        offsets: vec![SourceOffset {
            stream: StreamId::new("test", "events"),
            partition: 0,
            next_offset: first + n as i64,
        }],
    }
}

/// `sql`'s result as the CSV `cormorant sql --format csv` prints.
pub(super) async fn csv(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
    let mut out = Vec::new();
    crate::query::print(&batches, crate::query::Format::Csv, &mut out).expect("csv");
    String::from_utf8(out).expect("utf-8")
}

/// The view table's rows and the batch query's rows at the source version it reflects.
pub(super) async fn both(lake: &Lake, view: &mut View) -> (String, String) {
    let def = view.def().clone();
    let version = view.reflects().await.expect("txn").expect("a step committed");
    let ctx = crate::views::maintain::session(lake);
    let source = lake.open(&def.source, Some(version)).await.expect("source");
    source.update_datafusion_session(&ctx.state()).expect("session");
    ctx.register_table("events", source.table_provider().await.expect("provider"))
        .expect("register");
    let table = lake.open(&def.name, None).await.expect("view table");
    ctx.register_table("v", table.table_provider().await.expect("provider"))
        .expect("register");
    let width = def.keys.len() + def.aggregates.len();
    let order = (1..=width).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let batch = csv(&ctx, &format!("SELECT * FROM ({}) ORDER BY {order}", def.sql)).await;
    let names = ctx.sql(&def.sql).await.expect("plan").schema().as_arrow().clone();
    let cols: Vec<String> = names.fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
    let stored = csv(&ctx, &format!("SELECT {} FROM v ORDER BY {order}", cols.join(", "))).await;
    (stored, batch)
}

/// A view with a lateness rule marks exactly the windows its watermark made final.
async fn assert_finality(lake: &Lake, view: &mut View, seed: u64) {
    let Some(l) = view.def().lateness else { return };
    let w = view.watermark().await.expect("watermark");
    let table = lake.open(&view.def().name, None).await.expect("view table");
    let ctx = SessionContext::new();
    ctx.register_table("v", table.table_provider().await.expect("provider"))
        .expect("register");
    let ends = ctx
        .sql("SELECT CAST(window_end AS BIGINT) AS e, is_final FROM v")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("rows");
    let mut rows = 0;
    for b in &ends {
        let e = b.column(0).as_any().downcast_ref::<Int64Array>().expect("µs");
        let f = b.column(1).as_any().downcast_ref::<BooleanArray>().expect("flags");
        for i in 0..b.num_rows() {
            assert_eq!(
                f.value(i),
                l.is_final(e.value(i), w),
                "seed {seed}: window ending at {} µs under watermark {w:?}",
                e.value(i)
            );
            rows += 1;
        }
    }
    assert!(
        rows == 0 || w.is_some(),
        "seed {seed}: a view with rows has a watermark"
    );
}

/// What a sequence's steps did.
#[derive(Default)]
struct Tally {
    upserted: usize,
    deleted: usize,
    /// steps that recomputed only the windows their changes touched
    scoped: usize,
    /// those of them of the session view
    sessions: usize,
    /// steps that kept count/sum/avg by arithmetic
    retracted: usize,
}

/// Runs one seeded sequence.
async fn sequence(seed: u64) -> Tally {
    let dir = tempfile_dir(seed);
    let lake = Lake::new(dir.to_str().expect("utf-8 path"), Default::default()).expect("lake");
    let mut rng = Rng(seed);
    let mode = if seed.is_multiple_of(2) {
        WriteMode::Mor
    } else {
        WriteMode::Cow
    };
    let deletes = if seed.is_multiple_of(3) {
        DeleteMode::Hard
    } else {
        DeleteMode::Soft
    };
    let options = WriterOptions {
        mode,
        deletes,
        ..WriterOptions::default()
    };
    let mut source = TableWriter::open(&lake, "events", options).await.expect("writer");
    let mut views = reopen(&lake, seed).await;
    let mut tally = Tally::default();
    let mut offset = 0i64;
    let mut last: Option<ChangeBatch> = None;
    for step in 0..12 {
        let batch = match (&last, rng.below(10)) {
            (Some(b), 0) => b.clone(), // a redelivered batch: nothing changes
            _ => {
                let changes: Vec<Change> = (0..1 + rng.below(12)).map(|_| random_change(&mut rng)).collect();
                let b = source_batch(&changes, offset);
                offset += changes.len() as i64;
                b
            }
        };
        source.apply(&batch).await.expect("source commit");
        last = Some(batch);
        if rng.below(5) == 0 {
            // a crash between the source commit and the views' steps: new views, from the table
            views = reopen(&lake, seed).await;
            continue;
        }
        for view in &mut views {
            let done = view
                .step(&lake, false)
                .await
                .expect("view step")
                .expect("source exists");
            tally.upserted += done.upserts;
            tally.deleted += done.deletes;
            tally.scoped += usize::from(done.windows.is_some());
            tally.retracted += usize::from(done.retracted);
            if view.def().kind == super::def::WindowKind::Session {
                tally.sessions += usize::from(done.windows.is_some());
            }
            if full(seed, &view.def().name) {
                assert_eq!(
                    done.windows, None,
                    "seed {seed}: refresh = full recomputes every window"
                );
            }
            let (stored, batch) = both(&lake, view).await;
            assert_eq!(
                stored,
                batch,
                "seed {seed}, step {step}, view {}: the view table differs from the batch query",
                view.def().name
            );
            assert_finality(&lake, view, seed).await;
        }
    }
    for view in &mut views {
        view.step(&lake, false).await.expect("view step"); // catches up if the last step crashed
        let (stored, batch) = both(&lake, view).await;
        assert_eq!(stored, batch, "seed {seed}, at the end, view {}", view.def().name);
        let again = view.step(&lake, false).await.expect("view step");
        assert_eq!(
            again.and_then(|s| s.version),
            None,
            "seed {seed}: a second step at one version commits nothing"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    tally
}

/// The views of a sequence, opened from their tables (as after a crash); every fourth seed
/// keeps `sliding` with `refresh = "full"`, every third compacts the views' tables.
async fn reopen(lake: &Lake, seed: u64) -> Vec<View> {
    let mut views = Vec::new();
    for (name, sql) in VIEWS {
        let def = ViewDef::parse(name, sql).expect("valid view");
        let refresh = if full(seed, name) {
            super::Refresh::Full
        } else if name == "totals" && seed % 4 == 2 {
            // the touched windows recomputed: the arithmetic's baseline
            super::Refresh::Windows
        } else {
            super::Refresh::Incremental
        };
        let mut def = def;
        if (name == "per_hour" && seed.is_multiple_of(2)) || (name == "totals" && !seed.is_multiple_of(2)) {
            // windows final two hours (event time) after their end; late changes applied
            def.lateness = Some(super::late::Lateness {
                allowed: 2 * 3_600_000_000,
                policy: super::late::LatePolicy::Apply,
            });
        }
        let mut view = View::open(lake, def, Default::default())
            .await
            .expect("view")
            .with_refresh(refresh);
        if seed % 3 == 1 {
            // the view's table compacted every other commit, between steps
            view = view.with_compaction(2, Default::default());
        }
        if !seed.is_multiple_of(5) {
            // (every fifth seed keeps the default: commits touching most of a table's bytes,
            // as in these tiny tables, recompute in full)
            view = view.always_scoped();
        }
        views.push(view);
    }
    views
}

fn full(seed: u64, view: &str) -> bool {
    seed % 4 == 3 && view == "sliding"
}

pub(super) fn tempfile_dir(seed: u64) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cormorant-views-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_equals_the_batch_query_after_every_step() {
    let first = env_u64("CORMORANT_VIEW_SEED", 1);
    let mut all = Tally::default();
    for seed in first..first + env_u64("CORMORANT_VIEW_SEQUENCES", 8) {
        let t = sequence(seed).await;
        all.upserted += t.upserted;
        all.deleted += t.deleted;
        all.scoped += t.scoped;
        all.sessions += t.sessions;
        all.retracted += t.retracted;
    }
    let Tally {
        upserted,
        deleted,
        scoped,
        sessions,
        retracted,
    } = all;
    assert!(scoped > 20, "only {scoped} steps recomputed touched windows only");
    assert!(
        sessions > 5,
        "only {sessions} session steps recomputed the changed keys' sessions only"
    );
    assert!(
        retracted > 20,
        "only {retracted} steps kept count/sum/avg by arithmetic"
    );
    // not vacuous: groups appeared, changed and disappeared
    assert!(
        upserted > 50 && deleted > 10,
        "{upserted} rows upserted, {deleted} deleted"
    );
}

/// A view whose SQL changed is refused (its steps would mix windows of the two SQLs) until
/// `view rebuild` makes its table anew from the new SQL; unchanged SQL with other whitespace
/// is the same view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_view_sql_is_refused_until_rebuild_makes_the_table_anew() {
    let dir = tempfile_dir(9_001);
    let lake = Lake::new(dir.to_str().expect("utf-8 path"), Default::default()).expect("lake");
    let mut source = TableWriter::open(&lake, "events", WriterOptions::default())
        .await
        .expect("writer");
    let mut rng = Rng(9_001);
    let changes: Vec<Change> = (0..30).map(|_| random_change(&mut rng)).collect();
    source.apply(&source_batch(&changes, 0)).await.expect("source commit");
    let (name, sql) = VIEWS[1];
    let mut view = View::open(&lake, ViewDef::parse(name, sql).expect("valid"), Default::default())
        .await
        .expect("view");
    view.step(&lake, false).await.expect("step").expect("source exists");

    let respaced = sql.replace(' ', "  \n ");
    let same = View::open(
        &lake,
        ViewDef::parse(name, &respaced).expect("valid"),
        Default::default(),
    )
    .await;
    assert!(same.is_ok(), "whitespace does not change a view");

    let wider = sql.replace("INTERVAL '2 hours'", "INTERVAL '3 hours'");
    let refused = View::open(&lake, ViewDef::parse(name, &wider).expect("valid"), Default::default())
        .await
        .err()
        .expect("a changed SQL is refused");
    let text = refused.to_string();
    assert!(refused.downcast_ref::<super::identity::Changed>().is_some(), "{text}");
    assert!(
        text.contains("cormorant view rebuild sliding") && text.contains("INTERVAL '2 hours'"),
        "the error names the old SQL and the way out: {text}"
    );

    let mut cfg = crate::config::Config::default();
    cfg.lake.uri = dir.to_string_lossy().into_owned();
    cfg.views = vec![super::ViewConfig {
        name: name.to_string(),
        sql: wider.clone(),
        ..Default::default()
    }];
    // a worker with the new SQL leaves the view alone, and takes it up once rebuilt
    let mut running = super::Views::open(&cfg, &lake).await.expect("views");
    assert!(running.by_source.is_empty() && running.refused.len() == 1);
    let rebuilt = super::rebuild(&cfg, name).await.expect("rebuild");
    assert!(rebuilt.remade.is_some(), "the table was made anew");
    running.source_committed("events").await.expect("step");
    assert_eq!(
        running.by_source.get("events").map(Vec::len),
        Some(1),
        "the rebuilt view is updated again"
    );
    let mut view = View::open(&lake, ViewDef::parse(name, &wider).expect("valid"), Default::default())
        .await
        .expect("the new SQL is the table's now");
    let (stored, batch) = both(&lake, &mut view).await;
    assert_eq!(stored, batch, "the remade view equals the new batch query");
    let again = super::rebuild(&cfg, name).await.expect("rebuild");
    assert!(
        again.remade.is_none() && again.step.upserts == 0,
        "a second rebuild changes nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A count/sum/avg view whose table was made before views kept state is kept exactly by
/// recomputing touched windows; `view rebuild` makes it anew with the state, and its steps
/// then retract by arithmetic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_table_without_state_recomputes_until_rebuild_gives_it_state() {
    let (dir, lake, mut source) = Upserts::in_new_lake(9_002).await;
    let (name, sql) = VIEWS[3];
    let def = || ViewDef::parse(name, sql).expect("valid");
    let mut old = View::open(&lake, def(), Default::default())
        .await
        .expect("view")
        .without_state()
        .always_scoped();
    old.step(&lake, false).await.expect("step").expect("source exists");
    let mut view = View::open(&lake, def(), Default::default())
        .await
        .expect("view")
        .always_scoped();
    assert!(view.lacks_state(), "a table without the state columns");
    source.commit().await;
    let step = view.step(&lake, false).await.expect("step").expect("source exists");
    assert!(
        !step.retracted && step.windows.is_some(),
        "touched windows recomputed: {step:?}"
    );
    let (stored, batch) = both(&lake, &mut view).await;
    assert_eq!(stored, batch, "exact without the state");

    let mut cfg = crate::config::Config::default();
    cfg.lake.uri = dir.to_string_lossy().into_owned();
    cfg.views = vec![super::ViewConfig {
        name: name.to_string(),
        sql: sql.to_string(),
        ..Default::default()
    }];
    let rebuilt = super::rebuild(&cfg, name).await.expect("rebuild");
    assert!(
        rebuilt.remade.as_deref().is_some_and(|why| why.contains("state")),
        "{:?}",
        rebuilt.remade
    );
    let mut view = View::open(&lake, def(), Default::default())
        .await
        .expect("view")
        .always_scoped();
    assert!(!view.lacks_state());
    source.commit().await;
    let step = view.step(&lake, false).await.expect("step").expect("source exists");
    assert!(step.retracted, "kept by arithmetic after the rebuild: {step:?}");
    let (stored, batch) = both(&lake, &mut view).await;
    assert_eq!(stored, batch, "exact by arithmetic");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Arithmetic builds on the view's rows, so they must be those of the version whose `txn`
/// the range starts after: rows read after another worker's step moved the view on would
/// count that step's changes twice. Such a step recomputes instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arithmetic_needs_the_view_rows_of_the_version_its_range_starts_after() {
    let (dir, lake, mut source) = Upserts::in_new_lake(9_003).await;
    let (name, sql) = VIEWS[3];
    let mut view = View::open(&lake, ViewDef::parse(name, sql).expect("valid"), Default::default())
        .await
        .expect("view")
        .always_scoped();
    view.step(&lake, false).await.expect("step").expect("source exists");
    let r = view.reflects().await.expect("txn").expect("stepped");
    source.commit().await;
    let table = lake.open("events", None).await.expect("source");
    let n = table.version().expect("a version");
    let ctx = crate::views::maintain::session(&lake);
    let (from, ctx, table) = (r + 1, &ctx, &table);
    let (scope, changed) = view.delta(ctx, table, from, n).await.expect("delta").expect("readable");
    let (_, mut early) = view.delta(ctx, table, from, n).await.expect("delta").expect("readable");
    early.from = r; // as if the view's rows had moved on past the range's start
    assert!(
        view.by_arithmetic(&lake, ctx, &scope, early)
            .await
            .expect("step")
            .is_none(),
        "rows of another version are not built on"
    );
    assert!(
        view.by_arithmetic(&lake, ctx, &scope, changed)
            .await
            .expect("step")
            .is_some(),
        "rows of the version the range starts after are"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A source table fed random upserts only (a delete of a key never seen leaves a row without
/// a time, which only a full recomputation places: these tests are about scoped steps).
struct Upserts {
    writer: TableWriter,
    rng: Rng,
    offset: i64,
}

impl Upserts {
    /// A new lake in its own temp dir, with the source's first commit made.
    async fn in_new_lake(seed: u64) -> (std::path::PathBuf, Lake, Self) {
        let dir = tempfile_dir(seed);
        let lake = Lake::new(dir.to_str().expect("utf-8 path"), Default::default()).expect("lake");
        let writer = TableWriter::open(&lake, "events", WriterOptions::default())
            .await
            .expect("writer");
        let mut source = Self {
            writer,
            rng: Rng(seed),
            offset: 0,
        };
        source.commit().await;
        (dir, lake, source)
    }

    /// One commit of up to 20 upserts.
    async fn commit(&mut self) {
        let changes: Vec<Change> = (0..20)
            .map(|_| random_change(&mut self.rng))
            .filter(|c| c.kind == ChangeKind::Upsert)
            .collect();
        let batch = source_batch(&changes, self.offset);
        self.writer.apply(&batch).await.expect("source commit");
        self.offset += changes.len() as i64;
    }
}

/// A view table records its `late` policy: a `dead_letter` table holds windows that differ
/// from what the table gives, and keeps no arithmetic state, so the other policy needs a
/// table of its own (`view rebuild`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_late_policy_is_refused_until_rebuild() {
    let (dir, lake, _source) = Upserts::in_new_lake(9_004).await;
    let (name, sql) = VIEWS[3];
    let with = |policy| {
        let mut def = ViewDef::parse(name, sql).expect("valid");
        def.lateness = Some(super::late::Lateness {
            allowed: 3_600_000_000,
            policy,
        });
        def
    };
    let mut view = View::open(&lake, with(super::late::LatePolicy::Apply), Default::default())
        .await
        .expect("view");
    view.step(&lake, false).await.expect("step").expect("source exists");
    let refused = View::open(&lake, with(super::late::LatePolicy::DeadLetter), Default::default())
        .await
        .err()
        .expect("another late policy is refused");
    let text = refused.to_string();
    assert!(
        refused.downcast_ref::<super::identity::Changed>().is_some()
            && text.contains("late = \"apply\"")
            && text.contains("cormorant view rebuild totals"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
