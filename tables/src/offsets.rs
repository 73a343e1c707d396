//! Watching the offsets a table recorded (its `txn` actions), cheaply and for every writer.
//!
//! A worker needs the table's offsets of partitions it does not write itself: to position a
//! partition it was just assigned (its previous owner committed up to there), and to decide
//! that the whole consumer group caught up. Looking an offset up in a snapshot replays the log;
//! this watch looks each one up once, then follows only the commits made since.

use std::collections::HashMap;

use deltalake::DeltaTable;

use crate::error::Result;
use crate::lake::Lake;
use crate::log;

/// A table's recorded offsets, kept current by [`OffsetsWatch::refresh`].
pub struct OffsetsWatch {
    lake: Lake,
    name: String,
    table: Option<DeltaTable>,
    txns: HashMap<String, Option<i64>>,
}

impl OffsetsWatch {
    pub fn new(lake: &Lake, name: &str) -> Self {
        Self {
            lake: lake.clone(),
            name: name.to_string(),
            table: None,
            txns: HashMap::new(),
        }
    }

    /// Brings the watch to the table's latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        let Some(table) = self.table.as_mut().filter(|t| t.version().is_some()) else {
            let table = self.lake.table(&self.name).await?;
            if table.version().is_some() {
                self.table = Some(table);
                self.txns.clear();
            }
            return Ok(());
        };
        let before = table.version().unwrap_or(0);
        crate::lake::update_state(table).await?;
        let now = table.version().unwrap_or(0);
        if now > before {
            match log::read(table.log_store().as_ref(), before + 1, now).await {
                Ok(w) => {
                    for (app, v) in w.txns {
                        self.txns.insert(app, Some(v));
                    }
                }
                Err(_) => self.txns.clear(), // look them up again at the new version
            }
        }
        Ok(())
    }

    /// The next offset the table recorded for a stream partition (`None`: never), as of the
    /// last refresh.
    pub async fn get(&mut self, app_id: &str) -> Result<Option<i64>> {
        if let Some(v) = self.txns.get(app_id) {
            return Ok(*v);
        }
        let Some(table) = &self.table else { return Ok(None) };
        let v = table
            .snapshot()?
            .transaction_version(table.log_store().as_ref(), app_id)
            .await?;
        self.txns.insert(app_id.to_string(), v);
        Ok(v)
    }
}
