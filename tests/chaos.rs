//! Chaos, counted from outside the workers.
//!
//! A broker in its own process reached by address (`pythia broker` or Tansu),
//! numbered messages from a plain rdkafka producer, `CHAOS_INSTANCES` test
//! worker processes (one output per input), and every 3–5 s one random
//! instance killed (SIGKILL) or stopped (SIGTERM, a rolling restart) and
//! replaced. Afterwards the group's committed offsets are compared with the
//! input's high watermarks, and the whole output topic is read back to count
//! lost and duplicated messages. One test per cell of broker × protocol × mode,
//! plus the scale-up cells; see `docs/chaos.md`.
//!
//! The cells of one test process run one at a time: they measure timings on a
//! small machine.

#[path = "chaos/broker.rs"]
mod broker;
#[path = "chaos/count.rs"]
mod count;
#[path = "chaos/report.rs"]
mod report;
#[path = "chaos/scale_up.rs"]
mod scale_up;
#[path = "chaos/schedule.rs"]
mod schedule;
#[path = "chaos/settings.rs"]
mod settings;
#[path = "chaos/workload.rs"]
mod workload;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use broker::ChaosBroker;
use report::Report;
use schedule::Fleet;
use settings::{Broker, Knobs, Mode, Protocol};

/// How long the first instance may take to get partitions on Tansu.
const LEADER_WAIT: Duration = Duration::from_secs(60);

/// Held by the running cell.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static CELL: Mutex<()> = Mutex::new(());
    CELL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a Tansu cell cannot run here, if it cannot (outside CI only).
fn skip_reason(broker: Broker) -> Option<String> {
    match broker {
        Broker::Embedded => None,
        Broker::Tansu => broker::tansu_at_hand().err(),
    }
}

/// Runs one cell `CHAOS_RUNS` times, with seeds `CHAOS_SEED`, `+1`, ...; fails
/// after the last run if any run missed a target.
fn cell(broker: Broker, protocol: Protocol, mode: Mode) {
    let _cell = one_at_a_time();
    let knobs = Knobs::from_env();
    if let Some(reason) = skip_reason(broker) {
        report::publish(&format!(
            "chaos broker={broker} protocol={protocol} mode={mode} skipped: {reason}"
        ));
        return;
    }
    let mut failures = Vec::new();
    for run in 0..knobs.runs {
        let seed = knobs.seed + run;
        let Some(report) = run_once(broker, protocol, mode, &knobs, seed) else {
            return;
        };
        report.publish();
        failures.extend(
            report
                .failures()
                .into_iter()
                .map(|f| format!("seed {seed}: {f}")),
        );
    }
    assert!(
        failures.is_empty(),
        "chaos broker={broker} protocol={protocol} mode={mode} missed its targets:\n{}",
        failures.join("\n")
    );
}

/// One run; `None` when the broker cannot run the protocol (said on stdout).
fn run_once(
    kind: Broker,
    protocol: Protocol,
    mode: Mode,
    knobs: &Knobs,
    seed: u64,
) -> Option<Report> {
    let started = Instant::now();
    let dir = pythia_tests::scratch(&format!("chaos-{kind}-{protocol}-{mode}-{seed}"));
    eprintln!("chaos: seed {seed}; logs in {}", dir.display());
    let broker = ChaosBroker::start(kind, &dir);
    let bootstrap = broker.bootstrap().to_owned();
    if protocol == Protocol::Consumer
        && kind != Broker::Embedded
        && let Err(reason) = broker.kip848()
    {
        report::publish(&format!(
            "chaos broker={kind} protocol={protocol} mode={mode} skipped: {kind} does not \
             run KIP-848 groups: {reason}"
        ));
        return None;
    }
    let group = format!("chaos-{protocol}-{mode}-{seed}");
    let length = Duration::from_secs(knobs.seconds);

    let mut fleet = Fleet::start(
        workload::workers(&bootstrap, &group, protocol),
        dir.clone(),
        1,
    );
    // Tansu 0.6.0 stops assigning partitions for good once its group's leader
    // leaves in the middle of a rebalance (see the README on Tansu). The first
    // member to join leads the group while it stays: start it alone, and
    // spare it.
    let spared = (kind == Broker::Tansu).then(|| {
        let waited = fleet.first_partition("w0", Instant::now(), LEADER_WAIT);
        assert!(
            waited.is_some(),
            "w0 got no partition from tansu within {LEADER_WAIT:?}; logs in {}",
            dir.display()
        );
        "w0"
    });
    for _ in 1..knobs.instances {
        fleet.add();
    }
    let producer = {
        let (bootstrap, n) = (bootstrap.clone(), knobs.messages);
        std::thread::spawn(move || workload::produce(&bootstrap, n, length))
    };
    let mut committed_now = || count::committed(&bootstrap, &group).unwrap_or_default();
    let chaos = schedule::run(&mut fleet, mode, seed, length, spared, &mut committed_now);
    let produced = producer
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));

    let committed_bound =
        protocol.session_timeout(kind) + Duration::from_secs(10) + report::SETTLE_SLACK;
    let (committed_after, committed_last) =
        count::until_all_committed(&bootstrap, &group, &produced.highs, committed_bound);
    let mut exits = chaos.exits;
    exits.extend(fleet.stop_all());
    let outputs = count::read_outputs(&bootstrap, knobs.messages);
    let measured_bound = match mode {
        Mode::Kill => (chaos.stops.iter())
            .zip(&chaos.committed_at_stops)
            .map(|(&at, committed)| {
                report::measured_bound(&outputs, at, committed, &produced.offsets)
            })
            .sum(),
        Mode::Term => 0,
    };
    let (duplicate_bound, stopped_partitions) = match mode {
        Mode::Kill => chaos
            .stops
            .iter()
            .map(|&at| report::duplicate_bound(&outputs, at))
            .fold((0, 0), |(b, p), (bound, stopped)| (b + bound, p + stopped)),
        Mode::Term => (0, 0),
    };
    Some(Report {
        broker: kind,
        protocol,
        mode,
        seed,
        seconds: knobs.seconds,
        messages: knobs.messages,
        instances: knobs.instances,
        spawned: fleet.spawned(),
        stops: chaos.stops.len(),
        lost: outputs.lost(),
        duplicates: outputs.duplicates(),
        duplicate_bound,
        measured_bound,
        // librdkafka's mock refuses every commit while a classic group is
        // joining (Kafka accepts those of the current generation), and under
        // this chaos its classic groups are joining most of the time.
        commits_during_rebalance: !(kind == Broker::Embedded && protocol == Protocol::Classic),
        stopped_partitions,
        foreign: outputs.foreign,
        outputs: outputs.total(),
        committed_after,
        committed_bound,
        committed_last: (committed_last, produced.highs),
        exits,
        died: chaos.died,
        spared,
        took: started.elapsed(),
    })
}

/// Runs a scale-up cell and checks its targets.
fn scale_up_cell(broker: Broker, protocol: Protocol) {
    let _cell = one_at_a_time();
    let knobs = Knobs::from_env();
    if let Some(reason) = skip_reason(broker) {
        report::publish(&format!(
            "scale_up broker={broker} protocol={protocol} skipped: {reason}"
        ));
        return;
    }
    let dir = pythia_tests::scratch(&format!("scale-up-{broker}-{protocol}"));
    eprintln!("scale_up: logs in {}", dir.display());
    let result = scale_up::run(broker, protocol, knobs.scale_messages, &dir);
    let line = result.to_string();
    report::publish(&line);
    let failures = result.failures();
    assert!(
        failures.is_empty(),
        "scale_up broker={broker} protocol={protocol} missed its targets:\n{}",
        failures.join("\n")
    );
}

#[test]
fn embedded_consumer_kill() {
    cell(Broker::Embedded, Protocol::Consumer, Mode::Kill);
}

#[test]
fn embedded_consumer_term() {
    cell(Broker::Embedded, Protocol::Consumer, Mode::Term);
}

#[test]
fn embedded_classic_kill() {
    cell(Broker::Embedded, Protocol::Classic, Mode::Kill);
}

#[test]
fn embedded_classic_term() {
    cell(Broker::Embedded, Protocol::Classic, Mode::Term);
}

#[test]
fn tansu_classic_kill() {
    cell(Broker::Tansu, Protocol::Classic, Mode::Kill);
}

#[test]
fn tansu_classic_term() {
    cell(Broker::Tansu, Protocol::Classic, Mode::Term);
}

#[test]
fn tansu_consumer_kill() {
    cell(Broker::Tansu, Protocol::Consumer, Mode::Kill);
}

#[test]
fn tansu_consumer_term() {
    cell(Broker::Tansu, Protocol::Consumer, Mode::Term);
}

#[test]
fn scale_up_embedded_consumer() {
    scale_up_cell(Broker::Embedded, Protocol::Consumer);
}

#[test]
fn scale_up_embedded_classic() {
    scale_up_cell(Broker::Embedded, Protocol::Classic);
}

#[test]
fn scale_up_tansu_classic() {
    scale_up_cell(Broker::Tansu, Protocol::Classic);
}
