//! The Redis and NATS servers of the commands (`depth`, `bench`): `--url`,
//! else the variable a worker reads, else the server on this machine;
//! connecting with errors that never show the password.

use anyhow::bail;
use pythia_nats::NatsUrl;
use pythia_redis::RedisUrl;
use redis::aio::MultiplexedConnection;

/// The variable a Redis worker reads its server from.
pub(crate) const REDIS_VARIABLE: &str = "PYTHIA_REDIS__URL";

/// The variable a NATS worker reads its server from.
pub(crate) const NATS_VARIABLE: &str = "PYTHIA_NATS__URL";

/// `--url`, else `variable` when set and not blank.
fn given(flag: Option<&str>, variable: &str) -> Option<String> {
    flag.map(str::to_owned).or_else(|| {
        std::env::var(variable)
            .ok()
            .filter(|url| !url.trim().is_empty())
    })
}

/// `--url`, else PYTHIA_REDIS__URL, else Redis on this machine.
pub(crate) fn redis(flag: Option<&str>) -> anyhow::Result<RedisUrl> {
    let url = given(flag, REDIS_VARIABLE).map_or_else(RedisUrl::default, RedisUrl::new);
    if !url.expose().starts_with("redis://") {
        bail!("--url {url} is not a redis:// URL: write it as redis://:password@host:6379/0");
    }
    Ok(url)
}

/// `--url`, else PYTHIA_NATS__URL, else NATS on this machine.
pub(crate) fn nats(flag: Option<&str>) -> anyhow::Result<NatsUrl> {
    let url = given(flag, NATS_VARIABLE).map_or_else(NatsUrl::default, NatsUrl::new);
    if !url.expose().starts_with("nats://") {
        bail!("--url {url} is not a nats:// URL: write it as nats://user:password@host:4222");
    }
    Ok(url)
}

/// Connects to Redis at `url`, waiting up to `timeout` for each reply; the
/// error says how to reach a server, without the password.
pub(crate) async fn connect_redis(
    url: &RedisUrl,
    timeout: std::time::Duration,
) -> anyhow::Result<MultiplexedConnection> {
    let fail = |e: redis::RedisError| {
        anyhow::anyhow!(
            "Redis does not answer at {url} ({}): start it, or point --url (or {REDIS_VARIABLE}) at your server, e.g. redis://:password@redis:6379/0",
            scrub(&e.to_string(), url.expose())
        )
    };
    let client = redis::Client::open(url.expose()).map_err(fail)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(fail)
}

/// Connects to NATS at `url` as `name`; the error says how to reach a
/// server, without the password.
pub(crate) async fn connect_nats(url: &NatsUrl, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connect(url.expose())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "NATS does not answer at {url} ({}): start it (`nats-server -js`), or point --url (or {NATS_VARIABLE}) at your server",
                scrub(&e.to_string(), url.expose())
            )
        })
}

/// Every key matching `pattern`, by SCAN (never KEYS, which blocks a server).
pub(crate) async fn redis_keys(
    redis: &mut MultiplexedConnection,
    pattern: &str,
) -> anyhow::Result<Vec<String>> {
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

/// A pipeline adding messages `range` to the list (`LPUSH`, one command)
/// or, with `stream`, the stream (`XADD`, the payload in the field the
/// connector reads) `key`; `fill(n, buffer)` writes message `n` into an
/// empty buffer.
pub(crate) fn redis_adds(
    stream: bool,
    key: &str,
    range: std::ops::Range<u64>,
    mut fill: impl FnMut(u64, &mut Vec<u8>),
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    if !stream {
        pipe.cmd("LPUSH").arg(key);
    }
    let mut buffer = Vec::new();
    for n in range {
        buffer.clear();
        fill(n, &mut buffer);
        if stream {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg(pythia_redis::fields::PAYLOAD)
                .arg(&buffer[..])
                .ignore();
        } else {
            pipe.arg(&buffer[..]);
        }
    }
    pipe
}

/// Deletes `key` and every key whose name starts with it.
pub(crate) async fn redis_delete_under(
    redis: &mut MultiplexedConnection,
    key: &str,
) -> anyhow::Result<()> {
    let pattern = format!("{}*", glob_escape(key));
    let keys = redis_keys(redis, &pattern).await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(redis)
            .await?;
    }
    Ok(())
}

/// The dead-letter stream a NATS worker makes for its stream `name` (the
/// connector's default: the stream's name with `_DLQ`).
pub(crate) fn nats_dead_letter_stream(name: &str) -> String {
    format!("{name}_DLQ")
}

/// `name` with the glob characters of SCAN's MATCH escaped.
pub(crate) fn glob_escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `text` with every occurrence of `secret`'s password replaced by `***`:
/// an error of a client library that might quote the URL it was given.
pub(crate) fn scrub(text: &str, secret: &str) -> String {
    let password = secret
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => text.replace(password, "***"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_urls_are_taken() {
        let error = redis(Some("http://redis:6379")).unwrap_err().to_string();
        assert!(error.contains("redis://"), "{error}");
        assert_eq!(
            redis(Some("redis://h:1/0")).unwrap().expose(),
            "redis://h:1/0"
        );
    }

    #[test]
    fn the_dead_letter_stream_is_the_nats_connector_s_default() {
        let config = pythia_nats::Config::from_loader(
            pythia_kafka::ConfigLoader::new()
                .no_file()
                .set("nats.subject", "pythia-bench-1-1-pythia")
                .set("nats.stream", "pythia-bench-1-1-pythia"),
        )
        .unwrap();
        assert_eq!(
            config.nats.dead_letter_stream_name(),
            nats_dead_letter_stream("pythia-bench-1-1-pythia")
        );
    }

    #[test]
    fn only_nats_urls_are_taken() {
        let error = nats(Some("tls://nats:4222")).unwrap_err().to_string();
        assert!(error.contains("nats://"), "{error}");
        assert_eq!(
            nats(Some("nats://h:4222")).unwrap().expose(),
            "nats://h:4222"
        );
    }

    #[test]
    fn a_refused_url_does_not_show_its_password() {
        let error = redis(Some("http://:s3cret@redis:6379"))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn a_password_in_an_error_is_scrubbed() {
        let url = "redis://jobs:s3cret@redis:6379/0";
        assert_eq!(
            scrub("cannot connect to redis://jobs:s3cret@redis:6379/0", url),
            "cannot connect to redis://jobs:***@redis:6379/0"
        );
        assert_eq!(
            scrub("no password here", "redis://redis:6379"),
            "no password here"
        );
    }

    #[test]
    fn glob_characters_of_a_key_are_escaped() {
        assert_eq!(glob_escape("jobs"), "jobs");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
