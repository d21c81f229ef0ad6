//! OpenAI-compatible self-hosted models (`litellm`), Fireworks and Mistral Codestral through the
//! gateway against a fake OpenAI-compatible server speaking its SSE byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::*;
use common::providers::{self as scenarios, base_env, post, Framing, Kit, StreamReader};
use serde_json::{json, Value};

fn text_delta(text: &str) -> Vec<u8> {
    openai_data(
        &json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "codellama",
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": null}]}),
    )
}

fn openai_error(status: u16) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": "upstream says no", "type": "server_error", "param": null, "code": null}}),
    )
}

fn body(fake: &FakeUpstream, stream: bool) -> Value {
    json!({"prompt_version": 1, "stream": stream,
        "current_file": {"file_name": "main.py", "content_above_cursor": "def f(", "content_below_cursor": ""},
        "model_provider": "litellm", "model_name": "codellama",
        "model_endpoint": format!("{}/v1", fake.url), "model_api_key": "sk-self-hosted-secret"})
}

fn kit(fake: &FakeUpstream) -> Kit {
    let mut env = base_env(fake);
    env.push(("AIGW_CUSTOM_MODELS__ENABLED".into(), "true".into()));
    let tail = openai_text_stream(&[], 7, 3);
    Kit {
        env,
        stream_path: "/v2/code/completions",
        stream_body: body(fake, true),
        framing: Framing::Raw,
        whole_path: "/v2/code/completions",
        whole_body: body(fake, false),
        upstream_path: "/v1/completions",
        head: vec![text_delta("")],
        delta: text_delta,
        tail,
        error_frame: openai_data(
            &json!({"error": {"message": "CUDA out of memory", "type": "internal_error", "code": 500}}),
        ),
        content_type: "text/event-stream; charset=utf-8",
        whole: |text| Reply::json(200, &openai_text(text, 7, 3)),
        error: openai_error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_frames_arrive_unbatched() {
    let fake = FakeUpstream::start().await;
    scenarios::paced_frames_arrive_unbatched(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_error_frame() {
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
async fn rate_limit_with_retry_after() {
    let fake = FakeUpstream::start().await;
    scenarios::rate_limit_with_retry_after(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_retried_then_success() {
    let fake = FakeUpstream::start().await;
    scenarios::server_error_retried_then_success(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_closes_upstream() {
    let fake = FakeUpstream::start().await;
    scenarios::client_disconnect_closes_upstream(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completion_wire_format_and_usage() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::sse(openai_text_stream(&["x", ", y)"], 21, 4)));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "x, y)");
    let sent = &fake.requests_to("/v1/completions")[0];
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-self-hosted-secret")
    );
    let b = sent.json();
    assert_eq!(b["model"], "codellama");
    assert_eq!(b["prompt"], "def f(");
    assert_eq!(b["max_tokens"], 16);
    assert_eq!(b["temperature"], 0.95);
    assert_eq!(b["top_p"], 0.95);
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"], json!({"include_usage": true}));
    let metrics = gw.metrics_text().await;
    assert_eq!(
        common::metric_value(
            &metrics,
            "model_tokens_total",
            &["direction=\"output\"", "litellm"]
        ),
        Some(4.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_generation_with_identifier() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::json(200, &openai_chat("print('hi')", 9, 4)));
    let gw = kit.gateway(&[]);
    let res = post(
        &gw,
        "/v2/code/generations",
        &json!({"prompt_version": 3, "model_provider": "litellm", "model_name": "mistral",
            "model_endpoint": format!("{}/v1/", fake.url), "model_identifier": "custom_openai/mistral-7b-instruct",
            "current_file": {"file_name": "main.py", "content_above_cursor": "# hi\n", "content_below_cursor": ""},
            "prompt": [{"role": "user", "content": "say hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res: Value = res.json().await.unwrap();
    assert_eq!(res["choices"][0]["text"], "print('hi')");
    let sent = &fake.requests_to("/v1/chat/completions")[0];
    let b = sent.json();
    assert_eq!(b["model"], "mistral-7b-instruct");
    assert_eq!(
        b["messages"],
        json!([{"role": "user", "content": "say hi"}])
    );
    assert_eq!(b["stop"], json!(["</new_code>"]));
    assert_eq!(sent.header("authorization"), Some("Bearer stubbed-api-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_endpoints_need_the_setting() {
    let fake = FakeUpstream::start().await;
    let gw = common::Gateway::start(
        &base_env(&fake)
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        &["--dev"],
    );
    let res = post(&gw, "/v2/code/completions", &body(&fake, false)).await;
    assert_eq!(res.status(), 422);
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fireworks_regional_endpoint_fim_prompt_and_affinity() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::json(200, &openai_text(" x + 1", 30, 3)));
    let regions = json!({"us": {"endpoint": format!("{}/fw-us/v1", fake.url), "identifier": "accounts/fireworks/models/qwen2p5-coder-7b#accounts/gitlab/deployments/abc"},
        "europe": {"endpoint": format!("{}/fw-eu/v1", fake.url), "identifier": "eu-model"}})
    .to_string();
    let gw = kit.gateway(&[
        ("AIGW_MODEL_KEYS__FIREWORKS_API_KEY", "fw-secret-key"),
        (
            "AIGW_MODEL_ENDPOINTS__FIREWORKS_REGIONAL_ENDPOINTS",
            regions.as_str(),
        ),
        ("AIGW_GOOGLE_CLOUD_PLATFORM__LOCATION", "europe-west2"),
    ]);
    let res = post(
        &gw,
        "/v2/code/completions",
        &json!({"prompt_version": 1, "model_provider": "fireworks_ai",
            "current_file": {"file_name": "main.py", "content_above_cursor": "def inc(x):\n    return", "content_below_cursor": "\n"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res: Value = res.json().await.unwrap();
    assert_eq!(res["choices"][0]["text"], " x + 1");
    assert_eq!(res["model"]["engine"], "fireworks_ai");
    assert_eq!(res["model"]["name"], "qwen2p5-coder-7b");
    let sent = &fake.requests_to("/fw-eu/v1/completions")[0];
    assert_eq!(sent.header("authorization"), Some("Bearer fw-secret-key"));
    assert_eq!(sent.header("x-session-affinity"), Some("777"));
    let b = sent.json();
    assert_eq!(b["model"], "eu-model");
    assert_eq!(b["max_tokens"], 64);
    let prompt = b["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("<|fim_prefix|>"), "{prompt}");
    assert!(
        prompt.ends_with("<|fim_suffix|>\n<|fim_middle|>"),
        "{prompt}"
    );
    assert!(b["stop"]
        .as_array()
        .unwrap()
        .contains(&json!("<|fim_pad|>")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codestral_fim_with_mistral_key() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::json(200, &openai_chat("b)", 12, 2)));
    let gw = kit.gateway(&[("AIGW_MODEL_KEYS__MISTRAL_API_KEY", "mistral-secret-key")]);
    let res = post(
        &gw,
        "/v2/code/completions",
        &json!({"prompt_version": 1, "model_provider": "codestral", "model_name": "codestral",
            "model_endpoint": format!("{}/mistral/v1", fake.url),
            "current_file": {"file_name": "main.py", "content_above_cursor": "def add(a, ", "content_below_cursor": ":\n    pass"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res: Value = res.json().await.unwrap();
    assert_eq!(res["choices"][0]["text"], "b)");
    assert_eq!(res["model"]["engine"], "codestral");
    let sent = &fake.requests_to("/mistral/v1/fim/completions")[0];
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer mistral-secret-key")
    );
    let b = sent.json();
    assert_eq!(b["model"], "codestral");
    assert_eq!(b["prompt"], "def add(a, ");
    assert_eq!(b["suffix"], ":\n    pass");
}

/// A self-hosted model that numbers its choice 4294967295: the gateway sized its answer by the
/// upstream's index and the allocation (103 GB) aborted the whole process. A candidate index
/// beyond any provider's is now ignored, and the gateway answers and stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_choice_index_is_ignored() {
    let fake = FakeUpstream::start().await;
    let gw = kit(&fake).gateway(&[]);
    let mut answer = openai_text("x", 7, 3);
    answer["choices"][0]["index"] = json!(u32::MAX);
    fake.push(Reply::json(200, &answer));
    let res = post(&gw, "/v2/code/completions", &body(&fake, false)).await;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", gw.stderr());
    let health = reqwest::get(format!("{}/monitoring/healthz", gw.api)).await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
}
