//! `pythia depth` on Redis: a list queue's length and what its workers hold
//! in their processing lists, or a stream group's lag and pending entries,
//! read as the workers' own gauges are (see `pythia_redis::metrics`).

use anyhow::{Context as _, bail};
use pythia_redis::RedisUrl;
use redis::aio::MultiplexedConnection;

use super::{Backlog, scrub};

/// The variable a worker reads its server from.
const URL_VARIABLE: &str = "PYTHIA_REDIS__URL";

/// `--url`, else PYTHIA_REDIS__URL, else Redis on this machine.
fn url(flag: Option<&str>) -> anyhow::Result<RedisUrl> {
    let url = match flag {
        Some(url) => RedisUrl::new(url),
        None => match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.trim().is_empty() => RedisUrl::new(url),
            _ => RedisUrl::default(),
        },
    };
    if !url.expose().starts_with("redis://") {
        bail!("--url {url} is not a redis:// URL: write it as redis://:password@host:6379/0");
    }
    Ok(url)
}

async fn connect(flag: Option<&str>) -> anyhow::Result<MultiplexedConnection> {
    let url = url(flag)?;
    let fail = |e: redis::RedisError| {
        anyhow::anyhow!(
            "Redis does not answer at {url} ({}): start it, or point --url (or {URL_VARIABLE}) at your server, e.g. redis://:password@redis:6379/0",
            scrub(&e.to_string(), url.expose())
        )
    };
    let client = redis::Client::open(url.expose()).map_err(fail)?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(fail)
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
        for list in keys(&mut redis, &format!("{}:processing:*", glob_escape(queue))).await? {
            let held: u64 = redis::cmd("LLEN").arg(list).query_async(&mut redis).await?;
            in_progress += held;
        }
        let heartbeats = keys(&mut redis, &format!("{}:heartbeat:*", glob_escape(queue))).await?;
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

/// Every key matching `pattern`, by SCAN (never KEYS, which blocks a server).
async fn keys(redis: &mut MultiplexedConnection, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// `name` with the glob characters of SCAN's MATCH escaped.
fn glob_escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
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

    #[test]
    fn glob_characters_of_a_list_name_are_escaped() {
        assert_eq!(glob_escape("jobs"), "jobs");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn only_redis_urls_are_taken() {
        let error = url(Some("http://redis:6379")).unwrap_err().to_string();
        assert!(error.contains("redis://"), "{error}");
        assert_eq!(
            url(Some("redis://h:1/0")).unwrap().expose(),
            "redis://h:1/0"
        );
    }
}
