//! Client authentication: SCRAM-SHA-256 when `pg.password` is set, otherwise
//! trust for the configured user (allowed only on loopback binds, see config).
use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, ConnectionManager, METADATA_USER, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::compat;

const SCRAM_ITERATIONS: usize = 4096;

/// The authentication policy, built once from the settings.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    login: Login,
    /// Refuse clients on other hosts that did not negotiate TLS.
    tls_for_remote: bool,
}

#[derive(Clone)]
enum Login {
    Trust { user: String },
    Password(Arc<PasswordSource>),
}

impl Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Trust { user } => write!(f, "Trust({user})"),
            Self::Password(p) => write!(f, "Password({}, ***)", p.user),
        }
    }
}

impl Auth {
    pub(crate) fn new(user: &str, password: Option<&str>, tls_for_remote: bool) -> Self {
        let login = match password {
            None => Login::Trust { user: user.to_string() },
            Some(pw) => {
                let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
                let salted = gen_salted_password(pw, &salt, SCRAM_ITERATIONS);
                Login::Password(Arc::new(PasswordSource {
                    user: user.to_string(),
                    salt,
                    salted,
                }))
            }
        };
        Self { login, tls_for_remote }
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
///
/// pgwire's `NoopStartupHandler` would do, but it always announces pgwire's own
/// `server_version` (`16.6-pgwire-0.41.1`); this is its sequence with ours.
pub(crate) struct TrustStartup {
    user: String,
    connections: Arc<ConnectionManager>,
}

/// Process ids and cancel keys for trust connections, shared by all of them so
/// process ids stay unique.
static PID_GENERATOR: LazyLock<RandomPidSecretKeyGenerator> = LazyLock::new(RandomPidSecretKeyGenerator::default);

#[async_trait]
impl StartupHandler for TrustStartup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(startup) = &message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
        if user != self.user {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                format!("role \"{user}\" does not exist"),
            ))));
        }
        let (pid, secret_key) = PID_GENERATOR.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        // What pgwire's own handlers do, so cancel requests find this connection.
        let (handle, guard) = self.connections.register(pid, secret_key);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        finish_authentication(client, &*compat::server_parameters()).await
    }
}

/// One connection's startup handler (SCRAM keeps per-connection state).
pub(crate) struct Startup {
    login: LoginStartup,
    tls_for_remote: bool,
}

enum LoginStartup {
    Trust(TrustStartup),
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

impl Startup {
    pub(crate) fn new(auth: &Auth, connections: Arc<ConnectionManager>) -> Self {
        let login = match &auth.login {
            Login::Trust { user } => LoginStartup::Trust(TrustStartup {
                user: user.clone(),
                connections,
            }),
            Login::Password(source) => {
                let mut scram = ScramAuth::new(source.clone() as Arc<dyn AuthSource>);
                scram.set_iterations(SCRAM_ITERATIONS);
                LoginStartup::Scram(
                    SASLAuthStartupHandler::new(compat::server_parameters())
                        .with_scram(scram)
                        .with_connection_manager(connections),
                )
            }
        };
        Self {
            login,
            tls_for_remote: auth.tls_for_remote,
        }
    }
}

/// A client on another host that did not negotiate TLS, when TLS is configured
/// and `pg.allow.cleartext.remote` is not set.
fn cleartext_refused(client: &impl ClientInfo) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "28000".into(),
        format!(
            "connection from {} without TLS refused: connect with sslmode=require",
            client.socket_addr().ip()
        ),
    )))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.tls_for_remote
            && matches!(message, PgWireFrontendMessage::Startup(_))
            && !client.is_secure()
            && !client.socket_addr().ip().is_loopback()
        {
            return Err(cleartext_refused(client));
        }
        match &self.login {
            LoginStartup::Trust(h) => h.on_startup(client, message).await,
            LoginStartup::Scram(h) => h.on_startup(client, message).await,
        }
    }
}
