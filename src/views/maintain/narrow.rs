//! How a step narrows its work: the windows (or sessions) the source commits since the
//! view's version touched ([`crate::views::scope`], [`crate::views::sessions`], from the
//! files those commits added and removed, [`tables::changes`]), and for a view that keeps
//! arithmetic state the exact rows they took out and put in ([`crate::views::retract`]).
//! `None` from any of these means the step recomputes the whole view.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use tables::Lake;
use tables::changes::{Delta, Touched};

use super::super::def::WindowKind;
use super::super::retract::{Changed, State};
use super::super::scope::{self, Scope};
use super::{View, latest};

impl View {
    /// The windows (or, for a session view, the sessions) source versions `from..=to`
    /// touched, or `None` for a full recompute (a range that cannot be narrowed down, see
    /// [`tables::changes`]).
    pub(super) async fn scope(
        &mut self,
        lake: &Lake,
        ctx: &SessionContext,
        source: &deltalake::DeltaTable,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<Scope>> {
        if from > to {
            return Ok(None);
        }
        if self.def.kind == WindowKind::Session {
            return self.session_scope(lake, ctx, source, from, to).await;
        }
        let Some(shape) = self.shape(ctx).await? else {
            return Ok(None);
        };
        let Some(rows) = self
            .touched(source, from, to, std::slice::from_ref(&self.def.time_column))
            .await?
        else {
            return Ok(None);
        };
        let columns: Vec<ArrayRef> = rows.iter().filter_map(|b| b.columns().first().cloned()).collect();
        Ok(Scope::of_columns(shape, &columns))
    }

    /// The window shape, read from the SQL's interval arguments once; `None` for sessions.
    pub(super) async fn shape(&mut self, ctx: &SessionContext) -> anyhow::Result<Option<scope::Shape>> {
        if self.shape.is_none() {
            let mut intervals = Vec::new();
            for text in &self.def.intervals {
                intervals.push(interval_micros(ctx, text).await?);
            }
            self.shape = Some(scope::shape(self.def.kind, &intervals));
        }
        Ok(self.shape.flatten())
    }

    /// Whether the view could keep count/sum/avg by arithmetic but its table, made before
    /// views kept state, has not the columns (`cormorant view rebuild` makes it anew).
    pub fn lacks_state(&self) -> bool {
        self.state.is_some() && !self.keeps_state()
    }

    /// Whether the view's table keeps the arithmetic state (a table made before views kept it
    /// does not, and recomputes until rebuilt); a table not made yet will.
    pub(super) fn keeps_state(&self) -> bool {
        let table = self.writer.table();
        self.state.is_some()
            && (table.version().is_none()
                || table.snapshot().is_ok_and(|s| {
                    s.snapshot()
                        .arrow_schema()
                        .field_with_name(super::super::retract::ROWS)
                        .is_ok()
                }))
    }

    /// The rows source versions `from..=to` took out and put in (the columns the view names)
    /// and the windows they reach; `None` when the range cannot be read so.
    pub(in crate::views) async fn delta(
        &mut self,
        ctx: &SessionContext,
        source: &deltalake::DeltaTable,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<(Scope, Changed)>> {
        let Some(shape) = self.shape(ctx).await?.filter(|_| from <= to) else {
            return Ok(None);
        };
        let schema = source.snapshot()?.snapshot().arrow_schema();
        let names = State::inputs(&self.def, &schema);
        let (minus, plus) = match tables::changes::delta(source, from, to, &names, self.max_touched_share).await? {
            Delta::Rows { minus, plus } => (minus, plus),
            Delta::Everything(why) => {
                tracing::debug!(view = %self.def.name, why, "recomputing the whole view");
                return Ok(None);
            }
        };
        let times: Vec<ArrayRef> = minus
            .iter()
            .chain(&plus)
            .filter_map(|b| b.column_by_name(&self.def.time_column).cloned())
            .collect();
        let columns =
            Arc::new(schema.project(&names.iter().filter_map(|n| schema.index_of(n).ok()).collect::<Vec<_>>())?);
        Ok(Scope::of_columns(shape, &times).map(|scope| {
            (
                scope,
                Changed {
                    from,
                    columns,
                    minus,
                    plus,
                },
            )
        }))
    }

    /// The touched windows' rows by arithmetic ([`crate::views::retract`]): the view's rows of those
    /// windows, minus what the commits took out, plus what they put in; `None` when an
    /// aggregate is not kept exactly that way, and the step recomputes them instead.
    pub(in crate::views) async fn by_arithmetic(
        &mut self,
        lake: &Lake,
        ctx: &SessionContext,
        scope: &Scope,
        changed: Changed,
    ) -> anyhow::Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        let Some(state) = &self.state else { return Ok(None) };
        let partials = match state.partials(&self.def, lake, &changed).await {
            Ok(p) => p,
            Err(e) => {
                // e.g. a column the view names that the table has not got yet: the
                // recomputation says what is wrong
                tracing::debug!(view = %self.def.name, error = %e, "recomputing the touched windows");
                None
            }
        };
        let Some((schema, minus, plus)) = partials else {
            return Ok(None);
        };
        let Some(old) = self.old_rows(lake, ctx, &schema, Some(scope)).await? else {
            return Ok(None);
        };
        // the old rows must be those of the version whose txn the range starts after: another
        // worker's step committed in between would be counted twice (a recomputation heals
        // such a race; arithmetic would carry it on)
        let read_at = match &self.table {
            Some(t) => {
                let app = super::txn_app_id(&self.def.source);
                t.snapshot()?.transaction_version(t.log_store().as_ref(), &app).await?
            }
            None => None,
        };
        if read_at != i64::try_from(changed.from).ok() {
            tracing::debug!(view = %self.def.name, ?read_at, from = changed.from, "the view moved on while its step read it; recomputing the touched windows");
            return Ok(None);
        }
        // a row whose state is missing (written without it, e.g. while the view's config had
        // another late policy) cannot be built on: its windows are recomputed
        if old.iter().any(|b| {
            b.column_by_name(crate::views::retract::ROWS)
                .is_none_or(|c| c.null_count() > 0)
        }) {
            tracing::debug!(view = %self.def.name, "view rows without state; recomputing the touched windows");
            return Ok(None);
        }
        let Some(state) = &self.state else { return Ok(None) };
        let rows = state.combine(&self.def, lake, &schema, old, minus, plus).await?;
        Ok(rows.map(|r| (schema, r)))
    }

    /// The `columns` of the rows source versions `from..=to` touched; `None` when the range
    /// cannot be narrowed down (see [`tables::changes`]).
    pub(super) async fn touched(
        &self,
        source: &deltalake::DeltaTable,
        from: u64,
        to: u64,
        columns: &[String],
    ) -> anyhow::Result<Option<Vec<RecordBatch>>> {
        match tables::changes::touched(source, from, to, columns, self.max_touched_share).await? {
            Touched::Rows(rows) => Ok(Some(rows)),
            Touched::Everything(why) => {
                tracing::debug!(view = %self.def.name, why, "recomputing the whole view");
                Ok(None)
            }
        }
    }

    /// The sessions source versions `from..=to` can reach ([`crate::views::sessions`]), or `None`
    /// for a full recompute (a view without its session keys as columns, too many keys, a
    /// range that cannot be narrowed down).
    pub(super) async fn session_scope(
        &mut self,
        lake: &Lake,
        ctx: &SessionContext,
        source: &deltalake::DeltaTable,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<Scope>> {
        let Some(keys) = self.def.session_keys.clone() else {
            return Ok(None);
        };
        let gap = match self.def.intervals.first() {
            Some(text) => interval_micros(ctx, text).await?,
            None => return Ok(None),
        };
        let mut columns = vec![self.def.time_column.clone()];
        columns.extend(keys.iter().cloned());
        let Some(rows) = self.touched(source, from, to, &columns).await? else {
            return Ok(None);
        };
        let Some(table) = latest(&mut self.table, lake, &self.def.name).await? else {
            return Ok(None);
        };
        // the old sessions of the changed keys
        table.update_datafusion_session(&ctx.state())?;
        let mut wanted = vec!["window_start", "window_end"];
        wanted.extend(keys.iter().map(String::as_str));
        let tz = rows
            .first()
            .and_then(|b| b.column_by_name(&self.def.time_column))
            .and_then(|c| scope::tz_of(c.data_type()));
        let mut df = ctx.read_table(table.table_provider().await?)?.select_columns(&wanted)?;
        if let Some(f) =
            super::super::sessions::Regions::reachable(&rows, &self.def.time_column, &keys, gap, tz.clone())?
        {
            df = df.filter(f)?;
        }
        let old = df.collect().await?;
        let regions = super::super::sessions::Regions::of(&rows, &self.def.time_column, &old, gap, &keys)?;
        Ok(regions.map(|r| Scope::sessions(r, tz)))
    }
}

/// An interval argument (SQL text such as `INTERVAL '1 hour'`) in microseconds, as
/// DataFusion reads it.
async fn interval_micros(ctx: &SessionContext, text: &str) -> anyhow::Result<i64> {
    let batches = ctx.sql(&format!("SELECT {text}")).await?.collect().await?;
    let value = batches
        .first()
        .filter(|b| b.num_rows() == 1)
        .map(|b| ScalarValue::try_from_array(b.column(0), 0))
        .transpose()?;
    match value {
        Some(ScalarValue::IntervalMonthDayNano(Some(v))) if v.months == 0 => {
            Ok(i64::from(v.days) * 86_400_000_000 + v.nanoseconds / 1000)
        }
        Some(ScalarValue::IntervalDayTime(Some(v))) => {
            Ok(i64::from(v.days) * 86_400_000_000 + i64::from(v.milliseconds) * 1000)
        }
        other => anyhow::bail!("window argument {text} is not an interval of days or less: {other:?}"),
    }
}
