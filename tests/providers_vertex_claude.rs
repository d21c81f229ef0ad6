//! Claude on Vertex (`rawPredict` / `streamRawPredict`) behind registry prompts, and the
//! OpenAI-compatible models that `litellm` registry prompts with `model_metadata` and `/v1/chat`
//! with `provider: litellm` reach, each against a fake upstream speaking the real wire format
//! (Anthropic's SSE as Vertex relays it, Google's error bodies, a fake metadata server handing
//! out the Google token; OpenAI's chat completions).
//!
//! The Vertex bytes follow what `streamRawPredict` and `rawPredict` were recorded sending
//! (go-vcr cassettes of charmbracelet/fantasy,
//! `providertests/testdata/TestGoogleCommon/vertex-claude-3-7-sonnet/{simple,simple_streaming,tool_streaming}.yaml`):
//! `text/event-stream; charset=utf-8`; `message_start` with `model` as the message's first field,
//! a `msg_vrtx_` id and the cache counters in `usage`; then `ping` (before `content_block_start`,
//! its data `{"type": "ping"}` with a space); every other frame's JSON padded with a varying run
//! of spaces (none included) before its closing `}`. The whole answer is `application/json`
//! with the same field order. Google's own errors (quota, permissions) are pretty-printed
//! `{"error": {"code", "message", "status"}}`, wrapped in a one-element array on
//! `streamRawPredict` (LiteLLM's raw bytes in Aider-AI/aider#1912, cline/cline#651), served as
//! `application/json; charset=UTF-8` and without `Retry-After` (the response headers in
//! anthropics/claude-code#1378). An overload mid-stream is Anthropic's `error` event with
//! `"details": null` (langgenius/dify#7122).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::*;
use common::providers::{self as scenarios, base_env, post, Framing, Kit, StreamReader};
use common::Gateway;
use serde_json::{json, Value};

const PROMPT: &str = "/v1/prompts/code_suggestions/generations";
const VERTEX_PATH: &str = "/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet@20240620";

fn inputs() -> Value {
    json!({"language": "Python", "file_name": "add.py", "prefix": "def add(a, b):\n", "suffix": "",
           "user_instruction": "Write a function that adds two numbers."})
}

/// One event as Vertex relays it: `json` (compact, ending in `}`) with `pad` spaces before its
/// closing `}`.
fn vertex_event(name: &str, json: &str, pad: usize) -> Vec<u8> {
    let open = json.strip_suffix('}').expect("a JSON object");
    format!("event: {name}\ndata: {open}{}}}\n\n", " ".repeat(pad)).into_bytes()
}

/// `message_start` (`model` first, a `msg_vrtx_` id, the cache counters), then `ping` (its data
/// unpadded, with a space), then the text block's start.
fn vertex_head() -> Vec<Vec<u8>> {
    vec![
        vertex_event(
            "message_start",
            r#"{"type":"message_start","message":{"model":"claude-3-5-sonnet-20240620","id":"msg_vrtx_01Lh4mPgW3kt8Zr2ViuWHHmF","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":412,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}}"#,
            11,
        ),
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n".to_vec(),
        vertex_event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            9,
        ),
    ]
}

/// One text delta; the padding varies with the text and is sometimes none, as recorded.
fn vertex_delta(text: &str) -> Vec<u8> {
    vertex_event(
        "content_block_delta",
        &format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
            serde_json::to_string(text).unwrap()
        ),
        [0, 5, 13, 2][text.len() % 4],
    )
}

/// The block's end, `message_delta` with the output tokens, `message_stop`.
fn vertex_tail(output_tokens: u64) -> Vec<Vec<u8>> {
    vec![
        vertex_event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
            3,
        ),
        vertex_event(
            "message_delta",
            &format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{output_tokens}}}}}"#
            ),
            1,
        ),
        vertex_event("message_stop", r#"{"type":"message_stop"}"#, 14),
    ]
}

/// An overload in the middle of a stream: Anthropic's `error` event, `"details": null` included.
fn vertex_overloaded() -> Vec<u8> {
    vertex_event(
        "error",
        r#"{"type":"error","error":{"details":null,"type":"overloaded_error","message":"Overloaded"}}"#,
        14,
    )
}

/// A whole stream of `texts`.
fn vertex_stream(texts: &[&str], output_tokens: u64) -> Reply {
    let mut frames = vertex_head();
    frames.extend(texts.iter().map(|t| vertex_delta(t)));
    frames.extend(vertex_tail(output_tokens));
    Reply::stream(
        "text/event-stream; charset=utf-8",
        frames.into_iter().map(Part::Data).collect(),
    )
}

/// `bytes` as a whole (not chunked) answer of `content_type`.
fn raw(status: u16, content_type: &str, bytes: &str) -> Reply {
    Reply {
        status,
        headers: vec![("content-type".into(), content_type.into())],
        parts: vec![Part::Data(bytes.as_bytes().to_vec())],
        chunked: false,
    }
}

/// Google's error for `status`, pretty-printed; `streamed` (`streamRawPredict`) wraps it in a
/// one-element array. No `Retry-After`: Google sends none.
fn google_error(status: u16, streamed: bool) -> Reply {
    let (name, message) = match status {
        429 => (
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude-3-5-sonnet. Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.",
        ),
        503 => ("UNAVAILABLE", "The service is currently unavailable."),
        _ => ("INTERNAL", "Internal error encountered."),
    };
    let error = format!(
        "{{\n  \"error\": {{\n    \"code\": {status},\n    \"message\": \"{message}\",\n    \"status\": \"{name}\"\n  }}\n}}"
    );
    let body = if streamed {
        format!("[{error}\n]")
    } else {
        format!("{error}\n")
    };
    raw(status, "application/json; charset=UTF-8", &body)
}

/// The whole `rawPredict` answer: `model` first, the cache counters in `usage`.
fn vertex_message(text: &str) -> Reply {
    raw(
        200,
        "application/json",
        &format!(
            r#"{{"model":"claude-3-5-sonnet-20240620","id":"msg_vrtx_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","content":[{{"type":"text","text":{}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":412,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":9}}}}"#,
            serde_json::to_string(text).unwrap()
        ),
    )
}

fn kit(fake: &FakeUpstream) -> Kit {
    fake.route(
        "/computeMetadata/",
        Reply::json(200, &google_token("ya29.vertex-claude-token")),
    );
    let mut env = base_env(fake);
    env.push(("AIGW_VERTEX_ANTHROPIC__ENDPOINT".into(), fake.url.clone()));
    env.push((
        "AIGW_DEFAULT_PROMPTS".into(),
        r#"{"code_suggestions/generations": "vertex"}"#.into(),
    ));
    Kit {
        env,
        stream_path: PROMPT,
        stream_body: json!({"inputs": inputs(), "stream": true}),
        framing: Framing::Raw,
        whole_path: PROMPT,
        whole_body: json!({"inputs": inputs()}),
        upstream_path: "/publishers/anthropic/models/",
        head: vertex_head(),
        delta: vertex_delta,
        tail: vertex_tail(9),
        error_frame: vertex_overloaded(),
        content_type: "text/event-stream; charset=utf-8",
        whole: vertex_message,
        error: |status| google_error(status, false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_frames_arrive_unbatched() {
    let fake = FakeUpstream::start().await;
    scenarios::paced_frames_arrive_unbatched(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_overloaded_error() {
    let fake = FakeUpstream::start().await;
    scenarios::mid_stream_error(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_fires_idle_timeout() {
    let fake = FakeUpstream::start().await;
    scenarios::stall_fires_idle_timeout(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_close_is_a_failure() {
    let fake = FakeUpstream::start().await;
    scenarios::early_close_is_a_failure(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_closes_upstream() {
    let fake = FakeUpstream::start().await;
    scenarios::client_disconnect_closes_upstream(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_raw_predict_with_the_metadata_servers_token() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(vertex_message(
        "<new_code>def add(a, b):\n    return a + b\n",
    ));
    let gw = kit.gateway(&[]);
    let res = post(&gw, PROMPT, &kit.whole_body).await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(
        answer,
        json!("<new_code>def add(a, b):\n    return a + b\n")
    );

    let sent = fake.requests_to(":rawPredict");
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, format!("{VERTEX_PATH}:rawPredict"));
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer ya29.vertex-claude-token")
    );
    let b = sent.json();
    assert!(b.get("model").is_none(), "the model is in the path: {b}");
    assert_eq!(b["anthropic_version"], "vertex-2023-10-16");
    assert!(b.get("stream").is_none());
    assert_eq!(b["max_tokens"], 2048);
    assert_eq!(b["temperature"], 0.0);
    assert_eq!(b["stop_sequences"], json!(["</new_code>"]));
    assert!(b["system"]
        .as_str()
        .unwrap()
        .contains("The user is writing Python in the file add.py."));
    let messages = b["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert!(messages[0]["content"]
        .as_str()
        .unwrap()
        .contains("Write a function that adds two numbers."));
    assert_eq!(messages[1]["role"], "assistant");
    assert!(messages[1]["content"]
        .as_str()
        .unwrap()
        .starts_with("<new_code>"));

    let log = gw.access_log(PROMPT);
    assert_eq!(log["model_engine"], "vertex-ai");
    assert_eq!(log["model_name"], "claude-3-5-sonnet@20240620");
    assert_eq!(log["input_tokens"], 412);
    assert_eq!(log["output_tokens"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_raw_predict_with_usage() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    // Padded deltas and an unpadded one, as Vertex sends them.
    fake.push(vertex_stream(
        &["def add(a, b):", "\n", "    return a + b"],
        14,
    ));
    let gw = kit.gateway(&[]);
    let res = post(&gw, PROMPT, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert!(!reader.failed);
    assert_eq!(reader.content, "def add(a, b):\n    return a + b");

    let sent = &fake.requests_to(":streamRawPredict")[0];
    assert_eq!(sent.path, format!("{VERTEX_PATH}:streamRawPredict"));
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
    let b = sent.json();
    assert_eq!(b["stream"], true);
    assert_eq!(b["anthropic_version"], "vertex-2023-10-16");
    assert!(b.get("model").is_none());

    let log = gw.access_log(PROMPT);
    assert_eq!(log["input_tokens"], 412);
    assert_eq!(
        log["output_tokens"], 14,
        "message_delta's count, not message_start's"
    );
}

/// The `vertex_event` frame that newer Claude models on Vertex are reported to add (a usage
/// summary: vercel/ai#11309) is passed over; where it comes in the stream is not recorded, so
/// it is sent early, where it could be mistaken for the answer's usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_event_frames_are_passed_over() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    let mut frames = vertex_head();
    frames.insert(
        1,
        vertex_event(
            "vertex_event",
            r#"{"type":"vertex_event","usage":{"input_tokens":9,"output_tokens":1,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"web_search_requests":null,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"tiers":{"0-to-200000":{"input_tokens":9,"output_tokens":1,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"web_search_requests":null,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}}}}}"#,
            0,
        ),
    );
    frames.push(vertex_delta("return a + b"));
    frames.extend(vertex_tail(5));
    fake.push(Reply::stream(
        "text/event-stream; charset=utf-8",
        frames.into_iter().map(Part::Data).collect(),
    ));
    let gw = kit.gateway(&[]);
    let res = post(&gw, PROMPT, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert!(!reader.failed);
    assert_eq!(reader.content, "return a + b");
    let log = gw.access_log(PROMPT);
    assert_eq!(log["input_tokens"], 412);
    assert_eq!(log["output_tokens"], 5);
}

/// Vertex's 429 carries no `Retry-After`: it is retried after the usual backoff, and when the
/// retry is refused too it is the original's 421 for registry prompts, with Google's body
/// (the streamed call's array) in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_is_retried_after_the_backoff() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(google_error(429, true));
    fake.push(google_error(429, true));
    let gw = kit.gateway(&[]);
    let res = post(&gw, PROMPT, &kit.stream_body).await;
    assert_eq!(res.status(), 421);
    assert!(res.headers().get("retry-after").is_none());
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "429: Too Many Requests"})
    );
    assert_eq!(
        fake.requests_to(":streamRawPredict").len(),
        2,
        "retried once"
    );
    let log = gw.access_log(PROMPT);
    assert_eq!(log["model_exception_status_code"], 429);
    assert_eq!(
        log["model_exception_message"],
        "RateLimited: vertex-ai answered 429 Too Many Requests: [{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude-3-5-sonnet. Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.\",\n    \"status\": \"RESOURCE_EXHAUSTED\"\n  }\n}\n]"
    );

    // The whole call's 429 is the bare object; a retry that succeeds is the answer.
    fake.push(google_error(429, false));
    fake.push(vertex_message("after the wait"));
    let res = post(&gw, PROMPT, &kit.whole_body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!("after the wait"));
    assert_eq!(fake.requests_to(":rawPredict").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_retried_then_success() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(google_error(503, true));
    fake.push(vertex_stream(&["second time"], 2));
    let gw = kit.gateway(&[]);
    let res = post(&gw, PROMPT, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "second time");
    assert_eq!(fake.requests_to(":streamRawPredict").len(), 2);

    // Retries run out: two 500s are the original's 421 with the upstream status.
    fake.push(google_error(500, false));
    fake.push(google_error(500, false));
    let res = post(&gw, PROMPT, &kit.whole_body).await;
    assert_eq!(res.status(), 421);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "500: Internal Server Error"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_project_the_call_is_refused() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    let gw = kit.gateway(&[("AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT", "")]);
    let res = post(&gw, PROMPT, &kit.whole_body).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "Inference failed"})
    );
    assert!(fake.requests_to("/publishers/").is_empty());
}

/// Mock mode answers litellm-class prompts too (the original would call Vertex).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_mode_answers_the_vertex_prompt() {
    let gw = Gateway::start(
        &[(
            "AIGW_DEFAULT_PROMPTS",
            r#"{"code_suggestions/generations": "vertex"}"#,
        )],
        &["--dev"],
    );
    let res = reqwest::Client::new()
        .post(format!("{}{PROMPT}", gw.api))
        .json(&json!({"inputs": inputs()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text: Value = res.json().await.unwrap();
    assert!(text.as_str().unwrap().starts_with("echo: "), "{text}");
}

// ---- OpenAI-compatible models: registry prompts with model_metadata, /v1/chat litellm -------

fn openai_env(fake: &FakeUpstream) -> Vec<(String, String)> {
    let mut env = base_env(fake);
    env.push(("AIGW_CUSTOM_MODELS__ENABLED".into(), "true".into()));
    env
}

fn start(env: &[(String, String)]) -> Gateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start(&env, &["--dev"])
}

const EXPLAIN: &str = "/v1/prompts/chat/explain_code";

fn explain_body(fake: &FakeUpstream, stream: bool) -> Value {
    json!({"inputs": {"input": "What does this do?", "selected_text": "x = 1", "file_content": ""},
        "stream": stream,
        "model_metadata": {"name": "mistral", "provider": "litellm",
            "endpoint": format!("{}/v1/", fake.url), "api_key": "sk-self-hosted-0123",
            "identifier": "custom_openai/mistral-7b-instruct"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_reaches_the_openai_compatible_endpoint() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(200, &openai_chat("It assigns 1 to x.", 40, 6)));
    fake.push(Reply::sse(openai_chat_stream(
        &["It assigns", " 1 to x."],
        40,
        6,
    )));
    let gw = start(&openai_env(&fake));

    let res = post(&gw, EXPLAIN, &explain_body(&fake, false)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("It assigns 1 to x.")
    );
    let sent = fake.requests_to("/chat/completions");
    assert_eq!(sent.len(), 1);
    // The trailing `/` of the endpoint is stripped; the identifier's model is sent.
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer sk-self-hosted-0123")
    );
    let b = sent[0].json();
    assert_eq!(b["model"], "mistral-7b-instruct");
    assert_eq!(b["temperature"], 0.0);
    assert_eq!(b["max_tokens"], 2048);
    assert_eq!(b["messages"][0]["role"], "system");
    assert!(b["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("What does this do?"));
    let log = gw.access_log(EXPLAIN);
    assert_eq!(log["model_engine"], "litellm");
    assert_eq!(log["model_name"], "mistral");
    assert_eq!(log["output_tokens"], 6);

    let res = post(&gw, EXPLAIN, &explain_body(&fake, true)).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert!(!reader.failed);
    assert_eq!(reader.content, "It assigns 1 to x.");
    let sent = fake.requests_to("/chat/completions");
    assert_eq!(sent.len(), 2);
    let b = sent[1].json();
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"], json!({"include_usage": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_errors() {
    let fake = FakeUpstream::start().await;
    let gw = start(&openai_env(&fake));
    // No endpoint: nothing to call, said plainly.
    let res = post(
        &gw,
        EXPLAIN,
        &json!({"inputs": {"input": "q", "selected_text": "x", "file_content": ""},
            "model_metadata": {"name": "mistral", "provider": "litellm"}}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let d: Value = res.json().await.unwrap();
    assert!(
        d["detail"].as_str().unwrap().contains("model_endpoint"),
        "{d}"
    );
    // The upstream's error status is the original's 421.
    fake.push(Reply::json(
        401,
        &json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
    ));
    let res = post(&gw, EXPLAIN, &explain_body(&fake, false)).await;
    assert_eq!(res.status(), 421);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "401: Unauthorized"})
    );
}

fn chat_body(fake: &FakeUpstream, stream: bool) -> Value {
    json!({"prompt_components": [{"type": "app", "metadata": {"source": "gitlab", "version": "17.5"},
        "payload": {"content": "Explain x = 1", "provider": "litellm", "model": "mistral",
            "model_endpoint": format!("{}/v1", fake.url), "model_api_key": "sk-chat-0123"}}],
        "stream": stream})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_chat_litellm_whole_and_streamed() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(200, &openai_chat("x is one.", 12, 4)));
    fake.push(Reply::sse(openai_chat_stream(&["x is", " one."], 12, 4)));
    let gw = start(&openai_env(&fake));

    let res = post(&gw, "/v1/chat/explain_code", &chat_body(&fake, false)).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["response"], "x is one.");
    assert_eq!(v["metadata"]["provider"], "litellm");
    assert_eq!(v["metadata"]["model"], "mistral");
    let sent = &fake.requests_to("/chat/completions")[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-chat-0123"));
    assert_eq!(
        sent.json(),
        json!({"model": "mistral", "messages": [{"role": "user", "content": "Explain x = 1"}],
            "max_tokens": 2048, "temperature": 0.2, "top_p": 0.95, "stop": ["</new_code>"]})
    );
    let log = gw.access_log("/v1/chat/explain_code");
    assert_eq!(log["model_engine"], "litellm");
    assert_eq!(log["input_tokens"], 12);

    let res = post(&gw, "/v1/chat/explain_code", &chat_body(&fake, true)).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert!(!reader.failed);
    assert_eq!(reader.content, "x is one.");
    assert_eq!(
        fake.requests_to("/chat/completions")[1].json()["stream"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_chat_litellm_params_identifier_and_missing_endpoint() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(200, &openai_chat("ok", 1, 1)));
    let gw = start(&openai_env(&fake));
    let mut body = chat_body(&fake, false);
    let payload = &mut body["prompt_components"][0]["payload"];
    payload["params"] = json!({"temperature": 0.7, "max_tokens_to_sample": 8000, "stop_sequences": ["Observation:"]});
    payload["model_identifier"] = json!("openai/gpt-4o-mini");
    payload["content"] =
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]);
    let res = post(&gw, "/v1/chat/write_tests", &body).await;
    assert_eq!(res.status(), 200);
    let b = fake.requests_to("/chat/completions")[0].json();
    assert_eq!(b["model"], "gpt-4o-mini");
    assert_eq!(b["temperature"], 0.7);
    assert_eq!(b["max_tokens"], 4096, "capped as for every chat model");
    assert_eq!(b["stop"], json!(["Observation:"]));
    assert_eq!(b["messages"].as_array().unwrap().len(), 2);

    let mut body = chat_body(&fake, false);
    body["prompt_components"][0]["payload"]
        .as_object_mut()
        .unwrap()
        .remove("model_endpoint");
    let res = post(&gw, "/v1/chat/explain_code", &body).await;
    assert_eq!(res.status(), 422);
    let d: Value = res.json().await.unwrap();
    assert!(
        d["detail"].as_str().unwrap().contains("model_endpoint"),
        "{d}"
    );

    // The upstream failing: the original's Anthropic-worded 502.
    fake.push(Reply::json(500, &json!({"error": {"message": "boom"}})));
    fake.push(Reply::json(500, &json!({"error": {"message": "boom"}})));
    let res = post(&gw, "/v1/chat/explain_code", &chat_body(&fake, false)).await;
    assert_eq!(res.status(), 502);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "Anthropic API Status Error."})
    );
}
