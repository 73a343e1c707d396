//! Resolving a batch against the primary-key index: which current rows it supersedes and
//! what each touched key's new row is made of.
//!
//! A new row is described column by column as `(source, row)` pairs into a list of Arrow
//! sources (the batch, loaded table files, a one-row null source, a one-row "deleted" marker),
//! so the writer can build it with one `interleave` per column whatever the write mode.
//!
//! Rules (DESIGN.md): within the batch, changes apply in order; an upsert takes the batch row,
//! except cells the source did not send (TOAST), which keep the previous value; a soft delete
//! keeps the previous values and takes its metadata from the delete; a hard delete leaves no
//! row; a truncate deletes every key present at that point.

use std::collections::{HashMap, HashSet};

use connectors::change::{ChangeBatch, ChangeKind};

use crate::index::{PkIndex, RowLoc};

/// `(source index, row)` of one output cell.
pub type Src = (usize, usize);

/// Where the sources of a resolution are.
pub struct Slots {
    /// file id → source index of its loaded rows
    pub files: HashMap<u32, usize>,
    /// a one-row source of nulls
    pub null: usize,
    /// a one-row source whose `__op` is `d` and `__deleted` is true
    pub deleted: usize,
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
pub struct Resolution {
    /// New row versions, in first-touch order.
    pub rows: Vec<Vec<Src>>,
    /// Current rows the batch replaces or deletes.
    pub superseded: Vec<RowLoc>,
    /// Keys that have no row any more (hard deletes).
    pub removed_keys: Vec<Box<[u8]>>,
}

/// Rows of `keep` whose result depends on the key's previous values.
pub fn needs_previous(batch: &ChangeBatch, keep: &[usize], hard: bool) -> (bool, HashSet<usize>) {
    let toast: HashSet<usize> = batch.unavailable.iter().map(|(r, _)| *r).collect();
    let mut truncate = false;
    let mut rows = HashSet::new();
    for &i in keep {
        match batch.kinds[i] {
            ChangeKind::Truncate if !hard => truncate = true,
            ChangeKind::Delete if !hard => {
                rows.insert(i);
            }
            ChangeKind::Upsert if toast.contains(&i) => {
                rows.insert(i);
            }
            _ => {}
        }
    }
    (truncate, rows)
}

/// Resolves the `keep` rows of `batch` (source 0), whose keys are `keys`.
#[allow(clippy::too_many_arguments)] // each is a distinct input of one pure function
pub fn resolve(
    batch: &ChangeBatch,
    keep: &[usize],
    keys: &[Box<[u8]>],
    index: &PkIndex,
    cols: &Columns,
    unavailable: &HashMap<usize, Vec<usize>>,
    hard: bool,
    slots: &Slots,
) -> Resolution {
    let n = cols.count;
    let table_src = |loc: RowLoc| -> Src {
        (
            slots.files.get(&loc.file).copied().unwrap_or(slots.null),
            loc.row as usize,
        )
    };
    let mut order: Vec<Box<[u8]>> = Vec::new();
    let mut state: HashMap<Box<[u8]>, Option<Vec<Src>>> = HashMap::new();
    for &i in keep {
        let kind = batch.kinds[i];
        let targets: Vec<Box<[u8]>> = if kind == ChangeKind::Truncate {
            let mut all: Vec<Box<[u8]>> = index.iter().map(|(k, _)| Box::<[u8]>::from(k)).collect();
            all.extend(order.iter().filter(|k| matches!(state.get(*k), Some(Some(_)))).cloned());
            all.sort();
            all.dedup();
            all
        } else {
            vec![keys[i].clone()]
        };
        for key in targets {
            let prev: Option<Vec<Src>> = match state.get(&key) {
                Some(s) => s.clone(),
                None => index.get(&key).map(|l| vec![table_src(l); n]),
            };
            if !state.contains_key(&key) {
                order.push(key.clone());
            }
            let row = match kind {
                ChangeKind::Upsert => {
                    let mut row = vec![(0, i); n];
                    for c in unavailable.get(&i).into_iter().flatten() {
                        row[*c] = prev.as_ref().map_or((slots.null, 0), |p| p[*c]);
                    }
                    Some(row)
                }
                _ if hard => None,
                ChangeKind::Delete | ChangeKind::Truncate => {
                    let mut row = match prev {
                        Some(p) => p,
                        None if kind == ChangeKind::Delete => (0..n)
                            .map(|c| {
                                if cols.keys.contains(&c) {
                                    (0, i)
                                } else {
                                    (slots.null, 0)
                                }
                            })
                            .collect(),
                        None => continue, // a truncate finds this key already gone
                    };
                    for (c, cell) in row.iter_mut().enumerate() {
                        if cols.meta.contains(&c) {
                            *cell = (0, i);
                        } else if cols.op_flags.contains(&c) {
                            // a delete's own row says `d`/true; a truncate's says `t`, but a
                            // truncated row reads as deleted (`__op` is one of r/c/u/d)
                            *cell = if kind == ChangeKind::Delete {
                                (0, i)
                            } else {
                                (slots.deleted, 0)
                            };
                        }
                    }
                    Some(row)
                }
            };
            state.insert(key, row);
        }
    }
    let superseded: Vec<RowLoc> = order.iter().filter_map(|k| index.get(k)).collect();
    let mut rows = Vec::new();
    let mut removed_keys = Vec::new();
    for key in order {
        match state.remove(&key) {
            Some(Some(row)) => rows.push(row),
            _ => removed_keys.push(key),
        }
    }
    Resolution {
        rows,
        superseded,
        removed_keys,
    }
}
