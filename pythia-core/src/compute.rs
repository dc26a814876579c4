//! CPU-heavy work on a rayon pool owned by the runtime, awaited from `process`
//! without blocking the tokio threads that poll the broker and answer health
//! checks.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use crate::worker::ProcessError;

/// The runtime's pool for CPU work: `worker.cpu_threads` threads (0 = one per core).
#[derive(Clone, Debug)]
pub(crate) struct CpuPool(Arc<rayon::ThreadPool>);

impl CpuPool {
    /// A pool of `threads` threads; 0 for one per available core.
    pub(crate) fn new(threads: usize, name: &str) -> Result<Self, String> {
        let name = name.to_owned();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{name}-cpu-{i}"))
            .build()
            .map(|pool| Self(Arc::new(pool)))
            .map_err(|e| e.to_string())
    }

    /// A pool shared by contexts made outside a runtime (unit tests of workers).
    pub(crate) fn shared() -> Self {
        static SHARED: OnceLock<CpuPool> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::new(0, "pythia").expect("the default rayon pool starts"))
            .clone()
    }

    /// The number of threads.
    pub(crate) fn threads(&self) -> usize {
        self.0.current_num_threads()
    }

    /// Runs `work` on the pool; a panic in it becomes a permanent error.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        });
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(ProcessError::permanent(format!(
                "CPU work panicked: {}",
                crate::lane::panic_text(&*panic)
            ))),
            Err(_) => Err(ProcessError::msg(
                "the CPU pool shut down before the work ran",
            )),
        }
    }

    /// Runs `work` on the pool as a scope, so it can use rayon's parallel
    /// iterators over borrowed data (a batch, say).
    pub(crate) async fn install<T, F>(&self, work: F) -> Result<T, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.0.clone();
        self.run(move || pool.install(work)).await
    }
}
