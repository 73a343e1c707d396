//! One Delta commit at exactly the next version, or a clear "lost the race".
//!
//! delta-rs would otherwise resolve a lost race itself with its conflict checker, which is
//! wrong for Cormorant (see [`crate::log`]); every caller here decides with the winning commits
//! in hand whether to commit the same actions again or to plan anew.

use std::collections::HashMap;

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitData, CommitProperties, PROTOCOL, TransactionError};
use deltalake::logstore::CommitOrBytes;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use object_store::ObjectStoreExt;

use crate::error::Result;

/// How a commit attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed as this version; the table's state includes it.
    Committed(u64),
    /// Another writer took the next version; nothing was committed.
    Lost,
}

/// Whether a commit error means another commit took the version.
fn lost_race(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::VersionAlreadyExists(_) | TransactionError::MaxCommitAttempts(_)
            }
    )
}

/// Commits `actions` on top of the table's current snapshot, at the next version only, then
/// runs the table's log maintenance ([`crate::maintain::after_commit`]).
pub async fn try_commit(table: &mut DeltaTable, actions: &[Action], op: DeltaOperation) -> Result<Outcome> {
    let snapshot = table.snapshot()?.clone();
    // delta-rs's post-commit hook off: checkpoints and log clean-up are Cormorant's (maintain.rs)
    let props = CommitProperties::default()
        .with_max_retries(0)
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false));
    let committed = CommitBuilder::from(props)
        .with_actions(actions.to_vec())
        .build(Some(&snapshot), table.log_store(), op)
        .await;
    match committed {
        Ok(done) => {
            let version = done.version();
            table.state = Some(done.snapshot());
            crate::maintain::after_commit(table, version).await;
            Ok(Outcome::Committed(version))
        }
        Err(e) if lost_race(&e) => Ok(Outcome::Lost),
        // a commit first lists the log for its latest version, and deltalake reports a failed
        // listing as `Generic` text; a retry is safe whatever it was (the writer re-reads the
        // table and its txn offsets before committing again)
        Err(deltalake::DeltaTableError::Generic(msg)) => Err(crate::TableError::LogRead(msg)),
        Err(e) => Err(e.into()),
    }
}

/// Commits `actions` as version `base + 1` without moving `table`'s snapshot: the caller knows
/// the table's latest version is `base` (it just listed the log) and keeps what the commit
/// changed itself — the writer's index, offsets and schema follow its own commits.
///
/// Why not [`try_commit`]: delta-rs brings the snapshot to the new version after every commit,
/// a replay of the log that materializes every active file and parses the new files' statistics
/// — O(table) per commit, and a listing and a read of the log — for state the writer never
/// reads on its hot path. The snapshot is brought along when something needs its files (see
/// `TableWriter::table_now`); a caller committing new metadata brings it along right away, so
/// that readers of the schema never see an old one.
pub async fn commit_at(table: &DeltaTable, base: u64, actions: &[Action], op: DeltaOperation) -> Result<Outcome> {
    let snapshot = table.snapshot()?;
    PROTOCOL
        .can_commit(snapshot, actions, &op)
        .map_err(DeltaTableError::from)?;
    let bytes = CommitData::new(actions.to_vec(), op, HashMap::new(), Vec::new())
        .get_bytes()
        .map_err(DeltaTableError::from)?;
    let log_store = table.log_store();
    let operation = uuid::Uuid::new_v4();
    // as delta-rs does: stores with a conditional put take the bytes; the others (S3 with a
    // locking provider, copy-if-not-exists stores) rename a temporary file into place
    let entry = if ["LakeFSLogStore", "DefaultLogStore"].contains(&log_store.name().as_str()) {
        CommitOrBytes::LogBytes(bytes)
    } else {
        let path = object_store::path::Path::from_iter(["_delta_log", &format!("_commit_{operation}.json.tmp")]);
        log_store.object_store(Some(operation)).put(&path, bytes.into()).await?;
        CommitOrBytes::TmpCommit(path)
    };
    let version = base + 1;
    match log_store.write_commit_entry(version, entry.clone(), operation).await {
        Ok(()) => {
            crate::maintain::after_commit(table, version).await;
            Ok(Outcome::Committed(version))
        }
        Err(e) => {
            if let CommitOrBytes::TmpCommit(path) = &entry {
                let _ = log_store.object_store(Some(operation)).delete(path).await;
            }
            match e {
                TransactionError::VersionAlreadyExists(_) => Ok(Outcome::Lost),
                e => Err(DeltaTableError::from(e).into()),
            }
        }
    }
}
