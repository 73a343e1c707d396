//! The rows of the files this writer wrote last, kept in memory within a byte budget.
//!
//! A soft delete or a TOASTed cell needs the key's previous values, and copy-on-write rewrites
//! the files holding superseded rows. On a change stream those rows were very often written a
//! few batches ago — by this writer. Reading them back from storage means decompressing whole
//! Parquet pages for a handful of rows (the profile in the README showed zstd decompression as
//! the largest cost of the upsert benchmark), so the writer keeps what it wrote, newest first,
//! and reads from storage only what fell out of the budget or was written by someone else
//! (another worker, a compaction).
//!
//! Invariant: an entry holds exactly the rows of one active data file, in file order, in the
//! table schema of the writer's state; it is dropped when the file leaves the index and the
//! whole cache is cleared when the schema changes.

use std::collections::{HashMap, VecDeque};

use arrow::array::RecordBatch;

/// Files' rows by file id, oldest evicted first.
#[derive(Default)]
pub struct RecentRows {
    budget: usize,
    used: usize,
    order: VecDeque<u32>,
    files: HashMap<u32, (RecordBatch, usize)>,
}

impl RecentRows {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Keeps `rows` as the content of file `id`, evicting the oldest files over the budget.
    pub fn insert(&mut self, id: u32, rows: RecordBatch) {
        let size = rows.get_array_memory_size();
        if size > self.budget {
            return;
        }
        if let Some((_, old)) = self.files.insert(id, (rows, size)) {
            self.used -= old;
        } else {
            self.order.push_back(id);
        }
        self.used += size;
        while self.used > self.budget {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some((_, s)) = self.files.remove(&oldest) {
                self.used -= s;
            }
        }
    }

    pub fn get(&self, id: u32) -> Option<&RecordBatch> {
        self.files.get(&id).map(|(b, _)| b)
    }

    /// Drops files that left the table.
    pub fn forget(&mut self, ids: &[u32]) {
        for id in ids {
            if let Some((_, s)) = self.files.remove(id) {
                self.used -= s;
            }
        }
        self.order.retain(|id| self.files.contains_key(id));
    }

    pub fn clear(&mut self) {
        self.files.clear();
        self.order.clear();
        self.used = 0;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]).expect("batch")
    }

    #[test]
    fn oldest_files_leave_first_and_forgotten_files_free_their_bytes() {
        let one = rows(1000).get_array_memory_size();
        let mut r = RecentRows::new(one * 2 + one / 2);
        r.insert(1, rows(1000));
        r.insert(2, rows(1000));
        r.insert(3, rows(1000));
        assert!(r.get(1).is_none() && r.get(2).is_some() && r.get(3).is_some());
        r.forget(&[2]);
        assert_eq!(r.bytes(), one);
        r.insert(4, rows(1000));
        assert!(r.get(3).is_some() && r.get(4).is_some());
        r.clear();
        assert_eq!(r.bytes(), 0);
    }
}
