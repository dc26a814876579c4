//! The exporter mode of `pythia lag`: the group's lag gauges on `/metrics`,
//! JSON on `/lag`, and the truth about its own reads.
//!
//! Values are served only while they are fresh. When a read fails, or no
//! read has succeeded for two intervals (a read hanging on an unreachable
//! broker), the partition series are dropped, `pythia_lag_exporter_up` is 0
//! and `/lag` answers 503 with the error: alerts and autoscalers see "no
//! data", never frozen lag. `pythia_lag_exporter_staleness_seconds` tells
//! how long ago the last good read was.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{GaugeVec, IntGaugeVec, Opts};
use pythia_core::Metrics;
use pythia_core::metrics::PartitionLag;
use pythia_kafka::lag_json;

/// The exporter's state, shared by the reading loop and the HTTP routes.
pub(crate) struct Exporter {
    metrics: Metrics,
    group: String,
    /// Values older than this are not served.
    fresh_for: Duration,
    up: IntGaugeVec,
    staleness: GaugeVec,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last good read's partitions; empty while not fresh.
    lags: Vec<PartitionLag>,
    last_success: Option<Instant>,
    /// Why the values are not served, when they are not.
    error: Option<String>,
}

impl Exporter {
    /// An exporter of `group`'s lag read every `interval`, its own gauges
    /// registered in `metrics`.
    pub(crate) fn new(metrics: Metrics, group: &str, interval: Duration) -> anyhow::Result<Self> {
        let up = IntGaugeVec::new(
            Opts::new(
                "pythia_lag_exporter_up",
                "1 while the exporter's last read of the group's lag succeeded and is fresh; 0 when it failed or is older than two intervals (the lag series are then dropped)",
            ),
            &["group"],
        )?;
        let staleness = GaugeVec::new(
            Opts::new(
                "pythia_lag_exporter_staleness_seconds",
                "Seconds since the exporter's last good read of the group's lag (since its start before the first)",
            ),
            &["group"],
        )?;
        metrics.registry().register(Box::new(up.clone()))?;
        metrics.registry().register(Box::new(staleness.clone()))?;
        up.with_label_values(&[group]).set(0);
        Ok(Self {
            metrics,
            group: group.to_owned(),
            fresh_for: interval * 2,
            up,
            staleness,
            started: Instant::now(),
            state: Mutex::new(State {
                error: Some("no read of the lag yet".to_owned()),
                ..State::default()
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of a read made at `now`.
    pub(crate) fn record(&self, read: Result<Vec<PartitionLag>, String>, now: Instant) {
        let mut state = self.state();
        match read {
            Ok(lags) => {
                publish(&self.metrics, &self.group, &state.lags, &lags);
                if state.error.take().is_some() && state.last_success.is_some() {
                    tracing::info!("the lag reads again");
                }
                state.lags = lags;
                state.last_success = Some(now);
            }
            Err(error) => {
                if state.error.is_none() {
                    tracing::warn!(%error, "cannot read the lag; not serving it until a read succeeds");
                }
                self.forget(&mut state, error);
            }
        }
        self.refresh_locked(&mut state, now);
    }

    /// Updates the staleness gauge and stops serving values older than two
    /// intervals (a read that hangs does not report a failure).
    pub(crate) fn refresh(&self, now: Instant) {
        let mut state = self.state();
        self.refresh_locked(&mut state, now);
    }

    fn refresh_locked(&self, state: &mut State, now: Instant) {
        let since = now.saturating_duration_since(state.last_success.unwrap_or(self.started));
        self.staleness
            .with_label_values(&[self.group.as_str()])
            .set(since.as_secs_f64());
        if state.error.is_none() && since > self.fresh_for {
            let error = format!(
                "no successful read of the lag for {:.1}s",
                since.as_secs_f64()
            );
            tracing::warn!(%error, "not serving the lag until a read succeeds");
            self.forget(state, error);
        }
        let up = state.error.is_none() && state.last_success.is_some();
        self.up
            .with_label_values(&[self.group.as_str()])
            .set(i64::from(up));
    }

    fn forget(&self, state: &mut State, error: String) {
        publish(&self.metrics, &self.group, &state.lags, &[]);
        state.lags.clear();
        state.error = Some(error);
    }

    /// What `/lag` answers: the lag JSON, or 503 with the error and the
    /// seconds since the last good read.
    pub(crate) fn lag(&self, now: Instant) -> (StatusCode, serde_json::Value) {
        let mut state = self.state();
        self.refresh_locked(&mut state, now);
        match &state.error {
            None => (StatusCode::OK, lag_json(&self.group, &state.lags)),
            Some(error) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "group": self.group,
                    "error": error,
                    "seconds_since_success": state
                        .last_success
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                }),
            ),
        }
    }

    /// `GET /lag`.
    pub(crate) fn router(self: Arc<Self>) -> Router {
        Router::new().route(
            "/lag",
            get(move || {
                let exporter = self.clone();
                async move { respond(exporter.lag(Instant::now())) }
            }),
        )
    }
}

fn respond((status, body): (StatusCode, serde_json::Value)) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Sets the gauges of `now` and removes those of partitions that went away.
fn publish(metrics: &Metrics, group: &str, before: &[PartitionLag], now: &[PartitionLag]) {
    for old in before {
        if !now
            .iter()
            .any(|p| p.topic == old.topic && p.partition == old.partition)
        {
            metrics.remove_partition(group, &old.topic, old.partition);
        }
    }
    for lag in now {
        metrics.set_partition_lag(group, lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter() -> (Exporter, Metrics) {
        let metrics = Metrics::new();
        let exporter = Exporter::new(metrics.clone(), "billing", Duration::from_secs(5)).unwrap();
        (exporter, metrics)
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn a_good_read_is_served_and_up() {
        let (exporter, metrics) = exporter();
        let t0 = Instant::now();
        assert_eq!(
            exporter.lag(t0).0,
            StatusCode::SERVICE_UNAVAILABLE,
            "no read yet"
        );
        exporter.record(Ok(vec![PartitionLag::new("orders", 0, 0, 10, Some(4))]), t0);
        let text = metrics.encode();
        assert_eq!(
            line(&text, "pythia_lag_exporter_up"),
            Some(r#"pythia_lag_exporter_up{group="billing"} 1"#)
        );
        assert!(line(&text, "pythia_consumer_lag{").is_some(), "{text}");
        let (status, body) = exporter.lag(t0 + Duration::from_secs(1));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["lag"], 6);
    }

    #[test]
    fn a_failed_read_drops_the_values_and_answers_503() {
        let (exporter, metrics) = exporter();
        let t0 = Instant::now();
        exporter.record(Ok(vec![PartitionLag::new("orders", 0, 0, 10, Some(4))]), t0);
        let t1 = t0 + Duration::from_secs(5);
        exporter.record(Err("broker down".into()), t1);
        let text = metrics.encode();
        assert_eq!(
            line(&text, "pythia_lag_exporter_up"),
            Some(r#"pythia_lag_exporter_up{group="billing"} 0"#)
        );
        assert!(line(&text, "pythia_consumer_lag{").is_none(), "{text}");
        assert_eq!(
            line(&text, "pythia_lag_exporter_staleness_seconds"),
            Some(r#"pythia_lag_exporter_staleness_seconds{group="billing"} 5"#)
        );
        let (status, body) = exporter.lag(t1);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "broker down");
        assert_eq!(body["seconds_since_success"], 5.0);
        // And back once a read succeeds.
        exporter.record(Ok(vec![PartitionLag::new("orders", 0, 0, 10, Some(9))]), t1);
        assert_eq!(exporter.lag(t1).1["lag"], 1);
    }

    #[test]
    fn values_older_than_two_intervals_are_not_served() {
        let (exporter, metrics) = exporter();
        let t0 = Instant::now();
        exporter.record(Ok(vec![PartitionLag::new("orders", 0, 0, 10, Some(4))]), t0);
        exporter.refresh(t0 + Duration::from_secs(9));
        assert_eq!(exporter.lag(t0 + Duration::from_secs(9)).0, StatusCode::OK);
        exporter.refresh(t0 + Duration::from_secs(11));
        assert!(line(&metrics.encode(), "pythia_consumer_lag{").is_none());
        let (status, body) = exporter.lag(t0 + Duration::from_secs(11));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["error"].as_str().unwrap().contains("11.0s"), "{body}");
    }
}
