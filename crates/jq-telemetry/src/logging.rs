//! Logs (FR-041): one JSON object per line on stdout with `timestamp`,
//! `level`, `service`, `message`, `target`, and every field of the event and
//! of its enclosing spans flattened in (`job_id`, `worker_id`, `queue`,
//! `request_id`, …), so each line stands alone in a log pipeline.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log level {0:?}: {1}")]
    Level(String, String),
}

/// Install the global subscriber. `format` is `json` or `text`; `level` a
/// level or an `EnvFilter` directive. Calling it twice is harmless (the
/// second call keeps the first subscriber).
pub fn init(service: &'static str, level: &str, format: &str) -> Result<(), LogError> {
    let filter = EnvFilter::try_new(level).map_err(|e| LogError::Level(level.into(), e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = if format == "json" {
        builder
            .fmt_fields(JsonFields)
            .event_format(JsonLines { service })
            .try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// Collects fields into a JSON map.
struct Collect<'a>(&'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Stores span fields as a JSON object string, so the event formatter can
/// merge them.
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut w: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut map = Map::new();
        fields.record(&mut Collect(&mut map));
        write!(w, "{}", Value::Object(map))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut map: Map<String, Value> = serde_json::from_str(&current.fields).unwrap_or_default();
        fields.record(&mut Collect(&mut map));
        current.fields = Value::Object(map).to_string();
        Ok(())
    }
}

/// The flat JSON line format.
pub struct JsonLines {
    pub service: &'static str,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("service".into(), self.service.into());
        line.insert("target".into(), event.metadata().target().into());
        // Outer spans first, so the innermost value of a field wins.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<FormattedFields<N>>()
                    && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&f.fields)
                {
                    line.extend(m);
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut Collect(&mut fields));
        line.extend(fields);
        line.entry("message")
            .or_insert_with(|| Value::String(String::new()));
        writeln!(w, "{}", Value::Object(line))
    }
}
