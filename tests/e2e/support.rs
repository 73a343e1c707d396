//! Shared pieces of the end-to-end tests: service addresses, unique names, the fixture
//! loaded once per test binary, running the worker, and comparing tables with PostgreSQL's
//! CSV dumps cell by cell.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arrow::array::{Array, RecordBatch};
use cormorant::config::{Config, TableConfig};
use cormorant::fixture::Fixture;
use tables::{DeleteMode, WriteMode};
use tokio::sync::OnceCell;

pub fn brokers() -> String {
    std::env::var("CORMORANT_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn registry() -> String {
    std::env::var("CORMORANT_TEST_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

pub fn s3_endpoint() -> String {
    std::env::var("CORMORANT_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debezium")
}

/// A name no other test (or earlier run against the same broker) uses: Tansu cannot delete
/// topics safely, so every test writes to topics of its own.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{tag}-{}-{nanos}", std::process::id())
}

pub fn fixture() -> &'static Fixture {
    static FX: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FX.get_or_init(|| Fixture::load(&fixture_dir()).expect("fixture loads"))
}

/// Topic prefix and registry ids of a fixture loaded into the broker.
#[derive(Clone)]
pub struct Loaded {
    pub prefix: String,
    pub ids: HashMap<u32, u32>,
}

/// The whole fixture, loaded once and shared by the tests that only read it.
pub async fn full_fixture() -> &'static Loaded {
    static FULL: OnceCell<Loaded> = OnceCell::const_new();
    FULL.get_or_init(|| async {
        let loaded = load_prefix(&unique("full")).await;
        let fx = fixture();
        fx.produce(&brokers(), &loaded.prefix, &loaded.ids, 0..fx.events.len())
            .await
            .expect("produce fixture");
        loaded
    })
    .await
}

/// Registers the schemas and creates the topics under a fresh prefix (no events yet).
pub async fn load_prefix(tag: &str) -> Loaded {
    let prefix = format!("{tag}.");
    let fx = fixture();
    let ids = fx
        .register(&registry(), &prefix)
        .await
        .expect("schema registry reachable (scripts/services up)");
    fx.create_topics(&brokers(), &prefix, 1)
        .await
        .expect("broker reachable (scripts/services up)");
    Loaded { prefix, ids }
}

pub const TABLES: [(&str, &str); 3] = [("customers", "id"), ("orders", "order_id, line_no"), ("products", "id")];

/// Where a test's lake lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Local,
    S3,
}

/// A worker config over the fixture's three tables.
pub fn config(prefix: &str, storage: Storage, deletes: DeleteMode, mode: WriteMode, lake_tag: &str) -> Config {
    test_logs();
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers();
    cfg.kafka.group_id = unique(&format!("g-{lake_tag}"));
    cfg.registry.url = registry();
    // Tansu 0.6, the test broker, never assigns partitions to a static member that rejoins
    // after kill -9 (seen: nothing for 12 minutes) and loops in rebalances with several static
    // members; tests on librdkafka's mock cluster set their own (README "Running in production")
    cfg.kafka.instance_id = "none".into();
    match storage {
        Storage::Local => {
            let dir = std::env::temp_dir().join("cormorant-tests").join(unique(lake_tag));
            cfg.lake.uri = dir.to_string_lossy().into_owned();
        }
        Storage::S3 => {
            cfg.lake.uri = format!("s3://lake/{}", unique(lake_tag));
            cfg.lake.storage_options = s3_options();
        }
    }
    cfg.tables = TABLES
        .iter()
        .map(|(name, _)| TableConfig {
            name: name.to_string(),
            topic: format!("{prefix}dbz.public.{name}"),
            mode,
            deletes,
            ..Default::default()
        })
        .collect();
    cfg
}

pub fn s3_options() -> HashMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", s3_endpoint()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Runs the worker in-process until it has caught up.
/// The worker's logs on stderr when `CORMORANT_TEST_LOG` holds a filter (e.g. `info` or
/// `tables=debug`), to see what an in-process worker did in a failing test.
pub fn test_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("CORMORANT_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

pub async fn run_until_caught_up(cfg: &Config) -> cormorant::worker::RunStats {
    cormorant::worker::run(cfg, true, Arc::new(AtomicBool::new(false)))
        .await
        .expect("worker run")
}

/// Parses PostgreSQL's CSV (NULL = empty unquoted field, "" = empty string).
pub fn parse_pg_csv(text: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted = true;
            }
            ',' => {
                row.push(if field.is_empty() && !quoted {
                    None
                } else {
                    Some(std::mem::take(&mut field))
                });
                quoted = false;
            }
            '\n' => {
                row.push(if field.is_empty() && !quoted {
                    None
                } else {
                    Some(std::mem::take(&mut field))
                });
                quoted = false;
                rows.push(std::mem::take(&mut row));
            }
            '\r' => {}
            _ => field.push(c),
        }
    }
    if !row.is_empty() || !field.is_empty() {
        row.push(if field.is_empty() && !quoted { None } else { Some(field) });
        rows.push(row);
    }
    rows
}

/// One Arrow cell in PostgreSQL's CSV text form (the product's own rendering).
pub fn pg_text(col: &dyn Array, row: usize) -> Option<String> {
    cormorant::query::output::pg_text(col, row).expect("renderable cell")
}

/// Live rows of `table` (soft-deleted excluded) ordered by its key, as PG text, with a header.
pub async fn table_as_pg(cfg: &Config, table: &str, key: &str, version: Option<u64>) -> Vec<Vec<Option<String>>> {
    let lake = cfg.lake.open().expect("lake");
    let t = lake.open(table, version).await.expect("table opens");
    let ctx = datafusion::prelude::SessionContext::new();
    t.update_datafusion_session(&ctx.state()).expect("session");
    ctx.register_table("t", t.table_provider().await.expect("provider"))
        .expect("register");
    let batches = cormorant::query::run_sql(&ctx, &format!("SELECT * FROM t WHERE NOT __deleted ORDER BY {key}"))
        .await
        .expect("query")
        .remove(0);
    batches_as_pg(&batches)
}

/// Source columns only (metadata columns dropped), header first.
pub fn batches_as_pg(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    let Some(first) = batches.first() else { return out };
    let cols: Vec<usize> = (0..first.num_columns())
        .filter(|i| !first.schema().field(*i).name().starts_with("__"))
        .collect();
    out.push(
        cols.iter()
            .map(|i| Some(first.schema().field(*i).name().clone()))
            .collect(),
    );
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(cols.iter().map(|c| pg_text(b.column(*c).as_ref(), r)).collect());
        }
    }
    out
}

/// Asserts that `table` equals the expected CSV cell by cell (columns matched by name, so a
/// column the table has and the dump lacks — `loyalty_tier` before point3 — must be all null).
pub async fn assert_table_matches(cfg: &Config, table: &str, key: &str, expected_csv: &Path, version: Option<u64>) {
    let actual = table_as_pg(cfg, table, key, version).await;
    assert_rows_match(&format!("{table} (DataFusion)"), &actual, expected_csv);
}

/// Partition columns the partitioned tests derive, with their source: `date(created_at) AS
/// created_day` (not in the PostgreSQL dumps).
pub const DERIVED_COLUMNS: [(&str, &str); 1] = [("created_day", "created_at")];

/// Asserts that `actual` (header first, PG text cells) equals the expected CSV.
pub fn assert_rows_match(label: &str, actual: &[Vec<Option<String>>], expected_csv: &Path) {
    let expected = parse_pg_csv(&std::fs::read_to_string(expected_csv).expect("expected csv"));
    let exp_header: Vec<String> = expected[0].iter().map(|h| h.clone().unwrap_or_default()).collect();
    let act_header: Vec<String> = actual
        .first()
        .map(|h| h.iter().map(|x| x.clone().unwrap_or_default()).collect())
        .unwrap_or_default();
    for extra in act_header.iter().filter(|h| !exp_header.contains(h)) {
        let i = act_header.iter().position(|h| h == extra).unwrap_or(0);
        if let Some((_, source)) = DERIVED_COLUMNS.iter().find(|(d, _)| d == extra) {
            // a partition column derived as date(source): the date of the source's text
            let s = act_header
                .iter()
                .position(|h| h == source)
                .expect("derived column's source");
            for r in actual.iter().skip(1) {
                let date = r[s].as_deref().map(|t| t.get(..10).unwrap_or(t).to_string());
                assert_eq!(r[i], date, "{label}: {extra} is not the date of {source} in {r:?}");
            }
            continue;
        }
        assert!(
            actual.iter().skip(1).all(|r| r[i].is_none()),
            "{label}: column {extra} is not in {} yet holds values",
            expected_csv.display()
        );
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{label} at {}: {} rows, expected {}",
        expected_csv.display(),
        actual.len().saturating_sub(1),
        expected.len() - 1
    );
    let mut mismatches = Vec::new();
    for (ri, (erow, arow)) in expected.iter().zip(actual).enumerate().skip(1) {
        for (ci, name) in exp_header.iter().enumerate() {
            let ai = act_header
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("{label}: column {name} missing"));
            if erow[ci] != arow[ai] {
                mismatches.push(format!(
                    "row {ri} ({:?}) column {name}: expected {:?}, got {:?}",
                    erow[0], erow[ci], arow[ai]
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{label} differs from {} in {} cells, e.g.:\n{}",
        expected_csv.display(),
        mismatches.len(),
        mismatches.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The Python interpreter with the `deltalake` package (scripts/python-reader installs it).
fn python() -> String {
    std::env::var("CORMORANT_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/cormorant/delta-py/bin/python")
    })
}

/// Reads `table` with the Python `deltalake` package (an independent reader) and asserts it
/// equals the expected CSV.
pub fn assert_python_reads(cfg: &Config, table: &str, key: &str, expected_csv: &Path, version: Option<u64>) {
    let lake = cfg.lake.open().expect("lake");
    let url = lake.table_url(table).expect("url");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_delta.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(&script).arg(url.as_str()).arg(key);
    if let Some(v) = version {
        cmd.arg(v.to_string());
    }
    let options: serde_json::Map<String, serde_json::Value> = cfg
        .lake
        .storage_options
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    cmd.env(
        "CORMORANT_STORAGE_OPTIONS",
        serde_json::Value::Object(options).to_string(),
    );
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {} (install it with scripts/python-reader): {e}", python()));
    assert!(
        out.status.success(),
        "python deltalake failed on {table}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = parse_pg_csv(&String::from_utf8_lossy(&out.stdout));
    assert_rows_match(&format!("{table} (Python deltalake)"), &rows, expected_csv);
}

/// The fixture's marked points: (name, events before the marker).
pub fn markers() -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(fixture_dir().join("expected/markers.json")).expect("markers.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("markers json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name").to_string(),
                m["events_in_stream_before_marker"].as_u64().expect("count") as usize,
            )
        })
        .collect()
}

/// Asserts all three tables equal the dump of `point` (read with DataFusion, and also with
/// the Python `deltalake` reader when `python` is set).
pub async fn assert_point(cfg: &Config, point: &str, versions: Option<&HashMap<String, u64>>, python: bool) {
    for (table, key) in TABLES {
        let csv = fixture_dir().join(format!("expected/{point}/{table}.csv"));
        let version = versions.and_then(|v| v.get(table).copied());
        assert_table_matches(cfg, table, key, &csv, version).await;
        if python {
            assert_python_reads(cfg, table, key, &csv, version);
        }
    }
}

/// Writes `cfg` as a config file in a fresh directory (for worker processes).
pub fn write_config(cfg: &Config, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("cormorant-tests").join(unique(tag));
    std::fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join("cormorant.toml");
    std::fs::write(&path, toml::to_string(cfg).expect("config serializes")).expect("write config");
    path
}

/// The fixture in topics of `partitions` partitions at `brokers`, every record on its key's
/// partition.
/// `mock`: librdkafka's mock cluster, whose topics are created through it (it has no admin API).
pub async fn keyed_fixture(
    brokers: &str,
    mock: Option<&rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    tag: &str,
    partitions: i32,
) -> Loaded {
    let prefix = format!("{}.", unique(tag));
    let fx = fixture();
    let ids = fx
        .register(&registry(), &prefix)
        .await
        .expect("schema registry reachable (scripts/services up)");
    match mock {
        Some(m) => {
            for t in fx.topics() {
                m.create_topic(&format!("{prefix}{t}"), partitions, 1)
                    .expect("mock topic");
            }
        }
        None => fx
            .create_topics(brokers, &prefix, partitions)
            .await
            .expect("broker reachable (scripts/services up)"),
    }
    fx.produce_by_key(brokers, &prefix, &ids, 0..fx.events.len())
        .await
        .expect("produce fixture");
    Loaded { prefix, ids }
}

/// Waits (at most 120 s) until `table` reaches `version`.
pub async fn wait_for_version(lake: &tables::Lake, table: &str, version: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while lake.open(table, None).await.ok().and_then(|t| t.version()).unwrap_or(0) < version {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A free local address (for a metrics endpoint).
pub fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Status code and body of a plain HTTP GET (0 when nothing answers).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}

/// Compaction and checkpoints as often as they come (chaos and fault runs): a compaction job
/// every `every_commits` commits of a table, of any file with a deleted row.
pub fn busy_maintenance(cfg: &mut Config, every_commits: u64, checkpoint_interval: u64) {
    cfg.compaction.every_commits = every_commits;
    cfg.compaction.options = tables::CompactionOptions {
        deleted_fraction: 0.01,
        small_file_bytes: 64 * 1024 * 1024,
        ..tables::CompactionOptions::default()
    };
    cfg.maintenance.checkpoint_interval = checkpoint_interval;
}

/// No key of the fixture's tables appears twice.
pub async fn assert_no_duplicate_keys(cfg: &Config) {
    let ctx = cormorant::query::session(cfg).await.expect("session");
    for (table, key) in TABLES {
        let sql = format!("SELECT count(*) AS dup FROM (SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1)");
        let batches = cormorant::query::run_sql(&ctx, &sql).await.expect("query").remove(0);
        assert_eq!(
            batches_as_pg(&batches)[1][0].as_deref(),
            Some("0"),
            "{table}: a key appears twice"
        );
    }
}

/// `cormorant --config <config> <args…>`, the binary under test (`CORMORANT_TEST_BIN` names
/// another one).
pub fn cormorant_cmd(config: &Path, args: &[&str]) -> std::process::Command {
    let bin = std::env::var_os("CORMORANT_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_cormorant").into());
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--config", config.to_str().expect("utf-8 path")]).args(args);
    cmd
}

/// `cormorant sql --format csv -c sql`'s output, as a user reads it; fails on an error.
pub fn sql_csv(config: &Path, sql: &str) -> String {
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

/// Starts the worker binary as its own process (so it can be killed with SIGKILL), its log at
/// `filter` written to `log`. `CORMORANT_TEST_BIN` names another binary (scripts/chaos runs a
/// copy, so a long run is not switched to a binary rebuilt meanwhile).
pub fn spawn_worker(config: &Path, log: &Path, args: &[&str], filter: &str) -> std::process::Child {
    spawn_worker_with(config, log, args, filter, &[])
}

/// [`spawn_worker`] with more environment variables (test hooks).
pub fn spawn_worker_with(
    config: &Path,
    log: &Path,
    args: &[&str],
    filter: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    cormorant_cmd(config, args)
        .env("CORMORANT_LOG", filter)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn worker")
}

/// Waits for `child` to exit within `limit` and returns its status; kills it and fails with
/// `what` and its log otherwise.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
    log: &Path,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{what} did not finish in {limit:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
