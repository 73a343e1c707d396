//! No secret in logs, errors, `status` or metrics (issue 10): a worker whose config holds
//! planted credentials — the registry's password, the S3 secret key, a SASL password — streams
//! the fixture into S3 with every log at trace level, serves its metrics, then `status` runs
//! and a command fails on purpose; none of their output may hold a planted value.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tables::{DeleteMode, WriteMode};

use crate::support::*;

const SECRETS: [&str; 3] = ["planted-registry-pw", "planted-s3-secret", "planted-sasl-pw"];

fn cormorant(config: &std::path::Path, args: &[&str], log: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cormorant"))
        .args(["--config", config.to_str().expect("utf-8 path")])
        .args(args)
        .env("CORMORANT_LOG", log)
        .stdin(Stdio::null())
        .output()
        .expect("cormorant runs")
}

fn assert_clean(what: &str, out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(text);
        for secret in SECRETS {
            let at = text
                .find(secret)
                .map(|i| &text[i.saturating_sub(300)..(i + 100).min(text.len())]);
            assert!(at.is_none(), "{what} printed {secret}: …{}…", at.unwrap_or_default());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_secrets_never_reach_logs_status_errors_or_metrics() {
    let loaded = full_fixture().await;
    let mut cfg = config(&loaded.prefix, Storage::S3, DeleteMode::Hard, WriteMode::Mor, "secrets");
    // moto takes any key pair; the registry here ignores credentials it does not require
    cfg.lake
        .storage_options
        .insert("AWS_SECRET_ACCESS_KEY".into(), "planted-s3-secret".into());
    cfg.registry.username = Some("cormorant".into());
    cfg.registry.password = Some("planted-registry-pw".into());
    // a SASL password librdkafka holds but never uses on a plaintext connection
    cfg.kafka
        .properties
        .insert("sasl.password".into(), "planted-sasl-pw".into());
    let address = free_address();
    cfg.metrics.address = Some(address.clone());
    let path = write_config(&cfg, "secrets-cfg");

    let done = Arc::new(AtomicBool::new(false));
    let scraping = done.clone();
    let scrape = std::thread::spawn(move || {
        let mut last = String::new();
        while !scraping.load(Ordering::Relaxed) {
            if let (200, text) = http_get(&address, "/metrics") {
                last = text;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        last
    });
    let run = cormorant(&path, &["run", "--until-caught-up"], "trace,cormorant=trace");
    assert!(
        run.status.success(),
        "run: {}",
        String::from_utf8_lossy(&run.stderr).lines().last().unwrap_or("")
    );
    assert!(run.stderr.len() > 100_000, "trace-level logs were written");
    assert_clean("run at trace level", &run);
    done.store(true, Ordering::Relaxed);
    let metrics = scrape.join().expect("scraper");
    assert!(
        metrics.contains("cormorant_"),
        "the metrics endpoint answered while the worker ran"
    );
    for secret in SECRETS {
        assert!(!metrics.contains(secret), "/metrics holds {secret}");
    }

    assert_clean("status", &cormorant(&path, &["status"], "trace"));
    let failed = cormorant(&path, &["sql", "-c", "SELECT * FROM no_such_table"], "trace");
    assert!(!failed.status.success(), "a query of a missing table fails");
    assert_clean("a failing query", &failed);
    assert_point(&cfg, "final", None, false).await;
}
