//! Planning one commit: which previous rows to load, the new rows per partition, and what
//! happens to the files holding superseded rows.
//!
//! - merge-on-read: superseded rows are added to their file's deletion vector (a file whose
//!   rows are all deleted is removed); only the previous rows soft deletes and TOASTed cells
//!   need are read — with a row selection, or the whole file when it is small enough for the
//!   writer to keep it in memory (its other rows are the next batches' likely reads);
//! - copy-on-write: every file holding a superseded row is read whole and rewritten at once
//!   without it, into the same partition's new file (MoR with the touched files compacted).
//!
//! Invariant: every output file holds rows of one source partition — batch rows of that
//! partition, and rows of files of that partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array, new_null_array};
use arrow::compute::{concat_batches, interleave, take_record_batch};
use arrow::datatypes::SchemaRef;
use change::{ChangeBatch, ChangeKind, DELETED, OP, is_meta_column};
use futures::StreamExt;
use object_store::ObjectStore;
use roaring::RoaringTreemap;

use crate::error::{Result, TableError};
use crate::files::{self, FileRef};
use crate::index::{Index, RowLoc};
use crate::keys::{KeyEncoder, KeyId};
use crate::recent::RecentRows;
use crate::resolve::{BATCH, Columns, Inputs, NULLS, NewRow, Resolution, Src, needs_previous, resolve};

/// How many files are read at once.
const READ_CONCURRENCY: usize = 8;

/// What a batch does, before anything is written.
pub struct Planned {
    /// New rows per partition.
    pub outputs: BTreeMap<i32, RecordBatch>,
    /// Files whose rows are all gone from the table (rewritten by CoW, or fully deleted).
    pub dropped: Vec<u32>,
    /// Files that stay with a grown deletion vector (MoR).
    pub vectors: Vec<(u32, RoaringTreemap)>,
    /// Keys that have no row any more.
    pub removed_keys: Vec<(i32, KeyId)>,
    /// Paths of every file this plan removes or read previous rows from: a concurrent commit
    /// that touched any of them forces a new plan.
    pub touched: HashSet<String>,
    /// What the plan read to find previous rows.
    pub reads: Reads,
}

/// Files the plan read for previous rows.
#[derive(Default)]
pub struct Reads {
    /// Files read from storage.
    pub from_storage: usize,
    /// Files found in the writer's memory of recent rows.
    pub from_memory: usize,
    /// Files read whole from storage, for the writer to keep among its recent rows.
    pub whole: Vec<(u32, RecordBatch)>,
}

/// Where a loaded file's rows sit among the sources.
struct LoadedFile {
    slot: u32,
    /// `None`: the whole file; else the ascending rows read.
    rows: Option<Vec<u32>>,
}

/// Inputs that do not change between plans of one batch.
pub struct Context<'a> {
    pub schema: &'a SchemaRef,
    pub encoder: &'a KeyEncoder,
    pub index: &'a Index,
    /// rows of recently written files: read from memory instead of storage
    pub recent: &'a RecentRows,
    pub store: Arc<dyn ObjectStore>,
    pub hard: bool,
    pub cow: bool,
    /// keys may have their row in another partition's group (see the writer)
    pub anywhere: bool,
}

fn columns(schema: &SchemaRef, encoder: &KeyEncoder) -> Columns {
    let n = schema.fields().len();
    Columns {
        count: n,
        keys: encoder
            .columns()
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect(),
        meta: (0..n)
            .filter(|c| {
                let name = schema.field(*c).name();
                is_meta_column(name) && name != OP && name != DELETED
            })
            .collect(),
        op_flags: [OP, DELETED].iter().filter_map(|c| schema.index_of(c).ok()).collect(),
    }
}

/// One-row sources: all nulls, and the "deleted" marker.
fn fixed_sources(schema: &SchemaRef) -> Result<[RecordBatch; 2]> {
    let nulls: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), 1))
        .collect();
    let marker: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            OP => Arc::new(StringArray::from(vec!["d"])) as ArrayRef,
            DELETED => Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
            _ => new_null_array(f.data_type(), 1),
        })
        .collect();
    Ok([
        RecordBatch::try_new(schema.clone(), nulls)?,
        RecordBatch::try_new(schema.clone(), marker)?,
    ])
}

/// The files (and, for MoR, rows) whose previous values the plan needs: file id → rows
/// (`None`: whole file).
fn to_load(cx: &Context<'_>, batch: &ChangeBatch, keep: &[usize], keys: &[KeyId]) -> HashMap<u32, Option<Vec<u32>>> {
    let (truncate_soft, needy) = needs_previous(batch, keep, cx.hard);
    let truncates = keep.iter().any(|i| batch.kinds[*i] == ChangeKind::Truncate);
    let mut load: HashMap<u32, Option<Vec<u32>>> = HashMap::new();
    let everything = truncate_soft || (cx.cow && truncates);
    if everything {
        for p in cx.index.partitions() {
            for (id, _) in cx.index.files_of(p) {
                load.insert(id, None);
            }
        }
        return load;
    }
    let loc = |i: &usize| {
        cx.index
            .find(batch.positions[*i].partition, keys[*i], cx.anywhere)
            .map(|(_, l)| l)
    };
    if cx.cow {
        for l in keep.iter().filter_map(loc) {
            load.insert(l.file, None);
        }
    }
    for l in needy.iter().filter_map(loc) {
        if let Some(rows) = load.entry(l.file).or_insert_with(|| Some(Vec::new())) {
            rows.push(l.row);
        }
    }
    for rows in load.values_mut().flatten() {
        rows.sort_unstable();
        rows.dedup();
    }
    load
}

/// One file read: its id, the rows read (`None`: all) and the rows.
type Read = (u32, Option<Vec<u32>>, RecordBatch);

/// Reads what [`to_load`] asks for; returns the sources (after the fixed ones) and where each
/// file landed.
async fn load(
    cx: &Context<'_>,
    wanted: HashMap<u32, Option<Vec<u32>>>,
) -> Result<(Vec<RecordBatch>, HashMap<u32, LoadedFile>, Reads)> {
    let mut reads = Vec::new();
    let mut sources = Vec::new();
    let mut loaded = HashMap::new();
    let mut counts = Reads::default();
    let mut whole_left = whole_reads_bytes(cx.recent);
    for (id, rows) in wanted {
        if let Some(kept) = cx.recent.get(id).filter(|k| k.covers(rows.as_deref())) {
            let slot = 3 + sources.len() as u32;
            loaded.insert(
                id,
                LoadedFile {
                    slot,
                    rows: kept.live.clone(),
                },
            );
            sources.push(kept.rows.clone());
            counts.from_memory += 1;
            continue;
        }
        let entry = cx
            .index
            .file(id)
            .ok_or_else(|| TableError::Corrupt(format!("index names file {id} it does not hold")))?;
        counts.from_storage += 1;
        // a small file is read whole and kept: decoding its few pages costs about what the
        // selected rows do, and later batches find its other keys in memory — while this
        // plan's whole reads fit what the writer can keep (every read is held until the plan
        // is done, and on the 5M-event bench over 1M keys a batch needed ~1,000 files)
        let size = entry.add.size.max(0) as u64;
        let whole = rows.is_some() && size <= keep_whole_bytes(cx.recent) && size <= whole_left;
        let rows = if whole {
            whole_left -= size;
            None
        } else {
            rows
        };
        let (store, file, schema) = (cx.store.clone(), FileRef::of(&entry.add), cx.schema.clone());
        reads.push(async move {
            let batch = files::read(store, &file, &schema, None, rows.as_deref()).await?;
            Ok::<_, TableError>((id, rows, batch))
        });
    }
    let results: Vec<Result<Read>> = futures::stream::iter(reads)
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    for r in results {
        let (id, rows, batch) = r?;
        if let Some(rows) = &rows
            && rows.len() != batch.num_rows()
        {
            return Err(TableError::Corrupt(format!(
                "read {} of {} selected rows of file {id}",
                batch.num_rows(),
                rows.len()
            )));
        }
        if rows.is_none() {
            counts.whole.push((id, batch.clone()));
        }
        loaded.insert(
            id,
            LoadedFile {
                slot: 3 + sources.len() as u32,
                rows,
            },
        );
        sources.push(batch);
    }
    Ok((sources, loaded, counts))
}

/// Files up to this many bytes are read whole: a 64th of the recent rows' budget (1 MiB of
/// Parquet at the default 64 MiB), so one read never pushes out much of what is kept; none
/// without a budget.
fn keep_whole_bytes(recent: &RecentRows) -> u64 {
    (recent.budget() / 64) as u64
}

/// Parquet bytes one plan reads whole at most: an eighth of the recent rows' budget (8 MiB
/// at the default 64 MiB; decoded rows take several times their Parquet bytes). More would
/// only evict itself from the recent rows, and a plan holds every file it read until it is
/// done. Further files are read with a row selection.
fn whole_reads_bytes(recent: &RecentRows) -> u64 {
    (recent.budget() / 8) as u64
}

/// Resolves `keep` rows of `batch` (aligned to the schema; `keys` its key ids) and plans the
/// commit.
pub async fn plan(cx: &Context<'_>, batch: &ChangeBatch, keep: &[usize], keys: &[KeyId]) -> Result<Planned> {
    let wanted = to_load(cx, batch, keep, keys);
    let (loaded_sources, loaded, reads) = load(cx, wanted).await?;
    let previous = |loc: RowLoc| -> Src {
        match loaded.get(&loc.file) {
            Some(LoadedFile { slot, rows: None }) => (*slot, loc.row),
            Some(LoadedFile { slot, rows: Some(rows) }) => match rows.binary_search(&loc.row) {
                Ok(i) => (*slot, i as u32),
                Err(_) => (NULLS, 0),
            },
            None => (NULLS, 0),
        }
    };
    let cols = columns(cx.schema, cx.encoder);
    let mut unavailable: HashMap<usize, Vec<usize>> = HashMap::new();
    for (r, c) in &batch.unavailable {
        if let Some(f) = batch.columns.fields().get(*c)
            && let Ok(ci) = cx.schema.index_of(f.name())
        {
            unavailable.entry(*r).or_default().push(ci);
        }
    }
    let res = resolve(&Inputs {
        batch,
        keep,
        keys,
        index: cx.index,
        cols: &cols,
        unavailable: &unavailable,
        hard: cx.hard,
        previous: &previous,
        anywhere: cx.anywhere,
    });
    // sources in slot order: BATCH, NULLS, MARKER, then the loaded files (slots from 3)
    let [nulls, marker] = fixed_sources(cx.schema)?;
    let mut sources = vec![batch.data.clone(), nulls, marker];
    sources.extend(loaded_sources);
    let mut touched: HashSet<String> = loaded
        .keys()
        .filter_map(|id| cx.index.file(*id).map(|f| f.path().to_string()))
        .collect();
    let (dropped, vectors, kept) = file_actions(cx, &res, &loaded)?;
    for id in dropped.iter().chain(vectors.iter().map(|(id, _)| id)) {
        if let Some(f) = cx.index.file(*id) {
            touched.insert(f.path().to_string());
        }
    }
    let outputs = assemble(cx.schema, &sources, &res, &kept)?;
    Ok(Planned {
        outputs,
        dropped,
        vectors,
        removed_keys: res.removed_keys,
        touched,
        reads,
    })
}

/// Rows kept from a rewritten file: `(partition, source slot, rows)`.
type Kept = Vec<(i32, u32, Vec<u32>)>;

/// Files dropped, files with a grown deletion vector, rows kept from rewritten files.
type FileActions = (Vec<u32>, Vec<(u32, RoaringTreemap)>, Kept);

/// What happens to each file holding a superseded row.
fn file_actions(cx: &Context<'_>, res: &Resolution, loaded: &HashMap<u32, LoadedFile>) -> Result<FileActions> {
    let mut superseded: BTreeMap<u32, RoaringTreemap> = BTreeMap::new();
    for loc in &res.superseded {
        superseded.entry(loc.file).or_default().insert(u64::from(loc.row));
    }
    let mut dropped = Vec::new();
    let mut vectors = Vec::new();
    let mut kept = Vec::new();
    for (id, rows) in superseded {
        let f = cx
            .index
            .file(id)
            .ok_or_else(|| TableError::Corrupt(format!("superseded row in unknown file {id}")))?;
        let mut bitmap = f.deleted.clone();
        bitmap |= rows;
        if cx.cow {
            let slot = loaded
                .get(&id)
                .map(|l| l.slot)
                .ok_or_else(|| TableError::Corrupt(format!("file {} to rewrite was not read", f.path())))?;
            let keep: Vec<u32> = (0..f.rows as u32).filter(|r| !bitmap.contains(u64::from(*r))).collect();
            if !keep.is_empty() {
                kept.push((f.partition, slot, keep));
            }
            dropped.push(id);
        } else if bitmap.len() >= f.rows {
            dropped.push(id); // every row deleted: drop the file
        } else {
            vectors.push((id, bitmap));
        }
    }
    Ok((dropped, vectors, kept))
}

/// The mixed rows of every partition, partition after partition, in one batch: one
/// `interleave` per column for all partitions. Per partition it cost partitions × columns ×
/// sources (each call type-checks and converts every source array): at 320 partitions a
/// quarter of the worker's CPU in `perf`.
fn mixed_rows<'a: 'b, 'b>(
    schema: &SchemaRef,
    sources: &[RecordBatch],
    parts: impl Iterator<Item = &'b [&'a [Src]]> + Clone,
) -> Result<RecordBatch> {
    let total: usize = parts.clone().map(<[_]>::len).sum();
    if total == 0 {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for c in 0..schema.fields().len() {
        let arrays: Vec<&dyn Array> = sources.iter().map(|s| s.column(c).as_ref()).collect();
        let idx: Vec<(usize, usize)> = parts
            .clone()
            .flatten()
            .map(|r| (r[c].0 as usize, r[c].1 as usize))
            .collect();
        columns.push(interleave(&arrays, &idx)?);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The new rows of every partition, one batch each: batch rows with one `take` per column,
/// rows kept from rewritten files likewise, mixed rows sliced from [`mixed_rows`].
///
/// Gathering every partition's rows with one `interleave` per column instead (then slicing,
/// no `concat`) was measured and dropped: on the 1M-event upsert stream over 48 partitions
/// this function went from 5.6% to 8.4% of the worker's samples — `interleave` looks up the
/// source array for every row, where `take` gathers from one.
fn assemble(
    schema: &SchemaRef,
    sources: &[RecordBatch],
    res: &Resolution,
    kept: &Kept,
) -> Result<BTreeMap<i32, RecordBatch>> {
    #[derive(Default)]
    struct Part<'a> {
        batch_rows: Vec<u32>,
        mixed: Vec<&'a [Src]>,
        kept: Vec<(u32, &'a [u32])>,
    }
    let mut parts: BTreeMap<i32, Part<'_>> = BTreeMap::new();
    for (p, row) in &res.rows {
        let part = parts.entry(*p).or_default();
        match row {
            NewRow::Batch(i) => part.batch_rows.push(*i),
            NewRow::Mixed(cells) => part.mixed.push(cells),
        }
    }
    for (p, slot, rows) in kept {
        parts.entry(*p).or_default().kept.push((*slot, rows));
    }
    let mut mixed = mixed_rows(schema, sources, parts.values().map(|part| part.mixed.as_slice()))?;
    let mut out = BTreeMap::new();
    for (p, part) in parts {
        let mut pieces = Vec::new();
        let batch = &sources[BATCH as usize];
        let identity = part.batch_rows.len() == batch.num_rows()
            && part.batch_rows.iter().enumerate().all(|(i, r)| *r as usize == i);
        if identity {
            pieces.push(batch.clone()); // every batch row, in order (inserts): no copy
        } else if !part.batch_rows.is_empty() {
            pieces.push(take_record_batch(batch, &UInt32Array::from(part.batch_rows))?);
        }
        for (slot, rows) in part.kept {
            pieces.push(take_record_batch(
                &sources[slot as usize],
                &UInt32Array::from(rows.to_vec()),
            )?);
        }
        if !part.mixed.is_empty() {
            let rows = mixed.slice(0, part.mixed.len());
            mixed = mixed.slice(part.mixed.len(), mixed.num_rows() - part.mixed.len());
            pieces.push(rows);
        }
        let batch = if pieces.len() == 1 {
            pieces.remove(0)
        } else {
            concat_batches(schema, &pieces)?
        };
        if batch.num_rows() > 0 {
            out.insert(p, batch);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    /// The schema of every batch here: two 64-bit integer columns.
    fn two_ints() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, false),
        ]))
    }

    fn ints(schema: &SchemaRef, values: impl IntoIterator<Item = i64>) -> RecordBatch {
        let values: Int64Array = values.into_iter().collect();
        RecordBatch::try_new(schema.clone(), vec![Arc::new(values.clone()), Arc::new(values)]).expect("batch")
    }

    fn column(rows: &RecordBatch, c: usize) -> Vec<i64> {
        rows.column(c).as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn every_partition_gets_its_batch_kept_and_mixed_rows_in_that_order() {
        let schema = two_ints();
        // sources: the batch (0..4), two one-row sources, a rewritten file (100..103)
        let sources = vec![
            ints(&schema, 0..4),
            ints(&schema, [-1]),
            ints(&schema, [-2]),
            ints(&schema, 100..103),
        ];
        let mixed: Box<[Src]> = vec![(3, 2), (BATCH, 3)].into();
        let res = Resolution {
            rows: vec![
                (7, NewRow::Batch(2)),
                (5, NewRow::Mixed(mixed)),
                (5, NewRow::Batch(0)),
                (7, NewRow::Batch(1)),
            ],
            ..Resolution::default()
        };
        let kept: Kept = vec![(5, 3, vec![0, 1])];
        let out = assemble(&schema, &sources, &res, &kept).expect("assemble");
        assert_eq!(out.keys().copied().collect::<Vec<_>>(), [5, 7]);
        assert_eq!(column(&out[&5], 0), [0, 100, 101, 102], "batch, kept, then mixed rows");
        assert_eq!(
            column(&out[&5], 1),
            [0, 100, 101, 3],
            "a mixed row takes each cell from its source"
        );
        assert_eq!(column(&out[&7], 0), [2, 1]);
    }

    #[test]
    fn only_a_whole_batch_in_order_goes_on_without_a_copy() {
        let schema = two_ints();
        let sources = vec![ints(&schema, 0..2), ints(&schema, [-1]), ints(&schema, [-2])];
        let whole = Resolution {
            rows: vec![(0, NewRow::Batch(0)), (0, NewRow::Batch(1))],
            ..Resolution::default()
        };
        let out = assemble(&schema, &sources, &whole, &Vec::new()).expect("assemble");
        assert!(out[&0].column(0).to_data().ptr_eq(&sources[0].column(0).to_data()));
        // as many rows as the batch, but one of them mixed: not the batch as is
        let mixed: Box<[Src]> = vec![(NULLS, 0), (BATCH, 1)].into();
        let one_mixed = Resolution {
            rows: vec![(0, NewRow::Batch(0)), (0, NewRow::Mixed(mixed))],
            ..Resolution::default()
        };
        let out = assemble(&schema, &sources, &one_mixed, &Vec::new()).expect("assemble");
        assert_eq!(column(&out[&0], 0), [0, -1]);
        assert_eq!(column(&out[&0], 1), [0, 1]);
    }
}
