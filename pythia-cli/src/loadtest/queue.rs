//! `pythia loadtest` on a work queue (RabbitMQ, a Redis list or stream,
//! NATS JetStream): worker processes sharing one input, each with its
//! prefetch, under a load; the same JSON as on Kafka.
//!
//! Each run makes a fresh input and output, starts the instances
//! (`loadtest-queue-worker`), waits until the broker counts them all as
//! consumers, then sends the load (every message confirmed) and reads the
//! output: every instance writes one confirmed record per message it
//! processed (id, instance, latency) before acknowledging the input, so the
//! split, the duplicates, the losses and the latency are counted from what
//! the workers wrote. A queue has no partitions: `partitions` is 1.
//!
//! What differs between the brokers is behind [`LoadQueues`], in
//! [`super::rabbit`], [`super::redis`] and [`super::nats`].

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::fleet::Tally;
use super::instance::now_us;
use super::report::{self, InstanceShare, Latency, RunReport};
use super::{Args, JOIN_TIMEOUT, STOP_TIMEOUT};
use crate::broker::BrokerKind;

/// How long the output queue must stay quiet after the instances stopped
/// before the count is final (late duplicates would show in it).
const QUIET: Duration = Duration::from_millis(500);

/// What a broker does for a run: make and delete its input and output,
/// count the consumers, send the load and read the records back.
pub(crate) trait LoadQueues {
    /// The broker, as `--broker` names it.
    const KIND: BrokerKind;

    /// The broker's URL with the password hidden.
    fn redacted_url(&self) -> String;
    /// The variables that configure an instance on the run's `input` and
    /// `output` with `prefetch` (the URL's included, with its password:
    /// the environment, unlike arguments, is not shown by `ps`).
    fn instance_env(&self, input: &str, output: &str, prefetch: u16) -> Vec<(String, String)>;
    /// Makes the run's input and output (the input may also be left for the
    /// first instance to make, as a worker does).
    async fn prepare(&mut self, input: &str, output: &str) -> anyhow::Result<()>;
    /// How many instances consume `input` now, as the broker counts them.
    async fn consumers(&mut self, input: &str) -> anyhow::Result<usize>;
    /// Sends `count` messages to `input`, `payload(i, buffer)` writing the
    /// i-th, one every `pace` if given (else as fast as the broker takes
    /// them); returns once the broker has confirmed every one.
    async fn send(
        &mut self,
        input: &str,
        count: u64,
        pace: Option<Duration>,
        payload: impl FnMut(u64, &mut Vec<u8>) + Send,
    ) -> anyhow::Result<()>;
    /// Reads the records of `output` into `tally` until aborted.
    fn collect(
        &self,
        output: &str,
        tally: Arc<Mutex<Tally>>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static;
    /// Deletes what the run made (the instances' own keys and streams
    /// included), warning on stderr about what could not be deleted.
    async fn delete(&mut self, input: &str, output: &str);
}

/// Checks the options of a run on a work queue; the message names what to
/// change.
pub(crate) fn check(args: &Args) -> anyhow::Result<()> {
    let broker = args.broker.name();
    if let Some(flag) = misplaced_flag(args) {
        bail!("{flag} is a Kafka option of `pythia loadtest`: leave it out with --broker {broker}");
    }
    if args.message_size < 16 {
        bail!(
            "--message-size {} is too small for --broker {broker}: each message carries its number and send time (16 bytes); use --message-size 16 or more",
            args.message_size
        );
    }
    Ok(())
}

/// Runs `pythia loadtest` on the broker of `queues`, made on a runtime of
/// the load test's own.
pub(crate) fn run<Q: LoadQueues>(
    args: &Args,
    connect: impl AsyncFnOnce() -> anyhow::Result<Q>,
) -> anyhow::Result<()> {
    check(args)?;
    let (messages, rate) = match (args.rate, args.duration) {
        (Some(rate), Some(duration)) => {
            let messages = (rate * duration.as_secs_f64()).round() as u64;
            if messages == 0 {
                bail!("--rate {rate} for {duration:?} sends no message; raise either");
            }
            (messages, Some(rate))
        }
        (Some(_), None) => {
            bail!("--rate needs --duration: how long to publish, e.g. --duration 30s")
        }
        (None, Some(_)) => bail!("--duration needs --rate: messages per second, e.g. --rate 5000"),
        (None, None) => (args.messages, None),
    };
    let counts: Vec<usize> = if args.scale.is_empty() {
        vec![args.instances as usize]
    } else {
        args.scale.iter().map(|&n| n as usize).collect()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut queues = runtime.block_on(connect())?;
    let mut reports = Vec::new();
    for (index, &count) in counts.iter().enumerate() {
        say(
            args,
            format_args!(
                "run {}/{}: {count} instance{} on one queue ({} at {}), prefetch {}, {messages} messages of {} B, work {}, concurrency {}",
                index + 1,
                counts.len(),
                if count == 1 { "" } else { "s" },
                Q::KIND.name(),
                queues.redacted_url(),
                args.prefetch,
                args.message_size,
                args.work,
                args.concurrency
                    .map_or("default".to_owned(), |c| c.to_string()),
            ),
        );
        let mut run = Run {
            args,
            queues: &mut queues,
            index,
            count,
            messages,
            rate,
        };
        let report = runtime.block_on(run.once())?;
        if args.json {
            eprintln!(
                "run {}: {count} instances consuming after {:.2} s",
                index + 1,
                report.join_seconds
            );
        } else {
            println!("{}", report::human_run(&report));
        }
        reports.push(report);
    }
    let efficiency = report::efficiency(&reports);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let text = report::json(reports, efficiency, !args.scale.is_empty())?;
        writeln!(stdout, "{text}")?;
    } else if !args.scale.is_empty() {
        writeln!(stdout, "{}", report::human_scale(&reports, &efficiency))?;
    }
    stdout.flush()?;
    Ok(())
}

/// A Kafka-only flag given with a work queue's --broker.
fn misplaced_flag(args: &Args) -> Option<&'static str> {
    [
        (args.brokers.is_some(), "--brokers"),
        (args.partitions != 8, "--partitions"),
        (args.latency, "--latency"),
        (args.handoff, "--handoff"),
        (args.plot.is_some(), "--plot"),
        (args.target_rate.is_some(), "--target-rate"),
    ]
    .into_iter()
    .find(|(given, _)| *given)
    .map(|(_, flag)| flag)
}

fn say(args: &Args, line: std::fmt::Arguments<'_>) {
    if args.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// One run with `count` instances on a fresh input and output.
struct Run<'a, Q> {
    args: &'a Args,
    queues: &'a mut Q,
    index: usize,
    count: usize,
    messages: u64,
    rate: Option<f64>,
}

impl<Q: LoadQueues> Run<'_, Q> {
    async fn once(&mut self) -> anyhow::Result<RunReport> {
        let input = format!("pythia-loadtest-{}-{}", std::process::id(), self.index);
        let output = format!("{input}-out");
        let result = self.measure(&input, &output).await;
        self.queues.delete(&input, &output).await;
        result
    }

    async fn measure(&mut self, input: &str, output: &str) -> anyhow::Result<RunReport> {
        self.queues.prepare(input, output).await?;
        let tally = Arc::new(Mutex::new(Tally::new(self.messages, self.count)));
        let collector = tokio::spawn(self.queues.collect(output, tally.clone()));

        let started = Instant::now();
        let env = self.queues.instance_env(input, output, self.args.prefetch);
        let mut fleet = Fleet::start(self.args, Q::KIND, self.count, &env)?;
        // Joined: the broker counts every instance as a consumer.
        loop {
            if self.queues.consumers(input).await? >= self.count {
                break;
            }
            fleet.check_alive()?;
            if started.elapsed() > JOIN_TIMEOUT {
                bail!("the instances did not all consume `{input}` within {JOIN_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let join_seconds = started.elapsed().as_secs_f64();

        let load_started = Instant::now();
        let size = self.args.message_size as usize;
        let pace = self.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        let sending = self
            .queues
            .send(input, self.messages, pace, |i, buffer| {
                buffer.extend_from_slice(&i.to_le_bytes());
                buffer.extend_from_slice(&now_us().to_le_bytes());
                buffer.resize(size, b'x');
            })
            .await;
        let mut errors = u64::from(sending.is_err());
        if let Err(error) = &sending {
            eprintln!("load: {error:#}");
        }

        let mut last_move = Instant::now();
        let mut last_unique = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let unique = lock(&tally).unique;
            if unique >= self.messages {
                break;
            }
            if unique != last_unique {
                last_unique = unique;
                last_move = Instant::now();
            } else if last_move.elapsed() > self.args.timeout {
                eprintln!(
                    "nothing processed for {:?}: stopping with {unique} of {} messages processed",
                    self.args.timeout, self.messages
                );
                break;
            }
            fleet.check_alive()?;
            if collector.is_finished() {
                break;
            }
        }
        let failed_instances = fleet.stop(STOP_TIMEOUT);
        // Records written during the drain (duplicates would be) arrive too.
        loop {
            let before = lock(&tally).processed;
            tokio::time::sleep(QUIET).await;
            if lock(&tally).processed == before || collector.is_finished() {
                break;
            }
        }
        if collector.is_finished() {
            collector
                .await
                .context("the output reader")?
                .with_context(|| format!("reading the output `{output}`"))?;
            bail!("the output reader stopped before the run ended");
        }
        collector.abort();
        let _ = collector.await;

        let mut tally = lock(&tally);
        errors += failed_instances as u64 + tally.bad;
        let end = tally.last_unique_at.unwrap_or_else(Instant::now);
        let seconds = end.saturating_duration_since(load_started).as_secs_f64();
        Ok(RunReport {
            instances: self.count,
            partitions: 1,
            messages: self.messages,
            processed: tally.processed,
            unique_processed: tally.unique,
            duplicates: tally.processed - tally.unique,
            lost: self.messages - tally.unique,
            errors,
            seconds: report::round3(seconds),
            throughput_msgs_per_s: if seconds > 0.0 {
                (tally.unique as f64 / seconds).round()
            } else {
                0.0
            },
            latency_ms: Latency::of(&mut tally.latencies_us),
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
        })
    }
}

pub(crate) fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one output record, or a bad one.
pub(crate) fn record(tally: &mut Tally, record: &[u8]) {
    match super::queue_instance::decode(record) {
        Some((id, instance, latency_us)) => tally.record(instance as usize, id, latency_us),
        None => tally.bad += 1,
    }
}

/// The instance processes of one run.
struct Fleet {
    children: Vec<(Child, Option<ChildStdin>)>,
}

impl Fleet {
    /// Starts `count` instances on `broker`, configured by `env`.
    fn start(
        args: &Args,
        broker: BrokerKind,
        count: usize,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the pythia binary")?;
        let mut fleet = Self {
            children: Vec::with_capacity(count),
        };
        for index in 0..count {
            let mut command = Command::new(&exe);
            command
                .args(["loadtest-queue-worker", "--broker", broker.name()])
                .args(["--instance", &index.to_string()])
                .args(["--work", &args.work.to_string()])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("PYTHIA_WORKER__INSTANCE", format!("loadtest-{index}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            if let Some(c) = args.concurrency {
                command.env("PYTHIA_WORKER__MAX_IN_FLIGHT", c.to_string());
            }
            if std::env::var_os("RUST_LOG").is_none() {
                command.env("RUST_LOG", "warn");
            }
            let mut child = command
                .spawn()
                .with_context(|| format!("starting instance {index}"))?;
            let stdin = child.stdin.take();
            fleet.children.push((child, stdin));
        }
        Ok(fleet)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (index, (child, _)) in self.children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!("instance {index} exited early ({status}); its log is above");
            }
        }
        Ok(())
    }

    /// Closes every instance's stdin (they drain, ack and close) and waits;
    /// returns how many failed or had to be killed.
    fn stop(&mut self, within: Duration) -> usize {
        for (_, stdin) in &mut self.children {
            drop(stdin.take());
        }
        let end = Instant::now() + within;
        let mut failed = 0;
        for (index, (child, _)) in self.children.iter_mut().enumerate() {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            eprintln!("instance {index} exited with {status}");
                            failed += 1;
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        eprintln!("instance {index} did not stop within {within:?}: killed");
                        let _ = child.kill();
                        let _ = child.wait();
                        failed += 1;
                        break;
                    }
                }
            }
        }
        failed
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn kafka_only_flags_are_named() {
        let cli = Cli::parse_from(["t", "--broker", "rabbitmq", "--partitions", "4"]);
        assert_eq!(misplaced_flag(&cli.args), Some("--partitions"));
        let cli = Cli::parse_from(["t", "--broker", "rabbitmq", "--prefetch", "20"]);
        assert_eq!(misplaced_flag(&cli.args), None);
    }
}
