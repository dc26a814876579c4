//! Configuration: layered loading with errors that name the key, and the
//! runtime's own settings.
//!
//! Layers, lowest first: defaults set in code, the file (`pythia.toml`, or the
//! path in `PYTHIA_CONFIG`), the environment (`PYTHIA_` prefix, `__` between
//! levels: `PYTHIA_WORKER__MAX_IN_FLIGHT=64`), then values set in code.
//!
//! [`ConfigLoader`] stacks the layers, here; [`WorkerConfig`] (the
//! `[worker]` table, its defaults and checks) is in `worker.rs`;
//! `translate.rs` turns the deserializers' errors into a [`ConfigError`]
//! that names the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use crate::error::ConfigError;

mod translate;
mod worker;

use translate::{enum_values, translate};
pub use worker::WorkerConfig;

use crate::spec::WorkerSpec;
pub(crate) use worker::default_instance_name;

/// The environment variable naming the config file.
pub const CONFIG_PATH_VAR: &str = "PYTHIA_CONFIG";
/// The file read when `PYTHIA_CONFIG` is unset, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "pythia.toml";
const ENV_PREFIX: &str = "PYTHIA_";
/// Variables with the prefix that are not config keys.
const RESERVED_VARS: &[&str] = &[CONFIG_PATH_VAR, "PYTHIA_LOG"];

#[derive(Debug, Clone)]
enum FileChoice {
    /// `PYTHIA_CONFIG` if set (must exist), else `pythia.toml` if it exists.
    Auto,
    Path(PathBuf),
    None,
}

/// Loads configuration from defaults, a file, the environment and code.
///
/// ```
/// use pythia_core::config::{ConfigLoader, WorkerConfig};
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct AppConfig { #[serde(default)] worker: WorkerConfig }
///
/// let config: AppConfig = ConfigLoader::new()
///     .no_file()
///     .env([("PYTHIA_WORKER__MAX_IN_FLIGHT", "64")])
///     .set("worker.shutdown_timeout", "5s")
///     .load()?;
/// assert_eq!(config.worker.max_in_flight, 64);
/// assert_eq!(config.worker.shutdown_timeout, std::time::Duration::from_secs(5));
/// # Ok::<(), pythia_core::config::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    defaults: Vec<(String, config::Value)>,
    overrides: Vec<(String, config::Value)>,
    file: FileChoice,
    env: Option<HashMap<String, String>>,
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigLoader {
    /// A loader that reads the default file and the process environment.
    pub fn new() -> Self {
        Self {
            defaults: Vec::new(),
            overrides: Vec::new(),
            file: FileChoice::Auto,
            env: None,
        }
    }

    /// Reads this file (it must exist) instead of `PYTHIA_CONFIG` / `pythia.toml`.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = FileChoice::Path(path.as_ref().to_owned());
        self
    }

    /// Reads no file.
    pub fn no_file(mut self) -> Self {
        self.file = FileChoice::None;
        self
    }

    /// Uses these variables instead of the process environment.
    pub fn env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// A default for `key` (dotted), below every other layer.
    pub fn default_value(mut self, key: &str, value: impl Into<config::Value>) -> Self {
        self.defaults.push((key.to_owned(), value.into()));
        self
    }

    /// Adds, as defaults, what a worker declares for a queue connector
    /// whose section is `section`: its name, its first topic as
    /// `<section>.<input>`, its output and named sinks, its limits, and its
    /// ordering — `none` unless it declares one, since a queue has no
    /// partitions and its deliveries (up to the prefetch) are processed at
    /// the same time, as sharing the queue between instances needs.
    ///
    /// ```
    /// use pythia_core::WorkerSpec;
    /// use pythia_core::config::ConfigLoader;
    /// #[derive(serde::Deserialize)]
    /// struct Redis { input: String }
    /// #[derive(serde::Deserialize)]
    /// struct Config { redis: Redis, worker: serde_json::Value }
    ///
    /// let spec = WorkerSpec::new("jobs").with_topics(&["jobs.in"]);
    /// let config: Config = ConfigLoader::new()
    ///     .no_file()
    ///     .queue_spec_defaults(&spec, "redis", "input")
    ///     .load()?;
    /// assert_eq!(config.redis.input, "jobs.in");
    /// assert_eq!(config.worker["ordering"], "none");
    /// # Ok::<(), pythia_core::config::ConfigError>(())
    /// ```
    pub fn queue_spec_defaults(mut self, spec: &WorkerSpec, section: &str, input: &str) -> Self {
        if !spec.name.is_empty() {
            self = self.default_value("worker.name", spec.name);
        }
        if let Some(topic) = spec.topics.first() {
            self = self.default_value(&format!("{section}.{input}"), *topic);
        }
        if let Some(output) = spec.output {
            self = self.default_value(&format!("{section}.output"), output);
        }
        for (name, target) in spec.sinks {
            self = self.default_value(&format!("{section}.sinks.{name}"), *target);
        }
        if let Some(n) = spec.max_in_flight {
            self = self.default_value("worker.max_in_flight", n as u64);
        }
        if let Some(n) = spec.partition_buffer {
            self = self.default_value("worker.partition_buffer", n as u64);
        }
        let ordering = spec.ordering.map_or("none", |o| o.as_str());
        self.default_value("worker.ordering", ordering)
    }

    /// A value for `key` (dotted) that wins over file and environment.
    pub fn set(mut self, key: &str, value: impl Into<config::Value>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }

    /// Builds the layers and deserializes them into `T`.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let mut builder = config::Config::builder();
        for (key, value) in &self.defaults {
            builder = builder
                .set_default(key.as_str(), value.clone())
                .map_err(|e| ConfigError::invalid(key, e.to_string()))?;
        }
        let env = match &self.env {
            Some(vars) => vars.clone(),
            None => std::env::vars().collect(),
        };
        if let Some(path) = self.config_file(&env)? {
            let shown = path.display().to_string();
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
            // Parse errors surface at build time; name the file in them.
            builder = builder.add_source(env_source(&env));
            return self.finish(builder, Some(&shown));
        }
        builder = builder.add_source(env_source(&env));
        self.finish(builder, None)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        mut builder: config::ConfigBuilder<config::builder::DefaultState>,
        file: Option<&str>,
    ) -> Result<T, ConfigError> {
        for (key, value) in &self.overrides {
            builder = builder
                .set_override(key.as_str(), value.clone())
                .map_err(|e| ConfigError::invalid(key, e.to_string()))?;
        }
        let built = builder.build().map_err(|e| ConfigError::File {
            path: file.unwrap_or("<environment>").to_owned(),
            reason: e.to_string(),
        })?;
        serde_path_to_error::deserialize(built).map_err(|e| {
            let path = e.path().to_string();
            translate(&path, e.into_inner(), || enum_values::<T>(&path))
        })
    }

    fn config_file(&self, env: &HashMap<String, String>) -> Result<Option<PathBuf>, ConfigError> {
        let path = match &self.file {
            FileChoice::None => return Ok(None),
            FileChoice::Path(path) => path.clone(),
            FileChoice::Auto => match env.get(CONFIG_PATH_VAR) {
                Some(path) => PathBuf::from(path),
                None => {
                    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                    return Ok(default.exists().then_some(default));
                }
            },
        };
        if !path.exists() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: format!(
                    "no such file (set {CONFIG_PATH_VAR} to an existing TOML file, or unset it)"
                ),
            });
        }
        Ok(Some(path))
    }
}

/// The `PYTHIA_*` variables as a config source, reserved names left out.
fn env_source(env: &HashMap<String, String>) -> config::Environment {
    let vars: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !RESERVED_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config::Environment::with_prefix("PYTHIA")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars))
}

// After the code: the import-cycle test reads a file only up to its first
// `#[cfg(test)]`.
#[cfg(test)]
pub(crate) mod examples;

#[cfg(test)]
mod tests {
    use super::examples::{App, loader};
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("pythia-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pythia.toml");
        std::fs::write(
            &file,
            "[worker]\nmax_in_flight = 10\npartition_buffer = 20\n[source]\nbrokers = \"file:9092\"\n[source.properties]\n\"fetch.max.bytes\" = \"100\"\n",
        )
        .unwrap();
        let app: App = ConfigLoader::new()
            .file(&file)
            .env([
                ("PYTHIA_WORKER__PARTITION_BUFFER", "30"),
                ("PYTHIA_SOURCE__BROKERS", "env:9092"),
                ("PYTHIA_CONFIG", "ignored-reserved"),
                ("OTHER", "x"),
            ])
            .default_value("worker.name", "from-default")
            .set("source.brokers", "code:9092")
            .load()
            .unwrap();
        assert_eq!(app.worker.name.as_deref(), Some("from-default"));
        assert_eq!(app.worker.max_in_flight, 10, "file over defaults");
        assert_eq!(app.worker.partition_buffer, 30, "environment over file");
        assert_eq!(
            app.source.brokers.as_deref(),
            Some("code:9092"),
            "code over all"
        );
        assert_eq!(
            app.source
                .properties
                .get("fetch.max.bytes")
                .map(String::as_str),
            Some("100"),
            "dotted keys in tables stay whole"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = loader()
            .env([("PYTHIA_WORKER__MAX_IN_FLIGHT", "lots")])
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.max_in_flight", "{err}");
        let err = loader()
            .set("worker.shutdown_timeout", "soon")
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.shutdown_timeout", "{err}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = ConfigLoader::new()
            .env([("PYTHIA_CONFIG", "/nonexistent/pythia.toml")])
            .load::<App>()
            .unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
        assert!(err.to_string().contains("PYTHIA_CONFIG"));
    }
}
