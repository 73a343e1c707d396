//! Which values a range of commits touched, for readers that follow a table (the windowed
//! views): the given columns of every row in every file a data-changing commit added or
//! removed, so a follower recomputes only what those values reach instead of the table.
//!
//! The answer is a superset, on purpose: a file whose deletion vector grew brings the rows the
//! new vector hides that the old one did not (read by row selection), a new file all its rows,
//! and a removed file (copy-on-write rewrite, truncate) all its rows, also those it kept.
//! Recomputing a few windows too many costs little; missing one would be wrong. Compaction
//! (`dataChange = false`) changes no row and is skipped. When the range cannot be read this
//! way — the schema changed, a removed file was vacuumed, a commit expired — the answer is
//! [`Touched::Everything`] with the reason, and the follower recomputes in full.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use deltalake::kernel::DeletionVectorDescriptor;
use roaring::RoaringTreemap;

use crate::dv;
use crate::error::{Result, TableError};
use crate::files::{self, FileRef};

/// One file the range touched: how it entered the range and how it left it.
struct Touch {
    file: FileRef,
    /// `None`: added in the range (all its rows are new); `Some(dv)`: there before, with
    /// that deletion vector
    first: Option<Option<DeletionVectorDescriptor>>,
    last: Last,
}

enum Last {
    /// still in the table, with this deletion vector
    Kept(Option<DeletionVectorDescriptor>),
    /// removed
    Gone,
}

impl Touch {
    /// For a file that was there before the range and is still there after it: its vector
    /// before and after (the rows the range hid are the difference); `None` when the file
    /// must be read whole (new, or removed: a copy-on-write rewrite, a truncate).
    fn newly_hidden(&self) -> Option<(Option<DeletionVectorDescriptor>, Option<DeletionVectorDescriptor>)> {
        match (&self.first, &self.last) {
            (Some(before), Last::Kept(after)) => Some((before.clone(), after.clone())),
            _ => None,
        }
    }
}

/// What a range of commits touched.
#[derive(Debug)]
pub enum Touched {
    /// The requested columns of the rows added, and of the rows removed or hidden (see the
    /// module doc).
    Rows(Vec<RecordBatch>),
    /// The range cannot be narrowed down; the reason.
    Everything(String),
}

/// The `columns` of the rows touched by commits `from..=to` of `table` (loaded at `to` or
/// later). When the files touched hold more than `max_share` of the table's bytes, reading
/// them costs about what reading the table does and narrows little: the answer is then
/// [`Touched::Everything`], decided from the log alone.
pub async fn touched(table: &DeltaTable, from: u64, to: u64, columns: &[String], max_share: f64) -> Result<Touched> {
    let files = match walk(table, from, to, max_share).await? {
        Ok(files) => files,
        Err(why) => return Ok(Touched::Everything(why)),
    };
    let store = table.log_store().object_store(None);
    let schema = table.snapshot()?.snapshot().arrow_schema();
    let mut rows = Vec::with_capacity(files.len());
    for t in files {
        let selected = match t.newly_hidden() {
            None => None,
            Some((before, after)) => match vectors(&store, before, after).await? {
                Ok((before, after)) => Some(positions(&after - &before)),
                Err(why) => return Ok(Touched::Everything(why)),
            },
        };
        if selected.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let Some(file) = located(&store, t.file).await? else {
            return Ok(Touched::Everything("a file the range touched was vacuumed".into()));
        };
        rows.push(files::read(store.clone(), &file, &schema, Some(columns), selected.as_deref()).await?);
    }
    Ok(Touched::Rows(rows))
}

/// The rows a range of commits took out of a table and put into it, exactly: what a follower
/// that keeps sums needs (it subtracts `minus` and adds `plus`; a row a copy-on-write rewrite
/// kept is in both and cancels).
#[derive(Debug)]
pub enum Delta {
    /// `minus`: the rows live before the range and not after it (hidden by a grown deletion
    /// vector or in a removed file); `plus`: the rows live after the range that were not
    /// before it (in files the range added, without those their vectors hide).
    Rows {
        minus: Vec<RecordBatch>,
        plus: Vec<RecordBatch>,
    },
    /// The range cannot be read this way; the reason.
    Everything(String),
}

/// The `columns` of the rows commits `from..=to` of `table` removed and added (see [`Delta`];
/// `max_share` as for [`touched`]).
pub async fn delta(table: &DeltaTable, from: u64, to: u64, columns: &[String], max_share: f64) -> Result<Delta> {
    let files = match walk(table, from, to, max_share).await? {
        Ok(files) => files,
        Err(why) => return Ok(Delta::Everything(why)),
    };
    let store = table.log_store().object_store(None);
    let schema = table.snapshot()?.snapshot().arrow_schema();
    let (mut minus, mut plus) = (Vec::new(), Vec::new());
    for t in files {
        // the rows to read, and whether they leave (minus) or enter (plus); `hide`: rows of
        // a file read whole that are not live on that side
        let kept = matches!(t.last, Last::Kept(_));
        let (leave, before, after) = match (t.first, t.last) {
            (None, Last::Gone) => continue, // in and out within the range
            (None, Last::Kept(after)) => (false, None, after),
            (Some(before), Last::Gone) => (true, before, None),
            (Some(before), Last::Kept(after)) => (true, before, after),
        };
        let (before, after) = match vectors(&store, before, after).await? {
            Ok(v) => v,
            Err(why) => return Ok(Delta::Everything(why)),
        };
        let (selected, hide) = match (leave, kept) {
            // a vector that grew: the rows it newly hides
            (true, true) => (Some(positions(&after - &before)), None),
            // a removed file: its rows the vector before hid were not live
            (true, false) => (None, Some(before)),
            (false, _) => (None, Some(after)),
        };
        if selected.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let Some(file) = located(&store, t.file).await? else {
            return Ok(Delta::Everything("a file the range touched was vacuumed".into()));
        };
        let rows = files::read(store.clone(), &file, &schema, Some(columns), selected.as_deref()).await?;
        let rows = match hide {
            Some(hidden) => without(&rows, &hidden)?,
            None => rows,
        };
        if leave { minus.push(rows) } else { plus.push(rows) }
    }
    Ok(Delta::Rows { minus, plus })
}

/// The files commits `from..=to` touched, or why the range cannot be narrowed down (the
/// table created or its schema changed in it, a commit expired, its files more than
/// `max_share` of the table's bytes).
async fn walk(
    table: &DeltaTable,
    from: u64,
    to: u64,
    max_share: f64,
) -> Result<std::result::Result<Vec<Touch>, String>> {
    if from == 0 {
        return Ok(Err("the table was created in the range".into()));
    }
    let log = table.log_store();
    let mut files: Vec<Touch> = Vec::new();
    let mut at: HashMap<Path, usize> = HashMap::new();
    for version in from..=to {
        let Some(bytes) = log.read_commit_entry(version).await? else {
            return Ok(Err(format!("commit {version} is no longer in the log")));
        };
        for action in get_actions(version, &bytes)? {
            match action {
                Action::Metadata(_) => return Ok(Err(format!("commit {version} changed the schema"))),
                Action::Add(a) if a.data_change => {
                    let file = FileRef::of(&a);
                    match at.get(&file.path) {
                        Some(&i) => files[i].last = Last::Kept(a.deletion_vector.clone()),
                        None => {
                            at.insert(file.path.clone(), files.len());
                            files.push(Touch {
                                file,
                                first: None,
                                last: Last::Kept(a.deletion_vector),
                            });
                        }
                    }
                }
                Action::Remove(r) if r.data_change => {
                    let path = Path::from_url_path(&r.path).unwrap_or_else(|_| Path::from(r.path.as_str()));
                    match at.get(&path) {
                        Some(&i) => files[i].last = Last::Gone,
                        None => {
                            at.insert(path.clone(), files.len());
                            let file = FileRef {
                                path,
                                size: r.size.unwrap_or(0).max(0) as u64,
                                values: r.partition_values.unwrap_or_default(),
                            };
                            files.push(Touch {
                                file,
                                first: Some(r.deletion_vector),
                                last: Last::Gone,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // only files read whole count towards the share: a grown vector reads a few rows
    let touched_bytes: u64 = files
        .iter()
        .filter(|t| t.newly_hidden().is_none())
        .map(|t| t.file.size)
        .sum();
    let table_bytes: u64 = crate::lake::active_adds(table)?
        .iter()
        .map(|a| a.size.max(0) as u64)
        .sum();
    if table_bytes > 0 && touched_bytes as f64 > max_share * table_bytes as f64 {
        return Ok(Err(format!(
            "the commits touched files of {touched_bytes} bytes, more than {:.0}% of the table's {table_bytes}",
            max_share * 100.0
        )));
    }
    Ok(Ok(files))
}

/// `file` with its size as stored (a `remove` may not carry it); `None` when it was vacuumed.
async fn located(store: &Arc<dyn ObjectStore>, mut file: FileRef) -> Result<Option<FileRef>> {
    match store.head(&file.path).await {
        Ok(meta) => {
            file.size = meta.size;
            Ok(Some(file))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(TableError::Store(e)),
    }
}

/// Two deletion vectors (absent: empty), or why they cannot be read (vacuumed with their
/// version: the range cannot be narrowed down).
async fn vectors(
    store: &Arc<dyn ObjectStore>,
    before: Option<DeletionVectorDescriptor>,
    after: Option<DeletionVectorDescriptor>,
) -> Result<std::result::Result<(RoaringTreemap, RoaringTreemap), String>> {
    let mut out = [RoaringTreemap::new(), RoaringTreemap::new()];
    for (slot, d) in out.iter_mut().zip([before, after]) {
        let Some(d) = d else { continue };
        match dv::read(store.as_ref(), &d).await {
            Ok(v) => *slot = v,
            Err(TableError::Store(object_store::Error::NotFound { .. })) => {
                return Ok(Err("a deletion vector of the range was vacuumed".into()));
            }
            Err(e) => return Err(e),
        }
    }
    let [before, after] = out;
    Ok(Ok((before, after)))
}

/// Row positions of a vector that fit a file's row numbers (ascending).
fn positions(rows: RoaringTreemap) -> Vec<u32> {
    rows.iter().filter_map(|r| u32::try_from(r).ok()).collect()
}

/// The rows of a whole file's `batch` that `hidden` does not hide.
fn without(batch: &RecordBatch, hidden: &RoaringTreemap) -> Result<RecordBatch> {
    if hidden.is_empty() {
        return Ok(batch.clone());
    }
    let keep: arrow::array::BooleanArray = (0..batch.num_rows() as u64)
        .map(|i| Some(!hidden.contains(i)))
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;

    use super::*;
    use crate::test_support::*;
    use crate::{DeleteMode, TableWriter, WriteMode, WriterOptions};

    /// The ids commits `from..=to` touched, sorted; `None` for [`Touched::Everything`].
    async fn ids(fx: &Fixture, from: u64, to: u64, share: f64) -> Option<Vec<i32>> {
        let table = fx.lake.open(TABLE, None).await.expect("table");
        match touched(&table, from, to, &["id".to_string()], share)
            .await
            .expect("touched")
        {
            Touched::Everything(_) => None,
            Touched::Rows(batches) => {
                let mut ids: Vec<i32> = batches
                    .iter()
                    .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
                    .collect();
                ids.sort_unstable();
                Some(ids)
            }
        }
    }

    #[tokio::test]
    async fn a_grown_deletion_vector_brings_only_the_rows_it_newly_hides() {
        let fx = Fixture::new(DeleteMode::Hard);
        let options = WriterOptions {
            mode: WriteMode::Mor,
            ..fx.options()
        };
        let mut w = TableWriter::open(&fx.lake, TABLE, options).await.expect("writer");
        let first: Vec<Change> = (0..10).map(|i| up(i, i as i32, "a", 100)).collect();
        let version = |v: Option<u64>| v.expect("a commit");
        let v0 = version(w.apply(&batch(&first)).await.expect("insert").version);
        let v1 = version(w.apply(&batch(&[up(10, 3, "b", 200)])).await.expect("update").version);
        let v2 = version(w.apply(&batch(&[del(11, 5)])).await.expect("delete").version);
        // the update: the old row of id 3 (hidden in the first file) and its new row
        assert_eq!(ids(&fx, v1, v1, f64::INFINITY).await, Some(vec![3, 3]));
        // the delete: only the row the grown vector newly hides, not the file's ten rows
        assert_eq!(ids(&fx, v2, v2, f64::INFINITY).await, Some(vec![5]));
        // over both commits: the vector before the range against the one after it
        assert_eq!(ids(&fx, v1, v2, f64::INFINITY).await, Some(vec![3, 3, 5]));
        // a range from the table's creation, or one whose files outweigh the share, is everything
        assert!(v0 < v1);
        assert_eq!(ids(&fx, 0, v2, f64::INFINITY).await, None);
        assert_eq!(ids(&fx, v1, v2, 0.0).await, None);
    }

    /// `(id, name)` of the rows commits `from..=to` removed and added, each sorted.
    async fn sides(fx: &Fixture, from: u64, to: u64) -> (Vec<(i32, String)>, Vec<(i32, String)>) {
        let table = fx.lake.open(TABLE, None).await.expect("table");
        let cols = ["id".to_string(), "name".to_string()];
        let Delta::Rows { minus, plus } = delta(&table, from, to, &cols, f64::INFINITY).await.expect("delta") else {
            panic!("the range can be read");
        };
        let rows = |batches: Vec<RecordBatch>| {
            let mut out: Vec<(i32, String)> = batches
                .iter()
                .flat_map(|b| {
                    let ids = b.column(0).as_primitive::<Int32Type>().clone();
                    let names = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).expect("text");
                    let names = names.as_string::<i32>().clone();
                    (0..b.num_rows()).map(move |i| (ids.value(i), names.value(i).to_string()))
                })
                .collect();
            out.sort();
            out
        };
        (rows(minus), rows(plus))
    }

    #[tokio::test]
    async fn the_delta_of_a_range_is_exactly_the_rows_it_took_out_and_put_in() {
        for mode in [WriteMode::Mor, WriteMode::Cow] {
            let fx = Fixture::new(DeleteMode::Hard);
            let options = WriterOptions { mode, ..fx.options() };
            let mut w = TableWriter::open(&fx.lake, TABLE, options).await.expect("writer");
            let version = |v: Option<u64>| v.expect("a commit");
            let first: Vec<Change> = (0..4).map(|i| up(i, i as i32, "a", 100)).collect();
            w.apply(&batch(&first)).await.expect("insert");
            let v1 = version(w.apply(&batch(&[up(10, 1, "b", 200)])).await.expect("update").version);
            let v2 = version(
                w.apply(&batch(&[del(11, 2), up(12, 9, "n", 1)]))
                    .await
                    .expect("delete")
                    .version,
            );
            let row = |id: i32, name: &str| (id, name.to_string());
            let (minus, plus) = sides(&fx, v1, v1).await;
            let (minus2, plus2) = sides(&fx, v2, v2).await;
            let (minus12, plus12) = sides(&fx, v1, v2).await;
            match mode {
                WriteMode::Mor => {
                    assert_eq!((minus, plus), (vec![row(1, "a")], vec![row(1, "b")]));
                    assert_eq!((minus2, plus2), (vec![row(2, "a")], vec![row(9, "n")]));
                    // the new row of id 1 entered and stays: the range's net change
                    assert_eq!(minus12, vec![row(1, "a"), row(2, "a")]);
                    assert_eq!(plus12, vec![row(1, "b"), row(9, "n")]);
                }
                WriteMode::Cow => {
                    // a rewrite takes the whole file out and puts its kept rows back in: the
                    // kept rows are on both sides, and a follower's sums cancel them
                    let kept = |rows: &[(i32, String)]| rows.iter().filter(|r| r.1 == "a").count();
                    assert!(
                        minus.contains(&row(1, "a")) && plus.contains(&row(1, "b")) && !plus.contains(&row(1, "a"))
                    );
                    assert_eq!(kept(&minus) - 1, kept(&plus), "{minus:?} {plus:?}");
                    assert!(
                        minus2.contains(&row(2, "a")) && !plus2.contains(&row(2, "a")) && plus2.contains(&row(9, "n"))
                    );
                    assert!(minus12.contains(&row(1, "a")) && !minus12.contains(&row(1, "b")));
                    assert!(plus12.contains(&row(1, "b")) && !plus12.contains(&row(2, "a")));
                }
            }
        }
    }
}
