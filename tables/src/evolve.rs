//! Schema evolution: what a new source schema does to a table's schema.
//!
//! - a new column is added (before the metadata columns); rows written before it read as the
//!   column's default (its Avro default), so a non-null default means existing rows are
//!   rewritten with it — every Delta reader then sees what PostgreSQL shows;
//! - a column the source dropped stays, null from then on;
//! - a widened type (int8→…→int64, float→double, decimal with more integer digits at the same
//!   or larger scale) widens the column; existing rows are rewritten in the wider type, so no
//!   reader needs Delta's type-widening feature and no value changes;
//! - a narrower incoming type is read into the table's wider one; anything else is
//!   incompatible and its records go to the dead-letter table with the reason.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
pub use change::widens;
use change::{DEFAULT_KEY, is_meta_column, meta_fields};

/// The outcome of comparing a table schema with an incoming source schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Evolution {
    /// The table schema after the change (source columns, then metadata columns).
    pub schema: SchemaRef,
    pub added: Vec<String>,
    pub widened: Vec<String>,
    /// Existing rows must be rewritten (a widened type, an added column with a default, a
    /// pending partition column appeared).
    pub rewrite: bool,
    /// The table's partition columns after the change, when they change (a pending one
    /// appeared: see [`crate::partitioning::Partitioning::realize`]).
    pub partition_columns: Option<Vec<String>>,
}

impl Evolution {
    pub fn is_noop(&self) -> bool {
        self.added.is_empty() && self.widened.is_empty() && self.partition_columns.is_none()
    }

    /// Realizes the partition columns of `spec` that `self.schema` now holds and the table
    /// (partitioned by `current`) did not: their derived columns join the schema and every row
    /// is rewritten into files split by them. A column of a type that cannot be a partition
    /// value stays pending, with a warning; the others are realized.
    pub fn realize_partitions(&mut self, spec: &crate::partitioning::Partitioning, current: &[String], table: &str) {
        let (realized, derived, refused) = spec.realize_each(&self.schema);
        for e in refused {
            tracing::warn!(
                table,
                error = %e,
                "a partition column appeared but cannot partition the table: it stays pending (the table's rows are kept as they are); to partition otherwise, rebuild the table with `cormorant replay --into`"
            );
        }
        if realized == current {
            return;
        }
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .filter(|f| !is_meta_column(f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(derived);
        fields.extend(meta_fields());
        self.schema = Arc::new(Schema::new(fields));
        self.partition_columns = Some(realized);
        self.rewrite = true;
    }
}

/// Plans how `table` (its full Arrow schema) takes `incoming` source columns.
/// `Err` says why the incoming schema cannot be applied.
pub fn plan(table: &Schema, incoming: &[Field]) -> Result<Evolution, String> {
    let mut source: Vec<Field> = table
        .fields()
        .iter()
        .filter(|f| !is_meta_column(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    let mut added = Vec::new();
    let mut widened = Vec::new();
    let mut rewrite = false;
    for f in incoming {
        match source.iter_mut().find(|c| c.name() == f.name()) {
            None => {
                rewrite |= f.metadata().contains_key(DEFAULT_KEY);
                added.push(f.name().clone());
                source.push(f.clone());
            }
            Some(c) if c.data_type() == f.data_type() || widens(f.data_type(), c.data_type()) => {}
            Some(c) if widens(c.data_type(), f.data_type()) => {
                widened.push(f.name().clone());
                rewrite = true;
                *c = c.clone().with_data_type(f.data_type().clone());
            }
            Some(c) => {
                return Err(format!(
                    "column {} changed from {} to {}, which would lose values; only widening (int→bigint, float→double, decimal precision up) is applied",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ));
            }
        }
    }
    source.extend(meta_fields());
    Ok(Evolution {
        schema: Arc::new(Schema::new(source)),
        added,
        widened,
        rewrite,
        partition_columns: None,
    })
}

impl crate::writer::TableWriter {
    /// Applies a schema change that needs existing rows rewritten (a widened type, an added
    /// column with a default) in one commit of its own: new metadata, every live row rewritten
    /// in the new schema, each partition's rows into that partition's new files. Old versions
    /// keep their files and schema for time travel. The index is rebuilt afterwards (the key
    /// columns may have widened).
    pub(crate) async fn rewrite_for(&mut self, evolution: &Evolution) -> crate::error::Result<()> {
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
        use deltalake::kernel::{Action, MetadataExt, StructType};

        tracing::info!(
            table = %self.name,
            added = ?evolution.added,
            widened = ?evolution.widened,
            "schema change: rewriting existing rows in the new schema"
        );
        let snapshot = self.table_now().await?.snapshot()?.clone();
        let old_schema = snapshot.snapshot().arrow_schema();
        let store = self.table.log_store().object_store(None);
        let adds = crate::lake::active_adds(&self.table)?;
        let mut by_partition: std::collections::BTreeMap<Option<i32>, Vec<arrow::array::RecordBatch>> =
            std::collections::BTreeMap::new();
        for add in &adds {
            let rows = crate::files::read_live(store.clone(), add, &old_schema).await?;
            by_partition
                .entry(crate::index::partition_of(add))
                .or_default()
                .push(change::align(&rows, &evolution.schema)?);
        }
        let kernel: StructType = evolution.schema.as_ref().try_into_kernel()?;
        let mut metadata = snapshot.metadata().clone().with_schema(&kernel)?;
        let mut parts = crate::partitioning::Partitioning::of_table(
            snapshot.metadata().partition_columns(),
            snapshot.metadata().configuration(),
        )?;
        let realized = match &evolution.partition_columns {
            Some(cols) => {
                metadata = with_partition_columns(metadata, cols)?;
                cols.clone()
            }
            None => snapshot.metadata().partition_columns().to_vec(),
        };
        parts = parts.restrict(&realized);
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions = vec![Action::Metadata(metadata)];
        actions.extend(adds.iter().map(|a| Action::Remove(crate::writer::remove_of(a, now))));
        for (partition, batches) in by_partition {
            let data = arrow::compute::concat_batches(&evolution.schema, &batches)?;
            if data.num_rows() > 0 {
                let written = crate::files::write_with(
                    &self.table,
                    &parts,
                    &data,
                    crate::files::Kind::Lasting {
                        target: Some(128 * 1024 * 1024),
                    },
                    partition,
                )
                .await?;
                actions.extend(written.adds.into_iter().map(Action::Add));
            }
        }
        let op = deltalake::protocol::DeltaOperation::Write {
            mode: deltalake::protocol::SaveMode::Overwrite,
            partition_by: evolution.partition_columns.clone(),
            predicate: None,
        };
        match crate::commit::try_commit(&mut self.table, &actions, op).await? {
            crate::commit::Outcome::Committed(_) => {}
            crate::commit::Outcome::Lost => {
                // another writer moved first (maybe with the same change): re-plan on retry
                return Err(crate::error::TableError::Delta(
                    deltalake::DeltaTableError::VersionAlreadyExists(snapshot.version() + 1),
                ));
            }
        }
        let loaded = self.state.as_ref().map(|s| s.index.partitions()).unwrap_or_default();
        self.state = None;
        self.version = None;
        self.txns.clear();
        self.sync().await?;
        if !loaded.is_empty() {
            self.load_partitions(&loaded).await?;
        }
        Ok(())
    }
}

/// `metadata` with its `partitionColumns` replaced (deltalake's `MetadataExt` has no setter;
/// its own setters round-trip the action through JSON the same way).
fn with_partition_columns(
    metadata: deltalake::kernel::Metadata,
    columns: &[String],
) -> crate::error::Result<deltalake::kernel::Metadata> {
    let mut value = serde_json::to_value(&metadata).map_err(|e| crate::error::TableError::Corrupt(e.to_string()))?;
    value["partitionColumns"] = serde_json::Value::from(columns.to_vec());
    serde_json::from_value(value).map_err(|e| crate::error::TableError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    fn table(fields: Vec<Field>) -> Schema {
        let mut all = fields;
        all.extend(meta_fields());
        Schema::new(all)
    }

    #[test]
    fn adds_widens_and_refuses() {
        let t = table(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("w", DataType::Float32, true),
            Field::new("gone", DataType::Utf8, true),
        ]);
        let same = plan(&t, &[Field::new("id", DataType::Int32, true)]).expect("same");
        assert!(same.is_noop() && !same.rewrite);
        let add = plan(&t, &[Field::new("tier", DataType::Utf8, true)]).expect("add");
        assert_eq!((add.added.clone(), add.rewrite), (vec!["tier".to_string()], false));
        assert_eq!(
            add.schema.index_of("tier").expect("tier"),
            4,
            "before the metadata columns"
        );
        let with_default =
            Field::new("n", DataType::Int32, true).with_metadata([(DEFAULT_KEY.to_string(), "7".to_string())].into());
        assert!(plan(&t, &[with_default]).expect("default").rewrite);
        let wide = plan(
            &t,
            &[
                Field::new("id", DataType::Int64, true),
                Field::new("price", DataType::Decimal128(14, 2), true),
                Field::new("w", DataType::Float64, true),
            ],
        )
        .expect("widen");
        assert_eq!(wide.widened, vec!["id", "price", "w"]);
        assert!(wide.rewrite);
        assert_eq!(
            wide.schema.field_with_name("price").expect("price").data_type(),
            &DataType::Decimal128(14, 2)
        );
        // narrower incoming types are read into the wider column
        assert!(
            plan(&t, &[Field::new("id", DataType::Int16, true)])
                .expect("narrow")
                .is_noop()
        );
        assert!(plan(&t, &[Field::new("id", DataType::Utf8, true)]).is_err());
        assert!(
            plan(&t, &[Field::new("price", DataType::Decimal128(10, 3), true)]).is_err(),
            "scale up loses integer digits"
        );
        assert!(plan(&t, &[Field::new("w", DataType::Int64, true)]).is_err());
    }
}

#[cfg(test)]
#[path = "evolve_tests.rs"]
mod writer_tests;
