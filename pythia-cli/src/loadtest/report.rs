//! What a load test reports: per run, across a scale series, and the advice
//! the measurements support.

use std::fmt::Write as _;

use serde::Serialize;

/// One run, in the shape `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunReport {
    pub(crate) instances: usize,
    pub(crate) partitions: i32,
    pub(crate) messages: u64,
    /// Processings, duplicates included.
    pub(crate) processed: u64,
    /// Distinct messages processed.
    pub(crate) unique_processed: u64,
    pub(crate) duplicates: u64,
    pub(crate) lost: u64,
    pub(crate) errors: u64,
    /// From the first message produced to the last distinct one processed.
    pub(crate) seconds: f64,
    pub(crate) throughput_msgs_per_s: f64,
    pub(crate) latency_ms: Latency,
    pub(crate) per_instance: Vec<InstanceShare>,
    /// Not in the JSON: reported on its own.
    #[serde(skip)]
    pub(crate) join_seconds: f64,
}

/// End-to-end latency percentiles, in milliseconds from the create time.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

impl Latency {
    /// The percentiles of `latencies_us` (sorted in place), in milliseconds.
    pub(crate) fn of(latencies_us: &mut [u64]) -> Self {
        let mut ms = |q: f64| round3(quantile(latencies_us, q) as f64 / 1000.0);
        Self {
            p50: ms(0.50),
            p99: ms(0.99),
            p999: ms(0.999),
        }
    }
}

/// One instance's processings.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct InstanceShare {
    pub(crate) instance: usize,
    pub(crate) processed: u64,
}

/// A `--scale` series in the shape `--json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct ScaleReport {
    pub(crate) runs: Vec<RunReport>,
    pub(crate) efficiency: Vec<f64>,
}

/// What `--json` prints: the one run, or with `--scale` the series and its
/// efficiency.
pub(crate) fn json(
    mut reports: Vec<RunReport>,
    efficiency: Vec<f64>,
    scale: bool,
) -> serde_json::Result<String> {
    match (scale, reports.len()) {
        (false, 1) => serde_json::to_string(&reports.remove(0)),
        _ => serde_json::to_string(&ScaleReport {
            runs: reports,
            efficiency,
        }),
    }
}

/// The `q`-quantile (0..=1) of `values`, sorting them; 0 when empty.
pub(crate) fn quantile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    // Nearest rank.
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Scaling efficiency of each run against the first: E(N) = T(N)·N₀ / (N·T(N₀)).
pub(crate) fn efficiency(runs: &[RunReport]) -> Vec<f64> {
    let Some(base) = runs.first() else {
        return Vec::new();
    };
    let per_instance = base.throughput_msgs_per_s / base.instances as f64;
    runs.iter()
        .map(|r| {
            if per_instance > 0.0 {
                round3(r.throughput_msgs_per_s / (r.instances as f64 * per_instance))
            } else {
                0.0
            }
        })
        .collect()
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The human summary of one run.
pub(crate) fn human_run(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "joined      {:.2} s (all {} instances held their partitions before the load)",
        r.join_seconds, r.instances
    );
    let _ = writeln!(out, "sent        {}", r.messages);
    let _ = writeln!(
        out,
        "processed   {} (unique {}, duplicates {}, lost {}, errors {})",
        r.processed, r.unique_processed, r.duplicates, r.lost, r.errors
    );
    let _ = writeln!(out, "time        {:.2} s", r.seconds);
    let _ = writeln!(
        out,
        "throughput  {:.0} msg/s ({:.0} per instance)",
        r.throughput_msgs_per_s,
        r.throughput_msgs_per_s / r.instances as f64
    );
    let _ = writeln!(
        out,
        "latency     p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms (from the create time)",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999
    );
    let total = r.processed.max(1) as f64;
    let shares: Vec<String> = r
        .per_instance
        .iter()
        .map(|s| {
            format!(
                "#{} {} ({:.1}%)",
                s.instance,
                s.processed,
                100.0 * s.processed as f64 / total
            )
        })
        .collect();
    let _ = writeln!(out, "per instance {}", shares.join(", "));
    out
}

/// The table of a `--scale` series.
pub(crate) fn human_scale(runs: &[RunReport], efficiency: &[f64]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>9} {:>8} {:>9} {:>12} {:>8} {:>8} {:>6} {:>5} {:>10}",
        "instances", "seconds", "join s", "msg/s", "p50 ms", "p99 ms", "dups", "lost", "efficiency"
    );
    for (r, e) in runs.iter().zip(efficiency) {
        let _ = writeln!(
            out,
            "{:>9} {:>8.2} {:>9.2} {:>12.0} {:>8.1} {:>8.1} {:>6} {:>5} {:>10.2}",
            r.instances,
            r.seconds,
            r.join_seconds,
            r.throughput_msgs_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.duplicates,
            r.lost,
            e
        );
    }
    let _ = writeln!(
        out,
        "efficiency E(N) = T(N) / (N · T(1)), against the first run"
    );
    out
}

/// Replicas, partitions and a KEDA `lagThreshold` for `target` msg/s.
#[derive(Debug, PartialEq)]
pub(crate) struct Advice {
    pub(crate) replicas: u64,
    pub(crate) partitions: u64,
    pub(crate) lag_threshold: u64,
    /// The per-replica rate the advice rests on.
    pub(crate) per_replica: f64,
    pub(crate) notes: Vec<String>,
}

/// Seconds of one replica's work a KEDA `lagThreshold` stands for.
const BACKLOG_SECONDS: f64 = 10.0;

/// What the measured runs support for a target rate.
pub(crate) fn advise(runs: &[RunReport], efficiency: &[f64], target: f64) -> Option<Advice> {
    // The lowest per-instance rate seen: it already carries the scaling loss.
    let per_replica = runs
        .iter()
        .map(|r| r.throughput_msgs_per_s / r.instances as f64)
        .fold(f64::INFINITY, f64::min);
    if !(per_replica.is_finite() && per_replica > 0.0 && target > 0.0) {
        return None;
    }
    let replicas = (target / per_replica).ceil().max(1.0) as u64;
    let measured_max = runs.iter().map(|r| r.instances).max().unwrap_or(1) as u64;
    let used_partitions = runs.iter().map(|r| r.partitions).max().unwrap_or(1).max(1) as u64;
    // Room to double the replicas later: partitions cannot be taken away.
    let partitions = used_partitions.max(2 * replicas);
    let lag_threshold = (per_replica * BACKLOG_SECONDS).ceil() as u64;
    let mut notes = Vec::new();
    if replicas > measured_max {
        notes.push(format!(
            "{replicas} replicas is beyond the largest run ({measured_max}); confirm with --scale up to {replicas} before relying on it"
        ));
    }
    if let (Some(last), Some(run)) = (efficiency.last(), runs.last())
        && runs.len() > 1
        && *last < 0.8
    {
        notes.push(format!(
            "efficiency falls to {last:.2} at {} instances: something other than the instances limits throughput (the broker, the partitions, this machine's {} CPUs); more replicas will add less than the advice assumes",
            run.instances,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ));
    }
    Some(Advice {
        replicas,
        partitions,
        lag_threshold,
        per_replica,
        notes,
    })
}

/// The advice as text.
pub(crate) fn human_advice(target: f64, advice: &Advice) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "advice for {target:.0} msg/s:");
    let _ = writeln!(
        out,
        "  replicas        {} (at {:.0} msg/s each, the lowest per-instance rate measured)",
        advice.replicas, advice.per_replica
    );
    let _ = writeln!(
        out,
        "  partitions      {} (at least one per replica, room to double them later)",
        advice.partitions
    );
    let _ = writeln!(
        out,
        "  KEDA lagThreshold {} ({BACKLOG_SECONDS:.0} s of one replica's work: KEDA runs ceil(total lag / lagThreshold) replicas; keep it above the lag a --rate run at the target shows)",
        advice.lag_threshold
    );
    for note in &advice.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(instances: usize, throughput: f64) -> RunReport {
        RunReport {
            instances,
            partitions: 8,
            messages: 1000,
            processed: 1000,
            unique_processed: 1000,
            duplicates: 0,
            lost: 0,
            errors: 0,
            seconds: 1000.0 / throughput,
            throughput_msgs_per_s: throughput,
            latency_ms: Latency {
                p50: 5.0,
                p99: 20.0,
                p999: 30.0,
            },
            per_instance: Vec::new(),
            join_seconds: 0.3,
        }
    }

    #[test]
    fn json_is_the_run_alone_or_the_series_with_its_efficiency() {
        let one = json(vec![run(1, 100.0)], vec![1.0], false).unwrap();
        assert!(one.starts_with("{\"instances\":1"), "{one}");
        let series = json(vec![run(1, 100.0), run(2, 180.0)], vec![1.0, 0.9], true).unwrap();
        let value: serde_json::Value = serde_json::from_str(&series).unwrap();
        assert_eq!(value["runs"].as_array().unwrap().len(), 2);
        assert_eq!(value["efficiency"][1], 0.9);
    }

    #[test]
    fn latency_percentiles_are_in_milliseconds() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p99, l.p999), (500.0, 990.0, 999.0));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut v, 0.5), 50);
        assert_eq!(quantile(&mut v, 0.99), 99);
        assert_eq!(quantile(&mut [], 0.5), 0);
        assert_eq!(quantile(&mut [7], 0.99), 7);
    }

    #[test]
    fn efficiency_is_against_the_first_run() {
        let runs = [run(1, 200.0), run(2, 380.0), run(4, 720.0)];
        assert_eq!(efficiency(&runs), [1.0, 0.95, 0.9]);
        let runs = [run(2, 400.0), run(4, 800.0)];
        assert_eq!(efficiency(&runs), [1.0, 1.0]);
    }

    #[test]
    fn advice_rests_on_the_lowest_per_instance_rate() {
        let runs = [run(1, 200.0), run(2, 380.0), run(4, 720.0)];
        let advice = advise(&runs, &efficiency(&runs), 1000.0).unwrap();
        assert_eq!(advice.per_replica, 180.0);
        assert_eq!(advice.replicas, 6);
        assert_eq!(advice.partitions, 12);
        assert_eq!(advice.lag_threshold, 1800);
        assert!(advice.notes[0].contains("beyond the largest run"));
        let advice = advise(&runs, &efficiency(&runs), 500.0).unwrap();
        assert_eq!((advice.replicas, advice.partitions), (3, 8));
        assert!(advice.notes.is_empty());
    }
}
