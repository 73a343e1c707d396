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
//! A kept file shrinks to its live rows once its deletion vector hides half of what is kept:
//! on an upsert stream most rows of a file are superseded within a few batches, and holding
//! them would spend the budget on rows no plan can ask for (the upsert bench read ~350 files
//! from storage per commit with the budget full of dead rows).
//!
//! Invariant: an entry holds rows of exactly one active data file, in file order, in the
//! table schema of the writer's state — every row, or (after shrinking) every row its deletion
//! vector did not hide then, with their row numbers; it is dropped when the file leaves the
//! index and the whole cache is cleared when the schema changes.

use std::collections::{HashMap, VecDeque};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use roaring::RoaringTreemap;

/// The rows kept of one file.
pub struct Kept {
    pub rows: RecordBatch,
    /// The file row number of each of `rows` (ascending); `None`: `rows` is the whole file.
    pub live: Option<Vec<u32>>,
}

impl Kept {
    /// Whether it holds every row of `wanted` (`None`: the whole file).
    pub fn covers(&self, wanted: Option<&[u32]>) -> bool {
        match (&self.live, wanted) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(live), Some(wanted)) => wanted.iter().all(|r| live.binary_search(r).is_ok()),
        }
    }
}

/// Files' rows by file id, oldest evicted first.
#[derive(Default)]
pub struct RecentRows {
    budget: usize,
    used: usize,
    order: VecDeque<u32>,
    files: HashMap<u32, (Kept, usize)>,
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
        let kept = Kept { rows, live: None };
        if let Some((_, old)) = self.files.insert(id, (kept, size)) {
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

    /// The bytes it may hold.
    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn get(&self, id: u32) -> Option<&Kept> {
        self.files.get(&id).map(|(k, _)| k)
    }

    /// File `id` now hides the rows `deleted`: once they are half of what is kept, only the
    /// other rows stay. A failed copy keeps the entry as it was (still correct, only larger).
    pub fn shrink(&mut self, id: u32, deleted: &RoaringTreemap) {
        let Some((kept, size)) = self.files.get_mut(&id) else {
            return;
        };
        // counted before anything is collected: this runs for every file a commit deletes rows
        // of, and most of them stay (2% of the upsert bench's CPU when it collected first)
        let held = kept.rows.num_rows();
        let live_count = match &kept.live {
            Some(live) => live.iter().filter(|r| !deleted.contains(u64::from(**r))).count(),
            // the whole file is held: every deleted row is one of them
            None => held.saturating_sub(usize::try_from(deleted.len()).unwrap_or(usize::MAX)),
        };
        if live_count * 2 > held {
            return;
        }
        let numbers: Vec<u32> = match &kept.live {
            Some(live) => live.clone(),
            None => (0..held as u32).collect(),
        };
        let (positions, live): (Vec<u32>, Vec<u32>) = numbers
            .iter()
            .enumerate()
            .filter(|(_, r)| !deleted.contains(u64::from(**r)))
            .map(|(i, r)| (i as u32, *r))
            .unzip();
        let Ok(rows) = take_record_batch(&kept.rows, &UInt32Array::from(positions)) else {
            return;
        };
        let new_size = rows.get_array_memory_size();
        self.used = self.used - *size + new_size;
        *kept = Kept { rows, live: Some(live) };
        *size = new_size;
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

    #[test]
    fn a_file_shrinks_to_its_live_rows_once_half_are_hidden() {
        let mut r = RecentRows::new(1 << 20);
        r.insert(1, rows(100));
        let full = r.bytes();
        let hidden: RoaringTreemap = (0..40).collect();
        r.shrink(1, &hidden);
        assert!(r.get(1).is_some_and(|k| k.live.is_none()), "40% hidden: kept whole");
        let hidden: RoaringTreemap = (0..60).collect();
        r.shrink(1, &hidden);
        let kept = r.get(1).expect("kept");
        assert_eq!(kept.live.as_deref(), Some(&(60..100).collect::<Vec<u32>>()[..]));
        let first = kept
            .rows
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("ints")
            .value(0);
        assert_eq!(first, 60, "row 60 of the file is the first kept");
        assert!(r.bytes() < full);
        assert!(kept.covers(Some(&[60, 99])) && !kept.covers(Some(&[59])) && !kept.covers(None));
        // shrinking again counts from what is kept
        let hidden: RoaringTreemap = (0..80).collect();
        r.shrink(1, &hidden);
        assert_eq!(r.get(1).and_then(|k| k.live.clone()), Some((80..100).collect()));
    }
}
