//! The offsets a table recorded (its `txn` actions, one per stream partition), as far as a
//! writer or a watch knows them, and the one-pass read that fills them.
//!
//! The kernel answers one app id per replay of the log from its last checkpoint
//! (`Snapshot::get_app_id_version`), and a worker asks once per stream partition: 320
//! partitions were 320 replays, a third of the worker's CPU on the 5M-event bench. So the
//! first time an app id is missing, [`KnownOffsets`] reads every app id at once ([`all_txns`]:
//! the last checkpoint's `txn` rows and the commits after it), and asks the kernel per app id
//! only where that pass cannot give its exact answer.
//!
//! Invariant (kept by the owner): every `txn` committed after the table snapshot's version —
//! the owner's own commits, and other writers' it read from the log — was [`recorded`]; so an
//! app id missing from a complete map has no `txn` in the table. [`KnownOffsets::clear`]
//! drops the map and its completeness together.
//!
//! [`recorded`]: KnownOffsets::record

use std::collections::HashMap;

use arrow::array::{Array, AsArray as _, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use deltalake::DeltaTable;
use deltalake::logstore::LogStore;
use deltalake::table::state::DeltaTableState;

use crate::error::{Result, TableError};
use crate::log::read;
use crate::vacuum::{checkpoint_files, last_checkpoint, scan_checkpoint, string_field};

/// Next offsets by `txn` app id (`None`: looked up, never recorded).
#[derive(Debug, Default)]
pub(crate) struct KnownOffsets {
    map: HashMap<String, Option<i64>>,
    /// Whether `map` holds every app id the table has a `txn` for (read in one pass).
    complete: bool,
}

impl KnownOffsets {
    /// A `txn` committed or read from the log: as new as anything the snapshot knows.
    pub(crate) fn record(&mut self, app_id: String, next_offset: i64) {
        self.map.insert(app_id, Some(next_offset));
    }

    /// Forgets everything, for a table re-read from scratch.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.complete = false;
    }

    /// Whether every app id is known (a missing one was never recorded).
    #[cfg(test)]
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// The next offset `table` recorded for `app_id` (`None`: never, or no table yet).
    pub(crate) async fn get(&mut self, table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
        if let Some(v) = self.map.get(app_id) {
            return Ok(*v);
        }
        if self.complete {
            return Ok(None);
        }
        // no snapshot: the table was not created yet, so nothing was recorded
        let Ok(snapshot) = table.snapshot() else {
            return Ok(None);
        };
        if fill(snapshot, table.log_store().as_ref(), &mut self.map).await? {
            self.complete = true;
            return Ok(self.map.get(app_id).copied().flatten());
        }
        let v = snapshot.transaction_version(table.log_store().as_ref(), app_id).await?;
        self.map.insert(app_id.to_string(), v);
        Ok(v)
    }
}

/// Adds every `txn` app id of `snapshot` to `txns` in one pass ([`all_txns`]), keeping the
/// entries already there (as new or newer: commits after the snapshot's version). Returns
/// whether it did — then an app id missing from `txns` has no `txn` in the table.
async fn fill(
    snapshot: &DeltaTableState,
    log_store: &dyn LogStore,
    txns: &mut HashMap<String, Option<i64>>,
) -> Result<bool> {
    let expiring = snapshot
        .metadata()
        .configuration()
        .contains_key("delta.setTransactionRetentionDuration");
    let at = snapshot.version();
    let Some(all) = all_txns(log_store, at, expiring).await? else {
        return Ok(false);
    };
    for (app, v) in all {
        txns.entry(app).or_insert(Some(v));
    }
    Ok(true)
}

/// Every `txn` app id's latest version at table version `at`, in one pass: the `txn` rows of
/// the last checkpoint at or before `at` and the commits after it. `None` when that would not
/// be the kernel's exact answer — a checkpoint past `at` or of another kind than the classic
/// one, a commit missing from the log, or set transactions that expire
/// (`delta.setTransactionRetentionDuration`, `expiring`): then ask per app id.
pub(crate) async fn all_txns(
    log_store: &dyn LogStore,
    at: u64,
    expiring: bool,
) -> Result<Option<HashMap<String, i64>>> {
    if expiring {
        return Ok(None);
    }
    let store = log_store.object_store(None);
    let (mut txns, from) = match last_checkpoint(store.as_ref()).await? {
        None => (HashMap::new(), 0),
        Some((v, _)) if v > at => return Ok(None),
        Some((v, parts)) => match checkpoint_txns(store, v, parts).await {
            Ok(txns) => (txns, v + 1),
            Err(error) => {
                // a v2 checkpoint (named by a UUID), one cleaned up meanwhile, an unreadable
                // one: the kernel's way reads what it needs
                tracing::debug!(%error, version = v, "checkpoint txns not read in one pass; asking per app id");
                return Ok(None);
            }
        },
    };
    match read(log_store, from, at).await {
        Ok(w) => {
            txns.extend(w.txns);
            Ok(Some(txns))
        }
        Err(TableError::LogGap(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `txn` rows of the classic checkpoint at version `v` (in `parts` files, if several).
async fn checkpoint_txns(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    v: u64,
    parts: Option<u64>,
) -> Result<HashMap<String, i64>> {
    let mut txns = HashMap::new();
    for path in checkpoint_files(v, parts) {
        let leaves = ["txn.appId", "txn.version"];
        scan_checkpoint(store.clone(), &path, &leaves, |batch| txns_of(batch, &mut txns)).await?;
    }
    Ok(txns)
}

/// The `txn` rows of a checkpoint batch into `out`.
fn txns_of(batch: &RecordBatch, out: &mut HashMap<String, i64>) -> Result<()> {
    let Some(txn) = batch.column_by_name("txn") else {
        return Ok(());
    };
    let txn = txn.as_struct();
    let apps = string_field(txn, "appId")?;
    let versions = txn
        .column_by_name("version")
        .ok_or_else(|| TableError::Corrupt("checkpoint txn has no version".into()))?;
    let versions = arrow::compute::cast(versions, &DataType::Int64)?;
    let versions = versions.as_primitive::<Int64Type>();
    for row in 0..txn.len() {
        if txn.is_valid(row) && apps.is_valid(row) && versions.is_valid(row) {
            out.insert(apps.value(row).to_string(), versions.value(row));
        }
    }
    Ok(())
}
