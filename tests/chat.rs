//! `POST /v1/chat/{chat_invokable}` over the real binary with the mock models: schemas and 422s,
//! 404 and 403 per invokable, the call the original makes for each payload, raw-text streams,
//! and the Anthropic error mappings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::Gateway;
use serde_json::{json, Value};

const CHAOS_TOKEN: &str = "chaos-token-for-tests-0123456789";

fn body(payload: Value) -> Value {
    json!({"prompt_components": [{"type": "prompt",
        "metadata": {"source": "gitlab-rails-sm", "version": "16.5.0-ee"},
        "payload": payload}]})
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn echo_of(text: &str) -> Value {
    serde_json::from_str(text.strip_prefix("echo: ").expect("an echo")).unwrap()
}

const TEXT: &str = "\n\nHuman: hello, what is your name?\n\nAssistant:";

#[tokio::test]
async fn text_content_goes_to_the_text_model() {
    let gw = Gateway::start(&[], &["--dev"]);
    let res = post(
        &gw,
        "/v1/chat/explain_code",
        &body(json!({"content": TEXT, "provider": "anthropic", "model": "claude-2.1"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["metadata"]["provider"], "anthropic");
    assert_eq!(v["metadata"]["model"], "claude-2.1");
    assert!(v["metadata"]["timestamp"].as_i64().unwrap() > 1_700_000_000);
    let echo = echo_of(v["response"].as_str().unwrap());
    assert_eq!(echo["prefix"], TEXT);
    assert_eq!(echo["stream"], false);
    assert_eq!(echo["kwargs"], json!({}), "no params: nothing is passed");
    let log = gw.access_log("/v1/chat/explain_code");
    assert_eq!(log["meta.unit_primitive"], "duo_chat");
    assert_eq!(log["model_engine"], "llm-provider-mocked");
}

#[tokio::test]
async fn messages_go_to_the_chat_model_with_max_tokens_renamed() {
    let gw = Gateway::start(&[], &["--dev"]);
    let messages = json!([{"role": "system", "content": "You are a Python engineer"},
                          {"role": "user", "content": "define a function that adds numbers"}]);
    let res = post(
        &gw,
        "/v1/chat/troubleshoot_job",
        &body(
            json!({"content": messages, "provider": "anthropic", "model": "claude-3-haiku-20240307",
                     "params": {"temperature": 0.3, "max_tokens_to_sample": 2048}}),
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["metadata"]["model"], "claude-3-haiku-20240307");
    let echo = echo_of(v["response"].as_str().unwrap());
    assert_eq!(echo["messages"], messages);
    assert_eq!(
        echo["kwargs"],
        json!({"stop_sequences": ["\n\nHuman", "Observation:"], "temperature": 0.3, "max_tokens": 2048})
    );

    // litellm: a string becomes one user message.
    let res = post(
        &gw,
        "/v1/chat/agent",
        &body(json!({"content": "hi", "provider": "litellm", "model": "mistral"})),
    )
    .await;
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["metadata"]["provider"], "litellm");
    let echo = echo_of(v["response"].as_str().unwrap());
    assert_eq!(echo["messages"], json!([{"role": "user", "content": "hi"}]));
}

#[tokio::test]
async fn streams_are_raw_text() {
    let gw = Gateway::start(&[], &["--dev"]);
    let mut b = body(json!({"content": TEXT}));
    b["stream"] = json!("True");
    let res = post(&gw, "/v1/chat/refactor_code", &b).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let echo = echo_of(&res.text().await.unwrap());
    assert_eq!(echo["stream"], true);
    assert_eq!(echo["prefix"], TEXT);
}

#[tokio::test]
async fn validation_errors_come_first_and_are_pydantics() {
    let gw = Gateway::start(&[], &["--dev"]);
    let missing = json!({"prompt_components": [{"type": "prompt",
        "metadata": {"source": "gitlab-rails-sm"},
        "payload": {"provider": "anthropic", "model": "claude-2.0"}}]});
    // An unknown invokable with a bad body is a 422, not a 404.
    let res = post(&gw, "/v1/chat/unknown", &missing).await;
    assert_eq!(res.status(), 422);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v,
        json!({"detail": [
            {"type": "missing", "loc": ["body", "prompt_components", 0, "metadata", "version"],
             "msg": "Field required", "input": {"source": "gitlab-rails-sm"}},
            {"type": "missing", "loc": ["body", "prompt_components", 0, "payload", "content"],
             "msg": "Field required", "input": {"provider": "anthropic", "model": "claude-2.0"}}
        ]})
    );

    let one = body(json!({"content": TEXT}))["prompt_components"][0].clone();
    let res = post(
        &gw,
        "/v1/chat/explain_code",
        &json!({"prompt_components": [one.clone(), one.clone()]}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["detail"][0],
        json!({"type": "too_long", "loc": ["body", "prompt_components"],
               "msg": "List should have at most 1 item after validation, not 2",
               "input": [one.clone(), one],
               "ctx": {"field_type": "List", "max_length": 1, "actual_length": 2}})
    );

    for payload in [
        json!({"content": TEXT, "provider": "UNSUPPORTED_PROVIDER"}),
        json!({"content": TEXT, "model": "UNSUPPORTED_MODEL"}),
        json!({"content": TEXT, "params": {"stop_sequences": []}}),
    ] {
        let res = post(&gw, "/v1/chat/explain_code", &body(payload.clone())).await;
        assert_eq!(res.status(), 422, "{payload}");
    }

    let res = post(&gw, "/v1/chat/unknown", &body(json!({"content": TEXT}))).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.text().await.unwrap(), r#"{"detail":"Not found"}"#);

    let res = post(
        &gw,
        "/v1/chat/explain_code",
        &body(json!({"content": TEXT, "model_endpoint": "http://127.0.0.1:1"})),
    )
    .await;
    assert_eq!(res.status(), 422);
}

fn token(scopes: &[&str]) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(json!({"scopes": scopes}).to_string());
    format!("{header}.{claims}.c2ln")
}

#[tokio::test]
async fn each_invokable_needs_its_unit_primitive() {
    let gw = Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_JWT_SIGNATURE", "true"),
            ("AIGW_MOCK_MODEL_RESPONSES", "true"),
        ],
        &[],
    );
    let b = body(json!({"content": TEXT}));
    let call = |invokable: &'static str, scopes: &'static [&'static str]| {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/{invokable}", gw.api))
            .bearer_auth(token(scopes))
            .header("x-gitlab-authentication-type", "oidc")
            .json(&b)
            .send()
    };
    for (invokable, up) in [
        ("explain_code", "duo_chat"),
        ("write_tests", "duo_chat"),
        ("refactor_code", "duo_chat"),
        ("agent", "duo_chat"),
        ("explain_vulnerability", "explain_vulnerability"),
        ("summarize_comments", "summarize_comments"),
        ("troubleshoot_job", "troubleshoot_job"),
    ] {
        let res = call(invokable, &["ask_issue"]).await.unwrap();
        assert_eq!(res.status(), 403, "{invokable}");
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"detail": format!("Unauthorized to access {up}")})
        );
    }
    let res = call("explain_vulnerability", &["explain_vulnerability"])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = call("explain_code", &["duo_chat"]).await.unwrap();
    assert_eq!(res.status(), 200);
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

#[tokio::test]
async fn anthropic_failures_map_to_the_originals_502_and_504() {
    let gw = Gateway::start(
        &[
            ("AIGW_CHAOS__ENABLED", "true"),
            ("AIGW_CHAOS__TOKEN", CHAOS_TOKEN),
            ("AIGW_MODELS__IDLE_TIMEOUT_S", "0.3"),
        ],
        &["--dev"],
    );
    add_fault(
        &gw,
        json!({"kind": "fail", "engine": "llm-provider-mocked"}),
    )
    .await;
    add_fault(
        &gw,
        json!({"kind": "stall", "engine": "chat-model-provider-mocked"}),
    )
    .await;
    let res = post(
        &gw,
        "/v1/chat/explain_code",
        &body(json!({"content": TEXT})),
    )
    .await;
    assert_eq!(res.status(), 502);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"detail":"Anthropic API Status Error."}"#
    );
    let res = post(
        &gw,
        "/v1/chat/explain_code",
        &body(json!({"content": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(res.status(), 504);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"detail":"Anthropic API Timeout Error."}"#
    );
}
