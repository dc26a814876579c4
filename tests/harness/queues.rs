//! The work-queue servers of the machine (RabbitMQ on 127.0.0.1:5672 as
//! guest, Redis on 6379, NATS with JetStream on 4222) for the end-to-end
//! tests: whether they answer, publishing to them, and removing what a test
//! created there.

use std::time::Duration;

use async_nats::jetstream;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The AMQP URL of the machine's RabbitMQ.
pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The URL of the machine's Redis.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// The URL of the machine's NATS server.
pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// The servers and how to start each.
const SERVERS: &[(&str, &str, &str)] = &[
    (
        "RabbitMQ",
        "127.0.0.1:5672",
        "service rabbitmq-server start",
    ),
    (
        "Redis",
        "127.0.0.1:6379",
        "redis-server --daemonize yes --save ''",
    ),
    ("NATS", "127.0.0.1:4222", "nats-server -js &"),
];

/// Whether RabbitMQ, Redis and NATS all answer. When one does not, prints
/// why and returns false (the test should return: a skip); on CI it fails
/// the test instead, so CI never passes by skipping.
pub fn available() -> bool {
    let missing: Vec<String> = SERVERS
        .iter()
        .filter_map(|(name, address, start)| {
            let parsed = address.parse().expect("address");
            std::net::TcpStream::connect_timeout(&parsed, Duration::from_secs(2))
                .err()
                .map(|e| {
                    format!("{name} does not answer on {address} ({e}); start it with `{start}`")
                })
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{} (or `cargo xtask prerequisites`)", missing.join("; "));
    assert!(!crate::netns::on_ci(), "cannot run on CI: {reason}");
    crate::skip(&reason);
    false
}

/// A name no other run uses: `<prefix>-<pid>-<n>`, safe as a RabbitMQ
/// queue, a Redis key, a NATS subject and stream name.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// What a test created on the servers, removed when dropped: RabbitMQ
/// queues, Redis keys by prefix, NATS streams.
#[derive(Default)]
pub struct QueueCleanup {
    rabbitmq_queues: Vec<String>,
    redis_prefixes: Vec<String>,
    nats_streams: Vec<String>,
}

impl QueueCleanup {
    /// Deletes RabbitMQ queue `name` at the end.
    pub fn rabbitmq_queue(&mut self, name: &str) {
        self.rabbitmq_queues.push(name.to_owned());
    }

    /// Deletes every Redis key starting with `prefix` at the end.
    pub fn redis_prefix(&mut self, prefix: &str) {
        self.redis_prefixes.push(prefix.to_owned());
    }

    /// Deletes NATS stream `name` at the end.
    pub fn nats_stream(&mut self, name: &str) {
        self.nats_streams.push(name.to_owned());
    }
}

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        let (rabbitmq_queues, redis_prefixes, nats_streams) = (
            std::mem::take(&mut self.rabbitmq_queues),
            std::mem::take(&mut self.redis_prefixes),
            std::mem::take(&mut self.nats_streams),
        );
        // A fresh runtime on its own thread: drop can run inside another.
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok(connection) =
                    Connection::connect(RABBITMQ_URL, ConnectionProperties::default()).await
                {
                    if let Ok(channel) = connection.create_channel().await {
                        for queue in &rabbitmq_queues {
                            let _ = channel
                                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                                .await;
                        }
                    }
                    let _ = connection.close(200, "".into()).await;
                }
                if let Ok(client) = redis::Client::open(REDIS_URL)
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    for prefix in &redis_prefixes {
                        let keys: Vec<String> = redis::cmd("KEYS")
                            .arg(format!("{prefix}*"))
                            .query_async(&mut conn)
                            .await
                            .unwrap_or_default();
                        if !keys.is_empty() {
                            let _ = redis::cmd("DEL")
                                .arg(&keys)
                                .query_async::<()>(&mut conn)
                                .await;
                        }
                    }
                }
                if let Ok(client) = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(NATS_URL)
                    .await
                {
                    let js = jetstream::new(client);
                    for stream in &nats_streams {
                        let _ = js.delete_stream(stream).await;
                    }
                }
            });
        })
        .join();
    }
}

/// Publishes each payload to RabbitMQ queue `queue` (default exchange,
/// persistent) and waits for the confirms.
pub fn rabbitmq_publish(queue: &str, payloads: &[&str]) {
    block_on(async {
        let connection = Connection::connect(RABBITMQ_URL, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        for payload in payloads {
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    payload.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("basic.publish");
        }
        let returned = channel.wait_for_confirms().await.expect("confirms");
        assert!(returned.is_empty(), "messages to {queue} were returned");
        let _ = connection.close(200, "".into()).await;
    });
}

/// Adds each payload to Redis: `XADD key * payload p` (`stream`) or
/// `LPUSH key p` (a list).
pub fn redis_push(key: &str, stream: bool, payloads: &[&str]) {
    block_on(async {
        let client = redis::Client::open(REDIS_URL).expect("Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        for payload in payloads {
            let mut command = match stream {
                true => redis::cmd("XADD"),
                false => redis::cmd("LPUSH"),
            };
            command.arg(key);
            if stream {
                command.arg("*").arg("payload");
            }
            command
                .arg(*payload)
                .query_async::<()>(&mut conn)
                .await
                .expect("XADD or LPUSH");
        }
    });
}

/// Publishes each payload to NATS subject `subject` (JetStream) and waits
/// for the PubAcks.
pub fn nats_publish(subject: &str, payloads: &[&str]) {
    block_on(async {
        let client = async_nats::connect(NATS_URL)
            .await
            .expect("connect to NATS");
        let js = jetstream::new(client);
        for payload in payloads {
            js.publish(subject.to_owned(), payload.as_bytes().to_vec().into())
                .await
                .expect("publish")
                .await
                .expect("PubAck");
        }
    });
}
