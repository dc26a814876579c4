//! The embedded broker: librdkafka's mock Kafka cluster, in process.
//!
//! It speaks the real Kafka protocol on loopback ports, so other processes can
//! connect to its bootstrap address while it lives. It keeps about 5 MiB per
//! partition and does not enforce transaction isolation: a development and test
//! broker, not a store.

mod sasl;

use std::ffi::{CStr, CString};
use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka_sys as rdsys;

/// Why the embedded broker could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The mock cluster did not start.
    #[error("embedded broker did not start: {0}")]
    Start(String),
    /// A topic could not be created.
    #[error("embedded broker could not create topic `{topic}`: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// An in-process Kafka broker for development and tests.
///
/// ```
/// use pythia_kafka::EmbeddedBroker;
/// let broker = EmbeddedBroker::start()?;
/// broker.create_topic("orders", 8)?;
/// assert!(broker.bootstrap_servers().starts_with("127.0.0.1:"));
/// # Ok::<(), pythia_kafka::EmbeddedError>(())
/// ```
pub struct EmbeddedBroker {
    cluster: *mut rdsys::rd_kafka_mock_cluster_t,
    bootstrap: String,
    /// In front of the listener when SASL is required.
    gate: Option<sasl::SaslGate>,
    // Owns the handle the mock cluster runs on; dropped after the cluster.
    _handle: BaseProducer,
}

// SAFETY: the mock cluster runs on its own librdkafka thread; every
// `rd_kafka_mock_*` call used here posts an operation to that thread and waits
// for it, so calling them from any thread is sound. The pointer stays valid until
// `Drop` destroys the cluster, and `_handle` (which the cluster uses) outlives it.
unsafe impl Send for EmbeddedBroker {}
// SAFETY: as above; no method mutates Rust-side state.
unsafe impl Sync for EmbeddedBroker {}

/// Session timeout of KIP-848 groups on the embedded broker: a killed member's
/// partitions move to the others after this long.
pub const EMBEDDED_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

impl EmbeddedBroker {
    /// Starts a one-broker cluster on a free loopback port.
    pub fn start() -> Result<Self, EmbeddedError> {
        let handle: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .map_err(|e| EmbeddedError::Start(e.to_string()))?;
        // SAFETY: the handle is a live rd_kafka_t for as long as `Self` holds it.
        let cluster = unsafe { rdsys::rd_kafka_mock_cluster_new(handle.client().native_ptr(), 1) };
        if cluster.is_null() {
            return Err(EmbeddedError::Start(
                "rd_kafka_mock_cluster_new returned null".into(),
            ));
        }
        // SAFETY: `cluster` is live; the returned string is owned by it.
        let bootstrap = unsafe { CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `cluster` is live. Shorter group timings than the defaults:
        // joins settle in a fraction of a second instead of ~3 s, and a crashed
        // member's partitions move after EMBEDDED_SESSION_TIMEOUT instead of 45 s.
        unsafe {
            rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 500);
            rdsys::rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(cluster, 300);
            rdsys::rd_kafka_mock_set_group_consumer_session_timeout_ms(
                cluster,
                EMBEDDED_SESSION_TIMEOUT.as_millis() as i32,
            );
        }
        tracing::info!(%bootstrap, "embedded broker started");
        Ok(Self {
            cluster,
            bootstrap,
            gate: None,
            _handle: handle,
        })
    }

    /// Starts a cluster and creates these topics (name, partitions).
    pub fn with_topics<'a>(
        topics: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> Result<Self, EmbeddedError> {
        let broker = Self::start()?;
        for (name, partitions) in topics {
            broker.create_topic(name, partitions)?;
        }
        Ok(broker)
    }

    /// The `bootstrap.servers` value that reaches this broker.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic with `partitions` partitions; a topic that exists is left as it is.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), EmbeddedError> {
        let topic_error = |reason: String| EmbeddedError::Topic {
            topic: name.to_owned(),
            reason,
        };
        if partitions < 1 {
            return Err(topic_error("partitions must be at least 1".into()));
        }
        let c_name = CString::new(name).map_err(|_| topic_error("name contains NUL".into()))?;
        // SAFETY: `cluster` is live and `c_name` outlives the call.
        let err = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.cluster, c_name.as_ptr(), partitions, 1)
        };
        use rdsys::rd_kafka_resp_err_t::*;
        if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS {
            // SAFETY: rd_kafka_err2str returns a static string.
            let reason = unsafe { CStr::from_ptr(rdsys::rd_kafka_err2str(err)) };
            return Err(topic_error(reason.to_string_lossy().into_owned()));
        }
        Ok(())
    }

    /// Makes every request for `topic` fail with `error` until cleared with
    /// `RD_KAFKA_RESP_ERR_NO_ERROR`: for tests of delivery and fetch failures.
    pub fn set_topic_error(
        &self,
        topic: &str,
        error: rdsys::rd_kafka_resp_err_t,
    ) -> Result<(), EmbeddedError> {
        let c_name = CString::new(topic).map_err(|_| EmbeddedError::Topic {
            topic: topic.to_owned(),
            reason: "name contains NUL".into(),
        })?;
        // SAFETY: `cluster` is live and `c_name` outlives the call.
        unsafe { rdsys::rd_kafka_mock_topic_set_error(self.cluster, c_name.as_ptr(), error) };
        Ok(())
    }

    /// Advertises the broker in metadata at `host:port` instead of its
    /// listener, for clients that reach it through a forwarder or a port
    /// mapping. The broker still listens on `127.0.0.1` only (librdkafka's mock
    /// cluster binds loopback), so something must carry `host:port` there;
    /// [`EmbeddedBroker::bootstrap_servers`] is unchanged.
    ///
    /// ```
    /// use pythia_kafka::EmbeddedBroker;
    /// let broker = EmbeddedBroker::start()?;
    /// // A forwarder on 10.0.0.5:19092 carries connections to the loopback listener.
    /// broker.advertise("10.0.0.5", 19092)?;
    /// assert!(broker.bootstrap_servers().starts_with("127.0.0.1:"));
    /// # Ok::<(), pythia_kafka::EmbeddedError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`EmbeddedError::Start`] when `host` contains a NUL byte.
    pub fn advertise(&self, host: &str, port: u16) -> Result<(), EmbeddedError> {
        let c_host = CString::new(host)
            .map_err(|_| EmbeddedError::Start(format!("advertised host {host:?} contains NUL")))?;
        // SAFETY: `cluster` is live; broker id 1 is the only broker; the host
        // string is copied by the call.
        unsafe {
            rdsys::rd_kafka_mock_broker_set_host_port(
                self.cluster,
                1,
                c_host.as_ptr(),
                i32::from(port),
            );
        }
        Ok(())
    }

    /// Requires SASL/PLAIN with this username and password from every client
    /// given [`EmbeddedBroker::bootstrap_servers`] from now on: a gate on a
    /// loopback port of its own answers the SASL handshake, refuses wrong
    /// credentials and any request before authentication, and passes
    /// authenticated connections through. The broker advertises the gate, so
    /// every connection a client opens goes through it. For trying security
    /// settings (`security.protocol = SASL_PLAINTEXT`, `sasl.mechanism =
    /// PLAIN`) without a real cluster; there is no TLS.
    ///
    /// ```
    /// use pythia_kafka::EmbeddedBroker;
    /// let mut broker = EmbeddedBroker::start()?;
    /// let before = broker.bootstrap_servers().to_string();
    /// broker.require_sasl_plain("alice", "s3cret")?;
    /// assert_ne!(broker.bootstrap_servers(), before);
    /// # Ok::<(), pythia_kafka::EmbeddedError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`EmbeddedError::Start`] when the gate cannot listen, or when SASL is
    /// already required.
    pub fn require_sasl_plain(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<(), EmbeddedError> {
        if self.gate.is_some() {
            return Err(EmbeddedError::Start("SASL is already required".into()));
        }
        let upstream: SocketAddr = self
            .bootstrap
            .parse()
            .map_err(|e| EmbeddedError::Start(format!("broker address {}: {e}", self.bootstrap)))?;
        let credentials = sasl::Credentials {
            username: username.to_string(),
            password: password.to_string(),
        };
        let gate = sasl::SaslGate::start(upstream, credentials)
            .map_err(|e| EmbeddedError::Start(format!("SASL gate: {e}")))?;
        let address = gate.address();
        self.advertise(&address.ip().to_string(), address.port())?;
        self.bootstrap = address.to_string();
        self.gate = Some(gate);
        tracing::info!(bootstrap = %self.bootstrap, "embedded broker requires SASL/PLAIN");
        Ok(())
    }

    /// Makes the next `errors.len()` requests of Kafka API `api_key` (8 is
    /// OffsetCommit, 0 Produce, 1 Fetch) fail with these errors, in order:
    /// for tests of what a client does with a refusal.
    ///
    /// ```
    /// use pythia_kafka::EmbeddedBroker;
    /// use rdkafka::types::RDKafkaRespErr;
    /// let broker = EmbeddedBroker::start()?;
    /// broker.fail_requests(8, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS]);
    /// broker.clear_request_errors(8);
    /// # Ok::<(), pythia_kafka::EmbeddedError>(())
    /// ```
    pub fn fail_requests(&self, api_key: i16, errors: &[rdsys::rd_kafka_resp_err_t]) {
        // SAFETY: `cluster` is live; the errors are copied by the call.
        unsafe {
            rdsys::rd_kafka_mock_push_request_errors_array(
                self.cluster,
                api_key,
                errors.len(),
                errors.as_ptr(),
            );
        }
    }

    /// Forgets the errors [`EmbeddedBroker::fail_requests`] queued for `api_key`.
    pub fn clear_request_errors(&self, api_key: i16) {
        // SAFETY: `cluster` is live.
        unsafe { rdsys::rd_kafka_mock_clear_request_errors(self.cluster, api_key) };
    }

    /// Takes the broker down (`up = false`) or brings it back: for outage tests.
    pub fn set_broker_up(&self, up: bool) {
        // SAFETY: `cluster` is live; broker id 1 is the only broker.
        unsafe {
            if up {
                rdsys::rd_kafka_mock_broker_set_up(self.cluster, 1);
            } else {
                rdsys::rd_kafka_mock_broker_set_down(self.cluster, 1);
            }
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Let the handle flush its own state before the cluster goes away.
        let _ = self._handle.flush(Duration::from_millis(100));
        // SAFETY: created in `start`, destroyed once here.
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);
    const REFUSED: Duration = Duration::from_secs(2);

    fn client(bootstrap: &str, credentials: Option<(&str, &str)>) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "0");
        if let Some((username, password)) = credentials {
            config
                .set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", username)
                .set("sasl.password", password);
        }
        config.create().unwrap()
    }

    #[test]
    fn the_sasl_gate_lets_in_only_the_configured_user() {
        let mut broker = EmbeddedBroker::with_topics([("orders", 3)]).unwrap();
        let open = broker.bootstrap_servers().to_string();
        broker.require_sasl_plain("alice", "s3cret").unwrap();
        let gated = broker.bootstrap_servers().to_string();
        assert_ne!(open, gated);

        let alice = client(&gated, Some(("alice", "s3cret")));
        let metadata = alice.fetch_metadata(Some("orders"), TIMEOUT).unwrap();
        assert_eq!(metadata.topics()[0].partitions().len(), 3);
        // Metadata points at the gate, so leader connections are gated too.
        assert_eq!(
            format!(
                "{}:{}",
                metadata.brokers()[0].host(),
                metadata.brokers()[0].port()
            ),
            gated
        );
        let (_, high) = alice.fetch_watermarks("orders", 0, TIMEOUT).unwrap();
        assert_eq!(high, 0);

        let wrong = client(&gated, Some(("alice", "guess")));
        assert!(wrong.fetch_metadata(Some("orders"), REFUSED).is_err());
        let nobody = client(&gated, None);
        assert!(nobody.fetch_metadata(Some("orders"), REFUSED).is_err());
        assert!(
            broker.require_sasl_plain("bob", "x").is_err(),
            "required twice"
        );
    }
}
