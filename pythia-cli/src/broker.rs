//! Which broker a command runs against (`--broker`).

/// The brokers `pythia bench` and `pythia loadtest` know.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum BrokerKind {
    /// Kafka: the embedded broker, or a cluster given by --brokers.
    #[default]
    Kafka,
    /// RabbitMQ work queues, at --url (default 127.0.0.1:5672 as guest).
    Rabbitmq,
    /// A Redis list used as a reliable queue, at --url (default 127.0.0.1:6379).
    RedisList,
    /// A Redis stream read in a consumer group, at --url (default 127.0.0.1:6379).
    RedisStreams,
    /// A NATS JetStream durable pull consumer, at --url (default 127.0.0.1:4222).
    Nats,
}

impl BrokerKind {
    /// The value of `--broker` that selects it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Rabbitmq => "rabbitmq",
            Self::RedisList => "redis-list",
            Self::RedisStreams => "redis-streams",
            Self::Nats => "nats",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::BrokerKind;

    #[test]
    fn names_are_the_flag_values() {
        for kind in BrokerKind::value_variants() {
            let value = kind.to_possible_value().expect("a value");
            assert_eq!(value.get_name(), kind.name());
        }
    }
}
