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

use crate::error::Result;
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
            let table = self.lake.table(&self.name).await?;
            if let Some(v) = table.version() {
                self.table = Some(table);
                self.version = v;
                self.txns.clear();
            }
            return Ok(());
        };
        let now = crate::lake::latest_version(table, self.version).await?;
        if now > self.version {
            match log::read(table.log_store().as_ref(), self.version + 1, now).await {
                Ok(w) => {
                    for (app, v) in w.txns {
                        self.txns.record(app, v);
                    }
                }
                Err(_) => {
                    // commits expired in between: look every offset up again, at `now`
                    table
                        .update_incremental(Some(now))
                        .await
                        .map_err(crate::lake::log_read)?;
                    self.txns.clear();
                }
            }
            self.version = now;
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
}
