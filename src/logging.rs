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
//! when 128k lines are already queued) and batches what is queued into one write.

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
        // The writer thread writes every queued line, then flushes when the queue is empty (and
        // when it shuts down): under load one write(2) carries many lines instead of one each.
        .finish(std::io::BufWriter::with_capacity(64 * 1024, target));
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

/// `t` as the log's timestamps are written: RFC 3339 with microseconds and `Z`
/// (`2026-01-01T00:00:00.000001Z`), the record's `timestamp` and the access log's
/// `request_arrived_at` alike.
pub fn rfc3339_micros(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
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

/// An ordered list of record fields with unique keys: setting a key that is already there
/// replaces its value in place, as an insertion-ordered map does. A linear scan over a few dozen
/// `&'static str` keys is far cheaper than hashing each key (the access log sets ~40 per request),
/// and a 128-bit filter of the keys held (one bit per key, from its length and end bytes) skips
/// the scan altogether for most keys that are not there yet, such as a request's own entries
/// merged into the access log's standard fields.
#[derive(Debug, Default, Clone)]
pub struct Fields {
    entries: Vec<(&'static str, Value)>,
    /// A bit for every key ever held (a removed key's bit stays set: a false "maybe").
    seen: u128,
}

/// The filter bit of `key`.
#[inline]
fn key_bit(key: &str) -> u128 {
    let bytes = key.as_bytes();
    let first = bytes.first().copied().unwrap_or(0);
    let last = bytes.last().copied().unwrap_or(0);
    let h = (bytes.len() as u32)
        .wrapping_mul(31)
        .wrapping_add(u32::from(first).wrapping_mul(7))
        .wrapping_add(u32::from(last).wrapping_mul(13));
    1u128 << (h % 128)
}

impl Fields {
    /// An empty list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            seen: 0,
        }
    }

    /// Add `key` at the end without looking for it: for keys the caller knows are not there yet
    /// (the access log's standard fields), which saves a scan per field.
    pub fn push_new(&mut self, key: &'static str, value: Value) {
        debug_assert!(self.get(key).is_none(), "{key} set twice");
        self.seen |= key_bit(key);
        self.entries.push((key, value));
    }

    /// Add `key` at the end, or replace its value where it is.
    pub fn set(&mut self, key: &'static str, value: Value) {
        let bit = key_bit(key);
        if self.seen & bit != 0 {
            if let Some(slot) = self.entries.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
                return;
            }
        }
        self.seen |= bit;
        self.entries.push((key, value));
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        if self.seen & key_bit(key) == 0 {
            return None;
        }
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// Set every field of `other` (in its order), as [`Fields::set`] does.
    pub fn merge(&mut self, other: Fields) {
        for (k, v) in other.entries {
            self.set(k, v);
        }
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + Clone {
        self.entries.iter().map(|(k, v)| (*k, v))
    }
}

/// The standard keys every record starts with, in order.
const STANDARD_KEYS: [&str; 6] = ["message", "level", "logger", "timestamp", "type", "stage"];

fn standard_slot(key: &str) -> Option<usize> {
    STANDARD_KEYS.iter().position(|k| *k == key)
}

/// What a byte becomes inside a JSON string, as serde_json writes it: 0 for itself, else the
/// letter after the backslash (`u` for `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` is a control character, `"` or `\` (exact: the
/// classic "has a byte less than n / equal to zero" word tricks, which only err in *which* byte
/// they flag, never in whether one is).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    let control = w.wrapping_sub(LOW_BITS * 0x20) & !w;
    let q = w ^ (LOW_BITS * u64::from(b'"'));
    let quote = q.wrapping_sub(LOW_BITS) & !q;
    let s = w ^ (LOW_BITS * u64::from(b'\\'));
    let backslash = s.wrapping_sub(LOW_BITS) & !s;
    (control | quote | backslash) & HIGH_BITS != 0
}

/// Whether `bytes` holds nothing that needs escaping in a JSON string, checked eight bytes at a
/// time (the last, short word padded with spaces).
#[inline]
fn is_clean(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_needs_escape(u64::from_le_bytes(word)) {
            return false;
        }
    }
    let tail = words.remainder();
    if tail.is_empty() {
        return true;
    }
    // Shifted in byte by byte over spaces: a copy into a padded array would be a memcpy call.
    let mut word = LOW_BITS * u64::from(b' ');
    for (i, b) in tail.iter().enumerate() {
        let shift = 8 * i;
        word = (word & !(0xff << shift)) | (u64::from(*b) << shift);
    }
    !word_needs_escape(word)
}

/// Append `s` as a JSON string, byte for byte as serde_json escapes it. Log lines are mostly
/// clean ASCII: a string is checked eight bytes at a time and, when clean (nearly always),
/// copied with one `extend_from_slice`, instead of serde_json's table lookup and branch per byte
/// (the access log writes ~65 strings, ~1.5 kB, per request).
fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    if is_clean(bytes) {
        buf.extend_from_slice(bytes);
    } else {
        push_escaped(buf, bytes);
    }
    buf.push(b'"');
}

/// The escaping of [`push_json_str`] for a string that needs some: clean runs are copied whole.
#[cold]
fn push_escaped(buf: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        buf.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            buf.extend_from_slice(&[b'\\', escape]);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// Append `,"key":` (a clean key, nearly always, in one reservation and three copies).
fn push_key(buf: &mut Vec<u8>, key: &str) {
    if is_clean(key.as_bytes()) {
        buf.reserve(key.len() + 4);
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(b"\":");
    } else {
        buf.push(b',');
        push_json_str(buf, key);
        buf.push(b':');
    }
}

/// Append `v` as serde_json serialises it.
fn push_json_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => push_json_str(buf, s),
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        // Integers as serde_json writes them (itoa); floats go through serde_json's own writer.
        Value::Number(n) if n.is_u64() || n.is_i64() => {
            let mut digits = itoa::Buffer::new();
            let text = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => digits.format(u),
                (None, Some(i)) => digits.format(i),
                (None, None) => "",
            };
            buf.extend_from_slice(text.as_bytes());
        }
        other => {
            let _ = serde_json::to_writer(&mut *buf, other);
        }
    }
}

/// Serialise a record as one compact JSON object, byte for byte what serialising the map
/// `{message, level, logger, timestamp, type, stage}` extended with `fields` gives (a field whose
/// key is a standard one replaces that value in place), without building the map.
fn json_line<'a, I>(buf: &mut Vec<u8>, standard: [&str; 6], fields: I)
where
    I: IntoIterator<Item = (&'a str, &'a Value)>,
    I::IntoIter: Clone,
{
    let fields = fields.into_iter();
    let mut overrides: [Option<&Value>; 6] = [None; 6];
    for (k, v) in fields.clone() {
        if let Some(i) = standard_slot(k) {
            if let Some(slot) = overrides.get_mut(i) {
                *slot = Some(v);
            }
        }
    }
    buf.push(b'{');
    for (i, (key, default)) in STANDARD_KEYS.iter().zip(standard).enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_json_str(buf, key);
        buf.push(b':');
        match overrides.get(i).copied().flatten() {
            Some(v) => push_json_value(buf, v),
            None => push_json_str(buf, default),
        }
    }
    for (k, v) in fields {
        if standard_slot(k).is_some() {
            continue;
        }
        push_key(buf, k);
        push_json_value(buf, v);
    }
    buf.push(b'}');
}

fn human_line<'a>(
    buf: &mut Vec<u8>,
    timestamp: &str,
    level: &str,
    logger: &str,
    message: &str,
    fields: impl Iterator<Item = (&'a str, &'a Value)>,
) {
    let _ = write!(buf, "{timestamp} {level:<8} {logger}: {message}");
    for (k, v) in fields {
        match v {
            Value::String(s) => {
                let _ = write!(buf, " {k}={s}");
            }
            Value::Null => {}
            other => {
                let _ = write!(buf, " {k}={other}");
            }
        }
    }
}

thread_local! {
    /// Each thread formats its lines in one reused buffer.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(2048));
}

/// Write one record: `fields` are added after the standard keys, in their order (keys unique).
pub fn write_record<'a, I>(level: &str, logger: &str, message: &str, fields: I)
where
    I: IntoIterator<Item = (&'a str, &'a Value)>,
    I::IntoIter: Clone,
{
    let Some(sink) = SINK.get() else {
        return;
    };
    let timestamp = rfc3339_micros(&chrono::Utc::now());
    let format = |line: &mut Vec<u8>| {
        line.clear();
        if sink.json {
            json_line(
                line,
                [message, level, logger, &timestamp, "mlops", "main"],
                fields,
            );
        } else {
            human_line(line, &timestamp, level, logger, message, fields.into_iter());
        }
        line.push(b'\n');
        let mut writer = sink.writer.clone();
        let _ = writer.write_all(line);
    };
    let mut format = Some(format);
    let _ = LINE.try_with(|line| {
        if let Ok(mut line) = line.try_borrow_mut() {
            if let Some(format) = format.take() {
                format(&mut line);
            }
        }
    });
    // The thread's buffer is in use or gone (thread exit): use a fresh one.
    if let Some(format) = format {
        format(&mut Vec::with_capacity(1024));
    }
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
        let mut visitor = CorrelationIdVisitor(None);
        attrs.record(&mut visitor);
        if let Some(cid) = visitor.0 {
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
        write_record(
            level_name(*meta.level()),
            meta.target(),
            &message,
            fields.iter().map(|(k, v)| (k.as_str(), v)),
        );
    }
}

/// Picks a span's `correlation_id` (as the fields visitor would render it), ignoring the rest.
struct CorrelationIdVisitor(Option<String>);

impl Visit for CorrelationIdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "correlation_id" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "correlation_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    // Numbers and booleans are not strings: not a correlation id, as before.
    fn record_bool(&mut self, field: &Field, _: bool) {
        self.not_a_string(field);
    }
    fn record_i64(&mut self, field: &Field, _: i64) {
        self.not_a_string(field);
    }
    fn record_u64(&mut self, field: &Field, _: u64) {
        self.not_a_string(field);
    }
    fn record_f64(&mut self, field: &Field, _: f64) {
        self.not_a_string(field);
    }
}

impl CorrelationIdVisitor {
    fn not_a_string(&mut self, field: &Field) {
        if field.name() == "correlation_id" {
            self.0 = None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the line used to be: the standard keys in a map, extended with the fields.
    fn via_map(standard: [&str; 6], fields: &Fields) -> String {
        let mut record = Map::new();
        for (k, v) in STANDARD_KEYS.iter().zip(standard) {
            record.insert(k.to_string(), Value::String(v.to_string()));
        }
        for (k, v) in fields.iter() {
            record.insert(k.to_string(), v.clone());
        }
        serde_json::to_string(&Value::Object(record)).unwrap()
    }

    fn direct(standard: [&str; 6], fields: &Fields) -> String {
        let mut buf = Vec::new();
        json_line(&mut buf, standard, fields.iter());
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn json_line_is_byte_identical_to_the_map() {
        let standard = [
            "127.0.0.1:5 - \"POST /v2/x?a=\\u{1} HTTP/1.1\" 200 \u{1}\t\"é",
            "info",
            "api.access",
            "2026-01-01T00:00:00.000001Z",
            "mlops",
            "main",
        ];
        let mut fields = Fields::with_capacity(4);
        fields.set("url", json!("http://h/p?q=\"x\"\\y\n"));
        fields.set("status_code", Value::Null);
        fields.set("duration_s", json!(0.1 + 0.2));
        fields.set("client_port", json!(65535u16));
        fields.set("neg", json!(-3i64));
        fields.set("big", json!(1.0e300));
        fields.set("nan", Value::from(f64::NAN));
        fields.set("flag", json!(true));
        fields.set("off", json!(false));
        fields.set("max", json!(u64::MAX));
        fields.set("min", json!(i64::MIN));
        fields.set("zero", json!(0));
        fields.set("float_int", json!(3.0));
        fields.set("odd \"key\"\n", json!("v"));
        fields.set("events", json!(["a", {"b": [1, 2.5, null]}]));
        fields.set("status_code", json!(200));
        assert_eq!(direct(standard, &fields), via_map(standard, &fields));
        // A field named like a standard key replaces that value in place.
        fields.set("type", json!({"nested": "x"}));
        fields.set("message", json!(7));
        assert_eq!(direct(standard, &fields), via_map(standard, &fields));
        assert!(direct(standard, &fields).starts_with("{\"message\":7,\"level\""));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        let mut all = String::new();
        for c in (0u32..0x100)
            .chain([0x2028, 0x1F600])
            .filter_map(char::from_u32)
        {
            all.push(c);
        }
        // Escapes at every offset of a word, between, before and after clean runs.
        let mut shifted = Vec::new();
        for pad in 0..17 {
            for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "\u{7f}", " "] {
                shifted.push(format!(
                    "{}{special}{}{special}{special}",
                    "a".repeat(pad),
                    "b".repeat(17 - pad)
                ));
            }
        }
        let fixed = ["", "plain", "a\"b", "back\\slash", "\u{7f}é", all.as_str()];
        for s in fixed
            .iter()
            .copied()
            .chain(shifted.iter().map(String::as_str))
        {
            let mut buf = Vec::new();
            push_json_str(&mut buf, s);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn the_word_check_agrees_with_the_byte_table() {
        let needs = |b: u8| ESCAPE[usize::from(b)] != 0;
        // Every byte at every position, and every pair of neighbours (borrows between bytes).
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                assert_eq!(word_needs_escape(u64::from_le_bytes(word)), needs(b));
            }
        }
        for pos in 0..7 {
            for lo in 0..=255u8 {
                for hi in 0..=255u8 {
                    let mut word = [b'a'; 8];
                    word[pos] = lo;
                    word[pos + 1] = hi;
                    assert_eq!(
                        word_needs_escape(u64::from_le_bytes(word)),
                        needs(lo) || needs(hi),
                        "{lo:#x} {hi:#x} at {pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn setting_a_key_again_keeps_its_place() {
        let mut fields = Fields::default();
        fields.set("a", json!(1));
        fields.set("b", json!(2));
        fields.set("a", json!(3));
        let mut other = Fields::default();
        other.set("c", json!(4));
        other.set("b", json!(5));
        fields.merge(other);
        let keys: Vec<_> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(keys, ["a=3", "b=5", "c=4"]);
        assert_eq!(fields.remove("b"), Some(json!(5)));
        assert_eq!(fields.get("b"), None);
        fields.set("b", json!(6));
        let keys: Vec<_> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(keys, ["a=3", "c=4", "b=6"]);
        // Many keys, some sharing a filter bit: every one is found and replaced in place.
        let names: Vec<&'static str> = (0..300)
            .map(|i| &*Box::leak(format!("key_{i}").into_boxed_str()))
            .collect();
        let mut many = Fields::default();
        for (i, name) in names.iter().enumerate() {
            many.set(name, json!(i));
        }
        for (i, name) in names.iter().enumerate().rev() {
            many.set(name, json!(i * 2));
        }
        assert_eq!(many.iter().count(), 300);
        for (i, (k, v)) in many.iter().enumerate() {
            assert_eq!((k, v), (names[i], &json!(i * 2)));
        }
    }
}
