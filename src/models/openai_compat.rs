//! OpenAI-compatible chat and text completions: self-hosted models (vLLM, Ollama, llama.cpp,
//! LiteLLM proxies), Fireworks, and Mistral's Codestral, whole and streamed.
//!
//! One [`OpenAiCompatModel`] is one model at one base URL. The wire paths are
//! `<base>/chat/completions`, `<base>/completions`, and for Codestral's fill-in-the-middle API
//! `<base>/fim/completions`. Streams are SSE `data:` frames ending in `data: [DONE]`; the gateway
//! always asks for usage (`stream_options.include_usage`), which arrives in a last frame with
//! empty `choices`; servers that ignore it are counted as [`OpenAiStream`] says. A `{"error": ...}` frame (vLLM, llama.cpp) ends the call with a stream error;
//! a body that ends before `[DONE]` is an early close.
//!
//! The model sent upstream follows the original's `model_identifier` rule: `provider/model` sends
//! `model`, an identifier without a slash is sent as is, and without an identifier the model name
//! is sent. A chat prompt sent to a text API is flattened to its messages' text (what LiteLLM's
//! `text-completion-*` routes do with a single user message, as Fireworks' FIM prompt is).

use std::sync::Arc;

use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::http_client::{body_error, join_url, Upstream};
use super::sse::{closed_early, frames_to_chunks, lazy, FrameHandler, SseDecoder, SseEvent, Step};
use super::{
    ChunkStream, ModelChunk, ModelError, ModelErrorKind, ModelMetadata, ModelProvider,
    ModelRequest, Prompt, Usage,
};

/// Which API of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/chat/completions`.
    Chat,
    /// `/completions`.
    Text,
    /// `/fim/completions` (Codestral): `prompt` and `suffix`, chat-shaped answers.
    Fim,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "chat/completions",
            Api::Text => "completions",
            Api::Fim => "fim/completions",
        }
    }
}

/// One OpenAI-compatible model at one endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiCompatModel {
    upstream: Arc<Upstream>,
    base_url: String,
    api_key: Option<String>,
    api: Api,
    /// The `model` field sent upstream.
    model: String,
    headers: Vec<(String, String)>,
    /// Stop sequences used when the call gives none.
    default_stop: Vec<String>,
    /// Call without streaming even when the client streams (`AIGW_CUSTOM_MODELS__DISABLE_STREAMING`):
    /// the answer then arrives as one chunk.
    whole_only: bool,
    metadata: ModelMetadata,
}

impl OpenAiCompatModel {
    /// `model` (reported as `engine`/`name`) at `base_url` through `api`.
    pub fn new(
        upstream: Arc<Upstream>,
        metadata: ModelMetadata,
        base_url: &str,
        api: Api,
        model: &str,
    ) -> Self {
        Self {
            upstream,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: None,
            api,
            model: model.to_string(),
            headers: Vec::new(),
            default_stop: Vec::new(),
            whole_only: false,
            metadata,
        }
    }

    /// Never stream upstream.
    pub fn whole_only(mut self) -> Self {
        self.whole_only = true;
        self
    }

    /// Send `Authorization: Bearer <key>`.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// Add a header to every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Stop sequences for calls that give none.
    pub fn with_default_stop(mut self, stop: &[&str]) -> Self {
        self.default_stop = stop.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The request body.
    pub fn body(&self, request: &ModelRequest, stream: bool) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        match (&request.prompt, self.api) {
            (Prompt::Chat(messages), Api::Chat) => {
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| json!({"role": m.role, "content": m.content}))
                    .collect();
                body.insert("messages".into(), Value::Array(messages));
            }
            (Prompt::Text { prefix, suffix }, Api::Chat) => {
                let mut content = prefix.clone();
                if let Some(suffix) = suffix.as_deref().filter(|s| !s.is_empty()) {
                    content.push_str(suffix);
                }
                body.insert(
                    "messages".into(),
                    json!([{"role": "user", "content": content}]),
                );
            }
            (Prompt::Text { prefix, suffix }, Api::Text | Api::Fim) => {
                body.insert("prompt".into(), json!(prefix));
                if let Some(suffix) = suffix.as_deref().filter(|s| !s.is_empty()) {
                    body.insert("suffix".into(), json!(suffix));
                }
            }
            (Prompt::Chat(messages), Api::Text | Api::Fim) => {
                let text: String = messages.iter().map(|m| m.content.as_str()).collect();
                body.insert("prompt".into(), json!(text));
            }
        }
        let p = &request.params;
        if let Some(n) = p.max_tokens.filter(|n| *n > 0) {
            body.insert("max_tokens".into(), json!(n));
        }
        if let Some(t) = p.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(t) = p.top_p {
            body.insert("top_p".into(), json!(t));
        }
        let stop = if p.stop.is_empty() {
            &self.default_stop
        } else {
            &p.stop
        };
        if !stop.is_empty() {
            body.insert("stop".into(), json!(stop));
        }
        if let Some(n) = p.candidate_count.filter(|n| *n > 1) {
            body.insert("n".into(), json!(n));
        }
        if stream {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(body)
    }

    async fn start(self, request: ModelRequest) -> Result<ChunkStream, ModelError> {
        let stream = request.stream && !self.whole_only;
        let url = join_url(&self.base_url, self.api.path());
        let body = bytes::Bytes::from(
            serde_json::to_vec(&self.body(&request, stream))
                .map_err(|e| ModelError::new(ModelErrorKind::Protocol, e.to_string()))?,
        );
        let name = self.upstream.name;
        let key = self.api_key.clone();
        let secrets: Vec<&str> = key.as_deref().into_iter().collect();
        let response = self
            .upstream
            .send_redacting(
                |http| {
                    let mut b = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    if let Some(key) = &key {
                        b = b.bearer_auth(key);
                    }
                    for (k, v) in &self.headers {
                        b = b.header(k, v);
                    }
                    b
                },
                &secrets,
            )
            .await?;
        if stream {
            return Ok(frames_to_chunks(
                name,
                response,
                SseDecoder::new(),
                OpenAiStream::new(name),
            ));
        }
        let bytes = response.bytes().await.map_err(|e| body_error(name, &e))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ModelError::new(
                ModelErrorKind::Protocol,
                format!("{name} sent invalid JSON: {e}"),
            )
        })?;
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(error_frame(name, &v));
        }
        Ok(futures::stream::iter(parse_whole(&v).into_iter().map(Ok)).boxed())
    }
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

fn choice_text(choice: &Value) -> &str {
    choice["text"]
        .as_str()
        .or_else(|| choice["message"]["content"].as_str())
        .or_else(|| choice["delta"]["content"].as_str())
        .unwrap_or("")
}

/// The chunks of a whole answer: one per choice, usage on the last.
pub fn parse_whole(v: &Value) -> Vec<ModelChunk> {
    let mut chunks: Vec<ModelChunk> = v["choices"]
        .as_array()
        .map(|choices| {
            choices
                .iter()
                .enumerate()
                .map(|(i, c)| ModelChunk {
                    text: choice_text(c).to_string(),
                    candidate: c["index"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(i as u32),
                    finish_reason: c["finish_reason"].as_str().map(str::to_string),
                    ..ModelChunk::default()
                })
                .collect()
        })
        .unwrap_or_default();
    let usage = usage_of(v);
    match chunks.last_mut() {
        Some(last) => last.usage = usage,
        None => chunks.push(ModelChunk {
            usage,
            ..ModelChunk::default()
        }),
    }
    chunks
}

fn error_frame(upstream: &str, v: &Value) -> ModelError {
    let e = &v["error"];
    let message = e["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    ModelError::new(
        ModelErrorKind::Stream,
        format!("{upstream} stream error: {message}"),
    )
}

/// The SSE stream of chat or text completions.
///
/// Usage, in the order it is believed:
/// 1. `usage` (OpenAI's last frame with `stream_options.include_usage`; vLLM, Ollama, LiteLLM;
///    a server sending it on every frame is read as it goes, the last one wins);
/// 2. `timings.prompt_n` / `timings.predicted_n` (llama.cpp's own `llama-server`, in its last
///    frame);
/// 3. neither (llama-cpp-python's server, which ignores `stream_options` and reports nothing
///    while streaming): one output token per frame that carries text, and 0 input tokens
///    (unknown; the quota then keeps its own prompt estimate). A frame carries at least one
///    token: llama-cpp-python sends one per token, and more only where a multi-byte character
///    or a held-back stop-sequence prefix spans tokens, so the count is a lower bound, never an
///    invention. Handed on with `[DONE]`, so a stream cut short reports none.
#[derive(Debug, Default)]
struct OpenAiStream {
    upstream: &'static str,
    /// Usage reported by the server (`usage` or `timings`).
    reported: bool,
    /// Frames that carried text.
    text_frames: u64,
}

impl OpenAiStream {
    fn new(upstream: &'static str) -> Self {
        Self {
            upstream,
            ..Self::default()
        }
    }
}

/// llama.cpp `llama-server`'s `timings` as usage.
fn timings_usage(v: &Value) -> Option<Usage> {
    let t = v.get("timings").filter(|t| t.is_object())?;
    Some(Usage {
        input_tokens: t["prompt_n"].as_u64().unwrap_or(0),
        output_tokens: t["predicted_n"].as_u64()?,
    })
}

impl FrameHandler for OpenAiStream {
    type Frame = SseEvent;

    fn frame(&mut self, event: SseEvent) -> Step {
        let data = event.data.trim();
        if data == "[DONE]" {
            if self.reported || self.text_frames == 0 {
                return Step::End(None);
            }
            return Step::End(Some(ModelChunk {
                usage: Some(Usage {
                    input_tokens: 0,
                    output_tokens: self.text_frames,
                }),
                ..ModelChunk::default()
            }));
        }
        if data.is_empty() {
            return Step::Skip;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                return Step::Fail(ModelError::new(
                    ModelErrorKind::Protocol,
                    format!("{} sent invalid JSON: {e}", self.upstream),
                ))
            }
        };
        if event.event == "error" || v.get("error").is_some_and(|e| !e.is_null()) {
            return Step::Fail(error_frame(self.upstream, &v));
        }
        let usage = usage_of(&v).or_else(|| timings_usage(&v));
        self.reported |= usage.is_some();
        let choice = v["choices"].as_array().and_then(|c| c.first());
        let text = choice.map(choice_text).unwrap_or("");
        if text.is_empty() && usage.is_none() {
            return Step::Skip;
        }
        if !text.is_empty() {
            self.text_frames += 1;
        }
        Step::Chunk(ModelChunk {
            text: text.to_string(),
            candidate: choice
                .and_then(|c| c["index"].as_u64())
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            usage,
            finish_reason: choice.and_then(|c| c["finish_reason"].as_str().map(str::to_string)),
            ..ModelChunk::default()
        })
    }

    fn eof(&mut self) -> Result<Option<ModelChunk>, ModelError> {
        Err(closed_early(self.upstream))
    }
}

impl ModelProvider for OpenAiCompatModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn call(&self, request: ModelRequest) -> ChunkStream {
        lazy(self.clone().start(request))
    }
}

/// The `model` sent upstream for a LiteLLM-style model name and optional identifier
/// (`provider/model` → `model`; no slash → the identifier itself).
pub fn upstream_model(name: &str, identifier: Option<&str>) -> String {
    match identifier.filter(|i| !i.is_empty()) {
        Some(id) => match id.split_once('/') {
            Some((_, model)) => model.to_string(),
            None => id.to_string(),
        },
        None => name.to_string(),
    }
}

/// Per-model stop tokens of the original's LiteLLM text models.
pub fn model_stop_tokens(name: &str) -> &'static [&'static str] {
    match name {
        "codegemma" => &[
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            "<|file_separator|>",
        ],
        "qwen2p5-coder-7b" => &[
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
            "<|im_start|>",
            "<|im_end|>",
            "\n\n",
        ],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Models;
    use crate::models::Message;

    fn model(api: Api) -> OpenAiCompatModel {
        let up = Arc::new(Upstream::new("litellm", &Models::default()).unwrap());
        OpenAiCompatModel::new(
            up,
            ModelMetadata::new("litellm", "codegemma"),
            "http://h/v1/",
            api,
            "codegemma",
        )
        .with_default_stop(model_stop_tokens("codegemma"))
    }

    #[test]
    fn bodies() {
        let mut r = ModelRequest::new(
            Prompt::Text {
                prefix: "def f(".into(),
                suffix: Some("".into()),
            },
            true,
        );
        r.params.max_tokens = Some(16);
        let b = model(Api::Text).body(&r, true);
        assert_eq!(b["prompt"], "def f(");
        assert!(b.get("suffix").is_none());
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["stop"][0], "<|fim_prefix|>");
        let chat = ModelRequest::new(Prompt::Chat(vec![Message::new("user", "x")]), false);
        let b = model(Api::Chat).body(&chat, false);
        assert_eq!(b["messages"][0]["content"], "x");
        assert!(b.get("stream").is_none());
    }

    #[test]
    fn identifiers() {
        assert_eq!(upstream_model("mistral", None), "mistral");
        assert_eq!(
            upstream_model("mistral", Some("custom_openai/my-model")),
            "my-model"
        );
        assert_eq!(upstream_model("gpt", Some("plain")), "plain");
    }

    #[test]
    fn stream_frames() {
        let mut h = OpenAiStream::new("litellm");
        let ev = |d: &str| SseEvent {
            event: String::new(),
            data: d.into(),
        };
        match h.frame(ev(
            r#"{"choices":[{"index":0,"delta":{"content":"He"},"finish_reason":null}]}"#,
        )) {
            Step::Chunk(c) => assert_eq!(c.text, "He"),
            s => panic!("{s:?}"),
        }
        match h.frame(ev(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        )) {
            Step::Chunk(c) => assert_eq!(
                c.usage,
                Some(Usage {
                    input_tokens: 3,
                    output_tokens: 2
                })
            ),
            s => panic!("{s:?}"),
        }
        assert!(matches!(
            h.frame(ev(r#"{"error":{"message":"boom"}}"#)),
            Step::Fail(_)
        ));
        assert!(matches!(h.frame(ev("[DONE]")), Step::End(None)));
    }

    #[test]
    fn streams_without_usage_count_text_frames() {
        let ev = |d: &str| SseEvent {
            event: String::new(),
            data: d.into(),
        };
        // llama-cpp-python: a role frame, one frame per token, a finish frame, no usage.
        let mut h = OpenAiStream::new("litellm");
        for d in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"def"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" add"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ] {
            h.frame(ev(d));
        }
        match h.frame(ev("[DONE]")) {
            Step::End(Some(c)) => assert_eq!(
                c.usage,
                Some(Usage {
                    input_tokens: 0,
                    output_tokens: 2
                })
            ),
            s => panic!("{s:?}"),
        }
        // llama.cpp's llama-server: `timings` in the last frame.
        let mut h = OpenAiStream::new("litellm");
        h.frame(ev(r#"{"choices":[{"index":0,"text":"x"}]}"#));
        match h.frame(ev(
            r#"{"choices":[{"index":0,"text":"","finish_reason":"stop"}],"timings":{"prompt_n":12,"predicted_n":7}}"#,
        )) {
            Step::Chunk(c) => assert_eq!(
                c.usage,
                Some(Usage {
                    input_tokens: 12,
                    output_tokens: 7
                })
            ),
            s => panic!("{s:?}"),
        }
        assert!(matches!(h.frame(ev("[DONE]")), Step::End(None)));
        // An empty answer reports nothing.
        let mut h = OpenAiStream::new("litellm");
        assert!(matches!(h.frame(ev("[DONE]")), Step::End(None)));
    }
}
