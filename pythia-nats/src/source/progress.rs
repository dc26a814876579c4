//! Progress acks: every held message reported in progress (`+WPI`), so the
//! server restarts its `ack_wait` and does not hand a long job to another
//! instance while its owner works on it.
//!
//! The fetch task calls [`report`] every `nats.progress_interval` (a third
//! of `ack_wait` by default: two reports can be lost before the server gives
//! up on the owner). A message whose ack was sent already is no longer held,
//! and a report the server gets after the ack is ignored by it.

use async_nats::Client;
use async_nats::jetstream::AckKind;

use super::ack::{self, InFlight};

/// Reports every message `held` in progress on `client`; returns how many.
pub(crate) async fn report(client: &Client, held: &InFlight) -> usize {
    let replies = held.all();
    let count = replies.len();
    for reply in replies {
        ack::send(client, reply, AckKind::Progress).await;
    }
    if count > 0 {
        tracing::debug!(held = count, "reported held messages in progress");
    }
    count
}
