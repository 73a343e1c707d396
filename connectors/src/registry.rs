//! Schema Registry client side: schemas by id, parsed into decoding plans and cached.
//!
//! Invariant: a schema id, once resolved, is never fetched again (ids are immutable in every
//! Confluent-compatible registry), so a registry outage does not stop decoding of known ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id};

use crate::avro::Plan;
use crate::error::ConnectorError;

/// How to reach the registry.
#[derive(Clone, Debug, Default)]
pub struct RegistrySettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
}

/// Schemas by id, cached for the life of the process.
pub struct SchemaCache {
    settings: SrSettings,
    plans: Mutex<HashMap<u32, Arc<Plan>>>,
    /// Attempts for a transient registry failure before giving up on this call.
    attempts: u32,
}

impl SchemaCache {
    pub fn new(cfg: &RegistrySettings) -> Result<Self, ConnectorError> {
        let mut builder = SrSettings::new_builder(cfg.url.trim_end_matches('/').to_string());
        if let Some(user) = &cfg.username {
            builder.set_basic_authorization(user, cfg.password.as_deref());
        }
        if let Some(token) = &cfg.bearer_token {
            builder.set_token_authorization(token);
        }
        builder.set_timeout(Duration::from_secs(10));
        let settings = builder
            .build()
            .map_err(|e| ConnectorError::RegistryUnavailable(format!("cannot build client for {}: {e}", cfg.url)))?;
        Ok(Self {
            settings,
            plans: Mutex::new(HashMap::new()),
            attempts: 5,
        })
    }

    /// Adds a schema without asking the registry (tests, tools).
    pub fn insert(&self, id: u32, schema: &str) -> Result<Arc<Plan>, ConnectorError> {
        let plan = Arc::new(Plan::parse(schema)?);
        if let Ok(mut m) = self.plans.lock() {
            m.insert(id, plan.clone());
        }
        Ok(plan)
    }

    /// The plan of schema `id` if it is cached (never asks the registry).
    pub fn get(&self, id: u32) -> Option<Arc<Plan>> {
        self.plans.lock().ok()?.get(&id).cloned()
    }

    /// The plan of schema `id`: from the cache, else from the registry with retries.
    pub async fn plan(&self, id: u32) -> Result<Arc<Plan>, ConnectorError> {
        if let Some(p) = self.get(id) {
            return Ok(p);
        }
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match get_schema_by_id(id, &self.settings).await {
                Ok(s) => return self.insert(id, &s.schema),
                Err(e) => {
                    let text = format!("{e}");
                    // A 404 (error code 40403) is permanent: the id does not exist.
                    if text.contains("40403") || text.contains("404") {
                        return Err(ConnectorError::UnknownSchema(id));
                    }
                    if attempt >= self.attempts {
                        return Err(ConnectorError::RegistryUnavailable(text));
                    }
                    tracing::warn!(schema_id = id, error = %text, "schema registry call failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
