//! `cormorant.toml` (DESIGN.md, "Config file"), layered: built-in defaults < file <
//! environment (`CORMORANT_KAFKA__BROKERS`, `CORMORANT_LAKE__URI`, …; `__` separates levels).

use std::collections::HashMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use tables::{CompactionOptions, DeleteMode, WriteMode};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub lake: LakeConfig,
    pub compaction: CompactionConfig,
    pub metrics: MetricsConfig,
    pub maintenance: MaintenanceConfig,
    pub serve: ServeConfig,
    pub tables: Vec<TableConfig>,
    /// `[[views]]`: windowed aggregations kept up to date after each commit of their table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<crate::views::ViewConfig>,
    /// `kafka.topic_pattern` compiled once (it is matched for every record).
    #[serde(skip)]
    compiled_pattern: std::sync::OnceLock<Option<regex::Regex>>,
}

/// `[serve]`: `cormorant serve`, the lake over the PostgreSQL wire protocol.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ServeConfig {
    /// Address to listen on, e.g. "127.0.0.1:5433" (`--listen` overrides it).
    pub listen: String,
    /// The one user clients log in as.
    pub user: String,
    /// Required; checked with SCRAM-SHA-256 (`CORMORANT_SERVE__PASSWORD` keeps it out of files).
    pub password: Option<String>,
    /// PEM certificate chain; with `tls_key`, TLS is required of every client.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5433".into(),
            user: "cormorant".into(),
            password: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &redact::option(&self.password))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

/// `[metrics]`: where `cormorant run` serves Prometheus metrics (`/metrics`); off when unset.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// e.g. "127.0.0.1:9464"
    pub address: Option<String>,
    /// No progress for this long while records wait is a stall: logged, in
    /// `cormorant_stalled_seconds`, and `/readyz` answers 503.
    pub stall_seconds: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: None,
            stall_seconds: 30,
        }
    }
}

/// `[compaction]`: compaction beside ingest while `cormorant run` runs, and the thresholds
/// `cormorant compact` uses too.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct CompactionConfig {
    /// Compact while ingesting: every `every_commits` commits of a table a compaction job of
    /// the worker's partitions starts on its own task; its result commits between batches.
    pub inline: bool,
    pub every_commits: u64,
    #[serde(flatten)]
    pub options: CompactionOptions,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            inline: true,
            every_commits: 20,
            options: CompactionOptions::default(),
        }
    }
}

/// `[maintenance]`: what keeps a table's log and storage bounded over months of streaming.
/// Durations are written like "30days", "168h" or "90s".
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    /// A Delta checkpoint every this many commits (`delta.checkpointInterval`).
    pub checkpoint_interval: u64,
    /// How far back the log (and so time travel) reaches (`delta.logRetentionDuration`).
    pub log_retention: String,
    /// How long removed data and deletion-vector files stay for time travel and concurrent
    /// readers (`delta.deletedFileRetentionDuration`); vacuum's default retention.
    pub deleted_file_retention: String,
    /// Vacuum every table this often while `cormorant run` runs; "off" never.
    pub vacuum_every: String,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: 100,
            log_retention: "30days".into(),
            deleted_file_retention: "7days".into(),
            vacuum_every: "1h".into(),
        }
    }
}

/// A duration setting, e.g. "30days", "168h", "90s".
pub fn parse_duration(key: &str, value: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(value).map_err(|e| {
        anyhow::anyhow!("{key} = {value:?} is not a duration ({e}); write it like \"30days\", \"168h\" or \"90s\"")
    })
}

impl MaintenanceConfig {
    fn validate(&self) -> anyhow::Result<()> {
        parse_duration("maintenance.log_retention", &self.log_retention)?;
        parse_duration("maintenance.deleted_file_retention", &self.deleted_file_retention)?;
        self.vacuum_interval()?;
        Ok(())
    }

    /// `vacuum_every` as a duration, `None` when off.
    pub fn vacuum_interval(&self) -> anyhow::Result<Option<std::time::Duration>> {
        match self.vacuum_every.trim() {
            "off" | "0" | "" => Ok(None),
            v => parse_duration("maintenance.vacuum_every", v).map(Some),
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    /// Passed to librdkafka as is.
    pub properties: HashMap<String, String>,
    /// Maps every matching topic to a table named by the first capture group.
    pub topic_pattern: Option<String>,
    /// Most records applied in one commit. 200,000 rather than 50,000 (measured 2026-12-07,
    /// `benches/results/stream.md`): a commit pays per source partition (a file, its
    /// statistics, a deletion vector, index patches), so a worker that keeps up with a fast
    /// stream commits fewer, fuller files — 7-14 commits instead of 22-25 per 1M events at 48
    /// partitions, 15-26% more events per CPU-second (24% with compaction off in both arms),
    /// peak memory within the runs' spread.
    /// `batch_max_bytes` stays the memory bound (it cuts batches of large records first); at
    /// low rates `batch_linger_ms` cuts batches long before either.
    pub batch_max_records: usize,
    /// Most bytes (record keys + values) in one batch.
    pub batch_max_bytes: usize,
    /// How long a batch waits for more records after its first one.
    pub batch_linger_ms: u64,
    /// Static membership id: "auto" (host name + a slot, stable across restarts), "none", or
    /// an explicit id unique among the group's live workers.
    pub instance_id: String,
    /// How long the group waits for a silent worker before reassigning its partitions.
    pub session_timeout_ms: u32,
    /// Longest pause between two polls before the group considers the worker stuck.
    pub max_poll_interval_ms: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "cormorant".into(),
            properties: HashMap::new(),
            topic_pattern: None,
            batch_max_records: 200_000,
            batch_max_bytes: 32 * 1024 * 1024,
            batch_linger_ms: 500,
            instance_id: "auto".into(),
            session_timeout_ms: 6_000,
            max_poll_interval_ms: 300_000,
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RegistryConfig {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    /// PEM file of a CA to trust for an `https://` registry behind a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081".into(),
            username: None,
            password: None,
            bearer_token: None,
            ca_file: None,
        }
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct LakeConfig {
    pub uri: String,
    /// Passed to object_store / deltalake (AWS_ENDPOINT_URL, …).
    pub storage_options: HashMap<String, String>,
    /// PEM file of a CA to trust for an `https://` S3 endpoint behind a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// Memory per written table for the rows of the files this worker wrote last, read instead
    /// of storage for soft deletes, TOAST and copy-on-write (default 64 MiB).
    pub recent_rows_mib: Option<u64>,
}

/// Names the fault plan of an end-to-end fault run (`error=0.05,ambiguous=0.5,…`, see
/// `tables::fault::FaultRates::parse`); never set in production.
pub const FAULTS_ENV: &str = "CORMORANT_FAULTS";

impl LakeConfig {
    /// The lake this section names, through a fault-injecting store when `CORMORANT_FAULTS`
    /// is set.
    pub fn open(&self) -> anyhow::Result<tables::Lake> {
        let lake = tables::Lake::new(&self.uri, self.store_options()?)?;
        let Ok(spec) = std::env::var(FAULTS_ENV) else {
            return Ok(lake);
        };
        let (rates, seed) = tables::fault::FaultRates::parse(&spec)
            .map_err(|e| anyhow::anyhow!("{FAULTS_ENV}: {e}; unset it outside fault-injection runs"))?;
        tracing::warn!(?rates, seed, "{FAULTS_ENV} is set: the lake's store injects faults");
        Ok(lake.with_faults(tables::fault::Faults::new(seed, rates))?)
    }

    /// The storage options with `ca_file` as deltalake's `certificate_path` (the S3 client's
    /// extra root certificate), checked here so a bad path is named by its config key.
    fn store_options(&self) -> anyhow::Result<HashMap<String, String>> {
        let mut options = self.storage_options.clone();
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read lake.ca_file {}: {e}; point it at a PEM file",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
                "lake.ca_file {} holds no PEM certificate; point it at the CA's certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            );
            options.insert("certificate_path".into(), path.display().to_string());
        }
        Ok(options)
    }
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            uri: "./lake".into(),
            storage_options: HashMap::new(),
            ca_file: None,
            recent_rows_mib: None,
        }
    }
}

// Debug by hand for the three sections that hold credentials: a config printed in a log, an
// error or a panic must not carry them (`redact`).
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("properties", &redact::map(&self.properties))
            .field("topic_pattern", &self.topic_pattern)
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("batch_linger_ms", &self.batch_linger_ms)
            .field("instance_id", &self.instance_id)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("max_poll_interval_ms", &self.max_poll_interval_ms)
            .finish()
    }
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &redact::option(&self.password))
            .field("bearer_token", &redact::option(&self.bearer_token))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl std::fmt::Debug for LakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeConfig")
            .field("uri", &self.uri)
            .field("storage_options", &redact::map(&self.storage_options))
            .field("ca_file", &self.ca_file)
            .field("recent_rows_mib", &self.recent_rows_mib)
            .finish()
    }
}

/// What a printed config shows of a credential: that it is set, never its value.
mod redact {
    use std::collections::{BTreeMap, HashMap};

    const HIDDEN: &str = "<redacted>";

    /// Words that mark a librdkafka property or storage option as a credential
    /// (`sasl.password`, `ssl.key.pem`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …). Too
    /// broad on purpose: hiding a key's path costs nothing, printing a secret does.
    const WORDS: [&str; 6] = ["password", "secret", "token", "key", "credential", "jaas"];

    pub fn map(map: &HashMap<String, String>) -> BTreeMap<&str, &str> {
        map.iter()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let hide = WORDS.iter().any(|w| lower.contains(w));
                (k.as_str(), if hide { HIDDEN } else { v.as_str() })
            })
            .collect()
    }

    pub fn option(value: &Option<String>) -> Option<&'static str> {
        value.as_ref().map(|_| HIDDEN)
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TableConfig {
    pub name: String,
    /// The topic; may be left out for a table that `kafka.topic_pattern` names (the entry then
    /// only overrides its mode and deletes).
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub mode: WriteMode,
    #[serde(default)]
    pub deletes: DeleteMode,
    /// Look every key up in every partition's file group: for a topic whose partition count
    /// changed before Cormorant recorded it (a change while running is detected by itself).
    #[serde(default)]
    pub keys_move_partitions: bool,
    /// Overrides `maintenance.log_retention` for this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention: Option<String>,
    /// Overrides `maintenance.checkpoint_interval` for this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u64>,
    /// What a gap left by the topic's retention does (records deleted before the table saw
    /// them): stop the worker (default) or skip them, logged and counted.
    #[serde(default)]
    pub on_data_loss: OnDataLoss,
    /// Delta partition columns: `"col"`, `"date(col)"` (column `col_date`) or
    /// `"date(col) AS name"`. Fixed when the table is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
}

impl TableConfig {
    /// The parsed `partition_by` (checked when the config loads).
    pub fn partitioning(&self) -> tables::partitioning::Partitioning {
        tables::partitioning::Partitioning::parse(&self.partition_by).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDataLoss {
    #[default]
    Stop,
    Skip,
}

impl Config {
    /// Loads `path` (if it exists, or fails if it was named explicitly and is missing) with
    /// environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) if !p.exists() => anyhow::bail!(
                "config file {} not found; pass an existing file with --config or create cormorant.toml",
                p.display()
            ),
            Some(p) => fig = fig.merge(Toml::file_exact(p)),
            None if Path::new("cormorant.toml").exists() => fig = fig.merge(Toml::file_exact("cormorant.toml")),
            None => {}
        }
        let fig = fig.merge(Env::prefixed("CORMORANT_").split("__"));
        let cfg: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}; see the README's config section"))?;
        if let Some(p) = &cfg.kafka.topic_pattern {
            let re = regex::Regex::new(p).map_err(|e| anyhow::anyhow!("kafka.topic_pattern {p:?}: {e}"))?;
            anyhow::ensure!(
                p.starts_with('^') && re.captures_len() > 1,
                "kafka.topic_pattern {p:?} must start with '^' and have a capture group naming the table, e.g. \"^dbz\\.public\\.(.*)$\""
            );
        }
        cfg.maintenance.validate()?;
        cfg.validate_tables()?;
        crate::views::validate(&cfg)?;
        Ok(cfg)
    }

    /// Each `[[tables]]` entry names its own table and topic: one table fed by two entries (or
    /// one topic into two tables) would share one offset record and skip or double records.
    fn validate_tables(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut topics = std::collections::HashSet::new();
        for t in &self.tables {
            anyhow::ensure!(
                names.insert(t.name.as_str()),
                "table {:?} has two [[tables]] entries; keep one (one topic feeds one table)",
                t.name
            );
            anyhow::ensure!(
                t.topic.is_empty() || topics.insert(t.topic.as_str()),
                "topic {:?} is named by two [[tables]] entries; keep one (one topic feeds one table)",
                t.topic
            );
        }
        for t in &self.tables {
            if let Some(r) = &t.log_retention {
                parse_duration(&format!("log_retention of table {:?}", t.name), r)?;
            }
            anyhow::ensure!(
                !t.topic.is_empty() || self.kafka.topic_pattern.is_some(),
                "table {:?} has no topic: set topic, or kafka.topic_pattern to name tables from topics",
                t.name
            );
            if let Err(e) = tables::partitioning::Partitioning::parse(&t.partition_by) {
                anyhow::bail!("table {:?}: {e}", t.name);
            }
            if t.name.starts_with('_') {
                anyhow::bail!(
                    "table name {:?} is reserved (names starting with '_' are Cormorant's own)",
                    t.name
                );
            }
        }
        Ok(())
    }

    /// The table fed by `topic`: an explicit `[[tables]]` entry, else the first capture group
    /// of `kafka.topic_pattern` (with the mode and deletes of an entry of that name, if any).
    pub fn table_for_topic(&self, topic: &str) -> Option<TableConfig> {
        if let Some(t) = self.tables.iter().find(|t| t.topic == topic) {
            return Some(t.clone());
        }
        let pattern = self.topic_regex()?;
        let name = pattern.captures(topic)?.get(1)?.as_str().to_string();
        let base = self.tables.iter().find(|t| t.name == name && t.topic.is_empty());
        Some(TableConfig {
            name: name.clone(),
            topic: topic.to_string(),
            ..base.cloned().unwrap_or_default()
        })
    }

    /// The checkpoint interval and retentions of table `t` (`None`: the dead-letter table).
    pub fn log_policy(&self, t: Option<&TableConfig>) -> tables::maintain::LogPolicy {
        let m = &self.maintenance;
        let retention = t.and_then(|t| t.log_retention.as_deref()).unwrap_or(&m.log_retention);
        tables::maintain::LogPolicy {
            checkpoint_interval: Some(t.and_then(|t| t.checkpoint_interval).unwrap_or(m.checkpoint_interval)),
            // validated by `load`
            log_retention: humantime::parse_duration(retention).ok(),
            deleted_file_retention: humantime::parse_duration(&m.deleted_file_retention).ok(),
        }
    }

    /// `kafka.topic_pattern`, compiled (validated by [`Config::load`]).
    pub fn topic_regex(&self) -> Option<&regex::Regex> {
        self.compiled_pattern
            .get_or_init(|| {
                self.kafka
                    .topic_pattern
                    .as_deref()
                    .and_then(|p| regex::Regex::new(p).ok())
            })
            .as_ref()
    }
}

impl KafkaConfig {
    /// How the consumer cuts batches.
    pub fn limits(&self) -> connectors::kafka::BatchLimits {
        connectors::kafka::BatchLimits {
            max_records: self.batch_max_records.max(1),
            max_bytes: self.batch_max_bytes.max(1),
            linger: std::time::Duration::from_millis(self.batch_linger_ms),
        }
    }

    /// Connection settings for the connectors crate.
    pub fn settings(&self) -> connectors::kafka::KafkaSettings {
        connectors::kafka::KafkaSettings {
            brokers: self.brokers.clone(),
            group_id: self.group_id.clone(),
            properties: self.properties.clone(),
            instance_id: None, // resolved by the worker (membership::resolve)
            session_timeout_ms: self.session_timeout_ms,
            max_poll_interval_ms: self.max_poll_interval_ms,
        }
    }
}

impl RegistryConfig {
    /// Connection settings for the connectors crate.
    pub fn settings(&self) -> connectors::registry::RegistrySettings {
        connectors::registry::RegistrySettings {
            url: self.url.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            bearer_token: self.bearer_token.clone(),
            ca_file: self.ca_file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_config_holds_no_credential() {
        let mut cfg = Config::default();
        cfg.registry.password = Some("planted-registry-pw".into());
        cfg.registry.bearer_token = Some("planted-bearer".into());
        cfg.kafka
            .properties
            .insert("sasl.password".into(), "planted-sasl-pw".into());
        cfg.lake
            .storage_options
            .insert("AWS_SECRET_ACCESS_KEY".into(), "planted-aws".into());
        cfg.lake.storage_options.insert("AWS_REGION".into(), "us-east-1".into());
        let printed = format!("{cfg:?} {cfg:#?}");
        for secret in [
            "planted-registry-pw",
            "planted-bearer",
            "planted-sasl-pw",
            "planted-aws",
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        // what is not a credential stays readable
        assert!(printed.contains("us-east-1") && printed.contains("sasl.password"));
    }

    #[test]
    fn the_recent_rows_budget_reaches_every_table_writer() {
        let dir = std::env::temp_dir().join(format!("cormorant-config-recent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        let table = "[[tables]]\nname = \"a\"\ntopic = \"t1\"\n";
        std::fs::write(&path, format!("[lake]\nrecent_rows_mib = 16\n{table}")).expect("write");
        let cfg = Config::load(Some(&path)).expect("loads");
        let opts = crate::pipeline::options(&cfg, &cfg.tables[0]);
        assert_eq!(opts.recent_rows_bytes, Some(16 * 1024 * 1024));
        std::fs::write(&path, table).expect("write");
        let cfg = Config::load(Some(&path)).expect("loads");
        assert_eq!(crate::pipeline::options(&cfg, &cfg.tables[0]).recent_rows_bytes, None); // the default
    }

    #[test]
    fn one_table_or_topic_named_twice_is_refused() {
        let dir = std::env::temp_dir().join(format!("cormorant-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cases = [
            (
                "name = \"a\"\ntopic = \"t1\"",
                "name = \"a\"\ntopic = \"t2\"",
                "two [[tables]] entries",
            ),
            (
                "name = \"a\"\ntopic = \"t1\"",
                "name = \"b\"\ntopic = \"t1\"",
                "named by two",
            ),
        ];
        for (i, (first, second, expected)) in cases.iter().enumerate() {
            let path = dir.join(format!("{i}.toml"));
            std::fs::write(&path, format!("[[tables]]\n{first}\n[[tables]]\n{second}\n")).expect("write");
            let err = Config::load(Some(&path)).expect_err("accepted a duplicate").to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
