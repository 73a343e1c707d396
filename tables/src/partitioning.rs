//! Delta partition columns: what a table is partitioned by, how a derived `date(col)` column
//! is computed, and how rows are grouped into files by their partition values.
//!
//! The spec is fixed when the table is created: the partition columns go into the metadata's
//! `partitionColumns` and the spec itself (with the expressions of derived columns, which
//! `partitionColumns` cannot say) into the table property [`PARTITION_BY_PROPERTY`]. Every
//! writer — ingest, copy-on-write rewrites, compaction, schema rewrites, `cormorant compact`
//! without a config — reads it back from the table, so files are always split the same way.
//!
//! Invariants:
//! - every data file holds rows of exactly one set of partition values, recorded in its
//!   `add.partitionValues` as Delta serializes them (the Parquet file does not hold the
//!   partition columns: the Delta convention, readers take the values from the log);
//! - a derived column is recomputed from its source column on every write, so a row never
//!   carries a stale one (rows arrive with it NULL: the source does not have it);
//! - files stay at the table root, not in `col=value/` directories: the object path is the
//!   `add.path` verbatim, so no path holds a `%` escape (a remove pairs with its add by the raw
//!   string, and vacuum decodes paths — an escaped value would break both).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array, new_null_array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};

use crate::error::{Result, TableError};

/// Table property holding the partition spec as a JSON array of its items.
pub const PARTITION_BY_PROPERTY: &str = "cormorant.partitionBy";

/// Partition values of one file: column name → Delta's serialized value (`None` = NULL).
pub type Values = HashMap<String, Option<String>>;

/// Where a partition column's values come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The source column of the same name.
    Column,
    /// The UTC date of a date or timestamp source column.
    Date(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionColumn {
    pub name: String,
    pub source: Source,
}

/// A table's partition columns, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partitioning {
    pub columns: Vec<PartitionColumn>,
}

/// At most this many partition columns: every distinct combination is a file per commit.
const MAX_COLUMNS: usize = 4;

impl Partitioning {
    /// Parses config items: `"col"`, `"date(col)"` (column `col_date`), `"date(col) AS name"`.
    pub fn parse(items: &[String]) -> std::result::Result<Self, String> {
        let mut columns: Vec<PartitionColumn> = Vec::new();
        for item in items {
            let c = parse_item(item)?;
            if change::is_meta_column(&c.name) {
                return Err(format!(
                    "partition_by item {item:?}: {} is a metadata column (partitioning by it would move rows when they are deleted); partition by a source column",
                    c.name
                ));
            }
            if columns.iter().any(|o| o.name == c.name) {
                return Err(format!("partition_by names column {} twice; keep one", c.name));
            }
            columns.push(c);
        }
        if columns.len() > MAX_COLUMNS {
            return Err(format!(
                "partition_by has {} columns; use at most {MAX_COLUMNS} (each combination of values is a file per commit)",
                columns.len()
            ));
        }
        Ok(Self { columns })
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// The items in their normal form (what the table property records).
    pub fn items(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| match &c.source {
                Source::Column => c.name.clone(),
                Source::Date(src) => format!("date({src}) AS {}", c.name),
            })
            .collect()
    }

    /// The property value: a JSON array of [`Self::items`].
    pub fn canonical(&self) -> String {
        serde_json::Value::from(self.items()).to_string()
    }

    /// The spec a table was created with: its property, or (a table another tool created) its
    /// plain `partitionColumns`.
    pub fn of_table(partition_columns: &[String], configuration: &HashMap<String, String>) -> Result<Self> {
        let Some(text) = configuration.get(PARTITION_BY_PROPERTY) else {
            let items: Vec<String> = partition_columns.to_vec();
            return Self::parse(&items).map_err(|e| {
                TableError::Refused(format!(
                    "the table's partitionColumns {items:?} (written by another tool) cannot be read as Cormorant partitioning: {e}; write it into a new table with `cormorant replay --into`"
                ))
            });
        };
        let items: Vec<String> = serde_json::from_str(text)
            .map_err(|e| TableError::Corrupt(format!("table property {PARTITION_BY_PROPERTY} = {text:?}: {e}")))?;
        Self::parse(&items).map_err(TableError::Corrupt)
    }

    /// What of the spec a table whose source columns are `source` can be partitioned by now:
    /// the realized partition columns and the fields of the derived ones among them, or why
    /// the table cannot be partitioned this way. A column the source does not have yet is
    /// pending (a column added later in the database, when a backfill starts from records
    /// older than it): the table is partitioned by it once it appears.
    pub fn realize(&self, source: &Schema) -> std::result::Result<(Vec<String>, Vec<Field>), String> {
        let (mut names, mut derived) = (Vec::new(), Vec::new());
        for c in &self.columns {
            match &c.source {
                Source::Column => {
                    let Ok(f) = source.field_with_name(&c.name) else {
                        continue;
                    };
                    if !allowed(f.data_type()) {
                        return Err(format!(
                            "partition column {} has type {}; partition by a string, integer, boolean or date column, or by date() of a timestamp",
                            c.name,
                            f.data_type()
                        ));
                    }
                }
                Source::Date(src) => {
                    let Ok(f) = source.field_with_name(src) else { continue };
                    if !is_date_source(f.data_type()) {
                        return Err(format!(
                            "date({src}): {src} has type {}; date() takes a date or timestamp column",
                            f.data_type()
                        ));
                    }
                    // present: the table's own derived column (a table schema, not a source's)
                    if source.field_with_name(&c.name).is_err() {
                        derived.push(Field::new(&c.name, DataType::Date32, true));
                    }
                }
            }
            names.push(c.name.clone());
        }
        Ok((names, derived))
    }

    /// A derived column the source itself has (a table made from it could not tell them apart).
    pub fn clash(&self, source: &Schema) -> Option<String> {
        self.columns.iter().find_map(|c| match &c.source {
            Source::Date(src) if source.field_with_name(&c.name).is_ok() => Some(format!(
                "date({src}) AS {0}: the source has a column {0} too; name the derived column differently in partition_by (a table that exists keeps its partitioning: rebuild it with `cormorant replay --into` under the new name)",
                c.name
            )),
            _ => None,
        })
    }

    /// [`Self::realize`] column by column: a column that cannot partition (its type) is left
    /// pending, with why, instead of failing the others.
    pub fn realize_each(&self, source: &Schema) -> (Vec<String>, Vec<Field>, Vec<String>) {
        let (mut names, mut derived, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for c in &self.columns {
            let one = Self {
                columns: vec![c.clone()],
            };
            match one.realize(source) {
                Ok((n, d)) => {
                    names.extend(n);
                    derived.extend(d);
                }
                Err(e) => refused.push(e),
            }
        }
        (names, derived, refused)
    }

    /// The columns of the spec the source does not have yet.
    pub fn pending(&self, realized: &[String]) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| !realized.contains(&c.name))
            .map(|c| match &c.source {
                Source::Column => c.name.clone(),
                Source::Date(src) => src.clone(),
            })
            .collect()
    }

    /// The spec restricted to the `realized` partition columns (a table's `partitionColumns`).
    pub fn restrict(&self, realized: &[String]) -> Self {
        Self {
            columns: self
                .columns
                .iter()
                .filter(|c| realized.contains(&c.name))
                .cloned()
                .collect(),
        }
    }

    /// `batch` with every derived column computed from its source column.
    pub fn derive(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for c in &self.columns {
            let Source::Date(src) = &c.source else { continue };
            let (Ok(at), Ok(from)) = (schema.index_of(&c.name), schema.index_of(src)) else {
                continue;
            };
            columns[at] = cast(&utc_dates(batch.column(from))?, schema.field(at).data_type())?;
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Groups `batch`'s rows by their partition values: the batch reordered so each group's
    /// rows are consecutive (input order kept inside a group, groups in order of first
    /// appearance — a batch of one group is returned as is), and each group's row count and
    /// values.
    pub fn split(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<(usize, Values)>)> {
        let schema = batch.schema();
        let mut cols = Vec::new();
        for c in &self.columns {
            let i = schema
                .index_of(&c.name)
                .map_err(|_| TableError::Corrupt(format!("partition column {} is missing from the rows", c.name)))?;
            cols.push(batch.column(i).clone());
        }
        let converter = RowConverter::new(cols.iter().map(|a| SortField::new(a.data_type().clone())).collect())?;
        let rows = converter.convert_columns(&cols)?;
        let mut group_of: HashMap<&[u8], usize> = HashMap::new();
        let mut members: Vec<Vec<u32>> = Vec::new();
        for i in 0..batch.num_rows() {
            let g = *group_of.entry(rows.row(i).data()).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            members[g].push(i as u32);
        }
        let mut groups = Vec::with_capacity(members.len());
        for m in &members {
            groups.push((m.len(), self.values_at(&cols, m[0] as usize)?));
        }
        if members.len() <= 1 {
            return Ok((batch.clone(), groups));
        }
        let order = UInt32Array::from(members.concat());
        Ok((take_record_batch(batch, &order)?, groups))
    }

    /// The serialized partition values of row `i`.
    fn values_at(&self, cols: &[ArrayRef], i: usize) -> Result<Values> {
        let mut out = Values::new();
        for (c, a) in self.columns.iter().zip(cols) {
            let text = cast(&a.slice(i, 1), &DataType::Utf8).map_err(|e| {
                TableError::Refused(format!(
                    "partition column {0} holds a value Delta cannot store as a partition value ({e}; PostgreSQL's infinity?); partition by \"date({0}) AS …\" instead: such rows then go to the NULL partition and keep their value",
                    c.name
                ))
            })?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| TableError::Corrupt(format!("partition column {} did not cast to text", c.name)))?;
            let value = text.is_valid(0).then(|| text.value(0).to_string());
            out.insert(c.name.clone(), value.filter(|v| !empty_is_null(v)));
        }
        Ok(out)
    }

    /// The schema of the Parquet files: `schema` without the partition columns.
    pub fn file_schema(&self, schema: &SchemaRef) -> SchemaRef {
        if self.is_empty() {
            return schema.clone();
        }
        let keep: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| !self.columns.iter().any(|c| &c.name == f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        Arc::new(Schema::new_with_metadata(keep, schema.metadata().clone()))
    }
}

/// The UTC date of each timestamp (or date) of `column`. A value no calendar date holds —
/// PostgreSQL's `infinity`/`-infinity` (i64::MAX/MIN µs) or a year past chrono's range — has
/// a NULL date: such a row goes to the NULL partition while its own column keeps the value
/// (Arrow's cast would fail the whole write instead).
fn utc_dates(column: &ArrayRef) -> Result<ArrayRef> {
    use arrow::array::{AsArray, Date32Array};
    use arrow::datatypes::{Date32Type, TimestampMicrosecondType};
    const DAY_MICROS: i64 = 86_400_000_000;
    let in_range = |days: i64| {
        i32::try_from(days)
            .ok()
            .filter(|d| chrono::NaiveDate::from_num_days_from_ce_opt(d.saturating_add(719_163)).is_some())
    };
    let dates: Date32Array = match column.data_type() {
        DataType::Date32 => column
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.and_then(|d| in_range(i64::from(d))))
            .collect(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|t| t.and_then(|t| in_range(t.div_euclid(DAY_MICROS))))
            .collect(),
        other => {
            return Err(TableError::Corrupt(format!(
                "date() of a {other} column (checked at creation)"
            )));
        }
    };
    Ok(Arc::new(dates))
}

/// `batch` with the columns named in `values` set to those values (a file's rows read back:
/// its Parquet file does not hold them).
pub fn inject(batch: &RecordBatch, values: &Values) -> Result<RecordBatch> {
    if values.is_empty() {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (i, field) in schema.fields().iter().enumerate() {
        let Some(value) = values.get(field.name()) else {
            continue;
        };
        columns[i] = match value {
            None => new_null_array(field.data_type(), n),
            Some(v) => {
                let text = StringArray::from(vec![v.as_str(); n]);
                let options = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(&text, field.data_type(), &options).map_err(|e| {
                    TableError::Corrupt(format!(
                        "partition value {v:?} of {} is not a {}: {e}",
                        field.name(),
                        field.data_type()
                    ))
                })?
            }
        };
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Delta cannot hold an empty string as a partition value: the protocol reads `""` as NULL
/// ("an empty string for any type translates to a null partition value"), as Spark, Hive and
/// delta-kernel do. So a row whose partition column is `""` is written to the NULL partition
/// — every reader, Cormorant included, then agrees it is NULL — and the first time a process
/// does this it says so, since the value read back differs from the source's.
fn empty_is_null(value: &str) -> bool {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !value.is_empty() {
        return false;
    }
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "an empty string in a partition column is stored as NULL: Delta reads an empty partition value as NULL; partition by a column without empty strings to keep them"
        );
    }
    true
}

fn parse_item(item: &str) -> std::result::Result<PartitionColumn, String> {
    let text = item.trim();
    let lower = text.to_ascii_lowercase();
    if !lower.starts_with("date(") {
        if !is_identifier(text) {
            return Err(format!(
                "partition_by item {item:?} is not a column name; write \"col\", \"date(col)\" or \"date(col) AS name\""
            ));
        }
        return Ok(PartitionColumn {
            name: text.to_string(),
            source: Source::Column,
        });
    }
    let close = text
        .find(')')
        .ok_or_else(|| format!("partition_by item {item:?} lacks ')'; write \"date(col) AS name\""))?;
    let src = text[5..close].trim().to_string();
    let rest = text[close + 1..].trim();
    let name = if rest.is_empty() {
        format!("{src}_date")
    } else if let Some(name) = rest
        .get(..3)
        .filter(|a| a.eq_ignore_ascii_case("as "))
        .and(rest.get(3..))
    {
        name.trim().to_string()
    } else {
        return Err(format!(
            "partition_by item {item:?}: expected AS name after date(…); write \"date(col) AS name\""
        ));
    };
    if !is_identifier(&src) || !is_identifier(&name) {
        return Err(format!(
            "partition_by item {item:?} is not of the form \"date(col) AS name\" with plain column names"
        ));
    }
    Ok(PartitionColumn {
        name,
        source: Source::Date(src),
    })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_') && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Types a partition value round-trips exactly through Delta's text serialization and back.
/// Floats (NaN, -0.0), binary, nested types, decimals and timestamps (use `date()`) are not.
fn allowed(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Boolean
            | DataType::Date32
    )
}

fn is_date_source(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Timestamp(TimeUnit::Microsecond, _))
}

#[cfg(test)]
#[path = "partitioning_tests.rs"]
mod tests;
