//! The `strata` binary: `strata serve` runs the database server; `strata backup
//! list|verify` and `strata restore` work on a backup store offline.
mod demo;
mod http;
mod offline;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use engine::{Database, Properties, Settings};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "A columnar time-series database with first-class backup and restore"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (PostgreSQL wire protocol).
    Serve {
        /// Database root folder (holds conf/server.conf and db/).
        #[arg(long, default_value = "./strata_root")]
        root: PathBuf,
        /// Load a small demo table (`trades`) if it is not there yet.
        #[arg(long)]
        demo: bool,
    },
    /// Inspect the backups in a store.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Restore a backup into an empty root (what the _backup_restore trigger file does).
    Restore {
        #[command(flatten)]
        target: offline::Target,
        /// Database root to restore into; its database must be empty.
        #[arg(long)]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// List the instances in a store and the backups of each (or of one).
    List {
        #[command(flatten)]
        source: offline::Source,
    },
    /// Download and check every file of a backup; exit code 0 only if it fully restores.
    Verify {
        #[command(flatten)]
        target: offline::Target,
    },
    /// Run SQL on a backup where it lies: `backup_table('<table>' [, '<timestamp>'])`
    /// reads a table of the store's backups; nothing is restored.
    Query {
        #[command(flatten)]
        source: offline::Source,
        /// The query, e.g. "SELECT count(*) FROM backup_table('trades', 'LATEST')".
        sql: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(log_colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve { root, demo } => runtime.block_on(serve(root, demo)),
        Command::Backup {
            command: BackupCommand::List { source },
        } => runtime.block_on(offline::list(&source)),
        Command::Backup {
            command: BackupCommand::Verify { target },
        } => runtime.block_on(offline::verify(&target)),
        Command::Backup {
            command: BackupCommand::Query { source, sql },
        } => runtime.block_on(offline::query(&source, &sql)),
        Command::Restore { target, root } => runtime.block_on(offline::restore(&target, &root)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Colour codes only for a person at a terminal: in a file or a pipe
/// (`strata serve > server.log 2>&1`, journald, a log shipper) they are noise.
/// A non-empty `NO_COLOR` turns colour off everywhere (<https://no-color.org>).
fn log_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

async fn serve(root: PathBuf, demo: bool) -> Result<(), Box<dyn std::error::Error>> {
    let props = Properties::load(&root)?;
    for key in props.unknown_keys() {
        tracing::warn!("unknown configuration key '{key}' ignored (check for a typo)");
    }
    let settings = Settings::from_properties(&props)?;
    let tls = settings.tls.as_ref().map(sql::tls::acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| format!("cannot listen on {} (pg.net.bind.to): {e}", settings.bind))?;
    let shutdown = CancellationToken::new();
    let http = match settings.http {
        Some(h) => {
            let http_listener = tokio::net::TcpListener::bind(h.bind)
                .await
                .map_err(|e| format!("cannot listen on {} (http.min.net.bind.to): {e}", h.bind))?;
            let addr = http_listener.local_addr()?;
            tracing::info!("HTTP /status{} on {addr}", if h.metrics { " and /metrics" } else { "" });
            // Read by tests and scripts, like the line for the wire protocol.
            println!("strata http listening on {addr}");
            let state = http::Http::new(h.metrics);
            let task = tokio::spawn(http::serve(state.clone(), http_listener, shutdown.clone()));
            Some((state, task))
        }
        None => None,
    };
    let db = Database::open(&root, settings).await?;
    if let Some((state, _)) = &http {
        state.serving(db.clone());
    }
    if demo {
        demo::load(&db).await?;
    }
    let addr = listener.local_addr()?;
    tracing::info!(root = %root.display(), "database open, data id {}", db.storage().data_id());
    let stop = StopSignals::install();
    // Tests and scripts read this line to learn the port when binding to port 0.
    println!("strata listening on {addr}");
    let server = tokio::spawn(sql::serve(db.clone(), listener, tls, shutdown.clone()));
    stop.wait().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    server.await??;
    if let Some((_, task)) = http {
        task.await??;
    }
    db.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Ctrl-C and SIGTERM, listened for from creation on: installed before the server
/// says it is listening, so a stop request can never arrive before the handler.
struct StopSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                signals: signal(SignalKind::terminate())
                    .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut interrupt)) = self.signals {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::log_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some("".into())), "an empty NO_COLOR does not count");
        assert!(!log_colour(true, Some("1".into())));
        assert!(!log_colour(false, None), "a file or a pipe gets no escapes");
    }
}
