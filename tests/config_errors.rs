//! A worker with bad configuration exits non-zero with a message naming the key.

use std::process::Command;

use pythia_tests::*;

fn run_with(env: &[(&str, &str)]) -> (bool, String) {
    let dir = scratch("config");
    let mut command = Command::new(worker_bin());
    command.env_clear().current_dir(&dir).env("RUST_LOG", "off");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run worker");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const VALID: &[(&str, &str)] = &[
    ("PYTHIA_KAFKA__BROKERS", "127.0.0.1:1"),
    ("PYTHIA_KAFKA__GROUP", "g"),
    ("PYTHIA_KAFKA__TOPICS", "t"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    VALID.iter().chain(extra).copied().collect()
}

#[test]
fn missing_brokers_exits_and_says_how_to_set_them() {
    let (ok, stderr) = run_with(&[("PYTHIA_KAFKA__GROUP", "g"), ("PYTHIA_KAFKA__TOPICS", "t")]);
    assert!(!ok);
    assert!(stderr.contains("kafka.brokers"), "{stderr}");
    assert!(stderr.contains("PYTHIA_KAFKA__BROKERS"), "{stderr}");
}

#[test]
fn unknown_key_exits_naming_it() {
    let (ok, stderr) = run_with(&with(&[("PYTHIA_KAFKA__BROKERZ", "x:1")]));
    assert!(!ok);
    assert!(
        stderr.contains("unknown configuration key `kafka.brokerz`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("brokers"),
        "the allowed keys are listed: {stderr}"
    );
}

#[test]
fn wrong_type_exits_naming_the_key() {
    let (ok, stderr) = run_with(&with(&[("PYTHIA_WORKER__MAX_IN_FLIGHT", "lots")]));
    assert!(!ok);
    assert!(stderr.contains("worker.max_in_flight"), "{stderr}");

    let (ok, stderr) = run_with(&with(&[("PYTHIA_WORKER__SHUTDOWN_TIMEOUT", "whenever")]));
    assert!(!ok);
    assert!(stderr.contains("worker.shutdown_timeout"), "{stderr}");
}

#[test]
fn bad_value_in_config_file_exits_naming_the_key() {
    let dir = scratch("config-file");
    let file = dir.join("pythia.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup = \"g\"\ntopics = [\"t\"]\ngroup_protocol = \"fastest\"\n",
    )
    .unwrap();
    let (ok, stderr) = run_with(&[("PYTHIA_CONFIG", file.to_str().unwrap())]);
    assert!(!ok);
    assert!(stderr.contains("kafka.group_protocol"), "{stderr}");
    assert!(
        stderr.contains("consumer") && stderr.contains("classic"),
        "allowed values listed: {stderr}"
    );

    let (ok, stderr) = run_with(&[("PYTHIA_CONFIG", "/no/such/pythia.toml")]);
    assert!(!ok);
    assert!(stderr.contains("/no/such/pythia.toml"), "{stderr}");
}

#[test]
fn bad_raw_librdkafka_property_exits_naming_it() {
    let (ok, stderr) = run_with(&with(&[(
        "PYTHIA_KAFKA__CONSUMER__FETCH_MAX_BYTES",
        "huge",
    )]));
    assert!(!ok);
    assert!(
        stderr.contains("kafka.consumer.fetch.max.bytes"),
        "{stderr}"
    );
}

#[test]
fn bad_security_protocol_exits_naming_its_key_and_the_allowed_values() {
    let (ok, stderr) = run_with(&with(&[("PYTHIA_KAFKA__SECURITY__PROTOCOL", "tls")]));
    assert!(!ok);
    assert!(
        stderr.contains(
            "invalid value for `kafka.security.protocol`: `tls` is not one of: plaintext, ssl, sasl_plaintext, sasl_ssl"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("kafka.consumer"),
        "not the internal property: {stderr}"
    );
}

#[test]
fn bad_sasl_mechanism_exits_naming_its_key_and_the_allowed_values() {
    let dir = scratch("config-sasl");
    let file = dir.join("pythia.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup = \"g\"\ntopics = [\"t\"]\n\
         [kafka.security]\nprotocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM\"\n",
    )
    .unwrap();
    let (ok, stderr) = run_with(&[("PYTHIA_CONFIG", file.to_str().unwrap())]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "invalid value for `kafka.security.sasl_mechanism`: `SCRAM` is not one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, GSSAPI"
        ),
        "{stderr}"
    );
}

#[test]
fn bad_ordering_exits_naming_its_key_and_the_allowed_values() {
    let (ok, stderr) = run_with(&with(&[("PYTHIA_WORKER__ORDERING", "fast")]));
    assert!(!ok);
    assert!(
        stderr.contains(
            "invalid value for `worker.ordering`: `fast` is not one of: partition, key, none"
        ),
        "{stderr}"
    );
}
