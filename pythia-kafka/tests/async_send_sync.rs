//! Public types can cross threads and tasks as users need them to.

use pythia_kafka::core::connector::OffsetTracker;
use pythia_kafka::core::{Error, Message, Outputs, ProcessError, Record, SinkError, Status};
use pythia_kafka::{Config, Context, EmbeddedBroker, KafkaAcker, KafkaSink, KafkaSource};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn public_types_are_send_and_sync() {
    send_sync::<Message<bytes::Bytes>>();
    send_sync::<Context>();
    send_sync::<Outputs<String>>();
    send_sync::<ProcessError>();
    send_sync::<Record>();
    send_sync::<SinkError>();
    send_sync::<Error>();
    send_sync::<Status>();
    send_sync::<OffsetTracker>();
    send_sync::<Config>();
    send_sync::<KafkaSink>();
    send_sync::<KafkaAcker>();
    send_sync::<EmbeddedBroker>();
    send::<KafkaSource>();
}
