//! What other writers committed: the actions of a range of Delta log versions, summed up.
//!
//! A writer keeps its index, offsets and schema at one table version. When the table moved on
//! (another worker, a compaction, a truncate), it reads the commits in between — never the
//! whole table — and applies their net effect as a patch. The same summary decides whether a
//! commit that lost a race must be re-planned: only when a winner touched a file the loser
//! touches or read, recorded offsets of the same stream partition, or changed the schema or
//! protocol. Otherwise the loser commits the same actions at the next version.
//!
//! This replaces delta-rs's conflict checker for Cormorant's own commits: it treats any
//! winning `remove` of a file as a conflict with everything that read the table, so two
//! workers on different partitions would conflict on every deletion-vector update, and it
//! ignores `remove`s with `dataChange = false` (compaction), so a deletion vector added to a
//! file that a concurrent compaction rewrote would be lost.

use std::collections::{HashMap, HashSet};

use deltalake::kernel::{Action, Add, Metadata};
use deltalake::logstore::{LogStore, get_actions};

use crate::error::{Result, TableError};

/// The net effect of a range of commits.
#[derive(Debug, Default)]
pub struct Winners {
    /// Versions read (inclusive), `None` when the range was empty.
    pub range: Option<(u64, u64)>,
    /// Paths of files removed (and not re-added later in the range).
    pub removed: HashSet<String>,
    /// Files added and still active at the end of the range, by path (a re-added path — a
    /// grown deletion vector — appears here with its last `add`, and in `touched`).
    pub added: HashMap<String, Add>,
    /// Every path any `remove` or `add` named.
    pub touched: HashSet<String>,
    /// Latest recorded offset per `txn` app id.
    pub txns: HashMap<String, i64>,
    /// The last new table metadata, if any commit changed it.
    pub metadata: Option<Metadata>,
    pub protocol_changed: bool,
}

impl Winners {
    pub fn is_empty(&self) -> bool {
        self.range.is_none()
    }

    /// Whether a commit that removes or read `files` and records `app_ids` must be re-planned
    /// after these winners (instead of being committed as is at the next version).
    pub fn overlaps(&self, files: &HashSet<String>, app_ids: &HashSet<String>) -> bool {
        self.metadata.is_some()
            || self.protocol_changed
            || files.iter().any(|f| self.touched.contains(f))
            || app_ids.iter().any(|a| self.txns.contains_key(a))
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Add(add) => {
                    self.removed.remove(&add.path);
                    self.touched.insert(add.path.clone());
                    self.added.insert(add.path.clone(), add);
                }
                Action::Remove(r) => {
                    // a remove followed by an add of the same path (a grown deletion vector)
                    // within the range leaves the file active
                    self.added.remove(&r.path);
                    self.touched.insert(r.path.clone());
                    self.removed.insert(r.path);
                }
                Action::Txn(t) => {
                    self.txns.insert(t.app_id, t.version);
                }
                Action::Metadata(m) => self.metadata = Some(m),
                Action::Protocol(_) => self.protocol_changed = true,
                _ => {}
            }
        }
    }
}

/// The commits `from..=to` of a table, summed up.
pub async fn read(log_store: &dyn LogStore, from: u64, to: u64) -> Result<Winners> {
    let mut out = Winners::default();
    if from > to {
        return Ok(out);
    }
    for version in from..=to {
        let bytes = log_store.read_commit_entry(version).await?.ok_or_else(|| {
            TableError::LogGap(format!(
                "commit {version} is missing from the log (expired or not yet visible)"
            ))
        })?;
        out.absorb(get_actions(version, &bytes)?);
    }
    out.range = Some((from, to));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use deltalake::kernel::{Remove, Transaction};

    use super::*;

    fn add(path: &str) -> Action {
        Action::Add(Add {
            path: path.into(),
            ..Default::default()
        })
    }

    fn remove(path: &str) -> Action {
        Action::Remove(Remove {
            path: path.into(),
            data_change: false,
            ..Default::default()
        })
    }

    #[test]
    fn net_effect_and_overlap() {
        let mut w = Winners::default();
        w.absorb(vec![add("a"), add("b"), Action::Txn(Transaction::new("g:t:1", 10))]);
        w.absorb(vec![
            remove("a"),
            remove("c"),
            add("c"),
            Action::Txn(Transaction::new("g:t:1", 12)),
        ]);
        assert!(w.added.contains_key("b") && w.added.contains_key("c"));
        assert!(!w.added.contains_key("a"));
        assert_eq!(w.removed, ["a".to_string()].into());
        assert_eq!(w.txns["g:t:1"], 12);
        let none = HashSet::new();
        assert!(
            w.overlaps(&["c".to_string()].into(), &none),
            "a compaction touched our file"
        );
        assert!(
            w.overlaps(&none, &["g:t:1".to_string()].into()),
            "same partition's offsets"
        );
        assert!(!w.overlaps(&["z".to_string()].into(), &["g:t:2".to_string()].into()));
    }
}
