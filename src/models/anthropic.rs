//! Anthropic: the Messages API (`POST /v1/messages`) and the legacy Text Completions API
//! (`POST /v1/complete`), whole and streamed.
//!
//! Requests carry `x-api-key: $ANTHROPIC_API_KEY` and `anthropic-version: 2023-06-01` and go to
//! `$ANTHROPIC_BASE_URL` (default `https://api.anthropic.com`), as the official SDKs do. The
//! original's defaults apply where the call leaves a parameter unset (or sets it to a falsy value,
//! a quirk of its option merging): Messages `max_tokens` 4096, legacy `max_tokens_to_sample` 2048,
//! temperature 0.2. A `system` message becomes the `system` field.
//!
//! Streams: Messages yields `content_block_delta` text; usage comes from `message_start`
//! (`input_tokens`) and `message_delta` (`output_tokens`) and is handed on with the last chunk at
//! `message_stop`. An `error` event mid-stream (`overloaded_error`, ...) ends the call with a
//! [`ModelErrorKind::Stream`] error. The legacy stream yields `completion` events and ends when one
//! carries a `stop_reason`; it reports no usage.

use std::borrow::Cow;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::http_client::{join_url, Upstream};
use super::sse::{closed_early, frames_to_chunks, lazy, FrameHandler, SseDecoder, SseEvent, Step};
use super::{
    ChunkStream, ModelChunk, ModelError, ModelErrorKind, ModelMetadata, ModelProvider,
    ModelRequest, Prompt, Usage,
};

/// `anthropic-version` header value.
pub const API_VERSION: &str = "2023-06-01";
const MESSAGES_MAX_TOKENS: u32 = 4096;
const LEGACY_MAX_TOKENS: u32 = 2048;
const TEMPERATURE: f64 = 0.2;

/// The Anthropic upstream shared by every Anthropic model.
///
/// The endpoint URLs and the key's header value are made once here rather than per call (reqwest
/// would parse the URL string and validate the header value on every request). Should either not
/// parse, the call passes the raw string instead, so that reqwest reports it as it always did.
#[derive(Debug)]
pub struct AnthropicClient {
    upstream: Upstream,
    messages: Endpoint,
    complete: Endpoint,
    api_key: Option<String>,
    api_key_header: Option<HeaderValue>,
}

/// An endpoint's URL, joined once, and parsed when it parses.
#[derive(Debug)]
struct Endpoint {
    text: String,
    url: Option<reqwest::Url>,
}

impl Endpoint {
    fn new(base_url: &str, path: &str) -> Self {
        let text = join_url(base_url, path);
        let url = reqwest::Url::parse(&text).ok();
        Self { text, url }
    }

    /// A POST to the endpoint.
    fn post(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        match &self.url {
            Some(url) => http.post(url.clone()),
            None => http.post(&self.text),
        }
    }
}

impl AnthropicClient {
    /// A client for `base_url` with `api_key`.
    pub fn new(upstream: Upstream, base_url: &str, api_key: Option<String>) -> Self {
        Self {
            upstream: upstream.with_secret(api_key.as_deref()),
            messages: Endpoint::new(base_url, "v1/messages"),
            complete: Endpoint::new(base_url, "v1/complete"),
            api_key_header: api_key
                .as_deref()
                .and_then(|k| HeaderValue::from_str(k).ok()),
            api_key,
        }
    }
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// Which Anthropic API a model is called through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/messages`.
    Messages,
    /// `/v1/complete`.
    Legacy,
}

/// One Anthropic model.
#[derive(Debug, Clone)]
pub struct AnthropicModel {
    client: Arc<AnthropicClient>,
    api: Api,
    metadata: ModelMetadata,
}

impl AnthropicModel {
    /// `model` through `api`.
    pub fn new(client: Arc<AnthropicClient>, api: Api, model: &str) -> Self {
        Self {
            client,
            api,
            metadata: ModelMetadata::new("anthropic", model),
        }
    }
}

fn positive_u32(v: Option<u32>, default: u32) -> u32 {
    v.filter(|v| *v > 0).unwrap_or(default)
}

fn positive_f64(v: Option<f64>, default: f64) -> f64 {
    v.filter(|v| *v != 0.0).unwrap_or(default)
}

/// The Messages API body, as a value (Claude on Vertex edits it).
pub fn messages_body(model: &str, request: &ModelRequest, stream: bool) -> Value {
    serde_json::to_value(MessagesBody::new(model, request, stream)).unwrap_or_default()
}

/// The Messages API body, serialised from borrowed fields: no map, no per-key hashing, no
/// copies of the prompt. Fields in the order the original sends them.
#[derive(Debug, Serialize)]
pub struct MessagesBody<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<RoleContent<'a>>,
    temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

/// One message of a Messages body.
#[derive(Debug, Serialize)]
struct RoleContent<'a> {
    role: &'a str,
    content: &'a str,
}

impl<'a> MessagesBody<'a> {
    /// The body for `request` to `model`: the original's defaults for falsy parameters, system
    /// messages joined into `system`.
    pub fn new(model: &'a str, request: &'a ModelRequest, stream: bool) -> Self {
        let mut system: Vec<&str> = Vec::new();
        let messages = match &request.prompt {
            Prompt::Chat(messages) => messages
                .iter()
                .filter_map(|m| {
                    if m.role == "system" {
                        system.push(&m.content);
                        None
                    } else {
                        Some(RoleContent {
                            role: &m.role,
                            content: &m.content,
                        })
                    }
                })
                .collect(),
            Prompt::Text { prefix, .. } => vec![RoleContent {
                role: "user",
                content: prefix,
            }],
        };
        Self {
            model,
            max_tokens: positive_u32(request.params.max_tokens, MESSAGES_MAX_TOKENS),
            system: (!system.is_empty()).then(|| system.join("\n")),
            messages,
            temperature: positive_f64(request.params.temperature, TEMPERATURE),
            top_p: request.params.top_p.filter(|v| *v != 0.0),
            top_k: request.params.top_k.filter(|v| *v != 0),
            stop_sequences: &request.params.stop,
            stream,
        }
    }
}

/// The legacy Text Completions body.
pub fn legacy_body(model: &str, request: &ModelRequest, stream: bool) -> Value {
    let prompt = match &request.prompt {
        Prompt::Text { prefix, .. } => prefix.clone(),
        Prompt::Chat(messages) => {
            let mut text = String::new();
            for m in messages {
                let role = if m.role == "assistant" {
                    "Assistant"
                } else {
                    "Human"
                };
                text.push_str(&format!("\n\n{role}: {}", m.content));
            }
            text.push_str("\n\nAssistant:");
            text
        }
    };
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("prompt".into(), json!(prompt));
    body.insert(
        "max_tokens_to_sample".into(),
        json!(positive_u32(request.params.max_tokens, LEGACY_MAX_TOKENS)),
    );
    body.insert(
        "temperature".into(),
        json!(positive_f64(request.params.temperature, TEMPERATURE)),
    );
    if let Some(top_p) = request.params.top_p.filter(|v| *v != 0.0) {
        body.insert("top_p".into(), json!(top_p));
    }
    if let Some(top_k) = request.params.top_k.filter(|v| *v != 0) {
        body.insert("top_k".into(), json!(top_k));
    }
    if !request.params.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.params.stop));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Value::Object(body)
}

fn protocol(message: impl Into<String>) -> ModelError {
    ModelError::new(ModelErrorKind::Protocol, message)
}

fn parse(data: &str) -> Result<Value, ModelError> {
    serde_json::from_str(data).map_err(|e| protocol(format!("anthropic sent invalid JSON: {e}")))
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// An Anthropic `error` payload as a model error.
pub(crate) fn stream_error(v: &Value) -> ModelError {
    let kind = v["error"]["type"].as_str().unwrap_or("error");
    let message = v["error"]["message"].as_str().unwrap_or("");
    ModelError::new(
        ModelErrorKind::Stream,
        format!("anthropic stream error {kind}: {message}"),
    )
}

/// A whole Messages answer.
pub fn parse_messages_response(v: &Value) -> ModelChunk {
    let text: String = v["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect()
        })
        .unwrap_or_default();
    ModelChunk {
        text,
        usage: Some(Usage {
            input_tokens: u64_at(v, &["usage", "input_tokens"]).unwrap_or(0),
            output_tokens: u64_at(v, &["usage", "output_tokens"]).unwrap_or(0),
        }),
        finish_reason: v["stop_reason"].as_str().map(str::to_string),
        ..ModelChunk::default()
    }
}

/// The fields of a whole Messages answer the gateway reads, borrowed from the body where it has
/// no escapes. Parsing into these rather than a `serde_json::Value` skips building (and
/// SipHash-ing) a map per object: the hot path's single largest cost in the profile.
#[derive(Deserialize)]
struct AnswerFields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Vec<BlockFields<'a>>,
    #[serde(default)]
    usage: Option<UsageFields>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct BlockFields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageFields {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// A `content_block_delta` event's text.
#[derive(Deserialize)]
struct DeltaFields<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaText<'a>>,
}

#[derive(Deserialize)]
struct DeltaText<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// The text of a text delta in the exact bytes Anthropic sends,
/// `{"type":"content_block_delta","index":<n>,"delta":{"type":"text_delta","text":"<text>"}}`
/// (Claude on Vertex pads it with spaces before the last `}`), when the text needs no
/// unescaping; `None` for any other form, which [`DeltaFields`] reads. A stream is mostly such
/// frames, and matching them costs a tenth of a JSON parse.
fn canonical_text_delta(data: &str) -> Option<&str> {
    let rest = data.strip_prefix(r#"{"type":"content_block_delta","index":"#)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    // A JSON number: at least one digit, no leading zero.
    if digits == 0 || (digits > 1 && rest.starts_with('0')) {
        return None;
    }
    let rest = rest
        .get(digits..)?
        .strip_prefix(r#","delta":{"type":"text_delta","text":""#)?;
    // A plain text has no quote, so it ends at the first one; then the delta's `}`, the padding
    // and the event's `}`.
    let (text, tail) = rest.split_at(rest.find('"')?);
    if tail.strip_prefix("\"}")?.trim_start_matches(' ') != "}" {
        return None;
    }
    // A backslash or a control character means escapes (or invalid JSON): parse it.
    let plain = !text.bytes().any(|b| b == b'\\' || b < 0x20);
    plain.then_some(text)
}

/// A whole Messages answer read through [`AnswerFields`]; `None` when the body is an `error`
/// or does not have the expected shape, and the caller reads it as a [`Value`] (which gives the
/// same chunk for every well-formed answer and the usual errors otherwise).
pub(crate) fn fast_messages_answer(bytes: &[u8]) -> Option<ModelChunk> {
    let answer: AnswerFields<'_> = serde_json::from_slice(bytes).ok()?;
    if answer.kind.as_deref() == Some("error") {
        return None;
    }
    let text: String = answer
        .content
        .iter()
        .filter(|b| b.kind.as_deref() == Some("text"))
        .filter_map(|b| b.text.as_deref())
        .collect();
    let usage = answer.usage.unwrap_or(UsageFields {
        input_tokens: None,
        output_tokens: None,
    });
    Some(ModelChunk {
        text,
        usage: Some(Usage {
            input_tokens: usage.input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens.unwrap_or(0),
        }),
        finish_reason: answer.stop_reason.map(Cow::into_owned),
        ..ModelChunk::default()
    })
}

/// A whole answer as a [`Value`]: `upstream`'s invalid JSON and `error` bodies are errors.
fn parse_answer(upstream: &str, bytes: &[u8]) -> Result<Value, ModelError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| protocol(format!("{upstream} sent invalid JSON: {e}")))?;
    if v["type"] == "error" {
        return Err(stream_error(&v));
    }
    Ok(v)
}

/// A whole Messages answer from `upstream` (Anthropic, or Claude on Vertex): read through the
/// typed fields when it has the usual shape, as a [`Value`] otherwise.
pub(crate) fn messages_answer(upstream: &str, bytes: &[u8]) -> Result<ModelChunk, ModelError> {
    match fast_messages_answer(bytes) {
        Some(chunk) => Ok(chunk),
        None => parse_answer(upstream, bytes).map(|v| parse_messages_response(&v)),
    }
}

/// The Messages stream: text deltas, usage from `message_start` and `message_delta` handed on at
/// `message_stop`, an `error` event as a stream error. Also what Claude on Vertex streams.
#[derive(Debug, Default)]
pub(crate) struct MessagesStream {
    usage: Usage,
}

impl FrameHandler for MessagesStream {
    type Frame = SseEvent;

    fn frame(&mut self, event: SseEvent) -> Step {
        let kind = event.event.as_str();
        if matches!(kind, "ping" | "content_block_start" | "content_block_stop") {
            return Step::Skip;
        }
        // Most frames of a stream are text deltas: read them without building a `Value`.
        if kind == "content_block_delta" {
            if let Some(text) = canonical_text_delta(&event.data) {
                return match text {
                    "" => Step::Skip,
                    text => Step::Chunk(ModelChunk::text(text)),
                };
            }
            if let Ok(frame) = serde_json::from_str::<DeltaFields<'_>>(&event.data) {
                return match frame.delta.and_then(|d| d.text) {
                    Some(text) if !text.is_empty() => {
                        Step::Chunk(ModelChunk::text(text.into_owned()))
                    }
                    _ => Step::Skip,
                };
            }
        }
        let v = match parse(&event.data) {
            Ok(v) => v,
            Err(e) => return Step::Fail(e),
        };
        let kind = if kind.is_empty() {
            v["type"].as_str().unwrap_or("")
        } else {
            kind
        };
        match kind {
            "message_start" => {
                self.usage.input_tokens =
                    u64_at(&v, &["message", "usage", "input_tokens"]).unwrap_or(0);
                self.usage.output_tokens =
                    u64_at(&v, &["message", "usage", "output_tokens"]).unwrap_or(0);
                Step::Skip
            }
            "content_block_delta" => match v["delta"]["text"].as_str() {
                Some(text) if !text.is_empty() => Step::Chunk(ModelChunk::text(text)),
                _ => Step::Skip,
            },
            "message_delta" => {
                if let Some(out) = u64_at(&v, &["usage", "output_tokens"]) {
                    self.usage.output_tokens = out;
                }
                if let Some(input) = u64_at(&v, &["usage", "input_tokens"]) {
                    self.usage.input_tokens = input;
                }
                Step::Skip
            }
            "message_stop" => Step::End(Some(ModelChunk {
                usage: Some(self.usage),
                ..ModelChunk::default()
            })),
            "error" => Step::Fail(stream_error(&v)),
            _ => Step::Skip,
        }
    }

    fn eof(&mut self) -> Result<Option<ModelChunk>, ModelError> {
        Err(closed_early("anthropic"))
    }
}

/// The legacy Text Completions stream.
#[derive(Debug, Default)]
struct LegacyStream;

impl FrameHandler for LegacyStream {
    type Frame = SseEvent;

    fn frame(&mut self, event: SseEvent) -> Step {
        if event.event == "ping" {
            return Step::Skip;
        }
        let v = match parse(&event.data) {
            Ok(v) => v,
            Err(e) => return Step::Fail(e),
        };
        if event.event == "error" || v["type"] == "error" {
            return Step::Fail(stream_error(&v));
        }
        let text = v["completion"].as_str().unwrap_or("");
        let chunk = ModelChunk {
            text: text.to_string(),
            finish_reason: v["stop_reason"].as_str().map(str::to_string),
            ..ModelChunk::default()
        };
        if chunk.finish_reason.is_some() {
            Step::End(Some(chunk))
        } else if text.is_empty() {
            Step::Skip
        } else {
            Step::Chunk(chunk)
        }
    }

    fn eof(&mut self) -> Result<Option<ModelChunk>, ModelError> {
        Err(closed_early("anthropic"))
    }
}

impl AnthropicModel {
    async fn start(self, request: ModelRequest) -> Result<ChunkStream, ModelError> {
        let client = &self.client;
        let Some(key) = client.api_key.clone() else {
            return Err(ModelError::new(
                ModelErrorKind::Refused,
                "ANTHROPIC_API_KEY is not set",
            ));
        };
        let model = self.metadata.name.as_str();
        let stream = request.stream;
        let (endpoint, body) = match self.api {
            Api::Messages => (
                &client.messages,
                serde_json::to_vec(&MessagesBody::new(model, &request, stream)),
            ),
            Api::Legacy => (
                &client.complete,
                serde_json::to_vec(&legacy_body(model, &request, stream)),
            ),
        };
        let body = bytes::Bytes::from(body.map_err(|e| protocol(e.to_string()))?);
        let accept = HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        });
        let response = client
            .upstream
            .send(|http| {
                let builder = endpoint.post(http);
                let builder = match &client.api_key_header {
                    Some(value) => builder.header(X_API_KEY, value.clone()),
                    None => builder.header(X_API_KEY, key.as_str()),
                };
                builder
                    .header(ANTHROPIC_VERSION, HeaderValue::from_static(API_VERSION))
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .header(ACCEPT, accept.clone())
                    .body(body.clone())
            })
            .await?;
        if stream {
            return Ok(match self.api {
                Api::Messages => frames_to_chunks(
                    "anthropic",
                    response,
                    SseDecoder::new(),
                    MessagesStream::default(),
                ),
                Api::Legacy => {
                    frames_to_chunks("anthropic", response, SseDecoder::new(), LegacyStream)
                }
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| super::http_client::body_error("anthropic", &e))?;
        let chunk = match self.api {
            Api::Messages => messages_answer("anthropic", &bytes)?,
            Api::Legacy => {
                let v = parse_answer("anthropic", &bytes)?;
                ModelChunk {
                    text: v["completion"].as_str().unwrap_or("").to_string(),
                    finish_reason: v["stop_reason"].as_str().map(str::to_string),
                    ..ModelChunk::default()
                }
            }
        };
        Ok(futures::stream::iter([Ok(chunk)]).boxed())
    }
}

use futures::StreamExt;

impl ModelProvider for AnthropicModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn call(&self, request: ModelRequest) -> ChunkStream {
        lazy(self.clone().start(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Message;

    #[test]
    fn the_typed_answer_reads_as_the_value_path_does() {
        let bodies = [
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-sonnet-20240620","content":[{"type":"text","text":"def f():\n    return \"\u00e9\""}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":7}}"#,
            r#"{"type":"message","content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t","name":"x","input":{}},{"type":"text","text":"b"}],"stop_reason":"max_tokens","usage":{"input_tokens":1}}"#,
            r#"{"type":"message","content":[],"stop_reason":null}"#,
        ];
        for body in bodies {
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                fast_messages_answer(body.as_bytes()),
                Some(parse_messages_response(&v)),
                "{body}"
            );
        }
        // Errors and odd shapes go to the Value path.
        let error =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(fast_messages_answer(error.as_bytes()), None);
        assert_eq!(fast_messages_answer(br#"{"content":"text"}"#), None);
        assert_eq!(fast_messages_answer(b"not json"), None);
    }

    #[test]
    fn text_deltas_read_the_same_with_and_without_escapes() {
        let mut stream = MessagesStream::default();
        let frame = |data: &str| SseEvent {
            event: "content_block_delta".into(),
            data: data.into(),
        };
        let texts: Vec<Option<String>> = [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"plain"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\n\"b\" \u00e9"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
        ]
        .iter()
        .map(|d| match stream.frame(frame(d)) {
            Step::Chunk(c) => Some(c.text),
            _ => None,
        })
        .collect();
        assert_eq!(
            texts,
            [Some("plain".into()), Some("a\n\"b\" é".into()), None, None]
        );
        assert!(matches!(stream.frame(frame("{broken")), Step::Fail(_)));
    }

    #[test]
    fn canonical_text_deltas_match_the_typed_reading() {
        let typed = |data: &str| {
            serde_json::from_str::<DeltaFields<'_>>(data)
                .ok()
                .and_then(|f| f.delta)
                .and_then(|d| d.text)
                .map(Cow::into_owned)
        };
        let canonical = [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"def hello():"}}"#,
            r#"{"type":"content_block_delta","index":12,"delta":{"type":"text_delta","text":"héllo ✓"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"padded"}     }"#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\u{7f}\u{2028}é\"}}",
        ];
        for data in canonical {
            assert_eq!(
                canonical_text_delta(data).map(str::to_string),
                typed(data),
                "{data}"
            );
        }
        // Everything else is left to the JSON parser.
        for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\nb"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"b"}}"#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\tb\"}}",
            r#"{"type":"content_block_delta","index":,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type": "content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}} "#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}\t}",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"b"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\/b"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"x":1}"#,
        ] {
            assert_eq!(canonical_text_delta(data), None, "{data}");
        }
    }

    #[test]
    fn messages_body_defaults_and_system() {
        let mut r = ModelRequest::new(
            Prompt::Chat(vec![
                Message::new("system", "be brief"),
                Message::new("user", "hi"),
            ]),
            true,
        );
        r.params.max_tokens = Some(0);
        r.params.stop = vec!["</new_code>".into()];
        let b = messages_body("claude-3-haiku-20240307", &r, true);
        assert_eq!(b["max_tokens"], 4096);
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(b["stop_sequences"], json!(["</new_code>"]));
        assert_eq!(b["stream"], true);
    }

    #[test]
    fn the_messages_body_is_byte_exact() {
        let mut r = ModelRequest::new(
            Prompt::Chat(vec![
                Message::new("system", "be brief"),
                Message::new("user", "q\"x\n"),
                Message::new("system", "and kind"),
                Message::new("assistant", "a"),
            ]),
            true,
        );
        r.params.top_p = Some(0.95);
        r.params.top_k = Some(40);
        r.params.temperature = Some(0.0);
        r.params.stop = vec!["\n\n".into()];
        let body = serde_json::to_string(&MessagesBody::new("m", &r, true)).unwrap();
        assert_eq!(
            body,
            r#"{"model":"m","max_tokens":4096,"system":"be brief\nand kind","messages":[{"role":"user","content":"q\"x\n"},{"role":"assistant","content":"a"}],"temperature":0.2,"top_p":0.95,"top_k":40,"stop_sequences":["\n\n"],"stream":true}"#
        );
        assert_eq!(body, messages_body("m", &r, true).to_string());
        let plain = ModelRequest::new(
            Prompt::Text {
                prefix: "def f():".into(),
                suffix: None,
            },
            false,
        );
        let body = serde_json::to_string(&MessagesBody::new("m", &plain, false)).unwrap();
        assert_eq!(
            body,
            r#"{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":"def f():"}],"temperature":0.2}"#
        );
        assert_eq!(body, messages_body("m", &plain, false).to_string());
    }

    #[test]
    fn legacy_body_defaults() {
        let r = ModelRequest::new(
            Prompt::Text {
                prefix: "\n\nHuman: x\n\nAssistant:".into(),
                suffix: None,
            },
            false,
        );
        let b = legacy_body("claude-2.0", &r, false);
        assert_eq!(b["max_tokens_to_sample"], 2048);
        assert_eq!(b["prompt"], "\n\nHuman: x\n\nAssistant:");
        assert!(b.get("stream").is_none());
    }

    #[test]
    fn stream_handler_usage_and_error() {
        let mut h = MessagesStream::default();
        let ev = |e: &str, d: &str| SseEvent {
            event: e.into(),
            data: d.into(),
        };
        assert!(matches!(
            h.frame(ev(
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#
            )),
            Step::Skip
        ));
        match h.frame(ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        )) {
            Step::Chunk(c) => assert_eq!(c.text, "Hi"),
            s => panic!("{s:?}"),
        }
        h.frame(ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
        ));
        match h.frame(ev("message_stop", r#"{"type":"message_stop"}"#)) {
            Step::End(Some(c)) => assert_eq!(
                c.usage,
                Some(Usage {
                    input_tokens: 25,
                    output_tokens: 15
                })
            ),
            s => panic!("{s:?}"),
        }
        match h.frame(ev(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )) {
            Step::Fail(e) => {
                assert_eq!(e.kind, ModelErrorKind::Stream);
                assert!(e.message.contains("overloaded_error"));
            }
            s => panic!("{s:?}"),
        }
        // The same overload as Claude on Vertex relays it: `"details": null`, padded
        // (langgenius/dify#7122; the padding as tests/providers_vertex_claude.rs records it).
        match h.frame(ev(
            "error",
            r#"{"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"}              }"#,
        )) {
            Step::Fail(e) => assert_eq!(
                e,
                ModelError::new(
                    ModelErrorKind::Stream,
                    "anthropic stream error overloaded_error: Overloaded"
                )
            ),
            s => panic!("{s:?}"),
        }
    }
}
