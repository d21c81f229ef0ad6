//! Code Suggestions (issue 3) over real sockets against the real binary, with the mock models
//! and chaos fault injection standing in for misbehaving providers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{metric_value, Gateway};
use futures::StreamExt;
use serde_json::{json, Value};

const CHAOS_TOKEN: &str = "test-chaos-token-0123456789";

fn dev() -> Gateway {
    Gateway::start(&[], &["--dev"])
}

fn dev_with_chaos(extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![
        ("AIGW_CHAOS__ENABLED", "true"),
        ("AIGW_CHAOS__TOKEN", CHAOS_TOKEN),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env, &["--dev"])
}

async fn add_fault(gw: &Gateway, fault: Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/chaos/faults", gw.metrics))
        .bearer_auth(CHAOS_TOKEN)
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn post(gw: &Gateway, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn v2_body() -> Value {
    json!({
        "prompt_version": 1,
        "current_file": {
            "file_name": "main.py",
            "content_above_cursor": "def is_even(n: int) ->",
            "content_below_cursor": "\n",
        },
        "choices_count": 2,
        "telemetry": [{"model_engine": "vertex-ai", "model_name": "code-gecko@002", "lang": "python",
                        "experiments": [{"name": "exp_truncate_suffix", "variant": 0}],
                        "requests": 1, "accepts": 1, "errors": 0}],
        "unknown_field": "ignored",
    })
}

fn anthropic_v2_stream() -> Value {
    json!({
        "prompt_version": 3,
        "current_file": {"file_name": "main.py", "content_above_cursor": "def f():", "content_below_cursor": ""},
        "model_provider": "anthropic",
        "model_name": "claude-3-5-sonnet-20240620",
        "prompt": [{"role": "user", "content": "complete def f():"}],
        "stream": true,
    })
}

fn v4_stream(text: &str) -> Value {
    json!({"prompt_components": [{"type": "code_editor_completion", "payload": {
        "file_name": "main.py", "content_above_cursor": text, "content_below_cursor": "",
        "model_provider": "anthropic", "model_name": "claude-3-5-sonnet-20240620", "stream": true}}]})
}

/// The mock chat model's echo for one user message, as the original writes it.
fn chat_echo(content: &str, stream: bool) -> String {
    format!(
        "echo: {{\"messages\": [{{\"role\": \"user\", \"content\": {}}}], \"stream\": {stream}, \"kwargs\": {{}}}}",
        serde_json::to_string(content).unwrap()
    )
}

/// `re.split(r"(\s)", text)` without empty pieces.
fn split_ws(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(c.to_string());
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[tokio::test]
async fn v2_completions_legacy_vertex_path_with_the_mock() {
    let gw = dev();
    for path in ["/v2/code/completions", "/v2/completions"] {
        let res = post(&gw, path, v2_body()).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert!(res.headers().contains_key("x-gateway-overhead-ms"));
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["id"], "id");
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["model"]["engine"], "llm-provider-mocked");
        assert_eq!(body["model"]["name"], "llm-mocked");
        assert_eq!(body["model"]["lang"], "python");
        let tokens = &body["model"]["tokens_consumption_metadata"];
        assert!(tokens["input_tokens"].as_u64().unwrap() > 0);
        assert_eq!(tokens["context_tokens_sent"], 0);
        assert_eq!(
            body["experiments"],
            json!([{"name": "exp_truncate_suffix", "variant": 0}])
        );
        assert!(body["created"].as_i64().unwrap() > 1_700_000_000);
        let choices = body["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0]["index"], 0);
        assert_eq!(choices[0]["finish_reason"], "length");
        let text = choices[0]["text"].as_str().unwrap();
        assert!(text.starts_with("echo: "), "{text}");
        // The mock echoes the built prompt: the header line, then the prefix, and the suffix.
        let echoed: Value = serde_json::from_str(text.trim_start_matches("echo: ")).unwrap();
        assert_eq!(
            echoed["prefix"],
            "# This code has a filename of main.py and is written in Python.\ndef is_even(n: int) ->"
        );
        assert_eq!(echoed["suffix"], "\n");
        assert_eq!(echoed["kwargs"], json!({"candidate_count": 2}));
    }
    // The access log carries the model fields.
    let r = gw.access_log("/v2/code/completions");
    assert_eq!(r["model_engine"], "llm-provider-mocked");
    assert_eq!(r["lang"], "python");
}

#[tokio::test]
async fn an_empty_prefix_gets_an_empty_answer_without_a_call() {
    let gw = dev();
    let mut body = v2_body();
    body["current_file"]["content_above_cursor"] = json!("");
    let res: Value = post(&gw, "/v2/code/completions", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["choices"], json!([]));
}

#[tokio::test]
async fn v2_streams_raw_text() {
    let gw = dev();
    let res = post(&gw, "/v2/code/completions", anthropic_v2_stream()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert_eq!(
        res.text().await.unwrap(),
        chat_echo("complete def f():", true)
    );
}

#[tokio::test]
async fn v2_generations_answer_one_choice_without_token_metadata() {
    let gw = dev();
    let body = json!({
        "current_file": {"file_name": "app.rb", "content_above_cursor": "# print hello\n", "content_below_cursor": ""},
    });
    let body = {
        let mut b = body;
        b["prompt_version"] = json!(1);
        b
    };
    let res = post(&gw, "/v2/code/generations", body).await;
    assert_eq!(res.status(), 200);
    let res: Value = res.json().await.unwrap();
    assert_eq!(res["model"]["tokens_consumption_metadata"], Value::Null);
    assert_eq!(res["model"]["lang"], "ruby");
    assert_eq!(res["experiments"], json!([]));
    let choices = res["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    let text = choices[0]["text"].as_str().unwrap();
    assert!(text.contains("```ruby\\n# print hello\\n\\n```"), "{text}");
}

#[tokio::test]
async fn v3_whole_and_streamed() {
    let gw = dev();
    let res = post(
        &gw,
        "/v3/code/completions",
        json!({"prompt_components": [{"type": "code_editor_completion", "payload": {
            "file_name": "main.go", "content_above_cursor": "func main() {", "content_below_cursor": "}"}}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["metadata"]["model"],
        json!({"engine": "llm-provider-mocked", "name": "llm-mocked", "lang": "go"})
    );
    assert!(body["metadata"]["timestamp"].is_i64());
    assert!(body["choices"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("echo: "));

    let mut streamed = v4_stream("def g():");
    let res = post(&gw, "/v3/code/completions", streamed.take()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert!(!res.headers().contains_key("x-streaming-format"));
    let text = res.text().await.unwrap();
    assert!(text.starts_with("echo: {\"messages\""), "{text}");
}

#[tokio::test]
async fn v4_sse_framing_is_byte_exact() {
    let gw = dev();
    let res = post(&gw, "/v4/code/suggestions", v4_stream("def f():")).await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(h["x-streaming-format"], "sse");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-accel-buffering"], "no");
    let body = res.text().await.unwrap();
    let first_end = body.find("\r\n\r\n").unwrap() + 4;
    let start = &body[..first_end];
    let timestamp: i64 = start
        .split("\"timestamp\": ")
        .nth(1)
        .unwrap()
        .trim_end_matches("}}\r\n\r\n")
        .parse()
        .unwrap();
    let mut expected = format!(
        "event: stream_start\r\ndata: {{\"metadata\": {{\"model\": {{\"engine\": \"chat-model-provider-mocked\", \"name\": \"chat-model-mocked\"}}, \"timestamp\": {timestamp}}}}}\r\n\r\n"
    );
    let echo = chat_echo("def f():<cursor>", true);
    for piece in split_ws(&echo) {
        // Python json.dumps of the chunk.
        let data = json!({"choices": [{"delta": {"content": piece}, "index": 0}]});
        expected.push_str("event: content_chunk\r\ndata: ");
        expected.push_str(&py_dumps(&data));
        expected.push_str("\r\n\r\n");
    }
    expected.push_str("event: stream_end\r\ndata: null\r\n\r\n");
    assert_eq!(body, expected);
}

/// Python's json.dumps (the gateway's implementation, unit-tested against CPython's output).
fn py_dumps(v: &Value) -> String {
    ai_gateway::pyjson::dumps(v)
}

#[tokio::test]
async fn v4_pings_keep_idle_streams_alive() {
    let gw = dev_with_chaos(&[("AIGW_MODELS__SSE_PING_INTERVAL_S", "0.05")]);
    add_fault(
        &gw,
        json!({"kind": "slow", "delay_ms": 150, "engine": "chat-model-provider-mocked"}),
    )
    .await;
    let res = post(&gw, "/v4/code/suggestions", v4_stream("a")).await;
    let body = res.text().await.unwrap();
    assert!(body.contains("\r\n\r\n: ping - "), "{body}");
    let ping = body.lines().find(|l| l.starts_with(": ping - ")).unwrap();
    assert!(
        ping.ends_with("+00:00\r") || ping.ends_with("+00:00"),
        "{ping:?}"
    );
    assert!(body.ends_with("event: stream_end\r\ndata: null\r\n\r\n"));
}

#[tokio::test]
async fn validation_errors_are_pydantics() {
    let gw = dev();
    let check = |body: Value, expected: Value| {
        let gw = &gw;
        async move {
            let res = post(gw, "/v2/code/completions", body).await;
            assert_eq!(res.status(), 422);
            let got: Value = res.json().await.unwrap();
            assert_eq!(got, expected);
        }
    };
    // Missing field.
    check(
        json!({"prompt_version": 1, "current_file": {"file_name": "a.py", "content_above_cursor": ""}}),
        json!({"detail": [{"type": "missing", "loc": ["body", 1, "current_file", "content_below_cursor"],
            "msg": "Field required", "input": {"file_name": "a.py", "content_above_cursor": ""}}]}),
    )
    .await;
    // String too long (255 characters after stripping).
    let long = "é".repeat(256);
    check(
        json!({"prompt_version": 1, "current_file": {"file_name": long, "content_above_cursor": "", "content_below_cursor": ""}}),
        json!({"detail": [{"type": "string_too_long", "loc": ["body", 1, "current_file", "file_name"],
            "msg": "String should have at most 255 characters", "input": long, "ctx": {"max_length": 255}}]}),
    )
    .await;
    // Not one of the enum's values (KindModelProvider is a str enum in the original).
    check(
        json!({"prompt_version": 1, "model_provider": "openai", "current_file": {"file_name": "a", "content_above_cursor": "", "content_below_cursor": ""}}),
        json!({"detail": [{"type": "enum", "loc": ["body", 1, "model_provider"],
            "msg": "Input should be 'anthropic', 'vertex-ai', 'litellm', 'codestral' or 'fireworks_ai'",
            "input": "openai", "ctx": {"expected": "'anthropic', 'vertex-ai', 'litellm', 'codestral' or 'fireworks_ai'"}}]}),
    )
    .await;
    // Malformed JSON.
    let res = reqwest::Client::new()
        .post(format!("{}/v2/code/completions", gw.api))
        .header("content-type", "application/json")
        .body("{\"prompt_version\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["detail"][0]["type"], "json_invalid");
    assert_eq!(got["detail"][0]["msg"], "JSON decode error");

    // v3: unknown discriminator tag, list too long, wrong type.
    let res = post(
        &gw,
        "/v3/code/completions",
        json!({"prompt_components": [{"type": "nope", "payload": {}}]}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["detail"][0]["type"], "union_tag_invalid");
    assert_eq!(
        got["detail"][0]["loc"],
        json!(["body", "prompt_components", 0])
    );
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"type": "code_context", "payload": {"type": "file", "name": "a", "content": "b"}}))
        .collect();
    let res = post(
        &gw,
        "/v3/code/completions",
        json!({"prompt_components": many}),
    )
    .await;
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["detail"][0]["type"], "too_long");
    assert_eq!(
        got["detail"][0]["msg"],
        "List should have at most 100 items after validation, not 101"
    );
    let res = post(
        &gw,
        "/v3/code/completions",
        json!({"prompt_components": "x"}),
    )
    .await;
    let got: Value = res.json().await.unwrap();
    assert_eq!(got["detail"][0]["type"], "list_type");
}

#[tokio::test]
async fn bad_combinations_the_original_crashes_on_are_422s() {
    let gw = dev();
    let res = post(
        &gw,
        "/v3/code/completions",
        json!({"prompt_components": [{"type": "code_context", "payload": {"type": "file", "name": "a", "content": "b"}}]}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let mut body = anthropic_v2_stream();
    body["prompt_version"] = json!(2);
    body["prompt"] = json!("just text");
    let res = post(&gw, "/v2/code/completions", body).await;
    assert_eq!(res.status(), 422);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let gw = Gateway::start(&[("AIGW_HTTP__MAX_REQUEST_BODY_BYTES", "2048")], &["--dev"]);
    let mut body = v2_body();
    body["current_file"]["content_above_cursor"] = json!("x".repeat(4096));
    let res = post(&gw, "/v2/code/completions", body).await;
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"detail":"Request Entity Too Large"}"#
    );
    // Without Content-Length (chunked), the limit holds while reading.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512])));
    let res = reqwest::Client::new()
        .post(format!("{}/v2/code/completions", gw.api))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn a_model_failure_before_the_first_byte_is_a_503() {
    let gw = dev_with_chaos(&[]);
    add_fault(
        &gw,
        json!({"kind": "fail", "engine": "llm-provider-mocked"}),
    )
    .await;
    let res = post(&gw, "/v2/code/completions", v2_body()).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"detail":"Inference failed"}"#
    );
    let r = gw.access_log("/v2/code/completions");
    assert_eq!(r["model_exception_status_code"], 500);
}

#[tokio::test]
async fn a_panicking_model_call_fails_alone() {
    let gw = dev_with_chaos(&[]);
    // Every call to the text mock panics inside its request actor; the chat mock is healthy.
    add_fault(
        &gw,
        json!({"kind": "panic", "engine": "llm-provider-mocked"}),
    )
    .await;
    let healthy = (0..16).map(|_| post(&gw, "/v4/code/suggestions", v4_stream("ok")));
    let crashing = (0..16).map(|_| post(&gw, "/v2/code/completions", v2_body()));
    let (healthy, crashing) = tokio::join!(
        futures::future::join_all(healthy),
        futures::future::join_all(crashing)
    );
    for res in crashing {
        assert_eq!(res.status(), 503);
        assert_eq!(
            res.text().await.unwrap(),
            r#"{"detail":"Inference failed"}"#
        );
    }
    for res in healthy {
        assert_eq!(res.status(), 200);
        assert!(res
            .text()
            .await
            .unwrap()
            .ends_with("event: stream_end\r\ndata: null\r\n\r\n"));
    }
    // After the panics the gateway still serves the crashing path's neighbours and itself.
    let res = post(&gw, "/v4/code/suggestions", v4_stream("still fine")).await;
    assert_eq!(res.status(), 200);
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(&text, "request_actor_failures_total", &["reason=\"panic\""]),
        Some(16.0)
    );
}

#[tokio::test]
async fn failures_after_the_first_byte_end_streams_in_the_endpoints_way() {
    let gw = dev_with_chaos(&[]);
    add_fault(
        &gw,
        json!({"kind": "panic", "engine": "chat-model-provider-mocked", "after_chunks": 3}),
    )
    .await;
    // v4: an error event before stream_end.
    let body = post(&gw, "/v4/code/suggestions", v4_stream("x"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(body.matches("event: content_chunk").count(), 3, "{body}");
    assert!(
        body.ends_with("event: error\r\ndata: {\"message\": \"Inference failed\"}\r\n\r\nevent: stream_end\r\ndata: null\r\n\r\n"),
        "{body}"
    );
    // Raw text: the transfer is cut, never a clean 200 with a truncated body. (With an instant
    // model the cut can come before the head was flushed; either way the client sees an error.)
    let res = reqwest::Client::new()
        .post(format!("{}/v2/code/completions", gw.api))
        .json(&anthropic_v2_stream())
        .send()
        .await;
    match res {
        Ok(res) => {
            assert_eq!(res.status(), 200);
            assert!(
                res.text().await.is_err(),
                "the client sees an incomplete transfer"
            );
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_model_call() {
    let gw = dev_with_chaos(&[]);
    add_fault(
        &gw,
        json!({"kind": "slow", "delay_ms": 20, "engine": "chat-model-provider-mocked"}),
    )
    .await;
    let res = post(
        &gw,
        "/v4/code/suggestions",
        v4_stream("a b c d e f g h i j k l m n o p"),
    )
    .await;
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .contains("stream_start"));
    drop(body);
    let mut cancelled = None;
    for _ in 0..200 {
        let text = gw.metrics_text().await;
        cancelled = metric_value(
            &text,
            "request_actor_calls_total",
            &["outcome=\"cancelled\""],
        );
        if cancelled == Some(1.0) {
            assert_eq!(
                metric_value(&text, "model_inferences_in_flight", &["chat-model-mocked"]),
                Some(0.0),
                "the in-flight gauge returns to zero"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cancelled, Some(1.0), "the model call was cancelled");
    let line = gw.access_log("/v4/code/suggestions");
    assert_eq!(line["client_disconnected"], true, "{line}");
}

#[tokio::test]
async fn a_slow_reader_does_not_grow_memory() {
    let gw = dev();
    let rss = |text: &str| metric_value(text, "process_resident_memory_bytes", &[]).unwrap();
    let before = rss(&gw.metrics_text().await);
    // ~4 MB of prompt echoes into ~1.3 million stream chunks (~150 MB of SSE frames).
    let words = "ab ".repeat(1_400_000);
    let res = post(&gw, "/v4/code/suggestions", v4_stream(&words)).await;
    let mut body = res.bytes_stream();
    let _ = body.next().await;
    // Read nothing for a while: the request actor must stop pulling from the model.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rss(&gw.metrics_text().await);
    let growth_mb = (during - before) / 1e6;
    assert!(
        growth_mb < 60.0,
        "RSS grew {growth_mb:.1} MB while the client was not reading"
    );
    drop(body);
}

#[tokio::test]
async fn inference_metrics_as_the_original() {
    let gw = dev();
    post(&gw, "/v2/code/completions", v2_body())
        .await
        .text()
        .await
        .unwrap();
    post(&gw, "/v4/code/suggestions", v4_stream("m"))
        .await
        .text()
        .await
        .unwrap();
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "model_inferences_total",
            &[
                "model_engine=\"llm-provider-mocked\"",
                "error=\"no\"",
                "streaming=\"no\"",
                "feature_category=\"code_suggestions\""
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "model_inferences_total",
            &["chat-model-mocked", "streaming=\"yes\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, "model_inferences_in_flight", &["llm-mocked"]),
        Some(0.0)
    );
    for name in [
        "code_suggestions_inference_requests_total",
        "code_suggestions_prompt_language_total",
        "code_suggestions_accepts_total",
        "code_suggestions_inference_prompt_size_tokens_bucket",
        "inference_request_duration_seconds_bucket",
        "model_time_to_first_chunk_seconds_bucket",
        "gateway_overhead_seconds_bucket",
        "http_request_duration_seconds_bucket",
    ] {
        assert!(metric_value(&text, name, &[]).is_some(), "{name} missing");
    }
    assert!(text.contains("handler=\"/v2/code/completions\""));
    assert!(text.contains("status=\"2xx\""));
    // Client-supplied labels stay bounded.
    let mut body = v2_body();
    body["telemetry"][0]["model_name"] = json!("my-own-model-1234");
    body["telemetry"][0]["lang"] = json!("klingon");
    post(&gw, "/v2/code/completions", body)
        .await
        .text()
        .await
        .unwrap();
    let text = gw.metrics_text().await;
    assert!(!text.contains("my-own-model-1234") && !text.contains("klingon"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish() {
    let mut gw = dev_with_chaos(&[]);
    add_fault(
        &gw,
        json!({"kind": "slow", "delay_ms": 100, "engine": "chat-model-provider-mocked"}),
    )
    .await;
    let res = post(&gw, "/v4/code/suggestions", v4_stream("one two three four")).await;
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut received = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    gw.sigterm();
    while let Some(chunk) = body.next().await {
        received.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        received.ends_with("event: stream_end\r\ndata: null\r\n\r\n"),
        "the stream completed after SIGTERM: {received}"
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
}

fn prompt_id_body(extra: Value) -> Value {
    let mut body = json!({
        "prompt_version": 2,
        "current_file": {"file_name": "main.py", "content_above_cursor": "# sum two numbers\ndef add(",
                         "content_below_cursor": "\nprint(add(1, 2))\n"},
        "prompt": "write an add function",
        "prompt_id": "code_suggestions/generations",
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

#[tokio::test]
async fn v2_generations_with_prompt_id_run_the_registry_prompt() {
    let gw = Gateway::start(&[("AIGW_CUSTOM_MODELS__ENABLED", "true")], &["--dev"]);
    let res = post(&gw, "/v2/code/generations", prompt_id_body(json!({}))).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["model"]["engine"], "agent");
    assert_eq!(body["model"]["name"], "Claude 3 Code Generations Agent");
    assert_eq!(body["model"]["lang"], "python");
    assert_eq!(body["model"]["tokens_consumption_metadata"], Value::Null);
    assert_eq!(body["experiments"], json!([]));
    assert_eq!(body["object"], "text_completion");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    let echo: Value = serde_json::from_str(
        choices[0]["text"]
            .as_str()
            .unwrap()
            .strip_prefix("echo: ")
            .unwrap(),
    )
    .unwrap();
    let messages = echo["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"]
        .as_str()
        .unwrap()
        .contains("writing python in the file main.py"));
    // As the original's: the existing code in the system prompt, the user message is the
    // instruction (`user_instruction`).
    let system = messages[0]["content"].as_str().unwrap();
    assert!(
        system.contains("# sum two numbers\ndef add(<cursor>\nprint(add(1, 2))"),
        "{system}"
    );
    assert_eq!(messages[1]["content"], "write an add function");
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": "<new_code>"})
    );
    let log = gw.access_log("/v2/code/generations");
    assert_eq!(log["model_engine"], "agent");
    assert_eq!(log["prompt_id"], "code_suggestions/generations");

    // Streamed: raw text.
    let res = post(
        &gw,
        "/v2/code/generations",
        prompt_id_body(json!({"stream": true})),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    assert!(text.starts_with("echo: "), "{text}");
    assert!(text.contains("<new_code>"), "{text}");

    // The model name picks the prompt type; with an endpoint it is the custom_openai model.
    let res = post(
        &gw,
        "/v2/code/generations",
        prompt_id_body(
            json!({"model_name": "claude_3", "model_endpoint": "http://localhost:4000/v1",
                              "model_api_key": "k", "model_identifier": "custom_openai/claude"}),
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["model"]["name"], "Claude 3 Code Generations Agent");
}

fn component_with_prompt_id(prompt_id: &str, stream: bool) -> Value {
    json!({"prompt_components": [{"type": "code_editor_generation", "payload": {
        "file_name": "main.py", "content_above_cursor": "# sum two numbers\ndef add(",
        "content_below_cursor": "\nprint(add(1, 2))\n", "prompt_id": prompt_id,
        "prompt": "write an add function",
        "prompt_enhancer": {"user_instruction": "write a typed add function"},
        "stream": stream}}]})
}

#[tokio::test]
async fn v3_and_v4_generations_with_prompt_id_run_the_registry_prompt() {
    let gw = dev();
    let res = post(
        &gw,
        "/v3/code/completions",
        component_with_prompt_id("code_suggestions/generations", false),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["metadata"]["model"]["engine"], "agent");
    assert_eq!(
        body["metadata"]["model"]["name"],
        "Claude 3 Code Generations Agent"
    );
    assert_eq!(body["metadata"]["model"]["lang"], "python");
    let text = body["choices"][0]["text"].as_str().unwrap();
    let echo: Value = serde_json::from_str(text.strip_prefix("echo: ").unwrap()).unwrap();
    let messages = echo["messages"].as_array().unwrap();
    let system = messages[0]["content"].as_str().unwrap();
    assert!(
        system.contains("writing python in the file main.py"),
        "{system}"
    );
    assert!(
        system.contains("# sum two numbers\ndef add(<cursor>\nprint(add(1, 2))"),
        "{system}"
    );
    // The prompt enhancer's variables win over the standard inputs.
    assert_eq!(messages[1]["content"], "write a typed add function");
    let log = gw.access_log("/v3/code/completions");
    assert_eq!(log["model_engine"], "agent");
    assert_eq!(log["prompt_id"], "code_suggestions/generations");

    // v4 streams it as SSE, the start event naming the prompt's model.
    let res = post(
        &gw,
        "/v4/code/suggestions",
        component_with_prompt_id("code_suggestions/generations", true),
    )
    .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.starts_with("event: stream_start\r\ndata: {\"metadata\": {\"model\": {\"engine\": \"agent\", \"name\": \"Claude 3 Code Generations Agent\"}"),
        "{text}"
    );
    let content: String = text
        .split("\r\n\r\n")
        .filter_map(|event| event.strip_prefix("event: content_chunk\r\ndata: "))
        .map(|data| {
            let data: Value = serde_json::from_str(data).unwrap();
            data["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(content.contains("write a typed add function"), "{content}");
    assert!(
        text.ends_with("event: stream_end\r\ndata: null\r\n\r\n"),
        "{text}"
    );

    // The same errors as /v2/code/generations, where the original answers 500.
    let res = post(
        &gw,
        "/v3/code/completions",
        component_with_prompt_id("no/such/prompt", false),
    )
    .await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"],
        "Prompt 'no/such/prompt' not found"
    );
    let res = post(
        &gw,
        "/v4/code/suggestions",
        component_with_prompt_id("chat/react", false),
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"],
        "Prompt 'chat/react' is not supported"
    );
}

#[tokio::test]
async fn v2_generations_with_prompt_id_errors() {
    let gw = dev();
    // A model name without an endpoint: the original's ModelMetadata validation error.
    let res = post(
        &gw,
        "/v2/code/generations",
        prompt_id_body(json!({"model_name": "claude_3"})),
    )
    .await;
    assert_eq!(res.status(), 422);
    let detail = res.json::<Value>().await.unwrap()["detail"].clone();
    let detail = detail.as_str().expect("a string detail");
    assert!(
        detail.contains("URL input should be a string or URL"),
        "{detail}"
    );
    assert!(detail.starts_with("1 validation error for ModelMetadata\nendpoint\n"));

    let res = post(
        &gw,
        "/v2/code/generations",
        prompt_id_body(json!({"model_name": "claude_3", "model_endpoint": "not a url"})),
    )
    .await;
    assert_eq!(res.status(), 422);
    let detail = res.json::<Value>().await.unwrap()["detail"].clone();
    assert!(
        detail.as_str().unwrap().contains("[type=url_parsing"),
        "{detail}"
    );

    // An endpoint while custom models are disabled (the dev default).
    let res = post(
        &gw,
        "/v2/code/generations",
        prompt_id_body(
            json!({"model_name": "claude_3", "model_endpoint": "http://localhost:4000"}),
        ),
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"],
        "Endpoint override not allowed when custom models are disabled."
    );

    // An unknown prompt, an unknown type.
    let res = post(
        &gw,
        "/v2/code/generations",
        prompt_id_body(json!({"prompt_id": "no/such/prompt"})),
    )
    .await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"],
        "Prompt 'no/such/prompt' not found"
    );
    // A prompt whose unit primitives the caller lacks (the dev user holds them all, so use an
    // agent prompt to reach the next check).
    let res = post(
        &gw,
        "/v2/code/generations",
        prompt_id_body(json!({"prompt_id": "chat/react"})),
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"],
        "Prompt 'chat/react' is not supported"
    );
}
