//! One Delta commit at exactly the next version, or a clear "lost the race".
//!
//! delta-rs would otherwise resolve a lost race itself with its conflict checker, which is
//! wrong for Cormorant (see [`crate::log`]); every caller here decides with the winning commits
//! in hand whether to commit the same actions again or to plan anew.

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, TransactionError};
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

/// Commits `actions` on top of the table's current snapshot, at the next version only.
pub async fn try_commit(table: &mut DeltaTable, actions: &[Action], op: DeltaOperation) -> Result<Outcome> {
    let snapshot = table.snapshot()?.clone();
    let committed = CommitBuilder::default()
        .with_actions(actions.to_vec())
        .with_max_retries(0)
        .build(Some(&snapshot), table.log_store(), op)
        .await;
    match committed {
        Ok(done) => {
            let version = done.version();
            table.state = Some(done.snapshot());
            Ok(Outcome::Committed(version))
        }
        Err(e) if lost_race(&e) => Ok(Outcome::Lost),
        Err(e) => Err(e.into()),
    }
}
