//! Vertex AI PaLM code models over REST: `predict` (whole) and `serverStreamingPredict`
//! (streamed), for `code-gecko@002` completions and `code-bison@002` generations.
//!
//! URL: `<endpoint>/v1/projects/<project>/locations/<location>/publishers/google/models/<model>:<verb>`
//! where `<endpoint>` is `AIGW_VERTEX_TEXT_MODEL__ENDPOINT` (a bare host means `https://`; a
//! scheme may be given, so tests and private endpoints can use plain HTTP). Every call carries a
//! Google access token ([`GoogleAuth`]).
//!
//! `predict` sends the original's instance (`{"prefix", "suffix"}` for gecko, `{"prefix"}` for
//! bison) and parameters (`temperature`, `maxOutputTokens`, `topP`, `topK`, `candidateCount`,
//! `stopSequences`); each prediction's `content` and `score` become one candidate, and
//! `metadata.tokenMetadata.{input,output}TokenCount.totalTokens` the usage. A blocked answer
//! (`safetyAttributes.blocked`) is an empty candidate.
//!
//! `serverStreamingPredict` takes the same instance and parameters as `Tensor` values
//! (`structVal`/`stringVal`/`floatVal`/`intVal`) and answers a JSON array of
//! `StreamingPredictResponse` objects, sent one at a time as the model produces them; each
//! output's `content.stringVal[0]` is the next piece of text. [`JsonArrayFramer`] cuts the array
//! into its objects as they arrive. An array that never closes is an early close.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::google_auth::GoogleAuth;
use super::http_client::{base_url, body_error, Upstream};
use super::sse::{closed_early, frames_to_chunks, lazy, FrameHandler, Framer, Step};
use super::{
    ChunkStream, ModelChunk, ModelError, ModelErrorKind, ModelMetadata, ModelProvider,
    ModelRequest, Prompt, Usage,
};

/// Where Vertex is and who we are to it.
#[derive(Debug)]
pub struct VertexClient {
    upstream: Upstream,
    auth: Arc<GoogleAuth>,
    /// `https://host` or the configured scheme and host.
    base_url: String,
    project: String,
    location: String,
}

impl VertexClient {
    /// A client for `endpoint` (host or URL), `project` and `location`.
    pub fn new(
        upstream: Upstream,
        auth: Arc<GoogleAuth>,
        endpoint: &str,
        project: &str,
        location: &str,
    ) -> Self {
        Self {
            upstream,
            auth,
            base_url: base_url(endpoint),
            project: project.to_string(),
            location: location.to_string(),
        }
    }

    fn url(&self, model: &str, verb: &str) -> String {
        format!(
            "{}/v1/projects/{}/locations/{}/publishers/google/models/{}:{}",
            self.base_url, self.project, self.location, model, verb
        )
    }
}

/// One Vertex model.
#[derive(Debug, Clone)]
pub struct VertexModel {
    client: Arc<VertexClient>,
    metadata: ModelMetadata,
}

impl VertexModel {
    /// `model` (`code-gecko@002`, `code-bison@002`, `text-bison@002`).
    pub fn new(client: Arc<VertexClient>, model: &str) -> Self {
        Self {
            client,
            metadata: ModelMetadata::new("vertex-ai", model),
        }
    }

    fn instance(&self, request: &ModelRequest) -> Map<String, Value> {
        let mut instance = Map::new();
        let (prefix, suffix) = match &request.prompt {
            Prompt::Text { prefix, suffix } => (prefix.clone(), suffix.clone()),
            Prompt::Chat(messages) => (
                messages
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                None,
            ),
        };
        if self.metadata.name.starts_with("text-bison") {
            instance.insert("content".into(), json!(prefix));
        } else {
            instance.insert("prefix".into(), json!(prefix));
            if self.metadata.name.starts_with("code-gecko") {
                instance.insert("suffix".into(), json!(suffix.unwrap_or_default()));
            }
        }
        instance
    }

    fn parameters(request: &ModelRequest) -> Map<String, Value> {
        let p = &request.params;
        let mut params = Map::new();
        if let Some(t) = p.temperature {
            params.insert("temperature".into(), json!(t));
        }
        if let Some(n) = p.max_tokens {
            params.insert("maxOutputTokens".into(), json!(n));
        }
        if let Some(t) = p.top_p {
            params.insert("topP".into(), json!(t));
        }
        if let Some(k) = p.top_k {
            params.insert("topK".into(), json!(k));
        }
        if let Some(n) = p.candidate_count {
            params.insert("candidateCount".into(), json!(n.min(4)));
        }
        if !p.stop.is_empty() {
            params.insert("stopSequences".into(), json!(p.stop));
        }
        params
    }

    /// The `predict` body.
    pub fn predict_body(&self, request: &ModelRequest) -> Value {
        json!({
            "instances": [Value::Object(self.instance(request))],
            "parameters": Value::Object(Self::parameters(request)),
        })
    }

    /// The `serverStreamingPredict` body (values as `Tensor`s).
    pub fn streaming_body(&self, request: &ModelRequest) -> Value {
        json!({
            "inputs": [tensor(&Value::Object(self.instance(request)))],
            "parameters": tensor(&Value::Object(Self::parameters(request))),
        })
    }

    async fn start(self, request: ModelRequest) -> Result<ChunkStream, ModelError> {
        let client = &self.client;
        let token = client.auth.token().await?;
        let stream = request.stream;
        let (url, body) = if stream {
            (
                client.url(&self.metadata.name, "serverStreamingPredict"),
                self.streaming_body(&request),
            )
        } else {
            (
                client.url(&self.metadata.name, "predict"),
                self.predict_body(&request),
            )
        };
        let body = bytes::Bytes::from(
            serde_json::to_vec(&body)
                .map_err(|e| ModelError::new(ModelErrorKind::Protocol, e.to_string()))?,
        );
        let response = client
            .upstream
            .send_redacting(
                |http| {
                    http.post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                },
                &[token.as_str()],
            )
            .await?;
        if stream {
            return Ok(frames_to_chunks(
                "vertex-ai",
                response,
                JsonArrayFramer::default(),
                VertexStream,
            ));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| body_error("vertex-ai", &e))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ModelError::new(
                ModelErrorKind::Protocol,
                format!("vertex-ai sent invalid JSON: {e}"),
            )
        })?;
        Ok(futures::stream::iter(parse_predict_response(&v).into_iter().map(Ok)).boxed())
    }
}

/// A JSON value as a Vertex `Tensor`.
pub fn tensor(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let fields: Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), tensor(v))).collect();
            json!({"structVal": fields})
        }
        Value::Array(items) => json!({"listVal": items.iter().map(tensor).collect::<Vec<_>>()}),
        Value::String(s) => json!({"stringVal": [s]}),
        Value::Bool(b) => json!({"boolVal": [b]}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"intVal": [n]}),
        Value::Number(n) => json!({"floatVal": [n]}),
        Value::Null => json!({}),
    }
}

fn usage_of(metadata: &Value) -> Option<Usage> {
    let t = metadata.get("tokenMetadata")?;
    Some(Usage {
        input_tokens: t["inputTokenCount"]["totalTokens"].as_u64().unwrap_or(0),
        output_tokens: t["outputTokenCount"]["totalTokens"].as_u64().unwrap_or(0),
    })
}

/// The chunks of a `predict` answer: one per prediction (candidate), usage on the last.
pub fn parse_predict_response(v: &Value) -> Vec<ModelChunk> {
    let mut chunks: Vec<ModelChunk> = v["predictions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .enumerate()
                .map(|(i, p)| {
                    let blocked = p["safetyAttributes"]["blocked"].as_bool().unwrap_or(false);
                    ModelChunk {
                        text: if blocked {
                            String::new()
                        } else {
                            p["content"].as_str().unwrap_or("").to_string()
                        },
                        candidate: i as u32,
                        score: p["score"].as_f64(),
                        ..ModelChunk::default()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let usage = usage_of(&v["metadata"]);
    match chunks.last_mut() {
        Some(last) => last.usage = usage,
        None => chunks.push(ModelChunk {
            usage,
            ..ModelChunk::default()
        }),
    }
    chunks
}

/// The `serverStreamingPredict` answer's objects.
struct VertexStream;

impl FrameHandler for VertexStream {
    type Frame = Value;

    fn frame(&mut self, v: Value) -> Step {
        if v.get("__end").is_some() {
            return Step::End(None);
        }
        if let Some(error) = v.get("error") {
            let message = error["message"].as_str().unwrap_or("stream error");
            return Step::Fail(ModelError::new(
                ModelErrorKind::Stream,
                format!("vertex-ai stream error: {message}"),
            ));
        }
        let mut text = String::new();
        let mut score = None;
        for output in v["outputs"].as_array().into_iter().flatten() {
            let fields = &output["structVal"];
            let blocked = fields["safetyAttributes"]["structVal"]["blocked"]["boolVal"][0]
                .as_bool()
                .unwrap_or(false);
            if !blocked {
                if let Some(s) = fields["content"]["stringVal"][0].as_str() {
                    text.push_str(s);
                }
            }
            if let Some(s) = fields["score"]["floatVal"][0].as_f64() {
                score = Some(s);
            }
        }
        let usage = usage_of(&v["metadata"]);
        if text.is_empty() && usage.is_none() {
            return Step::Skip;
        }
        Step::Chunk(ModelChunk {
            text,
            score,
            usage,
            ..ModelChunk::default()
        })
    }

    fn eof(&mut self) -> Result<Option<ModelChunk>, ModelError> {
        // The framer ends the stream at the closing `]`; reaching the end of the body before it
        // means the upstream went away.
        Err(closed_early("vertex-ai"))
    }
}

/// Cuts a streamed JSON array (`[{...},\r\n{...}]`) into its top-level values as each completes.
#[derive(Debug, Default)]
pub struct JsonArrayFramer {
    buf: Vec<u8>,
    /// Scan position in `buf`.
    pos: usize,
    started: bool,
    closed: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Start of the current element in `buf`.
    element_start: Option<usize>,
}

impl Framer for JsonArrayFramer {
    type Frame = Value;

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next_frame(&mut self) -> Result<Option<Value>, ModelError> {
        let bad = |m: &str| {
            ModelError::new(
                ModelErrorKind::Protocol,
                format!("vertex-ai stream is not a JSON array: {m}"),
            )
        };
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.closed {
                continue;
            }
            if !self.started {
                match b {
                    b'[' => self.started = true,
                    b if b.is_ascii_whitespace() => {}
                    b'{' => {
                        // A single object instead of an array (an error answer): take it whole.
                        self.started = true;
                        self.depth = 1;
                        self.element_start = Some(self.pos - 1);
                    }
                    _ => return Err(bad("unexpected start")),
                }
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    if self.depth == 0 {
                        self.element_start = Some(self.pos - 1);
                    }
                    self.depth += 1;
                }
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let start = self.element_start.take().unwrap_or(0);
                        let value: Value = serde_json::from_slice(&self.buf[start..self.pos])
                            .map_err(|e| bad(&e.to_string()))?;
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                        return Ok(Some(value));
                    }
                }
                b']' => {
                    self.closed = true;
                    return Ok(Some(json!({"__end": true})));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

impl ModelProvider for VertexModel {
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

    #[test]
    fn tensors() {
        assert_eq!(
            tensor(&json!({"prefix": "a", "t": 0.2, "n": 2, "stop": ["x"]})),
            json!({"structVal": {"prefix": {"stringVal": ["a"]}, "t": {"floatVal": [0.2]},
                   "n": {"intVal": [2]}, "stop": {"listVal": [{"stringVal": ["x"]}]}}})
        );
    }

    #[test]
    fn predict_response() {
        let v = json!({"predictions": [
            {"content": "a", "score": -1.5, "safetyAttributes": {"blocked": false}},
            {"content": "b", "score": -20.0, "safetyAttributes": {"blocked": true}}],
            "metadata": {"tokenMetadata": {"inputTokenCount": {"totalTokens": 7}, "outputTokenCount": {"totalTokens": 3}}}});
        let chunks = parse_predict_response(&v);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].text, "a");
        assert_eq!(chunks[1].text, "");
        assert_eq!(chunks[1].candidate, 1);
        assert_eq!(
            chunks[1].usage,
            Some(Usage {
                input_tokens: 7,
                output_tokens: 3
            })
        );
    }

    #[test]
    fn array_framer_splits_anywhere() {
        let text = br#"[{"outputs":[{"structVal":{"content":{"stringVal":["a}\"]"]}}}]}
,
{"outputs":[]}]"#;
        for cut in 0..text.len() {
            let mut f = JsonArrayFramer::default();
            let mut got = Vec::new();
            f.push(&text[..cut]);
            while let Some(v) = f.next_frame().unwrap() {
                got.push(v);
            }
            f.push(&text[cut..]);
            while let Some(v) = f.next_frame().unwrap() {
                got.push(v);
            }
            assert_eq!(got.len(), 3, "cut {cut}");
            assert_eq!(
                got[0]["outputs"][0]["structVal"]["content"]["stringVal"][0],
                "a}\"]"
            );
            assert_eq!(got[2], json!({"__end": true}));
        }
    }
}
