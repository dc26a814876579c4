//! `pythia fleet`: run N instances of a worker binary on one host, restart
//! those that crash, show their status, and scale them by hand
//! (`fleet scale N`) or on a Kafka group's lag or a RabbitMQ queue's backlog
//! with the policy of the KEDA/HPA manifests in `deploy/`. Beyond one host,
//! run the workers on Kubernetes.
//!
//! Files: `supervise.rs` (the child processes), `backlog.rs` (what it scales
//! on), `policy.rs` (when to scale), `control.rs` (the control socket),
//! `status.rs` (what `status` shows).

mod backlog;
mod control;
mod policy;
mod status;
mod supervise;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_kafka::LagReader;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cluster::ClusterArgs;
use crate::lag::humantime_duration;
use crate::rabbit;
use backlog::{GroupLag, QueueBacklog, Signal};
use policy::{Policy, Scaler};
use supervise::{Launch, Supervisor};

/// The default control socket, in the current directory.
const DEFAULT_CONTROL: &str = "pythia-fleet.sock";
/// How often exits are reaped and restarts made.
const TICK: Duration = Duration::from_millis(100);

/// `pythia fleet`.
#[derive(clap::Subcommand)]
pub(crate) enum Args {
    /// Run instances of a worker binary: `pythia fleet run --instances 3 -- ./my-worker`.
    Run(Box<RunArgs>),
    /// Show the instances of a running fleet: pid, uptime, partitions held,
    /// processed/s, lag, restarts.
    Status {
        /// The fleet's control socket (its `fleet run --control`).
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change the number of instances of a running fleet.
    Scale {
        /// The new number of instances.
        instances: usize,
        /// The fleet's control socket (its `fleet run --control`).
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: PathBuf,
    },
}

/// `pythia fleet run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Instances to start with; default: --min, else 1.
    #[arg(long)]
    instances: Option<usize>,
    /// Scale on the lag (--group/--topic) or the queue's backlog (--queue),
    /// down to this many instances (needs --max).
    #[arg(long, requires = "max")]
    min: Option<usize>,
    /// Scale up to this many instances (needs --min); on Kafka never more
    /// than the partitions that have lag.
    #[arg(long, requires = "min")]
    max: Option<usize>,
    /// The consumer group; default: `kafka.group` of the configuration.
    /// Given, the instances get it as PYTHIA_KAFKA__GROUP.
    #[arg(long)]
    group: Option<String>,
    /// An input topic (repeatable); default: `kafka.topics`. Given, the
    /// instances get them as PYTHIA_KAFKA__TOPICS.
    #[arg(long = "topic", value_name = "TOPIC")]
    topics: Vec<String>,
    /// A RabbitMQ queue: scale on its backlog, ready + unacknowledged
    /// messages, instead of a Kafka group's lag. The instances get it as
    /// PYTHIA_RABBITMQ__QUEUE.
    #[arg(long)]
    queue: Option<String>,
    /// With --queue: the broker, amqp://user:password@host:5672/%2f
    /// (default: PYTHIA_RABBITMQ__URL, else 127.0.0.1:5672 as guest); the
    /// instances get it as PYTHIA_RABBITMQ__URL. Prefer the variable for a
    /// password: `ps` shows arguments.
    #[arg(long, requires = "queue")]
    url: Option<String>,
    /// Messages each instance is expected to work off: of lag on Kafka
    /// (KEDA's lagThreshold, the HPA's AverageValue), of backlog (ready +
    /// unacked) on a queue.
    #[arg(long, visible_alias = "backlog-per-instance", default_value_t = 1000)]
    lag_per_instance: u64,
    /// How often the lag is read and scaling decided; at most one change per period.
    #[arg(long, default_value = "15s", value_parser = humantime_duration)]
    period: Duration,
    /// Scale up only to the lowest count wanted over this window.
    #[arg(long, default_value = "0s", value_parser = humantime_duration)]
    scale_up_window: Duration,
    /// Scale down only to the highest count wanted over this window.
    #[arg(long, default_value = "5m", value_parser = humantime_duration)]
    scale_down_window: Duration,
    /// The largest step up per period, in percent of the count (at least one).
    #[arg(long, default_value_t = 100)]
    scale_up_percent: u32,
    /// The largest step down per period, in percent of the count (at least one).
    #[arg(long, default_value_t = 50)]
    scale_down_percent: u32,
    /// Instance names are <PREFIX>-<n> (PYTHIA_WORKER__INSTANCE).
    #[arg(long, default_value = "fleet")]
    name: String,
    /// Instance n serves metrics on 127.0.0.1:<PORT + n> (PYTHIA_METRICS__ADDRESS);
    /// default: a free port each.
    #[arg(long, value_name = "PORT")]
    metrics_base_port: Option<u16>,
    /// The first wait before restarting an instance that exited; it doubles
    /// with each exit within --restart-window (up to 30 s).
    #[arg(long, default_value = "1s", value_parser = humantime_duration)]
    restart_backoff: Duration,
    /// Restarts of one instance allowed within --restart-window; one more
    /// exit stops the fleet with an error.
    #[arg(long, default_value_t = 5)]
    max_restarts: usize,
    /// See --max-restarts.
    #[arg(long, default_value = "1m", value_parser = humantime_duration)]
    restart_window: Duration,
    /// How long a stopping instance may drain before it is killed; keep it
    /// above the worker's `worker.shutdown_timeout`.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    stop_timeout: Duration,
    /// The control socket for `fleet status` and `fleet scale`.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    control: PathBuf,
    /// The worker binary and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Runs `pythia fleet <args>`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    match args {
        Args::Run(args) => run_fleet(*args).await,
        Args::Status { control, json } => {
            let status = control::ask(&control, json!({"op": "status"})).await?;
            let mut stdout = std::io::stdout().lock();
            if json {
                use std::io::Write as _;
                writeln!(stdout, "{status}")?;
            } else {
                status::print_table(&mut stdout, &status)?;
            }
            Ok(())
        }
        Args::Scale { instances, control } => {
            let answer =
                control::ask(&control, json!({"op": "scale", "instances": instances})).await?;
            println!("instances={}", answer["target"]);
            Ok(())
        }
    }
}

async fn run_fleet(args: RunArgs) -> anyhow::Result<()> {
    let policy = match (args.min, args.max) {
        (Some(min), Some(max)) => {
            if min > max {
                bail!("--min {min} is above --max {max}; give --min <= --max");
            }
            if args.lag_per_instance == 0 {
                bail!("--lag-per-instance (--backlog-per-instance) must be 1 or more, e.g. 1000");
            }
            Some(Policy {
                min,
                max,
                per_instance: args.lag_per_instance,
                up_window: args.scale_up_window,
                down_window: args.scale_down_window,
                period: args.period,
                up_percent: args.scale_up_percent,
                down_percent: args.scale_down_percent,
            })
        }
        _ => None,
    };
    if args.period.is_zero() {
        bail!("--period must be above zero, e.g. 15s");
    }
    let instances = args.instances.or(args.min).unwrap_or(1);
    if let Some(p) = &policy
        && !(p.min..=p.max).contains(&instances)
    {
        bail!(
            "--instances {instances} is outside --min {} --max {}; start within them",
            p.min,
            p.max
        );
    }
    let (signal, env) = signal(&args, policy.is_some())?;
    let mut command = args.command.into_iter();
    let program = command
        .next()
        .context("no command after --; write `pythia fleet run -- ./my-worker`")?;
    let mut supervisor = Supervisor::new(Launch {
        program,
        args: command.collect(),
        env,
        prefix: args.name,
        metrics_base_port: args.metrics_base_port,
        backoff: args.restart_backoff,
        max_restarts: args.max_restarts,
        restart_window: args.restart_window,
        stop_timeout: args.stop_timeout,
    });
    let mut scaler = policy.map(Scaler::new);

    let (requests, mut incoming) = mpsc::channel(16);
    let _control = control::Control::bind(&args.control, requests).await?;
    supervisor.scale_to(instances)?;
    let on = match &signal {
        Some(Signal::Lag(group)) => format!("group `{}`", group.group),
        Some(Signal::Queue(queue)) => format!("queue `{}`", queue.queue),
        None => "-".to_owned(),
    };
    tracing::info!(instances, %on, control = %args.control.display(), "fleet started");

    let origin = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    let mut period = tokio::time::interval(args.period);
    period.tick().await;
    let shutdown = pythia_core::shutdown::signal();
    tokio::pin!(shutdown);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            _ = tick.tick() => {
                if let Err(crash_loop) = supervisor.poll() {
                    // Said once, last, by `main`: after the others have stopped.
                    break Err(anyhow::anyhow!(crash_loop.0));
                }
            }
            _ = period.tick(), if scaler.is_some() => {
                let (Some(scaler), Some(signal)) = (scaler.as_mut(), signal.as_ref()) else { continue };
                let addresses: Vec<String> =
                    supervisor.instances().into_iter().map(|i| i.metrics).collect();
                let seen = match signal.observe(&addresses).await {
                    Ok(seen) => Some(seen),
                    Err(error) => {
                        tracing::warn!(%error, "the backlog cannot be read: keeping the count");
                        None
                    }
                };
                let current = supervisor.count();
                let decision = scaler.decide(origin.elapsed(), current, seen);
                if decision.target != current {
                    tracing::info!("scaling {decision}");
                    if let Err(error) = supervisor.scale_to(decision.target) {
                        break Err(error);
                    }
                } else {
                    tracing::debug!("{decision}");
                }
            }
            Some(request) = incoming.recv() => {
                let answer = match request.body["op"].as_str() {
                    Some("scale") => scale(&mut supervisor, scaler.as_ref().map(Scaler::policy), &request.body),
                    Some("status") => {
                        let snapshot = supervisor.instances();
                        let on_queue = matches!(signal, Some(Signal::Queue(_)));
                        let mut fleet = signal
                            .as_ref()
                            .map_or_else(|| json!({"group": null}), Signal::describe);
                        fleet["target"] = supervisor.count().into();
                        fleet["autoscale"] = scaler.as_ref().map(|s| {
                            let p = s.policy();
                            let per = if on_queue { "backlog_per_instance" } else { "lag_per_instance" };
                            json!({"min": p.min, "max": p.max, per: p.per_instance})
                        }).into();
                        // Probing takes a second: answered off the loop.
                        let signal = signal.clone();
                        tokio::spawn(async move {
                            let reading = match signal {
                                Some(signal) => signal.read().await,
                                None => Err("no brokers or no group: give `fleet run` --brokers and --group, or --queue".to_owned()),
                            };
                            let _ = request.reply.send(status::build(&snapshot, fleet, reading).await);
                        });
                        continue;
                    }
                    _ => json!({"error": "unknown request; use `pythia fleet status` or `pythia fleet scale N`"}),
                };
                let _ = request.reply.send(answer);
            }
        }
    };
    tracing::info!("stopping every instance (SIGTERM: drain, commit, leave)");
    let failed = supervisor.shutdown().await;
    if let Some(Signal::Queue(queue)) = &signal {
        queue.close().await;
    }
    outcome?;
    if failed > 0 {
        bail!("{failed} instance(s) did not stop cleanly; their logs are above");
    }
    tracing::info!("fleet stopped");
    Ok(())
}

/// Handles `fleet scale N`.
fn scale(supervisor: &mut Supervisor, policy: Option<&Policy>, body: &Value) -> Value {
    let Some(n) = body["instances"].as_u64().map(|n| n as usize) else {
        return json!({"error": "`scale` needs a count: pythia fleet scale N"});
    };
    if let Some(p) = policy
        && !(p.min..=p.max).contains(&n)
    {
        return json!({"error": format!(
            "{n} is outside this fleet's --min {} --max {}: it scales on its backlog within them",
            p.min, p.max
        )});
    }
    let from = supervisor.count();
    tracing::info!("scaling {from} -> {n}: asked by `pythia fleet scale`");
    match supervisor.scale_to(n) {
        Ok(()) => json!({"target": n, "from": from}),
        Err(error) => json!({"error": format!("{error:#}")}),
    }
}

/// Variables for every instance.
type Env = Vec<(String, String)>;

/// How often a worker refreshes its queue gauges, unacked included.
const LAG_INTERVAL: &str = "PYTHIA_METRICS__LAG_INTERVAL";

/// What the fleet scales on — a queue's backlog with `--queue`, else the
/// group's lag — and the variables that hand the flags' queue, URL, group,
/// topics, config file and brokers to the instances. Without brokers there is
/// no lag: an error when scaling on it, else only a warning.
fn signal(args: &RunArgs, scaling: bool) -> anyhow::Result<(Option<Signal>, Env)> {
    let mut env = Vec::new();
    if let Some(file) = args.cluster.config_file() {
        env.push(("PYTHIA_CONFIG".to_owned(), file.display().to_string()));
    }
    if let Some(queue) = &args.queue {
        if args.group.is_some() || !args.topics.is_empty() {
            bail!(
                "--queue (a RabbitMQ queue's backlog) and --group/--topic (a Kafka group's lag) both given: a fleet scales on one of them; drop either"
            );
        }
        let url = rabbit::url(args.url.as_deref())?;
        env.push(("PYTHIA_RABBITMQ__QUEUE".to_owned(), queue.clone()));
        // The instances' unacked gauge is part of the backlog: refresh it
        // twice a period (their default is every 5 s), unless set already.
        if std::env::var_os(LAG_INTERVAL).is_none() {
            let interval =
                (args.period / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
            env.push((
                LAG_INTERVAL.to_owned(),
                humantime::format_duration(interval).to_string(),
            ));
        }
        if args.url.is_some() {
            env.push((rabbit::URL_VARIABLE.to_owned(), url.expose().to_owned()));
        }
        return Ok((
            Some(Signal::Queue(QueueBacklog::new(queue.clone(), url))),
            env,
        ));
    }
    if let Some(group) = &args.group {
        env.push(("PYTHIA_KAFKA__GROUP".to_owned(), group.clone()));
    }
    if !args.topics.is_empty() {
        env.push(("PYTHIA_KAFKA__TOPICS".to_owned(), args.topics.join(",")));
    }
    let kafka = match args.cluster.kafka() {
        Ok(kafka) => kafka,
        Err(error) if scaling => {
            return Err(error.context(
                "scaling (--min/--max) reads the group's lag (--group/--topic and the brokers) or, with --queue, a RabbitMQ queue's backlog; give one of them",
            ));
        }
        Err(error) => {
            tracing::warn!("no lag in `fleet status`: {error:#}");
            return Ok((None, env));
        }
    };
    if let Some(brokers) = &kafka.brokers {
        env.push(("PYTHIA_KAFKA__BROKERS".to_owned(), brokers.clone()));
    }
    let Some(group) = args.group.clone().or_else(|| kafka.group.clone()) else {
        if scaling {
            bail!(
                "scaling (--min/--max) needs a signal: --group (or kafka.group / PYTHIA_KAFKA__GROUP) and --topic for a Kafka group's lag, or --queue for a RabbitMQ queue's backlog"
            );
        }
        return Ok((None, env));
    };
    let topics = if args.topics.is_empty() {
        kafka.topics.clone()
    } else {
        args.topics.clone()
    };
    if topics.is_empty() && scaling {
        bail!(
            "scaling on lag needs the input topics: give --topic, or set kafka.topics / PYTHIA_KAFKA__TOPICS"
        );
    }
    let reader = LagReader::new(&kafka, &group, Duration::from_secs(10))
        .context("creating the lag reader's broker clients")?;
    Ok((
        Some(Signal::Lag(GroupLag {
            group,
            topics,
            reader: Arc::new(Mutex::new(reader)),
        })),
        env,
    ))
}
