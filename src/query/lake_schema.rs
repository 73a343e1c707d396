//! The lake as a DataFusion schema that stays fresh: every planning asks it for the tables it
//! names, and it answers with a provider at the table's latest version — so a long-lived
//! session (`cormorant serve`) sees each new commit from its next query on, and a table the
//! worker creates after the server started is queryable without a restart.
//!
//! Invariants:
//! - a table is checked for new commits at most once per lookup (one log listing), and only
//!   reloaded incrementally when there is one;
//! - time-travel aliases (`name@v3`, `name@t…`, registered by
//!   [`super::prepare_time_travel`]) are fixed snapshots, kept in a bounded map, never listed;
//! - nothing else can be registered or dropped: the schema is read-only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use deltalake::DeltaTable;
use tables::Lake;

/// Time-travel aliases kept (oldest dropped first); a dropped one is re-registered on use.
const MAX_ALIASES: usize = 256;

/// Time-travel aliases and the order they came in (for the bound).
type Aliases = (HashMap<String, Arc<dyn TableProvider>>, VecDeque<String>);

/// A table at the version last seen, with its provider.
struct Loaded {
    table: DeltaTable,
    provider: Arc<dyn TableProvider>,
}

/// See the module docs.
pub struct LakeSchema {
    lake: Lake,
    /// Shares the sessions' runtime: where the tables' object stores are registered for
    /// their scans.
    registry: SessionState,
    tables: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Loaded>>>>>,
    aliases: RwLock<Aliases>,
    names: RwLock<Vec<String>>,
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema").field("root", &self.lake.root()).finish()
    }
}

fn df_err(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(e.to_string().into())
}

impl LakeSchema {
    pub async fn new(lake: Lake, runtime: Arc<RuntimeEnv>) -> anyhow::Result<Self> {
        let names = lake.list_tables().await?;
        Ok(Self {
            lake,
            registry: SessionStateBuilder::new().with_runtime_env(runtime).build(),
            tables: Mutex::new(HashMap::new()),
            aliases: RwLock::new((HashMap::new(), VecDeque::new())),
            names: RwLock::new(names),
        })
    }

    /// Lists the lake's tables again (for `table_names`, which cannot wait for storage).
    pub async fn refresh_names(&self) -> anyhow::Result<()> {
        let names = self.lake.list_tables().await?;
        if let Ok(mut n) = self.names.write() {
            *n = names;
        }
        Ok(())
    }

    fn slot(&self, name: &str) -> Arc<tokio::sync::Mutex<Option<Loaded>>> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.entry(name.to_string()).or_default().clone()
    }

    /// The provider of `name` at its latest version.
    async fn latest(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let slot = self.slot(name);
        let mut loaded = slot.lock().await;
        match loaded.as_mut() {
            Some(l) => {
                let newest = l.table.get_latest_version().await.map_err(df_err)?;
                if Some(newest) > l.table.version() {
                    l.table.update_incremental(None).await.map_err(df_err)?;
                    l.provider = l.table.table_provider().await.map_err(df_err)?;
                }
                Ok(Some(l.provider.clone()))
            }
            None => {
                // only names the lake lists: a lookup of anything else (a table function's
                // name, a typo) must not probe storage paths
                if !self.table_exist(name) {
                    self.refresh_names().await.map_err(df_err)?;
                    if !self.table_exist(name) {
                        return Ok(None);
                    }
                }
                let table = match self.lake.open(name, None).await {
                    Ok(t) => t,
                    Err(tables::TableError::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(df_err(e)),
                };
                table.update_datafusion_session(&self.registry).map_err(df_err)?;
                let provider = table.table_provider().await.map_err(df_err)?;
                *loaded = Some(Loaded {
                    table,
                    provider: provider.clone(),
                });
                Ok(Some(provider))
            }
        }
    }
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.names.read().map(|n| n.clone()).unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.contains('@') {
            return Ok(self.aliases.read().ok().and_then(|a| a.0.get(name).cloned()));
        }
        self.latest(name).await
    }

    async fn table_type(&self, _name: &str) -> Result<Option<TableType>> {
        Ok(Some(TableType::Base))
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> Result<Option<Arc<dyn TableProvider>>> {
        if !name.contains('@') {
            return Err(DataFusionError::Plan(format!(
                "the lake is read-only here: cannot create {name}; Cormorant's worker writes the tables"
            )));
        }
        let mut aliases = self.aliases.write().map_err(df_err)?;
        let (map, order) = &mut *aliases;
        if map.insert(name.clone(), table).is_none() {
            order.push_back(name);
            while order.len() > MAX_ALIASES {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Ok(None)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "the lake is read-only here: cannot drop {name}"
        )))
    }

    fn table_exist(&self, name: &str) -> bool {
        if name.contains('@') {
            return self.aliases.read().is_ok_and(|a| a.0.contains_key(name));
        }
        self.names.read().is_ok_and(|n| n.iter().any(|t| t == name))
    }
}
