//! Views kept by the worker: the real fixture through the real broker and registry, the worker
//! killed with SIGKILL mid-stream and restarted; afterwards every view, read with
//! `cormorant sql --format csv` as a user would, prints the same text as the batch query over
//! its table, and `cormorant view rebuild` finds nothing to change.

use std::path::Path;
use std::time::{Duration, Instant};

use cormorant::views::ViewConfig;
use tables::{DeleteMode, WriteMode};

use crate::support::*;

const VIEWS: [(&str, &str, usize); 3] = [
    (
        "orders_per_day",
        "SELECT window_start, window_end, count(*) AS orders, sum(quantity) AS units, max(price) AS top_price \
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

fn sql_csv(config: &Path, sql: &str) -> String {
    let out = cormorant_cmd(config, &["sql", "--format", "csv", "-c", sql])
        .output()
        .expect("cormorant sql");
    assert!(
        out.status.success(),
        "cormorant sql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

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
    cfg.kafka.batch_max_records = 400;
    cfg.kafka.batch_linger_ms = 50;
    cfg.views = VIEWS
        .iter()
        .map(|(name, sql, _)| ViewConfig {
            name: name.to_string(),
            sql: sql.to_string(),
            ..Default::default()
        })
        .collect();
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
    let deadline = Instant::now() + Duration::from_secs(120);
    while lake
        .open("orders_per_day", None)
        .await
        .ok()
        .and_then(|t| t.version())
        .unwrap_or(0)
        < 2
    {
        assert!(Instant::now() < deadline, "no view commits in 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("kill -9");
    first.wait().expect("reaped");

    let log = dir.join("second.log");
    let mut second = spawn_worker(&path, &log, &["run", "--until-caught-up"], "info");
    let status = wait_exit(&mut second, Duration::from_secs(300), "the restarted worker", &log);
    assert!(status.success(), "restarted worker exits 0");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("view updated"), "the worker logs its view steps:\n{text}");

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
}
