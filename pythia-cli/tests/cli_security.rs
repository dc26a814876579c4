//! The cluster commands (`lag`, `dlq replay`) read the full configuration:
//! `[kafka.security]` from `pythia.toml` and from `PYTHIA_*` variables
//! reaches the client, they work against a broker that requires SASL/PLAIN,
//! and the password never appears in their output or logs, even at debug
//! level.
//!
//! The broker is `pythia broker --sasl-plain-user`, a process of its own: the
//! embedded broker behind a gate that answers the SASL handshake, refuses
//! wrong credentials and any request before authentication.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{PYTHIA, Process, http_get_ok};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const USER: &str = "ops";
const PASSWORD: &str = "pw-7731-never-printed";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A `pythia broker` process requiring SASL/PLAIN as USER/PASSWORD, with
/// `orders` (2 partitions, 5 messages) and `orders.dlq` (2 dead letters
/// from `orders`).
struct SecureBroker {
    process: Process,
    bootstrap: String,
}

impl SecureBroker {
    fn start() -> Self {
        let (process, bootstrap) = Process::start(
            &[
                "broker",
                "--topic",
                "orders:2",
                "--topic",
                "orders.dlq:1",
                "--sasl-plain-user",
                USER,
            ],
            &[
                ("PYTHIA_BROKER_SASL_PASSWORD", PASSWORD),
                ("RUST_LOG", "debug"),
            ],
            "bootstrap=",
        );
        let broker = Self { process, bootstrap };
        broker.seed();
        broker
    }

    /// A client of this broker with the right credentials.
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", USER)
            .set("sasl.password", PASSWORD);
        config
    }

    fn seed(&self) {
        let producer: BaseProducer = self.client().create().unwrap();
        for i in 0..5 {
            let key = format!("k{i}");
            let payload = format!("order-{i}");
            producer
                .send(BaseRecord::to("orders").key(&key).payload(&payload))
                .unwrap();
        }
        for i in 0..2 {
            let payload = format!("dead-{i}");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "pythia.dlq.topic",
                    value: Some("orders"),
                })
                .insert(Header {
                    key: "pythia.dlq.reason",
                    value: Some("bad order"),
                });
            producer
                .send(
                    BaseRecord::<(), _>::to("orders.dlq")
                        .payload(&payload)
                        .headers(headers),
                )
                .unwrap();
        }
        producer.flush(TIMEOUT).expect("seed messages delivered");
        // A commit at 0: the group has consumed nothing, and the console
        // (which shows the topics a group has committed on) lists `orders`.
        let mut group = self.client();
        group.set("group.id", "billing");
        let consumer: BaseConsumer = group.create().unwrap();
        let mut offsets = rdkafka::TopicPartitionList::new();
        for p in 0..2 {
            offsets
                .add_partition_offset("orders", p, rdkafka::Offset::Offset(0))
                .unwrap();
        }
        consumer
            .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
            .expect("commit at 0");
    }

    /// Messages in `topic`, read with the right credentials.
    fn high_total(&self, topic: &str, partitions: i32) -> i64 {
        let consumer: BaseConsumer = self.client().create().unwrap();
        (0..partitions)
            .map(|p| consumer.fetch_watermarks(topic, p, TIMEOUT).unwrap().1)
            .sum()
    }

    /// Stops the broker and returns what it logged.
    fn stop(mut self) -> String {
        self.process.stop()
    }
}

fn dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("pythia-cli-security-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(dir: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(PYTHIA)
        .args(args)
        .current_dir(dir)
        .env_remove("PYTHIA_CONFIG")
        .env("RUST_LOG", "debug")
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .expect("run pythia")
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `pythia lag` and `pythia dlq replay` authenticate and do their work; the
/// password is in neither command's output nor the broker's log.
fn lag_and_replay_authenticate(broker: SecureBroker, dir: &PathBuf, env: &[(&str, &str)]) {
    let lag = run(
        dir,
        &["lag", "--json", "--group", "billing", "--topic", "orders"],
        env,
    );
    let all = text(&lag);
    // Success is authentication: the broker answers nothing else (see the
    // test with wrong and missing credentials).
    assert!(lag.status.success(), "{all}");
    let json: serde_json::Value = serde_json::from_slice(&lag.stdout).expect("lag JSON");
    assert_eq!(json["group"], "billing");
    assert_eq!(json["lag"], 5, "committed at 0: lag is every message");
    assert_eq!(json["partitions"].as_array().map(Vec::len), Some(2));
    assert!(!all.contains(PASSWORD), "the password leaked:\n{all}");

    // The console reads the same settings: the lag and the dead letters.
    let mut console_env = env.to_vec();
    console_env.push(("RUST_LOG", "debug"));
    let config = dir.join("pythia.toml");
    let config = config.to_string_lossy();
    if std::path::Path::new(config.as_ref()).exists() {
        console_env.push(("PYTHIA_CONFIG", config.as_ref()));
    }
    let (mut console, address) = Process::start(
        &["console", "--serve", "127.0.0.1:0"],
        &console_env,
        "serving=http://",
    );
    let lag: serde_json::Value =
        serde_json::from_str(&http_get_ok(&address, "/api/lag?group=billing")).expect("lag JSON");
    assert_eq!(lag["lag"], 5, "{lag}");
    let letters = http_get_ok(&address, "/api/dlq?topic=orders.dlq");
    assert!(letters.contains("bad order"), "{letters}");
    let log = console.stop();
    assert!(
        !log.contains(PASSWORD),
        "the console logged the password:\n{log}"
    );

    let replay = run(dir, &["dlq", "replay", "--topic", "orders.dlq"], env);
    let all = text(&replay);
    assert!(replay.status.success(), "{all}");
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("replayed=2 skipped=0"),
        "{all}"
    );
    assert!(!all.contains(PASSWORD), "the password leaked:\n{all}");
    assert_eq!(
        broker.high_total("orders", 2),
        7,
        "both dead letters are back on orders"
    );

    let log = broker.stop();
    assert!(log.contains("requires SASL/PLAIN"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the broker logged the password:\n{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn credentials_from_pythia_toml() {
    let broker = SecureBroker::start();
    let dir = dir("file");
    std::fs::write(
        dir.join("pythia.toml"),
        format!(
            "[kafka]\nbrokers = \"{}\"\n\n[kafka.security]\nprotocol = \"sasl_plaintext\"\n\
             sasl_mechanism = \"PLAIN\"\nsasl_username = \"{USER}\"\nsasl_password = \"{PASSWORD}\"\n",
            broker.bootstrap
        ),
    )
    .unwrap();
    lag_and_replay_authenticate(broker, &dir, &[]);
}

#[test]
fn credentials_from_the_environment() {
    let broker = SecureBroker::start();
    let dir = dir("env");
    let bootstrap = broker.bootstrap.clone();
    let env = [
        ("PYTHIA_KAFKA__BROKERS", bootstrap.as_str()),
        ("PYTHIA_KAFKA__SECURITY__PROTOCOL", "sasl_plaintext"),
        ("PYTHIA_KAFKA__SECURITY__SASL_MECHANISM", "PLAIN"),
        ("PYTHIA_KAFKA__SECURITY__SASL_USERNAME", USER),
        ("PYTHIA_KAFKA__SECURITY__SASL_PASSWORD", PASSWORD),
    ];
    lag_and_replay_authenticate(broker, &dir, &env);
}

#[test]
fn wrong_or_missing_credentials_fail_clearly_without_printing_them() {
    let broker = SecureBroker::start();
    let dir = dir("wrong");
    let wrong = "pw-wrong-5521";
    let mut env = vec![
        ("PYTHIA_KAFKA__BROKERS", broker.bootstrap.as_str()),
        ("PYTHIA_KAFKA__SECURITY__PROTOCOL", "sasl_plaintext"),
        ("PYTHIA_KAFKA__SECURITY__SASL_MECHANISM", "PLAIN"),
        ("PYTHIA_KAFKA__SECURITY__SASL_USERNAME", USER),
        ("PYTHIA_KAFKA__SECURITY__SASL_PASSWORD", wrong),
    ];
    let lag_args = [
        "lag",
        "--json",
        "--group",
        "billing",
        "--topic",
        "orders",
        "--timeout",
        "3s",
    ];
    let lag = run(&dir, &lag_args, &env);
    let all = text(&lag);
    assert!(!lag.status.success(), "{all}");
    assert!(
        all.contains("Authentication failed"),
        "the broker's refusal is reported:\n{all}"
    );
    assert!(!all.contains(wrong), "the password leaked:\n{all}");
    let replay = run(
        &dir,
        &["dlq", "replay", "--topic", "orders.dlq", "--timeout", "3s"],
        &env,
    );
    let all = text(&replay);
    assert!(!replay.status.success(), "{all}");
    assert!(!all.contains(wrong), "the password leaked:\n{all}");

    // No security settings at all: the broker answers nothing but SASL.
    env.truncate(1);
    let lag = run(&dir, &lag_args, &env);
    assert!(!lag.status.success(), "{}", text(&lag));
    assert_eq!(broker.high_total("orders.dlq", 1), 2, "nothing replayed");
    let _ = std::fs::remove_dir_all(&dir);
}
