//! One Delta commit at exactly the next version, or a clear "lost the race".
//!
//! delta-rs would otherwise resolve a lost race itself with its conflict checker, which is
//! wrong for Cormorant (see [`crate::log`]); every caller here decides with the winning commits
//! in hand whether to commit the same actions again or to plan anew.

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};

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
