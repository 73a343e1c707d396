//! The worker on a store that fails (issue 10): with `CORMORANT_FAULTS` set, the lake's
//! object store fails a share of its calls — before doing anything, or after a write was done
//! (the ambiguous S3 timeout) — and delays others. The worker retries through writers reloaded
//! from the table, or exits and is restarted (a supervisor); either way the tables end equal
//! to PostgreSQL's dump, through both readers, with no key twice.

use std::process::Stdio;
use std::time::Instant;

use tables::{DeleteMode, WriteMode};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_store_loses_and_duplicates_nothing() {
    let loaded = full_fixture().await;
    let mut cfg = config(
        &loaded.prefix,
        Storage::Local,
        DeleteMode::Soft,
        WriteMode::Mor,
        "faults",
    );
    cfg.kafka.batch_max_records = 300;
    cfg.kafka.batch_linger_ms = 50;
    busy_maintenance(&mut cfg, 3, 5);
    let path = write_config(&cfg, "faults-cfg");
    let started = Instant::now();
    let (mut runs, mut retries) = (0, 0);
    loop {
        runs += 1;
        assert!(runs <= 30, "30 runs under faults did not catch up");
        let log = path.with_file_name(format!("worker-{runs}.log"));
        let status = cormorant_cmd(&path, &["run", "--until-caught-up"])
            .env(
                "CORMORANT_FAULTS",
                format!("error=0.02,ambiguous=0.5,slow=0.05,latency_ms=200,seed={runs}"),
            )
            .env("CORMORANT_LOG", "info,buoyant_kernel=warn,deltalake_core=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .status()
            .expect("worker runs");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // deltalake catches the panic of object_store's `BufWriter::abort` after a failed
        // upload (deltalake-core datafile/writer.rs); any other panic is a bug
        let panics = text
            .lines()
            .filter(|l| l.contains("panicked at") && !l.contains("object_store") && !l.contains("buffered.rs"));
        assert_eq!(panics.count(), 0, "the worker panicked under faults:\n{text}");
        assert_ne!(status.code(), Some(101), "the worker panicked under faults:\n{text}");
        // every injected fault that reached the worker's code is logged with its origin
        retries += text.lines().filter(|l| l.contains("fault-injection")).count();
        if status.success() {
            break;
        }
        eprintln!("run {runs} exited with {status} under faults; restarting");
    }
    eprintln!(
        "caught up under faults in {:.1?}: {runs} run(s), {retries} injected faults logged",
        started.elapsed()
    );
    assert!(retries > 0, "no fault reached the worker");
    assert_point(&cfg, "final", None, true).await;
    assert_no_duplicate_keys(&cfg).await;
}
