//! What to do with a delivery before processing it: the policy that maps
//! the server's delivery count onto dead letters.
//!
//! The runtime handles what `process` does (retries, then a dead letter);
//! this decides about deliveries the runtime never finished. A message is
//! delivered again when an earlier delivery was not acknowledged within
//! `ack_wait` (its instance crashed, lost the server, or stalled), and the
//! server stops delivering it after `max_deliver` deliveries, without a
//! trace. So the last delivery the server allows is not processed: it is
//! sent to the dead-letter subject, with a reason, and terminated (`+TERM`).
//! A message that kills every instance that takes it thus ends in the
//! dead-letter stream instead of crashing the workers in turn or vanishing.

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it to the runtime.
    Process,
    /// Publish it to the dead-letter subject with this reason, then
    /// terminate it.
    DeadLetter(String),
    /// Terminate it: the last delivery, and dead letters are off.
    Terminate(String),
}

/// The verdict on the `delivered`-th delivery of a message, given the
/// consumer's `max_deliver` (`-1`: unlimited) and whether dead letters are on.
pub(crate) fn verdict(delivered: i64, max_deliver: i64, dead_letters: bool) -> Verdict {
    if max_deliver < 1 || delivered < max_deliver {
        return Verdict::Process;
    }
    let reason = reason(delivered, max_deliver);
    if dead_letters {
        Verdict::DeadLetter(reason)
    } else {
        Verdict::Terminate(reason)
    }
}

/// Why the message was given up on.
pub(crate) fn reason(delivered: i64, max_deliver: i64) -> String {
    format!(
        "delivered {delivered} times (nats.max_deliver = {max_deliver}) without an acknowledgement: \
         the instances that took it crashed, lost the server or did not finish within nats.ack_wait"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_allowed_delivery_is_given_up_on() {
        let table = [
            // (delivered, max_deliver, dead letters on, expected)
            (1, 5, true, "process"),
            (4, 5, true, "process"),
            (5, 5, true, "dead-letter"),
            (7, 5, true, "dead-letter"),
            (5, 5, false, "terminate"),
            (1, 2, true, "process"),
            (2, 2, true, "dead-letter"),
            (1000, -1, true, "process"),
        ];
        for (delivered, max, dead_letters, expected) in table {
            let got = match verdict(delivered, max, dead_letters) {
                Verdict::Process => "process",
                Verdict::DeadLetter(_) => "dead-letter",
                Verdict::Terminate(_) => "terminate",
            };
            assert_eq!(
                got, expected,
                "{delivered} of {max}, dead letters {dead_letters}"
            );
        }
    }

    #[test]
    fn the_reason_names_the_count_and_the_setting() {
        let reason = reason(5, 5);
        assert!(reason.contains("delivered 5 times"), "{reason}");
        assert!(reason.contains("nats.max_deliver = 5"), "{reason}");
        assert!(reason.contains("nats.ack_wait"), "{reason}");
    }
}
