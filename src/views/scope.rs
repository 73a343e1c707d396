//! The windows a set of changed event times reaches, for `tumble` and `hop` views: a step
//! recomputes those windows only, from the source rows inside them.
//!
//! Invariants: a window is recomputed from ALL source rows in `[start, start + size)` — the
//! source scan is filtered on the merged ranges of the touched windows — and only windows
//! whose start is in the touched set are kept from the result (a window that merely overlaps
//! a range saw part of its rows). Windows are aligned to the epoch as `date_bin(…,
//! '1970-01-01')` aligns them in the batch query.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::common::Column;
use datafusion::prelude::{Expr, lit};
use datafusion::scalar::ScalarValue;

use super::def::WindowKind;
use super::sessions::Regions;

/// Window length and step in microseconds (tumble: `slide == size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub size: i64,
    pub slide: i64,
}

impl Shape {
    /// The starts of every window that contains `t`.
    pub fn starts(self, t: i64) -> impl Iterator<Item = i64> {
        let last = t.div_euclid(self.slide) * self.slide;
        let first = last - (self.size - 1) / self.slide * self.slide;
        (0..)
            .map(move |k| first + k * self.slide)
            .take_while(move |s| *s <= last)
            .filter(move |s| *s <= t && t < s + self.size)
    }
}

/// The touched windows (or sessions) and a scan filter that covers them.
#[derive(Debug)]
pub struct Scope {
    reach: Reach,
    /// The time zone of the time column (window bounds share it).
    tz: Option<std::sync::Arc<str>>,
    /// The latest of the touched times (a view's watermark follows it).
    latest: Option<i64>,
}

#[derive(Debug)]
enum Reach {
    Windows {
        starts: BTreeSet<i64>,
        /// Disjoint, ascending `[lo, hi)` ranges, µs, covering every touched window (maybe
        /// more: at most [`MAX_RANGES`]).
        ranges: Vec<(i64, i64)>,
    },
    Sessions(Regions),
}

impl Scope {
    /// The windows of `shape` that contain any of `times` (µs since the epoch).
    pub fn of(shape: Shape, times: impl IntoIterator<Item = i64>, tz: Option<std::sync::Arc<str>>) -> Self {
        let mut latest = None;
        let starts: BTreeSet<i64> = times
            .into_iter()
            .inspect(|t| latest = latest.max(Some(*t)))
            .flat_map(|t| shape.starts(t))
            .collect();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for s in &starts {
            let (lo, hi) = (*s, s + shape.size);
            match ranges.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => ranges.push((lo, hi)),
            }
        }
        Self {
            reach: Reach::Windows {
                starts,
                ranges: coalesce(ranges, MAX_RANGES),
            },
            tz,
            latest,
        }
    }

    /// The windows of `shape` that the values of the timestamp `columns` fall in (their time
    /// zone the first column's); `None` as for [`micros`].
    pub fn of_columns(shape: Shape, columns: &[arrow::array::ArrayRef]) -> Option<Self> {
        let tz = columns.first().and_then(|c| tz_of(c.data_type()));
        micros(columns).map(|times| Self::of(shape, times, tz))
    }

    /// The sessions of a session view that `regions` reach.
    pub fn sessions(regions: Regions, tz: Option<std::sync::Arc<str>>) -> Self {
        Self {
            reach: Reach::Sessions(regions),
            tz,
            latest: None,
        }
    }

    /// The latest touched time, µs.
    pub fn latest(&self) -> Option<i64> {
        self.latest
    }

    pub fn is_empty(&self) -> bool {
        self.windows() == 0
    }

    /// Windows (or session keys) recomputed.
    pub fn windows(&self) -> usize {
        match &self.reach {
            Reach::Windows { starts, .. } => starts.len(),
            Reach::Sessions(r) => r.len(),
        }
    }

    /// `column` (a timestamp) inside one of the ranges (and, for sessions, the rows' key one
    /// of the changed keys).
    pub fn filter(&self, column: &str) -> Expr {
        let ranges = match &self.reach {
            Reach::Windows { ranges, .. } => ranges,
            Reach::Sessions(r) => return r.filter(column, self.tz.clone()),
        };
        let at = |v: i64| lit(ScalarValue::TimestampMicrosecond(Some(v), self.tz.clone()));
        let col = || Expr::Column(Column::new_unqualified(column));
        ranges
            .iter()
            .map(|(lo, hi)| col().gt_eq(at(*lo)).and(col().lt(at(*hi))))
            .reduce(Expr::or)
            .unwrap_or_else(|| lit(false))
    }

    /// The rows of `batch` whose `window_start` (column `at`, a µs timestamp) is a touched
    /// window.
    pub fn keep(&self, batch: &RecordBatch, at: usize) -> anyhow::Result<RecordBatch> {
        self.select(batch, at, true)
    }

    /// The rows of `batch` whose window is not a touched one.
    pub fn outside(&self, batch: &RecordBatch, at: usize) -> anyhow::Result<RecordBatch> {
        self.select(batch, at, false)
    }

    fn select(&self, batch: &RecordBatch, at: usize, touched: bool) -> anyhow::Result<RecordBatch> {
        let inside = match &self.reach {
            Reach::Windows { starts, .. } => {
                let values = arrow::compute::cast(batch.column(at), &DataType::Int64)?;
                let values = values.as_primitive::<Int64Type>();
                (0..values.len())
                    .map(|i| Some(values.is_valid(i) && starts.contains(&values.value(i))))
                    .collect()
            }
            Reach::Sessions(r) => r.mask(batch, at)?,
        };
        let mask = if touched { inside } else { arrow::compute::not(&inside)? };
        Ok(arrow::compute::filter_record_batch(batch, &mask)?)
    }
}

/// The most time ranges a scan filter names. A filter is evaluated against every file's
/// statistics and every row, so a hundred scattered windows as a hundred OR-ed ranges made
/// the scan slower than reading everything; a few ranges that close the smallest gaps prune
/// almost as well, and [`Scope::keep`] still keeps exactly the touched windows.
const MAX_RANGES: usize = 8;

/// `ranges` (disjoint, ascending) merged across their smallest gaps down to `max`.
fn coalesce(ranges: Vec<(i64, i64)>, max: usize) -> Vec<(i64, i64)> {
    if ranges.len() <= max {
        return ranges;
    }
    // keep the max-1 widest gaps as the splits
    let mut gaps: Vec<(i64, usize)> = ranges
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1].0 - w[0].1, i))
        .collect();
    gaps.sort_unstable_by(|a, b| b.cmp(a));
    let mut splits: Vec<usize> = gaps.iter().take(max.saturating_sub(1)).map(|g| g.1).collect();
    splits.sort_unstable();
    let mut out = Vec::with_capacity(max);
    let mut lo = ranges[0].0;
    for i in splits {
        out.push((lo, ranges[i].1));
        lo = ranges[i + 1].0;
    }
    out.push((lo, ranges[ranges.len() - 1].1));
    out
}

/// The microseconds of each value of a timestamp column; `None` when the column is not a
/// timestamp or holds a NULL (such rows fall in a NULL window, which only a full recompute
/// keeps right).
pub fn micros(columns: &[arrow::array::ArrayRef]) -> Option<Vec<i64>> {
    let mut out = Vec::new();
    for c in columns {
        if !matches!(c.data_type(), DataType::Timestamp(..)) || c.null_count() > 0 {
            return None;
        }
        out.extend(micros_array(c).ok()?.values().iter().copied());
    }
    Some(out)
}

/// A time column (a timestamp of any unit, or what casts to one) as microseconds since the
/// epoch, NULLs kept.
pub fn micros_array(c: &arrow::array::ArrayRef) -> anyhow::Result<arrow::array::Int64Array> {
    let us = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, tz_of(c.data_type())))?;
    let ints = arrow::compute::cast(&us, &DataType::Int64)?;
    Ok(ints.as_primitive::<Int64Type>().clone())
}

/// The time zone of a timestamp type (`None` for a naive timestamp and for other types).
pub fn tz_of(t: &DataType) -> Option<std::sync::Arc<str>> {
    match t {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    }
}

/// The shape of a view's windows from its interval arguments in µs, `None` for sessions.
pub fn shape(kind: WindowKind, intervals: &[i64]) -> Option<Shape> {
    match (kind, intervals) {
        (WindowKind::Tumble, [size]) => Some(Shape {
            size: *size,
            slide: *size,
        }),
        (WindowKind::Hop, [slide, size]) => Some(Shape {
            size: *size,
            slide: *slide,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges_of(s: &Scope) -> Vec<(i64, i64)> {
        match &s.reach {
            Reach::Windows { ranges, .. } => ranges.clone(),
            Reach::Sessions(_) => Vec::new(),
        }
    }

    #[test]
    fn a_time_reaches_the_windows_that_contain_it() {
        let tumble = Shape { size: 10, slide: 10 };
        assert_eq!(tumble.starts(25).collect::<Vec<_>>(), vec![20]);
        assert_eq!(tumble.starts(-1).collect::<Vec<_>>(), vec![-10]);
        let hop = Shape { size: 30, slide: 10 };
        assert_eq!(hop.starts(25).collect::<Vec<_>>(), vec![0, 10, 20]);
        assert_eq!(hop.starts(30).collect::<Vec<_>>(), vec![10, 20, 30]);
        let sparse = Shape { size: 5, slide: 10 };
        assert_eq!(sparse.starts(7).count(), 0, "a hop with gaps between windows");
        assert_eq!(sparse.starts(12).collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn touched_windows_merge_into_ranges() {
        let s = Scope::of(Shape { size: 10, slide: 10 }, [5, 7, 15, 42], None);
        assert_eq!(ranges_of(&s), vec![(0, 20), (40, 50)]);
        assert_eq!(s.windows(), 3);
    }

    #[test]
    fn many_ranges_merge_across_the_smallest_gaps() {
        let ranges = vec![(0, 1), (2, 3), (10, 11), (12, 13), (100, 101)];
        assert_eq!(coalesce(ranges.clone(), 5), ranges);
        assert_eq!(coalesce(ranges.clone(), 3), vec![(0, 3), (10, 13), (100, 101)]);
        assert_eq!(coalesce(ranges.clone(), 2), vec![(0, 13), (100, 101)]);
        assert_eq!(coalesce(ranges, 1), vec![(0, 101)]);
        // a scope of scattered windows filters by a few ranges, and keeps exactly its windows
        let s = Scope::of(Shape { size: 10, slide: 10 }, (0..50).map(|k| k * 1000), None);
        assert_eq!(ranges_of(&s).len(), MAX_RANGES);
        assert_eq!(s.windows(), 50);
    }
}
