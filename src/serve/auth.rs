//! Who may connect to `cormorant serve`: one user with a password, checked with SCRAM-SHA-256
//! (the password never crosses the wire), and TLS when a certificate is configured.
//!
//! Invariants: an unknown user fails exactly like a wrong password (no user enumeration);
//! with TLS configured a client that did not negotiate TLS is refused before authentication
//! (pgwire alone would accept a plaintext client that never sent an SSLRequest).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::auth::sasl::scram::gen_salted_password;
use datafusion_postgres::pgwire::api::auth::{AuthSource, LoginInfo, Password, StartupHandler};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;

/// SCRAM iterations (PostgreSQL's default is 4096).
pub(crate) const ITERATIONS: usize = 4096;

/// The one login `serve` accepts, salted once at start.
#[derive(Debug)]
pub struct ServeAuth {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    /// What an unknown user is checked against: fails like a wrong password.
    decoy: Vec<u8>,
}

impl ServeAuth {
    pub fn new(user: &str, password: &str) -> Self {
        let salt = uuid::Uuid::new_v4().into_bytes().to_vec();
        let decoy = uuid::Uuid::new_v4().to_string();
        Self {
            user: user.to_string(),
            salted: gen_salted_password(password, &salt, ITERATIONS),
            decoy: gen_salted_password(&decoy, &salt, ITERATIONS),
            salt,
        }
    }
}

#[async_trait]
impl AuthSource for ServeAuth {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salted = if login.user() == Some(self.user.as_str()) {
            &self.salted
        } else {
            &self.decoy
        };
        Ok(Password::new(Some(self.salt.clone()), salted.clone()))
    }
}

/// Refuses clients that did not negotiate TLS when TLS is required, then hands over to the
/// password check.
pub struct TlsGate<H> {
    pub inner: Arc<H>,
    pub required: bool,
}

#[async_trait]
impl<H: StartupHandler> StartupHandler for TlsGate<H> {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.required && !client.is_secure() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "cormorant serve requires TLS (serve.tls_cert is set): connect with sslmode=require".into(),
            ))));
        }
        self.inner.on_startup(client, message).await
    }
}

/// What pg_catalog's `pg_roles` lists: the serve user, allowed to log in.
#[derive(Clone, Debug)]
pub struct Roles {
    pub user: String,
}

#[async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        vec![self.user.clone()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == self.user).then(|| Role {
            name: self.user.clone(),
            is_superuser: false,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}
