//! Configuration: layered loading with errors that name the key, and the
//! runtime's own settings.
//!
//! Layers, lowest first: defaults set in code, the file (`pythia.toml`, or the
//! path in `PYTHIA_CONFIG`), the environment (`PYTHIA_` prefix, `__` between
//! levels: `PYTHIA_WORKER__MAX_IN_FLIGHT=64`), then values set in code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::dead_letter::DeadLetterConfig;
pub use crate::error::ConfigError;
use crate::retry::RetryConfig;
use crate::spec::MessageOrder;

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

/// Turns a deserialization error at `path` into an error naming the full key.
/// `allowed` lists the values of the enum at `path`, for errors that do not.
fn translate(
    path: &str,
    error: config::ConfigError,
    allowed: impl FnOnce() -> Option<Vec<String>>,
) -> ConfigError {
    let message = match &error {
        config::ConfigError::Message(m) => m.clone(),
        config::ConfigError::At { error, .. } => error.to_string(),
        other => other.to_string(),
    };
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        if parent == name || parent.ends_with(&format!(".{name}")) {
            parent.to_owned()
        } else if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = tail
            .trim_start_matches(',')
            .trim()
            .replace("expected one of", "allowed keys are")
            .replace("expected", "allowed:");
        return ConfigError::UnknownKey {
            key: join(name),
            allowed: if allowed.is_empty() {
                "no keys are allowed here".to_owned()
            } else {
                allowed
            },
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return ConfigError::missing(join(name), "this key is required");
    }
    match EnumError::parse(&message) {
        Some(EnumError::UnknownVariant { value, expected }) => {
            ConfigError::invalid(parent, not_one_of(Some(&value), &variant_names(&expected)))
        }
        Some(EnumError::NoVariant { value }) => {
            let reason = match allowed() {
                Some(names) => not_one_of(value.as_deref(), &names),
                None => match value {
                    Some(value) => format!("`{value}` is not an allowed value"),
                    None => "must be a string naming one of the allowed values".to_owned(),
                },
            };
            ConfigError::invalid(parent, reason)
        }
        None => ConfigError::invalid(parent, message),
    }
}

/// A value that names no variant of an enum setting, as the deserializers say it.
#[derive(Debug, PartialEq)]
enum EnumError {
    /// serde's own message, which lists the variants: ``unknown variant `x`,
    /// expected one of `a`, `b` ``.
    UnknownVariant { value: String, expected: String },
    /// The config crate's messages, which do not: `enum Ordering does not
    /// have variant constructor x`, or, for a value that is no string, `value
    /// of enum Ordering should be represented by …`.
    NoVariant { value: Option<String> },
}

impl EnumError {
    fn parse(message: &str) -> Option<Self> {
        if let Some(rest) = message.strip_prefix("unknown variant `") {
            let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
            return Some(Self::UnknownVariant {
                value: value.to_owned(),
                expected: tail.to_owned(),
            });
        }
        if let Some((_, value)) = message
            .strip_prefix("enum ")
            .and_then(|m| m.split_once(" does not have variant constructor "))
        {
            return Some(Self::NoVariant {
                value: Some(value.to_owned()),
            });
        }
        message
            .starts_with("value of enum ")
            .then_some(Self::NoVariant { value: None })
    }
}

/// The names quoted in serde's list of variants: `` expected one of `a`, `b` ``.
fn variant_names(expected: &str) -> Vec<String> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// "`x` is not one of: a, b", or "must be one of: a, b" without the value.
fn not_one_of(value: Option<&str>, names: &[String]) -> String {
    match value {
        Some(value) => format!("`{value}` is not one of: {}", names.join(", ")),
        None => format!("must be one of: {}", names.join(", ")),
    }
}

/// The values allowed for the enum setting at dotted `path` of `T`. The
/// config crate's enum errors do not list them, so `T` is read once more
/// from that key alone, holding a value that names no variant, through
/// serde_json, whose error lists them. `None` if that error is a different
/// one (a setting on the way that has no default, say).
fn enum_values<T: DeserializeOwned>(path: &str) -> Option<Vec<String>> {
    if path.is_empty() || path.contains('[') {
        return None;
    }
    let mut value = serde_json::Value::String(String::new());
    for segment in path.rsplit('.') {
        value = serde_json::Value::Object([(segment.to_owned(), value)].into_iter().collect());
    }
    let error = serde_path_to_error::deserialize::<_, T>(value).err()?;
    if error.path().to_string() != path {
        return None;
    }
    match EnumError::parse(&error.into_inner().to_string())? {
        EnumError::UnknownVariant { expected, .. } => Some(variant_names(&expected)),
        EnumError::NoVariant { .. } => None,
    }
}

/// Settings of the runtime, under `[worker]`.
///
/// ```toml
/// [worker]
/// name = "billing"           # in logs and metrics; defaults to the group
/// # instance = "billing-0"   # this copy of the worker; defaults to "<host name>-<pid>"
/// max_in_flight = 1024       # messages processing at once (until their outputs are handed to the sink)
/// partition_buffer = 5000    # fetched messages held per partition before it pauses
/// shutdown_timeout = "30s"   # deadline of the whole shutdown: drain, commit, leave
/// revoke_timeout = "10s"     # drain deadline for partitions taken by a rebalance
/// max_message_bytes = 1048576  # larger payloads are dead-lettered unprocessed (default: no limit)
/// ordering = "partition"     # partition | key | none
/// batch_size = 1             # > 1: process_batch gets up to this many messages
/// batch_timeout = "20ms"     # ... or what arrived within this time
/// cpu_threads = 0            # Context::compute's pool; 0 = one per core
/// compute_inline_below = "10us"  # compute() runs work cheaper than this inline; "0s" = never
///
/// # Tables last: every key after a [table] line belongs to that table.
/// [worker.retry]             # see RetryConfig
/// max_attempts = 3
///
/// [worker.dead_letter]       # see DeadLetterConfig
/// topic = "{topic}.dlq"
/// on_failure = "stop"        # stop | skip: a dead letter refused even reduced
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The worker's name in logs and metrics.
    pub name: Option<String>,
    /// The name of this copy of the worker (`PYTHIA_WORKER__INSTANCE`), told
    /// apart from the other copies in logs, in the `pythia_worker_info`
    /// metric, in the Kafka client id and by [`Context::instance`](crate::Context::instance).
    /// Unset, it is the host name and the process id, `<host>-<pid>` (the
    /// host name from `$HOSTNAME`, which Kubernetes sets to the pod's name):
    /// see [`WorkerConfig::instance_name`].
    pub instance: Option<String>,
    /// Messages that may be processing at once, across all partitions of this
    /// instance; a message holds its place until its outputs are handed to the
    /// sink (awaiting delivery, it counts against `partition_buffer`).
    pub max_in_flight: usize,
    /// Messages a partition may hold, fetched and waiting for their turn or
    /// processed and awaiting delivery; at this many its fetching pauses (the
    /// consumer keeps polling), and it resumes at half. A few hundred more
    /// may have been read by then: the source reads up to 256 messages of a
    /// partition per pass and runs at most two batches ahead of the runtime. A partition flowing at rate R with outputs that take L to
    /// be delivered holds about R × L awaiting delivery alone (100,000 msg/s
    /// at 10 ms: 1,000), so a buffer much smaller than that caps its rate.
    pub partition_buffer: usize,
    /// The whole shutdown's deadline: in-flight messages get all but the last
    /// fifth of it (at most 5 s, kept for the final commit and leaving the
    /// group); what has not finished by then is abandoned and redelivered after
    /// a restart. Keep Kubernetes' `terminationGracePeriodSeconds` above it.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a rebalance waits for a revoked partition's in-flight messages.
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
    /// The largest payload processed; larger ones go to the dead-letter topic
    /// unprocessed — reduced to a prefix if they exceed the producer's limit
    /// too (see [`dead_letter`](crate::dead_letter)), so a valid message over
    /// this limit never stops its partition. `None`: no limit beyond the
    /// client's.
    pub max_message_bytes: Option<usize>,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// Where messages go when they cannot be processed.
    pub dead_letter: DeadLetterConfig,
    /// Which messages of a partition may be processed at the same time.
    pub ordering: MessageOrder,
    /// Messages handed to `process_batch` at once (1: no batches). Batches
    /// need `ordering = "partition"`.
    pub batch_size: usize,
    /// How long a batch waits to fill up before it is processed anyway.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Threads of the pool `Context::compute` runs CPU work on; 0 for one per core.
    pub cpu_threads: usize,
    /// `Context::compute` runs work inline, on the calling task, while its
    /// recent runs took less than this: handing work to the pool and waking
    /// the task again costs a few microseconds, more than such work saves.
    /// Zero sends all work to the pool.
    #[serde(with = "humantime_serde")]
    pub compute_inline_below: Duration,
}

/// `<host>-<pid>`: the name of a copy of the worker when `worker.instance`
/// is unset.
pub(crate) fn default_instance_name() -> String {
    format!(
        "{}-{}",
        host_name(|name| std::env::var(name).ok()),
        std::process::id()
    )
}

/// The host name: `$HOSTNAME` (the pod's name in Kubernetes; shells set it
/// without exporting it, so it is often missing) or `%COMPUTERNAME%`, else
/// the kernel's, else `localhost`.
fn host_name(var: impl Fn(&str) -> Option<String>) -> String {
    let from_env = ["HOSTNAME", "COMPUTERNAME"].into_iter().filter_map(var);
    let from_files = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .into_iter()
        .filter_map(|path| std::fs::read_to_string(path).ok());
    from_env
        .chain(from_files)
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: None,
            instance: None,
            max_in_flight: 1024,
            partition_buffer: 5000,
            shutdown_timeout: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            max_message_bytes: None,
            retry: RetryConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            ordering: MessageOrder::Partition,
            batch_size: 1,
            batch_timeout: Duration::from_millis(20),
            cpu_threads: 0,
            compute_inline_below: crate::compute::DEFAULT_INLINE_BELOW,
        }
    }
}

impl WorkerConfig {
    /// The name of this copy of the worker: `worker.instance` if set, else
    /// the host name and the process id, `<host>-<pid>`.
    ///
    /// ```
    /// use pythia_core::WorkerConfig;
    /// let mut config = WorkerConfig::default();
    /// // e.g. "billing-7d9f8-x2k4q-1" in a Kubernetes pod, "laptop-4711" elsewhere
    /// assert!(config.instance_name().ends_with(&format!("-{}", std::process::id())));
    /// config.instance = Some("billing-eu-1".into()); // PYTHIA_WORKER__INSTANCE=billing-eu-1
    /// assert_eq!(config.instance_name(), "billing-eu-1");
    /// ```
    pub fn instance_name(&self) -> String {
        match self.instance.as_deref().map(str::trim) {
            Some(instance) if !instance.is_empty() => instance.to_owned(),
            _ => default_instance_name(),
        }
    }

    /// Checks ranges; each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .instance
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "worker.instance",
                "must not be empty; leave it unset for \"<host name>-<pid>\"",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "worker.max_in_flight",
                "must be at least 1 (1 processes one message at a time)",
            ));
        }
        if self.partition_buffer == 0 {
            return Err(ConfigError::invalid(
                "worker.partition_buffer",
                "must be at least 1",
            ));
        }
        if self.shutdown_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "worker.shutdown_timeout",
                "must be longer than zero, e.g. \"30s\"",
            ));
        }
        if self.max_message_bytes == Some(0) {
            return Err(ConfigError::invalid(
                "worker.max_message_bytes",
                "must be at least 1; leave it unset for no limit",
            ));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                "must be at least 1 (1 turns batches off)",
            ));
        }
        if self.batch_size > 1 && self.ordering != MessageOrder::Partition {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                "batches keep a partition's order: use them with worker.ordering = \"partition\", or set batch_size = 1",
            ));
        }
        if self.batch_size > self.max_in_flight {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                format!(
                    "must not exceed worker.max_in_flight ({}): a batch holds that many messages in flight",
                    self.max_in_flight
                ),
            ));
        }
        if self.compute_inline_below > Duration::from_millis(1) {
            return Err(ConfigError::invalid(
                "worker.compute_inline_below",
                "must be at most \"1ms\": work run inline holds up the tokio thread that runs it (default \"10us\"; \"0s\" always uses the pool)",
            ));
        }
        self.retry.validate()?;
        self.dead_letter.validate()
    }
}

/// The TOML examples in the docs, loaded by the real loader in tests, so
/// that an example copied as it is works.
#[cfg(test)]
pub(crate) mod examples {
    use super::*;

    /// The ```` ```toml ```` block of the doc comment of `pub struct {item}` in
    /// `source`, with the `/// ` taken off.
    pub(crate) fn toml_example(source: &str, item: &str) -> String {
        let end = source
            .find(&format!("\npub struct {item} "))
            .unwrap_or_else(|| panic!("no `pub struct {item}` in the source"));
        let start = source[..end]
            .rfind("/// ```toml\n")
            .unwrap_or_else(|| panic!("no TOML example in the docs of {item}"));
        let lines: Vec<&str> = source[start..end]
            .lines()
            .skip(1)
            .map(|line| line.trim_start())
            .take_while(|line| *line != "/// ```")
            .map(|line| line.strip_prefix("///").unwrap_or(line))
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .collect();
        assert!(
            source[start..end].contains("\n/// ```\n"),
            "the TOML example of {item} is not closed before the item"
        );
        lines.join("\n") + "\n"
    }

    /// What a `pythia.toml` holding just `toml` gives `[worker]`, validated.
    pub(crate) fn load_worker(toml: &str, name: &str) -> Result<WorkerConfig, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            worker: WorkerConfig,
        }
        let dir = std::env::temp_dir().join(format!("pythia-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).expect("write the example");
        let file: File = ConfigLoader::new()
            .file(&path)
            .env::<&str, &str>([])
            .load()?;
        file.worker.validate()?;
        Ok(file.worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct App {
        #[serde(default)]
        worker: WorkerConfig,
        #[serde(default)]
        source: Source,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Source {
        brokers: Option<String>,
        properties: std::collections::BTreeMap<String, String>,
    }

    fn loader() -> ConfigLoader {
        ConfigLoader::new().no_file().env::<&str, &str>([])
    }

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
    fn unknown_key_is_named_with_the_allowed_ones() {
        let err = loader()
            .set("worker.max_inflight", 3)
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.max_inflight");
        let text = err.to_string();
        assert!(text.contains("max_in_flight"), "{text}");

        let err = loader()
            .env([("PYTHIA_WROKER__NAME", "x")])
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "wroker");
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

    #[test]
    fn zero_limits_are_rejected_by_name() {
        let config = WorkerConfig {
            max_in_flight: 0,
            ..WorkerConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key(), "worker.max_in_flight");
    }

    #[test]
    fn compute_inline_below_reads_durations_and_caps_inline_work() {
        let app: App = loader()
            .env([("PYTHIA_WORKER__COMPUTE_INLINE_BELOW", "25us")])
            .load()
            .unwrap();
        assert_eq!(app.worker.compute_inline_below, Duration::from_micros(25));
        app.worker.validate().unwrap();
        assert_eq!(
            WorkerConfig::default().compute_inline_below,
            Duration::from_micros(10)
        );
        let config = WorkerConfig {
            compute_inline_below: Duration::from_millis(5),
            ..WorkerConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), "worker.compute_inline_below");
        assert!(err.to_string().contains("\"0s\""), "{err}");
    }

    #[test]
    fn the_worker_config_example_loads_as_written() {
        let toml = examples::toml_example(include_str!("config.rs"), "WorkerConfig");
        assert!(toml.starts_with("[worker]\n"), "{toml}");
        let worker = examples::load_worker(&toml, "worker")
            .unwrap_or_else(|e| panic!("{e}\nin the example:\n{toml}"));
        // Each key landed in the table it is shown in.
        assert_eq!(worker.name.as_deref(), Some("billing"));
        assert_eq!(worker.max_message_bytes, Some(1_048_576));
        assert_eq!(worker.ordering, MessageOrder::Partition);
        assert_eq!(worker.batch_size, 1);
        assert_eq!(worker.batch_timeout, Duration::from_millis(20));
        assert_eq!(worker.compute_inline_below, Duration::from_micros(10));
        assert_eq!(worker.retry.max_attempts, 3);
        assert_eq!(worker.dead_letter.topic, "{topic}.dlq");
    }

    #[test]
    fn the_dead_letter_config_example_loads_and_shows_the_defaults() {
        let toml = examples::toml_example(include_str!("dead_letter.rs"), "DeadLetterConfig");
        assert!(toml.starts_with("[worker.dead_letter]\n"), "{toml}");
        let worker = examples::load_worker(&toml, "dead_letter")
            .unwrap_or_else(|e| panic!("{e}\nin the example:\n{toml}"));
        assert_eq!(worker.dead_letter, DeadLetterConfig::default());
    }

    #[test]
    fn a_key_after_a_table_line_is_caught_by_the_example_check() {
        // What the WorkerConfig example used to do: `ordering` under [worker.retry].
        let err = examples::load_worker(
            "[worker]\nname = \"billing\"\n[worker.retry]\nmax_attempts = 3\nordering = \"key\"\n",
            "misplaced",
        )
        .unwrap_err();
        assert_eq!(err.key(), "worker.retry.ordering", "{err}");
    }

    #[test]
    fn an_enum_key_names_itself_and_lists_its_values() {
        let err = loader()
            .env([("PYTHIA_WORKER__ORDERING", "fast")])
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.ordering", "{err}");
        assert_eq!(
            err.to_string(),
            "invalid value for `worker.ordering`: `fast` is not one of: partition, key, none"
        );
        assert!(!err.to_string().contains("Ordering"), "no Rust type names");

        // A value that is no string at all.
        let err = loader()
            .env([("PYTHIA_WORKER__ORDERING", "1")])
            .load::<App>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `worker.ordering`: must be one of: partition, key, none"
        );

        // Enums that check their own values keep their message.
        let err = loader()
            .set("worker.dead_letter.on_failure", "ignore")
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.dead_letter.on_failure", "{err}");
        assert!(err.to_string().contains("stop") && err.to_string().contains("skip"));
    }

    #[test]
    fn enum_errors_are_read_from_either_deserializer() {
        assert_eq!(
            EnumError::parse("unknown variant `x`, expected one of `a`, `b`, `c`"),
            Some(EnumError::UnknownVariant {
                value: "x".into(),
                expected: ", expected one of `a`, `b`, `c`".into()
            })
        );
        assert_eq!(variant_names(", expected `a` or `b`"), ["a", "b"]);
        assert_eq!(
            EnumError::parse("enum Ordering does not have variant constructor x"),
            Some(EnumError::NoVariant {
                value: Some("x".into())
            })
        );
        assert_eq!(
            EnumError::parse(
                "value of enum Ordering should be represented by either string or table with exactly one key"
            ),
            Some(EnumError::NoVariant { value: None })
        );
        assert_eq!(EnumError::parse("invalid type: string"), None);
        assert_eq!(
            enum_values::<App>("worker.ordering"),
            Some(vec!["partition".into(), "key".into(), "none".into()])
        );
        assert_eq!(enum_values::<App>("worker.max_in_flight"), None);
    }

    #[test]
    fn the_instance_is_configured_or_the_host_and_pid() {
        let app: App = loader()
            .env([("PYTHIA_WORKER__INSTANCE", "billing-eu-1")])
            .load()
            .unwrap();
        assert_eq!(app.worker.instance_name(), "billing-eu-1");

        let pid = format!("-{}", std::process::id());
        let default = WorkerConfig::default().instance_name();
        assert!(
            default.ends_with(&pid) && default.len() > pid.len(),
            "{default}"
        );

        let err = loader()
            .env([("PYTHIA_WORKER__INSTANCE", " ")])
            .load::<App>()
            .unwrap()
            .worker
            .validate()
            .unwrap_err();
        assert_eq!(err.key(), "worker.instance");
    }

    #[test]
    fn the_host_name_comes_from_the_environment_first() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(host_name(env(&[("HOSTNAME", "pod-7f9c")])), "pod-7f9c");
        assert_eq!(
            host_name(env(&[("HOSTNAME", " "), ("COMPUTERNAME", "DESK-1")])),
            "DESK-1"
        );
        // Neither set: the kernel's name, or `localhost`; never empty.
        assert!(!host_name(env(&[])).is_empty());
    }
}
