//! How the member takes part in its consumer group: the protocol it speaks
//! and, under the classic protocol, its assignor.

use serde::Deserialize;

/// Which consumer-group protocol to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum GroupProtocol {
    /// KIP-848 on the embedded broker, classic everywhere else.
    #[default]
    Auto,
    /// KIP-848 (`group.protocol=consumer`, Kafka 4.0+): the broker assigns,
    /// rebalances are incremental and fast.
    Consumer,
    /// The classic protocol with a client-side assignor (`assignment_strategy`).
    Classic,
}

/// The client-side assignor of the classic protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum AssignmentStrategy {
    /// Incremental: a rebalance moves only the partitions it must.
    #[default]
    CooperativeSticky,
    /// Eager range assignment (every rebalance revokes everything).
    Range,
    /// Eager round-robin assignment.
    Roundrobin,
}

/// Parses one of `choices` (case-insensitive) or says which are allowed.
pub(super) fn choose<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            format!("`{value}` is not one of: {}", names.join(", "))
        })
}

impl TryFrom<String> for GroupProtocol {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        choose(
            &value,
            &[
                ("auto", Self::Auto),
                ("consumer", Self::Consumer),
                ("classic", Self::Classic),
            ],
        )
    }
}

impl TryFrom<String> for AssignmentStrategy {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        choose(
            &value,
            &[
                ("cooperative-sticky", Self::CooperativeSticky),
                ("range", Self::Range),
                ("roundrobin", Self::Roundrobin),
            ],
        )
    }
}

impl AssignmentStrategy {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::CooperativeSticky => "cooperative-sticky",
            Self::Range => "range",
            Self::Roundrobin => "roundrobin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_whatever_their_case_and_spaces() {
        assert_eq!(
            GroupProtocol::try_from(" Consumer ".to_owned()),
            Ok(GroupProtocol::Consumer)
        );
        assert_eq!(
            AssignmentStrategy::try_from("RANGE".to_owned()),
            Ok(AssignmentStrategy::Range)
        );
    }

    #[test]
    fn a_bad_value_lists_the_allowed_ones() {
        assert_eq!(
            GroupProtocol::try_from("kip848".to_owned()),
            Err("`kip848` is not one of: auto, consumer, classic".to_owned())
        );
        let error = AssignmentStrategy::try_from("sticky".to_owned()).unwrap_err();
        assert!(
            error.ends_with("cooperative-sticky, range, roundrobin"),
            "{error}"
        );
    }

    #[test]
    fn each_strategy_is_written_as_librdkafka_reads_it() {
        for strategy in [
            AssignmentStrategy::CooperativeSticky,
            AssignmentStrategy::Range,
            AssignmentStrategy::Roundrobin,
        ] {
            assert_eq!(
                AssignmentStrategy::try_from(strategy.as_str().to_owned()),
                Ok(strategy)
            );
        }
    }
}
