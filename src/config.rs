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
    pub tables: Vec<TableConfig>,
}

/// `[compaction]`: inline compaction between batches and the thresholds `cormorant compact`
/// uses too.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct CompactionConfig {
    /// Compact inline, between batches, every `every_commits` commits of a table.
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

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    /// Passed to librdkafka as is.
    pub properties: HashMap<String, String>,
    /// Maps every matching topic to a table named by the first capture group.
    pub topic_pattern: Option<String>,
    /// Most records applied in one commit.
    pub batch_max_records: usize,
    /// How long a batch waits for more records after its first one.
    pub batch_linger_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "cormorant".into(),
            properties: HashMap::new(),
            topic_pattern: None,
            batch_max_records: 20_000,
            batch_linger_ms: 500,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RegistryConfig {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081".into(),
            username: None,
            password: None,
            bearer_token: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LakeConfig {
    pub uri: String,
    /// Passed to object_store / deltalake (AWS_ENDPOINT_URL, …).
    pub storage_options: HashMap<String, String>,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            uri: "./lake".into(),
            storage_options: HashMap::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TableConfig {
    pub name: String,
    pub topic: String,
    #[serde(default)]
    pub mode: WriteMode,
    #[serde(default)]
    pub deletes: DeleteMode,
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
        for t in &cfg.tables {
            if t.name.starts_with('_') {
                anyhow::bail!(
                    "table name {:?} is reserved (names starting with '_' are Cormorant's own)",
                    t.name
                );
            }
        }
        Ok(cfg)
    }

    /// The table fed by `topic`, if any.
    pub fn table_for_topic(&self, topic: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.topic == topic)
    }
}
