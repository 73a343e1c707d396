//! One Delta commit at exactly the next version, or a clear "lost the race".
//!
//! delta-rs would otherwise resolve a lost race itself with its conflict checker, which is
//! wrong for Cormorant (see [`crate::log`]); every caller here decides with the winning commits
//! in hand whether to commit the same actions again or to plan anew.
//!
//! Invariant: `Lost` means another writer's commit holds the version. Every commit carries a
//! token of its own in its `commitInfo`; a write refused because the version exists is looked
//! up by that token, because the existing entry may be our own (a conditional put whose answer
//! was lost and which the store client retried is refused by itself). Taking our own commit
//! for a winner would re-plan the batch and delete the files that commit references.

use std::collections::HashMap;

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitData, PROTOCOL, TransactionError};
use deltalake::logstore::{CommitOrBytes, LogStore};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};
use object_store::ObjectStoreExt;

use crate::error::{Result, TableError};

/// The `commitInfo` key holding a commit's token.
const TOKEN_KEY: &str = "cormorant.commitId";

/// How a commit attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed as this version.
    Committed(u64),
    /// Another writer took the next version; nothing was committed.
    Lost,
}

/// Commits `actions` on top of the table's current snapshot, at the next version only, brings
/// the snapshot to the new version, then runs the table's log maintenance
/// ([`crate::maintain::after_commit`]).
pub async fn try_commit(table: &mut DeltaTable, actions: &[Action], op: DeltaOperation) -> Result<Outcome> {
    let base = table
        .version()
        .ok_or_else(|| TableError::NotFound(table.log_store().root_url().to_string()))?;
    let outcome = commit_at(table, base, actions, op).await?;
    if let Outcome::Committed(v) = outcome {
        table.update_incremental(Some(v)).await.map_err(crate::lake::log_read)?;
        crate::maintain::after_commit(table, v).await;
    }
    Ok(outcome)
}

/// Commits `actions` as version `base + 1` without moving `table`'s snapshot: the caller knows
/// the table's latest version is `base` (it just listed the log) and keeps what the commit
/// changed itself — the writer's index, offsets and schema follow its own commits. The caller
/// runs [`crate::maintain::after_commit`] once its snapshot has what it needs.
///
/// Why not delta-rs's `CommitBuilder`: it brings the snapshot to the new version after every
/// commit, a replay of the log that materializes every active file and parses the new files'
/// statistics — O(table) per commit, plus a listing and a read of the log — for state the
/// writer never reads on its hot path. The snapshot is brought along when something needs its
/// files (see `TableWriter::table_now`); a caller committing new metadata brings it along right
/// away, so that readers of the schema never see an old one.
pub async fn commit_at(table: &DeltaTable, base: u64, actions: &[Action], op: DeltaOperation) -> Result<Outcome> {
    commit_tagged(table, base, actions, op, uuid::Uuid::new_v4()).await
}

/// [`commit_at`] with the commit's token (its operation id) given.
async fn commit_tagged(
    table: &DeltaTable,
    base: u64,
    actions: &[Action],
    op: DeltaOperation,
    operation: uuid::Uuid,
) -> Result<Outcome> {
    PROTOCOL
        .can_commit(table.snapshot()?, actions, &op)
        .map_err(DeltaTableError::from)?;
    let token = operation.to_string();
    let info = HashMap::from([(TOKEN_KEY.to_string(), serde_json::Value::String(token.clone()))]);
    let bytes = CommitData::new(actions.to_vec(), op, info, Vec::new())
        .get_bytes()
        .map_err(DeltaTableError::from)?;
    let log_store = table.log_store();
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
    let written = log_store.write_commit_entry(version, entry.clone(), operation).await;
    if written.is_err()
        && let CommitOrBytes::TmpCommit(path) = &entry
    {
        let _ = log_store.object_store(Some(operation)).delete(path).await;
    }
    match written {
        Ok(()) => Ok(Outcome::Committed(version)),
        Err(TransactionError::VersionAlreadyExists(_)) if landed(log_store.as_ref(), version, &token).await? => {
            tracing::info!(
                version,
                "a commit reported as refused had landed (a retried write): kept"
            );
            Ok(Outcome::Committed(version))
        }
        Err(TransactionError::VersionAlreadyExists(_)) => Ok(Outcome::Lost),
        Err(e) => Err(DeltaTableError::from(e).into()),
    }
}

/// Whether the log entry of `version` is the commit tagged `token`. An entry that cannot be
/// read is an error (retryable), never a guess: the caller's next attempt lists the log again.
async fn landed(log_store: &dyn LogStore, version: u64, token: &str) -> Result<bool> {
    let entry = log_store
        .read_commit_entry(version)
        .await
        .map_err(crate::lake::log_read)?;
    Ok(entry.is_some_and(|bytes| bytes.windows(token.len()).any(|w| w == token.as_bytes())))
}

#[cfg(test)]
mod tests {
    use deltalake::kernel::{Action, Transaction};
    use deltalake::protocol::DeltaOperation;

    use super::{Outcome, commit_tagged};
    use crate::test_support::Fixture;
    use crate::writer::DeleteMode;

    fn txn(version: i64) -> Vec<Action> {
        vec![Action::Txn(Transaction::new("commit-test", version))]
    }

    fn op() -> DeltaOperation {
        DeltaOperation::Write {
            mode: deltalake::protocol::SaveMode::Append,
            partition_by: None,
            predicate: None,
        }
    }

    /// The same write made twice (a retry after an answer that never came) finds the version
    /// taken by itself: committed, not lost. Another writer's entry there is a lost race.
    #[tokio::test]
    async fn a_refused_write_that_had_landed_is_committed_not_lost() {
        let fx = Fixture::new(DeleteMode::Hard);
        let mut w = fx.writer().await;
        crate::test_support::apply(
            &mut w,
            &crate::test_support::batch(&[crate::test_support::up(0, 1, "a", 1)]),
        )
        .await;
        let table = w.current_table().await.expect("table").clone();
        let base = table.version().expect("version");
        let ours = uuid::Uuid::new_v4();
        let first = commit_tagged(&table, base, &txn(7), op(), ours).await.expect("commit");
        assert_eq!(first, Outcome::Committed(base + 1));
        let retried = commit_tagged(&table, base, &txn(7), op(), ours).await.expect("commit");
        assert_eq!(retried, Outcome::Committed(base + 1), "its own entry");
        let other = commit_tagged(&table, base, &txn(7), op(), uuid::Uuid::new_v4())
            .await
            .expect("commit");
        assert_eq!(other, Outcome::Lost, "another writer's entry");
    }
}
