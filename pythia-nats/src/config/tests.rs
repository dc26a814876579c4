//! Tests of the `[nats]` configuration: loading, defaults, errors.

use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_loader(Config::spec_defaults(
        ConfigLoader::new().no_file().env(vars.iter().copied()),
        &WorkerSpec::UNNAMED,
    ))
}

#[test]
fn defaults_are_a_local_server_four_at_once_and_no_ordering() {
    let config = load(&[("PYTHIA_NATS__SUBJECT", "jobs.general")]).unwrap();
    assert_eq!(config.nats.url.expose(), DEFAULT_URL);
    assert_eq!(config.nats.concurrency, 4);
    assert_eq!(config.nats.create, Create::Missing);
    assert_eq!(config.nats.ack_wait, Duration::from_secs(30));
    assert_eq!(config.nats.progress_interval(), Duration::from_secs(10));
    assert_eq!(config.worker.ordering, pythia_core::MessageOrder::None);
    assert_eq!(config.nats.stream_name(), "jobs_general");
    assert_eq!(config.nats.dead_letter_stream_name(), "jobs_general_DLQ");
    assert_eq!(config.consumer_name(), "jobs_general");
    assert_eq!(
        config.dead_letter_subject().as_deref(),
        Some("jobs.general.dlq")
    );
}

#[test]
fn each_bad_setting_is_named_with_its_fix() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let s = ("PYTHIA_NATS__SUBJECT", "q");
    let cases: &[Case<'_>] = &[
        (&[], "nats.subject", "PYTHIA_NATS__SUBJECT"),
        (
            &[("PYTHIA_NATS__SUBJECT", "a,b")],
            "nats.subject",
            "one subject",
        ),
        (
            &[("PYTHIA_NATS__SUBJECT", "jobs.>")],
            "nats.subject",
            "literal",
        ),
        (
            &[("PYTHIA_NATS__SUBJECT", "jobs..x")],
            "nats.subject",
            "dot-separated",
        ),
        (
            &[s, ("PYTHIA_NATS__STREAM", "a.b")],
            "nats.stream",
            "without `.`",
        ),
        (
            &[s, ("PYTHIA_NATS__CONSUMER", "c d")],
            "nats.consumer",
            "spaces",
        ),
        (
            &[s, ("PYTHIA_NATS__CONCURRENCY", "0")],
            "nats.concurrency",
            "at least 1",
        ),
        (
            &[s, ("PYTHIA_NATS__ACK_WAIT", "10ms")],
            "nats.ack_wait",
            "1s",
        ),
        (
            &[
                s,
                ("PYTHIA_NATS__ACK_WAIT", "2s"),
                ("PYTHIA_NATS__PROGRESS_INTERVAL", "3s"),
            ],
            "nats.progress_interval",
            "shorter than nats.ack_wait",
        ),
        (
            &[s, ("PYTHIA_NATS__MAX_DELIVER", "1")],
            "nats.max_deliver",
            "-1",
        ),
        (
            &[s, ("PYTHIA_NATS__MAX_ACK_PENDING", "0")],
            "nats.max_ack_pending",
            "-1",
        ),
        (
            &[s, ("PYTHIA_NATS__URL", "http://h")],
            "nats.url",
            "nats://",
        ),
        (
            &[s, ("PYTHIA_NATS__FETCH_WAIT", "0s")],
            "nats.fetch_wait",
            "zero",
        ),
        (
            &[
                s,
                ("PYTHIA_NATS__RECONNECT_MIN", "10s"),
                ("PYTHIA_NATS__RECONNECT_MAX", "1s"),
            ],
            "nats.reconnect_max",
            "reconnect_min",
        ),
        (
            &[s, ("PYTHIA_NATS__CREATE", "maybe")],
            "nats.create",
            "missing",
        ),
        (&[s, ("PYTHIA_NATS__ACK_WAIT", "soon")], "nats.ack_wait", ""),
    ];
    for (vars, key, hint) in cases {
        let err = load(vars).unwrap_err();
        assert_eq!(err.key(), *key, "{vars:?}: {err}");
        assert!(err.to_string().contains(hint), "{vars:?}: {err}");
    }
}

#[test]
fn an_unknown_key_is_named_with_the_allowed_ones() {
    let err = load(&[
        ("PYTHIA_NATS__SUBJECT", "q"),
        ("PYTHIA_NATS__CONCURENCY", "5"),
    ])
    .unwrap_err();
    assert_eq!(err.key(), "nats.concurency");
    assert!(err.to_string().contains("concurrency"), "{err}");
}

#[test]
fn other_connectors_sections_are_left_to_them_and_typos_are_named() {
    let config = load(&[
        ("PYTHIA_NATS__SUBJECT", "jobs"),
        ("PYTHIA_KAFKA__BROKERS", "embedded"),
        ("PYTHIA_RABBITMQ__PREFETCH", "0"),
    ])
    .unwrap();
    assert_eq!(config.nats.subject.as_deref(), Some("jobs"));
    let dir = std::env::temp_dir().join(format!("pythia-nats-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |toml: &str| {
        let path = dir.join("pythia.toml");
        std::fs::write(&path, toml).unwrap();
        Config::from_loader(ConfigLoader::new().file(&path).env::<&str, &str>([]))
    };
    let config = file(
        "[nats]\nsubject = \"jobs\"\n[kafka]\nbrokers = \"k:9092\"\n[rabbitmq]\nqueue = \"q\"\n[redis]\nurl = \"redis://127.0.0.1\"\n[log]\nformat = \"json\"\n[otel]\nendpoint = \"http://collector:4318\"\n[worker]\nmax_in_flight = 16\n",
    )
    .unwrap();
    assert_eq!(config.nats.subject.as_deref(), Some("jobs"));
    assert_eq!(config.worker.max_in_flight, 16);
    let err = file("[nats]\nsubject = \"jobs\"\n[natz]\nurl = \"x\"\n").unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(err.key(), "natz", "{err}");
    assert!(err.to_string().contains("nats"), "{err}");
}

#[test]
fn the_password_never_shows_in_debug() {
    let config = load(&[
        ("PYTHIA_NATS__SUBJECT", "q"),
        ("PYTHIA_NATS__URL", "nats://jobs:hunter2@nats:4222"),
    ])
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("nats://jobs:***@nats:4222"), "{shown}");
}

#[test]
fn code_overrides_the_environment_which_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("pythia-nats-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pythia.toml");
    std::fs::write(
        &path,
        "[nats]\nsubject = \"from-file\"\nconcurrency = 3\nack_wait = \"9s\"\n",
    )
    .unwrap();
    let config = Config::from_loader(
        ConfigLoader::new()
            .file(&path)
            .env([
                ("PYTHIA_NATS__CONCURRENCY", "7"),
                ("PYTHIA_NATS__SUBJECT", "from-env"),
            ])
            .set("nats.subject", "from-code"),
    )
    .unwrap();
    assert_eq!(config.nats.subject.as_deref(), Some("from-code"));
    assert_eq!(config.nats.concurrency, 7);
    assert_eq!(config.nats.progress_interval(), Duration::from_secs(3));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_section_example_loads_as_written() {
    let source = include_str!("mod.rs");
    let end = source.find("\npub struct NatsConfig ").unwrap();
    let start = source[..end].rfind("/// ```toml\n").unwrap();
    let toml: String = (source[start..end].lines().skip(1))
        .take_while(|line| *line != "/// ```")
        .map(|line| line.trim_start_matches("///").trim_start())
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = std::env::temp_dir().join(format!("pythia-nats-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pythia.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = Config::from_loader(ConfigLoader::new().file(&path).env::<&str, &str>([]))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.nats.stream_name(), "JOBS");
    assert_eq!(config.consumer_name(), "jobs-workers");
    assert_eq!(config.nats.sinks["audit"], "audit");
    std::fs::remove_dir_all(&dir).ok();
}
