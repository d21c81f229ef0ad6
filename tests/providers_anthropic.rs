//! Anthropic (Messages and legacy Text Completions) through the gateway against a fake
//! Anthropic API speaking its SSE byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::*;
use common::metric_value;
use common::providers::{self as scenarios, base_env, post, Framing, Kit, StreamReader};
use serde_json::{json, Value};

fn kit(fake: &FakeUpstream) -> Kit {
    Kit {
        env: base_env(fake),
        stream_path: "/v4/code/suggestions",
        stream_body: json!({"prompt_components": [{"type": "code_editor_completion", "payload": {
            "file_name": "main.py", "content_above_cursor": "def f(", "content_below_cursor": "",
            "model_provider": "anthropic", "model_name": "claude-3-5-sonnet-20240620", "stream": true}}]}),
        framing: Framing::Sse,
        whole_path: "/v2/code/completions",
        whole_body: json!({
            "prompt_version": 3,
            "current_file": {"file_name": "main.py", "content_above_cursor": "def f(", "content_below_cursor": ""},
            "model_provider": "anthropic", "model_name": "claude-3-5-sonnet-20240620",
            "prompt": [{"role": "system", "content": "You complete code."}, {"role": "user", "content": "def f("}],
        }),
        upstream_path: "/v1/messages",
        head: anthropic_head(11),
        delta: anthropic_delta,
        tail: anthropic_tail(5),
        error_frame: anthropic_error_event(),
        content_type: "text/event-stream; charset=utf-8",
        whole: |text| Reply::json(200, &anthropic_message(text, 11, 5)),
        error: |status| {
            let kind = match status {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            Reply::json(status, &anthropic_error_body(kind, "upstream says no"))
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_frames_arrive_unbatched() {
    let fake = FakeUpstream::start().await;
    scenarios::paced_frames_arrive_unbatched(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_error_event() {
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
async fn whole_messages_call_wire_format_and_usage() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::json(
        200,
        &anthropic_message("x: int) -> int:", 42, 9),
    ));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 200);
    let raw = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&raw).unwrap();
    // Byte for byte, in the original's field order.
    assert_eq!(
        raw,
        format!(
            r#"{{"id":"id","model":{{"engine":"anthropic","name":"claude-3-5-sonnet-20240620","lang":"python","tokens_consumption_metadata":{{"input_tokens":{},"output_tokens":9,"context_tokens_sent":0,"context_tokens_used":0}}}},"experiments":[],"object":"text_completion","created":{},"choices":[{{"text":"x: int) -> int:","index":0,"finish_reason":"length"}}]}}"#,
            body["model"]["tokens_consumption_metadata"]["input_tokens"], body["created"]
        )
    );
    assert_eq!(body["choices"][0]["text"], "x: int) -> int:");
    assert_eq!(body["model"]["engine"], "anthropic");
    assert_eq!(body["model"]["name"], "claude-3-5-sonnet-20240620");
    assert_eq!(
        body["model"]["tokens_consumption_metadata"]["output_tokens"],
        9
    );

    let sent = &fake.requests_to("/v1/messages")[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test-key-0123456789"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("accept"), Some("application/json"));
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        r#"{"model":"claude-3-5-sonnet-20240620","max_tokens":4096,"system":"You complete code.","messages":[{"role":"user","content":"def f("}],"temperature":0.2}"#
    );
    let log = gw.access_log("/v2/code/completions");
    assert_eq!(log["input_tokens"], 42);
    assert_eq!(log["output_tokens"], 9);
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "model_tokens_total",
            &["direction=\"input\"", "anthropic"]
        ),
        Some(42.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "model_tokens_total",
            &["direction=\"output\"", "anthropic"]
        ),
        Some(9.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_usage_is_counted_and_keys_never_logged() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::sse(anthropic_stream(&["a", "b"], 13, 2)));
    // The upstream echoes our key back in an error: it must not reach the logs.
    fake.push(Reply::json(
        400,
        &anthropic_error_body(
            "invalid_request_error",
            "bad key sk-ant-test-key-0123456789",
        ),
    ));
    let gw = kit.gateway(&[]);
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    let mut reader = StreamReader::new(Framing::Sse, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "ab");
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "model_tokens_total", &["direction=\"input\""]),
        Some(13.0)
    );
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 503);
    let log = gw.access_log("/v2/code/completions");
    let message = log["model_exception_message"].as_str().unwrap();
    assert!(message.contains("[REDACTED]"), "{message}");
    assert!(!gw.lines().join("\n").contains("sk-ant-test-key-0123456789"));
    assert_eq!(
        fake.requests_to("/v1/messages").len(),
        2,
        "a 400 is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_text_completions_stream() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::sse(anthropic_legacy_stream(&["def ", "hello():"])));
    let gw = kit.gateway(&[]);
    let res = post(
        &gw,
        "/v2/code/generations",
        &json!({"prompt_version": 2, "stream": true, "model_provider": "anthropic",
                "current_file": {"file_name": "a.py", "content_above_cursor": "# hello\n", "content_below_cursor": ""},
                "prompt": "\n\nHuman: write hello\n\nAssistant:"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "def hello():");
    let sent = &fake.requests_to("/v1/complete")[0];
    let body = sent.json();
    assert_eq!(body["model"], "claude-2.0");
    assert_eq!(body["prompt"], "\n\nHuman: write hello\n\nAssistant:");
    assert_eq!(body["max_tokens_to_sample"], 2048);
    assert_eq!(body["stop_sequences"], json!(["</new_code>", "\n\nHuman:"]));
    assert_eq!(body["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_api_key_is_inference_failed() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    let gw = kit.gateway(&[("ANTHROPIC_API_KEY", "")]);
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 503);
    assert!(fake.requests().is_empty());
}

/// `/v2/code/generations` with `prompt_id`: the registry prompt's rendered messages reach the
/// Messages API with the prompt's model, parameters and stop, whole and streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_generations_prompt_id_reach_anthropic() {
    let fake = FakeUpstream::start().await;
    let gw = kit(&fake).gateway(&[]);
    let body = json!({
        "prompt_version": 1,
        "current_file": {"file_name": "lib.rs", "content_above_cursor": "// add two numbers\n", "content_below_cursor": ""},
        "prompt_id": "code_suggestions/generations",
    });
    fake.push(Reply::json(
        200,
        &anthropic_message("fn add(a: i32, b: i32) -> i32 { a + b }\n", 20, 9),
    ));
    let res = post(&gw, "/v2/code/generations", &body).await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(
        answer["model"],
        json!({"engine": "agent", "name": "Claude 3 Code Generations Agent", "lang": "rust", "tokens_consumption_metadata": null})
    );
    assert_eq!(
        answer["choices"],
        json!([{"text": "fn add(a: i32, b: i32) -> i32 { a + b }\n", "index": 0, "finish_reason": "length"}])
    );
    let sent = fake.requests_to("/v1/messages");
    assert_eq!(sent.len(), 1);
    let sent = sent[0].json();
    assert_eq!(sent["model"], "claude-3-5-sonnet-20240620");
    assert_eq!(sent["max_tokens"], 2048);
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["stop_sequences"], json!(["</new_code>"]));
    let system = sent["system"].as_str().unwrap();
    assert!(system.contains("writing rust in the file lib.rs"));
    assert!(system.contains("// add two numbers\n<cursor>"), "{system}");
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[1]["role"], "assistant");
    assert!(messages[1]["content"].to_string().contains("<new_code>"));

    // Streamed: the text deltas as raw text.
    fake.push(Reply::sse(anthropic_stream(&["fn add", "(a: i32)"], 20, 4)));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let res = post(&gw, "/v2/code/generations", &streamed).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "fn add(a: i32)");
    let sent = fake.requests_to("/v1/messages");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].json()["stream"], true);
}

/// A 429 whose `retry-after-ms` is absurd (`1e30`, more than a `Duration` holds) is still the
/// upstream's 429: the wait is clamped to a day, which is longer than any retry waits, so the
/// client gets the original's 421 at once (it panicked the request actor: 503 "Inference failed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_ms_is_still_the_upstreams_429() {
    let fake = FakeUpstream::start().await;
    let gw = kit(&fake).gateway(&[]);
    fake.push(
        Reply::json(429, &anthropic_error_body("rate_limit_error", "slow down"))
            .header("retry-after-ms", "1e30"),
    );
    let res = post(
        &gw,
        "/v1/prompts/generate_commit_message",
        &json!({"inputs": {"diff": "diff --git a/x b/x\n+hello"}}),
    )
    .await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (status, body),
        (421, json!({"detail": "429: Too Many Requests"})),
        "{}",
        gw.stderr()
    );
    assert_eq!(fake.requests().len(), 1, "not retried");
}

/// A client that gives up while the gateway still waits for the model's first text (a
/// cancelled completion) cancels the upstream call at once, not when the idle timeout fires,
/// and its request still gets an access-log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_first_chunk_cancels_the_upstream_call() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    let gw = kit.gateway(&[("AIGW_MODELS__IDLE_TIMEOUT_S", "300")]);
    // The head and `message_start`, then nothing.
    let mut parts: Vec<Part> = anthropic_head(11).into_iter().map(Part::Data).collect();
    parts.push(Part::Stall);
    fake.push(Reply::stream("text/event-stream", parts));
    let client = reqwest::Client::new();
    let call = client
        .post(format!("{}{}", gw.api, kit.stream_path))
        .json(&kit.stream_body)
        .send();
    // The client goes away once the upstream has the request.
    tokio::select! {
        res = call => panic!("answered before any text: {:?}", res.map(|r| r.status())),
        arrived = fake.wait_requests(1) => assert!(arrived),
    }
    drop(client);
    assert!(
        fake.wait_closed_by_peer().await,
        "the upstream call is still open after its client went away"
    );
    let line = gw.access_log(kit.stream_path);
    assert_eq!(line["client_disconnected"], true, "{line}");
    assert_eq!(line["status_code"], 499, "{line}");
}

/// An upstream that never completes its SSE line (here 17 MiB of one `data:` line, then
/// silence) is a failed call once it passes 16 MiB, not a buffer growing until the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_sse_line_is_a_failed_call() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    let gw = kit.gateway(&[("AIGW_MODELS__IDLE_TIMEOUT_S", "300")]);
    let mut parts: Vec<Part> = anthropic_head(11).into_iter().map(Part::Data).collect();
    parts.push(Part::Data(b"event: content_block_delta\ndata: ".to_vec()));
    parts.extend((0..68).map(|_| Part::Data(vec![b'x'; 256 * 1024])));
    parts.push(Part::Stall);
    fake.push(Reply::stream("text/event-stream", parts));
    // No text came before the failure: the original's 503, before any byte of a stream.
    let res = post(&gw, kit.stream_path, &kit.stream_body).await;
    let status = res.status().as_u16();
    let body = tokio::time::timeout(std::time::Duration::from_secs(20), res.text())
        .await
        .expect("the call ends")
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"detail":"Inference failed"}"#)
    );
    assert!(
        fake.wait_closed_by_peer().await,
        "the upstream call was closed"
    );
    let line = gw.access_log(kit.stream_path);
    let logged = line.to_string();
    assert!(logged.contains("without completing a frame"), "{line}");
}
