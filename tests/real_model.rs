//! End to end against a real self-hosted model: llama.cpp's OpenAI-compatible server serving
//! SmolLM2-135M (started by `scripts/real-model.sh start`, which `scripts/test.sh` runs before
//! `cargo test` and exports as `AIGW_REAL_MODEL_URL`). The test fails, never skips, when the
//! variable is missing: run it with
//! `AIGW_REAL_MODEL_URL="$(scripts/real-model.sh start)" cargo test --test real_model`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::providers::{post, Framing, StreamReader};
use common::Gateway;
use serde_json::{json, Value};

fn model_url() -> String {
    std::env::var("AIGW_REAL_MODEL_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "AIGW_REAL_MODEL_URL is not set: start the model with \
                 AIGW_REAL_MODEL_URL=\"$(scripts/real-model.sh start)\" (scripts/test.sh does)"
            )
        })
}

fn gateway() -> Gateway {
    Gateway::start(
        &[
            ("AIGW_MOCK_MODEL_RESPONSES", "false"),
            ("AIGW_CUSTOM_MODELS__ENABLED", "true"),
            ("AIGW_LOGGING__FORMAT_JSON", "true"),
            ("AIGW_MODELS__IDLE_TIMEOUT_S", "120"),
        ],
        &["--dev"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_completion_and_streamed_generation_from_a_real_model() {
    let url = model_url();
    let gw = gateway();

    // A whole code completion (text completions API).
    let res = post(
        &gw,
        "/v2/code/completions",
        &json!({"prompt_version": 1,
            "current_file": {"file_name": "fib.py",
                "content_above_cursor": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n    return",
                "content_below_cursor": ""},
            "model_provider": "litellm", "model_name": "codellama", "model_endpoint": url}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["model"]["engine"], "litellm");
    let text = body["choices"][0]["text"].as_str().unwrap_or("");
    assert!(!text.trim().is_empty(), "the model generated text: {body}");
    assert!(
        body["model"]["tokens_consumption_metadata"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "usage comes from the model server: {body}"
    );

    // A streamed code generation (chat completions API, SSE upstream, raw text to the client).
    let res = post(
        &gw,
        "/v2/code/generations",
        &json!({"prompt_version": 3, "stream": true, "model_provider": "litellm", "model_name": "codellama",
            "model_endpoint": url,
            "current_file": {"file_name": "add.py", "content_above_cursor": "# add two numbers\n", "content_below_cursor": ""},
            "prompt": [{"role": "user", "content": "Write a short Python function that adds two numbers."}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut reader = StreamReader::new(Framing::Raw, res);
    let mut pieces = 0;
    while reader.step().await {
        pieces += 1;
    }
    assert!(!reader.failed, "stream completed: {:?}", reader.content);
    assert!(
        reader.content.chars().any(|c| c.is_alphanumeric()),
        "real generated text: {:?}",
        reader.content
    );
    assert!(
        pieces > 1,
        "the answer arrived as a stream ({pieces} pieces)"
    );
    let metrics = gw.metrics_text().await;
    assert!(
        common::metric_value(&metrics, "model_tokens_total", &["direction=\"output\""])
            .unwrap_or(0.0)
            > 0.0
    );
}
