//! Claude on Vertex (`rawPredict` / `streamRawPredict`) behind registry prompts, and the
//! OpenAI-compatible models that `litellm` registry prompts with `model_metadata` and `/v1/chat`
//! with `provider: litellm` reach, each against a fake upstream speaking the real wire format
//! (Anthropic's SSE as Vertex relays it, Google's error bodies, a fake metadata server handing
//! out the Google token; OpenAI's chat completions).

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

/// `message_start` as Vertex relays it (a `msg_vrtx_` id), the text block start and a ping.
fn vertex_head() -> Vec<Vec<u8>> {
    vec![
        anthropic_event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_vrtx_01Lh4mPgW3kt8Zr2ViuWHHmF",
                "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-20240620",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 412, "output_tokens": 1}}}),
        ),
        anthropic_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        anthropic_event("ping", &json!({"type": "ping"})),
    ]
}

/// Google's error body for `status`.
fn google_error(status: u16) -> Reply {
    let (name, message) = match status {
        429 => (
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude-3-5-sonnet. Please submit a quota increase request.",
        ),
        503 => ("UNAVAILABLE", "The service is currently unavailable."),
        _ => ("INTERNAL", "Internal error encountered."),
    };
    Reply::json(
        status,
        &json!({"error": {"code": status, "message": message, "status": name}}),
    )
}

fn vertex_message(text: &str) -> Reply {
    let mut m = anthropic_message(text, 412, 9);
    m["id"] = json!("msg_vrtx_013Zva2CMHLNnXjNJJKqJ2EF");
    Reply::json(200, &m)
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
        delta: anthropic_delta,
        tail: anthropic_tail(9),
        error_frame: anthropic_error_event(),
        content_type: "text/event-stream; charset=utf-8",
        whole: |text| vertex_message(text),
        error: google_error,
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
    let mut frames = vertex_head();
    frames.push(anthropic_delta("def add(a, b):"));
    frames.push(anthropic_delta("\n    return a + b"));
    frames.extend(anthropic_tail(14));
    fake.push(Reply::stream(
        "text/event-stream; charset=utf-8",
        frames.into_iter().map(Part::Data).collect(),
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
    assert_eq!(log["output_tokens"], 14);
}

/// A 429 with a long `Retry-After` is not retried and is the original's 421 for registry
/// prompts; a short one is waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_with_retry_after() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(google_error(429).header("retry-after", "30"));
    let gw = kit.gateway(&[]);
    let res = post(&gw, PROMPT, &kit.whole_body).await;
    assert_eq!(res.status(), 421);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "429: Too Many Requests"})
    );
    assert_eq!(fake.requests_to(":rawPredict").len(), 1, "not retried");
    let log = gw.access_log(PROMPT);
    assert_eq!(log["model_exception_status_code"], 429);
    assert!(
        log["model_exception_message"]
            .as_str()
            .unwrap()
            .contains("RESOURCE_EXHAUSTED"),
        "{log}"
    );

    fake.push(google_error(429).header("retry-after", "0"));
    fake.push(vertex_message("after the wait"));
    let res = post(&gw, PROMPT, &kit.whole_body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!("after the wait"));
    assert_eq!(fake.requests_to(":rawPredict").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_retried_then_success() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(google_error(503));
    let mut frames = vertex_head();
    frames.push(anthropic_delta("second time"));
    frames.extend(anthropic_tail(2));
    fake.push(Reply::stream(
        "text/event-stream; charset=utf-8",
        frames.into_iter().map(Part::Data).collect(),
    ));
    let gw = kit.gateway(&[]);
    let res = post(&gw, PROMPT, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "second time");
    assert_eq!(fake.requests_to(":streamRawPredict").len(), 2);

    // Retries run out: two 500s are the original's 421 with the upstream status.
    fake.push(google_error(500));
    fake.push(google_error(500));
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
