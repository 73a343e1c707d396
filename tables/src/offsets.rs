//! Watching the offsets a table recorded (its `txn` actions), cheaply and for every writer.
//!
//! A worker needs the table's offsets of partitions it does not write itself: to position a
//! partition it was just assigned (its previous owner committed up to there), and to decide
//! that the whole consumer group caught up. Looking an offset up in a snapshot replays the log
//! (the kernel answers one app id per replay); this watch reads every app id's offset in one
//! pass the first time one is missing ([`KnownOffsets`]; per app id where that pass cannot
//! answer exactly), then follows only the commits made since — reading their `txn` actions,
//! without bringing the snapshot along (a replay of every active file per check).
//!
//! Invariant: `txns` holds every app id a commit after the snapshot's version (up to
//! `version`) recorded, so an app id missing there reads the same in the older snapshot.

use deltalake::DeltaTable;

use crate::error::{Result, TableError};
use crate::lake::Lake;
use crate::log;
use crate::txns::KnownOffsets;

/// A table's recorded offsets, kept current by [`OffsetsWatch::refresh`].
pub struct OffsetsWatch {
    lake: Lake,
    name: String,
    table: Option<DeltaTable>,
    /// The version `txns` reflect (the snapshot may be older).
    version: u64,
    txns: KnownOffsets,
}

impl OffsetsWatch {
    pub fn new(lake: &Lake, name: &str) -> Self {
        Self {
            lake: lake.clone(),
            name: name.to_string(),
            table: None,
            version: 0,
            txns: KnownOffsets::default(),
        }
    }

    /// Brings the watch to the table's latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        let Some(table) = self.table.as_mut().filter(|t| t.version().is_some()) else {
            return self.reload().await;
        };
        let now = match crate::lake::latest_version(table, self.version).await {
            Ok(now) => now,
            // the commit the watch stood at expired from the log (a short log retention, or a
            // watch left unread for longer than it): start again from the latest version
            Err(TableError::LogGap(_)) => return self.reload().await,
            Err(e) => return Err(e),
        };
        if now > self.version {
            match log::read(table.log_store().as_ref(), self.version + 1, now).await {
                Ok(w) => {
                    for (app, v) in w.txns {
                        self.txns.record(app, v);
                    }
                    self.version = now;
                }
                // commits expired in between: look every offset up again, at the latest version
                Err(TableError::LogGap(_)) => return self.reload().await,
                // anything else (a store hiccup) goes to the caller, which asks again later: the
                // watch stays where it was, and a reload would cost a checkpoint read for nothing
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Loads the table at its latest version (from its newest checkpoint) and forgets the
    /// offsets known so far; nothing when the table does not exist yet.
    async fn reload(&mut self) -> Result<()> {
        let table = self.lake.table(&self.name).await?;
        if let Some(v) = table.version() {
            self.table = Some(table);
            self.version = v;
            self.txns.clear();
        }
        Ok(())
    }

    /// The next offset the table recorded for a stream partition (`None`: never), as of the
    /// last refresh.
    pub async fn get(&mut self, app_id: &str) -> Result<Option<i64>> {
        let Some(table) = &self.table else { return Ok(None) };
        self.txns.get(table, app_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::OffsetsWatch;
    use crate::test_support::{Fixture, TABLE, app_id, apply, batch, up};
    use crate::writer::DeleteMode;

    /// The watch follows the commits' offsets without bringing its snapshot along.
    #[tokio::test]
    async fn offsets_follow_the_log_while_the_snapshot_stays() {
        let fx = Fixture::new(DeleteMode::Hard);
        let mut w = fx.writer().await;
        let mut watch = OffsetsWatch::new(&fx.lake, TABLE);
        watch.refresh().await.expect("refresh");
        assert_eq!(watch.get(&app_id(0)).await.expect("get"), None, "no table yet");
        apply(&mut w, &batch(&[up(0, 1, "a", 1)])).await;
        watch.refresh().await.expect("refresh");
        let loaded = watch.table.as_ref().and_then(|t| t.version());
        assert_eq!(watch.get(&app_id(0)).await.expect("get"), Some(1));
        for offset in 1..4 {
            apply(&mut w, &batch(&[up(offset, 1, "a", 1)])).await;
        }
        watch.refresh().await.expect("refresh");
        assert_eq!(watch.get(&app_id(0)).await.expect("get"), Some(4));
        assert_eq!(
            watch.get(&app_id(5)).await.expect("get"),
            None,
            "a partition never written"
        );
        assert_eq!(watch.table.as_ref().and_then(|t| t.version()), loaded, "no replay");
        assert_eq!(watch.version, loaded.expect("loaded") + 3);
    }

    /// Reading a newer commit fails once (a store hiccup): the caller gets a retryable error,
    /// and the next refresh goes on from where the watch stood, without reloading the table.
    #[tokio::test]
    async fn a_failed_read_of_new_commits_is_retryable_and_keeps_the_watch() {
        let fx = Fixture::faulty(DeleteMode::Hard, 7);
        let faults = fx.faults.clone().expect("faulty fixture");
        let mut w = fx.writer().await;
        apply(&mut w, &batch(&[up(0, 1, "a", 1)])).await;
        let mut watch = OffsetsWatch::new(&fx.lake, TABLE);
        watch.refresh().await.expect("refresh");
        let loaded = watch.table.as_ref().and_then(|t| t.version());
        for offset in 1..3 {
            apply(&mut w, &batch(&[up(offset, 1, "a", 1)])).await;
        }
        faults.fail_next("get", 1);
        let err = watch.refresh().await.expect_err("the commit read fails");
        assert!(err.is_retryable(), "{err}");
        assert_eq!(faults.injected(), 1);
        assert_eq!(watch.version, loaded.expect("loaded"), "the watch stays");
        watch.refresh().await.expect("the next refresh");
        assert_eq!(watch.get(&app_id(0)).await.expect("get"), Some(3));
        assert_eq!(watch.table.as_ref().and_then(|t| t.version()), loaded, "no reload");
    }

    /// The commit the watch last read expires from the log (log retention shorter than the
    /// time between two refreshes): the watch reloads from the newest checkpoint instead of
    /// failing, and still knows every offset.
    #[tokio::test]
    async fn a_watch_whose_version_expired_reloads_from_the_checkpoint() {
        let fx = Fixture::new(DeleteMode::Hard);
        let mut w = fx.writer().await;
        apply(&mut w, &batch(&[up(0, 1, "a", 1)])).await;
        let mut watch = OffsetsWatch::new(&fx.lake, TABLE);
        watch.refresh().await.expect("refresh");
        assert_eq!(watch.get(&app_id(0)).await.expect("get"), Some(1));
        let seen = watch.version;
        for offset in 1..4 {
            apply(&mut w, &batch(&[up(offset, 1, "a", 1)])).await;
        }
        let table = w.current_table().await.expect("table");
        let latest = table.version().expect("version") as u64;
        crate::checkpoint::write(table.log_store(), latest)
            .await
            .expect("checkpoint");
        // what log expiry does: the commits below the checkpoint go, the watch's among them
        let log = fx.dir.path().join(TABLE).join("_delta_log");
        for v in 0..latest {
            std::fs::remove_file(log.join(format!("{v:020}.json"))).expect("expire a commit");
        }
        assert!(seen < latest);
        watch.refresh().await.expect("refresh after the watch's commit expired");
        assert_eq!(watch.version, latest);
        assert_eq!(watch.get(&app_id(0)).await.expect("get"), Some(4));
        assert_eq!(watch.get(&app_id(5)).await.expect("get"), None);
    }
}
