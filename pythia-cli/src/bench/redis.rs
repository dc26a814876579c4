//! `pythia bench --broker redis-list|redis-streams`: a pass-through worker on
//! `pythia-redis` with its defaults against the raw `redis` loop of
//! [`super::redis_raw`].
//!
//! A list run's queue is pre-loaded with `LPUSH`, a stream run's with
//! `XADD` (field `payload`, as the connector reads it) and its consumer
//! group created from `0` beforehand, for both sides. After the run every
//! key whose name starts with the run's (the list or stream, the
//! processing lists, heartbeats and dead letters of the worker) is deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pythia_kafka::core::connector::Health;
use pythia_kafka::core::{ConfigLoader, WorkerSpec};
use pythia_redis::{RedisSink, RedisSource, RedisUrl};
use redis::aio::MultiplexedConnection;

use super::queue::{self, QueueReport, Queues};
use super::queue_side::{Drain, Side, worker_settings};
use super::{Args, redis_raw};
use crate::broker::BrokerKind;
use crate::queue_server;

/// The consumer group of a stream run, both sides'.
pub(crate) const GROUP: &str = "pythia-bench";

/// Messages per pre-load command.
const BATCH: u64 = 1_000;

/// How long a command may wait for its reply (a blocking read included).
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis server and a connection to it, for a list or a stream.
struct Redis<const STREAM: bool> {
    url: RedisUrl,
    connection: MultiplexedConnection,
}

impl<const STREAM: bool> Queues for Redis<STREAM> {
    const KIND: BrokerKind = if STREAM {
        BrokerKind::RedisStreams
    } else {
        BrokerKind::RedisList
    };
    const HOLDS: &'static str = if STREAM {
        "stream entries"
    } else {
        "list elements"
    };
    const ACKS: &'static str = if STREAM {
        "one XACK per entry"
    } else {
        "one LREM per element"
    };

    fn url_variable(&self) -> &'static str {
        queue_server::REDIS_VARIABLE
    }

    fn exposed_url(&self) -> &str {
        self.url.expose()
    }

    fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    async fn preload(&mut self, key: &str, messages: u64, size: u64) -> anyhow::Result<()> {
        let redis = &mut self.connection;
        let mut i = 0;
        while i < messages {
            let end = (i + BATCH).min(messages);
            let pipe =
                queue_server::redis_adds(STREAM, key, i..end, |n, buffer| payload(n, size, buffer));
            pipe.query_async::<()>(redis)
                .await
                .with_context(|| format!("pre-loading `{key}`"))?;
            i = end;
        }
        let length: u64 = redis::cmd(if STREAM { "XLEN" } else { "LLEN" })
            .arg(key)
            .query_async(redis)
            .await?;
        if length != messages {
            bail!(
                "`{key}` holds {length} messages after the pre-load, not {messages}: does something else use it?"
            );
        }
        if STREAM {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(GROUP)
                .arg("0")
                .query_async::<()>(redis)
                .await
                .with_context(|| format!("creating the group {GROUP} on `{key}`"))?;
        }
        Ok(())
    }

    async fn delete(&mut self, key: &str, _side: Side) {
        if let Err(error) = queue_server::redis_delete_under(&mut self.connection, key).await {
            eprintln!("could not delete the keys of `{key}`: {error}");
        }
    }
}

/// Message `n` of a run: its number, then padding up to `size` bytes; every
/// message differs, so `LREM` removes the one taken.
fn payload(n: u64, size: u64, buffer: &mut Vec<u8>) {
    buffer.clear();
    buffer.extend_from_slice(&n.to_le_bytes());
    buffer.resize(size as usize, b'x');
}

/// Runs the rounds on a Redis list (`stream` false) or stream and reports them.
pub(crate) fn run(args: &Args, stream: bool) -> anyhow::Result<QueueReport> {
    let url = queue_server::redis(args.url.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let connection = runtime.block_on(queue_server::connect_redis(&url, REPLY_TIMEOUT))?;
    if stream {
        queue::run(args, &runtime, &mut Redis::<true> { url, connection })
    } else {
        queue::run(args, &runtime, &mut Redis::<false> { url, connection })
    }
}

/// Drains the run's list or stream as `side`; returns the consumer's settings.
pub(crate) async fn drain(
    broker: BrokerKind,
    side: Side,
    drain: &Drain,
) -> anyhow::Result<BTreeMap<String, String>> {
    let url = queue_server::redis(None)?;
    let stream = broker == BrokerKind::RedisStreams;
    match side {
        Side::Raw => {
            let redis = queue_server::connect_redis(&url, REPLY_TIMEOUT).await?;
            if stream {
                redis_raw::stream(redis, drain, GROUP).await?;
                Ok(BTreeMap::from([
                    ("prefetch".to_owned(), drain.prefetch.to_string()),
                    (
                        "read".to_owned(),
                        "XREADGROUP COUNT <prefetch> BLOCK 1000".to_owned(),
                    ),
                    (
                        "ack".to_owned(),
                        "one XACK per entry, after it is processed".to_owned(),
                    ),
                ]))
            } else {
                redis_raw::list(redis, drain).await?;
                Ok(BTreeMap::from([
                    ("prefetch".to_owned(), "1".to_owned()),
                    (
                        "read".to_owned(),
                        "BLMOVE queue processing RIGHT LEFT 1".to_owned(),
                    ),
                    (
                        "ack".to_owned(),
                        "one LREM per element, after it is processed".to_owned(),
                    ),
                ]))
            }
        }
        Side::Pythia => {
            let mut loader = ConfigLoader::new()
                .no_file()
                .set("redis.url", url.expose())
                .set("redis.mode", if stream { "stream" } else { "list" })
                .set("redis.input", drain.queue.as_str())
                .set("redis.prefetch", u64::from(drain.prefetch))
                .set("worker.name", "pythia-bench");
            if stream {
                loader = loader.set("redis.group", GROUP);
            }
            let config = pythia_redis::Config::from_loader(pythia_redis::Config::spec_defaults(
                loader,
                &WorkerSpec::UNNAMED,
            ))
            .context("the pythia side's configuration")?;
            let mut consumer = BTreeMap::from([
                ("prefetch".to_owned(), config.redis.prefetch.to_string()),
                (
                    "ack".to_owned(),
                    if stream {
                        "XACK once processed"
                    } else {
                        "LREM once processed"
                    }
                    .to_owned(),
                ),
            ]);
            consumer.extend(worker_settings(&config.worker));
            // The way `RedisWorker` runs it: Redis source and sink.
            let name = config.name().to_owned();
            let sink = Arc::new(RedisSink::new(&config));
            let source = RedisSource::new(&config, Health::new());
            drain
                .pass_through(&config.worker, &name, source, sink.clone(), sink.close())
                .await?;
            Ok(consumer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_and_have_the_size() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        payload(1, 64, &mut a);
        payload(2, 64, &mut b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn list_and_stream_runs_say_which_they_are() {
        assert_eq!(Redis::<false>::KIND, BrokerKind::RedisList);
        assert_eq!(Redis::<true>::KIND, BrokerKind::RedisStreams);
        assert_eq!(Redis::<true>::ACKS, "one XACK per entry");
    }
}
