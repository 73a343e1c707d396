//! `cormorant serve`: the lake over the PostgreSQL wire protocol, so psql, psycopg, JDBC and BI
//! tools query the same SQL surface as `cormorant sql` (time travel, `history`,
//! `table_changes`, `tumble`/`hop`/`session`) and get typed values.
//!
//! ```text
//! accept ─▶ TLS (when configured; required then) ─▶ SCRAM-SHA-256 ─▶ a session per connection
//!                                                     (lake schema, pg_catalog, shared runtime)
//! ```
//!
//! Invariants: read-only (see [`service`]); every connection has its own DataFusion session
//! (a `SET` never leaks to another client) over one shared lake schema and runtime; TLS that
//! cannot be set up stops the server instead of falling back to plaintext.

mod auth;
mod service;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire::api::PgWireServerHandlers;
use datafusion_postgres::pgwire::api::auth::DefaultServerParameterProvider;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::ScramAuth;
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::{ConnectionManager, auth::StartupHandler, cancel::CancelHandler};
use datafusion_postgres::pgwire::tokio::process_socket;
use datafusion_postgres::pgwire::tokio::tokio_rustls::TlsAcceptor;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::pki_types::pem::PemObject;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::{self, ServerConfig};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::query::lake_schema::LakeSchema;
use auth::{Roles, ServeAuth, TlsGate};
use service::CormorantService;

/// What every connection shares.
struct Shared {
    /// Copied into each connection's session: lake schema, functions, pg_catalog.
    template: SessionState,
    schema: Arc<LakeSchema>,
    auth: Arc<ServeAuth>,
    connections: Arc<ConnectionManager>,
    tls_required: bool,
}

/// One connection's handlers (pgwire asks for each once per connection).
struct Conn {
    service: Arc<CormorantService>,
    startup: Arc<TlsGate<SASLAuthStartupHandler<DefaultServerParameterProvider>>>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Conn {
    fn new(shared: &Shared) -> Self {
        let ctx = Arc::new(SessionContext::new_with_state(shared.template.clone()));
        let mut params = DefaultServerParameterProvider::default();
        params.default_transaction_read_only = true;
        params.is_superuser = false;
        params.scram_iterations = auth::ITERATIONS;
        let scram = ScramAuth::new(shared.auth.clone());
        let sasl = SASLAuthStartupHandler::new(Arc::new(params))
            .with_scram(scram)
            .with_connection_manager(shared.connections.clone());
        Self {
            service: Arc::new(CormorantService::new(ctx, shared.schema.clone())),
            startup: Arc::new(TlsGate {
                inner: Arc::new(sasl),
                required: shared.tls_required,
            }),
            cancel: Arc::new(DefaultCancelHandler::new(shared.connections.clone())),
        }
    }
}

impl PgWireServerHandlers for Conn {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// The TLS acceptor for the configured certificate chain and key (PKCS#8, PKCS#1 or SEC1).
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let pem = std::fs::read(cert).with_context(|| format!("serve.tls_cert: reading {}", cert.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("serve.tls_cert: {} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "serve.tls_cert: {} holds no certificate",
        cert.display()
    );
    let key_pem = std::fs::read(key).with_context(|| format!("serve.tls_key: reading {}", key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("serve.tls_key: {} holds no PEM private key", key.display()))?;
    // explicit provider: rustls is built with both ring and aws-lc-rs here, so the default
    // builder would find no single installed provider
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("serve.tls_cert / serve.tls_key: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The session every connection starts from.
async fn template(cfg: &Config, user: &str) -> anyhow::Result<(SessionState, Arc<LakeSchema>)> {
    let lake = cfg.lake.open()?;
    let ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_information_schema(true)
            .with_extension(Arc::new(lake.clone())),
    );
    crate::query::functions::register(&ctx);
    crate::query::windows::register(&ctx);
    let schema = Arc::new(LakeSchema::new(lake, ctx.runtime_env()).await?);
    ctx.catalog("datafusion")
        .context("DataFusion's default catalog is missing")?
        .register_schema("public", schema.clone())?;
    setup_pg_catalog(&ctx, "datafusion", Roles { user: user.to_string() }).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((ctx.state(), schema))
}

/// Serves until `stop` completes. `listen` overrides `serve.listen`.
pub async fn run(
    cfg: &Config,
    listen: Option<String>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let serve = &cfg.serve;
    let password = serve
        .password
        .clone()
        .filter(|p| !p.is_empty())
        .context("serve.password is not set: set it in [serve] or in CORMORANT_SERVE__PASSWORD")?;
    let tls = match (&serve.tls_cert, &serve.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("set both serve.tls_cert and serve.tls_key (or neither)"),
    };
    let listen = listen.unwrap_or_else(|| serve.listen.clone());
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("serve.listen {listen:?} is not an address like 127.0.0.1:5433"))?;
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "serving without TLS on a non-loopback address: passwords are hashed (SCRAM) but results travel in clear; set serve.tls_cert and serve.tls_key");
    }
    let (template, schema) = template(cfg, &serve.user).await?;
    let shared = Shared {
        template,
        schema,
        auth: Arc::new(ServeAuth::new(&serve.user, &password)),
        connections: Arc::new(ConnectionManager::new()),
        tls_required: tls.is_some(),
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: is another server using it? (--listen ADDR)"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, tls = tls.is_some(), user = %serve.user, "serving the lake over the PostgreSQL protocol");
    println!(
        "cormorant serve: listening on {bound} (psql \"host={} port={} user={}\")",
        bound.ip(),
        bound.port(),
        serve.user
    );
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let handlers = Conn::new(&shared);
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Err(e) = process_socket(socket, tls, handlers).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
}
