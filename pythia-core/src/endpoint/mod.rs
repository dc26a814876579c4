//! The observability endpoint: an HTTP server (axum on hyper) for `/metrics`
//! (Prometheus text), `/health/live` and `/health/ready` (200, or 503 with
//! the reason), and any routes a tool or a user adds with
//! [`Endpoint::merge`] (an `axum` 0.8 `Router`).
//!
//! It lives in the core because every connector serves the same routes; it
//! knows no broker. Its [`Limits`] keep the probes answering under many,
//! slow or idle clients; `/metrics` and the added routes are gzipped when the
//! client asks (`Accept-Encoding: gzip`).
//!
//! Files: `config.rs` (`[metrics]`), `limits.rs`, `routes.rs` (the built-in
//! routes), `serve.rs` (the accept loop and the graceful stop).

mod config;
mod limits;
mod routes;
mod serve;

pub use config::MetricsConfig;
pub use limits::Limits;

use std::net::SocketAddr;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::EndpointError;
use crate::health::Health;
use crate::metrics::Metrics;

/// What the endpoint serves.
///
/// ```no_run
/// use pythia_core::connector::Endpoint;
/// use pythia_core::metrics::Metrics;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mine = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
/// let endpoint = Endpoint::new(Metrics::new())
///     .merge(mine)
///     .bind("127.0.0.1:9464".parse()?, "--serve")?;
/// println!("serving on {}", endpoint.local_addr());
/// let server = endpoint.spawn();
/// server.shutdown().await; // or drop it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    metrics: Metrics,
    health: Option<Health>,
    routes: Router,
    limits: Limits,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("health", &self.health.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Serves `metrics` on `/metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            health: None,
            routes: Router::new(),
            limits: Limits::default(),
        }
    }

    /// Also serves `/health/live` and `/health/ready` from `health`.
    pub fn health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Also serves the routes of `router`.
    ///
    /// # Panics
    ///
    /// When `router` has a route the endpoint already serves (`/metrics`,
    /// `/health/*`, or one merged before), as [`Router::merge`] does — at
    /// [`Endpoint::bind`] for the built-in ones.
    pub fn merge(mut self, router: Router) -> Self {
        self.routes = self.routes.merge(router);
        self
    }

    /// Replaces the default [`Limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Binds `address` now, so a taken port is an error at start. `setting`
    /// names where the address came from, for the error message.
    ///
    /// # Errors
    ///
    /// [`EndpointError::Bind`] when the address cannot be bound.
    pub fn bind(self, address: SocketAddr, setting: &str) -> Result<Bound, EndpointError> {
        let error = |source| EndpointError::Bind {
            address,
            setting: setting.to_owned(),
            source,
        };
        let listener = std::net::TcpListener::bind(address).map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        let local = listener.local_addr().map_err(error)?;
        let app = routes::builtin(self.metrics, self.health)
            .merge(self.routes)
            .fallback(routes::not_found)
            .layer(CompressionLayer::new().gzip(true))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                self.limits.request_timeout,
            ));
        Ok(Bound {
            app,
            limits: self.limits,
            listener,
            local,
        })
    }
}

/// An endpoint bound to its address, not yet serving.
#[derive(Debug)]
pub struct Bound {
    app: Router,
    limits: Limits,
    listener: std::net::TcpListener,
    local: SocketAddr,
}

impl Bound {
    /// The bound address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts serving on the current tokio runtime until the returned
    /// [`Server`] is shut down or dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self) -> Server {
        let Self {
            app,
            limits,
            listener,
            local,
        } = self;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => serve::serve(listener, app, limits, stopped).await,
                Err(error) => tracing::error!(%error, "the endpoint cannot start"),
            }
        });
        tracing::info!(address = %local, "serving /metrics and /health/*");
        Server {
            stop,
            task: Some(task),
            local,
        }
    }
}

/// A running endpoint. [`Server::shutdown`] stops it and waits for requests
/// in progress; dropping it stops it without waiting.
#[derive(Debug)]
pub struct Server {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    local: SocketAddr,
}

impl Server {
    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops accepting connections and waits (up to
    /// [`Limits::shutdown_grace`]) for the requests in progress.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
