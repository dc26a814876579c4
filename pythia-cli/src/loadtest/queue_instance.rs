//! One instance of a load test on a work queue: a Pythia worker process run
//! the way a user's is (`RabbitWorker`, `RedisWorker` or `NatsWorker`,
//! configured by `PYTHIA_*` variables, which the load test sets), consuming
//! the shared input with its prefetch.
//!
//! For each message it does the simulated work and then outputs one record
//! to the output queue (list, stream, subject): `<id u64><instance
//! u32><latency_us u64>`, little endian, the id being the load's message
//! number (the payload's first 8 bytes) and the latency measured from the
//! send time in the next 8. An output counts only once the broker confirmed
//! it, and the input is acknowledged only after that, so the load test
//! counts what the workers wrote, not what they logged.
//!
//! It stops (stops consuming, drains, acks, closes) when its stdin closes,
//! or on SIGTERM / SIGINT.

use std::io::Read;

use anyhow::Context as _;
use bytes::Bytes;
use pythia_kafka::core::WorkerSpec;
use pythia_kafka::{ConfigLoader, Context, Message, Outputs, Process, ProcessError, Raw, Worker};
use pythia_nats::NatsWorker;
use pythia_rabbitmq::RabbitWorker;
use pythia_redis::RedisWorker;

use super::instance::now_us;
use super::work::Work;
use crate::broker::BrokerKind;

/// Bytes of an output record.
pub(crate) const RECORD_LEN: usize = 20;

/// The hidden `pythia loadtest-queue-worker` command.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The broker of the queue: rabbitmq, redis-list, redis-streams or nats.
    #[arg(long, value_enum)]
    broker: BrokerKind,
    /// Simulated work per message.
    #[arg(long, value_parser = Work::parse, default_value = "noop")]
    work: Work,
    /// This instance's number, written in each output.
    #[arg(long)]
    instance: u32,
}

struct LoadWorker {
    work: Work,
    instance: u32,
}

// By hand, with no spec: the load test configures everything by variables.
impl Worker for LoadWorker {
    type Codec = Raw;
}

impl Process for LoadWorker {
    type Input = Bytes;
    type Output = Bytes;

    async fn process(
        &self,
        msg: Message<Bytes>,
        _: &Context,
    ) -> Result<Outputs<Bytes>, ProcessError> {
        self.work.run().await;
        let payload = msg.payload();
        let (Some(id), Some(sent)) = (payload.get(..8), payload.get(8..16)) else {
            // Counted as an error, not as a message of the load.
            return Err(ProcessError::permanent("not a load-test message"));
        };
        let sent_us = i64::from_le_bytes(sent.try_into().unwrap_or_default());
        let latency_us = now_us().saturating_sub(sent_us).max(0) as u64;
        let mut record = Vec::with_capacity(RECORD_LEN);
        record.extend_from_slice(id);
        record.extend_from_slice(&self.instance.to_le_bytes());
        record.extend_from_slice(&latency_us.to_le_bytes());
        Ok(Outputs::one(Bytes::from(record)))
    }
}

/// An output record: (message id, instance, latency in µs).
pub(crate) fn decode(record: &[u8]) -> Option<(u64, u32, u64)> {
    if record.len() != RECORD_LEN {
        return None;
    }
    let id = u64::from_le_bytes(record[..8].try_into().ok()?);
    let instance = u32::from_le_bytes(record[8..12].try_into().ok()?);
    let latency = u64::from_le_bytes(record[12..20].try_into().ok()?);
    Some((id, instance, latency))
}

/// Runs the instance until its stdin closes or a signal arrives.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let worker = LoadWorker {
        work: args.work,
        instance: args.instance,
    };
    // The load test closes our stdin to stop us (or dies, which closes it too).
    let (stdin_closed, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = stdin_closed.send(());
    });
    let shutdown = async {
        tokio::select! {
            _ = closed => {}
            () = pythia_kafka::core::shutdown::signal() => {}
        }
    };
    let loader = || ConfigLoader::new().default_value("worker.name", "loadtest");
    let context = "the instance's configuration";
    match args.broker {
        BrokerKind::Rabbitmq => {
            use pythia_rabbitmq::Config;
            let config = Config::from_loader(Config::spec_defaults(loader(), &WorkerSpec::UNNAMED))
                .context(context)?;
            let instance = RabbitWorker::builder(worker).config(config).build()?;
            instance.run(shutdown).await?;
        }
        BrokerKind::RedisList | BrokerKind::RedisStreams => {
            use pythia_redis::Config;
            let config = Config::from_loader(Config::spec_defaults(loader(), &WorkerSpec::UNNAMED))
                .context(context)?;
            let instance = RedisWorker::builder(worker).config(config).build()?;
            instance.run(shutdown).await?;
        }
        BrokerKind::Nats => {
            use pythia_nats::Config;
            let config = Config::from_loader(Config::spec_defaults(loader(), &WorkerSpec::UNNAMED))
                .context(context)?;
            let instance = NatsWorker::builder(worker).config(config).build()?;
            instance.run(shutdown).await?;
        }
        BrokerKind::Kafka => {
            anyhow::bail!("loadtest-queue-worker runs on work queues; Kafka's is loadtest-worker")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_others_are_refused() {
        let mut record = Vec::new();
        record.extend_from_slice(&42u64.to_le_bytes());
        record.extend_from_slice(&1u32.to_le_bytes());
        record.extend_from_slice(&1500u64.to_le_bytes());
        assert_eq!(decode(&record), Some((42, 1, 1500)));
        assert_eq!(decode(&record[..19]), None);
    }
}
