//! The sessions a set of changed events can reach, for `session` views keyed by columns the
//! view keeps: a step recomputes, per changed key, one time region instead of the table.
//!
//! Per key k with changed event times T (rows added, removed or hidden), an old session S of
//! k (`[start, end)`, `end` = its last event + gap) is affected when some t in T lies in
//! `[start − gap, end]`: an added event there extends or bridges it, a removed one may split
//! it. The region of k is `[min(T ∪ starts of affected), max(T ∪ last events of affected)]`.
//!
//! Invariant (why recomputing the region is exact): every unaffected session of k lies
//! entirely inside or entirely outside the region, and more than a gap away from every
//! event the region's sessions are made of — so sessions computed from k's events in any
//! time range that contains the region are, where they start inside the region, exactly the
//! new sessions there; and the view's rows of k starting inside the region are exactly the
//! old sessions to replace. [`Regions::keep`] keeps those rows, from both sides.

use std::collections::HashMap;

use anyhow::Context;
use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use datafusion::common::Column;
use datafusion::prelude::{Expr, lit};
use datafusion::scalar::ScalarValue;

/// Above this many changed keys a step recomputes every session: an `IN` list that long
/// prunes nothing and costs per row.
const MAX_KEYS: usize = 10_000;

/// Per changed key, the time region whose sessions a step recomputes.
#[derive(Debug)]
pub struct Regions {
    keys: Vec<String>,
    types: Vec<DataType>,
    /// inclusive `[lo, hi]`, µs, by key (row-encoded)
    by_key: HashMap<Vec<u8>, (i64, i64)>,
    /// the values of the only key column, for the scan's `IN` list (`None`: several keys)
    values: Option<Vec<ScalarValue>>,
    span: (i64, i64),
}

impl Regions {
    /// A filter on the view's rows that keeps every old session the changed events in
    /// `touched` can reach: sessions that end at or after the earliest changed time and
    /// start at most a gap after the latest, of the changed keys (when there is one key
    /// column and not too many keys). `None`: a changed time is NULL (read everything).
    pub fn reachable(
        touched: &[RecordBatch],
        time: &str,
        keys: &[String],
        gap: i64,
        tz: Option<std::sync::Arc<str>>,
    ) -> anyhow::Result<Option<Expr>> {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for b in touched {
            let Some(t) = micros(b.column_by_name(time).context("the time column")?)? else {
                return Ok(None);
            };
            for t in t {
                (lo, hi) = (lo.min(t), hi.max(t));
            }
        }
        if lo > hi {
            return Ok(Some(lit(false)));
        }
        let at = |v: i64| lit(ScalarValue::TimestampMicrosecond(Some(v), tz.clone()));
        let col = |c: &str| Expr::Column(Column::new_unqualified(c));
        let time = col("window_end")
            .gt_eq(at(lo))
            .and(col("window_start").lt_eq(at(hi.saturating_add(gap))));
        Ok(Some(match keys {
            [key] => match values(touched, key)? {
                Some(v) => time.and(in_list(key, v)),
                None => time,
            },
            _ => time,
        }))
    }

    /// The regions of the changed events in `touched` (time column `time`, then `keys`),
    /// given the view's `old` sessions of those keys (`window_start`, `window_end`, `keys`);
    /// `None` when the step should recompute everything.
    pub fn of(
        touched: &[RecordBatch],
        time: &str,
        old: &[RecordBatch],
        gap: i64,
        keys: &[String],
    ) -> anyhow::Result<Option<Self>> {
        let Some(first) = touched.first() else {
            return Ok(Some(Self::empty(keys)));
        };
        let types: Vec<DataType> = keys
            .iter()
            .map(|k| {
                Ok(first
                    .column_by_name(k)
                    .context("a session key column")?
                    .data_type()
                    .clone())
            })
            .collect::<anyhow::Result<_>>()?;
        let conv = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let mut times: HashMap<Vec<u8>, Vec<i64>> = HashMap::new();
        for b in touched {
            let Some(t) = micros(b.column_by_name(time).context("the time column")?)? else {
                return Ok(None);
            };
            let rows = conv.convert_columns(&columns(b, keys, &types)?)?;
            for (i, t) in t.into_iter().enumerate() {
                times.entry(rows.row(i).as_ref().to_vec()).or_default().push(t);
            }
        }
        if times.len() > MAX_KEYS {
            return Ok(None);
        }
        let mut by_key: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for (k, ts) in &mut times {
            ts.sort_unstable();
            by_key.insert(k.clone(), (ts[0], ts[ts.len() - 1]));
        }
        for b in old {
            let starts = micros(b.column_by_name("window_start").context("window_start")?)?;
            let ends = micros(b.column_by_name("window_end").context("window_end")?)?;
            let (Some(starts), Some(ends)) = (starts, ends) else {
                return Ok(None);
            };
            let rows = conv.convert_columns(&columns(b, keys, &types)?)?;
            for (i, (s, e)) in starts.into_iter().zip(ends).enumerate() {
                let key = rows.row(i);
                let Some(ts) = times.get(key.as_ref()) else { continue };
                // affected: a changed time in [start - gap, end]
                let from = ts.partition_point(|t| *t < s.saturating_sub(gap));
                if ts.get(from).is_some_and(|t| *t <= e)
                    && let Some(region) = by_key.get_mut(key.as_ref())
                {
                    *region = (region.0.min(s), region.1.max(e.saturating_sub(gap)));
                }
            }
        }
        let span = by_key
            .values()
            .fold((i64::MAX, i64::MIN), |(lo, hi), r| (lo.min(r.0), hi.max(r.1)));
        let values = match keys {
            [key] => values(touched, key)?,
            _ => None,
        };
        Ok(Some(Self {
            keys: keys.to_vec(),
            types,
            by_key,
            values,
            span,
        }))
    }

    fn empty(keys: &[String]) -> Self {
        Self {
            keys: keys.to_vec(),
            types: Vec::new(),
            by_key: HashMap::new(),
            values: None,
            span: (0, -1),
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// A filter on `column` (a timestamp) and the key that contains every region (maybe
    /// more: [`Regions::keep`] is exact).
    pub fn filter(&self, column: &str, tz: Option<std::sync::Arc<str>>) -> Expr {
        if self.by_key.is_empty() {
            return lit(false);
        }
        let at = |v: i64| lit(ScalarValue::TimestampMicrosecond(Some(v), tz.clone()));
        let col = Expr::Column(Column::new_unqualified(column));
        let time = col.clone().gt_eq(at(self.span.0)).and(col.lt_eq(at(self.span.1)));
        match (&self.values, self.keys.as_slice()) {
            (Some(v), [key]) => time.and(in_list(key, v.clone())),
            _ => time,
        }
    }

    /// The rows of `batch` (view rows, `window_start` at `at`) whose key has a region that
    /// contains their start.
    pub fn keep(&self, batch: &RecordBatch, at: usize) -> anyhow::Result<RecordBatch> {
        Ok(arrow::compute::filter_record_batch(batch, &self.mask(batch, at)?)?)
    }

    /// Which rows of `batch` [`Regions::keep`] keeps.
    pub fn mask(&self, batch: &RecordBatch, at: usize) -> anyhow::Result<BooleanArray> {
        if self.by_key.is_empty() {
            return Ok(BooleanArray::from(vec![false; batch.num_rows()]));
        }
        let conv = RowConverter::new(self.types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let rows = conv.convert_columns(&columns(batch, &self.keys, &self.types)?)?;
        let starts = micros(batch.column(at))?.context("window_start without NULLs")?;
        let mask: BooleanArray = starts
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Some(
                    self.by_key
                        .get(rows.row(i).as_ref())
                        .is_some_and(|(lo, hi)| lo <= s && s <= hi),
                )
            })
            .collect();
        Ok(mask)
    }
}

/// `keys` of `batch`, cast to `types` (view rows keep strings as Utf8, a scan may give views).
fn columns(batch: &RecordBatch, keys: &[String], types: &[DataType]) -> anyhow::Result<Vec<ArrayRef>> {
    keys.iter()
        .zip(types)
        .map(|(k, t)| {
            let c = batch
                .column_by_name(k)
                .with_context(|| format!("session key column {k}"))?;
            Ok(arrow::compute::cast(c, t)?)
        })
        .collect()
}

/// The distinct values of column `key` in `batches`; `None` above [`MAX_KEYS`].
fn values(batches: &[RecordBatch], key: &str) -> anyhow::Result<Option<Vec<ScalarValue>>> {
    let mut out: Vec<ScalarValue> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for b in batches {
        let c = b.column_by_name(key).context("a session key column")?;
        for i in 0..c.len() {
            let v = ScalarValue::try_from_array(c, i)?;
            if seen.insert(v.clone()) {
                out.push(v);
            }
            if out.len() > MAX_KEYS {
                return Ok(None);
            }
        }
    }
    Ok(Some(out))
}

/// `key IN (values)`, NULL included when it is one of them.
fn in_list(key: &str, values: Vec<ScalarValue>) -> Expr {
    let col = Expr::Column(Column::new_unqualified(key));
    let null = values.iter().any(ScalarValue::is_null);
    let list: Vec<Expr> = values.into_iter().filter(|v| !v.is_null()).map(lit).collect();
    let listed = if list.is_empty() {
        lit(false)
    } else {
        col.clone().in_list(list, false)
    };
    if null { listed.or(col.is_null()) } else { listed }
}

/// The µs of a timestamp column; `None` when it holds a NULL (or is not a timestamp).
fn micros(c: &ArrayRef) -> anyhow::Result<Option<Vec<i64>>> {
    Ok(super::scope::micros(std::slice::from_ref(c)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn touched(rows: &[(i32, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("k", DataType::Int32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            ],
        )
        .expect("batch")
    }

    /// Sessions as view rows: (key, start, end).
    fn sessions(rows: &[(i32, i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("window_start", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("window_end", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("k", DataType::Int32, true),
        ]));
        let ts = |f: fn(&(i32, i64, i64)) -> i64| {
            Arc::new(TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        RecordBatch::try_new(
            schema,
            vec![
                ts(|r| r.1),
                ts(|r| r.2),
                Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn a_region_spans_the_changes_and_the_sessions_they_reach() {
        let gap = 10;
        // key 1: sessions [0, 15) (last event 5), [40, 60) (last 50), [100, 110) (last 100)
        let old = sessions(&[(1, 0, 15), (1, 40, 60), (1, 100, 110), (2, 0, 20)]);
        let keys = ["k".to_string()];
        // an event at 32 reaches [40, 60) (within a gap before its start), not [0, 15)
        let r = Regions::of(&[touched(&[(1, 32)])], "ts", std::slice::from_ref(&old), gap, &keys)
            .expect("regions")
            .expect("scoped");
        assert_eq!(r.len(), 1, "only key 1 changed");
        let kept = r.keep(&old, 0).expect("keep");
        assert_eq!(kept.num_rows(), 1, "the view rows to replace: key 1's [40, 60)");
        assert_eq!(r.span, (32, 50));
        // an event at 25 bridges nothing: 25 - 5 > gap and 40 - 25 > gap
        let r = Regions::of(&[touched(&[(1, 25)])], "ts", std::slice::from_ref(&old), gap, &keys)
            .expect("regions")
            .expect("scoped");
        assert_eq!(r.keep(&old, 0).expect("keep").num_rows(), 0);
        assert_eq!(r.span, (25, 25));
        // removed events inside two sessions: both, and the one between them, are in the region
        let r = Regions::of(
            &[touched(&[(1, 3), (1, 100)])],
            "ts",
            std::slice::from_ref(&old),
            gap,
            &keys,
        )
        .expect("regions")
        .expect("scoped");
        assert_eq!(r.keep(&old, 0).expect("keep").num_rows(), 3);
        assert_eq!(r.span, (0, 100));
    }

    #[test]
    fn the_scan_filter_names_the_changed_keys() {
        let r = Regions::of(&[touched(&[(7, 5), (9, 8)])], "ts", &[], 10, &["k".to_string()])
            .expect("regions")
            .expect("scoped");
        let f = r.filter("ts", None).to_string();
        assert!(f.contains("k IN ([Int32(7), Int32(9)])"), "{f}");
        let none = Regions::of(&[], "ts", &[], 10, &["k".to_string()])
            .expect("regions")
            .expect("scoped");
        assert_eq!(none.len(), 0);
        assert_eq!(none.filter("ts", None), lit(false));
    }
}
