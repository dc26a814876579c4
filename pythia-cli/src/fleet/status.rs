//! What `fleet status` shows: each instance's pid, uptime and restarts (from
//! the supervisor), partitions held (its `/status`), processed/s (its
//! `/metrics`, sampled twice) and lag (the group's, read from the broker, over
//! the partitions it holds) or, on a RabbitMQ queue, the deliveries it holds
//! unacknowledged (its `pythia_queue_unacked_messages`) beside the queue's
//! ready messages and consumers; as JSON or a table.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::backlog::Reading;
use super::supervise::Instance;
use crate::probe;

/// How long each instance gets to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The interval over which processed/s is measured.
const RATE_SAMPLE: Duration = Duration::from_secs(1);

/// The fleet's status as JSON. `reading` is the group's lag or the queue's
/// depth now (an error when it could not be read, then `lag_error` or
/// `depth_error` says why).
/// `fleet` has `queue` when the fleet watches a queue.
pub(crate) async fn build(
    instances: &[Instance],
    fleet: Value,
    reading: Result<Reading, String>,
) -> Value {
    let addresses: Vec<String> = instances.iter().map(|i| i.metrics.clone()).collect();
    let first = metrics(&addresses).await;
    let started = std::time::Instant::now();
    let statuses = probe::statuses(&addresses, PROBE_TIMEOUT).await;
    tokio::time::sleep(RATE_SAMPLE.saturating_sub(started.elapsed())).await;
    let second = metrics(&addresses).await;
    let seconds = started
        .elapsed()
        .as_secs_f64()
        .max(RATE_SAMPLE.as_secs_f64());
    let queue = fleet["queue"].as_str().map(str::to_owned);
    let (lags, depth) = match reading {
        Ok(Reading::Lags(lags)) => (Ok(lags), None),
        Ok(Reading::Queue(depth)) => (Ok(Vec::new()), Some(depth)),
        Err(error) => (Err(error), None),
    };

    let by_partition: HashMap<(String, i32), i64> = lags
        .as_ref()
        .map(|lags| {
            lags.iter()
                .map(|p| ((p.topic.clone(), p.partition), p.lag))
                .collect()
        })
        .unwrap_or_default();
    let mut rows = Vec::with_capacity(instances.len());
    for (i, instance) in instances.iter().enumerate() {
        let status = &statuses[i];
        let assigned: Vec<Value> = status["assigned"].as_array().cloned().unwrap_or_default();
        let lag: Option<i64> = lags.as_ref().ok().map(|_| {
            assigned
                .iter()
                .filter_map(|p| {
                    let key = (
                        p["topic"].as_str()?.to_owned(),
                        p["partition"].as_i64()? as i32,
                    );
                    by_partition.get(&key).copied()
                })
                .sum()
        });
        let rate = match (&first[i], &second[i]) {
            (Some(a), Some(b)) => {
                let done = probe::processed_in(b) - probe::processed_in(a);
                Some((done.max(0.0) / seconds * 10.0).round() / 10.0)
            }
            _ => None,
        };
        let unacked = queue
            .as_deref()
            .zip(second[i].as_deref())
            .and_then(|(queue, body)| probe::unacked_in(body, queue));
        rows.push(json!({
            "name": instance.name,
            "state": instance.state,
            "pid": instance.pid,
            "uptime_s": instance.uptime.as_secs(),
            "restarts": instance.restarts,
            "metrics_address": instance.metrics,
            "client_id": status["client_id"],
            "ready": status["ready"],
            "partitions": assigned,
            "processed_per_s": rate,
            "lag": if queue.is_some() { None } else { lag },
            "unacked": unacked,
        }));
    }
    let mut answer = fleet;
    let unacked: Option<u64> = rows
        .iter()
        .filter_map(|r| r["unacked"].as_u64())
        .reduce(|a, b| a + b);
    answer["instances"] = rows.into();
    if queue.is_some() {
        // Ready from the broker; unacked from the instances (AMQP does not tell).
        let ready = depth.map(|d| d.ready);
        answer["ready"] = ready.into();
        answer["unacked"] = unacked.into();
        answer["consumers"] = depth.map(|d| d.consumers).into();
        answer["backlog"] = ready.map(|r| u64::from(r) + unacked.unwrap_or(0)).into();
        if let Err(error) = lags {
            answer["depth_error"] = error.into();
        }
        return answer;
    }
    match lags {
        Ok(lags) => {
            answer["lag"] = lags.iter().map(|p| p.lag).sum::<i64>().into();
            answer["partitions"] = lags.len().into();
        }
        Err(error) => {
            answer["lag"] = Value::Null;
            answer["lag_error"] = error.into();
        }
    }
    answer
}

/// Each instance's `/metrics`, if it answers.
async fn metrics(addresses: &[String]) -> Vec<Option<String>> {
    let reads = addresses
        .iter()
        .map(|a| async move { probe::metrics(a, PROBE_TIMEOUT).await.ok() });
    futures::future::join_all(reads).await
}

/// Prints `status` (from [`build`]) as a table.
pub(crate) fn print_table(out: &mut impl Write, status: &Value) -> std::io::Result<()> {
    let queue = status["queue"].as_str();
    // On a queue the last column is what each instance holds unacknowledged.
    let (last, last_key) = if queue.is_some() {
        ("UNACKED", "unacked")
    } else {
        ("LAG", "lag")
    };
    writeln!(
        out,
        "{:<20} {:>8} {:<10} {:>8} {:>8} {:<24} {:>11} {:>8}",
        "INSTANCE", "PID", "STATE", "UPTIME", "RESTARTS", "PARTITIONS", "PROCESSED/S", last
    )?;
    let dash = || "-".to_owned();
    for i in status["instances"].as_array().into_iter().flatten() {
        let partitions: Vec<String> = i["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p["topic"].as_str().unwrap_or("?"), p["partition"]))
            .collect();
        writeln!(
            out,
            "{:<20} {:>8} {:<10} {:>8} {:>8} {:<24} {:>11} {:>8}",
            i["name"].as_str().unwrap_or("?"),
            i["pid"].as_u64().map_or_else(dash, |p| p.to_string()),
            i["state"].as_str().unwrap_or("?"),
            format!("{}s", i["uptime_s"]),
            i["restarts"].to_string(),
            if partitions.is_empty() {
                dash()
            } else {
                partitions.join(",")
            },
            i["processed_per_s"]
                .as_f64()
                .map_or_else(dash, |r| format!("{r:.1}")),
            i[last_key].as_i64().map_or_else(dash, |l| l.to_string()),
        )?;
    }
    let count = status["instances"].as_array().map_or(0, Vec::len);
    if let Some(queue) = queue {
        let number = |key: &str| status[key].as_u64().map_or_else(dash, |n| n.to_string());
        let ready = if status["ready"].is_null() {
            format!(
                "unknown ({})",
                status["depth_error"].as_str().unwrap_or("?")
            )
        } else {
            number("ready")
        };
        return writeln!(
            out,
            "queue {queue}: {count} instance(s), target {}, ready {ready}, unacked {}, consumers {}, backlog {}",
            status["target"],
            number("unacked"),
            number("consumers"),
            number("backlog"),
        );
    }
    let lag = status["lag"].as_i64().map_or_else(
        || format!("unknown ({})", status["lag_error"].as_str().unwrap_or("?")),
        |l| l.to_string(),
    );
    writeln!(
        out,
        "group {}: {count} instance(s), target {}, total lag {lag}",
        status["group"].as_str().unwrap_or("-"),
        status["target"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_instance_and_the_group_line() {
        let status = json!({
            "group": "billing",
            "target": 2,
            "lag": 7,
            "instances": [
                {"name": "fleet-0", "pid": 10, "state": "running", "uptime_s": 5, "restarts": 1,
                 "partitions": [{"topic": "orders", "partition": 0}, {"topic": "orders", "partition": 1}],
                 "processed_per_s": 12.5, "lag": 7},
                {"name": "fleet-1", "pid": null, "state": "restarting", "uptime_s": 0, "restarts": 2,
                 "partitions": [], "processed_per_s": null, "lag": null},
            ],
        });
        let mut out = Vec::new();
        print_table(&mut out, &status).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].contains("fleet-0") && lines[1].contains("orders/0,orders/1"));
        assert!(lines[1].contains("12.5"), "{text}");
        assert!(lines[2].contains("restarting"), "{text}");
        assert!(lines[3].contains("group billing: 2 instance(s), target 2, total lag 7"));
    }

    #[test]
    fn on_a_queue_the_table_shows_unacked_and_the_queue_line() {
        let status = json!({
            "queue": "jobs",
            "target": 2,
            "ready": 120,
            "unacked": 7,
            "consumers": 2,
            "backlog": 127,
            "instances": [
                {"name": "fleet-0", "pid": 10, "state": "running", "uptime_s": 5, "restarts": 0,
                 "partitions": [], "processed_per_s": 40.0, "lag": null, "unacked": 4},
                {"name": "fleet-1", "pid": 11, "state": "running", "uptime_s": 5, "restarts": 0,
                 "partitions": [], "processed_per_s": 38.0, "lag": null, "unacked": 3},
            ],
        });
        let mut out = Vec::new();
        print_table(&mut out, &status).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].trim_end().ends_with("UNACKED"), "{text}");
        assert!(lines[1].trim_end().ends_with(" 4"), "{text}");
        assert!(
            lines[3].contains(
                "queue jobs: 2 instance(s), target 2, ready 120, unacked 7, consumers 2, backlog 127"
            ),
            "{text}"
        );
    }
}
