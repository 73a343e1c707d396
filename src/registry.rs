//! A Confluent-compatible Schema Registry (Avro only) for tests and the quickstart.
//!
//! Owns the subject → version → global-id bookkeeping, compatibility enforcement and the
//! optional JSON data file. It speaks the part of Confluent's REST API that Kafka Connect,
//! Debezium and `schema_registry_converter` use, with the same status and `error_code`s.
//!
//! Invariants:
//! - Global ids are handed out 1, 2, 3, … in registration order and never reused: schemas
//!   are never removed, only subject versions are, so old Kafka messages stay decodable.
//! - A schema's identity is its parsed Avro form (defaults and logical types included).
//!   Identical schemas share one global id across subjects, as in Confluent.
//! - Version numbers within a subject only grow, also across a subject delete.
//! - Every mutation is applied to a copy, persisted (temp file + rename), and only then
//!   published, so memory never runs ahead of the file and a crash leaves the old or new file.
//!
//! Not supported: schema types other than AVRO, schema references, modes, contexts.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Level {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_ascii_uppercase())).ok()
    }

    fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::String(name)) => name,
            _ => format!("{self:?}"),
        }
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// The existing versions a new schema must be compatible with.
    fn against(self, versions: &[VersionEntry]) -> &[VersionEntry] {
        match self {
            Self::None => &[],
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive => versions,
            _ => &versions[versions.len().saturating_sub(1)..],
        }
    }
}

/// Checks `new` against one existing schema in the direction(s) `level` demands.
fn compatible(level: Level, new: &Schema, old: &Schema) -> Result<(), String> {
    if level.backward() {
        reads(old, new).map_err(|e| format!("the new schema cannot read data written with an existing one: {e}"))?;
    }
    if level.forward() {
        reads(new, old).map_err(|e| format!("an existing schema cannot read data written with the new one: {e}"))?;
    }
    Ok(())
}

fn reads(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        // Partial means some written values (a union branch, an enum symbol) cannot be
        // resolved; Confluent (Avro's Java checker) rejects those, so we do too.
        Ok(Compatibility::Partial) => Err("only some written values can be read".into()),
        // apache-avro's messages embed multi-line Debug dumps of schemas.
        Err(e) => Err(e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct VersionEntry {
    version: u32,
    id: u32,
}

/// A subject's live versions and settings. It outlives a delete (with no versions) so that
/// its config survives and version numbers keep growing, like Confluent's soft delete.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SubjectState {
    #[serde(default)]
    versions: Vec<VersionEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compatibility: Option<Level>,
    #[serde(default)]
    last_version: u32,
}

/// A registered schema. Only the submitted text is persisted; the rest is derived on load
/// so files survive changes to how schemas are parsed.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    schema: String,
    /// Identity for dedup. Avro's Parsing Canonical Form is not used because it drops
    /// defaults and logical types, which would merge schemas that differ in exactly the
    /// ways evolution cares about (e.g. Debezium's decimal vs plain bytes).
    #[serde(skip)]
    key: String,
    #[serde(skip, default = "null_schema")]
    parsed: Schema,
}

fn null_schema() -> Schema {
    Schema::Null
}

impl Entry {
    fn parse(schema: String) -> Result<Self, ApiError> {
        let invalid = |e: &dyn std::fmt::Display| ApiError::invalid_schema(format!("Invalid schema: {e}"));
        let parsed = Schema::parse_str(&schema).map_err(|e| invalid(&e))?;
        let key = serde_json::to_string(&parsed).map_err(|e| invalid(&e))?;
        Ok(Self { schema, key, parsed })
    }
}

/// The whole registry; also the data file's format.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Store {
    #[serde(default)]
    compatibility: Level,
    #[serde(default)]
    schemas: BTreeMap<u32, Entry>,
    #[serde(default)]
    subjects: BTreeMap<String, SubjectState>,
}

impl Store {
    fn load(bytes: &[u8]) -> anyhow::Result<Self> {
        let mut store: Store = serde_json::from_slice(bytes)?;
        for (id, entry) in store.schemas.iter_mut() {
            *entry = Entry::parse(std::mem::take(&mut entry.schema))
                .map_err(|e| anyhow::anyhow!("schema id {id}: {}", e.2))?;
        }
        for (subject, state) in &store.subjects {
            for v in &state.versions {
                anyhow::ensure!(
                    store.schemas.contains_key(&v.id),
                    "subject {subject:?} version {} points at unknown schema id {}",
                    v.version,
                    v.id
                );
            }
        }
        Ok(store)
    }

    fn entry(&self, id: u32) -> Result<&Entry, ApiError> {
        self.schemas.get(&id).ok_or_else(ApiError::schema_not_found)
    }

    /// Live versions of a subject; a subject without any is "not found", as in Confluent.
    fn versions(&self, subject: &str) -> Result<&[VersionEntry], ApiError> {
        match self.subjects.get(subject) {
            Some(s) if !s.versions.is_empty() => Ok(&s.versions),
            _ => Err(ApiError::subject_not_found(subject)),
        }
    }

    /// The version of `subject` holding a schema identical to `entry`.
    fn version_of(&self, subject: &str, entry: &Entry) -> Option<VersionEntry> {
        let versions = self.subjects.get(subject)?.versions.iter();
        versions
            .filter(|v| self.schemas.get(&v.id).is_some_and(|e| e.key == entry.key))
            .copied()
            .next()
    }

    fn find_version(&self, subject: &str, version: &str) -> Result<VersionEntry, ApiError> {
        let wanted = match version {
            "latest" | "-1" => None,
            v => Some(v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                let msg = format!("The specified version '{v}' is not a valid version id");
                ApiError(StatusCode::UNPROCESSABLE_ENTITY, 42202, msg)
            })?),
        };
        let versions = self.versions(subject)?;
        let found = match wanted {
            None => versions.last(),
            Some(n) => versions.iter().find(|v| v.version == n),
        };
        found
            .copied()
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, 40402, "Version not found.".into()))
    }

    fn level(&self, subject: &str) -> Level {
        self.subjects
            .get(subject)
            .and_then(|s| s.compatibility)
            .unwrap_or(self.compatibility)
    }

    fn version_json(&self, subject: &str, v: VersionEntry) -> Result<Value, ApiError> {
        let schema = &self.entry(v.id)?.schema;
        Ok(json!({"subject": subject, "version": v.version, "id": v.id, "schema": schema}))
    }
}

/// Handle to the registry's state; clones share it.
#[derive(Clone)]
pub struct RegistryState {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    store: Store,
    data: Option<PathBuf>,
}

impl RegistryState {
    /// Loads `data` if it exists; with `None` the registry lives in memory only.
    pub fn new(data: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut store = Store::default();
        if let Some(path) = &data {
            if path.exists() {
                let bytes = std::fs::read(path).with_context(|| format!("reading registry data {}", path.display()))?;
                store = Store::load(&bytes).with_context(|| format!("loading registry data {}", path.display()))?;
            } else if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // Fail at startup rather than on the first registration.
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner { store, data })),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, ApiError> {
        self.inner.lock().map_err(|_| ApiError::internal("state lock poisoned"))
    }

    fn read<T>(&self, f: impl FnOnce(&Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        f(&self.lock()?.store)
    }

    /// Runs `f` on a copy; if it reports a change, persists the copy and then publishes it.
    /// The file is written under the lock so writes cannot land out of order; it is small
    /// and this registry is not meant for high write rates.
    fn write<T>(&self, f: impl FnOnce(&mut Store) -> Result<(T, bool), ApiError>) -> Result<T, ApiError> {
        let mut inner = self.lock()?;
        let mut next = inner.store.clone();
        let (out, changed) = f(&mut next)?;
        if changed {
            if let Some(path) = &inner.data {
                persist(path, &next).map_err(|e| {
                    tracing::error!(path = %path.display(), error = %e, "persisting schema registry failed");
                    ApiError::internal("Error in the backend data store")
                })?;
            }
            inner.store = next;
        }
        Ok(out)
    }
}

fn persist(path: &FsPath, store: &Store) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(store)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// A Confluent-style error: HTTP status, `error_code`, message.
#[derive(Debug)]
struct ApiError(StatusCode, u32, String);

impl ApiError {
    fn subject_not_found(subject: &str) -> Self {
        let msg = format!("Subject '{subject}' not found.");
        Self(StatusCode::NOT_FOUND, 40401, msg)
    }
    fn schema_not_found() -> Self {
        Self(StatusCode::NOT_FOUND, 40403, "Schema not found".into())
    }
    fn invalid_schema(message: String) -> Self {
        Self(StatusCode::UNPROCESSABLE_ENTITY, 42201, message)
    }
    fn internal(message: &str) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, 50001, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.1, "message": self.2}).to_string();
        (self.0, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(body: Value) -> ApiResult {
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response())
}

/// Parses a body whatever its content type: Confluent clients send
/// `application/vnd.schemaregistry.v1+json`, which axum's `Json` rejects, and `curl -d`
/// sends a form content type.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, 400, format!("Bad request: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: Option<String>,
    schema_type: Option<String>,
    references: Option<Vec<Value>>,
}

impl SchemaRequest {
    fn into_entry(self) -> Result<Entry, ApiError> {
        if let Some(t) = self.schema_type.as_deref().filter(|t| *t != "AVRO") {
            let msg = format!("Invalid schema: schema type {t} is not supported, only AVRO");
            return Err(ApiError::invalid_schema(msg));
        }
        // Debezium and Kafka Connect never send references; refusing them beats
        // silently registering a schema whose named types cannot be resolved.
        if self.references.is_some_and(|r| !r.is_empty()) {
            let msg = "Invalid schema: schema references are not supported".to_string();
            return Err(ApiError::invalid_schema(msg));
        }
        let schema = self.schema.filter(|s| !s.trim().is_empty());
        Entry::parse(schema.ok_or_else(|| ApiError::invalid_schema("Empty schema".into()))?)
    }
}

fn parse_level(body: &Bytes) -> Result<Level, ApiError> {
    #[derive(Deserialize)]
    struct ConfigRequest {
        compatibility: Option<String>,
        #[serde(rename = "compatibilityLevel")]
        compatibility_level: Option<String>,
    }
    let req: ConfigRequest = parse_body(body)?;
    req.compatibility
        .or(req.compatibility_level)
        .as_deref()
        .and_then(Level::parse)
        .ok_or_else(|| {
            let msg = "Invalid compatibility level".to_string();
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, 42203, msg)
        })
}

/// Confluent answers `GET /config` with `compatibilityLevel` but `PUT /config` with
/// `compatibility`; sending both keeps clients of either shape happy.
fn level_reply(level: Level) -> ApiResult {
    ok(json!({"compatibility": level.name(), "compatibilityLevel": level.name()}))
}

/// The registry's HTTP API over `state`.
pub fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/config", get(get_global_config).put(put_global_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found".into()) })
        .with_state(state)
}

type St = State<RegistryState>;

async fn schema_by_id(State(st): St, Path(id): Path<String>) -> ApiResult {
    let id = id.parse().map_err(|_| ApiError::schema_not_found())?;
    st.read(|store| ok(json!({ "schema": store.entry(id)?.schema })))
}

async fn schema_versions(State(st): St, Path(id): Path<String>) -> ApiResult {
    let id = id.parse().map_err(|_| ApiError::schema_not_found())?;
    st.read(|store| {
        store.entry(id)?;
        let uses: Vec<Value> = (store.subjects.iter())
            .flat_map(|(name, s)| s.versions.iter().map(move |v| (name, v)))
            .filter(|(_, v)| v.id == id)
            .map(|(name, v)| json!({"subject": name, "version": v.version}))
            .collect();
        ok(json!(uses))
    })
}

async fn list_subjects(State(st): St) -> ApiResult {
    st.read(|store| {
        let live = store.subjects.iter().filter(|(_, s)| !s.versions.is_empty());
        ok(json!(live.map(|(name, _)| name).collect::<Vec<_>>()))
    })
}

async fn list_versions(State(st): St, Path(subject): Path<String>) -> ApiResult {
    st.read(|store| {
        let versions = store.versions(&subject)?.iter().map(|v| v.version);
        ok(json!(versions.collect::<Vec<_>>()))
    })
}

async fn get_version(State(st): St, Path((subject, version)): Path<(String, String)>) -> ApiResult {
    st.read(|store| {
        let v = store.find_version(&subject, &version)?;
        ok(store.version_json(&subject, v)?)
    })
}

async fn register(State(st): St, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let entry = parse_body::<SchemaRequest>(&body)?.into_entry()?;
    let id = st.write(|store| {
        // Re-registering is how clients look up ids, so it must not trip compatibility.
        if let Some(v) = store.version_of(&subject, &entry) {
            return Ok((v.id, false));
        }
        let level = store.level(&subject);
        let versions = store.subjects.get(&subject).map(|s| s.versions.as_slice());
        for v in level.against(versions.unwrap_or_default()) {
            compatible(level, &entry.parsed, &store.entry(v.id)?.parsed).map_err(|e| {
                let msg = format!(
                    "Schema being registered is incompatible with an earlier schema for \
                     subject \"{subject}\" (version {}, {}): {e}",
                    v.version,
                    level.name()
                );
                ApiError(StatusCode::CONFLICT, 409, msg)
            })?;
        }
        let existing = store.schemas.iter().find(|(_, e)| e.key == entry.key);
        let id = match existing.map(|(id, _)| *id) {
            Some(id) => id,
            None => {
                let id = store.schemas.keys().next_back().map_or(1, |last| last + 1);
                store.schemas.insert(id, entry);
                id
            }
        };
        let state = store.subjects.entry(subject.clone()).or_default();
        state.last_version += 1;
        let version = state.last_version;
        state.versions.push(VersionEntry { version, id });
        tracing::debug!(%subject, version, id, "registered schema");
        Ok((id, true))
    })?;
    ok(json!({ "id": id }))
}

async fn lookup(State(st): St, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let entry = parse_body::<SchemaRequest>(&body)?.into_entry()?;
    st.read(|store| {
        store.versions(&subject)?;
        let v = store
            .version_of(&subject, &entry)
            .ok_or_else(ApiError::schema_not_found)?;
        ok(store.version_json(&subject, v)?)
    })
}

async fn delete_subject(State(st): St, Path(subject): Path<String>) -> ApiResult {
    let deleted = st.write(|store| {
        let deleted: Vec<u32> = store.versions(&subject)?.iter().map(|v| v.version).collect();
        if let Some(state) = store.subjects.get_mut(&subject) {
            state.versions.clear();
        }
        Ok((deleted, true))
    })?;
    ok(json!(deleted))
}

async fn get_global_config(State(st): St) -> ApiResult {
    st.read(|store| ok(json!({ "compatibilityLevel": store.compatibility.name() })))
}

async fn put_global_config(State(st): St, body: Bytes) -> ApiResult {
    let level = parse_level(&body)?;
    st.write(|store| {
        let changed = store.compatibility != level;
        store.compatibility = level;
        Ok(((), changed))
    })?;
    level_reply(level)
}

async fn get_subject_config(
    State(st): St,
    Path(subject): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let default_to_global = q.get("defaultToGlobal").is_some_and(|v| v == "true");
    st.read(|store| {
        let level = match store.subjects.get(&subject).and_then(|s| s.compatibility) {
            Some(level) => level,
            None if default_to_global => store.compatibility,
            None => {
                let msg = format!("Subject '{subject}' does not have subject-level compatibility configured");
                return Err(ApiError(StatusCode::NOT_FOUND, 40408, msg));
            }
        };
        ok(json!({ "compatibilityLevel": level.name() }))
    })
}

async fn put_subject_config(State(st): St, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let level = parse_level(&body)?;
    st.write(|store| {
        let state = store.subjects.entry(subject.clone()).or_default();
        let changed = state.compatibility != Some(level);
        state.compatibility = Some(level);
        Ok(((), changed))
    })?;
    level_reply(level)
}

async fn check(State(st): St, Path((subject, version)): Path<(String, String)>, body: Bytes) -> ApiResult {
    let entry = parse_body::<SchemaRequest>(&body)?.into_entry()?;
    st.read(|store| {
        let v = store.find_version(&subject, &version)?;
        let old = &store.entry(v.id)?.parsed;
        let is_compatible = compatible(store.level(&subject), &entry.parsed, old).is_ok();
        ok(json!({ "is_compatible": is_compatible }))
    })
}

/// Serves the registry on `addr` until ctrl-c, persisting to `data` if given.
pub async fn serve(addr: SocketAddr, data: Option<PathBuf>) -> anyhow::Result<()> {
    let state = RegistryState::new(data)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding schema registry to {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "schema registry listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                // Without a signal handler, keep serving rather than exit at once.
                tracing::warn!(error = %e, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("schema registry server")
}

/// Starts the registry on an ephemeral 127.0.0.1 port, for tests.
pub async fn spawn(data: Option<PathBuf>) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let state = RegistryState::new(data)?;
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "schema registry stopped");
        }
    });
    Ok((addr, handle))
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
