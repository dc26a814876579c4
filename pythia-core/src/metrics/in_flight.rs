//! `pythia_in_flight_messages`, read from the runs' permits when scraped.

use std::sync::{Arc, Mutex, Weak};

use prometheus::IntGaugeVec;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio::sync::Semaphore;

use super::Metrics;

impl Metrics {
    /// Reports `worker`'s in-flight count as `max` minus the free permits, read
    /// at scrape time, for as long as `permits` lives.
    pub(crate) fn watch_in_flight(&self, worker: &str, permits: &Arc<Semaphore>, max: usize) {
        let mut runs = self
            .inner
            .in_flight
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        runs.push((worker.to_owned(), Arc::downgrade(permits), max));
    }
}

type InFlightRun = (String, Weak<Semaphore>, usize);

pub(super) struct InFlight {
    pub(super) gauge: IntGaugeVec,
    pub(super) runs: Mutex<Vec<InFlightRun>>,
}

/// Reads the in-flight counts when scraped: no work on the message path.
pub(super) struct InFlightCollector(pub(super) Arc<InFlight>);

impl Collector for InFlightCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut runs = self.0.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|(worker, permits, max)| match permits.upgrade() {
            Some(permits) => {
                let held = max.saturating_sub(permits.available_permits());
                self.0.gauge.with_label_values(&[worker]).set(held as i64);
                true
            }
            None => {
                self.0.gauge.with_label_values(&[worker]).set(0);
                false
            }
        });
        self.0.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_read_from_the_permits() {
        let metrics = Metrics::new();
        let permits = Arc::new(Semaphore::new(8));
        metrics.watch_in_flight("w", &permits, 8);
        let _held = permits.clone().try_acquire_many_owned(3).unwrap();
        assert!(
            metrics
                .encode()
                .contains(r#"pythia_in_flight_messages{worker="w"} 3"#)
        );
        drop(_held);
        drop(permits);
        assert!(
            metrics
                .encode()
                .contains(r#"pythia_in_flight_messages{worker="w"} 0"#)
        );
    }
}
