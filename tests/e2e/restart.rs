//! A worker killed with SIGKILL between commits resumes exactly where the tables say: the
//! final state equals the fixture and no key appears twice.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tables::{DeleteMode, WriteMode};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn killed_worker_resumes_exactly() {
    let loaded = full_fixture().await;
    let mut cfg = config(
        &loaded.prefix,
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Cow,
        "restart",
    );
    cfg.kafka.batch_max_records = 400;
    cfg.kafka.batch_linger_ms = 50;
    let path = write_config(&cfg, "restart-cfg");
    let bin = env!("CARGO_BIN_EXE_cormorant");

    // First run: kill it once the orders table has a few commits.
    let mut child = std::process::Command::new(bin)
        .args(["--config", path.to_str().expect("utf-8 path"), "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let lake = tables::Lake::new(&cfg.lake.uri, cfg.lake.storage_options.clone()).expect("lake");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(t) = lake.open("orders", None).await
            && t.version().unwrap_or(0) >= 4
        {
            break;
        }
        assert!(Instant::now() < deadline, "worker made no progress in 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let mid = lake
        .open("orders", None)
        .await
        .expect("open")
        .version()
        .expect("version");
    let rows_mid = table_as_pg(&cfg, "orders", "order_id, line_no", None).await.len();
    assert!(rows_mid > 1, "the first run committed rows before it was killed");

    // Second run resumes from the tables' txn offsets.
    let status = std::process::Command::new(bin)
        .args([
            "--config",
            path.to_str().expect("utf-8 path"),
            "run",
            "--until-caught-up",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("second run");
    assert!(status.success(), "second run exits 0");
    assert!(
        lake.open("orders", None)
            .await
            .expect("open")
            .version()
            .expect("version")
            > mid
    );
    assert_point(&cfg, "final", None, false).await;
    for (table, key) in TABLES {
        let ctx = cormorant::query::session(&cfg).await.expect("session");
        let sql = format!("SELECT count(*) AS dup FROM (SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1)");
        let batches = cormorant::query::run_sql(&ctx, &sql).await.expect("query").remove(0);
        let rows = batches_as_pg(&batches);
        assert_eq!(rows[1][0].as_deref(), Some("0"), "{table}: a key appears twice");
    }
}
