//! `pythia loadtest --broker redis-list|redis-streams`: instances share one
//! list (a reliable queue) or one stream read in a consumer group. The load
//! is added in pipelined batches (`LPUSH`, or `XADD` with the payload in the
//! field `payload`, as the connector reads it), and the records are read
//! from an output list (`RPOP` with a count) or stream (`XREAD`).
//!
//! The instances make the group themselves, as workers do. They count as
//! joined by their heartbeat keys (list) or as consumers of the group
//! (stream). After the run every key whose name starts with the run's input
//! (processing lists, heartbeats, dead letters, the output) is deleted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use pythia_redis::{RedisUrl, fields};
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::Args;
use super::fleet::Tally;
use super::queue::{self, LoadQueues, lock};
use crate::broker::BrokerKind;
use crate::queue_server;

/// The consumer group of a stream run.
const GROUP: &str = "pythia-loadtest";

/// Messages per pipelined batch of the load, and records per read.
const BATCH: u64 = 500;

/// How long a command may wait for its reply (a blocking read included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis server and a connection to it, for a list or a stream.
struct Redis<const STREAM: bool> {
    url: RedisUrl,
    connection: MultiplexedConnection,
}

impl<const STREAM: bool> LoadQueues for Redis<STREAM> {
    const KIND: BrokerKind = if STREAM {
        BrokerKind::RedisStreams
    } else {
        BrokerKind::RedisList
    };

    fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    fn instance_env(&self, input: &str, output: &str, prefetch: u16) -> Vec<(String, String)> {
        [
            (queue_server::REDIS_VARIABLE, self.url.expose()),
            ("PYTHIA_REDIS__MODE", if STREAM { "stream" } else { "list" }),
            ("PYTHIA_REDIS__INPUT", input),
            ("PYTHIA_REDIS__GROUP", GROUP),
            ("PYTHIA_REDIS__OUTPUT", output),
            ("PYTHIA_REDIS__PREFETCH", &prefetch.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into()
    }

    async fn prepare(&mut self, input: &str, _output: &str) -> anyhow::Result<()> {
        // A run's names are its own: anything under them is left from a
        // run that was stopped before it cleaned up.
        queue_server::redis_delete_under(&mut self.connection, input).await
    }

    async fn consumers(&mut self, input: &str) -> anyhow::Result<usize> {
        let redis = &mut self.connection;
        if STREAM {
            let consumers: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(input)
                .arg(GROUP)
                .query_async(redis)
                .await;
            // No stream or no group yet: no instance has started reading.
            Ok(consumers.map_or(0, |c| c.len()))
        } else {
            let pattern = format!("{}:heartbeat:*", queue_server::glob_escape(input));
            Ok(queue_server::redis_keys(redis, &pattern).await?.len())
        }
    }

    async fn send(
        &mut self,
        input: &str,
        count: u64,
        pace: Option<Duration>,
        mut payload: impl FnMut(u64, &mut Vec<u8>) + Send,
    ) -> anyhow::Result<()> {
        let redis = &mut self.connection;
        let started = tokio::time::Instant::now();
        let mut i = 0;
        while i < count {
            // Paced: what is due by now, at least one; else a whole batch.
            let end = match pace {
                Some(every) => {
                    let due = (started.elapsed().as_secs_f64() / every.as_secs_f64()) as u64;
                    if due <= i {
                        tokio::time::sleep_until(started + every.mul_f64(i as f64)).await;
                    }
                    due.clamp(i + 1, i + BATCH)
                }
                None => i + BATCH,
            }
            .min(count);
            let pipe = queue_server::redis_adds(STREAM, input, i..end, &mut payload);
            pipe.query_async::<()>(redis)
                .await
                .with_context(|| format!("adding the load to `{input}`"))?;
            i = end;
        }
        Ok(())
    }

    fn collect(
        &self,
        output: &str,
        tally: Arc<Mutex<Tally>>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let url = self.url.clone();
        let output = output.to_owned();
        async move {
            // A connection of its own: a blocking read would hold up the
            // load's commands on a shared one.
            let mut redis = queue_server::connect_redis(&url, REPLY_TIMEOUT).await?;
            if STREAM {
                let mut last = "0-0".to_owned();
                loop {
                    let reply: Value = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(BATCH)
                        .arg("BLOCK")
                        .arg(200)
                        .arg("STREAMS")
                        .arg(&output)
                        .arg(&last)
                        .query_async(&mut redis)
                        .await
                        .with_context(|| format!("reading the output stream `{output}`"))?;
                    let mut tally = lock(&tally);
                    for (id, payload) in stream_entries(reply) {
                        match payload {
                            Some(record) => queue::record(&mut tally, &record),
                            None => tally.bad += 1,
                        }
                        last = id;
                    }
                }
            } else {
                loop {
                    let records: Option<Vec<Vec<u8>>> = redis::cmd("RPOP")
                        .arg(&output)
                        .arg(BATCH)
                        .query_async(&mut redis)
                        .await
                        .with_context(|| format!("reading the output list `{output}`"))?;
                    match records {
                        Some(records) if !records.is_empty() => {
                            let mut tally = lock(&tally);
                            for record in records {
                                queue::record(&mut tally, &record);
                            }
                        }
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            }
        }
    }

    async fn delete(&mut self, input: &str, _output: &str) {
        // The output's name starts with the input's.
        if let Err(error) = queue_server::redis_delete_under(&mut self.connection, input).await {
            eprintln!("could not delete the keys of `{input}`: {error:#}");
        }
    }
}

/// The entries of an `XREAD` reply on one stream, as (id, the field
/// `payload`); none for a reply of no entries.
fn stream_entries(reply: Value) -> Vec<(String, Option<Vec<u8>>)> {
    let array = |value: Value| match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let mut entries = Vec::new();
    // [[stream, [[id, [field, value, …]], …]]]
    for stream in array(reply) {
        let Some(stream_entries) = array(stream).into_iter().nth(1) else {
            continue;
        };
        for entry in array(stream_entries) {
            let mut parts = array(entry).into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(id) = text(&id).and_then(|id| String::from_utf8(id).ok()) else {
                continue;
            };
            let fields = array(fields);
            let payload = fields
                .chunks(2)
                .find(|pair| text(&pair[0]).as_deref() == Some(fields::PAYLOAD.as_bytes()))
                .and_then(|pair| pair.get(1).and_then(text));
            entries.push((id, payload));
        }
    }
    entries
}

/// Runs `pythia loadtest --broker redis-list` (`stream` false) or
/// `--broker redis-streams`.
pub(crate) fn run(args: &Args, stream: bool) -> anyhow::Result<()> {
    let url = queue_server::redis(args.url.as_deref())?;
    if stream {
        queue::run(args, async || {
            let connection = queue_server::connect_redis(&url, REPLY_TIMEOUT).await?;
            Ok(Redis::<true> { url, connection })
        })
    } else {
        queue::run(args, async || {
            let connection = queue_server::connect_redis(&url, REPLY_TIMEOUT).await?;
            Ok(Redis::<false> { url, connection })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_stream_runs_say_which_they_are() {
        assert_eq!(Redis::<false>::KIND, BrokerKind::RedisList);
        assert_eq!(Redis::<true>::KIND, BrokerKind::RedisStreams);
    }

    #[test]
    fn xread_replies_give_ids_and_payloads() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("out"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("key"), bulk("k"), bulk("payload"), bulk("r1")]),
                ]),
                Value::Array(vec![
                    bulk("2-0"),
                    Value::Array(vec![bulk("other"), bulk("x")]),
                ]),
            ]),
        ])]);
        assert_eq!(
            stream_entries(reply),
            [
                ("1-0".to_owned(), Some(b"r1".to_vec())),
                ("2-0".to_owned(), None)
            ]
        );
        assert!(stream_entries(Value::Nil).is_empty());
    }
}
