//! `pythia depth` on Redis: a list queue's length and what its workers hold
//! in their processing lists, or a stream group's lag and pending entries,
//! read as the workers' own gauges are (see `pythia_redis::metrics`).

use anyhow::{Context as _, bail};
use redis::aio::MultiplexedConnection;

use super::Backlog;
use crate::queue_server::{glob_escape, redis_keys};

async fn connect(flag: Option<&str>) -> anyhow::Result<MultiplexedConnection> {
    let url = crate::queue_server::redis(flag)?;
    crate::queue_server::connect_redis(&url, std::time::Duration::from_secs(5)).await
}

/// Each list's length, its workers' processing lists and live heartbeats
/// (the keys `<list>:processing:<consumer>` and `<list>:heartbeat:<consumer>`).
pub(super) async fn lists(url: Option<&str>, queues: &[String]) -> anyhow::Result<Vec<Backlog>> {
    let mut redis = connect(url).await?;
    let mut backlogs = Vec::with_capacity(queues.len());
    for queue in queues {
        let waiting: u64 = redis::cmd("LLEN")
            .arg(queue)
            .query_async(&mut redis)
            .await?;
        let mut in_progress = 0;
        for list in redis_keys(&mut redis, &format!("{}:processing:*", glob_escape(queue))).await? {
            let held: u64 = redis::cmd("LLEN").arg(list).query_async(&mut redis).await?;
            in_progress += held;
        }
        let heartbeats =
            redis_keys(&mut redis, &format!("{}:heartbeat:*", glob_escape(queue))).await?;
        backlogs.push(Backlog {
            name: queue.clone(),
            waiting,
            in_progress,
            consumers: Some(heartbeats.len() as u64),
            length: None,
            redelivered: None,
            source: "LLEN of the list and of the workers' processing lists, live heartbeat keys",
        });
    }
    Ok(backlogs)
}

/// The group's lag, pending entries and consumers, and the stream's length.
pub(super) async fn stream(
    url: Option<&str>,
    stream: &str,
    group: &str,
) -> anyhow::Result<Backlog> {
    let mut redis = connect(url).await?;
    let exists: bool = redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut redis)
        .await?;
    if !exists {
        bail!("stream `{stream}` does not exist: check --stream");
    }
    let length: u64 = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut redis)
        .await?;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut redis)
        .await
        .with_context(|| format!("XINFO GROUPS {stream}"))?;
    let groups: Vec<Group> = groups.iter().filter_map(Group::parse).collect();
    let Some(found) = groups.iter().find(|g| g.name == group) else {
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        bail!(
            "stream `{stream}` has no consumer group `{group}` (it has: {}): check --group",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    Ok(Backlog {
        name: format!("{stream}/{group}"),
        // Redis leaves the lag unknown after some deletions; then every
        // entry of the stream not yet acknowledged is the bound.
        waiting: found.lag.unwrap_or(length.saturating_sub(found.pending)),
        in_progress: found.pending,
        consumers: Some(found.consumers),
        length: Some(length),
        redelivered: None,
        source: "XINFO GROUPS (lag, pending, consumers) and XLEN",
    })
}

/// One group of `XINFO GROUPS`.
#[derive(Debug, PartialEq, Eq)]
struct Group {
    name: String,
    consumers: u64,
    pending: u64,
    lag: Option<u64>,
}

impl Group {
    /// A group from its field/value reply (RESP2 array or RESP3 map).
    fn parse(value: &redis::Value) -> Option<Self> {
        let pairs: Vec<(String, &redis::Value)> = match value {
            redis::Value::Array(items) => items
                .chunks(2)
                .filter_map(|pair| Some((text(&pair[0])?, pair.get(1)?)))
                .collect(),
            redis::Value::Map(items) => items
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, v)))
                .collect(),
            _ => return None,
        };
        let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let number = |name: &str| match field(name)? {
            redis::Value::Int(n) => u64::try_from(*n).ok(),
            other => text(other)?.parse().ok(),
        };
        Some(Self {
            name: text(field("name")?)?,
            consumers: number("consumers")?,
            pending: number("pending")?,
            lag: number("lag"),
        })
    }
}

fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_group_is_read_from_its_reply_with_or_without_a_lag() {
        let reply = Value::Array(vec![
            bulk("name"),
            bulk("workers"),
            bulk("consumers"),
            Value::Int(3),
            bulk("pending"),
            Value::Int(12),
            bulk("last-delivered-id"),
            bulk("1-0"),
            bulk("lag"),
            Value::Int(40),
        ]);
        assert_eq!(
            Group::parse(&reply),
            Some(Group {
                name: "workers".into(),
                consumers: 3,
                pending: 12,
                lag: Some(40)
            })
        );
        let unknown_lag = Value::Map(vec![
            (bulk("name"), bulk("g")),
            (bulk("consumers"), Value::Int(0)),
            (bulk("pending"), Value::Int(0)),
            (bulk("lag"), Value::Nil),
        ]);
        assert_eq!(Group::parse(&unknown_lag).unwrap().lag, None);
    }
}
