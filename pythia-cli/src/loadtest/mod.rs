//! `pythia loadtest`: worker processes in one group under a load, measured.
//!
//! Each run starts a fresh topic and group, starts the instances (this binary's
//! hidden `loadtest-worker` command), waits until they have joined and split the
//! partitions, then produces the load and waits until every message is
//! processed (or nothing moves for `--timeout`). The instances report each
//! message they process, so duplicates and losses are counted, not assumed.

pub(crate) mod fleet;
mod handoff;
pub(crate) mod instance;
mod latency;
pub(crate) mod load;
mod nats;
pub(crate) mod plot;
mod queue;
pub(crate) mod queue_instance;
mod rabbit;
mod raw;
mod redis;
pub(crate) mod report;
pub(crate) mod work;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::{Config, ConfigLoader, EmbeddedBroker};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use fleet::{Fleet, Setup};
use load::{Load, Pace, Plan};
use plot::Sample;
use report::{InstanceShare, Latency, RunReport};
use work::Work;

use crate::broker::BrokerKind;

/// Options of `pythia loadtest`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  pythia loadtest --instances 2 --messages 100000
  pythia loadtest --work io:5ms --partitions 8 --concurrency 1 --scale 1,2,4 --target-rate 2000
  pythia loadtest --rate 5000 --duration 20s --plot load.svg
  pythia loadtest --brokers kafka-1:9092 --instances 3 --json
  pythia loadtest --latency --messages 300000 --duration 10s
  pythia loadtest --handoff --rate 20000 --duration 20s
  pythia loadtest --broker rabbitmq --work io:5ms --prefetch 10 --scale 1,2 --json
  pythia loadtest --broker redis-list --work io:5ms --scale 1,2
  pythia loadtest --broker nats --url nats://queue:4222 --prefetch 8 --messages 50000")]
pub(crate) struct Args {
    /// The broker: kafka, or a work queue: rabbitmq, redis-list,
    /// redis-streams or nats (instances share one input; the
    /// counts come from the records they write to an output queue).
    #[arg(long, value_enum, default_value_t)]
    broker: BrokerKind,
    /// With a work queue: the server, e.g. amqp://user:password@host:5672/%2f,
    /// redis://:password@host:6379/0, nats://user:password@host:4222
    /// (default: the variable its worker reads, PYTHIA_RABBITMQ__URL,
    /// PYTHIA_REDIS__URL or PYTHIA_NATS__URL, else the server on this
    /// machine). Prefer the variable for a password: `ps` shows arguments.
    #[arg(long)]
    url: Option<String>,
    /// With a work queue: what each instance holds unacknowledged, and so
    /// processes at once (RabbitMQ's basic.qos prefetch, `redis.prefetch`,
    /// `nats.concurrency`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    prefetch: u16,
    /// Worker processes in the group.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "scale")]
    instances: u32,
    /// Partitions of the load-test topic.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Messages to produce, as fast as the producer goes (with --latency:
    /// the run that measures the maximum rate).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "rate")]
    messages: u64,
    /// Messages per second to produce (with --duration), instead of --messages.
    #[arg(long, value_parser = positive)]
    rate: Option<f64>,
    /// How long to produce at --rate, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Measure end-to-end latency at half the maximum rate (or at --rate),
    /// for Pythia and for a raw rdkafka poll loop under the same load.
    #[arg(long, conflicts_with_all = ["scale", "handoff", "plot", "target_rate"])]
    latency: bool,
    /// Measure the hand-off when an instance joins a busy group, with each
    /// group protocol (--rate default 20000, --duration default 20s).
    #[arg(long, conflicts_with_all = ["scale", "plot", "target_rate", "messages"])]
    handoff: bool,
    /// Bytes per message (at least 8: the message number).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    message_size: u64,
    /// Work per message: noop, io:<duration> (waits), cpu:<duration> (busy).
    #[arg(long, default_value = "noop", value_parser = Work::parse)]
    work: Work,
    /// Each instance's in-flight limit (worker.max_in_flight); 1 handles one
    /// message at a time. Default: the worker's default.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: Option<u64>,
    /// Successive runs with these instance counts, e.g. 1,2,4.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    scale: Vec<u32>,
    /// A rate (msg/s) to advise replicas, partitions and a KEDA lagThreshold for.
    #[arg(long, value_parser = positive)]
    target_rate: Option<f64>,
    /// Print one JSON object on stdout and nothing else.
    #[arg(long)]
    json: bool,
    /// Write throughput and lag over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Bootstrap servers of a real cluster (default: an embedded broker).
    #[arg(long)]
    brokers: Option<String>,
    /// Give up when nothing is processed for this long after the load is sent.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn positive(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{value}` is not a positive number")),
    }
}

/// How long instances get to join, and to stop.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeline samples for the plot and the progress bar.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Runs `pythia loadtest`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    match args.broker {
        BrokerKind::Kafka => {}
        BrokerKind::Rabbitmq => return rabbit::run(&args),
        BrokerKind::RedisList => return redis::run(&args, false),
        BrokerKind::RedisStreams => return redis::run(&args, true),
        BrokerKind::Nats => return nats::run(&args),
    }
    if args.url.is_some() || args.prefetch != 10 {
        bail!(
            "--url and --prefetch apply to a work queue's --broker (rabbitmq, redis-list, redis-streams, nats) only: leave them out, or name the broker"
        );
    }
    if let Some(path) = &args.plot
        && path.extension().is_none_or(|e| e != "svg")
    {
        bail!("--plot writes SVG: give a file name ending in .svg, e.g. --plot load.svg");
    }
    let counts: Vec<usize> = if args.scale.is_empty() {
        vec![args.instances as usize]
    } else {
        args.scale.iter().map(|&n| n as usize).collect()
    };
    if !(args.latency || args.handoff) {
        match (args.rate, args.duration) {
            (Some(_), None) => {
                bail!("--rate needs --duration: how long to produce, e.g. --duration 30s")
            }
            (None, Some(_)) => {
                bail!("--duration needs --rate: messages per second, e.g. --rate 5000")
            }
            _ => {}
        }
    }
    if args.raw_work_check() {
        bail!(
            "--latency runs a raw poll loop beside the workers, which runs no simulated work: use --work noop"
        );
    }
    let (messages, pace) = match (args.rate, args.duration) {
        (Some(rate), Some(duration)) if !(args.latency || args.handoff) => {
            let messages = (rate * duration.as_secs_f64()).round() as u64;
            if messages == 0 {
                bail!("--rate {rate} for {duration:?} sends no message; raise either");
            }
            (messages, Pace::Rate(rate))
        }
        _ => (args.messages, Pace::Flat),
    };

    // A config the way workers load theirs, so security settings in PYTHIA_*
    // variables or pythia.toml reach the load producer too.
    let mut base: Config = ConfigLoader::new()
        .load()
        .context("loading pythia.toml and PYTHIA_* variables")?;
    let broker = match &args.brokers {
        Some(brokers) => {
            base.kafka.brokers = Some(brokers.clone());
            None
        }
        None => {
            let broker = EmbeddedBroker::start().context("starting the embedded broker")?;
            base.kafka.brokers = Some(broker.bootstrap_servers().to_owned());
            Some(broker)
        }
    };
    let producer = base
        .kafka
        .producer_client_config()
        .context("the producer configuration")?;

    let ctx = RunContext {
        args: &args,
        broker: broker.as_ref(),
        producer: &producer,
        messages,
        pace,
    };
    if args.latency {
        let report = latency::run(&ctx)?;
        return print(&args, &report, latency::human(&report));
    }
    if args.handoff {
        let reports = handoff::run(&ctx)?;
        let text = String::new();
        return print(&args, &reports, text);
    }
    let mut reports = Vec::new();
    let mut timelines = Vec::new();
    for (index, &count) in counts.iter().enumerate() {
        if !args.json {
            println!(
                "run {}/{}: {count} instance{}, {} partitions, {messages} messages of {} B, work {}, concurrency {}, {}",
                index + 1,
                counts.len(),
                if count == 1 { "" } else { "s" },
                args.partitions,
                args.message_size,
                args.work,
                args.concurrency
                    .map_or("default".to_owned(), |c| c.to_string()),
                if broker.is_some() {
                    "embedded broker"
                } else {
                    "brokers given"
                }
            );
        }
        let (report, samples) = ctx.run_once(index, count)?;
        if args.json {
            eprintln!(
                "run {}: {count} instances joined in {:.2} s",
                index + 1,
                report.join_seconds
            );
        } else {
            println!("{}", report::human_run(&report));
        }
        timelines.push((
            format!("{count} instance{}", if count == 1 { "" } else { "s" }),
            samples,
        ));
        reports.push(report);
    }

    let efficiency = report::efficiency(&reports);
    let advice = args
        .target_rate
        .and_then(|target| report::advise(&reports, &efficiency, target).map(|a| (target, a)));
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&timelines))
            .with_context(|| format!("writing {}", path.display()))?;
        if !args.json {
            println!("plot written to {}", path.display());
        }
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let text = report::json(reports, efficiency, !args.scale.is_empty())?;
        writeln!(stdout, "{text}")?;
        if let Some((target, advice)) = &advice {
            eprint!("{}", report::human_advice(*target, advice));
        }
    } else {
        if !args.scale.is_empty() {
            writeln!(stdout, "{}", report::human_scale(&reports, &efficiency))?;
        }
        if let Some((target, advice)) = &advice {
            write!(stdout, "{}", report::human_advice(*target, advice))?;
        }
    }
    stdout.flush()?;
    Ok(())
}

impl Args {
    /// Whether --latency was asked with work a raw loop cannot run.
    fn raw_work_check(&self) -> bool {
        self.latency && self.work != Work::Noop
    }
}

/// Prints `report` as JSON, or `human` (lines already said stay said).
fn print(args: &Args, report: &impl serde::Serialize, human: String) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(report)?)?;
    } else {
        write!(stdout, "{human}")?;
    }
    stdout.flush()?;
    Ok(())
}

struct RunContext<'a> {
    args: &'a Args,
    broker: Option<&'a EmbeddedBroker>,
    producer: &'a ClientConfig,
    messages: u64,
    pace: Pace,
}

/// What one run does: how many instances of which kind, under which load.
#[derive(Clone, Copy, Debug)]
struct Spec {
    count: usize,
    messages: u64,
    pace: Pace,
    /// The classic rdkafka poll loop instead of Pythia workers.
    raw: bool,
}

impl RunContext<'_> {
    /// A line for a person: on stdout, or stderr with --json.
    fn say(&self, line: std::fmt::Arguments<'_>) {
        if self.args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    /// The bootstrap servers the instances reach.
    fn brokers(&self) -> String {
        self.producer
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_owned()
    }

    /// One run with `count` instances on a fresh topic and group.
    fn run_once(&self, index: usize, count: usize) -> anyhow::Result<(RunReport, Vec<Sample>)> {
        self.run_spec(
            index,
            Spec {
                count,
                messages: self.messages,
                pace: self.pace,
                raw: false,
            },
        )
    }

    /// One run as `spec` says, on a fresh topic and group.
    fn run_spec(&self, index: usize, spec: Spec) -> anyhow::Result<(RunReport, Vec<Sample>)> {
        let Spec {
            count,
            messages,
            pace,
            raw,
        } = spec;
        let args = self.args;
        let name = format!("pythia-loadtest-{}-{index}", std::process::id());
        self.create_topic(&name)?;
        let brokers = self
            .producer
            .get("bootstrap.servers")
            .unwrap_or_default()
            .to_owned();
        let setup = Setup {
            brokers: &brokers,
            embedded: self.broker.is_some(),
            group: &name,
            topic: &name,
            work: args.work,
            concurrency: args.concurrency.map(|c| c as usize),
            raw,
            protocol: None,
            session_timeout: None,
        };
        let load = Load::prepare(
            self.producer,
            Plan {
                topic: name.clone(),
                partitions: args.partitions,
                messages,
                message_size: args.message_size as usize,
                pace,
                warm_up: true,
            },
        )?;
        let started = Instant::now();
        let mut fleet = Fleet::start(&setup, count, messages)?;
        fleet.wait_joined(args.partitions as usize, JOIN_TIMEOUT)?;
        let join_seconds = started.elapsed().as_secs_f64();
        load.wait_ready()?;

        let load_started = Instant::now();
        load.go();
        let mut progress = Progress::new(messages, !args.json);
        let mut samples = vec![Sample {
            t: 0.0,
            produced: 0,
            unique: 0,
        }];
        let mut last_move = Instant::now();
        let mut last_unique = 0;
        loop {
            std::thread::sleep(SAMPLE_EVERY);
            let unique = fleet.tally().unique;
            let produced = load.deliveries.delivered.load(Ordering::Relaxed);
            samples.push(Sample {
                t: load_started.elapsed().as_secs_f64(),
                produced,
                unique,
            });
            progress.show(unique, produced, load_started.elapsed());
            if unique >= messages {
                break;
            }
            if unique != last_unique || !load.is_finished() {
                last_unique = unique;
                last_move = Instant::now();
            } else if last_move.elapsed() > args.timeout {
                progress.clear();
                eprintln!(
                    "nothing processed for {:?}: stopping with {} of {} messages processed",
                    args.timeout, unique, messages
                );
                break;
            }
            fleet.check_alive()?;
        }
        progress.clear();
        tracing::debug!(?samples, "timeline");
        let load_result = load.join();
        let (mut tally, failed_instances) = fleet.finish(STOP_TIMEOUT);
        let delivery_failures = match load_result {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("load: {error:#}");
                1
            }
        };
        let end = tally.last_unique_at.unwrap_or_else(Instant::now);
        let seconds = end.saturating_duration_since(load_started).as_secs_f64();
        let latency = Latency::of(&mut tally.latencies_us);
        let report = RunReport {
            instances: count,
            partitions: args.partitions,
            messages,
            processed: tally.processed,
            unique_processed: tally.unique,
            duplicates: tally.processed - tally.unique,
            lost: messages - tally.unique,
            errors: failed_instances as u64 + tally.bad + delivery_failures,
            seconds: report::round3(seconds),
            throughput_msgs_per_s: if seconds > 0.0 {
                (tally.unique as f64 / seconds).round()
            } else {
                0.0
            },
            latency_ms: latency,
            per_instance: tally
                .per_instance
                .iter()
                .enumerate()
                .map(|(instance, &processed)| InstanceShare {
                    instance,
                    processed,
                })
                .collect(),
            join_seconds,
        };
        Ok((report, samples))
    }

    fn create_topic(&self, name: &str) -> anyhow::Result<()> {
        if let Some(broker) = self.broker {
            broker.create_topic(name, self.args.partitions)?;
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .producer
            .create()
            .context("creating an admin client for the brokers")?;
        let topic = NewTopic::new(
            name,
            self.args.partitions,
            // The broker's default replication factor.
            TopicReplication::Fixed(-1),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let results = runtime
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .context("creating the load-test topic")?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!(
                    "could not create topic `{topic}`: {code}; the load test needs the right to create topics"
                );
            }
        }
        Ok(())
    }
}

/// A progress bar on stderr, shown only when stdout and stderr are terminals.
struct Progress {
    total: u64,
    enabled: bool,
}

impl Progress {
    fn new(total: u64, wanted: bool) -> Self {
        let enabled = wanted && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        Self { total, enabled }
    }

    fn show(&mut self, done: u64, produced: u64, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 30;
        let filled = (WIDTH as u64 * done / self.total.max(1)) as usize;
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        eprint!(
            "\r[{}{}] {done}/{} processed, {rate:.0} msg/s, lag {}   ",
            "#".repeat(filled.min(WIDTH)),
            " ".repeat(WIDTH - filled.min(WIDTH)),
            self.total,
            produced.saturating_sub(done)
        );
    }

    fn clear(&mut self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(100));
        }
    }
}
