//! The primary-key index: key → (file, row position) of the key's one current row.
//!
//! Invariants:
//! - every key of the table's current snapshot has exactly one entry, pointing at a row that is
//!   live (in an active file, not covered by a deletion vector);
//! - soft-deleted rows are current rows and stay indexed; hard-deleted keys have no entry;
//! - keys are encoded with Arrow's row format over the table's key column types, so the same
//!   key value always yields the same bytes however it reached us.
//!
//! It is what makes an upsert cost O(batch) and not O(table): a batch touches only the files
//! its keys live in.

use std::collections::HashMap;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use roaring::RoaringTreemap;

use crate::error::{Result, TableError};

/// Where a key's current row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowLoc {
    pub file: u32,
    pub row: u32,
}

/// Encodes key columns into comparable bytes.
pub struct KeyEncoder {
    columns: Vec<String>,
    converter: RowConverter,
}

impl KeyEncoder {
    pub fn new(schema: &SchemaRef, columns: &[String], table: &str) -> Result<Self> {
        if columns.is_empty() {
            return Err(TableError::Schema {
                table: table.to_string(),
                reason: "no primary-key columns; Debezium topics carry the key in the record key".into(),
            });
        }
        let fields = columns
            .iter()
            .map(|c| {
                schema
                    .field_with_name(c)
                    .map(|f| SortField::new(f.data_type().clone()))
                    .map_err(|_| TableError::Schema {
                        table: table.to_string(),
                        reason: format!("key column {c} is not in the table"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            columns: columns.to_vec(),
            converter: RowConverter::new(fields)?,
        })
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The key bytes of every row of `batch` (which must have the key columns).
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| {
                batch.column_by_name(c).cloned().ok_or_else(|| TableError::Schema {
                    table: String::new(),
                    reason: format!("key column {c} missing from data"),
                })
            })
            .collect::<Result<_>>()?;
        let rows = self.converter.convert_columns(&arrays)?;
        Ok(rows.iter().map(|r| Box::<[u8]>::from(r.as_ref())).collect())
    }
}

/// Key → row location, plus the file-id table.
#[derive(Default)]
pub struct PkIndex {
    keys: HashMap<Box<[u8]>, RowLoc>,
    /// file id → table-relative path; `None` once the file left the table.
    files: Vec<Option<String>>,
    by_path: HashMap<String, u32>,
    /// file id → its deletion vector (files without one are absent)
    deleted: HashMap<u32, RoaringTreemap>,
}

impl PkIndex {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<RowLoc> {
        self.keys.get(key).copied()
    }

    pub fn insert(&mut self, key: Box<[u8]>, loc: RowLoc) -> Option<RowLoc> {
        self.keys.insert(key, loc)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<RowLoc> {
        self.keys.remove(key)
    }

    /// The id of `path`, registering it if new.
    pub fn file_id(&mut self, path: &str) -> u32 {
        if let Some(id) = self.by_path.get(path) {
            return *id;
        }
        let id = self.files.len() as u32;
        self.files.push(Some(path.to_string()));
        self.by_path.insert(path.to_string(), id);
        id
    }

    pub fn path(&self, file: u32) -> Option<&str> {
        self.files.get(file as usize)?.as_deref()
    }

    /// Drops every entry pointing into `files` (they were rewritten or removed).
    pub fn forget_files(&mut self, files: &[u32]) {
        if files.is_empty() {
            return;
        }
        self.keys.retain(|_, loc| !files.contains(&loc.file));
        for f in files {
            self.deleted.remove(f);
            if let Some(slot) = self.files.get_mut(*f as usize)
                && let Some(path) = slot.take()
            {
                self.by_path.remove(&path);
            }
        }
    }

    /// All current locations (for truncate).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], RowLoc)> {
        self.keys.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// Indexes the rows of a file: `keys[i]` is the key at position `i`; positions in
    /// `deleted` (the file's deletion vector) are not live and are skipped.
    pub fn add_file(&mut self, path: &str, keys: Vec<Box<[u8]>>, deleted: Option<RoaringTreemap>) -> Result<()> {
        let file = self.file_id(path);
        for (row, key) in keys.into_iter().enumerate() {
            if deleted.as_ref().is_some_and(|d| d.contains(row as u64)) {
                continue;
            }
            let row = u32::try_from(row).map_err(|_| TableError::Schema {
                table: String::new(),
                reason: "data file with more than 2^32 rows".into(),
            })?;
            self.keys.insert(key, RowLoc { file, row });
        }
        match deleted {
            Some(d) if !d.is_empty() => {
                self.deleted.insert(file, d);
            }
            _ => {}
        }
        Ok(())
    }

    /// The deletion vector of `file`, if it has one.
    pub fn deleted(&self, file: u32) -> Option<&RoaringTreemap> {
        self.deleted.get(&file)
    }

    /// Replaces the deletion vector of `file`.
    pub fn set_deleted(&mut self, file: u32, bitmap: RoaringTreemap) {
        self.deleted.insert(file, bitmap);
    }

    /// Approximate heap bytes (for reporting memory per key).
    pub fn heap_bytes(&self) -> usize {
        let key_bytes: usize = self.keys.keys().map(|k| k.len()).sum();
        key_bytes + self.keys.capacity() * (std::mem::size_of::<(Box<[u8]>, RowLoc)>() + 1)
    }
}
