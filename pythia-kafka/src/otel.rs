//! Trace export: the `[otel]` settings and, with the `otel` feature, the
//! OpenTelemetry pipeline that sends each message's span to a collector over
//! OTLP/HTTP.

use pythia_core::ConfigError;
use serde::Deserialize;

/// Settings under `[otel]`: where each message's span is exported.
///
/// ```toml
/// [otel]
/// endpoint = "http://otel-collector:4318"  # OTLP/HTTP; spans are sent to {endpoint}/v1/traces
/// service_name = "billing"                 # default: OTEL_SERVICE_NAME, else the worker's name
/// sample_ratio = 0.1                       # share of new traces exported (default 1)
/// ```
///
/// Export needs `pythia-kafka` built with `--features otel`; without it a set
/// `endpoint` is a configuration error. With it, an unset `endpoint` falls
/// back to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (the base URL); when none is set, nothing is
/// exported. A message whose `traceparent` says "not sampled" is not exported,
/// whatever the ratio.
///
/// ```
/// use pythia_core::ConfigLoader;
/// let error = pythia_kafka::Config::from_loader(
///     ConfigLoader::new().no_file().env::<&str, &str>([])
///         .set("kafka.brokers", "localhost:9092")
///         .set("otel.sample_ratio", 2.0),
/// )
/// .unwrap_err();
/// assert_eq!(error.key(), "otel.sample_ratio");
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct OtelConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`.
    pub endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub service_name: Option<String>,
    /// The share of new traces that are exported, from 0 to 1. Messages
    /// that carry a `traceparent` follow its sampled flag instead.
    pub sample_ratio: f64,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: None,
            sample_ratio: 1.0,
        }
    }
}

impl OtelConfig {
    /// Checks the settings; the error names the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::invalid(
                "otel.sample_ratio",
                format!(
                    "{} is not between 0 and 1; write e.g. 0.1 to export one new trace in ten, or 1 for all",
                    self.sample_ratio
                ),
            ));
        }
        match self.endpoint() {
            Some(endpoint) if cfg!(feature = "otel") => check_url("otel.endpoint", endpoint),
            Some(_) => Err(ConfigError::invalid(
                "otel.endpoint",
                "trace export needs pythia-kafka built with `--features otel`; rebuild with it, or remove `otel.endpoint`",
            )),
            None => Ok(()),
        }
    }

    /// The configured endpoint, if not blank.
    fn endpoint(&self) -> Option<&str> {
        self.endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }
}

/// Only plain HTTP: the exporter is built without TLS.
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        return Err(ConfigError::invalid(
            key,
            format!(
                "`{url}`: the trace exporter has no TLS; send to a collector over http:// (a local agent or sidecar), e.g. \"http://127.0.0.1:4318\""
            ),
        ));
    }
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("`{url}` is not an http:// URL; write e.g. \"http://127.0.0.1:4318\""),
        )),
    }
}

#[cfg(feature = "otel")]
pub(crate) use export::Export;

#[cfg(feature = "otel")]
mod export {
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use pythia_core::ConfigError;
    use tracing::Metadata;
    use tracing::level_filters::LevelFilter;
    use tracing::subscriber::Interest;
    use tracing_subscriber::Registry;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::{Context, Filter, Layer};

    use super::{OtelConfig, check_url};

    /// Where OTLP/HTTP sends spans under its base URL.
    const TRACES_PATH: &str = "/v1/traces";

    /// A running trace export: the tracer provider and its batch span
    /// processor, which sends spans from a thread of its own.
    #[derive(Debug)]
    pub(crate) struct Export {
        provider: SdkTracerProvider,
    }

    impl Export {
        /// Starts exporting as `config` (or the standard `OTEL_*` variables)
        /// says, under the service name `worker` unless one is set; `None`
        /// when no endpoint is.
        pub(crate) fn start(
            config: &OtelConfig,
            worker: &str,
        ) -> Result<Option<Self>, ConfigError> {
            let Some(target) = Target::resolve(config, worker, process_env)? else {
                return Ok(None);
            };
            let Target { key, url, service } = target;
            let exporter = SpanExporter::builder()
                .with_http()
                .with_endpoint(url.as_str())
                .build()
                .map_err(|e| ConfigError::invalid(key, format!("cannot export to `{url}`: {e}")))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    config.sample_ratio,
                ))))
                .with_resource(Resource::builder().with_service_name(service).build())
                .build();
            tracing::debug!(%url, "exporting message spans");
            Ok(Some(Self { provider }))
        }

        /// The layer that turns spans into exported spans: each message's
        /// span whatever the level, and the spans and events `RUST_LOG` lets
        /// through (a handler's own spans become its children).
        pub(crate) fn layer(
            &self,
            log_filter: tracing_subscriber::EnvFilter,
        ) -> Box<dyn Layer<Registry> + Send + Sync> {
            let scope = InstrumentationScope::builder("pythia")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build();
            tracing_opentelemetry::layer()
                .with_tracer(self.provider.tracer_with_scope(scope))
                .with_location(false)
                .with_threads(false)
                .with_filter(log_filter.or(MessageSpans))
                .boxed()
        }

        /// Exports the spans still queued, waiting up to 5 s for the
        /// collector, and stops. Spans started later are not exported.
        pub(crate) fn shutdown(&self) {
            if let Err(error) = self.provider.shutdown() {
                tracing::warn!(%error, "trace export stopped; the last spans may not have reached the collector");
            }
        }
    }

    /// Where spans go and under which service name: the `[otel]` settings,
    /// else the standard `OTEL_*` variables, which `env` reads.
    #[derive(Debug, PartialEq)]
    struct Target {
        /// The setting the URL came from, for errors.
        key: &'static str,
        url: String,
        service: String,
    }

    impl Target {
        /// `None` when no endpoint is set.
        fn resolve(
            config: &OtelConfig,
            worker: &str,
            env: impl Fn(&str) -> Option<String>,
        ) -> Result<Option<Self>, ConfigError> {
            let (key, url) = if let Some(base) = config.endpoint() {
                ("otel.endpoint", under_base(base))
            } else if let Some(url) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
            } else if let Some(base) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                ("OTEL_EXPORTER_OTLP_ENDPOINT", under_base(&base))
            } else {
                return Ok(None);
            };
            check_url(key, &url)?;
            let service = (config.service_name.clone())
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| worker.to_owned());
            Ok(Some(Self { key, url, service }))
        }
    }

    /// `{base}/v1/traces`, unless `base` names that path already.
    fn under_base(base: &str) -> String {
        let base = base.trim().trim_end_matches('/');
        if base.ends_with(TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{TRACES_PATH}")
        }
    }

    /// A variable of the process environment, unless blank.
    fn process_env(name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Lets the runtime's per-message spans through, whatever the log level.
    struct MessageSpans;

    impl MessageSpans {
        fn lets_through(metadata: &Metadata<'_>) -> bool {
            metadata.is_span()
                && metadata.name() == "message"
                && metadata.target().starts_with("pythia_core::")
        }
    }

    impl<S> Filter<S> for MessageSpans {
        fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
            Self::lets_through(metadata)
        }

        fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
            if Self::lets_through(metadata) {
                Interest::always()
            } else {
                Interest::never()
            }
        }

        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::DEBUG)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn target(
            endpoint: Option<&str>,
            vars: &[(&str, &str)],
        ) -> Result<Option<Target>, ConfigError> {
            let config = OtelConfig {
                endpoint: endpoint.map(str::to_owned),
                ..OtelConfig::default()
            };
            let env = |name: &str| {
                (vars.iter())
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            };
            Target::resolve(&config, "billing", env)
        }

        #[test]
        fn settings_win_over_the_standard_variables() {
            let vars = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
                ("OTEL_SERVICE_NAME", "payments"),
            ];
            assert_eq!(
                target(None, &vars).unwrap(),
                Some(Target {
                    key: "OTEL_EXPORTER_OTLP_ENDPOINT",
                    url: "http://base:4318/v1/traces".into(),
                    service: "payments".into(),
                })
            );
            let traces = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/spans")];
            let all: Vec<_> = vars.iter().chain(&traces).copied().collect();
            let from_traces = target(None, &all).unwrap().unwrap();
            assert_eq!(from_traces.url, "http://t:4318/spans", "used as it is");
            let configured = target(Some("http://config:4318"), &all).unwrap().unwrap();
            assert_eq!(configured.key, "otel.endpoint");
            assert_eq!(configured.url, "http://config:4318/v1/traces");
            let named = target(Some("http://config:4318"), &[]).unwrap().unwrap();
            assert_eq!(named.service, "billing", "the worker's name");
            assert_eq!(target(None, &[]).unwrap(), None);
            let https = [("OTEL_EXPORTER_OTLP_ENDPOINT", "https://base:4318")];
            let error = target(None, &https).unwrap_err();
            assert_eq!(error.key(), "OTEL_EXPORTER_OTLP_ENDPOINT");
        }

        #[test]
        fn spans_go_under_the_base_url() {
            assert_eq!(
                under_base("http://collector:4318"),
                "http://collector:4318/v1/traces"
            );
            assert_eq!(
                under_base("http://collector:4318/"),
                "http://collector:4318/v1/traces"
            );
            assert_eq!(
                under_base("http://collector:4318/v1/traces"),
                "http://collector:4318/v1/traces"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_ratio_is_a_share() {
        for ratio in [0.0, 0.25, 1.0] {
            let config = OtelConfig {
                sample_ratio: ratio,
                ..OtelConfig::default()
            };
            assert!(config.validate().is_ok(), "{ratio}");
        }
        for ratio in [-0.1, 1.5, f64::NAN] {
            let config = OtelConfig {
                sample_ratio: ratio,
                ..OtelConfig::default()
            };
            let error = config.validate().unwrap_err();
            assert_eq!(error.key(), "otel.sample_ratio", "{ratio}");
        }
    }

    fn load(env: &[(&str, &str)]) -> Result<crate::Config, ConfigError> {
        let env = [
            ("PYTHIA_KAFKA__BROKERS", "localhost:9092"),
            ("PYTHIA_KAFKA__GROUP", "g"),
            ("PYTHIA_KAFKA__TOPICS", "t"),
        ]
        .iter()
        .chain(env)
        .copied();
        crate::Config::from_loader(pythia_core::ConfigLoader::new().no_file().env(env))
    }

    #[test]
    fn settings_come_from_the_environment_too() {
        let config = load(&[
            ("PYTHIA_OTEL__SAMPLE_RATIO", "0.5"),
            ("PYTHIA_OTEL__SERVICE_NAME", "billing"),
        ])
        .unwrap();
        assert_eq!(config.otel.sample_ratio, 0.5);
        assert_eq!(config.otel.service_name.as_deref(), Some("billing"));
        let error = load(&[("PYTHIA_OTEL__SAMPLE_RATE", "0.5")]).unwrap_err();
        assert_eq!(error.key(), "otel.sample_rate");
    }

    #[cfg(not(feature = "otel"))]
    #[test]
    fn an_endpoint_without_the_feature_says_how_to_build() {
        let error = load(&[("PYTHIA_OTEL__ENDPOINT", "http://127.0.0.1:4318")]).unwrap_err();
        assert_eq!(error.key(), "otel.endpoint");
        assert!(error.to_string().contains("--features otel"), "{error}");
        // Blank is unset.
        let blank = OtelConfig {
            endpoint: Some(" ".into()),
            ..OtelConfig::default()
        };
        assert!(blank.validate().is_ok());
    }

    #[cfg(feature = "otel")]
    #[test]
    fn endpoints_are_plain_http_urls() {
        for (endpoint, ok) in [
            ("http://127.0.0.1:4318", true),
            ("http://collector:4318/", true),
            ("https://collector:4318", false),
            ("collector:4318", false),
            ("http://", false),
        ] {
            let config = OtelConfig {
                endpoint: Some(endpoint.into()),
                ..OtelConfig::default()
            };
            let result = config.validate();
            assert_eq!(result.is_ok(), ok, "{endpoint}: {result:?}");
            if let Err(error) = result {
                assert_eq!(error.key(), "otel.endpoint");
            }
        }
    }
}
