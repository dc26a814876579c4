//! Logs and trace export: human-readable lines by default, JSON lines by
//! configuration (`log.format`), and each message's span sent to an
//! OpenTelemetry collector (`[otel]`, feature `otel`).

use pythia_core::ConfigError;
use serde::Deserialize;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::config::Config;

/// The filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,librdkafka=warn,rdkafka=warn";

/// Where the runtime makes each message's (debug-level) span, which trace
/// export takes whatever the log filter says.
const MESSAGE_SPANS: &str = "pythia_core::lane::span=debug";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// One readable line per event (colored on a terminal).
    #[default]
    Human,
    /// One JSON object per event, with the span fields (worker, topic,
    /// partition, offset, trace_id), for log collectors.
    Json,
}

/// Settings under `[log]`.
///
/// ```toml
/// [log]
/// format = "json"   # human (default) | json; the level filter is RUST_LOG
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LogConfig {
    /// The line format.
    pub format: LogFormat,
}

/// Installs a log subscriber on stderr in `config.format`, filtered by
/// `RUST_LOG` (default `info`; librdkafka's own logs come through at `warn`).
/// Does nothing if a subscriber is already installed. [`init_telemetry`]
/// also exports traces.
///
/// ```
/// let mut config = pythia_kafka::LogConfig::default();
/// config.format = pythia_kafka::LogFormat::Json;
/// pythia_kafka::init_logs(&config);
/// ```
pub fn init_logs(config: &LogConfig) {
    install(config, Vec::new());
}

/// Installs the log subscriber of [`init_logs`] and, when `[otel]` names a
/// collector (feature `otel`), exports each message's span to it. Keep the
/// returned [`Telemetry`] until the worker stops: shutting it down sends the
/// last spans. [`KafkaWorker::run_until_signal`](crate::KafkaWorker::run_until_signal) does all this itself.
///
/// Does nothing if a subscriber is already installed (spans are then not
/// exported, and a warning says so). Fails when `[otel]` or the `OTEL_*`
/// variables name an unusable endpoint.
///
/// ```no_run
/// use pythia_kafka::{Config, KafkaWorker, Worker};
///
/// async fn serve<W: Worker>(worker: W) -> Result<(), Box<dyn std::error::Error>> {
///     let config = Config::load()?;
///     let telemetry = pythia_kafka::init_telemetry(&config)?;
///     let instance = KafkaWorker::builder(worker).config(config).build()?;
///     instance.run(pythia_kafka::core::shutdown::signal()).await?;
///     // Blocks until the last spans are sent (at most 5 s).
///     tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
///     Ok(())
/// }
/// ```
pub fn init_telemetry(config: &Config) -> Result<Telemetry, ConfigError> {
    config.otel.validate()?;
    #[cfg(feature = "otel")]
    {
        let export = crate::otel::Export::start(&config.otel, config.name())?;
        let layers = export.iter().map(|e| e.layer(env_filter())).collect();
        if !install(&config.log, layers) {
            if let Some(export) = export {
                tracing::warn!(
                    "a tracing subscriber was installed before init_telemetry: message spans are not exported"
                );
                export.shutdown();
            }
            return Ok(Telemetry { export: None });
        }
        Ok(Telemetry { export })
    }
    #[cfg(not(feature = "otel"))]
    {
        install(&config.log, Vec::new());
        Ok(Telemetry {})
    }
}

/// Trace export while it runs: [`Telemetry::shutdown`] (or dropping it)
/// sends the spans still queued and stops. Without an endpoint, or without
/// the `otel` feature, there is nothing to stop.
#[derive(Debug)]
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    export: Option<crate::otel::Export>,
}

impl Telemetry {
    /// Whether message spans are being exported.
    pub fn exporting(&self) -> bool {
        #[cfg(feature = "otel")]
        {
            self.export.is_some()
        }
        #[cfg(not(feature = "otel"))]
        {
            false
        }
    }

    /// Sends the spans still queued, waiting up to 5 s for the collector,
    /// and stops export. Blocks: from async code, call it in
    /// [`spawn_blocking`](tokio::task::spawn_blocking).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(export) = self.export.take() {
            export.shutdown();
        }
    }
}

/// The log filter: `RUST_LOG`, else [`DEFAULT_FILTER`].
fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Installs log lines in `config.format` and `extra` layers; false when a
/// subscriber was installed already.
fn install(config: &LogConfig, mut extra: Vec<Box<dyn Layer<Registry> + Send + Sync>>) -> bool {
    use std::io::IsTerminal;
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match config.format {
        LogFormat::Human => lines.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => lines.json().with_current_span(true).boxed(),
    };
    // The same filter over the whole stack as well: with only per-layer
    // filters, a librdkafka record the filter turns down (`log` records,
    // asked `enabled` and never sent) left the next event of that thread
    // dropped, such as the line logged after creating a client. Trace export
    // (the `extra` layers) takes each message's span whatever the level, so
    // the stack lets those through too.
    let mut global = env_filter();
    if !extra.is_empty() {
        global = global.add_directive(
            MESSAGE_SPANS
                .parse()
                .expect("the message spans' directive parses"),
        );
    }
    extra.insert(0, lines.with_filter(env_filter()).boxed());
    tracing_subscriber::registry()
        .with(extra)
        .with(global)
        .try_init()
        .is_ok()
}
