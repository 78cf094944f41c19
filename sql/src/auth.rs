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
    /// The user who may log in without a password (`pg.user` when `pg.password` is unset).
    trust_user: Option<String>,
    /// The users who log in with SCRAM: `pg.user` with `pg.password`, the read-only user.
    passwords: Option<Arc<PasswordSource>>,
    /// Refuse clients on other hosts that did not negotiate TLS.
    tls_for_remote: bool,
}

/// A login: its user name and password.
pub(crate) struct Credentials<'a> {
    pub(crate) user: &'a str,
    pub(crate) password: &'a str,
}

impl Auth {
    /// `main` logs in with its password, or without one when `main_password` is
    /// `None`; `readonly` always needs its password.
    pub(crate) fn new(
        main_user: &str,
        main_password: Option<&str>,
        readonly: Option<Credentials<'_>>,
        tls_for_remote: bool,
    ) -> Self {
        let main = main_password.map(|password| Credentials {
            user: main_user,
            password,
        });
        let verifiers: Vec<Verifier> = main.into_iter().chain(readonly).map(Verifier::new).collect();
        Self {
            trust_user: main_password.is_none().then(|| main_user.to_string()),
            passwords: (!verifiers.is_empty()).then(|| Arc::new(PasswordSource { verifiers })),
            tls_for_remote,
        }
    }
}

/// Holds only salted SCRAM verifiers, never a password itself.
pub(crate) struct PasswordSource {
    verifiers: Vec<Verifier>,
}

struct Verifier {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl Verifier {
    fn new(login: Credentials<'_>) -> Self {
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        let salted = gen_salted_password(login.password, &salt, SCRAM_ITERATIONS);
        Self {
            user: login.user.to_string(),
            salt,
            salted,
        }
    }
}

impl PasswordSource {
    fn knows(&self, user: &str) -> bool {
        self.verifiers.iter().any(|v| v.user == user)
    }
}

impl Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self.verifiers.iter().map(|v| v.user.as_str()).collect();
        write!(f, "PasswordSource({users:?})")
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
        let Some(v) = self.verifiers.iter().find(|v| v.user == user) else {
            return Err(auth_failed(user));
        };
        Ok(Password::new(Some(v.salt.clone()), v.salted.clone()))
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
        finish_authentication(client, &**compat::SERVER_PARAMETERS).await
    }
}

/// One connection's startup handler (SCRAM keeps per-connection state).
pub(crate) struct Startup {
    trust: Option<TrustStartup>,
    scram: Option<(
        Arc<PasswordSource>,
        SASLAuthStartupHandler<DefaultServerParameterProvider>,
    )>,
    tls_for_remote: bool,
}

impl Startup {
    pub(crate) fn new(auth: &Auth, connections: Arc<ConnectionManager>) -> Self {
        let trust = auth.trust_user.as_ref().map(|user| TrustStartup {
            user: user.clone(),
            connections: connections.clone(),
        });
        let scram = auth.passwords.as_ref().map(|source| {
            let mut scram = ScramAuth::new(source.clone() as Arc<dyn AuthSource>);
            scram.set_iterations(SCRAM_ITERATIONS);
            let handler = SASLAuthStartupHandler::new(compat::SERVER_PARAMETERS.clone())
                .with_scram(scram)
                .with_connection_manager(connections);
            (source.clone(), handler)
        });
        Self {
            trust,
            scram,
            tls_for_remote: auth.tls_for_remote,
        }
    }

    /// Whether this message goes to the SCRAM exchange rather than trust. Trust
    /// finishes on the startup message, so every later message is SCRAM's; the
    /// startup message is SCRAM's when it names a user with a password, or when
    /// nobody may log in without one (SCRAM then refuses the unknown user).
    fn for_scram(&self, message: &PgWireFrontendMessage) -> bool {
        let Some((source, _)) = &self.scram else {
            return false;
        };
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                self.trust.is_none() || startup.parameters.get("user").is_some_and(|u| source.knows(u))
            }
            _ => true,
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
        match (&self.trust, &self.scram) {
            (_, Some((_, scram))) if self.for_scram(&message) => scram.on_startup(client, message).await,
            (Some(trust), _) => trust.on_startup(client, message).await,
            // Not reached: `Auth` always has a trust user or a password.
            (None, _) => Err(auth_failed("")),
        }
    }
}
