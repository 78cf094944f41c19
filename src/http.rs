//! The small HTTP server for operators (`http.min.net.bind.to`): `GET /status`
//! for health checks and load balancers, `GET /metrics` for Prometheus
//! (`metrics.enabled`). It starts before the database opens, so a long startup
//! restore already answers `/status` with 503.
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::Database;
use storage::WriteState;
use tokio_util::sync::CancellationToken;

/// What the handlers see: the database once it is open.
#[derive(Debug)]
pub(crate) struct Http {
    db: OnceLock<Arc<Database>>,
    metrics: bool,
}

impl Http {
    pub(crate) fn new(metrics: bool) -> Arc<Self> {
        Arc::new(Self {
            db: OnceLock::new(),
            metrics,
        })
    }

    /// From now on the handlers answer for `db`.
    pub(crate) fn serving(&self, db: Arc<Database>) {
        let _ = self.db.set(db);
    }
}

/// Serves until `shutdown` is cancelled.
pub(crate) async fn serve(
    http: Arc<Http>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(http);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The answer to `GET /status` for a database whose commits are in `state`
/// (`None`: still opening).
fn status_of(state: Option<WriteState>) -> (StatusCode, serde_json::Value) {
    let (code, status, reason) = match state {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            Some("the database is opening (a startup restore may be running)".to_string()),
        ),
        Some(WriteState::Open) => (StatusCode::OK, "ok", None),
        Some(WriteState::Held) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "restoring",
            Some("the restored database is being made durable; queries are served, changes wait".to_string()),
        ),
        Some(WriteState::Refused(reason)) => (StatusCode::SERVICE_UNAVAILABLE, "refusing_writes", Some(reason)),
    };
    (code, serde_json::json!({ "status": status, "reason": reason }))
}

async fn status(State(http): State<Arc<Http>>) -> Response {
    let (code, body) = status_of(http.db.get().map(|db| db.write_state()));
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(State(http): State<Arc<Http>>) -> Response {
    if !http.metrics {
        return (StatusCode::NOT_FOUND, "metrics are off (set metrics.enabled=true)\n").into_response();
    }
    let Some(db) = http.db.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the database is opening\n").into_response();
    };
    match db.metrics() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_200_only_while_changes_are_served() {
        assert_eq!(status_of(Some(WriteState::Open)).0, StatusCode::OK);
        for state in [
            None,
            Some(WriteState::Held),
            Some(WriteState::Refused("disk gone".into())),
        ] {
            let (code, body) = status_of(state);
            assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(body["reason"].is_string(), "{body}");
        }
    }
}
