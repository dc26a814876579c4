//! The raw side of a load test: one instance running the classic rdkafka
//! poll loop (`pythia loadtest-worker --raw`), so latency is measured beside
//! a plain consumer's under the same load.
//!
//! It reads the instance's configuration like a worker (the brokers, group
//! and topic the load test sets, `[kafka.consumer]` properties such as the
//! embedded broker's fetch wait, and `kafka.group_protocol` when set) and
//! speaks the same line protocol as a Pythia instance. Offsets are stored
//! after each message and auto-committed, librdkafka's defaults otherwise.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::{Config, ConfigLoader, GroupProtocol};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message as _};

use super::instance::{Reporter, now_us};
use super::work::Work;

/// How often the loop reports its assignment and flushes its lines.
const REPORT_EVERY: Duration = Duration::from_millis(20);

/// Runs the raw instance until its stdin closes.
pub(crate) fn run(work: Work) -> anyhow::Result<()> {
    if work != Work::Noop {
        bail!("the raw loop runs no simulated work: use --work noop");
    }
    let config = Config::from_loader(ConfigLoader::new().default_value("worker.name", "loadtest"))?;
    let client = client_config(&config)?;
    let consumer: BaseConsumer = client.create().context("creating the consumer")?;
    let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;

    let closed = Arc::new(AtomicBool::new(false));
    {
        let closed = closed.clone();
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            closed.store(true, Ordering::Release);
        });
    }
    let reporter = Reporter::default();
    let mut held = usize::MAX;
    let mut last_report = Instant::now();
    while !closed.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                match payload.get(..8) {
                    Some(id) => {
                        let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
                        let created_us = message.timestamp().to_millis().unwrap_or_default() * 1000;
                        let latency_us = now_us().saturating_sub(created_us).max(0);
                        reporter.line(format_args!("done {id} {latency_us}\n"));
                    }
                    None => reporter.line(format_args!(
                        "bad {} {}\n",
                        message.partition(),
                        message.offset()
                    )),
                }
                consumer.store_offset_from_message(&message)?;
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => {}
        }
        if last_report.elapsed() >= REPORT_EVERY {
            let now = consumer.assignment().map(|a| a.count()).unwrap_or(0);
            if now != held {
                held = now;
                reporter.line(format_args!("assigned {held}\n"));
            }
            if !reporter.flush() {
                break;
            }
            last_report = Instant::now();
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    reporter.flush();
    Ok(())
}

/// The classic loop's client: the connection, group and topic of `config`,
/// its raw `[kafka.consumer]` properties and group protocol; librdkafka's
/// defaults for the rest but the fetch backoff (see `pythia bench`).
fn client_config(config: &Config) -> anyhow::Result<ClientConfig> {
    let mut client = crate::cluster::connection(&config.kafka)?;
    client
        .set(
            "group.id",
            config.kafka.group.as_deref().unwrap_or_default(),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("fetch.queue.backoff.ms", "10");
    if config.kafka.group_protocol == GroupProtocol::Consumer {
        client.set("group.protocol", "consumer");
    }
    for (name, value) in config.kafka.consumer.iter() {
        client.set(name, value);
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_client_takes_the_connection_and_the_users_properties_only() {
        let config = Config::from_loader(
            ConfigLoader::new()
                .no_file()
                .env([
                    ("PYTHIA_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", "10"),
                    ("PYTHIA_KAFKA__GROUP_PROTOCOL", "consumer"),
                ])
                .set("kafka.brokers", "b:9092")
                .set("kafka.group", "g")
                .set("kafka.topics", "t"),
        )
        .unwrap();
        let client = client_config(&config).unwrap();
        assert_eq!(client.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(client.get("group.id"), Some("g"));
        assert_eq!(client.get("group.protocol"), Some("consumer"));
        assert_eq!(client.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(
            client.get("queued.max.messages.kbytes"),
            None,
            "Pythia's own defaults stay out"
        );
    }
}
