//! FR-041: one flat JSON object per line with timestamp, level, service,
//! message and the context fields of the event and its spans.

use std::io::Write;
use std::sync::{Arc, Mutex};

use jq_telemetry::logging::{JsonFields, JsonLines};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn fr_041_json_lines_carry_service_level_message_and_context_fields() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .fmt_fields(JsonFields)
        .event_format(JsonLines { service: "jq-server" })
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("grpc", request_id = "req-1", worker_id = "w-outer");
        let _g = span.enter();
        tracing::info!(
            job_id = "j-1",
            queue = "default",
            worker_id = "w-inner",
            attempt = 3,
            "job started"
        );
        tracing::warn!("plain");
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    let l = &lines[0];
    assert_eq!(l["service"], "jq-server");
    assert_eq!(l["level"], "INFO");
    assert_eq!(l["message"], "job started");
    assert_eq!(l["job_id"], "j-1");
    assert_eq!(l["queue"], "default");
    assert_eq!(l["request_id"], "req-1", "span fields are flattened in");
    assert_eq!(
        l["worker_id"], "w-inner",
        "the event's own field wins over the span's"
    );
    assert_eq!(l["attempt"], 3);
    assert!(chrono::DateTime::parse_from_rfc3339(l["timestamp"].as_str().unwrap()).is_ok());
    assert_eq!(lines[1]["level"], "WARN");
    assert_eq!(lines[1]["request_id"], "req-1");
}
