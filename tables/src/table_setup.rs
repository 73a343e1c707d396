//! Table creation and the table-level settings a writer keeps in step with its config: the
//! schema, primary key, description and partitioning a table is created with; the log policy
//! and the deletion-vector feature set later; the partitioning checked (it is fixed at
//! creation). Invariant: a writer never writes a table whose partitioning differs from its
//! options' — files of one table are all split the same way.

use std::collections::HashMap;

use arrow::datatypes::{Field, Schema, SchemaRef};
use change::meta_fields;
use deltalake::TableProperty;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{Action, MetadataExt, StructType, TableFeatures};
use deltalake::protocol::DeltaOperation;

use crate::commit::{Outcome, try_commit};
use crate::error::{Result, TableError};
use crate::partitioning::{PARTITION_BY_PROPERTY, Partitioning};
use crate::writer::{
    DeleteMode, KEYS_MOVED_PROPERTY, PRIMARY_KEY_PROPERTY, SOURCE_PARTITIONS_PROPERTY, TableWriter, WriteMode,
};

impl TableWriter {
    /// Creates the table for `batch`'s columns.
    pub(crate) async fn create(
        &mut self,
        columns: &SchemaRef,
        key_columns: &[String],
        source: Option<&str>,
    ) -> Result<()> {
        let mut fields: Vec<Field> = columns.fields().iter().map(|f| f.as_ref().clone()).collect();
        let spec = &self.opts.partitioning;
        let (realized, derived) = match spec.clash(columns) {
            Some(e) => Err(e),
            None => spec.realize(columns),
        }
        .map_err(|e| {
            TableError::Refused(format!(
                "table {} cannot be created: {e}; change the table's partition_by",
                self.name
            ))
        })?;
        let pending = spec.pending(&realized);
        if !pending.is_empty() {
            tracing::warn!(
                table = %self.name,
                ?pending,
                "partition_by names columns the first records lack: the table is partitioned by them once they appear; if a name is wrong, stop the worker, fix it and rebuild the table (`cormorant replay --into`, or delete the new table), since partitioning is fixed at creation"
            );
        }
        fields.extend(derived);
        fields.extend(meta_fields());
        let kernel: StructType = (&Schema::new(fields)).try_into_kernel()?;
        let commented = kernel.fields().cloned().map(|f| match change::meta_comment(f.name()) {
            Some(comment) => f.with_metadata([("comment", comment)]),
            None => f,
        });
        let mut create = self
            .table
            .create()
            .with_table_name(&self.name)
            .with_comment(self.description(key_columns, source))
            .with_columns(commented)
            .with_raise_if_key_not_exists(false);
        if !key_columns.is_empty() {
            create = create.with_configuration([(PRIMARY_KEY_PROPERTY, Some(key_columns.join(",")))]);
        }
        if !spec.is_empty() {
            create = create
                .with_partition_columns(realized)
                .with_configuration([(PARTITION_BY_PROPERTY, Some(spec.canonical()))]);
        }
        if self.opts.mode == WriteMode::Mor {
            // protocol reader 3 / writer 7 with the deletionVectors feature
            create = create.with_configuration_property(TableProperty::EnableDeletionVectors, Some("true"));
        }
        if !self.opts.properties.is_empty() {
            create = create.with_configuration(self.opts.properties.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        }
        let policy = self.opts.policy.properties();
        if !policy.is_empty() {
            create = create.with_configuration(policy.into_iter().map(|(k, v)| (k, Some(v))));
        }
        match create.await {
            Ok(t) => self.table = t,
            // a concurrent creator won: use its table
            Err(e) => {
                tracing::debug!(table = %self.name, error = %e, "create raced, reloading");
                self.table = self.lake.table(&self.name).await?;
                if self.table.version().is_none() {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// The table's description, for catalogs: where its rows come from and how they are kept.
    pub(crate) fn description(&self, key_columns: &[String], source: Option<&str>) -> String {
        if let Some(d) = &self.opts.description {
            return d.clone();
        }
        let deletes = match self.opts.deletes {
            DeleteMode::Soft => "soft (deleted rows stay with __deleted = true)",
            DeleteMode::Hard => "hard (deleted rows are removed)",
        };
        let mode = match self.opts.mode {
            WriteMode::Mor => "merge-on-read (deletion vectors)",
            WriteMode::Cow => "copy-on-write",
        };
        let partitioned = match self.opts.partitioning.is_empty() {
            true => String::new(),
            false => format!("; partitioned by {}", self.opts.partitioning.items().join(", ")),
        };
        format!(
            "Change data capture table kept by Cormorant {}: the Debezium stream {} applied as upserts; \
             primary key ({}); deletes {deletes}; {mode}{partitioned}.",
            env!("CARGO_PKG_VERSION"),
            source.unwrap_or("(unknown)"),
            key_columns.join(", "),
        )
    }

    pub(crate) fn key_columns(&self) -> Vec<String> {
        self.property(PRIMARY_KEY_PROPERTY)
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// A table property, as of the current snapshot.
    pub(crate) fn property(&self, key: &str) -> Option<String> {
        self.table
            .snapshot()
            .ok()
            .and_then(|s| s.metadata().configuration().get(key).cloned())
    }

    /// Tells the writer how many partitions the source stream has now. The first count is
    /// recorded in the table; a different one later means keys may now arrive on another
    /// partition than the one holding their row (Kafka hashes keys modulo the count), so the
    /// table is marked and every writer from then on indexes and searches every partition.
    pub async fn note_source_partitions(&mut self, count: usize) -> Result<()> {
        self.sync().await?;
        if self.table.version().is_none() {
            return Ok(());
        }
        let recorded = self.property(SOURCE_PARTITIONS_PROPERTY);
        if recorded.as_deref() == Some(count.to_string().as_str()) {
            return Ok(());
        }
        let mut props = vec![(SOURCE_PARTITIONS_PROPERTY.to_string(), count.to_string())];
        if let Some(before) = &recorded {
            tracing::warn!(table = %self.name, before, now = count, "the source's partition count changed: keys may move between partitions; every worker now indexes every partition of this table");
            props.push((KEYS_MOVED_PROPERTY.to_string(), "true".to_string()));
        }
        let mut md = self.table_now().await?.snapshot()?.metadata().clone();
        for (k, v) in props {
            md = md.add_config_key(k, v)?;
        }
        let op = DeltaOperation::SetTableProperties {
            properties: HashMap::new(),
        };
        match try_commit(&mut self.table, &[Action::Metadata(md)], op).await? {
            Outcome::Committed(_) | Outcome::Lost => {} // lost: the next call sees the winner's
        }
        self.sync().await
    }

    /// Refuses to write a table partitioned otherwise than configured: files of one table
    /// must all be split the same way, and changing it means rewriting every file.
    pub(crate) fn check_partitioning(&self) -> Result<()> {
        let snapshot = self.table.snapshot()?;
        let md = snapshot.metadata();
        let actual = Partitioning::of_table(md.partition_columns(), md.configuration())?;
        if actual != self.opts.partitioning {
            return Err(TableError::Refused(format!(
                "table {} is partitioned by {} but its partition_by says {}; partitioning is fixed when a table is created: restore partition_by (the worker stops until then), or rebuild the table with `cormorant replay --table {0} --from earliest --into {0}_v2` (while the topic still holds its whole history) and point the [[tables]] entry at {0}_v2",
                self.name,
                actual.canonical(),
                self.opts.partitioning.canonical()
            )));
        }
        Ok(())
    }

    /// Sets the table properties of the configured [`crate::maintain::LogPolicy`] that differ
    /// (a table created before the policy changed), once per writer.
    pub(crate) async fn ensure_policy(&mut self) -> Result<()> {
        self.check_partitioning()?;
        let stale: Vec<(String, String)> = self
            .opts
            .policy
            .properties()
            .into_iter()
            .filter(|(k, v)| self.property(k).as_deref() != Some(v.as_str()))
            .collect();
        if !stale.is_empty() {
            tracing::info!(table = %self.name, properties = ?stale, "setting the table's log policy");
            let mut md = self.table_now().await?.snapshot()?.metadata().clone();
            for (k, v) in stale {
                md = md.add_config_key(k, v)?;
            }
            let op = DeltaOperation::SetTableProperties {
                properties: HashMap::new(),
            };
            if try_commit(&mut self.table, &[Action::Metadata(md)], op).await? == Outcome::Lost {
                return self.sync().await; // checked again on the next batch
            }
            self.sync().await?;
        }
        self.policy_checked = true;
        Ok(())
    }

    /// Whether the table can take deletion vectors (protocol feature).
    pub(crate) fn has_dv_feature(&self) -> bool {
        self.table.snapshot().is_ok_and(|s| {
            s.protocol()
                .writer_features()
                .is_some_and(|f| f.iter().any(|x| x.as_ref() == "deletionVectors"))
        })
    }

    /// MoR tables need the deletionVectors feature; tables created as CoW get it on first use.
    pub(crate) async fn ensure_dv_feature(&mut self) -> Result<()> {
        if !self.has_dv_feature() {
            tracing::info!(table = %self.name, "enabling deletion vectors (protocol 3/7) for merge-on-read");
            self.table = self
                .table_now()
                .await?
                .clone()
                .add_feature()
                .with_feature(TableFeatures::DeletionVectors)
                .with_allow_protocol_versions_increase(true)
                .await?;
            self.sync().await?;
        }
        Ok(())
    }
}
