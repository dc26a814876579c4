//! A queue connector's observability: the `/metrics` and `/health/*`
//! endpoint, and the monitor that keeps the broker's series true.
//!
//! Readiness follows the connector's task (it sets the broker state of the
//! shared [`Health`] as it connects and loses the connection) and the run's
//! phase. The monitor is the connector's: every `metrics.lag_interval` it
//! reads the input's depth from the broker and this instance's counts.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::endpoint::{Bound, Endpoint, MetricsConfig, Server};
use crate::error::Error;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::status::Status;

/// What a connector reads from its broker every `metrics.lag_interval`,
/// on a connection of its own, into its own series.
pub trait Monitor: Send + 'static {
    /// One reading. An error is the monitor's to log (at `debug`: the
    /// series keep their last values) and to recover from at the next tick.
    fn tick(&mut self) -> impl Future<Output = ()> + Send;
}

type MonitorLoop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a worker observes itself with, when `metrics.address` is set: its
/// [`Metrics`], the endpoint (bound, not yet serving) and the monitor.
///
/// ```
/// use pythia_core::MetricsConfig;
/// use pythia_core::connector::{Health, Monitor, Observer};
///
/// struct Depth;
/// impl Monitor for Depth {
///     async fn tick(&mut self) { /* read the queue's depth */ }
/// }
///
/// # fn main() -> Result<(), pythia_core::Error> {
/// let config = MetricsConfig::default(); // no `metrics.address`
/// assert!(Observer::new(&config, Health::new(), |_| Ok(Depth))?.is_none());
/// # Ok(()) }
/// ```
pub struct Observer {
    metrics: Metrics,
    health: Health,
    bound: Bound,
    monitor: MonitorLoop,
}

impl Observer {
    /// Binds the endpoint of `config.address` now, so that a bad or taken
    /// address fails at start; `None` without an address. `monitor` is made
    /// with the new [`Metrics`], to register its series there.
    ///
    /// # Errors
    ///
    /// A bad or taken address, or the monitor's error.
    pub fn new<M: Monitor>(
        config: &MetricsConfig,
        health: Health,
        monitor: impl FnOnce(&Metrics) -> Result<M, Error>,
    ) -> Result<Option<Self>, Error> {
        let Some(address) = config.socket_address()? else {
            return Ok(None);
        };
        let metrics = Metrics::new();
        let monitor = monitor(&metrics)?;
        let bound = Endpoint::new(metrics.clone())
            .health(health.clone())
            .bind(address, "metrics.address")?;
        Ok(Some(Self {
            metrics,
            health,
            bound,
            monitor: Box::pin(run_monitor(monitor, config.lag_interval)),
        }))
    }

    /// The metrics the endpoint serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Starts serving and monitoring the run whose status is `status`.
    pub fn start(self, status: watch::Receiver<Status>) -> Observing {
        self.health.watch(status);
        Observing {
            _server: self.bound.spawn(),
            monitor: tokio::spawn(self.monitor),
        }
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("address", &self.bound.local_addr())
            .finish_non_exhaustive()
    }
}

async fn run_monitor(mut monitor: impl Monitor, interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        monitor.tick().await;
    }
}

/// A running observer: dropping it stops the server and the monitor.
#[derive(Debug)]
pub struct Observing {
    _server: Server,
    monitor: JoinHandle<()>,
}

impl Drop for Observing {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    struct Count(Arc<AtomicUsize>);

    impl Monitor for Count {
        async fn tick(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn config(address: &str) -> MetricsConfig {
        MetricsConfig {
            address: Some(address.to_owned()),
            lag_interval: Duration::from_millis(10),
            ..MetricsConfig::default()
        }
    }

    #[tokio::test]
    async fn the_monitor_ticks_while_observing_and_stops_with_it() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let observer = Observer::new(&config("127.0.0.1:0"), Health::new(), |_| {
            Ok(Count(counted))
        })
        .unwrap()
        .expect("an address, an observer");
        let (_status, watched) = watch::channel(Status::default());
        let observing = observer.start(watched);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(ticks.load(Ordering::SeqCst) >= 2);
        drop(observing);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stopped = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            stopped,
            "no tick after the drop"
        );
    }

    #[tokio::test]
    async fn a_bad_address_fails_at_setup() {
        let made = Observer::new(&config("not an address"), Health::new(), |_| {
            Ok(Count(Arc::default()))
        });
        assert!(made.is_err());
    }

    #[tokio::test]
    async fn the_monitor_registers_on_the_served_metrics() {
        let observer = Observer::new(&config("127.0.0.1:0"), Health::new(), |metrics| {
            let gauge = prometheus::IntGauge::new("queue_depth", "depth").unwrap();
            metrics.registry().register(Box::new(gauge)).unwrap();
            Ok(Count(Arc::default()))
        })
        .unwrap()
        .unwrap();
        let text = observer.metrics().encode();
        assert!(text.contains("queue_depth"), "{text}");
    }
}
