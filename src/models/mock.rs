//! The mock models of `AIGW_MOCK_MODEL_RESPONSES=true`, answering with the original's echo.
//!
//! Text models answer `echo: ` followed by `json.dumps({"prefix": <prompt>, "suffix": <suffix>,
//! "stream": <bool>, "kwargs": {...}})`; chat models answer `echo: ` followed by
//! `json.dumps({"messages": [...], "stream": <bool>, "kwargs": {...}})`. Streamed, the echo is
//! split the way Python's `re.split(r"(\s)", text)` splits it: each whitespace character is its
//! own chunk (empty pieces are not sent).

use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::{ChunkStream, ModelChunk, ModelMetadata, ModelProvider, ModelRequest, Prompt, Usage};
use crate::pyjson;

/// The original's mock of text models (Vertex, Anthropic legacy text completions, agents).
pub fn text_model() -> MockModel {
    MockModel {
        metadata: ModelMetadata::new("llm-provider-mocked", "llm-mocked"),
    }
}

/// The original's mock of chat models (Anthropic Messages, LiteLLM).
pub fn chat_model() -> MockModel {
    MockModel {
        metadata: ModelMetadata::new("chat-model-provider-mocked", "chat-model-mocked"),
    }
}

/// A mock model: echoes what it was asked.
#[derive(Debug, Clone)]
pub struct MockModel {
    metadata: ModelMetadata,
}

/// The echo text for a request.
pub fn echo(request: &ModelRequest) -> String {
    let kwargs = Value::Object(request.extra.clone());
    let body = match &request.prompt {
        Prompt::Text { prefix, suffix } => {
            let mut m = Map::new();
            m.insert("prefix".into(), Value::String(prefix.clone()));
            m.insert(
                "suffix".into(),
                suffix.clone().map(Value::String).unwrap_or(Value::Null),
            );
            m.insert("stream".into(), Value::Bool(request.stream));
            m.insert("kwargs".into(), kwargs);
            Value::Object(m)
        }
        Prompt::Chat(messages) => {
            let messages: Vec<Value> = messages
                .iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect();
            let mut m = Map::new();
            m.insert("messages".into(), Value::Array(messages));
            m.insert("stream".into(), Value::Bool(request.stream));
            m.insert("kwargs".into(), kwargs);
            Value::Object(m)
        }
    };
    format!("echo: {}", pyjson::dumps(&body))
}

/// `re.split(r"(\s)", text)` without the empty pieces, produced lazily so that a long echo is
/// never held twice.
pub struct WhitespaceSplit {
    text: String,
    pos: usize,
}

impl WhitespaceSplit {
    /// Split `text`.
    pub fn new(text: String) -> Self {
        Self { text, pos: 0 }
    }
}

impl Iterator for WhitespaceSplit {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let rest = self.text.get(self.pos..)?;
        let mut chars = rest.char_indices();
        let (_, first) = chars.next()?;
        let end = if first.is_whitespace() {
            first.len_utf8()
        } else {
            rest.char_indices()
                .find(|(_, c)| c.is_whitespace())
                .map(|(i, _)| i)
                .unwrap_or(rest.len())
        };
        let piece = rest.get(..end)?.to_string();
        self.pos += end;
        Some(piece)
    }
}

/// `re.split(r"(\s)", text)` without the empty pieces.
pub fn split_on_whitespace(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if i > start {
                pieces.push(text[start..i].to_string());
            }
            pieces.push(c.to_string());
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        pieces.push(text[start..].to_string());
    }
    pieces
}

impl ModelProvider for MockModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn call(&self, request: ModelRequest) -> ChunkStream {
        let text = echo(&request);
        let usage = Some(Usage {
            input_tokens: 0,
            output_tokens: 0,
        });
        if request.stream {
            let pieces = WhitespaceSplit::new(text).map(|piece| Ok(ModelChunk::text(piece)));
            let last = std::iter::once(Ok(ModelChunk {
                usage,
                ..ModelChunk::default()
            }));
            futures::stream::iter(pieces.chain(last)).boxed()
        } else {
            futures::stream::iter([Ok(ModelChunk {
                text,
                score: Some(0.0),
                usage,
                ..ModelChunk::default()
            })])
            .boxed()
        }
    }
}

/// The original's stand-in for registry prompts of Anthropic-class models in mock mode:
/// LangChain's fake chat model, which answers `mock` whatever it is asked (one chunk, streamed or
/// not).
pub fn fake_chat_model() -> FixedModel {
    FixedModel {
        metadata: ModelMetadata::new("fake-provider", "fake-model"),
        text: "mock".to_string(),
    }
}

/// A mock model that always answers the same text.
#[derive(Debug, Clone)]
pub struct FixedModel {
    metadata: ModelMetadata,
    text: String,
}

impl ModelProvider for FixedModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn call(&self, _request: ModelRequest) -> ChunkStream {
        futures::stream::iter([Ok(ModelChunk {
            text: self.text.clone(),
            usage: Some(Usage::default()),
            ..ModelChunk::default()
        })])
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Message;

    #[test]
    fn text_echo_is_the_originals() {
        let mut request = ModelRequest::new(
            Prompt::Text {
                prefix: "def hello".into(),
                suffix: Some("".into()),
            },
            false,
        );
        request.extra.insert("candidate_count".into(), json!(1));
        assert_eq!(
            echo(&request),
            r#"echo: {"prefix": "def hello", "suffix": "", "stream": false, "kwargs": {"candidate_count": 1}}"#
        );
    }

    #[test]
    fn chat_echo_and_stream_split() {
        let request =
            ModelRequest::new(Prompt::Chat(vec![Message::new("user", "hi  there")]), true);
        let text = echo(&request);
        assert_eq!(
            text,
            r#"echo: {"messages": [{"role": "user", "content": "hi  there"}], "stream": true, "kwargs": {}}"#
        );
        let pieces = split_on_whitespace(&text);
        assert_eq!(pieces.concat(), text, "pieces reassemble the echo");
        assert_eq!(
            WhitespaceSplit::new(text.clone()).collect::<Vec<_>>(),
            pieces
        );
        assert_eq!(&pieces[..3], &["echo:", " ", "{\"messages\":"]);
        assert!(pieces.contains(&" ".to_string()));
        assert!(pieces.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn provider_streams_and_answers_whole() {
        let model = chat_model();
        let request = ModelRequest::new(Prompt::Chat(vec![Message::new("user", "a b")]), true);
        let chunks: Vec<_> = futures::executor::block_on(model.call(request).collect::<Vec<_>>());
        assert!(chunks.len() > 3);
        let whole = ModelRequest::new(Prompt::Chat(vec![Message::new("user", "a b")]), false);
        let one: Vec<_> = futures::executor::block_on(model.call(whole).collect::<Vec<_>>());
        assert_eq!(one.len(), 1);
    }
}
