//! `pythia console`: a web page for operators, served by this binary with
//! its assets built in (no CDN; it works offline).
//!
//! It shows the consumer groups and their members (client id, host,
//! assigned partitions), the instances' health (`/status` of each worker
//! given with `--instance`), lag per partition and in total with the same
//! numbers as `pythia lag --json`, charted over time from the samples the
//! page keeps, and the dead-letter topics with their `pythia.dlq.*` headers.
//! It is read-only unless started with `--allow-replay`; a replay token
//! (`--replay-token-file`), when set, must then come with each replay request.
//!
//! Files: `routes.rs` (the HTTP API and the page), `groups.rs`,
//! `dead_letters.rs`, and `assets/`; instances are read by
//! [`crate::probe`], shared with `pythia fleet status`.

mod dead_letters;
mod groups;
mod routes;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use pythia_core::Metrics;
use pythia_core::connector::{Endpoint, Limits};
use pythia_kafka::{KafkaConfig, LagReader, Secret};
use rdkafka::consumer::BaseConsumer;

use crate::cluster::ClusterArgs;
use crate::lag::humantime_duration;

#[derive(clap::Args)]
pub(crate) struct ConsoleArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Where to serve the page, IP:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9470")]
    serve: SocketAddr,
    /// A worker instance's metrics.address (HOST:PORT), for its health and
    /// assigned partitions (repeatable).
    #[arg(long = "instance", value_name = "HOST:PORT", value_parser = crate::probe::address)]
    instances: Vec<String>,
    /// A consumer group to show (repeatable), for brokers that describe a
    /// group asked by name but do not list it; listed groups and the
    /// instances' groups are shown anyway.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// A dead-letter topic to show (repeatable); topics ending in `.dlq` are
    /// shown anyway.
    #[arg(long = "dlq-topic", value_name = "TOPIC")]
    dlq_topics: Vec<String>,
    /// Allow replaying dead letters from the page (read-only without it).
    #[arg(long)]
    allow_replay: bool,
    /// With --allow-replay, a file holding a token each replay request must
    /// carry (the page asks for it). A file, so that the token shows in
    /// neither the process list nor the environment.
    #[arg(long, value_name = "FILE")]
    replay_token_file: Option<std::path::PathBuf>,
    /// Longest wait for one broker request.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    timeout: Duration,
}

/// Longest a request may take: a replay waits for every delivery.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the routes share.
pub(crate) struct Console {
    kafka: KafkaConfig,
    /// Describes groups and reads dead letters; one reader at a time.
    client: Mutex<BaseConsumer>,
    lag: Mutex<HashMap<String, LagReader>>,
    instances: Vec<String>,
    groups: Vec<String>,
    dlq_topics: Vec<String>,
    replay: Replay,
    timeout: Duration,
}

/// Whether the page may replay, and with what token.
pub(crate) enum Replay {
    Off,
    On { token: Option<Secret> },
}

pub(crate) async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let kafka = args.cluster.kafka()?;
    let mut own = kafka.clone();
    own.group = Some("pythia-console".to_owned());
    let client: BaseConsumer = own
        .consumer_client_config("pythia-console")?
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the broker client")?;
    let token = match &args.replay_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the replay token from {}", path.display()))?;
            let token = text.trim().to_owned();
            anyhow::ensure!(
                !token.is_empty(),
                "{} is empty: write the replay token in it",
                path.display()
            );
            Some(Secret::new(token))
        }
        None => None,
    };
    let replay = if args.allow_replay {
        Replay::On { token }
    } else {
        Replay::Off
    };
    let console = Arc::new(Console {
        kafka,
        client: Mutex::new(client),
        lag: Mutex::new(HashMap::new()),
        instances: args.instances,
        groups: args.groups,
        dlq_topics: args.dlq_topics,
        replay,
        timeout: args.timeout,
    });
    // A replay of many dead letters waits for every delivery.
    let mut limits = Limits::default();
    limits.request_timeout = REPLAY_TIMEOUT.max(args.timeout * 3);
    let bound = Endpoint::new(Metrics::new())
        .merge(routes::router(console.clone()))
        .limits(limits)
        .bind(args.serve, "--serve")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "serving=http://{}", bound.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    let replay = matches!(console.replay, Replay::On { .. });
    tracing::info!(address = %bound.local_addr(), replay, "console serving");
    let server = bound.spawn();
    pythia_core::shutdown::signal().await;
    server.shutdown().await;
    Ok(())
}
