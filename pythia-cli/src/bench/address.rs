//! `pythia bench` by address: each side in a process of its own, against a
//! broker in another process (`pythia broker`, or the cluster `--brokers`
//! names), as a user's worker and a hand-written consumer would run.
//!
//! The input topic is loaded once (lz4, as producers commonly send); each
//! round then runs every side once in a fresh group, alternating the order
//! so warm-up and drift favour none. A side's rate is timed from its first
//! finished message to its last (joining the group is not counted); its CPU
//! time is the whole process's, every thread, from start to the last message.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::{Config, ConfigLoader};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::child;
use super::side::{Side, SideReport};
use super::{Args, median, round3};
use crate::loadtest::load::{Load, Pace, Plan as LoadPlan};

/// What `--json` prints for the runs by address.
#[derive(Debug, Serialize)]
pub(crate) struct AddressReport {
    pub(crate) brokers: String,
    /// Where the broker runs: `pythia broker` (a process of its own) or given.
    pub(crate) broker: &'static str,
    pub(crate) messages: u64,
    pub(crate) message_size: u64,
    pub(crate) partitions: i32,
    /// Every run of every round, in the order they ran.
    pub(crate) runs: Vec<Run>,
    /// Each side's medians and client properties.
    pub(crate) sides: BTreeMap<&'static str, Summary>,
    pub(crate) ratios: Ratios,
}

/// One side's run in one round.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) round: u32,
    pub(crate) side: &'static str,
    pub(crate) msgs_per_s: f64,
    pub(crate) cpu_us_per_msg: f64,
    pub(crate) user_s: f64,
    pub(crate) system_s: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) context_switches: u64,
}

/// A side's medians over the rounds, and what it ran with.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) msgs_per_s: f64,
    pub(crate) cpu_us_per_msg: f64,
    pub(crate) peak_rss_mib: f64,
    /// Consumer properties as set; librdkafka's defaults for the rest.
    pub(crate) consumer: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) producer: BTreeMap<String, String>,
}

impl Summary {
    /// The medians of the runs of the side named `side` among `runs`, and
    /// the settings it ran with.
    pub(crate) fn of(
        runs: &[Run],
        side: &str,
        consumer: &BTreeMap<String, String>,
        producer: &BTreeMap<String, String>,
    ) -> Self {
        let of = || runs.iter().filter(|r| r.side == side);
        Self {
            msgs_per_s: median(of().map(|r| r.msgs_per_s)).round(),
            cpu_us_per_msg: round3(median(of().map(|r| r.cpu_us_per_msg))),
            peak_rss_mib: round3(median(of().map(|r| r.peak_rss_mib))),
            consumer: consumer.clone(),
            producer: producer.clone(),
        }
    }
}

/// Pythia against the baselines, from the medians.
#[derive(Debug, Serialize)]
pub(crate) struct Ratios {
    /// Throughput of the pass-through worker over the classic poll loop.
    pub(crate) pythia_vs_raw: f64,
    /// Throughput of the pass-through worker over the batch-queue loop.
    pub(crate) pythia_vs_fastest: f64,
    /// CPU per message of the pass-through worker over the poll loop's.
    pub(crate) pythia_cpu_vs_raw: f64,
    /// Peak RSS of the pass-through worker over the poll loop's.
    pub(crate) pythia_rss_vs_raw: f64,
    /// Throughput of the pipeline over the raw consume→produce loop.
    pub(crate) pipeline_vs_raw: f64,
    /// CPU per message of the pipeline over the raw loop's.
    pub(crate) pipeline_cpu_vs_raw: f64,
}

/// Runs the rounds by address and reports them.
pub(crate) fn run(args: &Args) -> anyhow::Result<AddressReport> {
    let started = Instant::now();
    let (input, output) = match &args.topic {
        Some(topic) => (topic.clone(), format!("{topic}.out")),
        None => {
            let name = format!("pythia-bench-{}", std::process::id());
            (format!("{name}.in"), format!("{name}.out"))
        }
    };
    let topics = [
        (input.clone(), args.partitions),
        (output.clone(), args.partitions),
    ];
    let broker = match &args.brokers {
        Some(brokers) => Broker::Given(brokers.clone()),
        None => Broker::spawn(&topics)?,
    };
    let mut base: Config = ConfigLoader::new()
        .load()
        .context("loading pythia.toml and PYTHIA_* variables")?;
    base.kafka.brokers = Some(broker.bootstrap().to_owned());
    let producer = base.kafka.producer_client_config()?;
    // Topics of its own on a cluster, unless told to use existing ones.
    let owned = matches!(broker, Broker::Given(_)) && args.topic.is_none();
    if owned {
        create_topics(&producer, &topics)?;
    }
    let result = Topic::open(&base, &input).and_then(|topic| {
        let plan = Plan {
            broker: &broker,
            base: &base,
            topic,
            output: &output,
            started,
        };
        plan.rounds(args)
    });
    if owned {
        delete_topics(&producer, &[&input, &output]);
    }
    result
}

/// The input topic as the runs find it.
struct Topic {
    name: String,
    partitions: i32,
    /// Each partition's end before the load: where every side's group starts.
    start: Vec<i64>,
}

impl Topic {
    /// Reads `name`'s partitions and their ends.
    fn open(base: &Config, name: &str) -> anyhow::Result<Self> {
        let consumer = check_consumer(base, name)?;
        let metadata = consumer
            .fetch_metadata(Some(name), Duration::from_secs(10))
            .with_context(|| format!("reading the metadata of `{name}`"))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            bail!(
                "topic `{name}` does not exist or has no partitions: create it first, e.g. `pythia broker --topic {name}:8 --topic {name}.out:8`"
            );
        }
        let start = (0..partitions)
            .map(|p| {
                Ok(consumer
                    .fetch_watermarks(name, p, Duration::from_secs(10))?
                    .1)
            })
            .collect::<anyhow::Result<Vec<i64>>>()?;
        Ok(Self {
            name: name.to_owned(),
            partitions,
            start,
        })
    }
}

fn check_consumer(base: &Config, topic: &str) -> anyhow::Result<BaseConsumer> {
    let mut check = base.kafka.clone();
    check.group = Some(format!("{topic}-check"));
    Ok(check.consumer_client_config("bench-check")?.create()?)
}

/// The rounds on one loaded topic.
struct Plan<'a> {
    broker: &'a Broker,
    base: &'a Config,
    topic: Topic,
    output: &'a str,
    started: Instant,
}

impl Plan<'_> {
    fn rounds(&self, args: &Args) -> anyhow::Result<AddressReport> {
        self.preload(args)?;
        super::say(
            args,
            format_args!(
                "by address ({}): pre-loaded {} messages of {} B (lz4) on {} partitions of {} in {:.1} s",
                self.broker.describe(),
                args.messages(),
                args.message_size,
                self.topic.partitions,
                self.topic.name,
                self.started.elapsed().as_secs_f64()
            ),
        );
        let mut reports: Vec<(u32, SideReport)> = Vec::new();
        for round in 1..=args.rounds {
            for side in order(round) {
                if !args.only.is_empty() && !args.only.contains(&side) {
                    continue;
                }
                let group = format!(
                    "{}-{}-{round}-{}",
                    self.topic.name,
                    std::process::id(),
                    side.name()
                );
                self.start_group(&group)?;
                let report = self.run_side(side, &group, args)?;
                super::say(
                    args,
                    format_args!(
                        "round {round} {:<20} {:>10.0} msg/s  {:>6.3} µs CPU/msg  {:>6.1} MiB peak RSS  {:>7} context switches",
                        side.label(),
                        report.msgs_per_s,
                        report.cpu_us_per_msg,
                        report.peak_rss_mib,
                        report.context_switches
                    ),
                );
                reports.push((round, report));
            }
        }
        Ok(summarize(args, self.broker, self.topic.partitions, reports))
    }

    /// Fills the input topic and checks the broker kept every message.
    fn preload(&self, args: &Args) -> anyhow::Result<()> {
        let producer = self.base.kafka.producer_client_config()?;
        Load::start(
            &producer,
            LoadPlan {
                topic: self.topic.name.clone(),
                partitions: self.topic.partitions,
                messages: args.messages(),
                message_size: args.message_size as usize,
                pace: Pace::Flat,
                warm_up: false,
            },
        )?
        .join()?;
        let consumer = check_consumer(self.base, &self.topic.name)?;
        let mut total = 0;
        for (partition, &start) in self.topic.start.iter().enumerate() {
            let (low, high) = consumer.fetch_watermarks(
                &self.topic.name,
                partition as i32,
                Duration::from_secs(10),
            )?;
            if low > start {
                bail!(
                    "the broker dropped messages of partition {partition} the runs need (the embedded broker keeps about 5 MiB per partition): use fewer --messages, a smaller --message-size or more --partitions"
                );
            }
            total += high - start;
        }
        if total as u64 != args.messages() {
            bail!(
                "the input topic gained {total} messages, not {}: does something else write to it?",
                args.messages()
            );
        }
        Ok(())
    }

    /// Commits the topic's ends before the load for `group`, so that a side
    /// reads just the loaded messages of a topic that held some already.
    fn start_group(&self, group: &str) -> anyhow::Result<()> {
        if self.topic.start.iter().all(|&s| s == 0) {
            return Ok(());
        }
        let mut config = self.base.kafka.clone();
        config.group = Some(group.to_owned());
        let consumer: BaseConsumer = config.consumer_client_config("bench-start")?.create()?;
        let mut positions = TopicPartitionList::new();
        for (partition, &start) in self.topic.start.iter().enumerate() {
            positions.add_partition_offset(
                &self.topic.name,
                partition as i32,
                Offset::Offset(start),
            )?;
        }
        consumer
            .commit(&positions, CommitMode::Sync)
            .with_context(|| format!("committing the start offsets of group {group}"))?;
        Ok(())
    }

    /// Runs one side in a process of its own and reads its report.
    fn run_side(&self, side: Side, group: &str, args: &Args) -> anyhow::Result<SideReport> {
        child::run_side(side.label(), |command| {
            command
                .args(["bench-side", "--side", side.name()])
                .args(["--brokers", self.broker.bootstrap()])
                .args(["--topic", &self.topic.name, "--output", self.output])
                .args(["--group", group, "--messages", &args.messages().to_string()])
                .args(["--partitions", &self.topic.partitions.to_string()]);
        })
    }
}

/// The order of the sides in `round`: the poll loop first in odd rounds,
/// Pythia first in even ones.
pub(crate) fn order(round: u32) -> [Side; 5] {
    if round % 2 == 1 {
        Side::ALL
    } else {
        [
            Side::Pythia,
            Side::Fastest,
            Side::Raw,
            Side::PipelinePythia,
            Side::PipelineRaw,
        ]
    }
}

fn summarize(
    args: &Args,
    broker: &Broker,
    partitions: i32,
    reports: Vec<(u32, SideReport)>,
) -> AddressReport {
    let runs: Vec<Run> = reports
        .iter()
        .map(|(round, r)| Run {
            round: *round,
            side: r.side.name(),
            msgs_per_s: r.msgs_per_s,
            cpu_us_per_msg: r.cpu_us_per_msg,
            user_s: r.user_s,
            system_s: r.system_s,
            peak_rss_mib: r.peak_rss_mib,
            context_switches: r.context_switches,
        })
        .collect();
    let mut sides = BTreeMap::new();
    for side in Side::ALL {
        let Some((_, first)) = reports.iter().find(|(_, r)| r.side == side) else {
            continue;
        };
        let summary = Summary::of(&runs, side.name(), &first.consumer, &first.producer);
        sides.insert(side.name(), summary);
    }
    let ratio =
        |a: Side, b: Side, f: fn(&Summary) -> f64| match (sides.get(a.name()), sides.get(b.name()))
        {
            (Some(a), Some(b)) if f(b) > 0.0 => round3(f(a) / f(b)),
            _ => 0.0,
        };
    let ratios = Ratios {
        pythia_vs_raw: ratio(Side::Pythia, Side::Raw, |s| s.msgs_per_s),
        pythia_vs_fastest: ratio(Side::Pythia, Side::Fastest, |s| s.msgs_per_s),
        pythia_cpu_vs_raw: ratio(Side::Pythia, Side::Raw, |s| s.cpu_us_per_msg),
        pythia_rss_vs_raw: ratio(Side::Pythia, Side::Raw, |s| s.peak_rss_mib),
        pipeline_vs_raw: ratio(Side::PipelinePythia, Side::PipelineRaw, |s| s.msgs_per_s),
        pipeline_cpu_vs_raw: ratio(Side::PipelinePythia, Side::PipelineRaw, |s| {
            s.cpu_us_per_msg
        }),
    };
    AddressReport {
        brokers: broker.bootstrap().to_owned(),
        broker: broker.describe(),
        messages: args.messages(),
        message_size: args.message_size,
        partitions,
        runs,
        sides,
        ratios,
    }
}

/// The lines a person reads after the rounds.
pub(crate) fn human(report: &AddressReport) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "by address, medians of the rounds ({}, {} messages, {} partitions):",
        report.broker, report.messages, report.partitions
    );
    for side in Side::ALL {
        if let Some(s) = report.sides.get(side.name()) {
            let _ = writeln!(
                text,
                "  {:<20} {:>10.0} msg/s  {:>6.3} µs CPU/msg  {:>6.1} MiB peak RSS",
                side.label(),
                s.msgs_per_s,
                s.cpu_us_per_msg,
                s.peak_rss_mib
            );
        }
    }
    let r = &report.ratios;
    let _ = writeln!(
        text,
        "  pass-through: {:.3}× the poll loop, {:.3}× the batch loop; CPU {:.3}×, peak RSS {:.3}× the poll loop's",
        r.pythia_vs_raw, r.pythia_vs_fastest, r.pythia_cpu_vs_raw, r.pythia_rss_vs_raw
    );
    let _ = writeln!(
        text,
        "  pipeline:     {:.3}× the consume→produce loop; CPU {:.3}×",
        r.pipeline_vs_raw, r.pipeline_cpu_vs_raw
    );
    let _ = writeln!(
        text,
        "client properties set (librdkafka's defaults otherwise):"
    );
    for side in Side::ALL {
        if let Some(s) = report.sides.get(side.name()) {
            let _ = writeln!(text, "  {}: consumer {}", side.label(), inline(&s.consumer));
            if !s.producer.is_empty() {
                let _ = writeln!(text, "  {}: producer {}", side.label(), inline(&s.producer));
            }
        }
    }
    text
}

fn inline(properties: &BTreeMap<String, String>) -> String {
    properties
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The broker the sides reach by address.
enum Broker {
    /// `pythia broker`, started here; stopped when dropped.
    Spawned {
        child: Child,
        bootstrap: String,
    },
    Given(String),
}

impl Broker {
    /// Starts `pythia broker` with `topics` and reads its address.
    fn spawn(topics: &[(String, i32)]) -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe().context("finding this program")?);
        command.arg("broker");
        for (name, partitions) in topics {
            command.arg("--topic").arg(format!("{name}:{partitions}"));
        }
        // SAFETY: only async-signal-safe calls between fork and exec. The
        // broker is stopped by `Drop`; should this process die first, the
        // kernel stops it too, instead of leaving it behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting `pythia broker`")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("the broker's output")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(bootstrap) = line.trim().strip_prefix("bootstrap=") else {
            let _ = child.kill();
            bail!("`pythia broker` did not print its address (it printed {line:?})");
        };
        Ok(Self::Spawned {
            bootstrap: bootstrap.to_owned(),
            child,
        })
    }

    fn bootstrap(&self) -> &str {
        match self {
            Self::Spawned { bootstrap, .. } => bootstrap,
            Self::Given(brokers) => brokers,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::Spawned { .. } => "pythia broker in its own process",
            Self::Given(_) => "brokers given by --brokers",
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Self::Spawned { child, .. } = self {
            // SAFETY: signals the child this process started and still owns.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn admin(client: &rdkafka::ClientConfig) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    client.create().context("creating an admin client")
}

fn create_topics(client: &rdkafka::ClientConfig, topics: &[(String, i32)]) -> anyhow::Result<()> {
    let admin = admin(client)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(-1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .context("creating the benchmark's topics (a broker without CreateTopics, such as `pythia broker`, needs --topic NAME: create NAME and NAME.out first)")?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!(
                "could not create topic `{topic}`: {code}; the benchmark needs the right to create topics, or pass --topic NAME to use NAME and NAME.out as they are"
            );
        }
    }
    Ok(())
}

/// Deletes the benchmark's topics; a failure is a warning.
fn delete_topics(client: &rdkafka::ClientConfig, topics: &[&str]) {
    let deleted = admin(client).and_then(|admin| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(admin.delete_topics(topics, &AdminOptions::new()))?)
    });
    if let Err(error) = deleted {
        eprintln!("could not delete the benchmark's topics {topics:?}: {error:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_which_side_goes_first() {
        assert_eq!(order(1)[0], Side::Raw);
        assert_eq!(order(2)[0], Side::Pythia);
        for round in 1..=4 {
            let mut sides = order(round).to_vec();
            sides.sort_by_key(|s| s.name());
            let mut all = Side::ALL.to_vec();
            all.sort_by_key(|s| s.name());
            assert_eq!(sides, all, "every side runs once in round {round}");
        }
    }
}
