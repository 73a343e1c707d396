//! Bad input never stops the worker and is never lost: each kind lands in `_dlq` with its
//! raw bytes and reason, good records around it are applied, and re-reading adds nothing.

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use tables::{DeleteMode, WriteMode};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_go_to_the_dead_letter_table() {
    let loaded = load_prefix(&unique("bad")).await;
    let fx = fixture();
    let topic = format!("{}dbz.public.customers", loaded.prefix);
    let good: Vec<_> = fx
        .events
        .iter()
        .filter(|e| e.topic == "dbz.public.customers")
        .take(100)
        .collect();
    let reframe = |b: &[u8]| -> Vec<u8> {
        let (id, payload) = connectors::frame::split(b).expect("fixture frame");
        connectors::frame::frame(loaded.ids[&id], payload)
    };
    let sample_key = reframe(good[0].key.as_deref().expect("key"));
    let sample_value = reframe(good[0].value.as_deref().expect("value"));
    let (value_id, payload) = connectors::frame::split(&sample_value).expect("frame");
    let mut truncated = payload.to_vec();
    truncated.truncate(payload.len() / 2);
    let mut trailing = payload.to_vec();
    trailing.extend_from_slice(&[1, 2, 3]);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("bad_frame", {
            let mut v = sample_value.clone();
            v[0] = 7;
            v
        }),
        ("bad_frame", vec![0, 0, 1]),
        ("unknown_schema", connectors::frame::frame(987_654, payload)),
        ("corrupt_avro", connectors::frame::frame(value_id, &truncated)),
        ("corrupt_avro", connectors::frame::frame(value_id, &trailing)),
    ];
    let producer = cormorant::fixture::producer(&brokers()).expect("producer");
    // good, then the bad ones interleaved, then more good
    let mut sent = Vec::new();
    for (i, e) in good.iter().enumerate() {
        let k = reframe(e.key.as_deref().expect("key"));
        let v = reframe(e.value.as_deref().expect("value"));
        producer
            .send(
                FutureRecord::to(&topic).partition(0).key(&k).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .expect("produce good");
        if i % 20 == 10
            && let Some((kind, bytes)) = bad.get(i / 20)
        {
            producer
                .send(
                    FutureRecord::to(&topic).partition(0).key(&sample_key).payload(bytes),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce bad");
            sent.push((*kind, bytes.clone()));
        }
    }
    assert_eq!(sent.len(), bad.len());

    let cfg = config(&loaded.prefix, Storage::Local, DeleteMode::Soft, WriteMode::Cow, "bad");
    let stats = run_until_caught_up(&cfg).await;
    assert_eq!(stats.dead_letters, bad.len() as u64);

    let ctx = cormorant::query::session(&cfg).await.expect("session");
    let rows = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { batches_as_pg(&cormorant::query::run_sql(&ctx, sql).await.expect(sql).remove(0)) }
    };
    let live = rows("SELECT count(*) FROM customers WHERE NOT __deleted").await;
    assert_eq!(live[1][0].as_deref(), Some("100"), "every good record applied");
    let dlq = rows("SELECT error_kind, topic, \"offset\", error FROM _dlq ORDER BY \"offset\"").await;
    let kinds: Vec<&str> = dlq.iter().skip(1).map(|r| r[0].as_deref().unwrap_or("")).collect();
    assert_eq!(kinds, sent.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    for r in dlq.iter().skip(1) {
        assert_eq!(r[1].as_deref(), Some(topic.as_str()));
        let msg = r[3].as_deref().unwrap_or("");
        assert!(msg.contains(';'), "error says what to do: {msg}");
    }
    // raw bytes are kept exactly
    let lake = cfg.lake.open().expect("lake");
    let t = lake.open("_dlq", None).await.expect("dlq table");
    let ctx2 = datafusion::prelude::SessionContext::new();
    t.update_datafusion_session(&ctx2.state()).expect("session");
    ctx2.register_table("d", t.table_provider().await.expect("provider"))
        .expect("register");
    let batches = cormorant::query::run_sql(&ctx2, "SELECT value FROM d ORDER BY \"offset\"")
        .await
        .expect("q")
        .remove(0);
    let mut values = Vec::new();
    for b in &batches {
        // DataFusion may hand binary back as a view type
        let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Binary).expect("cast");
        let col = col
            .as_any()
            .downcast_ref::<arrow::array::BinaryArray>()
            .expect("binary");
        values.extend(col.iter().map(|v| v.map(<[u8]>::to_vec)));
    }
    assert_eq!(values, sent.iter().map(|(_, b)| Some(b.clone())).collect::<Vec<_>>());

    // Re-reading from scratch under the same group/lake adds no duplicate dead letters.
    let again = run_until_caught_up(&cfg).await;
    assert_eq!(again.commits, 0);
    let ctx = cormorant::query::session(&cfg).await.expect("session");
    let n = batches_as_pg(
        &cormorant::query::run_sql(&ctx, "SELECT count(*) FROM _dlq")
            .await
            .expect("q")
            .remove(0),
    );
    assert_eq!(n[1][0].as_deref(), Some("5"));
}

/// A new schema version a table cannot take (decimal `balance` turned into text) goes to the
/// dead-letter table with the reason; the table and the other records are untouched.
#[tokio::test(flavor = "multi_thread")]
async fn incompatible_schema_goes_to_the_dead_letter_table() {
    let loaded = load_prefix(&unique("incompat")).await;
    let fx = fixture();
    let topic = format!("{}dbz.public.customers", loaded.prefix);
    let (v1_id, _, v1_schema) = fx
        .schemas
        .iter()
        .find(|(_, subject, _)| subject == "dbz.public.customers-value")
        .expect("customers value schema");
    let mut schema: serde_json::Value = serde_json::from_str(v1_schema).expect("schema json");
    let balance = schema["fields"][0]["type"][1]["fields"]
        .as_array_mut()
        .expect("Value fields")
        .iter_mut()
        .find(|f| f["name"] == "balance")
        .expect("balance");
    balance["type"] = serde_json::json!("string");
    // a subject of its own: the registry's compatibility check would (rightly) refuse it
    let settings = schema_registry_converter::async_impl::schema_registry::SrSettings::new(registry());
    let bad_id = schema_registry_converter::async_impl::schema_registry::post_schema(
        &settings,
        format!("{}incompatible-value", loaded.prefix),
        schema_registry_converter::schema_registry_common::SuppliedSchema::new(
            None,
            schema_registry_converter::schema_registry_common::SchemaType::Avro,
            schema.to_string(),
        ),
    )
    .await
    .expect("register")
    .id;
    let good: Vec<_> = fx
        .events
        .iter()
        .filter(|e| e.topic == "dbz.public.customers")
        .take(40)
        .collect();
    let reframe = |b: &[u8], id: Option<u32>| -> Vec<u8> {
        let (fid, payload) = connectors::frame::split(b).expect("frame");
        connectors::frame::frame(id.unwrap_or(loaded.ids[&fid]), payload)
    };
    let producer = cormorant::fixture::producer(&brokers()).expect("producer");
    for (i, e) in good.iter().enumerate() {
        let k = reframe(e.key.as_deref().expect("key"), None);
        // record 30 arrives with the incompatible schema id (same bytes: text and bytes share a layout)
        let id = (i == 30).then_some(bad_id);
        let v = reframe(e.value.as_deref().expect("value"), id);
        producer
            .send(
                FutureRecord::to(&topic).partition(0).key(&k).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
    }
    let _ = v1_id;
    let cfg = config(
        &loaded.prefix,
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Mor,
        "incompat",
    );
    let stats = run_until_caught_up(&cfg).await;
    assert_eq!(stats.dead_letters, 1);
    let ctx = cormorant::query::session(&cfg).await.expect("session");
    let dlq = batches_as_pg(
        &cormorant::query::run_sql(&ctx, "SELECT error_kind, error FROM _dlq")
            .await
            .expect("q")
            .remove(0),
    );
    assert_eq!(dlq[1][0].as_deref(), Some("incompatible_schema"));
    assert!(
        dlq[1][1].as_deref().unwrap_or("").contains("balance"),
        "{:?}",
        dlq[1][1]
    );
    let n = batches_as_pg(
        &cormorant::query::run_sql(&ctx, "SELECT count(*) FROM customers")
            .await
            .expect("q")
            .remove(0),
    );
    assert_eq!(n[1][0].as_deref(), Some("39"));
}
