//! `/healthz`, `/readyz` and `/metrics` over plain HTTP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::{ServerMetrics, WorkerMetrics};

/// Answers readiness: `Ok(())` when the process can serve, else why not.
pub trait Readiness: Send + Sync + 'static {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Liveness (always OK while the process answers) and readiness.
pub fn health_router(ready: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(r): State<Arc<dyn Readiness>>| async move {
                match r.check().await {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                }
            }),
        )
        .with_state(ready)
}

/// Prometheus text exposition.
pub fn metrics_router(render: Arc<dyn Fn() -> String + Send + Sync>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let body = render();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response() }
        }),
    )
}

/// Metrics router for a [`ServerMetrics`].
pub fn server_metrics_router(m: Arc<ServerMetrics>) -> Router {
    metrics_router(Arc::new(move || m.render()))
}

/// Metrics router for a [`WorkerMetrics`].
pub fn worker_metrics_router(m: Arc<WorkerMetrics>) -> Router {
    metrics_router(Arc::new(move || m.render()))
}

/// Serve `router` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
