//! Which broker a command runs against (`--broker`).

/// The brokers `pythia bench` and `pythia loadtest` know.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum BrokerKind {
    /// Kafka: the embedded broker, or a cluster given by --brokers.
    #[default]
    Kafka,
    /// RabbitMQ work queues, at --url (default 127.0.0.1:5672 as guest).
    Rabbitmq,
}
