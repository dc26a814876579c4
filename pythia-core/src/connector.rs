//! What a connector builds on: a broker's [`Source`] of messages and
//! [`Sink`] of records, run by the [`Runtime`] with a worker.
//!
//! A worker's author needs none of this; it is for crates such as
//! `pythia-kafka` that bring a broker. A connector implements [`Source`]
//! (messages in, assignments and revocations, pausing, closing) and
//! [`Sink`] (records out, each settled through its [`Receipt`]), keeps an
//! [`OffsetTracker`] per member (what is safe to commit), and may serve the
//! [`Endpoint`] (`/metrics`, `/health/*`) with [`Health`].
//!
//! A connector whose input is one queue (RabbitMQ, Redis, NATS) builds its
//! source, run and builder on [`ConsumeTask`], [`QueueInstance`],
//! [`Observer`] and [`QueueBuilder`].

use std::ffi::c_void;
use std::ptr::NonNull;

pub use crate::endpoint::{Bound, Endpoint, Limits, Server};
pub use crate::events::Events;
pub use crate::health::{Health, StallDetector};
pub use crate::metrics::{PartitionLag, lag};
pub use crate::offsets::OffsetTracker;
pub use crate::queue::{
    ConsumeTask, Monitor, Observer, Observing, Publisher, QueueBuilder, QueueInstance, SinkSetup,
    TaskCommand,
};
pub use crate::reconnect::{Backoff, backoff_wait};
pub use crate::runtime::{Identity, Runtime};
pub use crate::sink::{Confirmation, NoSink, Receipt, Sink};
pub use crate::source::{Acker, Revocation, Source, SourceEvent};

/// `url` with its password replaced by `***`, for logs and messages: the
/// credentials end at the last `@` before the path; with
/// `lone_user_is_secret`, a user given without a password (a token, as NATS
/// takes them) is hidden too. A URL without credentials is returned as it is.
///
/// ```
/// use pythia_core::connector::redact_url;
/// assert_eq!(redact_url("amqp://jobs:s3cret@rabbit:5672/%2f", false), "amqp://jobs:***@rabbit:5672/%2f");
/// assert_eq!(redact_url("amqp://jobs@rabbit", false), "amqp://jobs@rabbit");
/// assert_eq!(redact_url("nats://t0ken@nats:4222", true), "nats://***@nats:4222");
/// assert_eq!(redact_url("redis://redis:6379/0", false), "redis://redis:6379/0");
/// ```
pub fn redact_url(url: &str, lone_user_is_secret: bool) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let credentials = &authority[..at];
    let user = match credentials.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None if lone_user_is_secret => "***".to_owned(),
        None => credentials.to_owned(),
    };
    format!("{scheme}{user}{}", &rest[at..])
}

/// Turns a receipt into a pointer, to travel through a C client as the
/// opaque of its record (librdkafka's `msg_opaque`, say); [`receipt_from_raw`]
/// turns it back. A receipt turned into a pointer and never back leaks.
///
/// ```
/// # futures::executor::block_on(async {
/// use pythia_core::connector::{Receipt, receipt_from_raw, receipt_into_raw};
/// let (receipt, confirmation) = Receipt::channel();
/// let opaque = receipt_into_raw(receipt);
/// // SAFETY: made by `receipt_into_raw` just above and taken back once.
/// let receipt = unsafe { receipt_from_raw(opaque) };
/// receipt.settle(Ok(()));
/// assert!(confirmation.await.is_ok());
/// # });
/// ```
pub fn receipt_into_raw(receipt: Receipt) -> NonNull<c_void> {
    receipt.into_raw()
}

/// The receipt [`receipt_into_raw`] gave `raw`.
///
/// # Safety
///
/// `raw` must come from [`receipt_into_raw`] and be turned back only once.
pub unsafe fn receipt_from_raw(raw: NonNull<c_void>) -> Receipt {
    // SAFETY: the caller passes a pointer from `receipt_into_raw`, once.
    unsafe { Receipt::from_raw(raw) }
}
