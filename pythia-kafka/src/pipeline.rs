//! Several workers in one process: the stages of a pipeline, for development.
//!
//! In production each stage of a pipeline (ingest → validate → store, joined by
//! topics) is its own binary that scales on its own. During development the
//! same stages run together in one process, on one embedded broker, with one
//! shutdown.

use std::future::Future;
use std::pin::Pin;

use futures::future::BoxFuture;
use pythia_core::{ConfigError, ConfigLoader, RunSummary, Status, Worker};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::embedded::EmbeddedBroker;
use crate::run::KafkaWorker;

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;
type StageRun = Box<dyn FnOnce(Shutdown) -> BoxFuture<'static, StageResult> + Send>;
type StageResult = Result<RunSummary, pythia_core::Error>;
type Connect =
    Box<dyn FnOnce(Config) -> Result<(watch::Receiver<Status>, StageRun), pythia_core::Error>>;

/// Collects the stages of a [`Pipeline`].
pub struct PipelineBuilder {
    base: ConfigLoader,
    stages: Vec<(String, Result<Config, ConfigError>, Connect)>,
}

/// What one stage did in a pipeline run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StageSummary {
    /// The stage's worker name.
    pub name: String,
    /// Its run summary.
    pub summary: RunSummary,
}

/// The stages of a pipeline, connected and subscribed, run together.
///
/// Each stage's configuration starts from its worker's declared spec (name,
/// group, topics, sinks), which wins over the shared file and environment so
/// that stages keep their own topology; everything else (brokers, client
/// properties, limits) comes from the shared configuration. With
/// `kafka.brokers = "embedded"` all stages share one in-process broker.
///
/// ```no_run
/// use pythia_kafka::prelude::*;
/// use pythia_kafka::ConfigLoader;
///
/// #[derive(Worker)]
/// #[pythia(topic = "lines", output = "words", codec = (pythia_kafka::Utf8, pythia_kafka::Utf8))]
/// struct Split;
/// impl Process for Split {
///     type Input = String;
///     type Output = String;
///     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<String>, ProcessError> {
///         Ok(Outputs::many(msg.payload().split_whitespace().map(str::to_owned).collect::<Vec<_>>()))
///     }
/// }
///
/// #[derive(Worker)]
/// #[pythia(topic = "words", codec = "utf8")]
/// struct Print;
/// impl Process for Print {
///     type Input = String;
///     type Output = ();
///     async fn process(&self, msg: Message<String>, _: &Context) -> Result<Outputs<()>, ProcessError> {
///         println!("{}", msg.payload());
///         Ok(Outputs::none())
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), pythia_kafka::core::Error> {
///     let pipeline = Pipeline::builder(ConfigLoader::new().default_value("kafka.brokers", "embedded"))
///         .stage(Split)
///         .stage(Print)
///         .build()?;
///     println!("brokers: {}", pipeline.brokers());
///     pipeline.run(pythia_kafka::core::shutdown::signal()).await?;
///     Ok(())
/// }
/// ```
pub struct Pipeline {
    stages: Vec<(String, watch::Receiver<Status>, StageRun)>,
    brokers: String,
    // Lives as long as the run when `kafka.brokers = "embedded"`.
    _broker: Option<EmbeddedBroker>,
}

impl PipelineBuilder {
    /// Adds a stage: `worker`, configured from its spec and the shared
    /// loader. Pass an `Arc` of a worker to keep a handle on it (to read its
    /// state after the run, say).
    pub fn stage<W: Worker>(mut self, worker: W) -> Self {
        let loader = Config::spec_defaults(self.base.clone(), &W::SPEC);
        let loader = pin_topology(loader, &W::SPEC);
        let config = Config::from_loader(loader);
        let name = config
            .as_ref()
            .map_or_else(|_| W::SPEC.name.to_owned(), |c| c.name().to_owned());
        let connect: Connect = Box::new(move |config| {
            let instance = KafkaWorker::connect(worker, config)?;
            let status = instance.status();
            let run: StageRun = Box::new(move |shutdown| Box::pin(instance.run(shutdown)));
            Ok((status, run))
        });
        self.stages.push((name, config, connect));
        self
    }

    /// Checks every stage's configuration, starts the embedded broker if asked
    /// (creating every stage's topics), and connects the stages.
    pub fn build(self) -> Result<Pipeline, pythia_core::Error> {
        if self.stages.is_empty() {
            return Err(ConfigError::invalid(
                "pipeline",
                "has no stages: add them with .stage(worker)",
            )
            .into());
        }
        let mut configs = Vec::with_capacity(self.stages.len());
        for (name, config, _) in &self.stages {
            let config = config.clone().map_err(|e| {
                ConfigError::invalid(e.key().to_owned(), format!("in stage `{name}`: {e}"))
            })?;
            configs.push(config);
        }
        let broker = if configs.iter().any(|c| c.kafka.is_embedded()) {
            let broker = EmbeddedBroker::start().map_err(crate::KafkaError::from)?;
            for config in configs.iter_mut().filter(|c| c.kafka.is_embedded()) {
                config.use_embedded(&broker)?;
            }
            Some(broker)
        } else {
            None
        };
        let brokers = configs[0].kafka.brokers.clone().unwrap_or_default();
        let mut stages = Vec::with_capacity(configs.len());
        for ((name, _, connect), config) in self.stages.into_iter().zip(configs) {
            let (status, run) = connect(config)?;
            stages.push((name, status, run));
        }
        Ok(Pipeline {
            stages,
            brokers,
            _broker: broker,
        })
    }
}

/// In a pipeline the stages share one file and environment; a stage's declared
/// topology must not be replaced by a shared `PYTHIA_KAFKA__TOPICS`.
fn pin_topology(mut loader: ConfigLoader, spec: &pythia_core::WorkerSpec) -> ConfigLoader {
    if !spec.name.is_empty() {
        loader = loader
            .set("worker.name", spec.name)
            .set("kafka.group", spec.group_or_name());
    }
    if !spec.topics.is_empty() {
        loader = loader.set("kafka.topics", spec.topics.join(","));
    }
    if let Some(output) = spec.output {
        loader = loader.set("kafka.output_topic", output);
    }
    for (name, topic) in spec.sinks {
        loader = loader.set(&format!("kafka.sinks.{name}"), *topic);
    }
    loader
}

impl Pipeline {
    /// Starts collecting stages; `base` holds the settings they share (it reads
    /// `pythia.toml` and `PYTHIA_*` variables like any loader).
    pub fn builder(base: ConfigLoader) -> PipelineBuilder {
        PipelineBuilder {
            base,
            stages: Vec::new(),
        }
    }

    /// The bootstrap servers the stages use (the embedded broker's address when
    /// it runs), for producing input or inspecting topics.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Each stage's name and status.
    pub fn statuses(&self) -> Vec<(&str, watch::Receiver<Status>)> {
        self.stages
            .iter()
            .map(|(name, status, _)| (name.as_str(), status.clone()))
            .collect()
    }

    /// Runs every stage until `shutdown` resolves or a stage fails; then all
    /// stages drain, commit and leave. Returns each stage's summary, or the
    /// first stage's error.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Vec<StageSummary>, pythia_core::Error> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (index, (name, _, run)) in self.stages.into_iter().enumerate() {
            let stop = stop.clone();
            let run = run(Box::pin(async move { stop.cancelled().await }));
            tasks.spawn(async move { (index, name, run.await) });
        }
        let mut results = Vec::new();
        let mut first_error = None;
        tokio::pin!(shutdown);
        let mut shutdown_done = false;
        while !tasks.is_empty() {
            tokio::select! {
                () = &mut shutdown, if !shutdown_done => {
                    shutdown_done = true;
                    stop.cancel();
                }
                Some(joined) = tasks.join_next() => {
                    let (index, name, result) = joined.map_err(|e| {
                        pythia_core::Error::Source(pythia_core::SourceError::new(format!(
                            "a pipeline stage panicked: {e}"
                        )))
                    })?;
                    match result {
                        Ok(summary) => results.push((index, StageSummary { name, summary })),
                        Err(error) => {
                            // One stage failed: the others drain and stop too.
                            stop.cancel();
                            first_error.get_or_insert(error);
                        }
                    }
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        results.sort_by_key(|(index, _)| *index);
        Ok(results.into_iter().map(|(_, s)| s).collect())
    }
}
