//! Late data of a view with `allowed_lateness`: the watermark, final windows and what happens
//! to a change that reaches a final window.
//!
//! The watermark W of a view is the largest event time (the view's time column) its steps
//! have seen in the source: the maximum over the source at a full step, the maximum of the
//! rows the new commits touched at a scoped step, never lower than before. A window is final
//! once `window_end + allowed_lateness < W`; the view's `is_final` column says so, and a step
//! that moves W also marks the windows it made final.
//!
//! A step whose recomputation changes a window that was final before the step has met late
//! data (net: a copy-on-write rewrite that only moved rows changes no window). With
//! `late = "apply"` the change is applied and counted; with `late = "dead_letter"` the window
//! keeps its final value and the change goes to the `_view_late` table — the view, the window,
//! the row the view keeps and the row the source now gives, and the reason — before the view
//! commits. A held window differs from the source at every later step that recomputes it,
//! so it is recorded again only when what the source gives for it changed (and a version's
//! entries once: `txn` `view-late:<view>:0`).
//!
//! Invariants: W is recorded in the view's commit (`txn` `view-watermark:<view>:1`, partition 1
//! so it never meets the partition-0 offsets that make a view step exactly once) and only
//! grows; under `dead_letter` a final window's row never changes except by `view rebuild`.
//! `allowed_lateness` applies to `tumble` and `hop` views (a session's end moves with its
//! events, so it has no fixed end to be final after).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use change::{Position, SourceOffset, StreamId};
use serde::{Deserialize, Serialize};
use tables::{Lake, TableWriter, WriterOptions};

use super::def::ViewDef;
use super::maintain::Computed;

/// What a change that reaches a final window does.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Applied to the window (correct first), and counted.
    #[default]
    Apply,
    /// Not applied: written to `_view_late` with the reason.
    DeadLetter,
}

impl LatePolicy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::DeadLetter => "dead_letter",
        }
    }
}

/// The table that receives the late changes `dead_letter` views do not apply.
pub const LATE_TABLE: &str = "_view_late";
const WATERMARK_SCOPE: &str = "view-watermark";
const LATE_SCOPE: &str = "view-late";
/// Added to a watermark (µs) before it is recorded as a `txn` offset, so that any event time
/// after the year -144,000 records as a positive offset.
const WATERMARK_BIAS: i64 = 1 << 62;
/// The column that says whether a window is final.
pub const IS_FINAL: &str = "is_final";

/// A view's lateness rule.
#[derive(Clone, Copy, Debug)]
pub struct Lateness {
    /// `allowed_lateness` in microseconds
    pub allowed: i64,
    pub policy: LatePolicy,
}

impl Lateness {
    /// Whether a window ending at `end` (µs) is final under watermark `w`.
    pub fn is_final(&self, end: i64, w: Option<i64>) -> bool {
        w.is_some_and(|w| end.saturating_add(self.allowed) < w)
    }

    /// The `txn` that records watermark `w` in a view commit (biased: a writer records only
    /// offsets above -1, and event times before 1970 are negative).
    pub fn watermark_offset(view: &str, w: i64) -> SourceOffset {
        SourceOffset {
            stream: StreamId::new(WATERMARK_SCOPE, view),
            partition: 1,
            next_offset: w.saturating_add(WATERMARK_BIAS),
        }
    }

    /// The watermark a view's table records (`None`: none yet).
    pub async fn watermark(writer: &mut TableWriter, view: &str) -> anyhow::Result<Option<i64>> {
        Ok(writer
            .next_offset(&StreamId::new(WATERMARK_SCOPE, view).app_id(1))
            .await?
            .map(|w| w.saturating_sub(WATERMARK_BIAS)))
    }

    /// `rows` of `schema` with the `is_final` column added, as of watermark `w`.
    pub fn with_is_final(
        &self,
        schema: &SchemaRef,
        rows: &[RecordBatch],
        w: Option<i64>,
    ) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(IS_FINAL, DataType::Boolean, true));
        let out = Arc::new(Schema::new(fields));
        let batches = rows
            .iter()
            .map(|b| {
                let ends = window_ends(b)?;
                let flags: BooleanArray = ends
                    .iter()
                    .map(|e| Some(e.is_some_and(|e| self.is_final(e, w))))
                    .collect();
                let mut columns = b.columns().to_vec();
                columns.push(Arc::new(flags));
                Ok(RecordBatch::try_new(out.clone(), columns)?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((out, batches))
    }

    /// The rows of `batch` whose window was final under watermark `w` (`true` in the mask).
    pub fn final_mask(&self, batch: &RecordBatch, w: Option<i64>) -> anyhow::Result<BooleanArray> {
        Ok(window_ends(batch)?
            .iter()
            .map(|e| Some(e.is_some_and(|e| self.is_final(e, w))))
            .collect())
    }
}

/// The `window_end` column of `batch` in microseconds.
fn window_ends(batch: &RecordBatch) -> anyhow::Result<Int64Array> {
    let ends = batch
        .column_by_name("window_end")
        .context("a view row has window_end")?;
    super::scope::micros_array(ends)
}

/// The largest time (µs) among `columns` (timestamps).
pub fn max_micros(columns: &[ArrayRef]) -> anyhow::Result<Option<i64>> {
    let mut max = None;
    for c in columns {
        max = max.max(arrow::compute::max(&super::scope::micros_array(c)?));
    }
    Ok(max)
}

/// One late change a `dead_letter` view did not apply: a window's row as the view keeps it
/// and as the source now gives it (`None`: no row).
pub struct Held {
    pub window_start: String,
    pub window_end: String,
    pub kept: Option<String>,
    pub source: Option<String>,
}

/// Writes the changes `view` held back at source version `n` to [`LATE_TABLE`]: those whose
/// window it has not reported with the same would-be row before (a held window differs from
/// the source at every later step that recomputes it; a step redone after a crash, maybe at
/// a later version, holds the same windows again). Returns how many it recorded.
pub async fn dead_letter(
    lake: &Lake,
    view: &str,
    n: u64,
    w: i64,
    lateness: &Lateness,
    held: Vec<Held>,
) -> anyhow::Result<usize> {
    if held.is_empty() {
        return Ok(0);
    }
    let reported = reported(lake, view).await?;
    let held: Vec<Held> = held
        .into_iter()
        .filter(|h| reported.get(&(h.window_start.clone(), h.window_end.clone())) != Some(&h.source))
        .collect();
    if held.is_empty() {
        return Ok(0);
    }
    let offset = i64::try_from(n).context("source version out of range")?;
    let reason = format!(
        "the window was final (window_end + allowed_lateness {} < watermark {}, the latest event time seen); the view keeps its value under late = \"dead_letter\"; run `cormorant view rebuild {view}` to apply every late change",
        humantime::format_duration(std::time::Duration::from_micros(lateness.allowed.max(0).unsigned_abs())),
        ts_text(w)
    );
    let n_rows = held.len();
    let text =
        |f: &dyn Fn(&Held) -> Option<String>| -> ArrayRef { Arc::new(held.iter().map(f).collect::<StringArray>()) };
    let schema = Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, true),
        Field::new("source_version", DataType::Int64, true),
        Field::new("window_start", DataType::Utf8, true),
        Field::new("window_end", DataType::Utf8, true),
        Field::new("kept_row", DataType::Utf8, true),
        Field::new("source_row", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let now = chrono::Utc::now().timestamp_micros();
    let data = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![view; n_rows])),
            Arc::new(Int64Array::from(vec![offset; n_rows])),
            text(&|h| Some(h.window_start.clone())),
            text(&|h| Some(h.window_end.clone())),
            text(&|h| h.kept.clone()),
            text(&|h| h.source.clone()),
            Arc::new(StringArray::from(vec![reason.as_str(); n_rows])),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n_rows]).with_timezone("UTC")),
        ],
    )?;
    let offsets = [SourceOffset {
        stream: StreamId::new(LATE_SCOPE, view),
        partition: 0,
        next_offset: offset + 1,
    }];
    let positions = vec![Position { partition: 0, offset }; n_rows];
    let mut writer = TableWriter::open(lake, LATE_TABLE, WriterOptions::default()).await?;
    let n_rows = writer
        .append(&data, &positions, &offsets)
        .await
        .with_context(|| format!("recording late changes of view {view} in {LATE_TABLE}"))?
        .rows_written;
    crate::metrics::METRICS
        .view_late
        .with_label_values(&[view])
        .inc_by(n_rows as u64);
    tracing::info!(
        view,
        windows = n_rows,
        "late changes to final windows held and recorded in {LATE_TABLE}"
    );
    Ok(n_rows)
}

/// The would-be row `view` last reported for each window it held, by (start, end) text.
async fn reported(lake: &Lake, view: &str) -> anyhow::Result<HashMap<(String, String), Option<String>>> {
    use datafusion::prelude::{col, lit};
    let table = match lake.open(LATE_TABLE, None).await {
        Ok(t) => t,
        Err(tables::TableError::NotFound(_)) => return Ok(HashMap::new()),
        Err(e) => return Err(e.into()),
    };
    let ctx = datafusion::prelude::SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .filter(col("view").eq(lit(view)))?
        .sort(vec![col("source_version").sort(true, true)])?
        .select_columns(&["window_start", "window_end", "source_row"])?
        .collect()
        .await?;
    let mut out = HashMap::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let source = b.column(2).is_valid(i).then(|| cell_text(b, "source_row", i));
            out.insert((cell_text(b, "window_start", i), cell_text(b, "window_end", i)), source);
        }
    }
    Ok(out)
}

/// A µs timestamp as text (UTC), for messages.
pub fn ts_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(|| micros.to_string(), |t| t.naive_utc().to_string())
}

/// Row `i` of `batch` as a JSON object.
pub fn row_json(batch: &RecordBatch, i: usize) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
    writer.write(&batch.slice(i, 1))?;
    writer.finish()?;
    Ok(String::from_utf8(out)?.trim_end().to_string())
}

/// The text of row `i` of column `name` of `batch` (window bounds for `_view_late`).
pub fn cell_text(batch: &RecordBatch, name: &str, i: usize) -> String {
    batch
        .column_by_name(name)
        .and_then(|c| arrow::util::display::array_value_to_string(c, i).ok())
        .unwrap_or_default()
}

/// Changes that reached windows final before the step (watermark `before`): under `apply`
/// (or `force`: a rebuild applies them, as the user asked) counted and left in `c`; under
/// `dead_letter` taken out of `c` and returned for [`dead_letter`].
pub(super) fn hold(def: &ViewDef, c: &mut Computed, before: Option<i64>, force: bool) -> anyhow::Result<Vec<Held>> {
    let Some(l) = def.lateness else {
        return Ok(Vec::new());
    };
    let (up, del) = (l.final_mask(&c.upserts, before)?, l.final_mask(&c.deletes, before)?);
    let reached = up.true_count() + del.true_count();
    if reached == 0 {
        return Ok(Vec::new());
    }
    if force || l.policy == LatePolicy::Apply {
        crate::metrics::METRICS
            .view_late
            .with_label_values(&[def.name.as_str()])
            .inc_by(reached as u64);
        tracing::info!(view = %def.name, windows = reached, "late changes to final windows applied");
        return Ok(Vec::new());
    }
    let conv = RowConverter::new(
        def.keys
            .iter()
            .map(|k| SortField::new(c.schema.field(*k).data_type().clone()))
            .collect(),
    )?;
    let key_columns =
        |b: &RecordBatch, cols: &[usize]| -> Vec<ArrayRef> { cols.iter().map(|k| b.column(*k).clone()).collect() };
    let all: Vec<usize> = (0..def.keys.len()).collect();
    let up_keys = conv.convert_columns(&key_columns(&c.upserts, &def.keys))?;
    let del_keys = conv.convert_columns(&key_columns(&c.deletes, &all))?;
    let wanted: std::collections::HashSet<Vec<u8>> = (0..c.upserts.num_rows())
        .filter(|i| up.value(*i))
        .map(|i| up_keys.row(i).as_ref().to_vec())
        .chain(
            (0..c.deletes.num_rows())
                .filter(|i| del.value(*i))
                .map(|i| del_keys.row(i).as_ref().to_vec()),
        )
        .collect();
    // the view's rows of the held windows, as JSON
    let mut kept: HashMap<Vec<u8>, String> = HashMap::new();
    for b in &c.old {
        let rows = conv.convert_columns(&key_columns(b, &def.keys))?;
        for i in 0..b.num_rows() {
            let key = rows.row(i).as_ref().to_vec();
            if wanted.contains(&key) {
                kept.insert(key, row_json(b, i)?);
            }
        }
    }
    let mut held = Vec::new();
    for (batch, mask, keys, source) in [(&c.upserts, &up, &up_keys, true), (&c.deletes, &del, &del_keys, false)] {
        for i in (0..batch.num_rows()).filter(|i| mask.value(*i)) {
            held.push(Held {
                window_start: cell_text(batch, "window_start", i),
                window_end: cell_text(batch, "window_end", i),
                kept: kept.get(keys.row(i).as_ref()).cloned(),
                source: if source { Some(row_json(batch, i)?) } else { None },
            });
        }
    }
    let keep = |m: &BooleanArray| arrow::compute::not(m);
    c.upserts = arrow::compute::filter_record_batch(&c.upserts, &keep(&up)?)?;
    c.deletes = arrow::compute::filter_record_batch(&c.deletes, &keep(&del)?)?;
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_final_once_the_watermark_passes_its_end_plus_the_lateness() {
        let l = Lateness {
            allowed: 10,
            policy: LatePolicy::Apply,
        };
        assert!(!l.is_final(100, None), "no watermark, nothing final");
        assert!(!l.is_final(100, Some(110)), "end + lateness = watermark: not yet");
        assert!(l.is_final(100, Some(111)));
        assert!(!l.is_final(i64::MAX, Some(i64::MAX)), "no overflow");
    }

    #[test]
    fn the_watermark_txn_is_on_partition_1_so_it_never_meets_a_view_steps_offsets() {
        let o = Lateness::watermark_offset("v", 42);
        assert_eq!(o.partition, 1);
        assert_eq!(o.app_id(), "view-watermark:v:1");
    }

    #[test]
    fn max_micros_reads_any_timestamp_unit() {
        let ms: ArrayRef = Arc::new(arrow::array::TimestampMillisecondArray::from(vec![
            Some(3),
            None,
            Some(7),
        ]));
        let us: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![6_000]));
        assert_eq!(max_micros(&[ms, us]).expect("max"), Some(7_000));
        assert_eq!(max_micros(&[]).expect("max"), None);
    }
}
