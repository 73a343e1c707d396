//! The primary-key index of the partitions one writer owns: key → (file, row) of the key's
//! one current row, plus the files of those partitions.
//!
//! Every data file belongs to exactly one source partition (its `cormorant.partition` tag), and
//! a key always arrives on the same partition, so the index is a set of independent
//! per-partition maps: a worker loads the partitions it is assigned and drops them on
//! revocation, and workers of one consumer group never index the same key.
//!
//! Memory: a key is a 16-byte [`KeyId`] and a location 8 bytes — 24-byte slots in an
//! open-addressing table (hashbrown, 1 control byte per slot, a power of two of slots at
//! ≤ 87.5 % load): 25 bytes per slot, 29–57 bytes per key depending on where the key count
//! sits between two powers of two, with no allocation per key.
//!
//! Invariants:
//! - every key of a loaded partition has exactly one entry, pointing at a live row (in an
//!   active file, not covered by that file's deletion vector);
//! - soft-deleted rows are current rows and stay indexed; hard-deleted keys have no entry;
//! - `files` holds exactly the active files of the loaded partitions, with their current
//!   `add` action (deletion-vector descriptor included) and deletion vector.

use std::collections::{HashMap, HashSet};

use deltalake::kernel::Add;
use roaring::RoaringTreemap;

use crate::keys::KeyId;

/// `add.tags` key naming the source partition a data file belongs to.
pub const PARTITION_TAG: &str = "cormorant.partition";

/// Where a key's current row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowLoc {
    pub file: u32,
    pub row: u32,
}

/// One active data file of a loaded partition.
#[derive(Clone, Debug)]
pub struct FileEntry {
    /// The file's current `add` action (as in the table).
    pub add: Add,
    pub partition: i32,
    /// Rows in the file (deleted ones included).
    pub rows: u64,
    /// Rows hidden by its deletion vector.
    pub deleted: RoaringTreemap,
}

impl FileEntry {
    pub fn path(&self) -> &str {
        &self.add.path
    }

    pub fn live_rows(&self) -> u64 {
        self.rows.saturating_sub(self.deleted.len())
    }
}

/// The partition a data file belongs to, from its `add` tags (`None`: written before
/// partition-owned file groups).
pub fn partition_of(add: &Add) -> Option<i32> {
    add.tags.as_ref()?.get(PARTITION_TAG)?.as_deref()?.parse().ok()
}

/// Keys are stored as two `u64`s: a `u128` would align every slot to 16 bytes and make it 32
/// bytes wide instead of 24.
type Slot = [u64; 2];
type KeyMap = hashbrown::HashMap<Slot, RowLoc>;

fn slot(key: KeyId) -> Slot {
    [(key >> 64) as u64, key as u64]
}

fn key_of(slot: &Slot) -> KeyId {
    (u128::from(slot[0]) << 64) | u128::from(slot[1])
}

/// Heap bytes of a map: its buckets (a power of two at ≤ 87.5 % load) × (slot + 1 control byte).
fn map_bytes(m: &KeyMap) -> usize {
    if m.capacity() == 0 {
        return 0;
    }
    let buckets = (m.capacity() * 8 / 7 + 1).next_power_of_two();
    buckets * (std::mem::size_of::<(Slot, RowLoc)>() + 1)
}

/// The index of the loaded partitions.
#[derive(Default)]
pub struct Index {
    parts: HashMap<i32, KeyMap>,
    files: HashMap<u32, FileEntry>,
    by_path: HashMap<String, u32>,
    next_file: u32,
}

impl Index {
    /// Keys indexed, over all loaded partitions.
    pub fn len(&self) -> usize {
        self.parts.values().map(KeyMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes (buckets × (key + location + control byte), plus file entries).
    pub fn heap_bytes(&self) -> usize {
        let keys: usize = self.parts.values().map(map_bytes).sum();
        let files: usize = self
            .files
            .values()
            .map(|f| {
                std::mem::size_of::<FileEntry>()
                    + f.add.path.len()
                    + f.add.stats.as_ref().map_or(0, String::len)
                    + f.deleted.serialized_size()
            })
            .sum();
        keys + files
    }

    pub fn is_loaded(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// The loaded partitions, ascending.
    pub fn partitions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self.parts.keys().copied().collect();
        p.sort_unstable();
        p
    }

    /// Starts an (empty) partition; its files are added with [`Index::add_file`].
    pub fn load(&mut self, partition: i32, expected_keys: usize) {
        self.parts
            .entry(partition)
            .or_insert_with(|| KeyMap::with_capacity(expected_keys));
    }

    /// Drops a partition and its files (revoked).
    pub fn release(&mut self, partition: i32) {
        self.parts.remove(&partition);
        let gone: Vec<u32> = self
            .files
            .iter()
            .filter(|(_, f)| f.partition == partition)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(f) = self.files.remove(&id) {
                self.by_path.remove(f.path());
            }
        }
    }

    pub fn get(&self, partition: i32, key: KeyId) -> Option<RowLoc> {
        self.parts.get(&partition)?.get(&slot(key)).copied()
    }

    /// Where `key`, arriving on `partition`, has its current row: in that partition's group,
    /// or — when `anywhere` (keys moved between partitions, see the writer) — in any loaded
    /// partition's. Returns the partition the row is in.
    pub fn find(&self, partition: i32, key: KeyId, anywhere: bool) -> Option<(i32, RowLoc)> {
        if let Some(loc) = self.get(partition, key) {
            return Some((partition, loc));
        }
        if !anywhere {
            return None;
        }
        self.parts
            .iter()
            .filter(|(p, _)| **p != partition)
            .find_map(|(p, m)| m.get(&slot(key)).map(|loc| (*p, *loc)))
    }

    /// Every key of a partition with its location.
    pub fn iter_partition(&self, partition: i32) -> impl Iterator<Item = (KeyId, RowLoc)> + '_ {
        self.parts
            .get(&partition)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (key_of(k), *v)))
    }

    pub fn insert(&mut self, partition: i32, key: KeyId, loc: RowLoc) {
        if let Some(m) = self.parts.get_mut(&partition) {
            m.insert(slot(key), loc);
        }
    }

    pub fn remove(&mut self, partition: i32, key: KeyId) {
        if let Some(m) = self.parts.get_mut(&partition) {
            m.remove(&slot(key));
        }
    }

    pub fn file(&self, id: u32) -> Option<&FileEntry> {
        self.files.get(&id)
    }

    pub fn file_id(&self, path: &str) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    /// Every file of the loaded partitions.
    pub fn files(&self) -> impl Iterator<Item = (u32, &FileEntry)> {
        self.files.iter().map(|(id, f)| (*id, f))
    }

    /// The files of a partition.
    pub fn files_of(&self, partition: i32) -> impl Iterator<Item = (u32, &FileEntry)> {
        self.files
            .iter()
            .filter(move |(_, f)| f.partition == partition)
            .map(|(id, f)| (*id, f))
    }

    /// Adds an active file of a loaded partition: `keys[i]` is the key at row `i`; rows in
    /// its deletion vector are not live and are not indexed. Returns the file's id.
    pub fn add_file(&mut self, entry: FileEntry, keys: &[KeyId]) -> u32 {
        let id = self.next_file;
        self.next_file = self.next_file.wrapping_add(1);
        if let Some(m) = self.parts.get_mut(&entry.partition) {
            m.reserve(keys.len());
            for (row, key) in keys.iter().enumerate() {
                if !entry.deleted.is_empty() && entry.deleted.contains(row as u64) {
                    continue;
                }
                m.insert(
                    slot(*key),
                    RowLoc {
                        file: id,
                        row: row as u32,
                    },
                );
            }
        }
        self.by_path.insert(entry.path().to_string(), id);
        self.files.insert(id, entry);
        id
    }

    /// Drops files that left the table and every entry pointing into them (one pass over
    /// each affected partition).
    pub fn drop_files(&mut self, ids: &[u32]) {
        let mut by_part: HashMap<i32, HashSet<u32>> = HashMap::new();
        for id in ids {
            if let Some(f) = self.files.remove(id) {
                self.by_path.remove(f.path());
                by_part.entry(f.partition).or_default().insert(*id);
            }
        }
        for (p, gone) in by_part {
            if let Some(m) = self.parts.get_mut(&p) {
                m.retain(|_, loc| !gone.contains(&loc.file));
            }
        }
    }

    /// Replaces a file's `add` (grown deletion vector) and its deleted rows.
    pub fn update_file(&mut self, id: u32, add: Add, deleted: RoaringTreemap) {
        if let Some(f) = self.files.get_mut(&id) {
            f.add = add;
            f.deleted = deleted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, partition: i32, rows: u64) -> FileEntry {
        FileEntry {
            add: Add {
                path: path.into(),
                ..Default::default()
            },
            partition,
            rows,
            deleted: RoaringTreemap::new(),
        }
    }

    #[test]
    fn partitions_are_independent_and_released_whole() {
        let mut ix = Index::default();
        ix.load(0, 0);
        ix.load(1, 0);
        let a = ix.add_file(entry("a", 0, 3), &[10, 11, 12]);
        let b = ix.add_file(entry("b", 1, 2), &[10, 20]);
        assert_eq!(ix.get(0, 10), Some(RowLoc { file: a, row: 0 }));
        assert_eq!(ix.get(1, 10), Some(RowLoc { file: b, row: 0 }));
        assert_eq!(ix.len(), 5);
        ix.release(1);
        assert_eq!(ix.get(1, 10), None);
        assert_eq!(ix.file_id("b"), None);
        assert_eq!(ix.len(), 3);
    }

    #[test]
    fn deleted_rows_are_not_indexed_and_dropped_files_forget_their_keys() {
        let mut ix = Index::default();
        ix.load(0, 0);
        let mut e = entry("a", 0, 3);
        e.deleted.insert(1);
        let a = ix.add_file(e, &[1, 2, 3]);
        assert_eq!(ix.get(0, 2), None);
        let b = ix.add_file(entry("b", 0, 1), &[2]);
        assert_eq!(ix.file(a).map(FileEntry::live_rows), Some(2));
        ix.drop_files(&[a]);
        assert_eq!(ix.get(0, 1), None);
        assert_eq!(ix.get(0, 2), Some(RowLoc { file: b, row: 0 }));
    }

    #[test]
    fn partition_tags_parse() {
        let mut add = Add::default();
        assert_eq!(partition_of(&add), None);
        add.tags = Some([(PARTITION_TAG.to_string(), Some("4".to_string()))].into());
        assert_eq!(partition_of(&add), Some(4));
    }
}
