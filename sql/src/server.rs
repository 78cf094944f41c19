//! The PostgreSQL wire-protocol server: accept loop with graceful shutdown.
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use engine::{CATALOG, Database};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Credentials};
use crate::handlers::Handlers;
use crate::readonly::ReadonlyUser;

/// How long open connections get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// PostgreSQL's catalog on `ctx`, and what clients expect of it: our version,
/// the functions their catalog queries call, correlated catalog lookups.
pub(crate) async fn setup_postgres(ctx: &SessionContext) -> std::io::Result<()> {
    setup_pg_catalog(ctx, CATALOG, EmptyContextProvider)
        .map_err(|e| std::io::Error::other(format!("setting up pg_catalog: {e}")))?;
    crate::compat::register(ctx);
    crate::catalog_subqueries::register(ctx);
    crate::pg_functions::register(ctx)
        .await
        .map_err(|e| std::io::Error::other(format!("registering PostgreSQL functions: {e}")))
}

/// A context set up as the server's is, for tests of what clients see.
#[cfg(test)]
pub(crate) async fn test_context() -> SessionContext {
    let ctx = SessionContext::new();
    setup_postgres(&ctx).await.expect("set up as the server does");
    ctx
}

/// Serves `db` on `listener` (with TLS when `tls` is given) until `shutdown` is
/// cancelled, then closes every connection.
pub async fn serve(
    db: Arc<Database>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    setup_postgres(&db.context()).await?;
    let settings = db.settings();
    let tls_for_remote = tls.is_some() && !settings.allow_cleartext_remote;
    let readonly = settings.readonly.as_ref().map(|r| Credentials {
        user: &r.user,
        password: r.password.expose(),
    });
    let auth = Auth::new(
        &settings.user,
        settings.password.as_ref().map(|s| s.expose()),
        readonly,
        tls_for_remote,
    );
    let readonly_user = ReadonlyUser(settings.readonly.as_ref().map(|r| r.user.clone()));
    let handlers = Arc::new(Handlers::new(db.clone(), auth, readonly_user));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let (h, stop, tls) = (handlers.clone(), shutdown.clone(), tls.clone());
                connections.spawn(async move {
                    tokio::select! {
                        r = pgwire::tokio::process_socket(socket, tls, h) => {
                            if let Err(e) = r {
                                tracing::debug!("connection {peer}: {e}");
                            }
                        }
                        _ = stop.cancelled() => {}
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
