//! The cluster commands (`lag`, `dlq replay`) read the full configuration:
//! `[kafka.security]` from `pythia.toml` and from `PYTHIA_*` variables
//! reaches the client, and the password never appears in their output or
//! logs, even at debug level.
//!
//! The embedded broker (librdkafka's mock cluster) has no SASL: it refuses
//! the SASL handshake, which is how these tests see that the client asked
//! for SASL/PLAIN with the configured settings. Authentication succeeding
//! against a broker that requires it is not covered here (neither the mock
//! nor the pinned Tansu build offers SASL/PLAIN).

use std::path::PathBuf;
use std::process::{Command, Output};

use pythia_kafka::EmbeddedBroker;

const PYTHIA: &str = env!("CARGO_BIN_EXE_pythia");
const FILE_PASSWORD: &str = "pw-from-file-7731";
const ENV_PASSWORD: &str = "pw-from-env-4420";

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

/// The client asked for SASL/PLAIN and the broker, which has none, refused.
fn assert_sasl_attempted_without_leaks(output: &Output, password: &str) {
    let all = text(output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains("sasl_plaintext://"),
        "SASL protocol not used:\n{all}"
    );
    assert!(
        all.contains("mechanism PLAIN"),
        "PLAIN not asked for:\n{all}"
    );
    assert!(!all.contains(password), "the password leaked:\n{all}");
}

#[test]
fn security_settings_from_pythia_toml_reach_lag_and_replay() {
    let broker = EmbeddedBroker::with_topics([("orders", 1), ("orders.dlq", 1)]).unwrap();
    let bootstrap = broker.bootstrap_servers();
    let dir = dir("file");
    std::fs::write(
        dir.join("pythia.toml"),
        format!(
            "[kafka]\nbrokers = \"{bootstrap}\"\n\n[kafka.security]\nprotocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"ops\"\nsasl_password = \"{FILE_PASSWORD}\"\n"
        ),
    )
    .unwrap();
    let lag = run(
        &dir,
        &[
            "lag",
            "--json",
            "--group",
            "g",
            "--topic",
            "orders",
            "--timeout",
            "2s",
        ],
        &[],
    );
    assert_sasl_attempted_without_leaks(&lag, FILE_PASSWORD);
    let replay = run(
        &dir,
        &["dlq", "replay", "--topic", "orders.dlq", "--timeout", "2s"],
        &[],
    );
    assert_sasl_attempted_without_leaks(&replay, FILE_PASSWORD);

    // The same commands without the security section succeed: the failure
    // above is the SASL handshake, nothing else.
    std::fs::write(
        dir.join("pythia.toml"),
        format!("[kafka]\nbrokers = \"{bootstrap}\"\n"),
    )
    .unwrap();
    let lag = run(
        &dir,
        &["lag", "--json", "--group", "g", "--topic", "orders"],
        &[],
    );
    assert!(lag.status.success(), "{}", text(&lag));
    let json: serde_json::Value = serde_json::from_slice(&lag.stdout).expect("JSON");
    assert_eq!(json["group"], "g");
    let replay = run(&dir, &["dlq", "replay", "--topic", "orders.dlq"], &[]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed=0 skipped=0"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn security_settings_from_the_environment_reach_lag_and_replay() {
    let broker = EmbeddedBroker::with_topics([("orders", 1), ("orders.dlq", 1)]).unwrap();
    let dir = dir("env");
    let env = [
        ("PYTHIA_KAFKA__BROKERS", broker.bootstrap_servers()),
        ("PYTHIA_KAFKA__SECURITY__PROTOCOL", "sasl_plaintext"),
        ("PYTHIA_KAFKA__SECURITY__SASL_MECHANISM", "PLAIN"),
        ("PYTHIA_KAFKA__SECURITY__SASL_USERNAME", "ops"),
        ("PYTHIA_KAFKA__SECURITY__SASL_PASSWORD", ENV_PASSWORD),
    ];
    let lag = run(
        &dir,
        &[
            "lag",
            "--group",
            "g",
            "--topic",
            "orders",
            "--timeout",
            "2s",
        ],
        &env,
    );
    assert_sasl_attempted_without_leaks(&lag, ENV_PASSWORD);
    let replay = run(
        &dir,
        &["dlq", "replay", "--topic", "orders.dlq", "--timeout", "2s"],
        &env,
    );
    assert_sasl_attempted_without_leaks(&replay, ENV_PASSWORD);
    let _ = std::fs::remove_dir_all(&dir);
}
