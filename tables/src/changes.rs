//! Which values a range of commits touched, for readers that follow a table (the windowed
//! views): the given columns of every row in every file a data-changing commit added or
//! removed, so a follower recomputes only what those values reach instead of the table.
//!
//! The answer is a superset, on purpose: a file whose deletion vector grew is read whole, not
//! just the rows the new vector hides, and a copy-on-write rewrite brings the rows it kept.
//! Recomputing a few windows too many costs little; missing one would be wrong. Compaction
//! (`dataChange = false`) changes no row and is skipped. When the range cannot be read this
//! way — the schema changed, a removed file was vacuumed, a commit expired — the answer is
//! [`Touched::Everything`] with the reason, and the follower recomputes in full.

use std::collections::HashSet;

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::{Result, TableError};
use crate::files::{self, FileRef};

/// What a range of commits touched.
#[derive(Debug)]
pub enum Touched {
    /// The requested columns of every row of every file added or removed (deletion vectors
    /// not applied).
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
    let mut files: Vec<FileRef> = Vec::new();
    let mut seen = HashSet::new();
    for version in from..=to {
        let Some(bytes) = log.read_commit_entry(version).await? else {
            return Ok(Touched::Everything(format!("commit {version} is no longer in the log")));
        };
        for action in get_actions(version, &bytes)? {
            let file = match action {
                Action::Metadata(_) => return Ok(Touched::Everything(format!("commit {version} changed the schema"))),
                Action::Add(a) if a.data_change => FileRef::of(&a),
                Action::Remove(r) if r.data_change => FileRef {
                    path: Path::from_url_path(&r.path).unwrap_or_else(|_| Path::from(r.path.as_str())),
                    size: r.size.unwrap_or(0).max(0) as u64,
                    values: r.partition_values.unwrap_or_default(),
                },
                _ => continue,
            };
            if seen.insert(file.path.clone()) {
                files.push(file);
            }
        }
    }
    let touched_bytes: u64 = files.iter().map(|f| f.size).sum();
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
    for mut file in files {
        match store.head(&file.path).await {
            Ok(meta) => file.size = meta.size,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Touched::Everything(format!("file {} was vacuumed", file.path)));
            }
            Err(e) => return Err(TableError::Store(e)),
        }
        rows.push(files::read(store.clone(), &file, &schema, Some(columns), None).await?);
    }
    Ok(Touched::Rows(rows))
}
