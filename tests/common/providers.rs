//! The streaming scenarios every provider must pass, run against the real gateway binary and a
//! [`FakeUpstream`] speaking that provider's wire format.
//!
//! A [`Kit`] says how a provider frames its stream (the frames before, around and after the
//! text, its mid-stream error frame, its whole answer) and which gateway endpoint reaches it.
//! Each scenario function is one test: paced frames arrive one by one (the fake upstream holds
//! frame `n + 1` until the client has read frame `n`: batching would deadlock and fail), a
//! mid-stream error, a stall (idle timeout), an early close, a 429 with `Retry-After`, a 500
//! retried once then answered, and a client that goes away (the fake sees its connection
//! closed).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};

use super::fake_upstream::{FakeUpstream, Part, Reply};
use super::Gateway;

/// How the gateway frames the stream the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// v4 SSE events.
    Sse,
    /// Raw concatenated text (v2/v3).
    Raw,
}

/// What a scenario needs to know about a provider.
pub struct Kit {
    /// Variables for the gateway (besides `--dev`).
    pub env: Vec<(String, String)>,
    /// Gateway endpoint and body of a streamed call.
    pub stream_path: &'static str,
    /// Body of the streamed call.
    pub stream_body: Value,
    /// How the gateway frames that stream.
    pub framing: Framing,
    /// Gateway endpoint and body of a whole call.
    pub whole_path: &'static str,
    /// Body of the whole call.
    pub whole_body: Value,
    /// A part of the upstream path the model calls go to.
    pub upstream_path: &'static str,
    /// Frames before the first text.
    pub head: Vec<Vec<u8>>,
    /// One text frame.
    pub delta: fn(&str) -> Vec<u8>,
    /// Frames after the last text (the end marker included).
    pub tail: Vec<Vec<u8>>,
    /// The provider's mid-stream error frame.
    pub error_frame: Vec<u8>,
    /// Content type of the provider's stream.
    pub content_type: &'static str,
    /// The provider's whole answer with this text.
    pub whole: fn(&str) -> Reply,
    /// The provider's error answer with a status.
    pub error: fn(u16) -> Reply,
}

impl Kit {
    /// Start a gateway for this kit with `extra` variables.
    pub fn gateway(&self, extra: &[(&str, &str)]) -> Gateway {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend_from_slice(extra);
        Gateway::start(&env, &["--dev"])
    }

    fn stream_of(&self, texts: &[&str]) -> Vec<Vec<u8>> {
        let mut frames = self.head.clone();
        frames.extend(texts.iter().map(|t| (self.delta)(t)));
        frames.extend(self.tail.clone());
        frames
    }

    fn reply(&self, parts: Vec<Part>) -> Reply {
        Reply::stream(self.content_type, parts)
    }
}

/// Variables every provider gateway gets: real models, quick retries.
pub fn base_env(fake: &FakeUpstream) -> Vec<(String, String)> {
    let host = fake.url.trim_start_matches("http://").to_string();
    [
        ("AIGW_MOCK_MODEL_RESPONSES", "false".to_string()),
        ("AIGW_MODELS__RETRY_BACKOFF_MS", "5".to_string()),
        ("AIGW_LOGGING__FORMAT_JSON", "true".to_string()),
        ("ANTHROPIC_BASE_URL", fake.url.clone()),
        (
            "ANTHROPIC_API_KEY",
            "sk-ant-test-key-0123456789".to_string(),
        ),
        ("AIGW_VERTEX_TEXT_MODEL__ENDPOINT", fake.url.clone()),
        (
            "AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT",
            "test-project".to_string(),
        ),
        ("GCE_METADATA_HOST", host),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// POST `body` to `path`.
pub async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .header("x-gitlab-global-user-id", "777")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Reads a streamed gateway response incrementally.
pub struct StreamReader {
    framing: Framing,
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    /// The text received so far.
    pub content: String,
    /// SSE events received (name, data).
    pub events: Vec<(String, Value)>,
    /// The stream ended (cleanly or not).
    pub ended: bool,
    /// The transfer broke off (raw framing) or an `error` event came (SSE).
    pub failed: bool,
}

impl StreamReader {
    /// Read `response`.
    pub fn new(framing: Framing, response: reqwest::Response) -> Self {
        Self {
            framing,
            body: response.bytes_stream().boxed(),
            buf: String::new(),
            content: String::new(),
            events: Vec::new(),
            ended: false,
            failed: false,
        }
    }

    /// Read one network chunk; false at the end.
    pub async fn step(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match self.body.next().await {
            Some(Ok(bytes)) => {
                let text = String::from_utf8_lossy(&bytes).to_string();
                match self.framing {
                    Framing::Raw => self.content.push_str(&text),
                    Framing::Sse => {
                        self.buf.push_str(&text);
                        while let Some(end) = self.buf.find("\r\n\r\n") {
                            let block: String = self.buf.drain(..end + 4).collect();
                            if block.starts_with(':') {
                                continue;
                            }
                            let mut name = String::new();
                            let mut data = Value::Null;
                            for line in block.split("\r\n") {
                                if let Some(n) = line.strip_prefix("event: ") {
                                    name = n.to_string();
                                } else if let Some(d) = line.strip_prefix("data: ") {
                                    data = serde_json::from_str(d).unwrap();
                                }
                            }
                            if name == "content_chunk" {
                                self.content.push_str(
                                    data["choices"][0]["delta"]["content"].as_str().unwrap(),
                                );
                            }
                            if name == "error" {
                                self.failed = true;
                            }
                            self.events.push((name, data));
                        }
                    }
                }
                true
            }
            Some(Err(_)) => {
                self.failed = true;
                self.ended = true;
                false
            }
            None => {
                self.ended = true;
                false
            }
        }
    }

    /// Read until the content is at least `expected` long (and starts with it), up to 10 s.
    pub async fn until_content(&mut self, expected: &str) {
        let wait = async {
            while self.content.len() < expected.len() {
                assert!(self.step().await, "stream ended early: {:?}", self.content);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no frame within 10 s (have {:?}, want {expected:?}): frames are being held back",
                    self.content
                )
            });
        assert!(
            self.content.starts_with(expected),
            "{:?} vs {expected:?}",
            self.content
        );
    }

    /// Read to the end, up to 10 s.
    pub async fn read_to_end(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.step().await {}
        })
        .await
        .expect("stream ends within 10 s");
    }

    /// The names of the SSE events received.
    pub fn event_names(&self) -> Vec<&str> {
        self.events.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Frames reach the client one by one as the upstream sends them.
pub async fn paced_frames_arrive_unbatched(fake: &FakeUpstream, kit: &Kit) {
    let texts = ["def ", "f(x", "):\n", "    return x"];
    let mut parts: Vec<Part> = kit.head.iter().cloned().map(Part::Data).collect();
    for (i, t) in texts.iter().enumerate() {
        if i > 0 {
            parts.push(Part::Gate(i));
        }
        parts.push(Part::Data((kit.delta)(t)));
    }
    parts.extend(kit.tail.iter().cloned().map(Part::Data));
    fake.push(kit.reply(parts));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(kit.framing, res);
    let mut expected = String::new();
    for (i, t) in texts.iter().enumerate() {
        expected.push_str(t);
        // Frame i+1 is only sent once the client holds frame i: if the gateway held frames back
        // until more arrived, this would never complete.
        reader.until_content(&expected).await;
        fake.release(i + 1);
    }
    reader.read_to_end().await;
    assert_eq!(reader.content, texts.concat());
    assert!(!reader.failed);
    if kit.framing == Framing::Sse {
        let names = reader.event_names();
        assert_eq!(names.first(), Some(&"stream_start"));
        assert_eq!(names.last(), Some(&"stream_end"));
        assert_eq!(
            names.iter().filter(|n| **n == "content_chunk").count(),
            texts.len(),
            "one content_chunk per upstream frame"
        );
    }
    assert_eq!(fake.requests_to(kit.upstream_path).len(), 1);
}

/// An upstream error frame mid-stream ends the client's stream in the endpoint's own way.
pub async fn mid_stream_error(fake: &FakeUpstream, kit: &Kit) {
    let mut frames = kit.head.clone();
    frames.push((kit.delta)("partial"));
    frames.push(kit.error_frame.clone());
    fake.push(Reply::stream(
        kit.content_type,
        frames.into_iter().map(Part::Data).collect(),
    ));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(kit.framing, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "partial");
    assert!(reader.failed, "the client learns the stream failed");
    if kit.framing == Framing::Sse {
        assert_eq!(
            reader.event_names(),
            ["stream_start", "content_chunk", "error", "stream_end"]
        );
        assert_eq!(reader.events[2].1, json!({"message": "Inference failed"}));
    }
    // Nothing is retried once text has been sent.
    assert_eq!(fake.requests_to(kit.upstream_path).len(), 1);
}

/// An upstream that stops sending: the idle timeout ends the call and closes the upstream
/// connection; before the first byte it is a 503.
pub async fn stall_fires_idle_timeout(fake: &FakeUpstream, kit: &Kit) {
    let mut parts: Vec<Part> = kit.head.iter().cloned().map(Part::Data).collect();
    parts.push(Part::Data((kit.delta)("partial")));
    parts.push(Part::Stall);
    fake.push(kit.reply(parts));
    // Only this scenario uses a short idle timeout, so that a busy machine cannot fire it in
    // the others.
    let gw = kit.gateway(&[("AIGW_MODELS__IDLE_TIMEOUT_S", "1")]);
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(kit.framing, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "partial");
    assert!(reader.failed);
    if kit.framing == Framing::Sse {
        let (name, data) = &reader.events[reader.events.len() - 2];
        assert_eq!(name, "error");
        assert_eq!(data, &json!({"message": "Inference timed out"}));
    }
    assert!(
        fake.wait_closed_by_peer().await,
        "the gateway closes the stalled upstream connection"
    );

    // A stall before any text: a proper error status, not a hung request.
    let mut parts: Vec<Part> = kit.head.iter().cloned().map(Part::Data).collect();
    parts.push(Part::Stall);
    fake.push(kit.reply(parts));
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "Inference failed"})
    );
}

/// An upstream that closes the stream before its end marker: a failed stream, not a clean end.
pub async fn early_close_is_a_failure(fake: &FakeUpstream, kit: &Kit) {
    let mut parts: Vec<Part> = kit.head.iter().cloned().map(Part::Data).collect();
    parts.push(Part::Data((kit.delta)("partial")));
    parts.push(Part::Close);
    fake.push(kit.reply(parts));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(kit.framing, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "partial");
    assert!(reader.failed, "an early close is reported as a failure");
    // A whole call to an upstream that closes early fails with 503.
    fake.push(kit.reply(vec![
        Part::Data(kit.head.first().cloned().unwrap_or_default()),
        Part::Close,
    ]));
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 503);
}

/// A 429 with a long `Retry-After` is not retried: the client gets 503 with `Retry-After`; a
/// short one is waited out and retried.
pub async fn rate_limit_with_retry_after(fake: &FakeUpstream, kit: &Kit) {
    fake.push((kit.error)(429).header("retry-after", "30"));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "30");
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "Inference failed"})
    );
    assert_eq!(fake.requests_to(kit.upstream_path).len(), 1, "not retried");

    fake.push((kit.error)(429).header("retry-after", "0"));
    fake.push((kit.whole)("after the wait"));
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("after the wait"), "{body}");
    assert_eq!(fake.requests_to(kit.upstream_path).len(), 3);
}

/// A 500 before the first byte is retried, and the retry's answer reaches the client.
pub async fn server_error_retried_then_success(fake: &FakeUpstream, kit: &Kit) {
    fake.push((kit.error)(500));
    fake.push((kit.whole)("second time lucky"));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("second time lucky"), "{body}");
    assert_eq!(fake.requests_to(kit.upstream_path).len(), 2);

    // Streams are retried the same way before their first byte.
    fake.push((kit.error)(503));
    fake.push(Reply::stream(
        kit.content_type,
        kit.stream_of(&["streamed ", "retry"])
            .into_iter()
            .map(Part::Data)
            .collect(),
    ));
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(kit.framing, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "streamed retry");

    // Retries run out: two 500s with max_retries=1 is a 503 for the client.
    fake.push((kit.error)(500));
    fake.push((kit.error)(500));
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 503);
    assert_eq!(fake.requests_to(kit.upstream_path).len(), 6);
}

/// A client that goes away mid-stream makes the gateway close the upstream connection.
pub async fn client_disconnect_closes_upstream(fake: &FakeUpstream, kit: &Kit) {
    let mut parts: Vec<Part> = kit.head.iter().cloned().map(Part::Data).collect();
    parts.push(Part::Data((kit.delta)("first")));
    parts.push(Part::Stall);
    fake.push(kit.reply(parts));
    // A long idle timeout: only the client going away can end this call.
    let gw = kit.gateway(&[("AIGW_MODELS__IDLE_TIMEOUT_S", "300")]);
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(kit.framing, res);
    reader.until_content("first").await;
    assert_eq!(fake.closed_mid_reply(), 0);
    drop(reader);
    assert!(
        fake.wait_closed_by_peer().await,
        "the upstream connection is closed when the client goes away"
    );
}
