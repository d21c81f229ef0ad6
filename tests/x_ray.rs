//! `POST /v1/x-ray/libraries` against a fake Anthropic legacy Text Completions API, over real
//! sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::fake_upstream::*;
use common::Gateway;
use serde_json::{json, Value};

const PROMPT: &str = "\n\nHuman: Parse Gemfile content and list the libraries.\n\nAssistant:";

/// An unsigned token with `claims` (the gateway runs with signature checks bypassed).
fn token(claims: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{claims}.c2ln")
}

fn gateway(fake: &FakeUpstream) -> Gateway {
    Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_JWT_SIGNATURE", "true"),
            ("ANTHROPIC_BASE_URL", fake.url.as_str()),
            ("ANTHROPIC_API_KEY", "sk-ant-test-key-0123456789"),
            ("AIGW_MODELS__MAX_RETRIES", "0"),
        ],
        &[],
    )
}

fn body(model: &str) -> Value {
    json!({"prompt_components": [{"type": "x_ray_package_file_prompt",
        "payload": {"prompt": PROMPT, "provider": "anthropic", "model": model},
        "metadata": {"scannerVersion": "0.0.1"}}]})
}

async fn x_ray(gw: &Gateway, claims: Value, body: &Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/x-ray/libraries", gw.api))
        .bearer_auth(token(claims))
        .header("x-gitlab-authentication-type", "oidc")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// What Anthropic's `/v1/complete` answers.
fn completion(text: &str) -> Value {
    json!({"type": "completion", "id": "compl_01XRay", "completion": text,
           "stop_reason": "stop_sequence", "model": "claude-2.0", "stop": "\n\nHuman:",
           "log_id": "compl_01XRay"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_file_prompt_goes_to_claude_2_0() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(200, &completion(" [\"rails\", \"rspec\"]")));
    let gw = gateway(&fake);
    let (status, answer) = x_ray(
        &gw,
        json!({"scopes": ["generate_code"]}),
        &body("claude-2.1"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"response": " [\"rails\", \"rspec\"]"}));

    let sent = &fake.requests_to("/v1/complete")[0];
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test-key-0123456789"));
    let upstream = sent.json();
    assert_eq!(upstream["model"], "claude-2.0", "the original's override");
    assert_eq!(upstream["prompt"], PROMPT);
    assert_eq!(upstream["max_tokens_to_sample"], 2048);
    assert_eq!(
        upstream.get("stop_sequences"),
        None,
        "the original sets none"
    );
    assert_eq!(upstream["temperature"], 0.2);
    let log = gw.access_log("/v1/x-ray/libraries");
    assert_eq!(
        log["tracked_internal_events"],
        json!(["request_generate_code"])
    );
    assert_eq!(log["meta.unit_primitive"], "generate_code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_model_call_is_inference_failed() {
    let fake = FakeUpstream::start().await;
    fake.push(Reply::json(
        529,
        &anthropic_error_body("overloaded_error", "Overloaded"),
    ));
    let gw = gateway(&fake);
    let (status, answer) = x_ray(
        &gw,
        json!({"scopes": ["generate_code"]}),
        &body("claude-2.1"),
    )
    .await;
    assert_eq!(
        (status, answer),
        (503, json!({"detail": "Inference failed"}))
    );
    let log = gw.access_log("/v1/x-ray/libraries");
    assert_eq!(log["model_exception_status_code"], 529, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_code_is_needed_and_the_gateways_own_tokens_are_refused() {
    let fake = FakeUpstream::start().await;
    let gw = gateway(&fake);
    let forbidden = (403, json!({"detail": "Unauthorized to access X Ray"}));
    assert_eq!(
        x_ray(
            &gw,
            json!({"scopes": ["complete_code"]}),
            &body("claude-2.1")
        )
        .await,
        forbidden
    );
    // A self-signed user token (issued by this gateway) never reaches X-Ray.
    let own = json!({"iss": "gitlab-ai-gateway", "scopes": ["generate_code"]});
    assert_eq!(x_ray(&gw, own, &body("claude-2.1")).await, forbidden);
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_must_name_claude_2_1() {
    let fake = FakeUpstream::start().await;
    let gw = gateway(&fake);
    let (status, answer) =
        x_ray(&gw, json!({"scopes": ["generate_code"]}), &body("claude-3")).await;
    assert_eq!(status, 422);
    assert_eq!(
        answer["detail"][0]["loc"],
        json!(["body", "prompt_components", 0, "payload", "model"])
    );
    assert_eq!(answer["detail"][0]["type"], "literal_error");
    assert!(fake.requests().is_empty());
}
