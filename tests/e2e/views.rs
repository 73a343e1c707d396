//! Views kept by the worker: the real fixture through the real broker and registry, the worker
//! killed with SIGKILL mid-stream and restarted; afterwards every view, read with
//! `cormorant sql --format csv` as a user would, prints the same text as the batch query over
//! its table, and `cormorant view rebuild` finds nothing to change. `orders_per_day` (count,
//! sum, avg) is kept by arithmetic, the others by recomputing the touched windows.

use std::time::{Duration, Instant};

use cormorant::views::ViewConfig;
use tables::{DeleteMode, WriteMode};

use crate::support::*;

const VIEWS: [(&str, &str, usize); 3] = [
    (
        "orders_per_day",
        "SELECT window_start, window_end, count(*) AS orders, sum(quantity) AS units, avg(quantity) AS mean_units \
         FROM tumble('orders', 'created_at', INTERVAL '1 day') GROUP BY window_start, window_end",
        2,
    ),
    (
        "tiers_sliding",
        "SELECT window_start, window_end, loyalty_tier, count(*) AS customers, avg(balance) AS mean_balance, \
         min(balance) AS low FROM hop('customers', 'created_at', INTERVAL '7 days', INTERVAL '30 days') \
         WHERE is_active GROUP BY 1, 2, 3",
        3,
    ),
    (
        "order_sessions",
        "SELECT window_start, window_end, customer_id, count(*) AS lines, sum(quantity) AS units \
         FROM session('orders', 'created_at', INTERVAL '1 hour', 'customer_id') GROUP BY 1, 2, 3",
        3,
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn views_survive_kill_9_and_equal_the_batch_query() {
    let loaded = full_fixture().await;
    let mut cfg = config(
        &loaded.prefix,
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Mor,
        "views",
    );
    cfg.kafka.batch_max_records = 150;
    cfg.kafka.batch_linger_ms = 50;
    cfg.views = VIEWS
        .iter()
        .map(|(name, sql, _)| ViewConfig {
            name: name.to_string(),
            sql: sql.to_string(),
            ..Default::default()
        })
        .collect();
    let sink_topic = format!("{}views.orders_per_day", loaded.prefix);
    cfg.views[0].sink_topic = Some(sink_topic.clone());
    let path = write_config(&cfg, "views-cfg");
    let dir = path.parent().expect("config dir");

    // before the first commit the view is not there, and the user is told what to expect
    let out = cormorant_cmd(&path, &["sql", "-c", "SELECT * FROM orders_per_day"])
        .output()
        .expect("cormorant sql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a query of a view not made yet succeeded");
    assert!(
        stderr.contains("there is no table orders_per_day in the lake")
            && stderr.contains("a [[views]] view after its table's"),
        "{stderr}"
    );

    let mut first = spawn_worker(&path, &dir.join("first.log"), &["run"], "info");
    let lake = cfg.lake.open().expect("lake");
    // Killed at its first view commit: where the stream then is depends on the machine (a
    // fast worker may have written every source commit before the view's first step, which
    // then covers them all and has nothing more to do), so only the first commit is awaited.
    let deadline = Instant::now() + Duration::from_secs(120);
    while lake
        .open("orders_per_day", None)
        .await
        .ok()
        .and_then(|t| t.version())
        .unwrap_or(0)
        < 1
    {
        if Instant::now() > deadline {
            let _ = first.kill();
            let log = std::fs::read_to_string(dir.join("first.log")).unwrap_or_default();
            panic!("no view commit in 120 s; the worker's log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("kill -9");
    first.wait().expect("reaped");

    let log = dir.join("second.log");
    let mut second = spawn_worker(&path, &log, &["run", "--until-caught-up"], "info");
    let status = wait_exit(&mut second, Duration::from_secs(300), "the restarted worker", &log);
    assert!(status.success(), "restarted worker exits 0");
    // (the first worker may have stepped every view before it was killed)
    let text = std::fs::read_to_string(dir.join("first.log")).unwrap_or_default()
        + &std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("view updated"),
        "the workers log their view steps:\n{text}"
    );
    assert!(!text.contains("could not be updated"), "no view step failed:\n{text}");

    for (name, sql, keys) in VIEWS {
        let order = (1..=keys).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        let batch = sql_csv(&path, &format!("SELECT * FROM ({sql}) ORDER BY {order}"));
        let header = batch.lines().next().expect("header").to_string();
        let cols: Vec<String> = header.split(',').map(|c| format!("\"{c}\"")).collect();
        let stored = sql_csv(
            &path,
            &format!("SELECT {} FROM {name} ORDER BY {order}", cols.join(", ")),
        );
        assert!(batch.lines().count() > 10, "view {name} has rows:\n{batch}");
        assert_eq!(stored, batch, "view {name} equals its batch query");

        let out = cormorant_cmd(&path, &["view", "rebuild", name])
            .output()
            .expect("rebuild");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "rebuild {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("0 rows upserted, 0 deleted"),
            "rebuild of an up-to-date view changes nothing: {said}"
        );
    }
    assert_no_duplicate_keys(&cfg).await;

    // the sink topic, folded by key as a compacted topic or a KTable would, is the view
    let folded = fold_sink(&sink_topic).await;
    let view = sql_csv(
        &path,
        "SELECT to_unixtime(window_start) AS s, orders, units FROM orders_per_day ORDER BY s",
    );
    let mut lines: Vec<String> = folded.into_values().flatten().collect();
    lines.sort_by_key(|l| l.split(',').next().and_then(|s| s.parse::<i64>().ok()));
    assert_eq!(
        format!("s,orders,units\n{}\n", lines.join("\n")),
        view,
        "the sink topic folded by key equals the view"
    );
}

/// Every record of `topic` (one partition), folded by key: the last value of each key as
/// "window start seconds,orders,units", `None` after a tombstone.
async fn fold_sink(topic: &str) -> std::collections::HashMap<Vec<u8>, Option<String>> {
    use apache_avro::types::Value;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use schema_registry_converter::async_impl::easy_avro::EasyAvroDecoder;
    use schema_registry_converter::async_impl::schema_registry::SrSettings;

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("sink-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    // (a topic made moments ago may not be in every broker's metadata yet)
    let started = Instant::now();
    let high = loop {
        match consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
            Ok((_, high)) => break high,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("sink topic {topic} not readable yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the sink topic {topic} exists: {e}"),
        }
    };
    assert!(high > 0, "the sink topic has records");
    let decoder = EasyAvroDecoder::new(SrSettings::new(registry()));
    let mut folded = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while next < high {
        assert!(Instant::now() < deadline, "read {next} of {high} sink records in 60 s");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.expect("sink record");
        next = m.offset() + 1;
        let key = m.key().expect("keyed").to_vec();
        let Some(payload) = m.payload() else {
            folded.insert(key, None);
            continue;
        };
        let value = decoder
            .decode(Some(payload))
            .await
            .expect("Avro in the wire format")
            .value;
        let Value::Record(fields) = value else {
            panic!("a record: {value:?}")
        };
        // the view keeps count/sum/avg by arithmetic with state columns; the sink sends its rows
        assert!(
            !fields.iter().any(|(n, _)| n.starts_with("__")),
            "no state column in a sink record: {fields:?}"
        );
        let field = |name: &str| match fields.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
            Some(Value::Union(_, v)) => match v.as_ref() {
                Value::TimestampMicros(t) => (t / 1_000_000).to_string(),
                Value::Long(n) => n.to_string(),
                other => panic!("{name}: {other:?}"),
            },
            other => panic!("{name}: {other:?}"),
        };
        folded.insert(
            key,
            Some(format!(
                "{},{},{}",
                field("window_start"),
                field("orders"),
                field("units")
            )),
        );
    }
    folded
}
