//! The delivery limit: an entry or element delivered more than
//! `redis.max_deliveries` times goes to the dead-letter stream instead of
//! to the worker once more.
//!
//! Deliveries rise only when an instance holding the message stops renewing
//! it (it died, hung, or was cut off longer than `redis.claim_idle`), so a
//! message over the limit is one that keeps killing its workers: processing
//! it again would kill another. The decision is [`exceeded`]; the dead
//! letter's fields are [`letter_fields`], the same `pythia.dlq.*` names the
//! runtime's dead letters carry.

use pythia_core::Headers;
use pythia_core::dead_letter::header;

/// Whether a message delivered `deliveries` times (the coming delivery
/// included) is over the limit `max` (0: no limit).
pub(crate) fn exceeded(deliveries: u64, max: u32) -> bool {
    max > 0 && deliveries > u64::from(max)
}

/// The reason a dead letter over the limit gives.
pub(crate) fn reason(deliveries: u64, max: u32) -> String {
    format!(
        "delivered {deliveries} times, more than redis.max_deliveries = {max}: each instance that took it stopped before acknowledging it (crashed, hung or lost its connection for longer than redis.claim_idle)"
    )
}

/// The headers of the dead letter of the message at `position` (an entry
/// id, or the list) of `input`, for worker `worker`.
pub(crate) fn letter_headers(
    input: &str,
    position: &str,
    worker: &str,
    deliveries: u64,
    max: u32,
) -> Headers {
    let mut headers = Headers::new();
    headers
        .append(header::REASON, reason(deliveries, max))
        .append(header::KIND, "max_deliveries")
        .append(header::ATTEMPTS, deliveries.to_string())
        .append(header::WORKER, worker.to_owned())
        .append(header::TOPIC, input.to_owned())
        .append(header::PARTITION, "0")
        .append(header::OFFSET, position.to_owned());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_passed_only_above_max_and_never_with_zero() {
        let table = [
            (1, 5, false),
            (5, 5, false),
            (6, 5, true),
            (2, 1, true),
            (1, 1, false),
            (1_000, 0, false),
        ];
        for (deliveries, max, expected) in table {
            assert_eq!(exceeded(deliveries, max), expected, "{deliveries} of {max}");
        }
    }

    #[test]
    fn the_letter_says_why_where_from_and_how_often() {
        let headers = letter_headers("jobs", "1700000000000-0", "jobs-worker", 6, 5);
        let reason = headers.get_str(header::REASON).unwrap();
        assert!(reason.contains("delivered 6 times"), "{reason}");
        assert!(reason.contains("redis.max_deliveries = 5"), "{reason}");
        assert_eq!(headers.get_str(header::KIND), Some("max_deliveries"));
        assert_eq!(headers.get_str(header::ATTEMPTS), Some("6"));
        assert_eq!(headers.get_str(header::TOPIC), Some("jobs"));
        assert_eq!(headers.get_str(header::OFFSET), Some("1700000000000-0"));
    }
}
