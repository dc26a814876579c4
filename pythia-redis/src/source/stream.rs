//! Stream mode: the commands of a consumer in a consumer group.
//!
//! - set up: `XGROUP CREATE <stream> <group> <0|$> MKSTREAM`, unless the
//!   group exists, and `XGROUP CREATECONSUMER`;
//! - take: `XREADGROUP GROUP <group> <consumer> COUNT n BLOCK ms STREAMS <stream> >`;
//! - done: `XACK`;
//! - renew: `XCLAIM <stream> <group> <consumer> 0 <ids…> JUSTID` on the
//!   entries in flight, every third of `redis.claim_idle`: it resets their
//!   idle time (without counting a delivery), so no other instance claims a
//!   job that runs long while its instance lives;
//! - recover: `XAUTOCLAIM … <claim_idle> <cursor>` takes entries idle that
//!   long (their instance died), `XPENDING` tells how often each was
//!   delivered, and those over `redis.max_deliveries` go to the dead-letter
//!   stream, added and acknowledged in one `MULTI`;
//! - give back (at a close): every entry still pending for this consumer is
//!   marked idle for `claim_idle` (`XCLAIM … IDLE`), so the others claim it
//!   at once;
//! - forget: consumers unseen for ten `claim_idle` periods that hold nothing
//!   are removed from the group (`XGROUP DELCONSUMER`, in a script that
//!   checks and removes at once), so the names of stopped instances do not
//!   pile up.

use redis::Value;
use redis::aio::MultiplexedConnection;

/// Removes from the group the consumers other than `ARGV[3]` that hold no
/// pending entry and have not been seen for `ARGV[2]` ms (stopped
/// instances). In one script, so that no entry can become pending for a
/// consumer between the check and the removal: `XGROUP DELCONSUMER` drops
/// a consumer's pending entries. A live consumer removed after a long stall
/// has nothing pending and is created again by its next read.
const FORGET: &str = r"
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name ~= ARGV[3] and pending == 0 and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return removed
";

/// How many `claim_idle` periods a consumer with nothing pending may go
/// unseen before it is removed from the group.
pub(crate) const FORGET_AFTER_CLAIM_IDLES: u64 = 10;

use super::convert::{self, Entry};
use super::deliveries;
use crate::connection::query;
use crate::error::RedisError;
use crate::fields;

/// A consumer of a stream in a group.
#[derive(Debug, Clone)]
pub(crate) struct StreamInput {
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    /// `0` or `$`, for a group created here.
    pub(crate) start: &'static str,
    pub(crate) claim_idle_ms: u64,
    pub(crate) max_deliveries: u32,
    /// The dead-letter stream; `None` with dead letters off.
    pub(crate) dead_letters: Option<String>,
    pub(crate) worker: String,
    /// Where the next `XAUTOCLAIM` scan starts.
    pub(crate) cursor: String,
}

/// What a recovery found.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// Entries to process, with their delivery counts.
    pub(crate) entries: Vec<(Entry, u64)>,
    /// Entries sent to the dead-letter stream.
    pub(crate) dead_lettered: u64,
}

impl StreamInput {
    /// Creates the group (and the stream) unless the group exists.
    pub(crate) async fn set_up(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(self.start)
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(_) => {
                tracing::info!(stream = %self.stream, group = %self.group, start = self.start, "created the consumer group");
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(RedisError::command("XGROUP CREATE", e)),
        }
        // Known to the group (and its metrics) before its first entry.
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATECONSUMER")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer);
        query::<Value>(conn, "XGROUP CREATECONSUMER", &cmd)
            .await
            .map(drop)
    }

    /// The read of up to `count` new entries, waiting up to `block_ms`.
    pub(crate) fn read(&self, count: usize, block_ms: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">");
        cmd
    }

    /// Acknowledges `ids`.
    pub(crate) async fn ack(
        &self,
        conn: &mut MultiplexedConnection,
        ids: &[String],
    ) -> Result<(), RedisError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.stream).arg(&self.group).arg(ids);
        query::<i64>(conn, "XACK", &cmd).await.map(drop)
    }

    /// `XCLAIM` of `ids` to this consumer with `idle` ms of idle time (0:
    /// renewed), without counting a delivery.
    async fn set_idle(
        &self,
        conn: &mut MultiplexedConnection,
        ids: &[String],
        idle: u64,
    ) -> Result<(), RedisError> {
        for chunk in ids.chunks(500) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(0)
                .arg(chunk)
                .arg("IDLE")
                .arg(idle)
                .arg("JUSTID");
            query::<Value>(conn, "XCLAIM", &cmd).await?;
        }
        Ok(())
    }

    /// Resets the idle time of the entries in flight.
    pub(crate) async fn renew(
        &self,
        conn: &mut MultiplexedConnection,
        ids: &[String],
    ) -> Result<(), RedisError> {
        self.set_idle(conn, ids, 0).await
    }

    /// Claims up to `count` entries idle for `claim_idle`; dead-letters
    /// those over the delivery limit.
    pub(crate) async fn recover(
        &mut self,
        conn: &mut MultiplexedConnection,
        count: usize,
    ) -> Result<Claimed, RedisError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.claim_idle_ms)
            .arg(&self.cursor)
            .arg("COUNT")
            .arg(count);
        let reply: Value = query(conn, "XAUTOCLAIM", &cmd).await?;
        let (cursor, entries, deleted) = convert::autoclaim_reply(reply)?;
        self.cursor = cursor;
        // Claimed but gone from the stream (trimmed): nothing to process.
        self.ack(conn, &deleted).await?;
        let mut claimed = Claimed::default();
        if entries.is_empty() {
            return Ok(claimed);
        }
        let mut pipe = redis::pipe();
        for entry in &entries {
            pipe.cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let counts: Vec<Value> = pipe
            .query_async(conn)
            .await
            .map_err(|e| RedisError::command("XPENDING", e))?;
        for (entry, pending) in entries.into_iter().zip(counts) {
            let deliveries = convert::pending_reply(pending)?
                .first()
                .map_or(1, |p| p.deliveries);
            match &self.dead_letters {
                Some(dlq) if deliveries::exceeded(deliveries, self.max_deliveries) => {
                    self.dead_letter(conn, dlq, entry, deliveries).await?;
                    claimed.dead_lettered += 1;
                }
                _ => claimed.entries.push((entry, deliveries)),
            }
        }
        Ok(claimed)
    }

    /// Adds `entry` to the dead-letter stream with the reason and
    /// acknowledges it, in one transaction.
    async fn dead_letter(
        &self,
        conn: &mut MultiplexedConnection,
        dlq: &str,
        entry: Entry,
        deliveries: u64,
    ) -> Result<(), RedisError> {
        let decoded = fields::from_fields(entry.fields.unwrap_or_default());
        let mut headers = decoded.headers;
        let letter = deliveries::letter_headers(
            &self.stream,
            &entry.id,
            &self.worker,
            deliveries,
            self.max_deliveries,
        );
        for header in letter.iter() {
            headers.append(
                header.name.clone(),
                header.value.clone().unwrap_or_default(),
            );
        }
        let fields =
            fields::to_fields(decoded.payload.as_deref(), decoded.key.as_deref(), &headers);
        tracing::warn!(id = %entry.id, deliveries, dlq, "entry over the delivery limit: dead-lettered");
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(dlq)
            .arg("*")
            .arg(fields)
            .ignore()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&entry.id)
            .ignore()
            .query_async::<()>(conn)
            .await
            .map_err(|e| RedisError::command("MULTI XADD XACK", e))
    }

    /// Removes the consumers of stopped instances that hold nothing (see
    /// [`FORGET`]); returns how many.
    pub(crate) async fn forget_stopped_consumers(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<u64, RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(FORGET)
            .arg(1)
            .arg(&self.stream)
            .arg(&self.group)
            .arg(self.claim_idle_ms * FORGET_AFTER_CLAIM_IDLES)
            .arg(&self.consumer);
        query(conn, "EVAL forget consumers", &cmd).await
    }

    /// Marks every entry pending for this consumer idle, for the others to
    /// claim; returns how many.
    pub(crate) async fn give_back(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<usize, RedisError> {
        let mut given = 0;
        let mut start = "-".to_owned();
        loop {
            let mut cmd = redis::cmd("XPENDING");
            cmd.arg(&self.stream)
                .arg(&self.group)
                .arg(&start)
                .arg("+")
                .arg(500)
                .arg(&self.consumer);
            let reply: Value = query(conn, "XPENDING", &cmd).await?;
            let ids: Vec<String> = convert::pending_reply(reply)?
                .into_iter()
                .map(|p| p.id)
                .collect();
            let Some(last) = ids.last() else {
                return Ok(given);
            };
            start = format!("({last}");
            self.set_idle(conn, &ids, self.claim_idle_ms).await?;
            given += ids.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    #[test]
    fn a_read_asks_for_new_entries_of_the_group_as_this_consumer() {
        let input = StreamInput {
            stream: "jobs".into(),
            group: "jobs-worker".into(),
            consumer: "pod-1".into(),
            start: "0",
            claim_idle_ms: 30_000,
            max_deliveries: 5,
            dead_letters: Some("jobs.dlq".into()),
            worker: "jobs-worker".into(),
            cursor: "0-0".into(),
        };
        assert_eq!(
            args(&input.read(7, 1000)),
            [
                "XREADGROUP",
                "GROUP",
                "jobs-worker",
                "pod-1",
                "COUNT",
                "7",
                "BLOCK",
                "1000",
                "STREAMS",
                "jobs",
                ">"
            ]
        );
    }
}
