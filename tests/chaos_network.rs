//! Network faults between worker processes and their broker, on a real network:
//! the broker in one network namespace, three workers in another, the wire
//! between them degraded (latency, jitter, loss) and then cut, while messages
//! keep flowing in.
//!
//! One run: a backlog and a steady feed into `in`; three test workers copy each
//! message to `out`. Then 20 s of 50 ms ± 20 ms each way with 5 % loss (work
//! must go on), a 10 s partition (every worker must report not ready), the heal
//! (work must resume within the session timeout + 10 s, 20 s more on Tansu: see
//! `TANSU_ABANDONED_MEMBER_DELAY`), the feed stops, the group must commit
//! everything, the workers get SIGTERM, and a fresh consumer reads `in` and
//! `out` back: nothing lost; duplicates are counted. See docs/network-faults.md.
//!
//! Each run prints one `chaos_network …` report line. Needs root, iproute2 and
//! `/dev/net/tun`; skips saying why without them, fails on CI (`CI=true`).
//! The Tansu binary comes from `TEST_TANSU_BIN` or `.ci/install-tansu`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pythia_tests::netns::{self, BROKER_ADDRESS, EmbeddedInNetns, FaultNet, Faults, Netns};
use pythia_tests::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: i32 = 6;
const WORKERS: usize = 3;
/// Messages in `in` before the workers start.
const BACKLOG: u64 = 2000;
/// Messages per second the feed adds while the faults come and go.
const RATE: u64 = 300;
const DEGRADED_FOR: Duration = Duration::from_secs(20);
const PARTITION_FOR: Duration = Duration::from_secs(10);
/// The classic protocol's session timeout on Tansu.
const CLASSIC_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Back to processing within the session timeout plus this, after the heal.
const RECOVERY_SLACK: Duration = Duration::from_secs(10);
/// What Tansu adds to a classic group's recovery. A worker whose session times
/// out locally during the partition rejoins under a new member id; Tansu keeps
/// the abandoned id in the group, the leader assigns partitions to it, and they
/// stay idle until Tansu drops it, 17 to 37 s after its last heartbeat here (a
/// Kafka broker drops it one session timeout after its last heartbeat, during
/// the partition). Static membership, which would reuse the ids, stalls Tansu
/// worse. See docs/network-faults.md.
const TANSU_ABANDONED_MEMBER_DELAY: Duration = Duration::from_secs(20);

/// The runs measure time-bound behaviour on a small machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn tansu_classic_group_rides_out_latency_loss_and_a_partition() {
    if !netns::available("chaos_network (tansu)") {
        return;
    }
    if !Tansu::available() {
        let reason = "no Tansu binary: TEST_TANSU_BIN is unset and `.ci/install-tansu` \
                      has not installed one";
        assert!(
            !netns::on_ci(),
            "chaos_network (tansu) cannot run on CI: {reason}"
        );
        eprintln!("SKIPPED chaos_network (tansu): {reason}");
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let net = FaultNet::new();
    let tansu = Tansu::start_in(&net.broker, BROKER_ADDRESS, &net.workers);
    net.workers.enter(|| {
        tansu.create_topic("in", PARTITIONS);
        tansu.create_topic("out", PARTITIONS);
    });
    let run = Run {
        net: &net,
        bootstrap: tansu.bootstrap_servers(),
        broker: "tansu",
        protocol: "classic",
        bound: CLASSIC_SESSION_TIMEOUT + RECOVERY_SLACK + TANSU_ABANDONED_MEMBER_DELAY,
    };
    // Tansu has no KIP-848 groups: the classic protocol, cooperative-sticky.
    run.ride_out(|spec| {
        spec.env("PYTHIA_KAFKA__GROUP_PROTOCOL", "classic")
            .env("PYTHIA_KAFKA__ASSIGNMENT_STRATEGY", "cooperative-sticky")
            .env(
                "PYTHIA_KAFKA__SESSION_TIMEOUT",
                format!("{}s", CLASSIC_SESSION_TIMEOUT.as_secs()),
            )
    });
}

#[test]
fn embedded_kip848_group_rides_out_latency_loss_and_a_partition() {
    if !netns::available("chaos_network (embedded)") {
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let net = FaultNet::new();
    let broker = EmbeddedInNetns::start(
        &net.broker,
        BROKER_ADDRESS,
        &[("in", PARTITIONS), ("out", PARTITIONS)],
    );
    let run = Run {
        net: &net,
        bootstrap: broker.bootstrap_servers(),
        broker: "embedded",
        protocol: "consumer",
        bound: pythia_kafka::EMBEDDED_SESSION_TIMEOUT + RECOVERY_SLACK,
    };
    // WorkerSpec's defaults: KIP-848, dynamic membership.
    run.ride_out(|spec| spec);
}

/// One broker, one group protocol.
struct Run<'a> {
    net: &'a FaultNet,
    bootstrap: &'a str,
    broker: &'static str,
    protocol: &'static str,
    /// Every partition back to processing within this after the heal.
    bound: Duration,
}

/// Readiness seen by the checks of one phase, per worker.
#[derive(Debug, Default, Clone)]
struct Readiness {
    checks: usize,
    not_ready: usize,
    /// Since the phase began, when it first said not ready.
    first_not_ready: Option<Duration>,
}

impl Run<'_> {
    /// Runs the phases with workers `w0`, `w1`, ... set up by `configure`.
    fn ride_out(&self, configure: impl for<'s> Fn(WorkerSpec<'s>) -> WorkerSpec<'s>) {
        let net = self.net;
        let ns = &net.workers;
        let dir = scratch("chaos-network");
        let group = "netfault";
        ns.enter(|| produce(self.bootstrap, "in", PARTITIONS, 0..BACKLOG));
        let spec = || {
            let spec = configure(
                WorkerSpec::new(self.bootstrap, group, "in")
                    .env("PYTHIA_KAFKA__OUTPUT_TOPIC", "out")
                    .env("PYTHIA_METRICS__ADDRESS", "127.0.0.1:0")
                    .env("TEST_OUTPUT", 1)
                    .env("TEST_DELAY_MS", 1),
            );
            // More detail in the workers' logs, librdkafka's group events
            // included: `CHAOS_NETWORK_WORKER_LOG=info,librdkafka=debug`, say.
            match std::env::var("CHAOS_NETWORK_WORKER_LOG") {
                Ok(filter) => spec
                    .env("RUST_LOG", filter)
                    .env("PYTHIA_KAFKA__CONSUMER__DEBUG", "cgrp"),
                Err(_) => spec,
            }
        };
        let mut workers: Vec<Worker> = (0..WORKERS)
            .map(|i| spec().spawn_in(ns, &dir, &format!("w{i}")))
            .collect();
        let feed = Feed::start(ns, self.bootstrap, BACKLOG, RATE);
        let mut endpoints = Endpoints {
            ns,
            addresses: workers
                .iter()
                .map(|w| w.metrics_address(Duration::from_secs(60)))
                .collect(),
            dir: &dir,
            snapshot_at: Instant::now(),
        };
        let unique = |workers: &[Worker]| Records::read(workers.iter().map(|w| &w.record)).unique();
        wait_until(
            Duration::from_secs(90),
            "every worker ready (assigned, broker answering)",
            || endpoints.readiness("start").iter().all(|&code| code == 200),
        );

        // Phase 1: a slow, lossy network. Work goes on.
        let before = unique(&workers);
        net.wire.set(Faults::degraded(
            Duration::from_millis(50),
            Duration::from_millis(20),
            0.05,
        ));
        let degraded = endpoints.watch("degraded", DEGRADED_FOR);
        let during_degraded = unique(&workers) - before;

        // Phase 2: a partition. Every worker must say it is not ready.
        net.wire.set(Faults::partition());
        let partition = endpoints.watch("partition", PARTITION_FOR);
        let processed_at_heal = last_processed(&workers);
        net.wire.set(Faults::none());
        let healed = Instant::now();

        // Back to processing, per partition: its committed offset passes the
        // last offset processed before the heal, so a message processed after
        // the heal is committed. Readiness is watched meanwhile.
        let bound = self.bound;
        let mut back = [None; PARTITIONS as usize];
        let mut ready_again = [None; WORKERS];
        while healed.elapsed() < bound + Duration::from_secs(30)
            && (back.iter().any(Option::is_none) || ready_again.iter().any(Option::is_none))
        {
            let committed = ns.enter(|| committed(self.bootstrap, group, "in", PARTITIONS));
            for (p, at) in back.iter_mut().enumerate() {
                let before = processed_at_heal.get(&(p as i32)).copied().unwrap_or(-1);
                if at.is_none() && committed[p].is_some_and(|c| c > before + 1) {
                    *at = Some(healed.elapsed());
                }
            }
            for (at, code) in ready_again.iter_mut().zip(endpoints.readiness("healed")) {
                if code == 200 && at.is_none() {
                    *at = Some(healed.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let first_back = back.iter().flatten().min().copied();
        let all_back = if back.iter().all(Option::is_some) {
            back.iter().flatten().max().copied()
        } else {
            None
        };

        let produced = feed.stop();
        let highs = ns.enter(|| high_watermarks(self.bootstrap, "in", PARTITIONS));
        let mut all_committed_after = None;
        let drained = Instant::now();
        while drained.elapsed() < Duration::from_secs(120) {
            let committed = ns.enter(|| committed(self.bootstrap, group, "in", PARTITIONS));
            if committed.iter().zip(&highs).all(|(c, h)| *c == Some(*h)) {
                all_committed_after = Some(healed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }

        for worker in &workers {
            worker.terminate();
        }
        let exits: Vec<Option<i32>> = workers
            .iter_mut()
            .map(|w| w.wait(Duration::from_secs(60)).code())
            .collect();

        // Both topics read to their high watermarks by a fresh consumer.
        let read = |topic: &str| {
            ns.enter(|| {
                let total: i64 = high_watermarks(self.bootstrap, topic, PARTITIONS)
                    .iter()
                    .sum();
                let messages = consume_all(
                    self.bootstrap,
                    topic,
                    PARTITIONS,
                    total as usize,
                    Duration::from_secs(60),
                );
                assert_eq!(
                    messages.len() as i64,
                    total,
                    "{topic} not read to its high watermarks"
                );
                messages
            })
        };
        let in_ids = ids(&read("in"));
        let expected = in_ids.len();
        let output = read("out");
        let out_ids = ids(&output);
        let lost = in_ids.keys().filter(|id| !out_ids.contains_key(id)).count();
        let duplicates = output.len() - out_ids.len();
        let feed_missing = (0..produced).filter(|id| !in_ids.contains_key(id)).count();
        let wire = net.wire.stats();

        let ready_false = partition.iter().all(|r| r.not_ready > 0);
        let secs = |d: Option<Duration>| {
            d.map_or("never".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))
        };
        // Before everything is committed, inputs missing from `out` may be
        // unprocessed rather than lost.
        let lost_text = if all_committed_after.is_some() {
            lost.to_string()
        } else {
            format!("n/a (unprocessed={lost})")
        };
        let line = format!(
            "chaos_network broker={} protocol={} messages={expected} lost={lost_text} duplicates={duplicates} \
             ready_false_during_partition={} (not-ready/checks per worker: {}; first not ready after: {}) \
             back_to_processing_after={} (bound {}s; first partition back after {}) all_committed_after={} exits={exits:?} \
             processed_while_degraded={during_degraded} not_ready_checks_while_degraded={} \
             ready_again_after={} feed_produced={produced} feed_missing_in_input={feed_missing} \
             wire_packets_passed={} wire_packets_dropped={}",
            self.broker,
            self.protocol,
            if ready_false { "yes" } else { "no" },
            partition
                .iter()
                .map(|r| format!("{}/{}", r.not_ready, r.checks))
                .collect::<Vec<_>>()
                .join(","),
            partition
                .iter()
                .map(|r| secs(r.first_not_ready))
                .collect::<Vec<_>>()
                .join(","),
            secs(all_back),
            bound.as_secs(),
            secs(first_back),
            secs(all_committed_after),
            degraded.iter().map(|r| r.not_ready).sum::<usize>(),
            ready_again
                .iter()
                .map(|d| secs(*d))
                .collect::<Vec<_>>()
                .join(","),
            wire.passed,
            wire.dropped,
        );
        publish_report(&line);

        assert_eq!(
            feed_missing, 0,
            "the feed's messages did not all reach `in`"
        );
        assert!(
            all_committed_after.is_some(),
            "the group's commits never reached the high watermarks {highs:?}: \
             {lost} messages never processed"
        );
        assert_eq!(lost, 0, "messages of `in` missing from `out`");
        assert!(
            during_degraded > 0,
            "nothing was processed during 20 s of latency and loss"
        );
        assert!(
            ready_false,
            "a worker reported ready through the whole partition: {partition:?}"
        );
        let back = all_back.unwrap_or_else(|| {
            panic!("partitions with no new work committed after the heal: {back:?}")
        });
        assert!(
            back <= bound,
            "every partition back to processing {back:?} after the heal, over the bound {bound:?}"
        );
        assert!(
            exits.iter().all(|code| *code == Some(0)),
            "workers exited {exits:?} on SIGTERM"
        );
    }
}

/// The workers' endpoints, asked from inside their namespace.
struct Endpoints<'a> {
    ns: &'a Netns,
    addresses: Vec<String>,
    /// Where each worker's metrics are appended, once a second, for a
    /// post-mortem: `w<i>.metrics`.
    dir: &'a Path,
    snapshot_at: Instant,
}

/// The samples worth keeping from `/metrics`.
const KEPT_METRICS: &[&str] = &[
    "pythia_committed_offset",
    "pythia_in_flight_messages",
    "pythia_commit_failures_total",
    "pythia_rebalances_total",
    "pythia_assigned_partitions",
    "pythia_messages_total",
];

impl Endpoints<'_> {
    /// `/health/ready` of each worker (0: no answer); `phase` labels the
    /// metrics snapshot taken alongside, at most once a second.
    fn readiness(&mut self, phase: &str) -> Vec<u16> {
        let snapshot = self.snapshot_at.elapsed() >= Duration::from_secs(1);
        if snapshot {
            self.snapshot_at = Instant::now();
        }
        let answers: Vec<(u16, Option<String>)> = self.ns.enter(|| {
            self.addresses
                .iter()
                .map(|a| {
                    let code = http_get(a, "/health/ready").map_or(0, |(code, _)| code);
                    let metrics = snapshot
                        .then(|| http_get(a, "/metrics").ok().map(|(_, body)| body))
                        .flatten();
                    (code, metrics)
                })
                .collect()
        });
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for (i, (code, metrics)) in answers.iter().enumerate() {
            let Some(metrics) = metrics else { continue };
            let mut text = format!("# at {stamp:.3} phase {phase} ready {code}\n");
            for line in metrics.lines() {
                if KEPT_METRICS.iter().any(|m| line.starts_with(m)) {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            let path = self.dir.join(format!("w{i}.metrics"));
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("metrics file");
            std::io::Write::write_all(&mut file, text.as_bytes()).expect("write metrics");
        }
        answers.into_iter().map(|(code, _)| code).collect()
    }

    /// Checks readiness every 250 ms for `length`.
    fn watch(&mut self, phase: &str, length: Duration) -> Vec<Readiness> {
        let mut seen = vec![Readiness::default(); self.addresses.len()];
        let start = Instant::now();
        while start.elapsed() < length {
            for (r, code) in seen.iter_mut().zip(self.readiness(phase)) {
                r.checks += 1;
                if code != 200 {
                    r.not_ready += 1;
                    r.first_not_ready.get_or_insert(start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        seen
    }
}

/// The last offset processed so far in each partition, by any worker.
fn last_processed(workers: &[Worker]) -> BTreeMap<i32, i64> {
    let mut last = BTreeMap::new();
    for p in Records::read(workers.iter().map(|w| &w.record)).processed {
        let offset = last.entry(p.partition).or_insert(p.offset);
        *offset = (*offset).max(p.offset);
    }
    last
}

/// How many times each `{"id": n}` payload occurs.
fn ids(messages: &[Consumed]) -> BTreeMap<u64, usize> {
    #[derive(serde::Deserialize)]
    struct Task {
        id: u64,
    }
    let mut ids = BTreeMap::new();
    for m in messages {
        let task: Task = serde_json::from_slice(m.payload.as_deref().unwrap_or_default())
            .expect("a {\"id\": n} payload");
        *ids.entry(task.id).or_insert(0) += 1;
    }
    ids
}

/// A steady producer of `{"id": n}` messages into `in` (message `n` to
/// partition `n % PARTITIONS`), running inside a namespace until stopped.
struct Feed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Feed {
    /// Produces ids from `first` on at `rate` per second.
    fn start(ns: &Netns, bootstrap: &str, first: u64, rate: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let bootstrap = bootstrap.to_owned();
        let thread = ns.spawn(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                // Outlives the partition: nothing is given up.
                .set("message.timeout.ms", "300000")
                .set("log_level", "3")
                .create()
                .expect("feed producer");
            let started = Instant::now();
            let mut next = first;
            while !stopped.load(Ordering::Relaxed) {
                let due = first + (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while next < due {
                    let payload = format!("{{\"id\":{next}}}");
                    let key = format!("key-{next}");
                    let mut record = BaseRecord::to("in")
                        .payload(&payload)
                        .key(&key)
                        .partition((next % PARTITIONS as u64) as i32);
                    while let Err((_, back)) = producer.send(record) {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    next += 1;
                }
                producer.poll(Duration::from_millis(20));
            }
            producer
                .flush(Duration::from_secs(120))
                .expect("the feed's messages delivered");
            next
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops, waits until everything is delivered; returns the next id (every
    /// id below it was produced).
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("running");
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // On a failed test: stop producing; the flush may wait, don't join.
        self.stop.store(true, Ordering::Relaxed);
    }
}
