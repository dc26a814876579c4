//! What the integration tests share: the server (which must answer: a test
//! fails, never skips, when it does not), uniquely named keys deleted at
//! the end, worker processes stopped at the end, and each mode's way of
//! adding inputs and reading outputs.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;

/// The server the tests use.
pub fn url() -> String {
    std::env::var("PYTHIA_TEST_REDIS_URL").unwrap_or_else(|_| pythia_redis::DEFAULT_URL.into())
}

pub use pythia_core::testing::{Taken, Workers, count_ids, ids, unique};

/// Test worker processes on the server of [`url`].
pub fn workers() -> Workers {
    Workers::new(env!("CARGO_BIN_EXE_pythia-redis-test-worker")).env("PYTHIA_REDIS__URL", url())
}

/// The two modes, as `PYTHIA_REDIS__MODE` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stream,
    List,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::List => "list",
        }
    }
}

/// A connection to the server, and the keys to delete at the end.
pub struct Redis {
    url: String,
    conn: MultiplexedConnection,
    /// Key prefixes deleted (with everything under `<prefix>*`) at the end.
    owned: Vec<String>,
}

impl Redis {
    /// Connects to the tests' server; panics with what to do when it does not answer.
    pub async fn connect() -> Self {
        Self::connect_to(&url()).await.unwrap_or_else(|e| {
            panic!(
                "Redis does not answer at {} ({e}): these tests need it; start it with \
                 `service redis-server start` (or `redis-server --daemonize yes`)",
                url()
            )
        })
    }

    /// Connects to `url`.
    pub async fn connect_to(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut this = Self {
            url: url.to_owned(),
            conn,
            owned: Vec::new(),
        };
        let pong: String = redis::cmd("PING").query_async(&mut this.conn).await?;
        assert_eq!(pong, "PONG");
        Ok(this)
    }

    /// Deletes every key starting with `prefix` at the end.
    pub fn own(&mut self, prefix: &str) {
        self.owned.push(prefix.to_owned());
    }

    pub fn conn(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }

    /// Adds each payload to `key`: `XADD key * payload p` (stream mode),
    /// `LPUSH key p` (list mode).
    pub async fn publish(
        &mut self,
        mode: Mode,
        key: &str,
        payloads: impl IntoIterator<Item = Vec<u8>>,
    ) {
        let payloads: Vec<Vec<u8>> = payloads.into_iter().collect();
        for chunk in payloads.chunks(500) {
            let mut pipe = redis::pipe();
            for payload in chunk {
                match mode {
                    Mode::Stream => pipe
                        .cmd("XADD")
                        .arg(key)
                        .arg("*")
                        .arg("payload")
                        .arg(payload)
                        .ignore(),
                    Mode::List => pipe.cmd("LPUSH").arg(key).arg(payload).ignore(),
                };
            }
            pipe.query_async::<()>(&mut self.conn)
                .await
                .expect("publish");
        }
    }

    /// Adds an entry with exactly these fields to stream `key`.
    pub async fn xadd(&mut self, key: &str, fields: &[(&str, &[u8])]) {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("*");
        for (name, value) in fields {
            cmd.arg(*name).arg(*value);
        }
        cmd.query_async::<String>(&mut self.conn)
            .await
            .expect("XADD");
    }

    /// Every entry of stream `key`, oldest first, without consuming it.
    pub async fn entries(&mut self, key: &str) -> Vec<Taken> {
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let reply: Value = redis::cmd("XRANGE")
                .arg(key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(5000)
                .query_async(&mut self.conn)
                .await
                .expect("XRANGE");
            let Value::Array(items) = reply else { break };
            if items.is_empty() {
                break;
            }
            let mut last = String::new();
            for item in items {
                let Value::Array(mut parts) = item else {
                    continue;
                };
                let fields = parts.pop();
                let id = match parts.pop() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                    _ => continue,
                };
                last = id;
                let mut taken = Taken {
                    payload: Vec::new(),
                    headers: HashMap::new(),
                };
                if let Some(Value::Array(flat)) = fields {
                    for pair in flat.chunks(2) {
                        let (Value::BulkString(n), Value::BulkString(v)) = (&pair[0], &pair[1])
                        else {
                            continue;
                        };
                        if n == b"payload" {
                            taken.payload = v.clone();
                        } else {
                            taken.headers.insert(
                                String::from_utf8_lossy(n).into_owned(),
                                String::from_utf8_lossy(v).into_owned(),
                            );
                        }
                    }
                }
                out.push(taken);
            }
            start = format!("({last}");
        }
        out
    }

    /// Every element of list `key`; an element `<payload>@<pid>` (the test
    /// worker's list output) is read as the payload with header `test.pid`.
    pub async fn elements(&mut self, key: &str) -> Vec<Taken> {
        let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn)
            .await
            .expect("LRANGE");
        items
            .into_iter()
            .rev()
            .map(|item| {
                let mut headers = HashMap::new();
                let payload = match item.iter().rposition(|b| *b == b'@') {
                    Some(at) => {
                        headers.insert(
                            "test.pid".to_owned(),
                            String::from_utf8_lossy(&item[at + 1..]).into_owned(),
                        );
                        item[..at].to_vec()
                    }
                    None => item,
                };
                Taken { payload, headers }
            })
            .collect()
    }

    /// What is in the output `key` of `mode`.
    pub async fn outputs(&mut self, mode: Mode, key: &str) -> Vec<Taken> {
        match mode {
            Mode::Stream => self.entries(key).await,
            Mode::List => self.elements(key).await,
        }
    }

    /// How many outputs `key` holds.
    pub async fn count(&mut self, mode: Mode, key: &str) -> usize {
        let cmd = match mode {
            Mode::Stream => "XLEN",
            Mode::List => "LLEN",
        };
        redis::cmd(cmd)
            .arg(key)
            .query_async::<usize>(&mut self.conn)
            .await
            .unwrap_or(0)
    }

    /// Waits until `key` holds `expected` outputs and `quiet` passed
    /// without another, or until `within`; returns them.
    pub async fn take(
        &mut self,
        mode: Mode,
        key: &str,
        expected: usize,
        quiet: Duration,
        within: Duration,
    ) -> Vec<Taken> {
        let end = Instant::now() + within;
        let mut last = (0, Instant::now());
        loop {
            let now = Instant::now();
            let count = self.count(mode, key).await;
            if count != last.0 {
                last = (count, now);
            }
            if (count >= expected && now - last.1 >= quiet) || now >= end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.outputs(mode, key).await
    }

    /// The instances registered on `input`: the group's consumers (stream
    /// mode, once each has read), the registered consumers (list mode).
    pub async fn consumers(&mut self, mode: Mode, input: &str, group: &str) -> usize {
        match mode {
            Mode::Stream => {
                let reply: redis::RedisResult<Value> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(input)
                    .arg(group)
                    .query_async(&mut self.conn)
                    .await;
                match reply {
                    Ok(Value::Array(consumers)) => consumers.len(),
                    _ => 0,
                }
            }
            Mode::List => redis::cmd("SCARD")
                .arg(format!("{input}:consumers"))
                .query_async(&mut self.conn)
                .await
                .unwrap_or(0),
        }
    }

    /// Waits until `consumers` instances are registered on `input`.
    pub async fn wait_for_consumers(
        &mut self,
        mode: Mode,
        input: &str,
        group: &str,
        consumers: usize,
        within: Duration,
    ) {
        let end = Instant::now() + within;
        loop {
            if self.consumers(mode, input, group).await >= consumers {
                return;
            }
            assert!(
                Instant::now() < end,
                "{input} did not get {consumers} consumers in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What is left of `input`: entries pending in the group (stream mode),
    /// elements in the list and all processing lists (list mode).
    pub async fn left(&mut self, mode: Mode, input: &str, group: &str) -> usize {
        match mode {
            Mode::Stream => {
                let reply: Value = redis::cmd("XPENDING")
                    .arg(input)
                    .arg(group)
                    .query_async(&mut self.conn)
                    .await
                    .expect("XPENDING");
                match reply {
                    Value::Array(parts) => match parts.first() {
                        Some(Value::Int(n)) => *n as usize,
                        _ => 0,
                    },
                    _ => 0,
                }
            }
            Mode::List => {
                let mut total: usize = redis::cmd("LLEN")
                    .arg(input)
                    .query_async(&mut self.conn)
                    .await
                    .unwrap_or(0);
                for key in self.keys(&format!("{input}:processing:*")).await {
                    total += redis::cmd("LLEN")
                        .arg(&key)
                        .query_async::<usize>(&mut self.conn)
                        .await
                        .unwrap_or(0);
                }
                total
            }
        }
    }

    async fn keys(&mut self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.conn)
            .await
            .unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let prefixes = std::mem::take(&mut self.owned);
        if prefixes.is_empty() {
            return;
        }
        let url = self.url.clone();
        // A fresh runtime on its own thread: drop can run inside the test's.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let Ok(mut redis) = Redis::connect_to(&url).await else {
                    return;
                };
                for prefix in &prefixes {
                    let keys = redis.keys(&format!("{prefix}*")).await;
                    if !keys.is_empty() {
                        let _ = redis::cmd("DEL")
                            .arg(&keys)
                            .query_async::<()>(&mut redis.conn)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// Jobs done by each worker process, by pid.
pub fn by_pid(taken: &[Taken]) -> HashMap<String, usize> {
    let mut by_pid: HashMap<String, usize> = HashMap::new();
    for t in taken {
        *by_pid.entry(t.headers["test.pid"].clone()).or_default() += 1;
    }
    by_pid
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The environment of a worker on `input` in `mode` with outputs to `output`.
pub fn worker_env(mode: Mode, input: &str, output: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PYTHIA_REDIS__MODE", mode.as_str().to_owned()),
        ("PYTHIA_REDIS__INPUT", input.to_owned()),
        ("PYTHIA_REDIS__OUTPUT", output.to_owned()),
        ("TEST_OUTPUT", "1".into()),
    ]
}
