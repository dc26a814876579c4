//! Apache Kafka in a container, for `TEST_BROKER=kafka`: one KRaft node from
//! the official JVM image, started through testcontainers and removed on drop.

use std::time::Duration;

use testcontainers_modules::kafka::apache;
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ImageExt};

/// The image: Kafka 4.x, the first release line whose brokers run KIP-848
/// consumer groups (`group.protocol=consumer`) out of the box.
pub const KAFKA_IMAGE: &str = "apache/kafka";
/// The tag of [`KAFKA_IMAGE`].
pub const KAFKA_TAG: &str = "4.1.0";

/// Broker settings beyond what the testcontainers module sets.
const BROKER_SETTINGS: &[(&str, &str)] = &[
    // KIP-848 groups as on the embedded broker: a 300 ms heartbeat, and a
    // killed member's partitions move after 6 s (`EMBEDDED_SESSION_TIMEOUT`)
    // instead of Kafka's 45 s, which the tests' waits are not sized for.
    ("KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS", "300"),
    ("KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS", "300"),
    ("KAFKA_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS", "6000"),
    ("KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
    // Classic groups form at once instead of waiting 3 s for more members.
    ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
    // Every topic is created on purpose, by a test or by a worker (the
    // dead-letter topic it mirrors from its input), as on most production
    // clusters: none appears, with one partition, because a client asked.
    ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false"),
    // The oversize tests produce inputs of up to 10 MB, as the other brokers
    // take them; Kafka's default limit is 1 MiB.
    ("KAFKA_MESSAGE_MAX_BYTES", "16777216"),
];

/// A single-node Kafka in a container; the container is removed on drop,
/// also when the test panics.
pub struct KafkaContainer {
    // Held for its drop, which removes the container; boxed, as it is far
    // larger than the other brokers of a `TestBroker`.
    _container: Box<Container<apache::Kafka>>,
    bootstrap: String,
}

impl KafkaContainer {
    /// Pulls the image if needed and starts the broker; returns once it logs
    /// that it started. Fails the test if Docker cannot start it.
    pub fn start() -> Self {
        let mut request = apache::Kafka::default()
            .with_jvm_image()
            .with_tag(KAFKA_TAG)
            // Counted from after the pull: a cold JVM on a busy CI runner.
            .with_startup_timeout(Duration::from_secs(120));
        for (name, value) in BROKER_SETTINGS {
            request = request.with_env_var(*name, *value);
        }
        let container = request.start().unwrap_or_else(|e| {
            panic!("starting {KAFKA_IMAGE}:{KAFKA_TAG} through testcontainers: {e}")
        });
        let port = container
            .get_host_port_ipv4(apache::KAFKA_PORT)
            .expect("the host port mapped to Kafka's 9092");
        // The module advertises PLAINTEXT://127.0.0.1:<mapped port>: clients
        // must bootstrap by the same address to be sent back to it.
        Self {
            _container: Box::new(container),
            bootstrap: format!("127.0.0.1:{port}"),
        }
    }

    /// The `bootstrap.servers` value that reaches it.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}
