//! A scriptable fake model provider over a real socket, speaking HTTP/1.1 byte for byte.
//!
//! Each request gets the next scripted [`Reply`] (or the one routed by its path): a status,
//! headers, and body parts written one by one, each flushed on its own with TCP_NODELAY, as a real
//! provider streams. Parts can wait for the test (a [`Part::Gate`] holds the next frame until the
//! test says the client has the previous one, which proves frames are not batched without
//! measuring time), stall forever, or close the connection before the end of the body.
//!
//! While a reply waits (gate or stall) the fake watches its socket; when the gateway closes the
//! connection it is recorded, so a test can assert that a client going away closed the upstream
//! call. Requests (method, path, headers, body) are recorded for assertions on the wire format.
//!
//! The `*_frames` helpers produce each provider's exact bytes: Anthropic Messages and legacy SSE
//! events, OpenAI-compatible `data:` frames ending in `[DONE]`, Vertex `predict` JSON and the
//! streamed JSON array of `serverStreamingPredict`, and Google token answers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// One piece of a reply body.
#[derive(Debug, Clone)]
pub enum Part {
    /// Bytes, written and flushed as one chunk.
    Data(Vec<u8>),
    /// Wait until the test has released gate `n` (or the peer closed).
    Gate(usize),
    /// Send nothing more, keep the connection open (until the peer closes it).
    Stall,
    /// Close the connection without finishing the body.
    Close,
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body parts.
    pub parts: Vec<Part>,
    /// `Transfer-Encoding: chunked` (streams) rather than `Content-Length`.
    pub chunked: bool,
}

impl Reply {
    /// A whole JSON answer.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            parts: vec![Part::Data(serde_json::to_vec(body).unwrap())],
            chunked: false,
        }
    }

    /// A streamed answer of `content_type` made of `parts`.
    pub fn stream(content_type: &str, parts: Vec<Part>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            parts,
            chunked: true,
        }
    }

    /// An SSE stream of `frames`, one part each.
    pub fn sse(frames: Vec<Vec<u8>>) -> Reply {
        Reply::stream(
            "text/event-stream",
            frames.into_iter().map(Part::Data).collect(),
        )
    }

    /// An SSE stream where frame `i` (from 1) waits for gate `i`: the client must have frame
    /// `i` before frame `i + 1` is sent.
    pub fn sse_gated(frames: Vec<Vec<u8>>) -> Reply {
        let mut parts = Vec::new();
        for (i, f) in frames.into_iter().enumerate() {
            if i > 0 {
                parts.push(Part::Gate(i));
            }
            parts.push(Part::Data(f));
        }
        Reply::stream("text/event-stream", parts)
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Shared {
    queue: Mutex<VecDeque<Reply>>,
    routes: Mutex<Vec<(String, Reply)>>,
    requests: Mutex<Vec<Recorded>>,
    /// How many requests have arrived (for tests that await one).
    arrived: watch::Sender<usize>,
    gates: watch::Sender<usize>,
    closed_mid_reply: AtomicUsize,
    closed: Notify,
    connections: AtomicUsize,
}

/// A running fake upstream.
pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// Listen on a free loopback port.
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (gates, _) = watch::channel(0usize);
        let (arrived, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            routes: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            arrived,
            gates,
            closed_mid_reply: AtomicUsize::new(0),
            closed: Notify::new(),
            connections: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                socket.set_nodelay(true).ok();
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(socket, Arc::clone(&s)));
            }
        });
        FakeUpstream { url, shared, task }
    }

    /// Queue a reply for the next request that no route matches.
    pub fn push(&self, reply: Reply) {
        self.shared.queue.lock().unwrap().push_back(reply);
    }

    /// Answer every request whose path contains `path_part` with `reply`.
    pub fn route(&self, path_part: &str, reply: Reply) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .push((path_part.into(), reply));
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests whose path contains `part`.
    pub fn requests_to(&self, part: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(part))
            .collect()
    }

    /// Wait (up to 10 s) until `n` requests have arrived; false if they did not.
    pub async fn wait_requests(&self, n: usize) -> bool {
        let mut arrived = self.shared.arrived.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(10), arrived.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        reached
    }

    /// Let gated frames up to `n` go.
    pub fn release(&self, n: usize) {
        self.shared.gates.send_modify(|g| *g = (*g).max(n));
    }

    /// How many replies were cut short by the peer closing the connection.
    pub fn closed_mid_reply(&self) -> usize {
        self.shared.closed_mid_reply.load(Ordering::SeqCst)
    }

    /// Wait (up to 10 s) until a reply was cut short by the peer closing its connection.
    pub async fn wait_closed_by_peer(&self) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.closed.notified();
                if self.closed_mid_reply() > 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_ok()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

/// Read one request from `socket`; `buf` keeps bytes already read past it (keep-alive).
pub async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let method = first.next()?.to_string();
            let path = first.next()?.to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let start = end + 4;
            while buf.len() < start + len {
                let mut tmp = [0u8; 8192];
                let n = socket.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            return Some(Recorded {
                method,
                path,
                headers,
                body,
            });
        }
        let mut tmp = [0u8; 8192];
        let n = socket.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Wait until the peer closes `socket` (read returns 0 or fails).
async fn peer_closed(socket: &mut TcpStream) {
    let mut tmp = [0u8; 1024];
    loop {
        match socket.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn serve(mut socket: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buf).await {
        let path = request.path.clone();
        shared.requests.lock().unwrap().push(request);
        shared.arrived.send_modify(|n| *n += 1);
        let routed = shared
            .routes
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| path.contains(p.as_str()))
            .map(|(_, r)| r.clone());
        let reply = routed
            .or_else(|| shared.queue.lock().unwrap().pop_front())
            .unwrap_or_else(|| Reply::json(599, &json!({"error": "no scripted reply"})));
        if !write_reply(&mut socket, &reply, &shared).await {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// Write `reply`; false when the connection is over.
async fn write_reply(socket: &mut TcpStream, reply: &Reply, shared: &Shared) -> bool {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if reply.chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
    } else {
        let len: usize = reply
            .parts
            .iter()
            .map(|p| match p {
                Part::Data(d) => d.len(),
                _ => 0,
            })
            .sum();
        head.push_str(&format!("content-length: {len}\r\n\r\n"));
    }
    if socket.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let mut gates = shared.gates.subscribe();
    for part in &reply.parts {
        match part {
            Part::Data(data) => {
                let mut out = Vec::with_capacity(data.len() + 16);
                if reply.chunked {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(data);
                }
                if socket.write_all(&out).await.is_err() || socket.flush().await.is_err() {
                    shared.closed_mid_reply.fetch_add(1, Ordering::SeqCst);
                    shared.closed.notify_waiters();
                    return false;
                }
            }
            Part::Gate(n) => {
                let n = *n;
                let released = async {
                    let _ = gates.wait_for(|g| *g >= n).await;
                };
                tokio::select! {
                    _ = released => {}
                    _ = peer_closed(socket) => {
                        shared.closed_mid_reply.fetch_add(1, Ordering::SeqCst);
                        shared.closed.notify_waiters();
                        return false;
                    }
                }
            }
            Part::Stall => {
                peer_closed(socket).await;
                shared.closed_mid_reply.fetch_add(1, Ordering::SeqCst);
                shared.closed.notify_waiters();
                return false;
            }
            Part::Close => {
                let _ = socket.shutdown().await;
                return false;
            }
        }
    }
    if reply.chunked && socket.write_all(b"0\r\n\r\n").await.is_err() {
        return false;
    }
    true
}

// ---- provider wire formats ---------------------------------------------------------------

/// One SSE event as Anthropic writes it.
pub fn anthropic_event(name: &str, data: &Value) -> Vec<u8> {
    format!(
        "event: {name}\ndata: {}\n\n",
        serde_json::to_string(data).unwrap()
    )
    .into_bytes()
}

/// The frames before the text of an Anthropic Messages stream.
pub fn anthropic_head(input_tokens: u64) -> Vec<Vec<u8>> {
    vec![
        anthropic_event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message", "role": "assistant", "content": [], "model": "claude-3-5-sonnet-20240620",
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ),
        anthropic_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        anthropic_event("ping", &json!({"type": "ping"})),
    ]
}

/// One Anthropic text delta.
pub fn anthropic_delta(text: &str) -> Vec<u8> {
    anthropic_event(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
    )
}

/// The frames after the text of an Anthropic Messages stream.
pub fn anthropic_tail(output_tokens: u64) -> Vec<Vec<u8>> {
    vec![
        anthropic_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ),
        anthropic_event(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
        ),
        anthropic_event("message_stop", &json!({"type": "message_stop"})),
    ]
}

/// A whole Anthropic Messages stream of `texts`.
pub fn anthropic_stream(texts: &[&str], input_tokens: u64, output_tokens: u64) -> Vec<Vec<u8>> {
    let mut frames = anthropic_head(input_tokens);
    frames.extend(texts.iter().map(|t| anthropic_delta(t)));
    frames.extend(anthropic_tail(output_tokens));
    frames
}

/// An Anthropic `error` event.
pub fn anthropic_error_event() -> Vec<u8> {
    anthropic_event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
}

/// A whole Anthropic Messages answer.
pub fn anthropic_message(text: &str, input_tokens: u64, output_tokens: u64) -> Value {
    json!({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
        "model": "claude-3-5-sonnet-20240620", "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}})
}

/// Anthropic's error body.
pub fn anthropic_error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The legacy Text Completions stream of `texts`.
pub fn anthropic_legacy_stream(texts: &[&str]) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = texts
        .iter()
        .map(|t| {
            anthropic_event(
                "completion",
                &json!({"type": "completion", "completion": t, "stop_reason": null, "model": "claude-2.0"}),
            )
        })
        .collect();
    frames.push(anthropic_event("ping", &json!({"type": "ping"})));
    frames.push(anthropic_event(
        "completion",
        &json!({"type": "completion", "completion": "", "stop_reason": "stop_sequence", "model": "claude-2.0"}),
    ));
    frames
}

/// One OpenAI-compatible `data:` frame.
pub fn openai_data(v: &Value) -> Vec<u8> {
    format!("data: {}\n\n", serde_json::to_string(v).unwrap()).into_bytes()
}

/// An OpenAI chat stream of `texts` with a usage frame and `[DONE]`.
pub fn openai_chat_stream(texts: &[&str], prompt: u64, completion: u64) -> Vec<Vec<u8>> {
    let mut frames = vec![openai_data(
        &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
        "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
    )];
    for t in texts {
        frames.push(openai_data(&json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]})));
    }
    frames.push(openai_data(&json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
        "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
    frames.push(openai_data(&json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
        "created": 1, "model": "m", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})));
    frames.push(b"data: [DONE]\n\n".to_vec());
    frames
}

/// An OpenAI text-completions stream of `texts` with a usage frame and `[DONE]`.
pub fn openai_text_stream(texts: &[&str], prompt: u64, completion: u64) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = texts
        .iter()
        .map(|t| {
            openai_data(
                &json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": t, "logprobs": null, "finish_reason": null}]}),
            )
        })
        .collect();
    frames.push(openai_data(&json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})));
    frames.push(b"data: [DONE]\n\n".to_vec());
    frames
}

/// A whole OpenAI text completion.
pub fn openai_text(text: &str, prompt: u64, completion: u64) -> Value {
    json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
}

/// A whole OpenAI chat completion.
pub fn openai_chat(text: &str, prompt: u64, completion: u64) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
}

/// A Vertex `predict` answer with one prediction per text.
pub fn vertex_predict(texts: &[(&str, f64)], input: u64, output: u64) -> Value {
    let predictions: Vec<Value> = texts
        .iter()
        .map(|(t, score)| {
            json!({"content": t, "score": score,
            "safetyAttributes": {"blocked": false, "categories": [], "scores": []},
            "citationMetadata": {"citations": []}})
        })
        .collect();
    json!({"predictions": predictions,
        "metadata": {"tokenMetadata": {"inputTokenCount": {"totalTokens": input, "totalBillableCharacters": input * 4},
            "outputTokenCount": {"totalTokens": output, "totalBillableCharacters": output * 4}}},
        "deployedModelId": "", "model": "", "modelDisplayName": "", "modelVersionId": ""})
}

/// One `StreamingPredictResponse` of `serverStreamingPredict`.
pub fn vertex_stream_element(text: &str) -> Value {
    json!({"outputs": [{"structVal": {
        "content": {"stringVal": [text]},
        "citationMetadata": {"structVal": {"citations": {}}},
        "safetyAttributes": {"structVal": {"blocked": {"boolVal": [false]}, "categories": {}, "scores": {}}}}}]})
}

/// The parts of a streamed JSON array of `texts` as Vertex frames it: `[` + first element,
/// then `\r\n,` + each next element, then `]`.
pub fn vertex_stream(texts: &[&str]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let sep = if i == 0 { "[" } else { "\r\n," };
        parts.push(
            format!(
                "{sep}{}",
                serde_json::to_string(&vertex_stream_element(t)).unwrap()
            )
            .into_bytes(),
        );
    }
    parts.push(b"]".to_vec());
    parts
}

/// A Google OAuth token answer.
pub fn google_token(token: &str) -> Value {
    json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
}
