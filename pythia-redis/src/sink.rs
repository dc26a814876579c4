//! [`RedisSink`]: outputs added to streams (`XADD`) or pushed to lists
//! (`LPUSH`), and dead letters added to the dead-letter stream.
//!
//! A record's receipt is settled when the server answered the command, so
//! its input is acknowledged only after that. A command whose connection
//! is lost is sent again on a new connection until `redis.publish_timeout`
//! (at least once: an output whose answer was lost may be added twice).
//!
//! Routing: a record for the dead-letter stream is added to it with its
//! reason in the `pythia.dlq.*` fields, in either mode (a list element has
//! no room for a reason); any other goes to its topic, or its named sink's
//! key, or `redis.output`: a stream in stream mode (`XADD <key> [MAXLEN ~
//! N] * payload … key … <headers>`), a list in list mode (`LPUSH <key>
//! <payload>`: consumers take from the right, as the source does).

use std::collections::BTreeMap;
use std::sync::Arc;

use pythia_core::connector::{Receipt, Sink};
use pythia_core::{Record, SinkError};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{Config, Mode, RedisConfig};
use crate::connection;
use crate::error::RedisError;
use crate::fields;
use pythia_core::connector::Backoff;

/// How a record is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// `XADD`, capped near this many entries if set.
    Stream(Option<u64>),
    /// `LPUSH`.
    List,
}

/// Where a record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) key: String,
    pub(crate) write: Write,
}

/// Where records go, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    output: Option<String>,
    sinks: BTreeMap<String, String>,
    write: Write,
    dead_letters: Option<String>,
}

impl Routes {
    pub(crate) fn new(config: &Config) -> Self {
        let redis = &config.redis;
        Self {
            output: redis.output.clone(),
            sinks: redis.sinks.clone(),
            write: match redis.mode {
                Mode::List => Write::List,
                Mode::Stream => Write::Stream(redis.output_maxlen),
            },
            dead_letters: config.dead_letter_stream(),
        }
    }

    /// The route of `record`, or why it has none.
    pub(crate) fn route(&self, record: &Record) -> Result<Route, SinkError> {
        let output = |key: &str| Route {
            key: key.to_owned(),
            write: self.write,
        };
        if let Some(topic) = record.topic.as_deref() {
            if self.dead_letters.as_deref() == Some(topic) {
                return Ok(Route {
                    key: topic.to_owned(),
                    write: Write::Stream(None),
                });
            }
            return Ok(output(topic));
        }
        if let Some(sink) = record.sink {
            return match self.sinks.get(sink) {
                Some(key) => Ok(output(key)),
                None => Err(SinkError::UnknownSink { sink: sink.into() }),
            };
        }
        match self.output.as_deref() {
            Some(key) => Ok(output(key)),
            None => Err(SinkError::NoTopic),
        }
    }
}

/// The command that writes `record` by `route`.
pub(crate) fn command(route: &Route, record: &Record) -> redis::Cmd {
    match route.write {
        Write::Stream(maxlen) => {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&route.key);
            if let Some(n) = maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            let fields = fields::to_fields(
                record.payload.as_deref().or(Some(&[])),
                record.key.as_deref(),
                &record.headers,
            );
            cmd.arg("*").arg(fields);
            cmd
        }
        Write::List => {
            let mut cmd = redis::cmd("LPUSH");
            cmd.arg(&route.key)
                .arg(record.payload.as_deref().unwrap_or_default());
            cmd
        }
    }
}

/// Writes records. Cheap to share: the runtime holds it in an `Arc`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use pythia_core::connector::{Receipt, Sink};
/// use pythia_core::Record;
/// let config = pythia_redis::Config::from_loader(
///     pythia_core::ConfigLoader::new().no_file()
///         .set("redis.input", "jobs")
///         .set("redis.output", "results"),
/// )?;
/// let sink = pythia_redis::RedisSink::new(&config);
/// let (receipt, confirmed) = Receipt::channel();
/// sink.send(Record::new("done"), receipt).await;
/// confirmed.await?; // added to the stream `results`
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisSink {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    routes: Routes,
    /// The connection, opened on first use and after a loss.
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl RedisSink {
    /// A sink for `config`'s routes, on a connection of its own (opened at
    /// the first record).
    pub fn new(config: &Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: config.redis.clone(),
                routes: Routes::new(config),
                connection: Mutex::new(None),
            }),
        }
    }

    /// Drops the connection, if open.
    pub async fn close(&self) {
        self.inner.connection.lock().await.take();
    }
}

/// The writer a run made is closed at the run's end.
impl pythia_core::connector::Publisher for RedisSink {
    async fn close(&self) {
        RedisSink::close(self).await;
    }
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("routes", &self.inner.routes)
            .finish_non_exhaustive()
    }
}

impl Sink for RedisSink {
    async fn send(&self, record: Record, receipt: Receipt) {
        let route = match self.inner.routes.route(&record) {
            Ok(route) => route,
            Err(error) => return receipt.settle(Err(error)),
        };
        let cmd = command(&route, &record);
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        receipt.settle(self.inner.write(&route, &cmd, deadline).await);
    }
}

impl Inner {
    /// Sends `cmd`, connecting (again) as needed until `deadline`.
    async fn write(
        &self,
        route: &Route,
        cmd: &redis::Cmd,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            let error = match self.connection().await {
                Ok(mut conn) => match cmd.query_async::<redis::Value>(&mut conn).await {
                    Ok(_) => return Ok(()),
                    Err(e) if is_refusal(&e) => {
                        return Err(SinkError::Delivery {
                            topic: route.key.clone(),
                            reason: format!("Redis refused the write: {e}"),
                        });
                    }
                    Err(e) => {
                        self.connection.lock().await.take();
                        RedisError::command("XADD/LPUSH", e)
                    }
                },
                Err(error) => error,
            };
            let wait = backoff.next_wait();
            if Instant::now() + wait >= deadline {
                return Err(SinkError::Delivery {
                    topic: route.key.clone(),
                    reason: format!(
                        "{error}; not written within redis.publish_timeout ({:?})",
                        self.config.publish_timeout
                    ),
                });
            }
            tracing::warn!(%error, ?wait, "cannot write to Redis; trying again");
            tokio::time::sleep(wait).await;
        }
    }

    /// The connection, opened if needed.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut connection = self.connection.lock().await;
        if let Some(open) = connection.as_ref() {
            return Ok(open.clone());
        }
        // Rare, and its future is large: boxed, so that it does not add to
        // the size of every record's future (which each message's holds).
        let open = Box::pin(connection::connect(
            &self.config.url,
            self.config.command_timeout,
        ))
        .await?;
        *connection = Some(open.clone());
        Ok(open)
    }
}

/// Whether the server answered with an error that a retry would repeat
/// (a key of another type, out of memory with `noeviction`, …), rather
/// than the connection failing.
fn is_refusal(error: &redis::RedisError) -> bool {
    !(error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pythia_core::ConfigLoader;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_loader(Config::spec_defaults(
            ConfigLoader::new().no_file().env(vars.iter().copied()),
            &pythia_core::WorkerSpec::UNNAMED,
        ))
        .unwrap()
    }

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    #[test]
    fn a_records_future_stays_small() {
        // The runtime holds it inside every message's future, and moves or
        // boxes that whole future once per message.
        let sink = RedisSink::new(&config(&[("PYTHIA_REDIS__INPUT", "jobs")]));
        let (receipt, _) = Receipt::channel();
        let send = sink.send(Record::new("x"), receipt);
        let size = std::mem::size_of_val(&send);
        assert!(size <= 1024, "RedisSink::send's future is {size} bytes");
    }

    #[test]
    fn records_are_routed_by_topic_sink_output_and_dead_letter_stream() {
        let routes = Routes::new(&config(&[
            ("PYTHIA_REDIS__INPUT", "jobs"),
            ("PYTHIA_REDIS__OUTPUT", "results"),
            ("PYTHIA_REDIS__OUTPUT_MAXLEN", "1000"),
            ("PYTHIA_REDIS__SINKS__AUDIT", "audit"),
        ]));
        let route = |record: Record| routes.route(&record).unwrap();
        let stream = |key: &str| Route {
            key: key.into(),
            write: Write::Stream(Some(1000)),
        };
        assert_eq!(route(Record::new("x")), stream("results"));
        assert_eq!(route(Record::new("x").with_sink("audit")), stream("audit"));
        assert_eq!(route(Record::new("x").with_topic("other")), stream("other"));
        assert_eq!(
            route(Record::new("x").with_topic("jobs.dlq")),
            Route {
                key: "jobs.dlq".into(),
                write: Write::Stream(None)
            }
        );
        assert!(matches!(
            routes.route(&Record::new("x").with_sink("nope")),
            Err(SinkError::UnknownSink { .. })
        ));
        let list = Routes::new(&config(&[
            ("PYTHIA_REDIS__INPUT", "jobs"),
            ("PYTHIA_REDIS__MODE", "list"),
            ("PYTHIA_REDIS__OUTPUT", "done"),
        ]));
        assert_eq!(list.route(&Record::new("x")).unwrap().write, Write::List);
        assert_eq!(
            list.route(&Record::new("x").with_topic("jobs.dlq"))
                .unwrap()
                .write,
            Write::Stream(None),
            "dead letters keep their reason: a stream in list mode too"
        );
        let bare = Routes::new(&config(&[("PYTHIA_REDIS__INPUT", "jobs")]));
        assert!(matches!(
            bare.route(&Record::new("x")),
            Err(SinkError::NoTopic)
        ));
    }

    #[test]
    fn the_commands_carry_cap_payload_key_and_headers() {
        let mut headers = pythia_core::Headers::new();
        headers.append("pythia.dlq.reason", "bad");
        let record = Record::new("p").with_key("k").with_headers(headers);
        let xadd = command(
            &Route {
                key: "out".into(),
                write: Write::Stream(Some(10)),
            },
            &record,
        );
        assert_eq!(
            args(&xadd),
            [
                "XADD",
                "out",
                "MAXLEN",
                "~",
                "10",
                "*",
                "payload",
                "p",
                "key",
                "k",
                "pythia.dlq.reason",
                "bad"
            ]
        );
        let lpush = command(
            &Route {
                key: "out".into(),
                write: Write::List,
            },
            &record,
        );
        assert_eq!(args(&lpush), ["LPUSH", "out", "p"]);
    }

    #[tokio::test]
    async fn a_written_record_settles_ok_and_a_refused_one_fails_at_once() {
        let key = format!("pythia-sink-test-{}", std::process::id());
        let config = config(&[
            ("PYTHIA_REDIS__INPUT", "unused"),
            ("PYTHIA_REDIS__OUTPUT", &key),
        ]);
        let mut conn = connection::connect(&config.redis.url, std::time::Duration::from_secs(5))
            .await
            .expect("Redis must answer on 127.0.0.1:6379 (start it: service redis-server start)");
        let sink = RedisSink::new(&config);
        let (receipt, written) = Receipt::channel();
        sink.send(Record::new("one").with_key("k1"), receipt).await;
        written.await.unwrap();
        let length: usize = redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(length, 1);
        // A string is not a stream: the server refuses, and no retry helps.
        let wrong = format!("{key}-string");
        let _: () = redis::cmd("SET")
            .arg(&wrong)
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let (receipt, refused) = Receipt::channel();
        sink.send(Record::new("two").with_topic(wrong.as_str()), receipt)
            .await;
        let error = refused.await.unwrap_err();
        assert!(error.to_string().contains("WRONGTYPE"), "{error}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "a refusal is not retried until publish_timeout"
        );
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .arg(&wrong)
            .query_async(&mut conn)
            .await
            .unwrap();
        sink.close().await;
    }
}
