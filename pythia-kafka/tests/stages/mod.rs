//! The two-stage pipeline the trace tests run: `numbers` → `Relay` →
//! `relayed` → `Collect`, and a producer of traced input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pythia_kafka::prelude::*;
use pythia_kafka::{ConfigLoader, Utf8};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Stage 1: passes each message on.
#[derive(Worker)]
#[pythia(topic = "numbers", output = "relayed", codec = (Utf8, Utf8))]
pub(crate) struct Relay;

impl Process for Relay {
    type Input = String;
    type Output = String;
    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<String>, ProcessError> {
        Ok(Outputs::one(msg.into_payload()))
    }
}

/// Stage 2: keeps each payload with the `traceparent` it arrived with.
#[derive(Default, Worker)]
#[pythia(topic = "relayed", codec = "utf8")]
pub(crate) struct Collect {
    pub(crate) seen: Mutex<Vec<(String, Option<String>)>>,
}

impl Process for Collect {
    type Input = String;
    type Output = ();
    async fn process(
        &self,
        msg: Message<String>,
        _: &Context,
    ) -> Result<Outputs<()>, ProcessError> {
        let traceparent = msg.headers().get_str("traceparent").map(str::to_owned);
        self.seen
            .lock()
            .unwrap()
            .push((msg.payload().clone(), traceparent));
        Ok(Outputs::none())
    }
}

impl Collect {
    /// How many messages reached stage 2.
    pub(crate) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// The two stages on an embedded broker whose topics have `partitions`
/// partitions, and stage 2, to read what reached it.
pub(crate) fn pipeline(partitions: i64) -> (Pipeline, Arc<Collect>) {
    let collect = Arc::new(Collect::default());
    let base = ConfigLoader::new()
        .no_file()
        .env::<&str, &str>([])
        .set("kafka.brokers", "embedded")
        .set("kafka.embedded_partitions", partitions);
    let pipeline = Pipeline::builder(base)
        .stage(Relay)
        .stage(collect.clone())
        .build()
        .unwrap();
    (pipeline, collect)
}

/// Sends `messages` to `numbers`, in order, keyed by their payload, with
/// their `traceparent` if any.
pub(crate) async fn produce(brokers: &str, messages: &[(&str, Option<&str>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (payload, traceparent) in messages {
        let mut headers = OwnedHeaders::new();
        if let Some(traceparent) = traceparent {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(*traceparent),
            });
        }
        let record = FutureRecord::to("numbers")
            .key(*payload)
            .payload(*payload)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
}
