//! Schema Registry client side: schemas by id, parsed into decoding plans and cached.
//!
//! Invariants:
//! - a schema id, once resolved, is never fetched again (ids are immutable in every
//!   Confluent-compatible registry), so a registry outage does not stop decoding of known ids;
//! - a failed lookup is classified by what the registry answered — the HTTP status and the
//!   Confluent `error_code` — never by the text of an error: only "schema not found"
//!   (404 with `error_code` 40403, what Confluent, Karapace, Apicurio's ccompat API, Redpanda
//!   and the project's own registry answer) makes a record a dead letter.
//!
//! Hand-rolled over `reqwest` (the client `schema_registry_converter` itself uses) because that
//! crate's error keeps the status only in its message text and cannot take a custom CA.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::avro::Plan;
use crate::error::ConnectorError;

/// How to reach the registry.
#[derive(Clone, Default)]
pub struct RegistrySettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    /// PEM file of a CA to trust besides the system's (a registry behind a private CA).
    pub ca_file: Option<PathBuf>,
}

/// Never prints credentials.
impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The registry's JSON error body (`{"error_code": 40403, "message": "..."}`).
#[derive(serde::Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

/// `GET /schemas/ids/{id}`'s answer.
#[derive(serde::Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

/// Confluent's "schema not found".
const SCHEMA_NOT_FOUND: i64 = 40403;

/// Schemas by id, cached for the life of the process.
pub struct SchemaCache {
    client: reqwest::Client,
    base: String,
    settings: RegistrySettings,
    plans: Mutex<HashMap<u32, Arc<Plan>>>,
}

/// An HTTP client builder that trusts the private CA of `registry.ca_file`, if any (the
/// schema lookups here, a view sink's schema registrations).
pub fn http_client(cfg: &RegistrySettings) -> Result<reqwest::ClientBuilder, ConnectorError> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ConnectorError::Config(format!(
                "cannot read registry.ca_file {}: {e}; point it at a PEM file",
                path.display()
            ))
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            ConnectorError::Config(format!(
                "registry.ca_file {} is not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

impl SchemaCache {
    pub fn new(cfg: &RegistrySettings) -> Result<Self, ConnectorError> {
        let builder = http_client(cfg)?
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        let client = builder
            .build()
            .map_err(|e| ConnectorError::Config(format!("cannot build the registry client for {}: {e}", cfg.url)))?;
        Ok(Self {
            client,
            base: cfg.url.trim_end_matches('/').to_string(),
            settings: cfg.clone(),
            plans: Mutex::new(HashMap::new()),
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

    /// The plan of schema `id`: from the cache, else one call to the registry. Retrying a
    /// retryable error is the caller's (it knows when to stop).
    pub async fn plan(&self, id: u32) -> Result<Arc<Plan>, ConnectorError> {
        if let Some(p) = self.get(id) {
            return Ok(p);
        }
        let schema = self.fetch(id).await?;
        self.insert(id, &schema)
    }

    async fn fetch(&self, id: u32) -> Result<String, ConnectorError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut request = self.client.get(&url);
        if let Some(token) = &self.settings.bearer_token {
            request = request.bearer_auth(token);
        } else if let Some(user) = &self.settings.username {
            request = request.basic_auth(user, self.settings.password.as_deref());
        }
        let response = request.send().await.map_err(|e| classify_transport(&self.base, &e))?;
        let status = response.status();
        if status.is_success() {
            let body: SchemaBody = response.json().await.map_err(|e| {
                ConnectorError::RegistryUnavailable(format!(
                    "{url} answered {status} with a body that is not a schema: {e}"
                ))
            })?;
            return match body.schema_type.as_deref() {
                None | Some("AVRO") => Ok(body.schema),
                Some(other) => Err(ConnectorError::InvalidSchema(format!(
                    "schema id {id} is a {other} schema; Cormorant reads Avro (Debezium's AvroConverter)"
                ))),
            };
        }
        let error: Option<ErrorBody> = response.json().await.ok();
        Err(classify_status(&self.base, id, status.as_u16(), error))
    }
}

/// What a registry's error status means for the worker.
fn classify_status(base: &str, id: u32, status: u16, body: Option<ErrorBody>) -> ConnectorError {
    let code = body.as_ref().and_then(|b| b.error_code);
    let message = body.and_then(|b| b.message).unwrap_or_default();
    match status {
        404 if code == Some(SCHEMA_NOT_FOUND) => ConnectorError::UnknownSchema(id),
        404 => ConnectorError::Config(format!(
            "{base}/schemas/ids/{id} answered 404 without a registry error code: registry.url does not point at a Confluent-compatible registry API (Apicurio: use its /apis/ccompat/v7 path)"
        )),
        401 | 403 => ConnectorError::Config(format!(
            "the schema registry at {base} refused the worker's credentials ({status}{}); set registry.username/password or registry.bearer_token",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        )),
        408 | 429 | 500..=599 => ConnectorError::RegistryUnavailable(format!("{base} answered {status} {message}")),
        _ => ConnectorError::Config(format!(
            "the schema registry at {base} answered {status} {message} to a schema lookup; check registry.url"
        )),
    }
}

/// A registry that cannot be reached is retried; one whose certificate is not trusted is a
/// configuration error (retrying cannot help).
fn classify_transport(base: &str, e: &reqwest::Error) -> ConnectorError {
    if is_certificate_error(e) {
        return ConnectorError::Config(format!(
            "the schema registry at {base} presented a certificate this worker does not trust ({}); set registry.ca_file to the PEM file of the CA that signed it",
            chain(e)
        ));
    }
    ConnectorError::RegistryUnavailable(format!("{base}: {}", chain(e)))
}

/// Whether a connect error was the TLS handshake rejecting the server's certificate (looked up
/// on the typed error chain: rustls' `Error::InvalidCertificate`). The HTTP client hands it on
/// inside nested `io::Error`s, whose `source` skips the error they hold, so those are opened
/// (`tables::error::untrusted_certificate` does the same for the store; this crate never
/// depends on the tables side).
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut at: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = at {
        if matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        at = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i64) -> Option<ErrorBody> {
        Some(ErrorBody {
            error_code: Some(code),
            message: Some("Schema not found".into()),
        })
    }

    #[test]
    fn only_schema_not_found_is_an_unknown_schema() {
        let base = "http://registry:14040";
        assert!(matches!(
            classify_status(base, 1404, 404, body(40403)),
            ConnectorError::UnknownSchema(1404)
        ));
        // a 404 from something that is not a registry API stops the worker instead of
        // dead-lettering every record
        assert!(matches!(
            classify_status(base, 1404, 404, None),
            ConnectorError::Config(_)
        ));
        // a transport-ish status whose numbers hold "404" is retried
        let e = classify_status(base, 1404, 503, None);
        assert!(e.is_retryable(), "{e}");
        assert!(matches!(classify_status(base, 7, 401, None), ConnectorError::Config(_)));
        assert!(classify_status(base, 7, 429, None).is_retryable());
    }
}
