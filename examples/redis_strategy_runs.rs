//! Redis strategy runs: a pool of job workers sharing one Redis list,
//! `python_execution_queue`, as a reliable queue. A producer (any language)
//! `LPUSH`es a JSON run; each worker moves one into a processing list of its
//! own (`BLMOVE`), backtests it on the CPU pool, pushes the result onto
//! `python_execution_results` and only then removes the run from its
//! processing list. A worker that dies leaves its runs there; the others move
//! them back onto the queue once its heartbeat expires (`redis.claim_idle`).
//!
//! Needs Redis (127.0.0.1:6379):
//!
//! ```text
//! cargo run --release --example redis_strategy_runs                    # the demo
//! cargo run --release --example redis_strategy_runs -- worker          # one worker, until SIGTERM
//! cargo run --release --example redis_strategy_runs -- enqueue 10000   # runs for the workers
//! cargo run --release --example redis_strategy_runs -- report          # the queue and the results
//! ```
//!
//! The demo runs two instances in this process on lists of its own, pushes
//! 1,000 runs and ends with a line like `enqueued=1000 results=1000
//! distinct=1000 per_instance=[497,503] waiting=0 elapsed_ms=…`; it deletes its
//! lists at the end. `worker`, `enqueue` and `report` are the same pieces as
//! processes of their own, as `deploy/docker/docker-compose.yml` runs them
//! (`docker compose --profile redis up --scale strategy-worker=3`).
//!
//! Settings: `PYTHIA_REDIS__URL` (`redis://:password@host:6379/0`) and
//! `PYTHIA_REDIS__INPUT` / `PYTHIA_REDIS__OUTPUT` as for any Redis worker;
//! the mode is `list` unless `PYTHIA_REDIS__MODE` says otherwise.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pythia_redis::RedisWorker;
use pythia_redis::prelude::*;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const RUNS: u64 = 1_000;

/// A backtest to run, as the producer pushes it.
#[derive(Debug, Serialize, Deserialize)]
struct StrategyRun {
    run_id: String,
    strategy: String,
    symbol: String,
    days: u32,
}

/// What a run produced.
#[derive(Debug, Serialize, Deserialize)]
struct RunResult {
    run_id: String,
    pnl_bp: i64,
    instance: String,
}

/// Runs each strategy's backtest on the CPU pool; counts its runs.
#[derive(Worker)]
#[pythia(
    topic = "python_execution_queue",
    output = "python_execution_results",
    max_in_flight = 10
)]
struct StrategyRunner {
    processed: Arc<AtomicU64>,
}

impl Process for StrategyRunner {
    type Input = StrategyRun;
    type Output = RunResult;

    async fn process(
        &self,
        msg: Message<StrategyRun>,
        ctx: &Context,
    ) -> Result<Outputs<RunResult>, ProcessError> {
        let run = msg.payload();
        let seed = seed(&run.strategy, &run.symbol);
        let days = run.days;
        // CPU-bound: on the rayon pool, so the runtime keeps taking runs.
        let pnl_bp = ctx.compute(move || backtest(seed, days)).await?;
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::one(RunResult {
            run_id: run.run_id.clone(),
            pnl_bp,
            instance: ctx.instance().to_owned(),
        }))
    }
}

fn seed(strategy: &str, symbol: &str) -> u64 {
    strategy
        .bytes()
        .chain(symbol.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// A deterministic stand-in for a backtest: a random walk of daily returns
/// and a moving-average crossover, in basis points.
fn backtest(seed: u64, days: u32) -> i64 {
    let mut state = seed | 1;
    let (mut price, mut fast, mut slow, mut pnl) = (10_000i64, 10_000i64, 10_000i64, 0i64);
    for _ in 0..days {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let step = (state % 201) as i64 - 100;
        let long = fast > slow;
        price += step;
        fast += (price - fast) / 5;
        slow += (price - slow) / 20;
        if long {
            pnl += step;
        }
    }
    pnl
}

async fn connect(config: &pythia_redis::Config) -> anyhow::Result<MultiplexedConnection> {
    let url = &config.redis.url;
    let client = redis::Client::open(url.expose())
        .with_context(|| format!("PYTHIA_REDIS__URL={url} is not a Redis URL"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(anyhow::Error::from)
    .and_then(|connected| connected.map_err(anyhow::Error::from))
    .with_context(|| format!("Redis does not answer at {url} (set PYTHIA_REDIS__URL)"))
}

fn input(config: &pythia_redis::Config) -> String {
    config.redis.input.clone().unwrap_or_default()
}

fn output(config: &pythia_redis::Config) -> String {
    config.redis.output.clone().unwrap_or_default()
}

/// Pushes `runs` runs onto the queue, as a producer in any language would.
async fn enqueue(config: &pythia_redis::Config, runs: u64) -> anyhow::Result<u64> {
    let mut redis = connect(config).await?;
    let queue = input(config);
    let strategies = ["momentum", "mean_reversion", "breakout"];
    let symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG"];
    for chunk in (0..runs).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for &id in chunk {
            let run = StrategyRun {
                run_id: format!("run-{}-{id}", std::process::id()),
                strategy: strategies[id as usize % strategies.len()].into(),
                symbol: symbols[id as usize % symbols.len()].into(),
                days: 2_000 + (id % 7) as u32 * 250,
            };
            pipe.cmd("LPUSH").arg(&queue).arg(serde_json::to_vec(&run)?);
        }
        pipe.query_async::<()>(&mut redis).await?;
    }
    Ok(runs)
}

/// The results pushed so far, and how many runs still wait in the queue.
async fn report(config: &pythia_redis::Config) -> anyhow::Result<(Vec<RunResult>, u64)> {
    let mut redis = connect(config).await?;
    let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(output(config))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await?;
    let queued: u64 = redis::cmd("LLEN")
        .arg(input(config))
        .query_async(&mut redis)
        .await?;
    let results = raw
        .iter()
        .map(|r| serde_json::from_slice(r).context("a result that is not JSON"))
        .collect::<anyhow::Result<_>>()?;
    Ok((results, queued))
}

/// Two instances in this process on lists of their own, the runs, the summary.
async fn demo(mut config: pythia_redis::Config) -> anyhow::Result<()> {
    let prefix = format!("pythia-example:strategy-runs:{}", std::process::id());
    config.redis.input = Some(format!("{prefix}:queue"));
    config.redis.output = Some(format!("{prefix}:results"));
    let counters: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::default()).collect();
    let stop = CancellationToken::new();
    let mut instances = Vec::new();
    for (i, processed) in counters.iter().enumerate() {
        let mut instance_config = config.clone();
        instance_config.worker.instance = Some(format!("strategy-{i}"));
        instance_config.redis.consumer = Some(format!("strategy-{i}"));
        let worker = StrategyRunner {
            processed: processed.clone(),
        };
        let instance = RedisWorker::builder(worker)
            .config(instance_config)
            .build()?;
        let stop = stop.clone();
        instances.push(tokio::spawn(async move {
            instance.run(stop.cancelled_owned()).await
        }));
    }

    let started = Instant::now();
    let enqueued = enqueue(&config, RUNS).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (results, queued) = loop {
        let (results, queued) = report(&config).await?;
        if results.len() as u64 >= enqueued {
            break (results, queued);
        }
        if Instant::now() > deadline {
            bail!("only {} of {enqueued} runs done in 120 s", results.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    stop.cancel();
    for instance in instances {
        instance.await??;
    }
    let mut redis = connect(&config).await?;
    redis::cmd("DEL")
        .arg(input(&config))
        .arg(output(&config))
        .query_async::<()>(&mut redis)
        .await?;
    let distinct: HashSet<&str> = results.iter().map(|r| r.run_id.as_str()).collect();
    let per_instance: Vec<String> = counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed).to_string())
        .collect();
    println!(
        "enqueued={enqueued} results={} distinct={} per_instance=[{}] waiting={queued} elapsed_ms={}",
        results.len(),
        distinct.len(),
        per_instance.join(","),
        elapsed.as_millis()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pythia_redis::init_tracing();
    let config = pythia_redis::Config::from_loader(
        pythia_redis::Config::loader_for::<StrategyRunner>().default_value("redis.mode", "list"),
    )
    .context("loading the configuration")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => demo(config).await,
        ["worker"] => {
            let worker = StrategyRunner {
                processed: Arc::default(),
            };
            let summary = RedisWorker::builder(worker)
                .config(config)
                .build()?
                .run_until_signal()
                .await?;
            println!("processed={}", summary.processed);
            Ok(())
        }
        ["enqueue", runs] => {
            let runs: u64 = runs
                .parse()
                .with_context(|| format!("`enqueue {runs}`: the count of runs, e.g. 10000"))?;
            println!("enqueued={}", enqueue(&config, runs).await?);
            Ok(())
        }
        ["report"] => {
            let (results, queued) = report(&config).await?;
            let distinct: HashSet<&str> = results.iter().map(|r| r.run_id.as_str()).collect();
            println!(
                "results={} distinct={} waiting={queued}",
                results.len(),
                distinct.len()
            );
            Ok(())
        }
        _ => bail!("usage: redis_strategy_runs [worker | enqueue <runs> | report]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backtest_depends_on_its_inputs_only() {
        let seed = seed("momentum", "AAPL");
        assert_eq!(backtest(seed, 2_000), backtest(seed, 2_000));
        assert_ne!(seed, super::seed("momentum", "MSFT"));
    }
}
