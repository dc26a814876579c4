//! The observability endpoint: a small HTTP server for `/metrics` (Prometheus
//! text), `/health/live` and `/health/ready` (200 or 503 with the reason), and
//! any JSON routes a tool adds.
//!
//! It answers `GET` requests one per connection (`Connection: close`), which is
//! all scrapers and probes need, so it has no HTTP library behind it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::ConfigError;
use crate::error::EndpointError;
use crate::health::Health;
use crate::metrics::Metrics;

/// Settings under `[metrics]`.
///
/// ```toml
/// [metrics]
/// address = "0.0.0.0:9464"   # serve /metrics and /health/*; unset or "off": no server
/// lag_interval = "5s"        # how often lag is read from the broker
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Where to serve `/metrics` and `/health/*`, as `IP:PORT`. Unset, empty or
    /// `"off"` runs no server. Off by default: a fixed default port would
    /// collide when several instances run on one host.
    pub address: Option<String>,
    /// How often partition lag, watermarks and broker reachability are read.
    #[serde(with = "humantime_serde")]
    pub lag_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: None,
            lag_interval: Duration::from_secs(5),
        }
    }
}

impl MetricsConfig {
    /// Checks the section; the error names the key.
    ///
    /// ```
    /// let mut config = pythia_core::MetricsConfig::default();
    /// config.address = Some("localhost".into());
    /// assert_eq!(config.validate().unwrap_err().key(), "metrics.address");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.socket_address()?;
        if self.lag_interval.is_zero() {
            return Err(ConfigError::invalid(
                "metrics.lag_interval",
                "must be longer than zero, e.g. \"5s\"",
            ));
        }
        Ok(())
    }

    /// The address to serve on; `None` when the server is off.
    pub fn socket_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.address.as_deref().map(str::trim) {
            None | Some("") | Some("off") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ConfigError::invalid(
                    "metrics.address",
                    format!(
                        "`{text}` is not IP:PORT; write e.g. \"0.0.0.0:9464\" (all interfaces) or \"127.0.0.1:9464\", or \"off\" for no server"
                    ),
                )
            }),
        }
    }
}

type JsonRoute = Arc<dyn Fn() -> String + Send + Sync>;

/// What the endpoint serves.
///
/// ```no_run
/// use pythia_core::connector::Endpoint;
/// use pythia_core::metrics::Metrics;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let endpoint = Endpoint::new(Metrics::new())
///     .json("/lag", || r#"{"lag":0}"#.to_owned())
///     .bind("127.0.0.1:9464".parse()?, "--serve")?;
/// println!("serving on {}", endpoint.local_addr());
/// let server = endpoint.spawn(); // stops when dropped
/// # drop(server); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    metrics: Metrics,
    health: Option<Health>,
    json: HashMap<String, JsonRoute>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("health", &self.health.is_some())
            .field("json", &self.json.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Serves `metrics` on `/metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            health: None,
            json: HashMap::new(),
        }
    }

    /// Also serves `/health/live` and `/health/ready` from `health`.
    pub fn health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Also serves `path` with the JSON text `body` makes on each request.
    pub fn json(mut self, path: &str, body: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.json.insert(path.to_owned(), Arc::new(body));
        self
    }

    /// Binds `address` now, so a taken port is an error at start. `setting`
    /// names where the address came from, for the error message.
    pub fn bind(self, address: SocketAddr, setting: &str) -> Result<Bound, EndpointError> {
        let error = |source| EndpointError::Bind {
            address,
            setting: setting.to_owned(),
            source,
        };
        let listener = std::net::TcpListener::bind(address).map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        let local = listener.local_addr().map_err(error)?;
        Ok(Bound {
            endpoint: self,
            listener,
            local,
        })
    }

    fn respond(&self, path: &str) -> (u16, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        let health = |check: Result<String, String>| match check {
            Ok(summary) => (200, TEXT, format!("{summary}\n")),
            Err(reason) => (503, TEXT, format!("{reason}\n")),
        };
        match (path, &self.health) {
            ("/metrics", _) => (200, "text/plain; version=0.0.4", self.metrics.encode()),
            ("/health/live", Some(h)) => health(h.live().map(|()| "ok".to_owned())),
            ("/health/ready", Some(h)) => health(h.ready()),
            _ => match self.json.get(path) {
                Some(body) => (200, "application/json", body()),
                None => (404, TEXT, "not found\n".to_owned()),
            },
        }
    }

    async fn serve_one(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        // The request head only; bodies are not expected.
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf);
        let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let path = target.split('?').next().unwrap_or(target);
        let (code, content_type, body) = if method == "GET" || method == "HEAD" {
            self.respond(path)
        } else {
            (
                405,
                "text/plain; charset=utf-8",
                "only GET is served\n".to_owned(),
            )
        };
        let reason = match code {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Service Unavailable",
        };
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    }
}

/// An endpoint bound to its address, not yet serving.
#[derive(Debug)]
pub struct Bound {
    endpoint: Endpoint,
    listener: std::net::TcpListener,
    local: SocketAddr,
}

impl Bound {
    /// The bound address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts serving on the current tokio runtime until the returned
    /// [`Server`] is dropped.
    pub fn spawn(self) -> Server {
        let Self {
            endpoint,
            listener,
            local,
        } = self;
        let task = tokio::spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "metrics server cannot start");
                    return;
                }
            };
            let endpoint = Arc::new(endpoint);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    let served =
                        tokio::time::timeout(Duration::from_secs(10), endpoint.serve_one(stream))
                            .await;
                    if let Ok(Err(error)) = served {
                        tracing::debug!(%error, "metrics request failed");
                    }
                });
            }
        });
        tracing::info!(address = %local, "serving /metrics, /health/live and /health/ready");
        Server { task, local }
    }
}

/// A running endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
    local: SocketAddr,
}

impl Server {
    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_json() {
        let health = Health::new();
        let server = Endpoint::new(Metrics::new())
            .health(health.clone())
            .json("/lag", || "{\"lag\":3}".to_owned())
            .bind("127.0.0.1:0".parse().unwrap(), "test")
            .unwrap()
            .spawn();
        let address = server.local_addr();
        assert!(get(address, "/metrics").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(address, "/health/live")
                .await
                .starts_with("HTTP/1.1 200")
        );
        let ready = get(address, "/health/ready").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains("join"), "{ready}");
        assert!(get(address, "/lag?x=1").await.ends_with("{\"lag\":3}"));
        assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let error = Endpoint::new(Metrics::new())
            .bind(address, "metrics.address")
            .unwrap_err()
            .to_string();
        assert!(error.contains("metrics.address"), "{error}");
        assert!(error.contains(&address.to_string()), "{error}");
        assert!(error.contains("free port"), "{error}");
    }

    #[test]
    fn bad_addresses_name_the_key() {
        for bad in ["9464", "localhost:9464", "0.0.0.0:99999"] {
            let config = MetricsConfig {
                address: Some(bad.into()),
                ..MetricsConfig::default()
            };
            let error = config.validate().unwrap_err();
            assert_eq!(error.key(), "metrics.address");
            assert!(error.to_string().contains("IP:PORT"), "{error}");
        }
        let off = MetricsConfig {
            address: Some("off".into()),
            ..MetricsConfig::default()
        };
        assert_eq!(off.socket_address().unwrap(), None);
    }
}
