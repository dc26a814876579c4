//! List mode: the reliable-queue pattern on a list.
//!
//! Producers `LPUSH` onto the queue; an instance takes with
//! `BLMOVE <queue> <queue>:processing:<consumer> RIGHT LEFT <timeout>` (then
//! up to the prefetch more with `LMOVE` in one round trip), so a taken
//! element is always in one list or the other; it `LREM`s the element from
//! its processing list when done. Every third of `redis.claim_idle` it
//! renews its heartbeat, the key `<queue>:heartbeat:<consumer>` that
//! expires after `claim_idle`, and runs the reaper: a Lua script that, for
//! each consumer registered in `<queue>:consumers` whose heartbeat expired,
//! moves its processing list back onto the queue, atomically. The reaper
//! counts each element it moves back in the hash `<queue>:deliveries`; an
//! element moved back `redis.max_deliveries` times goes to the dead-letter
//! stream instead, with the reason in its fields.
//!
//! At a close, what is left in the processing list goes back onto the queue.
//! Elements are compared by value: two equal elements in one processing
//! list are interchangeable.

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::deliveries;
use crate::connection::query;
use crate::error::RedisError;

/// The reaper: moves the processing lists of consumers whose heartbeat
/// expired back onto the queue, or to the dead-letter stream past the
/// delivery limit. Keys: queue, consumers, deliveries, dead-letter stream
/// (`""`: none). Arguments: the processing and heartbeat prefixes, the
/// limit, this consumer, then the dead letter's header fields.
const REAP: &str = r"
local queue, consumers, counts, dlq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local processing, heartbeat, max, me = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local moved, dead = 0, 0
for _, c in ipairs(redis.call('SMEMBERS', consumers)) do
  if c ~= me and redis.call('EXISTS', heartbeat .. c) == 0 then
    local p = processing .. c
    while true do
      local e = redis.call('RPOP', p)
      if not e then break end
      local r = redis.call('HINCRBY', counts, e, 1)
      if max > 0 and r >= max and dlq ~= '' then
        local fields = {'payload', e}
        for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
        redis.call('XADD', dlq, '*', unpack(fields))
        redis.call('HDEL', counts, e)
        dead = dead + 1
      else
        redis.call('RPUSH', queue, e)
        moved = moved + 1
      end
    end
    redis.call('SREM', consumers, c)
  end
end
return {moved, dead}
";

/// The processing list of `consumer` on `queue`.
pub(crate) fn processing_key(queue: &str, consumer: &str) -> String {
    format!("{queue}:processing:{consumer}")
}

/// A consumer of a list.
#[derive(Debug, Clone)]
pub(crate) struct ListInput {
    pub(crate) queue: String,
    pub(crate) consumer: String,
    pub(crate) claim_idle_ms: u64,
    pub(crate) max_deliveries: u32,
    /// The dead-letter stream; `None` with dead letters off.
    pub(crate) dead_letters: Option<String>,
    pub(crate) worker: String,
}

impl ListInput {
    /// This consumer's processing list.
    pub(crate) fn processing(&self) -> String {
        processing_key(&self.queue, &self.consumer)
    }

    fn heartbeat(&self) -> String {
        format!("{}:heartbeat:{}", self.queue, self.consumer)
    }

    fn consumers(&self) -> String {
        format!("{}:consumers", self.queue)
    }

    fn counts(&self) -> String {
        format!("{}:deliveries", self.queue)
    }

    /// Registers this consumer and starts its heartbeat; on the first
    /// connection of the process, puts back what an earlier process of the
    /// same name left in its processing list.
    pub(crate) async fn set_up(
        &self,
        conn: &mut MultiplexedConnection,
        first: bool,
    ) -> Result<usize, RedisError> {
        self.renew(conn).await?;
        if first {
            return self.give_back(conn).await;
        }
        Ok(0)
    }

    /// The take of up to `count` elements, waiting up to `block` for the
    /// first; returns the elements.
    pub(crate) async fn take(
        &self,
        mut reader: MultiplexedConnection,
        count: usize,
        block_secs: f64,
    ) -> Result<Vec<Vec<u8>>, RedisError> {
        let processing = self.processing();
        let mut cmd = redis::cmd("BLMOVE");
        cmd.arg(&self.queue)
            .arg(&processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(block_secs);
        let first: Option<Vec<u8>> = query(&mut reader, "BLMOVE", &cmd).await?;
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let mut taken = vec![first];
        if count > 1 {
            let mut pipe = redis::pipe();
            for _ in 1..count {
                pipe.cmd("LMOVE")
                    .arg(&self.queue)
                    .arg(&processing)
                    .arg("RIGHT")
                    .arg("LEFT");
            }
            let more: Vec<Option<Vec<u8>>> = pipe
                .query_async(&mut reader)
                .await
                .map_err(|e| RedisError::command("LMOVE", e))?;
            taken.extend(more.into_iter().flatten());
        }
        Ok(taken)
    }

    /// Removes done elements from the processing list (and their delivery
    /// counts).
    pub(crate) async fn ack(
        &self,
        conn: &mut MultiplexedConnection,
        elements: &[Vec<u8>],
    ) -> Result<(), RedisError> {
        if elements.is_empty() {
            return Ok(());
        }
        let processing = self.processing();
        let counts = self.counts();
        let mut pipe = redis::pipe();
        for element in elements {
            pipe.cmd("LREM")
                .arg(&processing)
                .arg(1)
                .arg(element)
                .ignore();
        }
        let mut hdel = redis::cmd("HDEL");
        hdel.arg(&counts);
        for element in elements {
            hdel.arg(element);
        }
        pipe.add_command(hdel).ignore();
        pipe.query_async::<()>(conn)
            .await
            .map_err(|e| RedisError::command("LREM", e))
    }

    /// Renews the heartbeat and the registration.
    pub(crate) async fn renew(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        redis::pipe()
            .cmd("SET")
            .arg(self.heartbeat())
            .arg(1)
            .arg("PX")
            .arg(self.claim_idle_ms)
            .ignore()
            .cmd("SADD")
            .arg(self.consumers())
            .arg(&self.consumer)
            .ignore()
            .query_async::<()>(conn)
            .await
            .map_err(|e| RedisError::command("SET heartbeat", e))
    }

    /// Runs the reaper; returns how many elements it moved back and how
    /// many it dead-lettered.
    pub(crate) async fn reap(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(u64, u64), RedisError> {
        let prefix = |part: &str| format!("{}:{part}:", self.queue);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REAP)
            .arg(4)
            .arg(&self.queue)
            .arg(self.consumers())
            .arg(self.counts())
            .arg(self.dead_letters.as_deref().unwrap_or_default())
            .arg(prefix("processing"))
            .arg(prefix("heartbeat"))
            .arg(self.max_deliveries)
            .arg(&self.consumer);
        // The deliveries of an element over the limit: the limit plus this one.
        let deliveries = u64::from(self.max_deliveries) + 1;
        let letter = deliveries::letter_headers(
            &self.queue,
            &self.queue,
            &self.worker,
            deliveries,
            self.max_deliveries,
        );
        for header in letter.iter() {
            cmd.arg(&header.name)
                .arg(header.value.as_deref().unwrap_or_default());
        }
        let counts: Vec<u64> = query(conn, "EVAL reaper", &cmd).await?;
        match counts.as_slice() {
            [moved, dead] => Ok((*moved, *dead)),
            _ => Err(RedisError::reply("EVAL reaper", &Value::Nil)),
        }
    }

    /// Moves everything in this consumer's processing list back onto the
    /// queue; returns how many.
    pub(crate) async fn give_back(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<usize, RedisError> {
        let mut given = 0;
        loop {
            let mut cmd = redis::cmd("LMOVE");
            cmd.arg(self.processing())
                .arg(&self.queue)
                .arg("RIGHT")
                .arg("RIGHT");
            let moved: Option<Vec<u8>> = query(conn, "LMOVE", &cmd).await?;
            if moved.is_none() {
                return Ok(given);
            }
            given += 1;
        }
    }

    /// Ends this consumer: no heartbeat, not registered.
    pub(crate) async fn leave(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        redis::pipe()
            .cmd("DEL")
            .arg(self.heartbeat())
            .ignore()
            .cmd("SREM")
            .arg(self.consumers())
            .arg(&self.consumer)
            .ignore()
            .query_async::<()>(conn)
            .await
            .map_err(|e| RedisError::command("DEL heartbeat", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_of_a_consumer_derive_from_the_queue() {
        let input = ListInput {
            queue: "jobs".into(),
            consumer: "pod-1".into(),
            claim_idle_ms: 30_000,
            max_deliveries: 5,
            dead_letters: Some("jobs.dlq".into()),
            worker: "jobs".into(),
        };
        assert_eq!(input.processing(), "jobs:processing:pod-1");
        assert_eq!(input.heartbeat(), "jobs:heartbeat:pod-1");
        assert_eq!(input.consumers(), "jobs:consumers");
        assert_eq!(input.counts(), "jobs:deliveries");
    }
}
