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

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use object_store::ObjectStoreExt;
use object_store::path::Path;

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
    if from == 0 {
        return Ok(Touched::Everything("the table was created in the range".into()));
    }
    let log = table.log_store();
    let mut files: Vec<Touch> = Vec::new();
    let mut at: HashMap<Path, usize> = HashMap::new();
    for version in from..=to {
        let Some(bytes) = log.read_commit_entry(version).await? else {
            return Ok(Touched::Everything(format!("commit {version} is no longer in the log")));
        };
        for action in get_actions(version, &bytes)? {
            match action {
                Action::Metadata(_) => return Ok(Touched::Everything(format!("commit {version} changed the schema"))),
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
        return Ok(Touched::Everything(format!(
            "the commits touched files of {touched_bytes} bytes, more than {:.0}% of the table's {table_bytes}",
            max_share * 100.0
        )));
    }
    let store = log.object_store(None);
    let schema = table.snapshot()?.snapshot().arrow_schema();
    let mut rows = Vec::with_capacity(files.len());
    for mut t in files {
        match store.head(&t.file.path).await {
            Ok(meta) => t.file.size = meta.size,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Touched::Everything(format!("file {} was vacuumed", t.file.path)));
            }
            Err(e) => return Err(TableError::Store(e)),
        }
        let selected = match t.newly_hidden() {
            None => None,
            Some((before, after)) => {
                let read = |d: Option<DeletionVectorDescriptor>| {
                    let store = store.clone();
                    async move {
                        match d {
                            Some(d) => dv::read(store.as_ref(), &d).await,
                            None => Ok(RoaringTreemap::new()),
                        }
                    }
                };
                let (before, after) = match (read(before).await, read(after).await) {
                    (Ok(b), Ok(a)) => (b, a),
                    // a vector file gone with its version: the range cannot be narrowed down
                    (Err(TableError::Store(object_store::Error::NotFound { .. })), _)
                    | (_, Err(TableError::Store(object_store::Error::NotFound { .. }))) => {
                        return Ok(Touched::Everything(format!(
                            "a deletion vector of {} was vacuumed",
                            t.file.path
                        )));
                    }
                    (Err(e), _) | (_, Err(e)) => return Err(e),
                };
                let hidden: Vec<u32> = (&after - &before)
                    .iter()
                    .filter_map(|r| u32::try_from(r).ok())
                    .collect();
                if hidden.is_empty() {
                    continue;
                }
                Some(hidden)
            }
        };
        rows.push(files::read(store.clone(), &t.file, &schema, Some(columns), selected.as_deref()).await?);
    }
    Ok(Touched::Rows(rows))
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
}
