//! The built-in routes: `/metrics` (Prometheus text) and `/health/live`,
//! `/health/ready` (200, or 503 with the reason).

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::health::Health;
use crate::metrics::Metrics;

const TEXT: &str = "text/plain; charset=utf-8";

/// The Prometheus text exposition format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/metrics`, and `/health/*` when there is a `health`.
pub(super) fn builtin(metrics: Metrics, health: Option<Health>) -> Router {
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([(header::CONTENT_TYPE, PROMETHEUS)], metrics.encode()) }
        }),
    );
    let Some(health) = health else {
        return router;
    };
    let ready = health.clone();
    router
        .route(
            "/health/live",
            get(move || {
                let health = health.clone();
                async move { check(health.live().map(|()| "ok".to_owned())) }
            }),
        )
        .route(
            "/health/ready",
            get(move || {
                let health = ready.clone();
                async move { check(health.ready()) }
            }),
        )
}

fn check(result: Result<String, String>) -> Response {
    let (status, text) = match result {
        Ok(summary) => (StatusCode::OK, summary),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    };
    (status, [(header::CONTENT_TYPE, TEXT)], format!("{text}\n")).into_response()
}

/// The answer to a path no route serves.
pub(super) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, TEXT)],
        "not found\n",
    )
        .into_response()
}
