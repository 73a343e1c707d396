//! Resolving a batch against the primary-key index: which current rows it supersedes and
//! what each touched key's new row is made of.
//!
//! A new row is either a batch row as is ([`NewRow::Batch`], by far the most common: inserts
//! and updates) or, where cells come from elsewhere, a list of `(source, row)` pairs, one per
//! column ([`NewRow::Mixed`]: soft deletes, TOASTed cells, truncates). Sources are numbered:
//! [`BATCH`], a one-row source of nulls ([`NULLS`]), a one-row "deleted" marker ([`MARKER`]),
//! then the previous rows the writer loaded. The writer builds batch rows with one `take` per
//! column and mixed rows with one `interleave` per column — no allocation per plain row.
//!
//! Rules (DESIGN.md): within the batch, changes apply in order; an upsert takes the batch row,
//! except cells the source did not send (TOAST), which keep the previous value; a soft delete
//! keeps the previous values and takes its metadata from the delete; a hard delete leaves no
//! row; a truncate deletes every key present at that point, in every loaded partition.

use std::collections::{HashMap, HashSet};

use change::{ChangeBatch, ChangeKind};

use crate::index::{Index, RowLoc};
use crate::keys::KeyId;

/// The batch being applied.
pub const BATCH: u32 = 0;
/// A one-row source of nulls.
pub const NULLS: u32 = 1;
/// A one-row source whose `__op` is `d` and `__deleted` is true (rows a truncate deletes).
pub const MARKER: u32 = 2;

/// `(source, row)` of one output cell.
pub type Src = (u32, u32);

/// A touched key's new row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewRow {
    /// Every column from this batch row.
    Batch(u32),
    /// Column by column.
    Mixed(Box<[Src]>),
}

/// A key's row as the batch goes along: a new row, or still the table's.
#[derive(Clone, Debug)]
enum Cur {
    New(NewRow),
    Table(RowLoc),
}

/// Per-column roles in the table schema.
pub struct Columns {
    pub count: usize,
    pub keys: HashSet<usize>,
    /// metadata columns other than `__op`/`__deleted`
    pub meta: HashSet<usize>,
    /// `__op` and `__deleted`
    pub op_flags: HashSet<usize>,
}

/// What a batch does to the table.
#[derive(Debug, Default)]
pub struct Resolution {
    /// New row versions with their partition, in first-touch order.
    pub rows: Vec<(i32, NewRow)>,
    /// Current rows the batch replaces or deletes.
    pub superseded: Vec<RowLoc>,
    /// Keys that no longer have a row in the partition they had one in (hard deletes, and
    /// keys that moved to another partition), with that partition.
    pub removed_keys: Vec<(i32, KeyId)>,
}

/// Batch rows of `keep` whose result depends on the key's previous values (soft deletes,
/// upserts with TOASTed cells), and whether a soft truncate needs every previous row.
pub fn needs_previous(batch: &ChangeBatch, keep: &[usize], hard: bool) -> (bool, Vec<usize>) {
    let toast: HashSet<usize> = batch.unavailable.iter().map(|(r, _)| *r).collect();
    let mut truncate = false;
    let mut rows = Vec::new();
    for &i in keep {
        match batch.kinds[i] {
            ChangeKind::Truncate if !hard => truncate = true,
            ChangeKind::Delete if !hard => rows.push(i),
            ChangeKind::Upsert if toast.contains(&i) => rows.push(i),
            _ => {}
        }
    }
    (truncate, rows)
}

/// Inputs of one resolution.
pub struct Inputs<'a> {
    pub batch: &'a ChangeBatch,
    pub keep: &'a [usize],
    /// key id of every batch row
    pub keys: &'a [KeyId],
    pub index: &'a Index,
    pub cols: &'a Columns,
    /// table columns the source did not send, by batch row
    pub unavailable: &'a HashMap<usize, Vec<usize>>,
    pub hard: bool,
    /// where a table row's values were loaded (`(NULLS, 0)` when they were not needed)
    pub previous: &'a dyn Fn(RowLoc) -> Src,
    /// keys may have a row in another partition than the one they arrive on
    pub anywhere: bool,
}

/// A key the batch touched.
struct Touched {
    /// the partition its new row belongs to
    partition: i32,
    key: KeyId,
    /// its row in the table before the batch, and that row's partition
    original: Option<(i32, RowLoc)>,
    /// its row now (`None`: no row)
    row: Option<Cur>,
}

struct State<'a> {
    inputs: &'a Inputs<'a>,
    /// touched keys in first-touch order
    touched: Vec<Touched>,
    /// position in `touched` by key (hashbrown's default hasher: SipHash costs here)
    at: hashbrown::HashMap<KeyId, usize>,
}

impl State<'_> {
    fn current(&self, p: i32, key: KeyId) -> Option<Cur> {
        match self.at.get(&key) {
            Some(&i) => self.touched[i].row.clone(),
            None => self
                .inputs
                .index
                .find(p, key, self.inputs.anywhere)
                .map(|(_, l)| Cur::Table(l)),
        }
    }

    fn set(&mut self, p: i32, key: KeyId, row: Option<Cur>) {
        // one hash of the key: `set` runs for every batch row
        match self.at.entry(key) {
            hashbrown::hash_map::Entry::Occupied(e) => {
                let t = &mut self.touched[*e.get()];
                t.row = row;
                t.partition = p;
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                let original = self.inputs.index.find(p, key, self.inputs.anywhere);
                e.insert(self.touched.len());
                self.touched.push(Touched {
                    partition: p,
                    key,
                    original,
                    row,
                });
            }
        }
    }

    /// Column `c` of a current row.
    fn cell(&self, cur: &Cur, c: usize) -> Src {
        match cur {
            Cur::New(NewRow::Batch(i)) => (BATCH, *i),
            Cur::New(NewRow::Mixed(cells)) => cells[c],
            Cur::Table(loc) => (self.inputs.previous)(*loc),
        }
    }

    fn upsert(&self, i: usize, prev: Option<&Cur>) -> Cur {
        let Some(cells) = self.inputs.unavailable.get(&i) else {
            return Cur::New(NewRow::Batch(i as u32));
        };
        let mut row: Vec<Src> = vec![(BATCH, i as u32); self.inputs.cols.count];
        for &c in cells {
            row[c] = prev.map_or((NULLS, 0), |p| self.cell(p, c));
        }
        Cur::New(NewRow::Mixed(row.into()))
    }

    /// A soft delete's (or truncate's) row: previous values, metadata from batch row `i`.
    fn soft_deleted(&self, i: usize, prev: Option<&Cur>, truncate: bool) -> Option<Cur> {
        let cols = self.inputs.cols;
        let from_batch = (BATCH, i as u32);
        let row: Vec<Src> = (0..cols.count)
            .map(|c| {
                if cols.meta.contains(&c) {
                    from_batch
                } else if cols.op_flags.contains(&c) {
                    // a delete's own row says `d`/true; a truncate's says `t`, but a truncated
                    // row reads as deleted (`__op` is one of r/c/u/d)
                    if truncate { (MARKER, 0) } else { from_batch }
                } else {
                    match prev {
                        Some(p) => self.cell(p, c),
                        None if !truncate && cols.keys.contains(&c) => from_batch,
                        None => (NULLS, 0),
                    }
                }
            })
            .collect();
        Some(Cur::New(NewRow::Mixed(row.into())))
    }

    fn truncate(&mut self, i: usize) {
        let index = self.inputs.index;
        let mut targets: Vec<(i32, KeyId)> = Vec::new();
        for p in index.partitions() {
            targets.extend(index.iter_partition(p).map(|(k, _)| (p, k)));
        }
        targets.extend(
            self.touched
                .iter()
                .filter(|t| t.row.is_some())
                .map(|t| (t.partition, t.key)),
        );
        targets.sort_unstable();
        targets.dedup();
        for (p, key) in targets {
            let Some(prev) = self.current(p, key) else {
                continue; // already gone
            };
            let row = if self.inputs.hard {
                None
            } else {
                self.soft_deleted(i, Some(&prev), true)
            };
            self.set(p, key, row);
        }
    }
}

/// Resolves the `keep` rows of the batch.
pub fn resolve(inputs: &Inputs<'_>) -> Resolution {
    let mut st = State {
        inputs,
        touched: Vec::with_capacity(inputs.keep.len()),
        at: hashbrown::HashMap::with_capacity(inputs.keep.len()),
    };
    let batch = inputs.batch;
    for &i in inputs.keep {
        let p = batch.positions[i].partition;
        let key = inputs.keys[i];
        match batch.kinds[i] {
            ChangeKind::Truncate => st.truncate(i),
            // only a row with cells the source did not send needs the key's current row
            ChangeKind::Upsert if !inputs.unavailable.contains_key(&i) => {
                st.set(p, key, Some(Cur::New(NewRow::Batch(i as u32))));
            }
            ChangeKind::Upsert => {
                let prev = st.current(p, key);
                let row = st.upsert(i, prev.as_ref());
                st.set(p, key, Some(row));
            }
            ChangeKind::Delete if inputs.hard => st.set(p, key, None),
            ChangeKind::Delete => {
                let prev = st.current(p, key);
                let row = st.soft_deleted(i, prev.as_ref(), false);
                st.set(p, key, row);
            }
        }
    }
    let mut out = Resolution::default();
    for t in st.touched {
        if let Some((_, loc)) = t.original {
            out.superseded.push(loc);
        }
        let stays = match t.row {
            Some(Cur::New(r)) => {
                out.rows.push((t.partition, r));
                Some(t.partition)
            }
            Some(Cur::Table(_)) | None => None, // `Table`: cannot happen, every touch writes
        };
        if let Some((q, _)) = t.original
            && stays != Some(q)
        {
            out.removed_keys.push((q, t.key));
        }
    }
    out
}
