//! A Kafka-protocol broker for local development without Docker:
//! librdkafka's mock cluster, served until Ctrl-C. Prints the bootstrap
//! address on stdout. Topics are created on first produce.
//!
//! ```sh
//! cargo run -p jq-testkit --example mock_kafka
//! ```

fn main() {
    let k = jq_testkit::TestKafka::new();
    println!("{}", k.brokers);
    eprintln!(
        "mock Kafka cluster ({}) serving at {}; Ctrl-C to stop",
        k.source, k.brokers
    );
    loop {
        std::thread::park();
    }
}
