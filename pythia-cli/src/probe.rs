//! Reading running worker instances over HTTP: their `/status` (identity,
//! assigned partitions, live and ready with the reasons) and `/metrics`, for
//! `pythia console` and `pythia fleet status`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of an instance, from `host:port` or `http://host:port[/]`.
pub(crate) fn address(spec: &str) -> Result<String, String> {
    let bare = spec
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    if bare.is_empty() || bare.contains('/') || !bare.contains(':') {
        return Err(format!(
            "`{spec}` is not an instance address; write HOST:PORT of its metrics.address, e.g. 10.0.0.7:9100"
        ));
    }
    Ok(bare.to_owned())
}

/// The `/status` of each instance, or why it could not be read.
pub(crate) async fn statuses(addresses: &[String], timeout: Duration) -> Vec<serde_json::Value> {
    let reads = addresses.iter().map(|address| async move {
        match tokio::time::timeout(timeout, status(address)).await {
            Ok(Ok(mut json)) => {
                json["address"] = address.as_str().into();
                json
            }
            Ok(Err(error)) => unreachable_instance(address, &error.to_string()),
            Err(_) => unreachable_instance(address, "no answer in time"),
        }
    });
    futures::future::join_all(reads).await
}

fn unreachable_instance(address: &str, error: &str) -> serde_json::Value {
    serde_json::json!({
        "address": address,
        "reachable": false,
        "live": false,
        "ready": false,
        "live_reason": format!("cannot read its status: {error}"),
        "assigned": [],
    })
}

async fn status(address: &str) -> std::io::Result<serde_json::Value> {
    let body = get(address, "/status").await?;
    let mut json: serde_json::Value = serde_json::from_str(&body).map_err(std::io::Error::other)?;
    json["reachable"] = true.into();
    Ok(json)
}

/// The instance's `/metrics` (Prometheus text).
pub(crate) async fn metrics(address: &str, timeout: Duration) -> std::io::Result<String> {
    tokio::time::timeout(timeout, get(address, "/metrics"))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))?
}

/// Deliveries of `queue` an instance holds unacknowledged: its
/// `pythia_queue_unacked_messages{queue="<queue>"}` series on `/metrics`
/// (`None` when it exports none, e.g. not a RabbitMQ worker).
pub(crate) fn unacked_in(metrics: &str, queue: &str) -> Option<u64> {
    let label = format!("queue=\"{queue}\"");
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("pythia_queue_unacked_messages{") && line.contains(label.as_str())
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|n| n.max(0.0) as u64)
        .reduce(|a, b| a + b)
}

/// Messages an instance has processed so far: the sum of its
/// `pythia_messages_total{outcome="ok"}` series in `metrics`.
pub(crate) fn processed_in(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("pythia_messages_total{") && line.contains("outcome=\"ok\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The body of `GET path` from `address`, when it answers 200.
async fn get(address: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "{path} answered {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_addresses_are_host_and_port() {
        assert_eq!(address("http://10.0.0.7:9100/").unwrap(), "10.0.0.7:9100");
        assert_eq!(address("127.0.0.1:9100").unwrap(), "127.0.0.1:9100");
        assert!(
            address("http://x:1/status")
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(address("worker").is_err());
    }

    #[test]
    fn processed_sums_the_ok_series_only() {
        let metrics = "# TYPE pythia_messages_total counter\n\
            pythia_messages_total{outcome=\"ok\",topic=\"a\",worker=\"w\"} 40\n\
            pythia_messages_total{outcome=\"ok\",topic=\"b\",worker=\"w\"} 2\n\
            pythia_messages_total{outcome=\"retried\",topic=\"a\",worker=\"w\"} 7\n\
            pythia_in_flight_messages{worker=\"w\"} 3\n";
        assert_eq!(processed_in(metrics), 42.0);
    }

    #[test]
    fn unacked_reads_the_queue_series_of_that_queue_only() {
        let metrics = "pythia_queue_unacked_messages{group=\"w\",queue=\"jobs\"} 7\n\
            pythia_queue_unacked_messages{group=\"w\",queue=\"jobs.other\"} 5\n\
            pythia_queue_messages_ready{group=\"w\",queue=\"jobs\"} 120\n";
        assert_eq!(unacked_in(metrics, "jobs"), Some(7));
        assert_eq!(unacked_in(metrics, "none"), None);
    }

    #[tokio::test]
    async fn an_instance_that_does_not_answer_is_reported_not_live() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = free.local_addr().unwrap().to_string();
        drop(free);
        let all = statuses(std::slice::from_ref(&address), Duration::from_secs(2)).await;
        assert_eq!(all[0]["address"], address.as_str());
        assert_eq!(all[0]["reachable"], false);
        assert_eq!(all[0]["live"], false);
    }
}
