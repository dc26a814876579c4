//! Progress acks: every held message reported in progress (`+WPI`), so the
//! server restarts its `ack_wait` and does not hand a long job to another
//! instance while its owner works on it.
//!
//! The fetch task calls [`report`] every `nats.progress_interval` (a third
//! of `ack_wait` by default: two reports can be lost before the server gives
//! up on the owner). A message whose ack was sent already is no longer held,
//! and a report the server gets after the ack is ignored by it.

use super::ack::InFlight;
use super::fetch::ack;
use async_nats::jetstream::AckKind;

/// Reports every message `held` in progress; returns how many.
pub(crate) async fn report(held: &InFlight) -> usize {
    let ackers = held.all();
    for acker in &ackers {
        ack(acker, AckKind::Progress).await;
    }
    if !ackers.is_empty() {
        tracing::debug!(held = ackers.len(), "reported held messages in progress");
    }
    ackers.len()
}
