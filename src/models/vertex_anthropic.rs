//! Claude on Vertex AI: Anthropic's Messages API as Google serves it, `rawPredict` (whole) and
//! `streamRawPredict` (streamed).
//!
//! The original reaches these models only through prompt-registry definitions whose model class is
//! LiteLLM with `custom_llm_provider: vertex_ai` (`code_suggestions/generations/vertex`,
//! `chat/react/vertex`), LiteLLM building the call. This is the call LiteLLM (and Anthropic's
//! `AnthropicVertex` client) makes:
//!
//! `POST <endpoint>/v1/projects/<project>/locations/<location>/publishers/anthropic/models/<model>:rawPredict`
//!
//! where `<location>` is the prompt's `params.vertex_location` (`us-east5`), `<project>`
//! `AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT`, and `<endpoint>` `https://<location>-aiplatform.googleapis.com`
//! unless `AIGW_VERTEX_ANTHROPIC__ENDPOINT` names another (a host, or a URL with a scheme: a
//! private endpoint, or a fake one in tests). The body is the Anthropic Messages body without
//! `model` (the model is in the path) plus `"anthropic_version": "vertex-2023-10-16"`; the answer
//! is Anthropic's, whole or as Anthropic's SSE stream (`message_start` ... `message_stop`, a
//! mid-stream `event: error` such as `overloaded_error`), so both are read by the Anthropic
//! provider's parsers. As recorded from Vertex, the stream differs from Anthropic's own only in
//! ways those parsers already pass over: `ping` comes right after `message_start` with the data
//! `{"type": "ping"}`, every other frame's JSON has a varying run of spaces before its closing
//! `}` (which the text-delta shortcut allows for), and newer models are reported to add
//! `vertex_event` usage frames, which are skipped (`tests/providers_vertex_claude.rs` sends the
//! recorded bytes). The call carries a Google access token ([`GoogleAuth`], shared with the
//! other Vertex models). Google's own errors before the first byte (quota, permissions) are
//! pretty-printed `{"error": {"code", "message", "status"}}` (on `streamRawPredict` inside a
//! one-element array) without `Retry-After`; whatever the body, the status goes through the
//! same retry policy as every upstream (408, 409, 429 and 5xx are retried; a 429 without
//! `Retry-After` after the usual backoff). Deadlines are the request actor's, as for every
//! provider.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::{json, Value};

use super::anthropic::{messages_answer, messages_body, MessagesStream};
use super::google_auth::GoogleAuth;
use super::http_client::{base_url, body_error, Upstream};
use super::sse::{frames_to_chunks, lazy, SseDecoder};
use super::{ChunkStream, ModelError, ModelErrorKind, ModelMetadata, ModelProvider, ModelRequest};

/// `anthropic_version` of Claude on Vertex.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The upstream shared by every Claude-on-Vertex model.
#[derive(Debug)]
pub struct VertexAnthropicClient {
    upstream: Upstream,
    auth: Arc<GoogleAuth>,
    /// `AIGW_VERTEX_ANTHROPIC__ENDPOINT`, normalised to a URL without a trailing `/`; `None`
    /// means the location's own `https://<location>-aiplatform.googleapis.com`.
    endpoint: Option<String>,
    project: String,
}

impl VertexAnthropicClient {
    /// A client for `project`; `endpoint` (host or URL) replaces the per-location Google host.
    pub fn new(
        upstream: Upstream,
        auth: Arc<GoogleAuth>,
        endpoint: Option<&str>,
        project: &str,
    ) -> Self {
        let endpoint = endpoint
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(base_url);
        Self {
            upstream,
            auth,
            endpoint,
            project: project.to_string(),
        }
    }

    /// The URL of `verb` on `model` in `location`.
    pub fn url(&self, location: &str, model: &str, verb: &str) -> String {
        let base = match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("https://{location}-aiplatform.googleapis.com"),
        };
        format!(
            "{base}/v1/projects/{}/locations/{location}/publishers/anthropic/models/{model}:{verb}",
            self.project
        )
    }
}

/// One Claude model on Vertex in one location.
#[derive(Debug, Clone)]
pub struct VertexAnthropicModel {
    client: Arc<VertexAnthropicClient>,
    location: String,
    metadata: ModelMetadata,
}

impl VertexAnthropicModel {
    /// `model` (`claude-3-5-sonnet@20240620`) in `location` (`us-east5`).
    pub fn new(client: Arc<VertexAnthropicClient>, model: &str, location: &str) -> Self {
        Self {
            client,
            location: location.to_string(),
            metadata: ModelMetadata::new("vertex-ai", model),
        }
    }

    /// The request body: the Messages body without `model`, with Vertex's `anthropic_version`.
    /// The temperature is sent as the prompt sets it (LiteLLM passes `0.0` on, where the
    /// original's direct Anthropic client replaced a falsy value with its default) and left to
    /// the model when the prompt sets none.
    pub fn body(&self, request: &ModelRequest, stream: bool) -> Value {
        let mut body = messages_body(&self.metadata.name, request, stream);
        if let Value::Object(fields) = &mut body {
            fields.remove("model");
            fields.insert("anthropic_version".into(), json!(VERTEX_ANTHROPIC_VERSION));
            match request.params.temperature {
                Some(t) => fields.insert("temperature".into(), json!(t)),
                None => fields.remove("temperature"),
            };
        }
        body
    }

    async fn start(self, request: ModelRequest) -> Result<ChunkStream, ModelError> {
        let client = &self.client;
        if client.project.is_empty() {
            return Err(ModelError::new(
                ModelErrorKind::Refused,
                "Claude on Vertex needs AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT",
            ));
        }
        let token = client.auth.token().await?;
        let stream = request.stream;
        let verb = if stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        let url = client.url(&self.location, &self.metadata.name, verb);
        let body = bytes::Bytes::from(
            serde_json::to_vec(&self.body(&request, stream))
                .map_err(|e| ModelError::new(ModelErrorKind::Protocol, e.to_string()))?,
        );
        let response = client
            .upstream
            .send_redacting(
                |http| {
                    http.post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .header(
                            "accept",
                            if stream {
                                "text/event-stream"
                            } else {
                                "application/json"
                            },
                        )
                        .body(body.clone())
                },
                &[token.as_str()],
            )
            .await?;
        if stream {
            return Ok(frames_to_chunks(
                "vertex-ai",
                response,
                SseDecoder::new(),
                MessagesStream::default(),
            ));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| body_error("vertex-ai", &e))?;
        let chunk = messages_answer("vertex-ai", &bytes)?;
        Ok(futures::stream::iter([Ok(chunk)]).boxed())
    }
}

impl ModelProvider for VertexAnthropicModel {
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
    use crate::config::Models;
    use crate::models::{Message, Prompt};

    fn client(endpoint: Option<&str>) -> Arc<VertexAnthropicClient> {
        let up = || Upstream::new("vertex-ai", &Models::default()).unwrap();
        let auth = Arc::new(GoogleAuth::metadata_server(Some("127.0.0.1:9"), up()));
        Arc::new(VertexAnthropicClient::new(up(), auth, endpoint, "proj"))
    }

    #[test]
    fn urls() {
        assert_eq!(
            client(None).url("us-east5", "claude-3-5-sonnet@20240620", "rawPredict"),
            "https://us-east5-aiplatform.googleapis.com/v1/projects/proj/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet@20240620:rawPredict"
        );
        assert_eq!(
            client(Some("http://127.0.0.1:8080/")).url("us-east5", "m", "streamRawPredict"),
            "http://127.0.0.1:8080/v1/projects/proj/locations/us-east5/publishers/anthropic/models/m:streamRawPredict"
        );
        assert_eq!(
            client(Some("vertex.example")).url("europe-west1", "m", "rawPredict"),
            "https://vertex.example/v1/projects/proj/locations/europe-west1/publishers/anthropic/models/m:rawPredict"
        );
        assert!(client(Some(" ")).endpoint.is_none());
    }

    #[test]
    fn body_has_no_model_and_the_vertex_version() {
        let m = VertexAnthropicModel::new(client(None), "claude-3-5-sonnet@20240620", "us-east5");
        let mut r = ModelRequest::new(
            Prompt::Chat(vec![
                Message::new("system", "sys"),
                Message::new("user", "hi"),
            ]),
            true,
        );
        r.params.max_tokens = Some(2048);
        r.params.temperature = Some(0.0);
        let b = m.body(&r, true);
        assert!(b.get("model").is_none());
        assert_eq!(b["anthropic_version"], VERTEX_ANTHROPIC_VERSION);
        assert_eq!(b["system"], "sys");
        assert_eq!(b["max_tokens"], 2048);
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["stream"], true);
        assert!(m.body(&r, false).get("stream").is_none());
    }
}
