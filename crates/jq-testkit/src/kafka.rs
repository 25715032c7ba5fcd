//! A Kafka-protocol broker for tests: `JQ_TEST_KAFKA_BROKERS`, else
//! librdkafka's in-process mock cluster (real protocol on real sockets).
//! Docker is not used for Kafka: the mock cluster needs nothing installed
//! and starts in milliseconds (see docs/adr/0003).

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::Source;

/// Brokers for one test. Keeps the mock cluster alive while held.
pub struct TestKafka {
    pub brokers: String,
    pub source: Source,
    /// Topic names get this prefix so tests sharing a real broker don't mix.
    pub topic_prefix: String,
    _mock: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl TestKafka {
    pub fn new() -> TestKafka {
        let topic_prefix = format!("jqtest-{}.", crate::unique());
        if let Ok(b) = std::env::var("JQ_TEST_KAFKA_BROKERS")
            && !b.trim().is_empty()
        {
            return TestKafka {
                brokers: b,
                source: Source::Env,
                topic_prefix,
                _mock: None,
            };
        }
        let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("jq-testkit: librdkafka mock cluster: {e}"));
        TestKafka {
            brokers: mock.bootstrap_servers(),
            source: Source::MockCluster,
            topic_prefix,
            _mock: Some(mock),
        }
    }
}

impl TestKafka {
    /// The mock cluster, to take brokers down and up (None with a real broker).
    pub fn mock(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        self._mock.as_ref()
    }
}

impl Default for TestKafka {
    fn default() -> Self {
        TestKafka::new()
    }
}
