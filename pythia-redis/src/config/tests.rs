//! Tests of the `[redis]` configuration: loading, defaults, errors.

use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_loader(Config::spec_defaults(
        ConfigLoader::new().no_file().env(vars.iter().copied()),
        &WorkerSpec::UNNAMED,
    ))
}

#[test]
fn defaults_are_a_local_stream_from_its_start_and_no_ordering() {
    let config = load(&[("PYTHIA_REDIS__INPUT", "jobs")]).unwrap();
    assert_eq!(config.redis.url.expose(), DEFAULT_URL);
    assert_eq!(config.redis.mode, Mode::Stream);
    assert_eq!(config.redis.group_start.id(), "0");
    assert_eq!(config.redis.prefetch, 10);
    assert_eq!(config.redis.claim_idle, Duration::from_secs(30));
    assert_eq!(config.redis.renew_every(), Duration::from_secs(10));
    assert_eq!(config.redis.max_deliveries, 5);
    assert_eq!(config.worker.ordering, pythia_core::MessageOrder::None);
    assert_eq!(config.group(), "jobs");
    assert_eq!(config.dead_letter_stream().as_deref(), Some("jobs.dlq"));
}

#[test]
fn group_start_takes_redis_ids_and_words() {
    for (value, expected) in [
        ("0", GroupStart::Start),
        ("start", GroupStart::Start),
        ("$", GroupStart::End),
        ("end", GroupStart::End),
    ] {
        let config = load(&[
            ("PYTHIA_REDIS__INPUT", "jobs"),
            ("PYTHIA_REDIS__GROUP_START", value),
        ])
        .unwrap();
        assert_eq!(config.redis.group_start, expected, "{value}");
    }
}

#[test]
fn each_bad_setting_is_named_with_its_fix() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case<'_>] = &[
        (&[], "redis.input", "PYTHIA_REDIS__INPUT"),
        (
            &[("PYTHIA_REDIS__INPUT", "a,b")],
            "redis.input",
            "one stream",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__PREFETCH", "0"),
            ],
            "redis.prefetch",
            "at least 1",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__URL", "rediss://h"),
            ],
            "redis.url",
            "TLS",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__MODE", "queue"),
            ],
            "redis.mode",
            "stream",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__GROUP_START", "latest"),
            ],
            "redis.group_start",
            "$",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__CLAIM_IDLE", "10ms"),
            ],
            "redis.claim_idle",
            "300ms",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__CLAIM_IDLE", "1s"),
                ("PYTHIA_REDIS__BLOCK", "1s"),
            ],
            "redis.block",
            "third",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__OUTPUT_MAXLEN", "0"),
            ],
            "redis.output_maxlen",
            "no cap",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__CONSUMER", " "),
            ],
            "redis.consumer",
            "default",
        ),
        (
            &[
                ("PYTHIA_REDIS__INPUT", "q"),
                ("PYTHIA_REDIS__RECONNECT_MIN", "10s"),
                ("PYTHIA_REDIS__RECONNECT_MAX", "1s"),
            ],
            "redis.reconnect_max",
            "reconnect_min",
        ),
    ];
    for (vars, key, hint) in cases {
        let err = load(vars).unwrap_err();
        assert_eq!(err.key(), *key, "{vars:?}: {err}");
        assert!(err.to_string().contains(hint), "{vars:?}: {err}");
    }
}

#[test]
fn an_unknown_key_is_named_with_the_allowed_ones() {
    let err = load(&[("PYTHIA_REDIS__INPUT", "q"), ("PYTHIA_REDIS__PREFECH", "5")]).unwrap_err();
    assert_eq!(err.key(), "redis.prefech");
    assert!(err.to_string().contains("prefetch"), "{err}");
}

#[test]
fn other_connectors_sections_are_left_to_them_and_typos_are_named() {
    let config = load(&[
        ("PYTHIA_REDIS__INPUT", "jobs"),
        ("PYTHIA_KAFKA__BROKERS", "embedded"),
        ("PYTHIA_RABBITMQ__QUEUE", "other"),
        ("PYTHIA_NATS__URL", "nats://n:4222"),
    ])
    .unwrap();
    assert_eq!(config.redis.input.as_deref(), Some("jobs"));
    let dir = std::env::temp_dir().join(format!("pythia-redis-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |toml: &str| {
        let path = dir.join("pythia.toml");
        std::fs::write(&path, toml).unwrap();
        Config::from_loader(ConfigLoader::new().file(&path).env::<&str, &str>([]))
    };
    let config = file(
        "[redis]\ninput = \"jobs\"\n[kafka]\nbrokers = \"k:9092\"\n[rabbitmq]\nqueue = \"q\"\n[nats]\nurl = \"nats://n\"\n[log]\nformat = \"json\"\n[otel]\nendpoint = \"http://collector:4318\"\n[worker]\nname = \"w\"\n",
    )
    .unwrap();
    assert_eq!(config.redis.input.as_deref(), Some("jobs"));
    assert_eq!(config.name(), "w");
    let err = file("[redis]\ninput = \"jobs\"\n[rdis]\nurl = \"x\"\n").unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(err.key(), "rdis", "{err}");
    assert!(err.to_string().contains("redis"), "{err}");
}

#[test]
fn the_password_never_shows_in_debug() {
    let config = load(&[
        ("PYTHIA_REDIS__INPUT", "q"),
        ("PYTHIA_REDIS__URL", "redis://jobs:hunter2@redis:6379/0"),
    ])
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://jobs:***@redis:6379/0"), "{shown}");
}

#[test]
fn code_overrides_the_environment_which_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("pythia-redis-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pythia.toml");
    std::fs::write(
        &path,
        "[redis]\ninput = \"from-file\"\nprefetch = 3\nmode = \"list\"\n",
    )
    .unwrap();
    let config = Config::from_loader(
        ConfigLoader::new()
            .file(&path)
            .env([
                ("PYTHIA_REDIS__PREFETCH", "7"),
                ("PYTHIA_REDIS__INPUT", "from-env"),
            ])
            .set("redis.input", "from-code"),
    )
    .unwrap();
    assert_eq!(config.redis.input.as_deref(), Some("from-code"));
    assert_eq!(config.redis.prefetch, 7);
    assert_eq!(config.redis.mode, Mode::List);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_section_example_loads_as_written() {
    let source = include_str!("mod.rs");
    let end = source.find("\npub struct RedisConfig ").unwrap();
    let start = source[..end].rfind("/// ```toml\n").unwrap();
    let toml: String = (source[start..end].lines().skip(1))
        .take_while(|line| *line != "/// ```")
        .map(|line| line.trim_start_matches("///").trim_start())
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = std::env::temp_dir().join(format!("pythia-redis-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pythia.toml");
    std::fs::write(&path, &toml).unwrap();
    let config = Config::from_loader(ConfigLoader::new().file(&path).env::<&str, &str>([]))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.redis.input.as_deref(), Some("jobs"));
    assert_eq!(config.group(), "jobs-worker");
    assert_eq!(config.redis.sinks["audit"], "audit");
    assert_eq!(config.redis.output_maxlen, Some(1_000_000));
    std::fs::remove_dir_all(&dir).ok();
}
