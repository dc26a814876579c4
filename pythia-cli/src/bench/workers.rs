//! The Pythia side: a pass-through worker and a one-stage pipeline, run the
//! way the connectors' workers run them (their source and sink, the core
//! runtime), with an acknowledgement counter around the source.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use pythia_kafka::core::WorkerConfig;
use pythia_kafka::core::connector::{Runtime, Sink, Source};
use pythia_kafka::{
    Config, Context, KafkaSink, KafkaSource, Message, Outputs, Process, ProcessError, Raw, Worker,
};

use super::progress::{Counted, Progress};

/// Does nothing with each message.
pub(crate) struct PassThrough;

impl Worker for PassThrough {
    type Codec = Raw;
}

impl Process for PassThrough {
    type Input = Bytes;
    type Output = ();

    async fn process(&self, msg: Message<Bytes>, _: &Context) -> Result<Outputs<()>, ProcessError> {
        std::hint::black_box(msg.payload());
        Ok(Outputs::none())
    }
}

/// Sends each payload on to the output topic.
pub(crate) struct Forward;

impl Worker for Forward {
    type Codec = Raw;
}

impl Process for Forward {
    type Input = Bytes;
    type Output = Bytes;

    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        Ok(Outputs::one(msg.into_payload()))
    }
}

/// Runs `worker` on Kafka with `config` until `progress` is finished (or `timeout`).
pub(crate) async fn run<W: Worker>(
    worker: W,
    config: &Config,
    timeout: Duration,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    config.validate()?;
    let name = config.name().to_owned();
    let sink = Arc::new(KafkaSink::new(&config.kafka)?);
    let source = KafkaSource::new(config, &name)?;
    let on = On {
        config: config.worker.clone(),
        name: &name,
        timeout,
    };
    on.run(worker, source, sink, progress).await
}

/// Where and how long a worker runs.
pub(crate) struct On<'a> {
    pub(crate) config: WorkerConfig,
    /// Labels logs and metrics.
    pub(crate) name: &'a str,
    pub(crate) timeout: Duration,
}

impl On<'_> {
    /// Runs `worker` on `source` and `sink` until `progress` is finished
    /// (or the timeout), with every acknowledgement of the source counted.
    pub(crate) async fn run<W: Worker, S: Source, K: Sink>(
        self,
        worker: W,
        source: S,
        sink: Arc<K>,
        progress: Arc<Progress>,
    ) -> anyhow::Result<()> {
        let source = Counted {
            inner: source,
            progress: progress.clone(),
        };
        let runtime = Runtime::with_shared(self.config, self.name, Arc::new(worker), source, sink);
        let until = progress.clone();
        let timeout = self.timeout;
        runtime
            .run(async move {
                let _ = tokio::time::timeout(timeout, until.finished()).await;
            })
            .await
            .context("the pythia worker failed")?;
        if !progress.is_finished() {
            bail!("the pythia worker did not finish within {timeout:?}");
        }
        Ok(())
    }
}
