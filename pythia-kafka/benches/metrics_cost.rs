//! What metrics cost: pass-through throughput (no outputs, the case where the
//! per-message cost of metrics weighs most) on the embedded broker, with
//! metrics off and on (`metrics.address` set: counters, the processing-time
//! histogram, the in-flight gauge, the lag monitor and the HTTP endpoint).
//!
//! Every run reads the same pre-loaded topic in a fresh group and is timed
//! from its first processed message to its last, so joining and leaving the
//! group are not counted. Runs alternate which side goes first. Besides
//! messages per second, each run's process CPU time per message is measured
//! over the same window: on a shared machine it varies less than wall time.
//! Both are reported as the ratio of the medians and as the median of each
//! round's own on/off ratio.
//!
//! `cargo bench -p pythia-kafka --bench metrics_cost` (`BENCH_MESSAGES`,
//! `BENCH_ROUNDS`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pythia_kafka::{
    Config, ConfigLoader, Context, EmbeddedBroker, KafkaWorker, Message, Outputs, Process,
    ProcessError, Raw, Worker,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tokio::sync::Notify;

const PARTITIONS: i32 = 8;

/// Where the process stood at one moment: wall clock and CPU time used.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: Duration,
}

impl Mark {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            cpu: process_cpu(),
        }
    }
}

/// CPU time used by the whole process (every thread), user and system.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Counts messages and marks the first and the last.
struct PassThrough {
    seen: AtomicU64,
    target: u64,
    marks: Mutex<(Option<Mark>, Option<Mark>)>,
    done: Notify,
}

impl Worker for PassThrough {
    type Codec = Raw;
}

impl Process for PassThrough {
    type Input = Bytes;
    type Output = ();

    async fn process(&self, msg: Message<Bytes>, _: &Context) -> Result<Outputs<()>, ProcessError> {
        std::hint::black_box(msg.payload());
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            self.marks.lock().unwrap().0 = Some(Mark::now());
        }
        if n == self.target {
            self.marks.lock().unwrap().1 = Some(Mark::now());
            self.done.notify_one();
        }
        Ok(Outputs::none())
    }
}

fn produce(bootstrap: &str, n: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        // lz4: the embedded broker keeps about 5 MiB per partition.
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let payload = [b'x'; 100];
    for i in 0..n {
        let mut record = BaseRecord::<(), _>::to("in")
            .payload(&payload[..])
            .partition((i % PARTITIONS as u64) as i32);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// What one run measured.
struct Measured {
    msgs_per_s: f64,
    cpu_us_per_msg: f64,
}

async fn run(bootstrap: &str, group: &str, n: u64, metrics: bool) -> Measured {
    let mut loader = ConfigLoader::new()
        .no_file()
        .env::<&str, &str>([])
        .set("kafka.brokers", bootstrap)
        .set("kafka.group", group)
        .set("kafka.topics", "in")
        .set("kafka.group_protocol", "consumer");
    if metrics {
        loader = loader.set("metrics.address", "127.0.0.1:0");
    }
    let mut config = Config::from_loader(loader).expect("config");
    // Connected by address, so set what `kafka.brokers = "embedded"` would:
    // at the default wait, a partition left out of a fetch for its full queue
    // refills late, and runs fall into a fast and a slow mode.
    let (name, value) = pythia_kafka::EMBEDDED_FETCH_WAIT;
    config.kafka.consumer.set(name, value);
    let worker = Arc::new(PassThrough {
        seen: AtomicU64::new(0),
        target: n,
        marks: Mutex::new((None, None)),
        done: Notify::new(),
    });
    let instance = KafkaWorker::builder(worker.clone())
        .config(config)
        .build()
        .expect("worker");
    let done = worker.clone();
    let summary = instance
        .run(async move {
            if done.seen.load(Ordering::Relaxed) < done.target {
                done.done.notified().await;
            }
        })
        .await
        .expect("run");
    assert!(summary.processed >= n, "{summary:?}");
    let (Some(first), Some(last)) = *worker.marks.lock().unwrap() else {
        panic!("the run did not process every message");
    };
    let span = last.at.duration_since(first.at).as_secs_f64();
    Measured {
        msgs_per_s: (n - 1) as f64 / span,
        cpu_us_per_msg: (last.cpu - first.cpu).as_secs_f64() * 1e6 / (n - 1) as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("BENCH_MESSAGES", 1_000_000);
    let rounds = env("BENCH_ROUNDS", 9) as usize;
    let broker = EmbeddedBroker::with_topics([("in", PARTITIONS)]).expect("broker");
    let bootstrap = broker.bootstrap_servers().to_owned();
    produce(&bootstrap, n);
    let mut results: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Alternate which goes first, so drift on a noisy machine hits both.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for metrics in order {
            let measured = run(&bootstrap, &format!("bench-{round}-{metrics}"), n, metrics).await;
            println!(
                "round {round} metrics={:<3} {:>9.0} msg/s {:>6.3} µs CPU/msg",
                if metrics { "on" } else { "off" },
                measured.msgs_per_s,
                measured.cpu_us_per_msg,
            );
            results[usize::from(metrics)].push(measured);
        }
    }
    let [off, on] = results.each_ref().map(|runs| {
        (
            median(runs.iter().map(|m| m.msgs_per_s).collect()),
            median(runs.iter().map(|m| m.cpu_us_per_msg).collect()),
        )
    });
    println!(
        "messages={n} rounds={rounds} medians: off {:.0} msg/s {:.3} µs CPU/msg; on {:.0} msg/s {:.3} µs CPU/msg",
        off.0, off.1, on.0, on.1
    );
    println!(
        "metrics on vs off: throughput {:+.1}%, CPU per message {:+.1}%",
        (on.0 - off.0) / off.0 * 100.0,
        (on.1 - off.1) / off.1 * 100.0
    );
    // The two runs of a round are back to back, so the machine's slower and
    // faster stretches hit both: the median of each round's own ratio is
    // steadier than the ratio of the medians.
    let [off_runs, on_runs] = &results;
    let paired = |f: fn(&Measured) -> f64| {
        let ratios = off_runs.iter().zip(on_runs).map(|(off, on)| f(on) / f(off));
        (median(ratios.collect()) - 1.0) * 100.0
    };
    println!(
        "paired by round (median of on/off): throughput {:+.1}%, CPU per message {:+.1}%",
        paired(|m| m.msgs_per_s),
        paired(|m| m.cpu_us_per_msg)
    );
}
