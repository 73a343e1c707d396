//! Schema evolution through the writer: widened types and added columns with defaults are
//! rewritten into every row (every reader sees them), old versions keep their old schema.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use change::{ChangeBatch, DEFAULT_KEY};

use crate::test_support::*;
use crate::writer::{DeleteMode, WriteMode};

/// `b` with source column `name` of type `to` (as a newer source schema would send it).
fn recast(b: ChangeBatch, name: &str, to: DataType) -> ChangeBatch {
    let retype = |s: &Schema| -> Vec<Field> {
        s.fields()
            .iter()
            .map(|f| {
                if f.name() == name {
                    f.as_ref().clone().with_data_type(to.clone())
                } else {
                    f.as_ref().clone()
                }
            })
            .collect()
    };
    let columns = Arc::new(Schema::new(retype(&b.columns)));
    let schema = Arc::new(Schema::new(retype(b.data.schema().as_ref())));
    let arrays: Vec<ArrayRef> = b
        .data
        .schema()
        .fields()
        .iter()
        .zip(b.data.columns())
        .map(|(f, a)| {
            if f.name() == name {
                cast(a, &to).expect("cast")
            } else {
                a.clone()
            }
        })
        .collect();
    ChangeBatch {
        columns,
        data: RecordBatch::try_new(schema, arrays).expect("batch"),
        ..b
    }
}

/// `b` with a new source column `tier` holding `values`, whose Avro default is `default`.
fn with_tier(b: ChangeBatch, default: &str, values: Vec<Option<&str>>) -> ChangeBatch {
    let field =
        Field::new("tier", DataType::Utf8, true).with_metadata([(DEFAULT_KEY.to_string(), default.to_string())].into());
    let mut cols: Vec<Field> = b.columns.fields().iter().map(|f| f.as_ref().clone()).collect();
    cols.push(field.clone());
    let n = b.columns.fields().len();
    let mut fields: Vec<Field> = b.data.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.insert(n, field);
    let mut arrays: Vec<ArrayRef> = b.data.columns().to_vec();
    arrays.insert(n, Arc::new(StringArray::from(values)));
    ChangeBatch {
        columns: Arc::new(Schema::new(cols)),
        data: RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch"),
        ..b
    }
}

async fn widening(mode: WriteMode) {
    let fx = Fixture::new(DeleteMode::Soft);
    let mut w = MODE.scope(mode, fx.writer()).await;
    apply(&mut w, &batch(&[up(0, 1, "a", 100), up(1, 2, "b", 200)])).await;
    apply(&mut w, &batch(&[up(2, 2, "b2", 250)])).await;
    let v_before = w.current_table().await.expect("table").version().expect("version");
    // amount decimal(10,2) → decimal(14,2) with a value only the wider type holds; id int → bigint
    let wide = recast(
        recast(
            batch(&[up(3, 3, "c", 12_345_678_901_234), up(4, 1, "a2", 110)]),
            "amount",
            DataType::Decimal128(14, 2),
        ),
        "id",
        DataType::Int64,
    );
    apply(&mut w, &wide).await;
    let schema = w.table().snapshot().expect("snapshot").snapshot().arrow_schema();
    assert_eq!(
        schema.field_with_name("amount").expect("amount").data_type(),
        &DataType::Decimal128(14, 2)
    );
    assert_eq!(schema.field_with_name("id").expect("id").data_type(), &DataType::Int64);
    assert_eq!(
        fx.query("SELECT id, name, amount FROM t ORDER BY id").await,
        vec!["1|a2|1.10", "2|b2|2.50", "3|c|123456789012.34"]
    );
    // the index follows the wider key type: an old-typed batch still finds its keys
    apply(&mut w, &batch(&[up(5, 3, "c2", 300)])).await;
    assert_eq!(fx.query("SELECT count(*) FROM t").await, vec!["3"]);
    let old = fx.lake.open("orders", Some(v_before)).await.expect("old version");
    let old_schema = old.snapshot().expect("snapshot").snapshot().arrow_schema();
    assert_eq!(
        old_schema.field_with_name("amount").expect("amount").data_type(),
        &DataType::Decimal128(10, 2)
    );
}

#[tokio::test]
async fn widening_cow() {
    widening(WriteMode::Cow).await;
}

#[tokio::test]
async fn widening_mor() {
    widening(WriteMode::Mor).await;
}

#[tokio::test]
async fn added_column_default_reaches_existing_rows() {
    let fx = Fixture::new(DeleteMode::Soft);
    let mut w = MODE.scope(WriteMode::Mor, fx.writer()).await;
    apply(&mut w, &batch(&[up(0, 1, "a", 100), up(1, 2, "b", 200), del(2, 2)])).await;
    apply(
        &mut w,
        &with_tier(batch(&[up(3, 3, "c", 300)]), "silver", vec![Some("gold")]),
    )
    .await;
    assert_eq!(
        fx.query("SELECT id, tier, __deleted FROM t ORDER BY id").await,
        vec!["1|silver|false", "2|silver|true", "3|gold|false"]
    );
    // a later record without the column (an old schema version) reads the default too
    apply(&mut w, &batch(&[up(4, 4, "d", 400)])).await;
    assert_eq!(fx.query("SELECT tier FROM t WHERE id = 4").await, vec!["silver"]);
}

#[test]
fn incompatible_change_is_refused_with_the_reason() {
    let table = Schema::new(vec![Field::new("amount", DataType::Decimal128(10, 2), true)]);
    let err = crate::evolve::plan(&table, &[Field::new("amount", DataType::Utf8, true)]).expect_err("refused");
    assert!(err.contains("amount") && err.contains("widening"), "{err}");
}
