//! Keeping one view table in step with its source table.
//!
//! A step reads the source at its latest version N, computes the view's rows there with the
//! same `tumble`/`hop`/`session` functions the batch query uses (so a view equals the batch
//! query by construction), compares them with the view table's rows, and commits only the
//! difference — upserts of new or changed rows, deletes of rows whose group disappeared — in
//! ONE commit that also records `txn` `view:<source>:0 = N + 1`.
//!
//! Invariants:
//! - a committed view reflects exactly one source version, recorded in the same commit;
//! - a step whose source version the view already reflects commits nothing (after a crash
//!   between the source's commit and the view's, the next step catches up: it compares with
//!   what the view table holds, not with what this process remembers);
//! - two recomputing steps racing on one view (two workers) can leave a stale row for one
//!   step; the next step removes it, because it compares with the table again. A step kept by
//!   arithmetic builds on the view's rows, so it commits only on top of the version it read
//!   (`TableWriter::apply_if`) and otherwise starts again.
//!
//! For `tumble` and `hop` views a step recomputes only the windows the source commits since
//! the view's version touched ([`super::scope`], from the files those commits added and
//! removed, [`tables::changes`]): the source scan is filtered to those windows' time ranges,
//! and only those windows of the view are compared. A `session` view keyed by columns it
//! keeps recomputes, per changed key, the region its changes can reach ([`super::sessions`]).
//! Other session views, `cormorant view rebuild`, a view's first step and a range that
//! cannot be narrowed down (schema change, vacuumed files) recompute the whole view. Either
//! way the rows come from the batch query's own window functions over the source at one
//! version, so min, max and distinct counts are as exact as count and sum. A tumble or hop
//! view of count, sum and avg only does not recompute at all: it keeps state columns and
//! updates the touched rows by arithmetic from the rows the commits took out and put in
//! ([`super::retract`]); how a step narrows its work is in `maintain/narrow.rs`. With a lateness
//! rule a step also keeps the watermark, `is_final` and the changes to final windows
//! ([`super::late`]).

use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow::datatypes::{Schema, SchemaRef};
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, StreamId};
use datafusion::common::Column;
use datafusion::datasource::MemTable;
use datafusion::prelude::Expr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use tables::{DeleteMode, Lake, TableError, TableWriter, WriteMode, WriterOptions};

use super::def::ViewDef;
use super::identity;
use super::late::{self, IS_FINAL, Lateness};
use super::retract::Changed;
use super::retract::State;
use super::scope::{self, Scope};

mod narrow;
mod shape;

pub(super) use shape::{concat_as, storable_schema};
use shape::{meta, quoted};

/// The scope of a view's `txn` app id (`view:<source>:0`): not a consumer group, so it never
/// meets a Kafka stream's offsets.
const TXN_SCOPE: &str = "view";

/// A step scopes by the windows its commits touched unless their files hold more than this
/// share of the source table's bytes: reading those files to narrow the recomputation would
/// then cost about what recomputing everything does (updates spread over the whole history;
/// `benches/views.rs`, upsert shape).
const MAX_TOUCHED_SHARE: f64 = 0.5;

/// The app id of the `txn` that records the version of `source` a view reflects.
pub fn txn_app_id(source: &str) -> String {
    StreamId::new(TXN_SCOPE, source).app_id(0)
}

/// How many times a step starts again after other workers' steps moved the view on under it.
const MAX_MOVED: usize = 5;

/// Test hook: milliseconds every view step waits between computing its changes and
/// committing them (see `View::pause_before_commit`). Never set in production.
pub const PAUSE_ENV: &str = "CORMORANT_VIEW_PAUSE_MS";

/// Where a step's time went, logged at debug as one event.
#[derive(Default)]
struct Timings {
    /// from the step's start: windows scoped, changes computed
    scope: std::time::Duration,
    computed: std::time::Duration,
    /// within the computation: the view's query, reading the view's old rows
    query: std::time::Duration,
    old_rows: std::time::Duration,
}

impl Timings {
    fn log(&self, view: &str, total: std::time::Duration) {
        tracing::debug!(
            view,
            scope_ms = self.scope.as_millis() as u64,
            query_ms = self.query.as_millis() as u64,
            old_rows_ms = self.old_rows.as_millis() as u64,
            diff_ms = self
                .computed
                .saturating_sub(self.scope + self.query + self.old_rows)
                .as_millis() as u64,
            commit_ms = total.saturating_sub(self.computed).as_millis() as u64,
            "view step timings"
        );
    }
}

/// What one step did.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// The source version the view now reflects.
    pub source_version: u64,
    /// The view table's new version (`None`: the view was already at that source version).
    pub version: Option<u64>,
    pub rows: usize,
    pub upserts: usize,
    pub deletes: usize,
    /// Windows recomputed (`None`: the whole view was).
    pub windows: Option<usize>,
    pub took: std::time::Duration,
    /// From the source commit (its log file's time) to this step's commit, when known.
    pub freshness: Option<std::time::Duration>,
    /// Changes to final windows held back and recorded in `_view_late` (`late =
    /// "dead_letter"`; a window held before with the same would-be row is not recorded again).
    pub late: usize,
    /// The touched rows came from the view's own rows and the source's changed rows by
    /// arithmetic ([`super::retract`]), without reading the source table.
    pub retracted: bool,
}

/// A step's changes to the view.
pub(super) struct Computed {
    pub(super) schema: SchemaRef,
    pub(super) upserts: RecordBatch,
    /// key columns only
    pub(super) deletes: RecordBatch,
    /// the view's rows the step compared with (dead letters show them)
    pub(super) old: Vec<RecordBatch>,
    /// the watermark after the step (views with a lateness rule)
    pub(super) watermark: Option<i64>,
    /// see [`Step::retracted`]
    pub(super) retracted: bool,
}

/// A view whose SQL names a column its table does not have (yet: Debezium adds a column to
/// a table's schema at the first change after `ALTER TABLE`). Not a failure: the view is
/// made at the first commit of the table that has the column.
#[derive(Debug, thiserror::Error)]
#[error("view {view} waits for table {table} to have column {column}, which its SQL names")]
pub struct Waiting {
    pub view: String,
    pub table: String,
    pub column: String,
}

/// One view and the writer of its table.
pub struct View {
    def: ViewDef,
    writer: TableWriter,
    refresh: super::Refresh,
    /// The window shape, read from the SQL's interval arguments at the first scoped step
    /// (`Some(None)`: a shape steps cannot scope by)
    shape: Option<Option<scope::Shape>>,
    /// The source and the view table as the last step read them: the next step reads only
    /// the commits since (a table reopened every step replayed its log from the checkpoint)
    source: Option<deltalake::DeltaTable>,
    table: Option<deltalake::DeltaTable>,
    /// where the view's changes also go (`sink_topic`)
    sink: Option<super::sink::Sink>,
    /// compaction of the view's table every so many of its commits (a view rewrites a few
    /// rows of many windows per step: its deletion vectors grow fast), and commits since
    compaction: Option<(u64, tables::CompactionOptions)>,
    since_compaction: u64,
    /// see [`MAX_TOUCHED_SHARE`]
    max_touched_share: f64,
    /// the state that lets count/sum/avg retract by arithmetic ([`super::retract`]), if
    /// the view's aggregates allow it
    state: Option<State>,
}

impl View {
    pub async fn open(lake: &Lake, def: ViewDef, policy: tables::maintain::LogPolicy) -> anyhow::Result<Self> {
        let options = WriterOptions {
            deletes: DeleteMode::Hard,
            mode: WriteMode::Mor,
            policy,
            description: Some(identity::description(&def, &txn_app_id(&def.source))),
            properties: identity::properties(&def),
            ..WriterOptions::default()
        };
        let writer = TableWriter::open(lake, &def.name, options)
            .await
            .with_context(|| format!("opening view table {}", def.name))?;
        identity::check(&writer, &def)?;
        Ok(Self {
            state: State::of(&def),
            def,
            writer,
            refresh: super::Refresh::Incremental,
            shape: None,
            source: None,
            table: None,
            sink: None,
            compaction: None,
            since_compaction: 0,
            max_touched_share: MAX_TOUCHED_SHARE,
        })
    }

    /// Sets how steps recompute (`[[views]] refresh`).
    pub fn with_refresh(mut self, refresh: super::Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// Compacts the view's table every `every` of its commits (`[compaction]` of the config).
    pub fn with_compaction(mut self, every: u64, opts: tables::CompactionOptions) -> Self {
        self.compaction = Some((every.max(1), opts));
        self
    }

    /// Scopes steps however large a share of the table their commits touched (tests of
    /// scoping over tiny tables, where every commit touches most of the bytes).
    #[cfg(test)]
    pub(crate) fn always_scoped(mut self) -> Self {
        self.max_touched_share = f64::INFINITY;
        self
    }

    /// A view that keeps no arithmetic state, as views did before they kept it (tests of
    /// tables made then).
    #[cfg(test)]
    pub(crate) fn without_state(mut self) -> Self {
        self.state = None;
        self
    }

    /// Sends every change of the view to `sink` too, before the view commits it.
    pub fn with_sink(mut self, sink: super::sink::Sink) -> Self {
        self.sink = Some(sink);
        self
    }

    pub fn def(&self) -> &ViewDef {
        &self.def
    }

    fn stream(&self) -> StreamId {
        StreamId::new(TXN_SCOPE, &self.def.source)
    }

    /// The view's watermark, µs (`None`: no lateness rule, or no event seen yet).
    pub async fn watermark(&mut self) -> anyhow::Result<Option<i64>> {
        match self.def.lateness {
            Some(_) => Lateness::watermark(&mut self.writer, &self.def.name).await,
            None => Ok(None),
        }
    }

    /// The source version the view table reflects (`None`: no step committed yet).
    pub async fn reflects(&mut self) -> anyhow::Result<Option<u64>> {
        let app = txn_app_id(&self.def.source);
        let next = self.writer.next_offset(&app).await?;
        Ok(next.and_then(|n| u64::try_from(n - 1).ok()))
    }

    /// Brings the view to the source's latest version (`force`: recompute and compare even
    /// when the view says it is there — `cormorant view rebuild`). `None` when the source
    /// table does not exist yet.
    pub async fn step(&mut self, lake: &Lake, force: bool) -> anyhow::Result<Option<Step>> {
        for _ in 0..MAX_MOVED {
            if let Some(done) = self.attempt(lake, force).await? {
                return Ok(done);
            }
            tracing::debug!(view = %self.def.name, "another worker's step moved the view on while this one computed; stepping again from it");
        }
        anyhow::bail!(
            "view {}: other workers' steps moved it on {MAX_MOVED} times while this one computed; the next commit of its table steps it again",
            self.def.name
        )
    }

    /// One step ([`View::step`]); `None` when a step kept by arithmetic found the view moved
    /// on by another worker's step at its commit (nothing committed: it must start again
    /// from the rows that step left).
    async fn attempt(&mut self, lake: &Lake, force: bool) -> anyhow::Result<Option<Option<Step>>> {
        let started = std::time::Instant::now();
        let source = match latest(&mut self.source, lake, &self.def.source).await {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(Some(None)),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading source table {}", self.def.source))),
        };
        let n = source.version().unwrap_or(0);
        let reflects = self.reflects().await?;
        if !force && reflects >= Some(n) {
            return Ok(Some(Some(Step {
                source_version: n,
                ..Step::default()
            })));
        }
        let before = self.watermark().await?;
        let ctx = session(lake);
        source.update_datafusion_session(&ctx.state())?;
        let mut timings = Timings::default();
        let incremental = match reflects {
            Some(r) if !force && self.refresh != super::Refresh::Full => Some(r + 1),
            _ => None,
        };
        let delta = match incremental {
            Some(from) if self.refresh == super::Refresh::Incremental && self.keeps_state() => {
                self.delta(&ctx, &source, from, n).await?
            }
            _ => None,
        };
        let (scope, delta) = match (incremental, delta) {
            (_, Some((scope, d))) => (Some(scope), Some(d)),
            (Some(from), None) => (self.scope(lake, &ctx, &source, from, n).await?, None),
            (None, None) => (None, None),
        };
        timings.scope = started.elapsed();
        let mut c = self
            .changes(lake, &ctx, &source, (scope.as_ref(), delta), before, &mut timings)
            .await?;
        timings.computed = started.elapsed();
        let held = late::hold(&self.def, &mut c, before, force)?;
        let mut recorded = 0;
        if let (Some(l), Some(w)) = (&self.def.lateness, c.watermark) {
            recorded = late::dead_letter(lake, &self.def.name, n, w, l, held).await?;
        }
        if let Some(sink) = &mut self.sink {
            // before the commit: a crash in between re-sends these changes at the next step
            let (schema, upserts) = super::retract::visible(&c.schema, &c.upserts)?;
            sink.send(&schema, &self.def.keys, &upserts, &c.deletes).await?;
        }
        self.pause_before_commit(n).await;
        let batch = self.change_batch(&c, n, force)?;
        let app = txn_app_id(&self.def.source);
        let applied = match incremental.filter(|_| c.retracted) {
            // built on the view's rows at `from`: only on top of them
            Some(from) => self.writer.apply_if(&batch, &app, i64::try_from(from).ok()).await,
            None => self.writer.apply(&batch).await.map(Some),
        };
        let Some(applied) = applied.with_context(|| format!("committing view {}", self.def.name))? else {
            return Ok(None);
        };
        if applied.version.is_some() {
            self.compact().await;
        }
        timings.log(&self.def.name, started.elapsed());
        let freshness = source
            .snapshot()
            .ok()
            .and_then(|s| s.version_timestamp(n))
            .and_then(|ms| u64::try_from(chrono::Utc::now().timestamp_millis() - ms).ok())
            .map(std::time::Duration::from_millis);
        Ok(Some(Some(Step {
            source_version: n,
            version: applied.version,
            rows: applied.rows_in,
            upserts: c.upserts.num_rows(),
            deletes: c.deletes.num_rows(),
            windows: scope.as_ref().map(Scope::windows),
            took: started.elapsed(),
            freshness,
            late: recorded,
            retracted: c.retracted,
        })))
    }

    /// The view's rows to upsert and the keys to delete at the source's version: none when
    /// the commits touched no window, else the windows in `scope` (all without one) made by
    /// arithmetic from the `changed` rows when the view keeps state, or recomputed, and
    /// compared with the view table; with a lateness rule also the windows the step's
    /// watermark made final.
    async fn changes(
        &mut self,
        lake: &Lake,
        ctx: &SessionContext,
        source: &deltalake::DeltaTable,
        (scope, changed): (Option<&Scope>, Option<Changed>),
        before: Option<i64>,
        timings: &mut Timings,
    ) -> anyhow::Result<Computed> {
        if scope.is_some_and(Scope::is_empty) {
            // no row of any window changed (compaction, a redelivered batch): record the version
            let schema = self.writer.table().snapshot()?.snapshot().arrow_schema();
            let columns = Arc::new(Schema::new(
                schema
                    .fields()
                    .iter()
                    .filter(|f| !change::is_meta_column(f.name()))
                    .cloned()
                    .collect::<Vec<_>>(),
            ));
            let keys = self.key_schema(&columns);
            return Ok(Computed {
                upserts: RecordBatch::new_empty(columns.clone()),
                deletes: RecordBatch::new_empty(keys),
                schema: columns,
                old: Vec::new(),
                watermark: before,
                retracted: false,
            });
        }
        let t0 = std::time::Instant::now();
        let by_arithmetic = match (scope, changed) {
            (Some(s), Some(d)) => self.by_arithmetic(lake, ctx, s, d).await?,
            _ => None,
        };
        let retracted = by_arithmetic.is_some();
        let (schema, rows) = match by_arithmetic {
            Some(computed) => computed,
            None => {
                let provider = source.table_provider().await?;
                let registered = match scope {
                    Some(s) => ctx
                        .read_table(provider)?
                        .filter(s.filter(&self.def.time_column))?
                        .into_view(),
                    None => provider,
                };
                ctx.register_table(self.def.source.as_str(), registered)?;
                self.compute(ctx).await?
            }
        };
        let rows = self.within(scope, &schema, rows)?;
        let (schema, rows, watermark) = match &self.def.lateness {
            Some(l) => {
                let seen = match scope {
                    Some(s) => s.latest(),
                    None => self.latest_time(ctx).await?,
                };
                let w = before.max(seen);
                let (schema, rows) = l.with_is_final(&schema, &rows, w)?;
                (schema, rows, w)
            }
            None => (schema, rows, None),
        };
        timings.query = t0.elapsed();
        let old = self.old_rows(lake, ctx, &schema, scope).await?;
        timings.old_rows = t0.elapsed() - timings.query;
        let kept = old.clone().unwrap_or_default();
        let (mut upserts, deletes) = self.diff(ctx, &schema, rows, old).await?;
        if let Some(s) = scope {
            let flipped = self.newly_final(lake, ctx, &schema, s, watermark).await?;
            if !flipped.is_empty() {
                upserts = arrow::compute::concat_batches(&schema, std::iter::once(&upserts).chain(&flipped))?;
            }
        }
        Ok(Computed {
            schema,
            upserts,
            deletes,
            old: kept,
            watermark,
            retracted,
        })
    }

    /// The latest event time in the source as registered in `ctx` (its deleted rows too: they
    /// were seen), µs.
    async fn latest_time(&self, ctx: &SessionContext) -> anyhow::Result<Option<i64>> {
        use datafusion::functions_aggregate::expr_fn::max;
        let time = Expr::Column(Column::new_unqualified(&self.def.time_column));
        let batches = ctx
            .table(datafusion::common::TableReference::bare(self.def.source.as_str()))
            .await?
            .aggregate(vec![], vec![max(time)])?
            .collect()
            .await?;
        let columns: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
        late::max_micros(&columns)
    }

    /// The view's rows outside `scope` whose windows watermark `w` made final: upserted with
    /// `is_final` set (the windows inside `scope` get it from their recomputation).
    async fn newly_final(
        &mut self,
        lake: &Lake,
        ctx: &SessionContext,
        schema: &SchemaRef,
        scope: &Scope,
        w: Option<i64>,
    ) -> anyhow::Result<Vec<RecordBatch>> {
        let (Some(l), Some(w)) = (self.def.lateness, w) else {
            return Ok(Vec::new());
        };
        let Some(table) = latest(&mut self.table, lake, &self.def.name).await? else {
            return Ok(Vec::new());
        };
        let tz = scope::tz_of(schema.field_with_name("window_end")?.data_type());
        let bound = datafusion::prelude::lit(ScalarValue::TimestampMicrosecond(Some(w.saturating_sub(l.allowed)), tz));
        let column = |name: &str| Expr::Column(Column::new_unqualified(name));
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        table.update_datafusion_session(&ctx.state())?;
        let batches = ctx
            .read_table(table.table_provider().await?)?
            .select_columns(&names)?
            .filter(column(IS_FINAL).is_not_true().and(column("window_end").lt(bound)))?
            .collect()
            .await?;
        let (at, flag) = (schema.index_of("window_start")?, schema.index_of(IS_FINAL)?);
        let mut out = Vec::new();
        for b in &batches {
            let b = scope.outside(&concat_as(schema, std::slice::from_ref(b))?, at)?;
            let mut columns = b.columns().to_vec();
            columns[flag] = Arc::new(BooleanArray::from(vec![true; b.num_rows()]));
            out.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
        Ok(out)
    }

    /// The end-to-end crash test's hook: with [`PAUSE_ENV`] set, a step that has its changes
    /// waits that long before committing them, after saying so, so that the test can kill
    /// the worker exactly between a source commit and the view commit that reflects it.
    async fn pause_before_commit(&self, source_version: u64) {
        let Some(ms) = std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        tracing::info!(view = %self.def.name, source_version, ms, "view step paused before its commit");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    /// Counts a commit; every `every` commits compacts the view's table. A failed round is
    /// logged and tried again at the next (the view is right either way).
    async fn compact(&mut self) {
        let Some((every, opts)) = &self.compaction else { return };
        self.since_compaction += 1;
        if self.since_compaction < *every {
            return;
        }
        self.since_compaction = 0;
        match self.writer.compact(opts).await {
            Ok(r) if r.version.is_some() => {
                tracing::info!(view = %self.def.name, version = ?r.version, removed = r.files_removed, added = r.files_added, "view table compacted")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(view = %self.def.name, error = %e, "compacting the view's table failed; the next round retries")
            }
        }
    }

    /// The view's rows at the source version registered in `ctx`.
    async fn compute(&self, ctx: &SessionContext) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
        let sql = match &self.state {
            Some(state) if self.keeps_state() => state.sql.as_str(),
            _ => self.def.sql.as_str(),
        };
        let df = match ctx.sql(sql).await {
            Ok(df) => df,
            Err(e) => {
                use datafusion::error::DataFusionError;
                if let DataFusionError::SchemaError(inner, _) = e.find_root()
                    && let datafusion::common::SchemaError::FieldNotFound { field, .. } = inner.as_ref()
                {
                    return Err(Waiting {
                        view: self.def.name.clone(),
                        table: self.def.source.clone(),
                        column: field.name.clone(),
                    }
                    .into());
                }
                let what = format!("planning view {} over table {}", self.def.name, self.def.source);
                return Err(anyhow::Error::new(e).context(what));
            }
        };
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let rows = df
            .collect()
            .await
            .with_context(|| format!("computing view {}", self.def.name))?;
        let schema = storable_schema(&schema);
        let rows = rows
            .iter()
            .map(|b| concat_as(&schema, std::slice::from_ref(b)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((schema, rows))
    }

    /// `rows` of the touched windows only (all of them without a scope).
    fn within(
        &self,
        scope: Option<&Scope>,
        schema: &SchemaRef,
        rows: Vec<RecordBatch>,
    ) -> anyhow::Result<Vec<RecordBatch>> {
        let (Some(scope), Ok(at)) = (scope, schema.index_of("window_start")) else {
            return Ok(rows);
        };
        rows.iter().map(|b| scope.keep(b, at)).collect()
    }

    /// The view table's rows (of the touched windows only, with a scope), as `schema`;
    /// `None` when the view table does not exist yet.
    async fn old_rows(
        &mut self,
        lake: &Lake,
        ctx: &SessionContext,
        schema: &SchemaRef,
        scope: Option<&Scope>,
    ) -> anyhow::Result<Option<Vec<RecordBatch>>> {
        let Some(old) = latest(&mut self.table, lake, &self.def.name).await? else {
            return Ok(None);
        };
        old.update_datafusion_session(&ctx.state())?;
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut df = ctx.read_table(old.table_provider().await?)?.select_columns(&names).with_context(|| {
            format!(
                "view {} no longer matches its table's columns (was its SQL changed?); remove the view's table and run `cormorant view rebuild {}`",
                self.def.name, self.def.name
            )
        })?;
        if let Some(s) = scope {
            df = df.filter(s.filter("window_start"))?;
        }
        let batches = df.collect().await?;
        let rows = batches
            .iter()
            .map(|b| concat_as(schema, std::slice::from_ref(b)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(self.within(scope, schema, rows)?))
    }

    /// Rows to upsert (new or changed) and keys to delete, comparing the computed rows with
    /// the view table's (`None`: no table yet).
    async fn diff(
        &self,
        ctx: &SessionContext,
        schema: &SchemaRef,
        rows: Vec<RecordBatch>,
        old: Option<Vec<RecordBatch>>,
    ) -> anyhow::Result<(RecordBatch, RecordBatch)> {
        let keys = self.key_schema(schema);
        let Some(old) = old else {
            return Ok((
                arrow::compute::concat_batches(schema, &rows)?,
                RecordBatch::new_empty(keys),
            ));
        };
        ctx.register_table("__view_new", Arc::new(MemTable::try_new(schema.clone(), vec![rows])?))?;
        ctx.register_table("__view_old", Arc::new(MemTable::try_new(schema.clone(), vec![old])?))?;
        let list = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| quoted(f.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (all, key) = (list(schema), list(&keys));
        let changed = format!("SELECT {all} FROM __view_new EXCEPT SELECT {all} FROM __view_old");
        let gone = format!("SELECT {key} FROM __view_old EXCEPT SELECT {key} FROM __view_new");
        let upserts = ctx.sql(&changed).await?.collect().await?;
        let deletes = ctx.sql(&gone).await?.collect().await?;
        Ok((concat_as(schema, &upserts)?, concat_as(&keys, &deletes)?))
    }

    fn key_schema(&self, schema: &SchemaRef) -> SchemaRef {
        Arc::new(Schema::new(
            self.def
                .keys
                .iter()
                .map(|k| schema.field(*k).clone())
                .collect::<Vec<_>>(),
        ))
    }

    /// One change batch: upserts, then deletes (key columns only), all at source version `n`.
    /// `force` (a rebuild): the rows are applied even where the view records version `n`
    /// already (their positions are past it), since they repair what it holds.
    fn change_batch(&self, c: &Computed, n: u64, force: bool) -> anyhow::Result<ChangeBatch> {
        let (schema, upserts, deletes) = (&c.schema, &c.upserts, &c.deletes);
        let key_columns: Vec<String> = self.def.keys.iter().map(|k| schema.field(*k).name().clone()).collect();
        let offset = i64::try_from(n).context("source version out of range")?;
        let mut offsets = vec![SourceOffset {
            stream: self.stream(),
            partition: 0,
            next_offset: offset + 1,
        }];
        if let (Some(_), Some(w)) = (self.def.lateness, c.watermark) {
            offsets.push(Lateness::watermark_offset(&self.def.name, w));
        }
        let (u, d) = (upserts.num_rows(), deletes.num_rows());
        if u + d == 0 {
            return Ok(ChangeBatch::offsets_only(schema.clone(), key_columns, offsets));
        }
        let mut columns = Vec::with_capacity(schema.fields().len() + change::META_COLUMNS.len());
        for (i, field) in schema.fields().iter().enumerate() {
            let deleted: ArrayRef = match self.def.keys.iter().position(|k| *k == i) {
                Some(p) => deletes.column(p).clone(),
                None => new_null_array(field.data_type(), d),
            };
            columns.push(arrow::compute::concat(&[upserts.column(i).as_ref(), deleted.as_ref()])?);
        }
        columns.extend(meta(u, d, offset));
        let data = RecordBatch::try_new(change::with_meta(schema), columns)?;
        let mut kinds = vec![ChangeKind::Upsert; u];
        kinds.extend(std::iter::repeat_n(ChangeKind::Delete, d));
        Ok(ChangeBatch {
            columns: schema.clone(),
            key_columns,
            data,
            kinds,
            positions: vec![
                Position {
                    partition: 0,
                    offset: offset + i64::from(force),
                };
                u + d
            ],
            unavailable: Vec::new(),
            offsets,
        })
    }
}

/// Table `name` at its latest version: the cached one brought forward (reading only the
/// commits since), or opened; `None` when it does not exist.
async fn latest(
    cache: &mut Option<deltalake::DeltaTable>,
    lake: &Lake,
    name: &str,
) -> Result<Option<deltalake::DeltaTable>, TableError> {
    if let Some(t) = cache.as_mut() {
        if t.update_incremental(None).await.is_ok() {
            return Ok(Some(t.clone()));
        }
        *cache = None; // say the log was cleaned past it: open afresh
    }
    if !lake.exists(name).await? {
        return Ok(None);
    }
    match lake.open(name, None).await {
        Ok(t) => {
            *cache = Some(t.clone());
            Ok(Some(t))
        }
        Err(TableError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A session with the window functions and the lake (for their time travel), but no tables:
/// a step registers the source at the version it reads. One partition, so that float
/// aggregates add up in the same order every step and an unchanged group compares equal.
pub(crate) fn session(lake: &Lake) -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_extension(Arc::new(lake.clone())),
    );
    crate::query::functions::register(&ctx);
    crate::query::windows::register(&ctx);
    ctx
}
