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
        reads(old, new).map_err(|e| {
            format!("the new schema cannot read data written with an existing one: {e}")
        })?;
    }
    if level.forward() {
        reads(new, old).map_err(|e| {
            format!("an existing schema cannot read data written with the new one: {e}")
        })?;
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
        Err(e) => Err(e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")),
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
        let invalid =
            |e: &dyn std::fmt::Display| ApiError::invalid_schema(format!("Invalid schema: {e}"));
        let parsed = Schema::parse_str(&schema).map_err(|e| invalid(&e))?;
        let key = serde_json::to_string(&parsed).map_err(|e| invalid(&e))?;
        Ok(Self {
            schema,
            key,
            parsed,
        })
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
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading registry data {}", path.display()))?;
                store = Store::load(&bytes)
                    .with_context(|| format!("loading registry data {}", path.display()))?;
            } else if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // Fail at startup rather than on the first registration.
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner { store, data })),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, ApiError> {
        self.inner
            .lock()
            .map_err(|_| ApiError::internal("state lock poisoned"))
    }

    fn read<T>(&self, f: impl FnOnce(&Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        f(&self.lock()?.store)
    }

    /// Runs `f` on a copy; if it reports a change, persists the copy and then publishes it.
    /// The file is written under the lock so writes cannot land out of order; it is small
    /// and this registry is not meant for high write rates.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<(T, bool), ApiError>,
    ) -> Result<T, ApiError> {
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
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, 400, format!("Bad request: {e}")))
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
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check),
        )
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
        let live = store
            .subjects
            .iter()
            .filter(|(_, s)| !s.versions.is_empty());
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
        let deleted: Vec<u32> = store
            .versions(&subject)?
            .iter()
            .map(|v| v.version)
            .collect();
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
                let msg = format!(
                    "Subject '{subject}' does not have subject-level compatibility configured"
                );
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

async fn check(
    State(st): St,
    Path((subject, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
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
pub async fn spawn(
    data: Option<PathBuf>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
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
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Talks HTTP/1.1 over a real socket, so routing, content types and framing are
    /// exercised as a client sees them.
    struct Client(SocketAddr);

    impl Client {
        async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let mut stream = tokio::net::TcpStream::connect(self.0)
                .await
                .expect("connect");
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.0,
                body.len()
            );
            stream.write_all(request.as_bytes()).await.expect("send");
            let mut raw = String::new();
            stream.read_to_string(&mut raw).await.expect("receive");
            let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
            let content_type = format!("content-type: {CONTENT_TYPE}");
            assert!(head.to_ascii_lowercase().contains(&content_type), "{head}");
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .expect("status");
            (status, serde_json::from_str(body).expect("JSON body"))
        }
        async fn get(&self, path: &str) -> (u16, Value) {
            self.call("GET", path, None).await
        }
        /// Posts `{"schema": schema}`, the body of register, lookup and compatibility.
        async fn post(&self, path: &str, schema: &str) -> (u16, Value) {
            self.call("POST", path, Some(json!({ "schema": schema })))
                .await
        }
        async fn put_level(&self, path: &str, level: &str) -> (u16, Value) {
            self.call("PUT", path, Some(json!({ "compatibility": level })))
                .await
        }
    }

    /// Status and `error_code` of an error response.
    fn code((status, body): (u16, Value)) -> (u16, u64) {
        (status, body["error_code"].as_u64().unwrap_or_default())
    }

    fn record(extra_fields: &str) -> String {
        let id = r#"{"name":"id","type":"long"}"#;
        format!(
            r#"{{"type":"record","name":"Order","namespace":"shop","fields":[{id}{extra_fields}]}}"#
        )
    }

    async fn start(data: Option<PathBuf>) -> (Client, tokio::task::JoinHandle<()>) {
        let (addr, server) = spawn(data).await.expect("spawn registry");
        (Client(addr), server)
    }

    #[tokio::test]
    async fn register_lookup_and_read_back() {
        let (c, server) = start(None).await;
        let (v1, path) = (record(""), "/subjects/orders-value/versions");
        let body = json!({"schema": v1, "schemaType": "AVRO", "references": []});
        assert_eq!(
            c.call("POST", path, Some(body)).await,
            (200, json!({"id": 1}))
        );
        // Formatting and key order do not make a new schema.
        let same = r#"{ "namespace": "shop", "name": "Order", "type": "record",
                        "fields": [ {"type": "long", "name": "id"} ] }"#;
        assert_eq!(c.post(path, same).await, (200, json!({"id": 1})));

        assert_eq!(
            c.get("/schemas/ids/1").await,
            (200, json!({ "schema": v1 }))
        );
        assert_eq!(code(c.get("/schemas/ids/7").await), (404, 40403));
        assert_eq!(c.get("/subjects").await.1, json!(["orders-value"]));
        assert_eq!(c.get(path).await.1, json!([1]));
        let expected = json!({"subject": "orders-value", "version": 1, "id": 1, "schema": v1});
        for v in ["1", "latest", "-1"] {
            assert_eq!(
                c.get(&format!("{path}/{v}")).await,
                (200, expected.clone()),
                "{v}"
            );
        }
        assert_eq!(code(c.get(&format!("{path}/2")).await), (404, 40402));
        assert_eq!(code(c.get("/subjects/nope/versions").await), (404, 40401));

        let subject = "/subjects/orders-value";
        assert_eq!(c.post(subject, same).await, (200, expected));
        assert_eq!(code(c.post(subject, r#""string""#).await), (404, 40403));
        assert_eq!(code(c.post("/subjects/nope", &v1).await), (404, 40401));
        assert_eq!(
            code(c.post(path, r#"{"type":"recrd"}"#).await),
            (422, 42201)
        );

        assert_eq!(c.call("DELETE", subject, None).await, (200, json!([1])));
        assert_eq!(c.get("/subjects").await.1, json!([]));
        // Messages already written with a deleted version must stay decodable.
        assert_eq!(c.get("/schemas/ids/1").await.0, 200);
        server.abort();
    }

    #[tokio::test]
    async fn ids_are_global_and_reused_across_subjects() {
        let (c, server) = start(None).await;
        assert_eq!(
            c.post("/subjects/a/versions", &record("")).await.1,
            json!({"id": 1})
        );
        assert_eq!(
            c.post("/subjects/b/versions", &record("")).await.1,
            json!({"id": 1})
        );
        assert_eq!(
            c.post("/subjects/c/versions", r#""string""#).await.1,
            json!({"id": 2})
        );
        // Avro's Parsing Canonical Form would merge these two; evolution cares about defaults.
        let default_1 = record(r#",{"name":"n","type":"int","default":1}"#);
        let default_2 = record(r#",{"name":"n","type":"int","default":2}"#);
        assert_eq!(
            c.post("/subjects/d/versions", &default_1).await.1,
            json!({"id": 3})
        );
        assert_eq!(
            c.post("/subjects/d/versions", &default_2).await.1,
            json!({"id": 4})
        );
        let uses = json!([{"subject": "a", "version": 1}, {"subject": "b", "version": 1}]);
        assert_eq!(c.get("/schemas/ids/1/versions").await.1, uses);
        server.abort();
    }

    #[tokio::test]
    async fn backward_compatibility_is_enforced() {
        let (c, server) = start(None).await;
        let (path, check) = (
            "/subjects/s/versions",
            "/compatibility/subjects/s/versions/latest",
        );
        assert_eq!(c.post(path, &record("")).await.1, json!({"id": 1}));

        let no_default = record(r#",{"name":"note","type":"string"}"#);
        assert_eq!(
            c.post(check, &no_default).await,
            (200, json!({"is_compatible": false}))
        );
        assert_eq!(code(c.post(path, &no_default).await), (409, 409));

        let nullable = record(r#",{"name":"note","type":["null","string"],"default":null}"#);
        assert_eq!(
            c.post(check, &nullable).await.1,
            json!({"is_compatible": true})
        );
        assert_eq!(c.post(path, &nullable).await.1, json!({"id": 2}));
        assert_eq!(c.get(path).await.1, json!([1, 2]));

        let level = |l: &str| json!({ "compatibilityLevel": l });
        assert_eq!(c.get("/config").await.1, level("BACKWARD"));
        assert_eq!(code(c.get("/config/s").await), (404, 40408));
        assert_eq!(
            c.get("/config/s?defaultToGlobal=true").await.1,
            level("BACKWARD")
        );
        assert_eq!(
            c.put_level("/config/s", "NONE").await.1["compatibility"],
            "NONE"
        );
        assert_eq!(c.post(path, &no_default).await.1, json!({"id": 3}));
        assert_eq!(
            code(c.put_level("/config", "SOMETIMES").await),
            (422, 42203)
        );
        server.abort();
    }

    #[tokio::test]
    async fn state_survives_a_restart() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("cormorant-registry-{nanos}"));
        let file = dir.join("registry.json");

        let (c, server) = start(Some(file.clone())).await;
        assert_eq!(c.post("/subjects/a/versions", &record("")).await.1["id"], 1);
        assert_eq!(
            c.post("/subjects/b/versions", r#""string""#).await.1["id"],
            2
        );
        assert_eq!(c.put_level("/config", "FULL").await.0, 200);
        assert_eq!(c.put_level("/config/a", "NONE").await.0, 200);
        assert_eq!(c.call("DELETE", "/subjects/b", None).await.1, json!([1]));
        server.abort();

        let (c, server) = start(Some(file)).await;
        assert_eq!(c.get("/subjects").await.1, json!(["a"]));
        assert_eq!(c.get("/schemas/ids/2").await.1["schema"], r#""string""#);
        assert_eq!(
            c.get("/config").await.1,
            json!({"compatibilityLevel": "FULL"})
        );
        assert_eq!(
            c.get("/config/a").await.1,
            json!({"compatibilityLevel": "NONE"})
        );
        assert_eq!(c.post("/subjects/a/versions", &record("")).await.1["id"], 1);
        // Neither ids nor a deleted subject's version numbers are handed out again.
        assert_eq!(c.post("/subjects/b/versions", r#""int""#).await.1["id"], 3);
        assert_eq!(c.get("/subjects/b/versions").await.1, json!([2]));
        server.abort();
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[tokio::test]
    async fn works_with_schema_registry_converter() {
        use apache_avro::types::Value as Avro;
        use schema_registry_converter::async_impl::easy_avro::{EasyAvroDecoder, EasyAvroEncoder};
        use schema_registry_converter::async_impl::schema_registry as sr;
        use schema_registry_converter::schema_registry_common::{
            SchemaType, SubjectNameStrategy, SuppliedSchema,
        };

        let (c, server) = start(None).await;
        let url = format!("http://{}", c.0);
        let settings = || sr::SrSettings::new_builder(url.clone()).no_proxy().build();
        let settings = || settings().expect("SrSettings");
        let v1 = record("");
        let supplied = SuppliedSchema::new(Some("shop.Order".into()), SchemaType::Avro, v1.clone());
        let strategy =
            SubjectNameStrategy::TopicNameStrategyWithSchema("orders".into(), false, supplied);
        let encoder = EasyAvroEncoder::new(settings());
        let bytes = encoder.encode(vec![("id", Avro::Long(7))], strategy).await;
        let bytes = bytes.expect("encode registers the schema");
        assert_eq!(bytes.get(..5), Some(&[0u8, 0, 0, 0, 1][..]));

        let fetched = sr::get_schema_by_id(1, &settings())
            .await
            .expect("get_schema_by_id");
        assert_eq!(
            (fetched.schema, fetched.schema_type),
            (v1, SchemaType::Avro)
        );
        let sr_settings = settings();
        let latest = sr::get_schema_by_subject_and_version(&sr_settings, "orders-value", None);
        let latest = latest.await.expect("latest version");
        assert_eq!((latest.id, latest.version), (1, Some(1)));
        let decoded = EasyAvroDecoder::new(settings()).decode(Some(&bytes)).await;
        let decoded = decoded.expect("decode");
        assert_eq!(
            decoded.value,
            Avro::Record(vec![("id".into(), Avro::Long(7))])
        );
        server.abort();
    }
}
