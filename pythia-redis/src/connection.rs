//! Opening connections to the server.
//!
//! Each part of an instance has connections of its own: the source one for
//! its blocking reads and one for everything else (a blocking command holds
//! up whatever is queued behind it on its connection), the sink one, the
//! monitor one. All are multiplexed connections of the `redis` client, with
//! a response timeout, so that a server that stops answering counts as a
//! lost connection rather than a hang.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use crate::config::RedisUrl;
use crate::error::RedisError;

/// Connects to `url`; a command unanswered after `timeout` fails.
pub(crate) async fn connect(
    url: &RedisUrl,
    timeout: Duration,
) -> Result<MultiplexedConnection, RedisError> {
    let failed = |reason: String| RedisError::Connect {
        url: url.redacted(),
        reason,
    };
    let client = Client::open(url.expose()).map_err(|e| failed(e.to_string()))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// Sends `cmd`, named `name` in errors.
pub(crate) async fn query<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    name: &'static str,
    cmd: &redis::Cmd,
) -> Result<T, RedisError> {
    cmd.query_async(connection)
        .await
        .map_err(|e| RedisError::command(name, e))
}
