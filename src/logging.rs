//! Structured logs in the original's shape.
//!
//! Every record is one line. In JSON mode (the production default) it is an object with
//! `message`, `level`, `logger`, `timestamp` (ISO 8601, UTC), `type: "mlops"`, `stage: "main"`,
//! `correlation_id` when the record belongs to a request, and the record's own fields. In
//! human mode (`AIGW_LOGGING__FORMAT_JSON=false`, the development default) the same record is
//! printed as `timestamp level logger: message key=value ...`.
//!
//! Ordinary `tracing` events go through [`RecordLayer`]; the access log, whose fields vary per
//! request, is written with [`write_record`]. Both share one non-blocking writer, so a slow
//! stdout or disk never stalls a worker thread; the writer does not drop lines (it blocks only
//! when 128k lines are already queued).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Settings;

struct Sink {
    json: bool,
    writer: NonBlocking,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Keeps the log writer thread alive; dropping it flushes what is queued.
pub struct LogGuard {
    _guard: Option<WorkerGuard>,
}

/// Install the global logger. Call once, before anything logs.
pub fn init(settings: &Settings) -> std::io::Result<LogGuard> {
    let target: Box<dyn std::io::Write + Send> = match &settings.logging.to_file {
        Some(path) if !path.is_empty() => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        _ => Box::new(std::io::stdout()),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(128 * 1024)
        .thread_name("log-writer")
        .finish(target);
    let json = settings.logging.format_json;
    if SINK.set(Sink { json, writer }).is_err() {
        // Already initialised (tests start several gateways in one process): keep the first.
        return Ok(LogGuard { _guard: None });
    }
    let filter = EnvFilter::builder()
        .with_default_directive(
            settings
                .log_filter()
                .parse()
                .unwrap_or_else(|_| tracing::level_filters::LevelFilter::INFO.into()),
        )
        .from_env_lossy()
        // Noisy dependencies stay quiet unless something goes wrong.
        .add_directive("ractor=warn".parse().unwrap_or_default())
        .add_directive("actix_server=warn".parse().unwrap_or_default())
        .add_directive("hyper=warn".parse().unwrap_or_default())
        .add_directive("reqwest=warn".parse().unwrap_or_default());
    let _ = tracing_subscriber::registry()
        .with(RecordLayer.with_filter(filter))
        .try_init();
    Ok(LogGuard {
        _guard: Some(guard),
    })
}

/// The original's level names.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "debug",
    }
}

/// Write one record: `fields` are added after the standard keys, in their order.
pub fn write_record(level: &str, logger: &str, message: &str, fields: Map<String, Value>) {
    let Some(sink) = SINK.get() else {
        return;
    };
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut line = if sink.json {
        let mut record = Map::with_capacity(fields.len() + 6);
        record.insert("message".into(), Value::String(message.to_string()));
        record.insert("level".into(), Value::String(level.to_string()));
        record.insert("logger".into(), Value::String(logger.to_string()));
        record.insert("timestamp".into(), Value::String(timestamp));
        record.insert("type".into(), Value::String("mlops".into()));
        record.insert("stage".into(), Value::String("main".into()));
        record.extend(fields);
        serde_json::to_string(&Value::Object(record)).unwrap_or_default()
    } else {
        let mut line = format!("{timestamp} {level:<8} {logger}: {message}");
        for (k, v) in fields {
            match v {
                Value::String(s) => {
                    let _ = write!(line, " {k}={s}");
                }
                Value::Null => {}
                other => {
                    let _ = write!(line, " {k}={other}");
                }
            }
        }
        line
    };
    line.push('\n');
    let mut writer = sink.writer.clone();
    let _ = writer.write_all(line.as_bytes());
}

/// The correlation id of the request a span belongs to, stored in the span's extensions.
struct CorrelationId(String);

/// Formats `tracing` events as records (see the module docs).
pub struct RecordLayer;

impl<S> Layer<S> for RecordLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut visitor = FieldsVisitor::default();
        attrs.record(&mut visitor);
        if let Some(Value::String(cid)) = visitor.fields.remove("correlation_id") {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(CorrelationId(cid));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = FieldsVisitor::default();
        event.record(&mut visitor);
        let message = match visitor.fields.remove("message") {
            Some(Value::String(m)) => m,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(cid) = span.extensions().get::<CorrelationId>() {
                    fields.insert("correlation_id".into(), Value::String(cid.0.clone()));
                    break;
                }
            }
        }
        fields.extend(visitor.fields);
        let meta = event.metadata();
        write_record(level_name(*meta.level()), meta.target(), &message, fields);
    }
}

#[derive(Default)]
struct FieldsVisitor {
    fields: Map<String, Value>,
}

impl Visit for FieldsVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields
            .insert(field.name().to_string(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields
            .insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
}
