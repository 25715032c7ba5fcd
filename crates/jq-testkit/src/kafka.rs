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

/// A Kafka-protocol broker behind TLS, as MSK or hosted Kafka serve it:
/// librdkafka's mock cluster (one broker), advertised at a TLS-terminating
/// proxy on `localhost`, so every connection a client makes — bootstrap and
/// broker alike — goes through TLS with the test's certificate. The mock
/// cluster has no TLS of its own, and no SASL.
pub struct TlsKafka {
    /// `localhost:PORT`: the proxy.
    pub brokers: String,
    cluster: *mut rdkafka::bindings::rd_kafka_mock_cluster_t,
    _client: rdkafka::client::Client<rdkafka::client::DefaultClientContext>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

// SAFETY: the cluster handle is only used to destroy it, once, in Drop;
// librdkafka's mock cluster is thread-safe (its own thread serves it).
unsafe impl Send for TlsKafka {}
unsafe impl Sync for TlsKafka {}

impl TlsKafka {
    pub fn start(tls: std::sync::Arc<rustls::ServerConfig>) -> TlsKafka {
        use std::ffi::{CStr, CString};
        let config = rdkafka::ClientConfig::new();
        let native = config.create_native_config().expect("native config");
        let client = rdkafka::client::Client::new(
            &config,
            native,
            rdkafka::types::RDKafkaType::RD_KAFKA_PRODUCER,
            rdkafka::client::DefaultClientContext,
        )
        .expect("mock cluster client");
        // SAFETY: a valid client handle; the cluster lives until Drop.
        let cluster = unsafe { rdkafka::bindings::rd_kafka_mock_cluster_new(client.native_ptr(), 1) };
        assert!(!cluster.is_null(), "jq-testkit: librdkafka mock cluster");
        // SAFETY: the returned string is owned by the cluster.
        let real = unsafe { CStr::from_ptr(rdkafka::bindings::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("bound").port();
        let host = CString::new("localhost").expect("no NUL");
        // SAFETY: broker 1 exists (one broker); host is copied.
        unsafe {
            rdkafka::bindings::rd_kafka_mock_broker_set_host_port(cluster, 1, host.as_ptr(), port as i32)
        };
        // `localhost` may resolve to ::1 first: listen there too, so no
        // client waits out a refused address and its reconnect backoff.
        let mut listeners = vec![listener];
        listeners.extend(std::net::TcpListener::bind(("::1", port)).ok());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || proxy(listeners, real, tls, stopped));
        TlsKafka {
            brokers: format!("localhost:{port}"),
            cluster,
            _client: client,
            stop: Some(stop),
        }
    }
}

/// Terminate TLS and forward the bytes to the mock broker, each
/// connection on its own task, until `stopped`.
fn proxy(
    listeners: Vec<std::net::TcpListener>,
    upstream: String,
    tls: std::sync::Arc<rustls::ServerConfig>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy runtime");
    rt.block_on(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        for l in listeners {
            l.set_nonblocking(true).expect("nonblocking");
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            tokio::spawn(serve(l, acceptor.clone(), upstream.clone()));
        }
        let _ = stopped.await;
    });
}

async fn serve(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, upstream: String) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
        tokio::spawn(async move {
            // A client that fails the handshake (wrong CA) just goes.
            let Ok(mut tls) = acceptor.accept(sock).await else {
                return;
            };
            let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // SAFETY: created in start, destroyed once here.
        unsafe { rdkafka::bindings::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}
