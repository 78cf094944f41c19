//! Client authentication: SCRAM-SHA-256 when `pg.password` is set, otherwise
//! trust for the configured user (allowed only on loopback binds, see config).
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

const SCRAM_ITERATIONS: usize = 4096;

/// The authentication policy, built once from the settings.
#[derive(Clone)]
pub(crate) enum Auth {
    Trust { user: String },
    Password(Arc<PasswordSource>),
}

impl Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Trust { user } => write!(f, "Trust({user})"),
            Self::Password(p) => write!(f, "Password({}, ***)", p.user),
        }
    }
}

impl Auth {
    pub(crate) fn new(user: &str, password: Option<&str>) -> Self {
        match password {
            None => Self::Trust { user: user.to_string() },
            Some(pw) => {
                let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
                let salted = gen_salted_password(pw, &salt, SCRAM_ITERATIONS);
                Self::Password(Arc::new(PasswordSource {
                    user: user.to_string(),
                    salt,
                    salted,
                }))
            }
        }
    }
}

/// Holds only the salted SCRAM verifier, never the password itself.
pub(crate) struct PasswordSource {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordSource({})", self.user)
    }
}

fn auth_failed(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "28P01".into(),
        format!("password authentication failed for user \"{user}\""),
    )))
}

#[async_trait]
impl AuthSource for PasswordSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        if user != self.user {
            return Err(auth_failed(user));
        }
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// Trust: no password, but the user name must still be the configured one.
pub(crate) struct TrustStartup {
    user: String,
    connections: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for TrustStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }

    async fn post_startup<C>(&self, client: &mut C, _message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        if user != self.user {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                format!("role \"{user}\" does not exist"),
            ))));
        }
        Ok(())
    }
}

/// One connection's startup handler (SCRAM keeps per-connection state).
pub(crate) enum Startup {
    Trust(TrustStartup),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

impl Startup {
    pub(crate) fn new(auth: &Auth, connections: Arc<ConnectionManager>) -> Self {
        match auth {
            Auth::Trust { user } => Self::Trust(TrustStartup {
                user: user.clone(),
                connections,
            }),
            Auth::Password(source) => {
                let mut scram = ScramAuth::new(source.clone() as Arc<dyn AuthSource>);
                scram.set_iterations(SCRAM_ITERATIONS);
                Self::Scram(
                    SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                        .with_scram(scram)
                        .with_connection_manager(connections),
                )
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Self::Trust(h) => h.on_startup(client, message).await,
            Self::Scram(h) => h.on_startup(client, message).await,
        }
    }
}
