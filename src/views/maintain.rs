//! Keeping one view table in step with its source table.
//!
//! A step reads the source at its latest version N, computes the view's rows there with the
//! same `tumble`/`hop`/`session` functions the batch query uses (so a view equals the batch
//! query by construction), compares them with the view table's rows, and commits only the
//! difference — upserts of new or changed rows, deletes of rows whose group disappeared — in
//! ONE commit that also records `txn` `view:<source>:0 = N + 1`.
//!
//! Invariants:
//! - a committed view reflects exactly one source version, recorded in the same commit;
//! - a step whose source version the view already reflects commits nothing (after a crash
//!   between the source's commit and the view's, the next step catches up: it compares with
//!   what the view table holds, not with what this process remembers);
//! - two steps racing on one view (two workers) can leave a stale row for one step; the next
//!   step removes it, because it compares with the table again.
//!
//! The step recomputes the view's windows from the source; the retraction path that updates
//! only the windows a commit touched (docs/views-plan.md) replaces `compute`, not the writing.

use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use change::{ChangeBatch, ChangeKind, Position, SourceOffset, StreamId};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use tables::{DeleteMode, Lake, TableError, TableWriter, WriteMode, WriterOptions};

use super::def::ViewDef;

/// The scope of a view's `txn` app id (`view:<source>:0`): not a consumer group, so it never
/// meets a Kafka stream's offsets.
const TXN_SCOPE: &str = "view";

/// What one step did.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// The source version the view now reflects.
    pub source_version: u64,
    /// The view table's new version (`None`: the view was already at that source version).
    pub version: Option<u64>,
    pub rows: usize,
    pub upserts: usize,
    pub deletes: usize,
    pub took: std::time::Duration,
}

/// One view and the writer of its table.
pub struct View {
    def: ViewDef,
    writer: TableWriter,
}

impl View {
    pub async fn open(lake: &Lake, def: ViewDef, policy: tables::maintain::LogPolicy) -> anyhow::Result<Self> {
        let options = WriterOptions {
            deletes: DeleteMode::Hard,
            mode: WriteMode::Mor,
            policy,
            description: Some(format!(
                "Windowed view kept by Cormorant {} over table {}: {}; each commit records the table version it reflects (txn {}).",
                env!("CARGO_PKG_VERSION"),
                def.source,
                def.sql.split_whitespace().collect::<Vec<_>>().join(" "),
                StreamId::new(TXN_SCOPE, &def.source).app_id(0)
            )),
            ..WriterOptions::default()
        };
        let writer = TableWriter::open(lake, &def.name, options)
            .await
            .with_context(|| format!("opening view table {}", def.name))?;
        Ok(Self { def, writer })
    }

    pub fn def(&self) -> &ViewDef {
        &self.def
    }

    fn stream(&self) -> StreamId {
        StreamId::new(TXN_SCOPE, &self.def.source)
    }

    /// The source version the view table reflects (`None`: no step committed yet).
    pub async fn reflects(&mut self) -> anyhow::Result<Option<u64>> {
        let app = self.stream().app_id(0);
        let next = self.writer.next_offset(&app).await?;
        Ok(next.and_then(|n| u64::try_from(n - 1).ok()))
    }

    /// Brings the view to the source's latest version (`force`: recompute and compare even
    /// when the view says it is there — `cormorant view rebuild`). `None` when the source
    /// table does not exist yet.
    pub async fn step(&mut self, lake: &Lake, force: bool) -> anyhow::Result<Option<Step>> {
        let started = std::time::Instant::now();
        let source = match lake.open(&self.def.source, None).await {
            Ok(t) => t,
            Err(TableError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading source table {}", self.def.source))),
        };
        let n = source.version().unwrap_or(0);
        if !force && self.reflects().await? >= Some(n) {
            return Ok(Some(Step {
                source_version: n,
                ..Step::default()
            }));
        }
        let ctx = session(lake);
        source.update_datafusion_session(&ctx.state())?;
        ctx.register_table(self.def.source.as_str(), source.table_provider().await?)?;
        let (schema, rows) = self.compute(&ctx).await?;
        let (upserts, deletes) = self.diff(lake, &ctx, &schema, rows).await?;
        let batch = self.change_batch(&schema, &upserts, &deletes, n)?;
        let applied = self
            .writer
            .apply(&batch)
            .await
            .with_context(|| format!("committing view {}", self.def.name))?;
        Ok(Some(Step {
            source_version: n,
            version: applied.version,
            rows: applied.rows_in,
            upserts: upserts.num_rows(),
            deletes: deletes.num_rows(),
            took: started.elapsed(),
        }))
    }

    /// The view's rows at the source version registered in `ctx`.
    async fn compute(&self, ctx: &SessionContext) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
        let df = ctx
            .sql(&self.def.sql)
            .await
            .with_context(|| format!("planning view {} over table {}", self.def.name, self.def.source))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let rows = df
            .collect()
            .await
            .with_context(|| format!("computing view {}", self.def.name))?;
        let fields: Vec<Field> = schema.fields().iter().map(|f| storable(f)).collect();
        let schema = Arc::new(Schema::new(fields));
        let rows = rows
            .iter()
            .map(|b| concat_as(&schema, std::slice::from_ref(b)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((schema, rows))
    }

    /// Rows to upsert (new or changed) and keys to delete, against the view table's rows.
    async fn diff(
        &self,
        lake: &Lake,
        ctx: &SessionContext,
        schema: &SchemaRef,
        rows: Vec<RecordBatch>,
    ) -> anyhow::Result<(RecordBatch, RecordBatch)> {
        let keys = self.key_schema(schema);
        ctx.register_table("__view_new", Arc::new(MemTable::try_new(schema.clone(), vec![rows])?))?;
        let old = match lake.open(&self.def.name, None).await {
            Ok(t) => t,
            Err(TableError::NotFound(_)) => {
                let all = ctx.table("__view_new").await?.collect().await?;
                let upserts = arrow::compute::concat_batches(schema, &all)?;
                return Ok((upserts, RecordBatch::new_empty(keys)));
            }
            Err(e) => return Err(e.into()),
        };
        old.update_datafusion_session(&ctx.state())?;
        ctx.register_table("__view_old", old.table_provider().await?)?;
        let list = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| quoted(f.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (all, key) = (list(schema), list(&keys));
        let changed = format!("SELECT {all} FROM __view_new EXCEPT SELECT {all} FROM __view_old");
        let gone = format!("SELECT {key} FROM __view_old EXCEPT SELECT {key} FROM __view_new");
        let rebuild = || {
            format!(
                "view {} no longer matches its table's columns (was its SQL changed?); remove the view's table and run `cormorant view rebuild {}`",
                self.def.name, self.def.name
            )
        };
        let upserts = ctx.sql(&changed).await.with_context(rebuild)?.collect().await?;
        let deletes = ctx.sql(&gone).await.with_context(rebuild)?.collect().await?;
        Ok((concat_as(schema, &upserts)?, concat_as(&keys, &deletes)?))
    }

    fn key_schema(&self, schema: &SchemaRef) -> SchemaRef {
        Arc::new(Schema::new(
            self.def
                .keys
                .iter()
                .map(|k| schema.field(*k).clone())
                .collect::<Vec<_>>(),
        ))
    }

    /// One change batch: upserts, then deletes (key columns only), all at source version `n`.
    fn change_batch(
        &self,
        schema: &SchemaRef,
        upserts: &RecordBatch,
        deletes: &RecordBatch,
        n: u64,
    ) -> anyhow::Result<ChangeBatch> {
        let key_columns: Vec<String> = self.def.keys.iter().map(|k| schema.field(*k).name().clone()).collect();
        let offset = i64::try_from(n).context("source version out of range")?;
        let offsets = vec![SourceOffset {
            stream: self.stream(),
            partition: 0,
            next_offset: offset + 1,
        }];
        let (u, d) = (upserts.num_rows(), deletes.num_rows());
        if u + d == 0 {
            return Ok(ChangeBatch::offsets_only(schema.clone(), key_columns, offsets));
        }
        let mut columns = Vec::with_capacity(schema.fields().len() + change::META_COLUMNS.len());
        for (i, field) in schema.fields().iter().enumerate() {
            let deleted: ArrayRef = match self.def.keys.iter().position(|k| *k == i) {
                Some(p) => deletes.column(p).clone(),
                None => new_null_array(field.data_type(), d),
            };
            columns.push(arrow::compute::concat(&[upserts.column(i).as_ref(), deleted.as_ref()])?);
        }
        columns.extend(meta(u, d, offset));
        let data = RecordBatch::try_new(change::with_meta(schema), columns)?;
        let mut kinds = vec![ChangeKind::Upsert; u];
        kinds.extend(std::iter::repeat_n(ChangeKind::Delete, d));
        Ok(ChangeBatch {
            columns: schema.clone(),
            key_columns,
            data,
            kinds,
            positions: vec![Position { partition: 0, offset }; u + d],
            unavailable: Vec::new(),
            offsets,
        })
    }
}

/// The metadata columns of a view's change rows: `__op` `u`/`d`, the commit time as
/// `__source_ts`, partition 0 and the source version as `__kafka_offset`.
fn meta(upserts: usize, deletes: usize, source_version: i64) -> Vec<ArrayRef> {
    let n = upserts + deletes;
    let ops: StringArray = std::iter::repeat_n(Some("u"), upserts)
        .chain(std::iter::repeat_n(Some("d"), deletes))
        .collect();
    let now = chrono::Utc::now().timestamp_micros();
    vec![
        Arc::new(ops),
        Arc::new(BooleanArray::from(vec![false; n])),
        Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        Arc::new(Int64Array::new_null(n)),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from(vec![source_version; n])),
    ]
}

/// A view column as its Delta table keeps it: nullable like every column Cormorant writes,
/// timestamps in microseconds (window bounds come out of `date_bin` in nanoseconds; Delta
/// stores microseconds), strings as plain Utf8 (DataFusion reads them as views).
fn storable(f: &Field) -> Field {
    let t = match f.data_type() {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    };
    Field::new(f.name(), t, true)
}

/// `batches` (query output, maybe typed a little differently) as one batch of `schema`.
fn concat_as(schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<RecordBatch> {
    let cast: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<_, _>>()?;
    Ok(arrow::compute::concat_batches(schema, &cast)?)
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A session with the window functions and the lake (for their time travel), but no tables:
/// a step registers the source at the version it reads. One partition, so that float
/// aggregates add up in the same order every step and an unchanged group compares equal.
pub(crate) fn session(lake: &Lake) -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_extension(Arc::new(lake.clone())),
    );
    crate::query::functions::register(&ctx);
    crate::query::windows::register(&ctx);
    ctx
}
