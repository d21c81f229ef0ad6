//! Model providers: one module per upstream wire protocol, all behind [`ModelProvider`].
//!
//! A provider turns a normalised [`ModelRequest`] (a text prompt with an optional suffix, or a
//! list of chat messages, plus parameters) into a stream of normalised [`ModelChunk`]s. The stream
//! is lazy: nothing is sent upstream until it is first polled, which happens inside the request
//! actor that owns the call (`ai_gateway_actors::request`). Whole (non-streamed) answers are the
//! same stream read to its end.
//!
//! Errors are one type, [`ModelError`], that says what went wrong in terms the endpoints map to
//! the original's statuses (503 `Inference failed`, 502/504 for chat, 429 with `Retry-After`).

pub mod anthropic;
pub mod google_auth;
pub mod http_client;
pub mod mock;
pub mod openai_compat;
pub mod registry;
pub mod sse;
pub mod vertex;
pub mod vertex_anthropic;

use std::fmt;
use std::time::Duration;

use futures::stream::BoxStream;
use serde::Serialize;

/// Who serves a model and what it is called, as reported in responses and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMetadata {
    /// The engine (`vertex-ai`, `anthropic`, `litellm`, `llm-provider-mocked`, ...).
    pub engine: String,
    /// The model name (`code-gecko@002`, `claude-3-5-sonnet-20240620`, ...).
    pub name: String,
}

impl ModelMetadata {
    /// Metadata from an engine and a name.
    pub fn new(engine: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            engine: engine.into(),
            name: name.into(),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from a role and its text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What the model is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A text-completion prompt: the text before the cursor and, for fill-in-the-middle models,
    /// the text after it.
    Text {
        /// The prompt.
        prefix: String,
        /// The suffix, for models that take one.
        suffix: Option<String>,
    },
    /// A chat prompt.
    Chat(Vec<Message>),
}

/// Sampling parameters; `None` means the provider's default for that model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Largest number of tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling.
    pub top_k: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Number of alternative completions (Vertex `candidateCount`).
    pub candidate_count: Option<u32>,
}

/// A normalised model call.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Whether the client reads the answer as a stream (some providers are called differently).
    pub stream: bool,
    /// Sampling parameters.
    pub params: Params,
    /// Extra call arguments, reported verbatim by the mock's echo (`kwargs`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ModelRequest {
    /// A request with default parameters.
    pub fn new(prompt: Prompt, stream: bool) -> Self {
        Self {
            prompt,
            stream,
            params: Params::default(),
            extra: serde_json::Map::new(),
        }
    }
}

/// Tokens used by a call, as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

/// One piece of a model's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelChunk {
    /// Text to append to candidate [`ModelChunk::candidate`].
    pub text: String,
    /// Which alternative this text belongs to (0 unless `candidate_count > 1`).
    pub candidate: u32,
    /// The candidate's score, when the provider gives one (Vertex).
    pub score: Option<f64>,
    /// Usage so far, when the provider reports it (usually in the last chunk).
    pub usage: Option<Usage>,
    /// Why generation stopped, when known.
    pub finish_reason: Option<String>,
}

impl ModelChunk {
    /// A text chunk of candidate 0.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
}

/// What went wrong with a model call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The upstream could not be reached, or the connection broke.
    Connection,
    /// The upstream did not answer in time.
    Timeout,
    /// The upstream answered with an error status.
    Status(u16),
    /// The upstream is rate limiting (429), possibly saying for how long.
    RateLimited,
    /// The upstream answered something that is not its protocol.
    Protocol,
    /// The upstream sent an error in the middle of a stream (Anthropic `error` event, ...).
    Stream,
    /// The gateway refused the call before sending it (bad configuration, missing key).
    Refused,
}

/// A failed model call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// What kind of failure.
    pub kind: ModelErrorKind,
    /// Details for logs. Never contains credentials.
    pub message: String,
    /// How long the upstream asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ModelError {
    /// An error of `kind` with a message.
    pub fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The upstream status, if it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ModelErrorKind::Status(code) => Some(code),
            ModelErrorKind::RateLimited => Some(429),
            _ => None,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ModelErrorKind::Status(code) => write!(f, "upstream status {code}: {}", self.message),
            kind => write!(f, "{kind:?}: {}", self.message),
        }
    }
}

impl std::error::Error for ModelError {}

/// The stream of a model call.
pub type ChunkStream = BoxStream<'static, Result<ModelChunk, ModelError>>;

/// One upstream wire protocol.
pub trait ModelProvider: Send + Sync + 'static {
    /// Engine and model name of this provider instance.
    fn metadata(&self) -> &ModelMetadata;

    /// The call as a lazy stream: nothing is sent before the first poll.
    fn call(&self, request: ModelRequest) -> ChunkStream;
}
