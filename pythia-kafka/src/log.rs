//! Logs: human-readable by default, JSON lines by configuration (`log.format`).

use serde::Deserialize;

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
/// Does nothing if a subscriber is already installed.
///
/// ```
/// let mut config = pythia_kafka::LogConfig::default();
/// config.format = pythia_kafka::LogFormat::Json;
/// pythia_kafka::init_logs(&config);
/// ```
pub fn init_logs(config: &LogConfig) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}
