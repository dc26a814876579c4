//! The health of worker instances: their `/status` (identity, assigned
//! partitions, live and ready with the reasons), read over HTTP from the
//! addresses the console was given.

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
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET /status HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
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
            "/status answered {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    let mut json: serde_json::Value = serde_json::from_str(body).map_err(std::io::Error::other)?;
    json["reachable"] = true.into();
    Ok(json)
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
