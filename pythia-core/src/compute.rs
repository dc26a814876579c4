//! CPU-heavy work on a rayon pool owned by the runtime, awaited from `process`
//! without blocking the tokio threads that poll the broker and answer health
//! checks.
//!
//! Handing work to the pool and waking the task again costs a few
//! microseconds. Work cheaper than that is faster done where it is: the pool
//! keeps a running estimate of what each piece of work (each closure type, so
//! each call site) costs, and runs it inline while that estimate stays below
//! `worker.compute_inline_below`. Inline runs are measured too, so work that
//! grows moves to the pool on its own.

use std::any::TypeId;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::ProcessError;

/// The default of `worker.compute_inline_below`.
pub(crate) const DEFAULT_INLINE_BELOW: Duration = Duration::from_micros(10);

/// The runtime's pool for CPU work: `worker.cpu_threads` threads (0 = one per core).
#[derive(Clone, Debug)]
pub(crate) struct CpuPool {
    pool: Arc<rayon::ThreadPool>,
    costs: Arc<Costs>,
}

impl CpuPool {
    /// A pool of `threads` threads (0 for one per available core) that runs
    /// work estimated to take less than `inline_below` inline.
    pub(crate) fn new(threads: usize, name: &str, inline_below: Duration) -> Result<Self, String> {
        let name = name.to_owned();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{name}-cpu-{i}"))
            .build()
            .map(|pool| Self {
                pool: Arc::new(pool),
                costs: Arc::new(Costs::new(inline_below)),
            })
            .map_err(|e| e.to_string())
    }

    /// A pool shared by contexts made outside a runtime (unit tests of workers).
    pub(crate) fn shared() -> Self {
        static SHARED: OnceLock<CpuPool> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                Self::new(0, "pythia", DEFAULT_INLINE_BELOW).expect("the default rayon pool starts")
            })
            .clone()
    }

    /// The number of threads.
    pub(crate) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` on the pool, or inline when work of its kind has been
    /// cheaper than handing it over; a panic in it becomes a permanent error.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let kind = TypeId::of::<F>();
        if self.costs.runs_inline(kind) {
            return settle(Ok(self.costs.timed(kind, work)));
        }
        let costs = self.costs.clone();
        self.offload(move || costs.timed(kind, work)).await
    }

    /// Runs `work` on the pool as a scope, so it can use rayon's parallel
    /// iterators over borrowed data (a batch, say). Always offloaded: work
    /// meant to be spread over threads is not run inline. A panic in it
    /// becomes a permanent error, as in `run`.
    pub(crate) async fn install<T, F>(&self, work: F) -> Result<T, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        self.offload(move || std::panic::catch_unwind(AssertUnwindSafe(|| pool.install(work))))
            .await
    }

    /// Runs `job` on a pool thread and waits for what it returns.
    async fn offload<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Ran<T> + Send + 'static,
    ) -> Result<T, ProcessError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            let _ = tx.send(job());
        });
        settle(rx.await)
    }
}

type Ran<T> = std::thread::Result<T>;

fn settle<T>(
    ran: Result<Ran<T>, tokio::sync::oneshot::error::RecvError>,
) -> Result<T, ProcessError> {
    match ran {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(ProcessError::permanent(format!(
            "CPU work panicked: {}",
            crate::panic::panic_text(&*panic)
        ))),
        Err(_) => Err(ProcessError::msg(
            "the CPU pool shut down before the work ran",
        )),
    }
}

/// Running estimates of what each kind of work costs.
#[derive(Debug)]
struct Costs {
    /// Work estimated below this runs inline; zero offloads everything.
    inline_below: Duration,
    /// Exponentially weighted average of each kind's run time, in nanoseconds.
    by_kind: Mutex<HashMap<TypeId, u64>>,
}

impl Costs {
    fn new(inline_below: Duration) -> Self {
        Self {
            inline_below,
            by_kind: Mutex::new(HashMap::new()),
        }
    }

    /// Whether work of this kind runs inline. Work never seen goes to the pool.
    fn runs_inline(&self, kind: TypeId) -> bool {
        !self.inline_below.is_zero()
            && self
                .lock()
                .get(&kind)
                .is_some_and(|&nanos| u128::from(nanos) < self.inline_below.as_nanos())
    }

    /// Runs `work`, catching a panic, and adds its run time to the estimate
    /// of its kind. A panic is not measured.
    fn timed<T>(&self, kind: TypeId, work: impl FnOnce() -> T) -> Ran<T> {
        let started = Instant::now();
        let ran = std::panic::catch_unwind(AssertUnwindSafe(work));
        if ran.is_ok() {
            self.record(kind, started.elapsed());
        }
        ran
    }

    fn record(&self, kind: TypeId, took: Duration) {
        if self.inline_below.is_zero() {
            return;
        }
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.lock()
            .entry(kind)
            .and_modify(|average| *average = *average - *average / 8 + took / 8)
            .or_insert(took);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TypeId, u64>> {
        // Each update is a single insert: a poisoned map is still consistent.
        self.by_kind.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_pool_thread() -> bool {
        std::thread::current()
            .name()
            .is_some_and(|name| name.contains("-cpu-"))
    }

    #[tokio::test]
    async fn cheap_work_runs_inline_after_its_first_run() {
        let pool = CpuPool::new(1, "cheap", Duration::from_millis(5)).unwrap();
        // The first run of a kind is offloaded and measured.
        let first = pool.run(on_pool_thread).await.unwrap();
        let later = pool.run(on_pool_thread).await.unwrap();
        assert!(first, "unmeasured work goes to the pool");
        assert!(!later, "work measured as cheap runs inline");
    }

    #[tokio::test]
    async fn costly_work_stays_on_the_pool() {
        let pool = CpuPool::new(1, "costly", Duration::from_micros(50)).unwrap();
        let work = || {
            std::thread::sleep(Duration::from_millis(2));
            on_pool_thread()
        };
        for _ in 0..3 {
            assert!(pool.run(work).await.unwrap());
        }
    }

    #[tokio::test]
    async fn work_that_grows_moves_to_the_pool() {
        let pool = CpuPool::new(1, "grows", Duration::from_micros(500)).unwrap();
        let sleep = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let work = |sleep: Arc<std::sync::atomic::AtomicU64>| {
            move || {
                let ms = sleep.load(std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(ms));
                on_pool_thread()
            }
        };
        pool.run(work(sleep.clone())).await.unwrap();
        assert!(
            !pool.run(work(sleep.clone())).await.unwrap(),
            "cheap at first"
        );
        sleep.store(3, std::sync::atomic::Ordering::Relaxed);
        let mut runs = 0;
        while !pool.run(work(sleep.clone())).await.unwrap() {
            runs += 1;
            assert!(runs < 20, "costly work kept running inline");
        }
    }

    #[tokio::test]
    async fn zero_threshold_always_offloads() {
        let pool = CpuPool::new(1, "always", Duration::ZERO).unwrap();
        for _ in 0..3 {
            assert!(pool.run(on_pool_thread).await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_panic_inline_or_offloaded_is_a_permanent_error() {
        let pool = CpuPool::new(1, "panics", Duration::from_millis(5)).unwrap();
        let work = |fail: bool| {
            move || {
                assert!(!fail, "bad pixel");
                7
            }
        };
        assert_eq!(pool.run(work(false)).await.unwrap(), 7);
        // Measured as cheap: this one runs inline.
        let error = pool.run(work(true)).await.unwrap_err();
        assert!(error.is_permanent());
        assert!(error.to_string().contains("bad pixel"), "{error}");
        let error = pool.install(|| panic!("in a scope")).await.unwrap_err();
        assert!(error.to_string().contains("in a scope"), "{error}");
    }
}
