//! The Kafka sink: an idempotent producer whose delivery report gates commits.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pythia_core::{Record, Sink, SinkError};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::error::KafkaError;

/// Sends records to Kafka; each delivery resolves when the broker acknowledged it.
///
/// ```no_run
/// use pythia_core::{Record, Sink};
/// # async fn demo(config: &pythia_kafka::KafkaConfig) -> Result<(), Box<dyn std::error::Error>> {
/// let sink = pythia_kafka::KafkaSink::new(config)?;
/// let delivery = sink.send(Record::new("hello").with_topic("greetings")).await?;
/// delivery.await?; // the broker has it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    default_topic: Option<Arc<str>>,
    sinks: Arc<HashMap<String, Arc<str>>>,
}

impl KafkaSink {
    /// A producer for `config.brokers`, sending records that name a sink to
    /// that sink's topic (`config.sinks`) and the others to `config.output_topic`.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer: FutureProducer = config.producer_client_config()?.create()?;
        let sinks = config
            .sinks
            .iter()
            .map(|(name, topic)| (name.clone(), Arc::from(topic.as_str())))
            .collect();
        Ok(Self {
            producer,
            default_topic: config.output_topic.as_deref().map(Arc::from),
            sinks: Arc::new(sinks),
        })
    }

    /// The topic a record goes to: its own, else its sink's, else the default.
    fn topic_of(&self, record: &Record) -> Result<Arc<str>, SinkError> {
        if let Some(topic) = &record.topic {
            return Ok(topic.clone());
        }
        match record.sink {
            Some(sink) => self
                .sinks
                .get(sink)
                .cloned()
                .ok_or_else(|| SinkError::UnknownSink { sink: sink.into() }),
            None => self.default_topic.clone().ok_or(SinkError::NoTopic),
        }
    }

    /// Waits until every queued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        Ok(self.producer.flush(timeout)?)
    }

    /// The underlying producer.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("default_topic", &self.default_topic)
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

/// Resolves when the broker confirmed one record.
pub struct KafkaDelivery {
    topic: Arc<str>,
    inner: DeliveryFuture,
}

impl Future for KafkaDelivery {
    type Output = Result<(), SinkError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let topic = self.topic.clone();
        Pin::new(&mut self.inner)
            .poll(cx)
            .map(|result| match result {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(SinkError::Delivery {
                    topic: topic.to_string(),
                    reason: error.to_string(),
                }),
                Err(_) => Err(SinkError::Delivery {
                    topic: topic.to_string(),
                    reason: "producer closed before the delivery report".into(),
                }),
            })
    }
}

impl Sink for KafkaSink {
    type Delivery = KafkaDelivery;

    async fn send(&self, record: Record) -> Result<KafkaDelivery, SinkError> {
        let topic = self.topic_of(&record)?;
        let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic);
        if !record.headers.is_empty() {
            // librdkafka allocates a header list even when it stays empty.
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for h in record.headers.iter() {
                headers = headers.insert(Header {
                    key: &h.name,
                    value: h.value.as_deref(),
                });
            }
            future_record = future_record.headers(headers);
        }
        future_record.payload = record.payload.as_deref();
        future_record.key = record.key.as_deref();
        loop {
            match self.producer.send_result(future_record) {
                Ok(inner) => {
                    return Ok(KafkaDelivery {
                        topic: topic.clone(),
                        inner,
                    });
                }
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The client's queue is full: wait for deliveries to make room.
                    future_record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => {
                    return Err(SinkError::Delivery {
                        topic: topic.to_string(),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }
}
