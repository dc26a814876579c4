//! Connections and queues: connecting to the broker, declaring (or checking)
//! the queues a worker uses, and reading a queue's depth.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::config::{QueueMode, RabbitConfig};
use crate::error::RabbitError;

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections`
/// and the management UI), within `rabbitmq.broker_timeout`.
pub(crate) async fn connect(config: &RabbitConfig, name: &str) -> Result<Connection, RabbitError> {
    let url = &config.url;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = Connection::connect(url.expose(), properties);
    match tokio::time::timeout(config.broker_timeout, connecting).await {
        Ok(connected) => connected.map_err(|e| RabbitError::Connect {
            url: url.redacted(),
            reason: e.to_string(),
        }),
        Err(_) => Err(RabbitError::Connect {
            url: url.redacted(),
            reason: format!(
                "not open within rabbitmq.broker_timeout ({:?}): the broker accepted the connection but did not answer (starting or stopping?)",
                config.broker_timeout
            ),
        }),
    }
}

/// A queue's depth as the broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depth {
    /// Messages ready for delivery (not counting those delivered and unacknowledged).
    pub(crate) ready: u32,
    /// Consumers subscribed.
    pub(crate) consumers: u32,
}

/// Reads `queue`'s depth with a passive declare.
pub(crate) async fn depth(channel: &Channel, queue: &str) -> Result<Depth, RabbitError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(|e| RabbitError::Queue {
            queue: queue.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Depth {
        ready: found.message_count(),
        consumers: found.consumer_count(),
    })
}

/// Makes sure `queue` exists: if it does, it is left as it is (with its
/// own arguments); if not, it is declared durable (`QueueMode::Declare`) or
/// the error says how to get it (`QueueMode::Expect`).
///
/// A passive declare of a missing queue closes its channel, so this takes a
/// connection and returns nothing of its channels.
pub(crate) async fn ensure_queue(
    connection: &Connection,
    queue: &str,
    mode: QueueMode,
) -> Result<(), RabbitError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| RabbitError::amqp("channel.open", e))?;
    let missing = match depth(&channel, queue).await {
        Ok(_) => {
            let _ = channel.close(200, "checked".into()).await;
            return Ok(());
        }
        Err(error) => error,
    };
    if mode == QueueMode::Expect {
        return Err(RabbitError::Queue {
            queue: queue.to_owned(),
            reason: format!(
                "{missing}; declare it, or let the worker declare it with rabbitmq.queues = \"declare\""
            ),
        });
    }
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| RabbitError::amqp("channel.open", e))?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| RabbitError::Queue {
            queue: queue.to_owned(),
            reason: e.to_string(),
        })?;
    tracing::info!(queue, "declared queue");
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker of the machine; these tests need it and say so.
    fn broker() -> RabbitConfig {
        at(&std::env::var("PYTHIA_TEST_AMQP_URL").unwrap_or_else(|_| crate::DEFAULT_URL.into()))
    }

    fn at(url: &str) -> RabbitConfig {
        RabbitConfig {
            url: crate::AmqpUrl::new(url),
            ..RabbitConfig::default()
        }
    }

    #[tokio::test]
    async fn a_missing_queue_is_declared_or_named_with_the_fix() {
        let connection = connect(&broker(), "pythia-topology-test").await.expect(
            "RabbitMQ must answer on 127.0.0.1:5672 (start it: service rabbitmq-server start)",
        );
        let queue = format!("pythia-topology-{}", std::process::id());
        let error = ensure_queue(&connection, &queue, QueueMode::Expect)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("rabbitmq.queues"), "{error}");
        ensure_queue(&connection, &queue, QueueMode::Declare)
            .await
            .unwrap();
        // Now it exists: both modes accept it.
        ensure_queue(&connection, &queue, QueueMode::Expect)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let found = depth(&channel, &queue).await.unwrap();
        assert_eq!(
            found,
            Depth {
                ready: 0,
                consumers: 0
            }
        );
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
        connection.close(200, "done".into()).await.unwrap();
    }

    #[tokio::test]
    async fn a_wrong_password_is_reported_without_it() {
        let config = at("amqp://guest:not-the-password@127.0.0.1:5672/%2f");
        let error = connect(&config, "pythia-topology-test").await.unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("not-the-password"), "{text}");
        assert!(text.contains("guest:***"), "{text}");
    }

    #[tokio::test]
    async fn a_broker_that_accepts_but_never_answers_is_given_up_in_time() {
        // A socket that takes the connection and says nothing, as a broker
        // does for a moment while it starts or stops.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let mut config = at(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
        config.broker_timeout = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        let error = connect(&config, "pythia-topology-test").await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("rabbitmq.broker_timeout"), "{text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        held.abort();
    }
}
