//! `POST /v1/prompts/{prompt_id}` over the real binary: resolution, every error of the endpoint,
//! the rendered prompt reaching the model (the mock echoes what it was sent), raw-text streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::Gateway;
use serde_json::{json, Value};

const CHAOS_TOKEN: &str = "chaos-token-for-tests-0123456789";

fn dev(extra: &[(&str, &str)]) -> Gateway {
    Gateway::start(extra, &["--dev"])
}

async fn post(gw: &Gateway, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post_as(gw: &Gateway, token: &str, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .bearer_auth(token)
        .header("x-gitlab-authentication-type", "oidc")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// An RS256-labelled token with `scopes` (its signature is not checked by gateways started with
/// `AIGW_AUTH__BYPASS_JWT_SIGNATURE=true`).
fn token(scopes: &[&str]) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(json!({"scopes": scopes, "iss": "gitlab"}).to_string());
    format!("{header}.{claims}.bm90LWNoZWNrZWQ")
}

/// The messages the mock model was sent, from its echo.
fn echoed_messages(answer: &str) -> Vec<Value> {
    let echo = answer.strip_prefix("echo: ").expect("the mock's echo");
    let v: Value = serde_json::from_str(echo).unwrap();
    v["messages"].as_array().unwrap().clone()
}

async fn detail(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["detail"].clone())
}

#[tokio::test]
async fn a_registry_prompt_is_rendered_and_answered_as_a_json_string() {
    let gw = dev(&[]);
    let res = post(
        &gw,
        "/v1/prompts/generate_commit_message",
        json!({"inputs": {"diff": "diff --git a/x b/x\n+hello"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let answer: Value = res.json().await.unwrap();
    let text = answer.as_str().expect("a JSON string");
    let messages = echoed_messages(text);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[1]["role"], "user");
    let user = messages[1]["content"].as_str().unwrap();
    assert!(
        user.contains("<diff>\ndiff --git a/x b/x\n+hello\n</diff>"),
        "{user}"
    );
    assert!(
        !user.ends_with('\n'),
        "one trailing newline is dropped, as Jinja2 does"
    );
    let log = gw.access_log("/v1/prompts/generate_commit_message");
    assert_eq!(log["meta.unit_primitive"], "generate_commit_message");
    assert_eq!(log["prompt_version"], "1.0.0");
    assert_eq!(
        log["tracked_internal_events"],
        json!(["request_generate_commit_message"])
    );
}

#[tokio::test]
async fn streamed_prompts_are_raw_text() {
    let gw = dev(&[]);
    let res = post(
        &gw,
        "/v1/prompts/chat/explain_code",
        json!({"inputs": {"file_content": "<file>\nfn a() {}\n</file>", "selected_text": "a",
                          "input": "why?", "language_info": "The code is written in Rust."},
               "stream": true}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    let echo: Value = serde_json::from_str(text.strip_prefix("echo: ").unwrap()).unwrap();
    assert_eq!(echo["stream"], true);
    let user = echo["messages"][1]["content"].as_str().unwrap();
    // `file_content` is a block the client formats; it is passed through as it is.
    assert!(user.starts_with("<file>\nfn a() {}\n</file>\n"), "{user}");
    assert!(user.contains("why?"));
    let system = echo["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("The code is written in Rust."), "{system}");
}

#[tokio::test]
async fn every_error_of_the_endpoint() {
    let gw = dev(&[]);
    let p = "/v1/prompts/generate_commit_message";

    let (status, d) =
        detail(post(&gw, "/v1/prompts/no/such/prompt", json!({"inputs": {}})).await).await;
    assert_eq!(
        (status, d),
        (404, json!("Prompt 'no/such/prompt' not found"))
    );

    let (status, d) = detail(
        post(
            &gw,
            p,
            json!({"inputs": {"diff": "x"}, "prompt_version": "^one"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, d), (422, json!("Invalid version constraint")));

    let (status, d) = detail(
        post(
            &gw,
            p,
            json!({"inputs": {"diff": "x"}, "prompt_version": "^2.0.0"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        d,
        "Prompt 'generate_commit_message' has no version matching '^2.0.0'"
    );

    let (status, d) = detail(post(&gw, p, json!({"inputs": {"other": 1}})).await).await;
    assert_eq!(status, 422);
    let d = d.as_str().unwrap();
    assert!(
        d.starts_with(
            "\"Input to ChatPromptTemplate is missing variables {'diff'}.  Expected: ['diff'] Received: ['other']"
        ),
        "{d}"
    );

    let (status, d) =
        detail(post(&gw, "/v1/prompts/chat/react", json!({"inputs": {}})).await).await;
    assert_eq!(
        (status, d),
        (422, json!("Prompt 'chat/react' is not supported"))
    );

    // Body validation comes first, with pydantic's objects.
    let res = post(&gw, "/v1/prompts/no/such/prompt", json!({"stream": 3})).await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"][0]["type"], "missing");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "inputs"]));
    assert_eq!(body["detail"][1]["type"], "bool_parsing");

    // A model override with an endpoint while custom models are disabled.
    let (status, d) = detail(
        post(
            &gw,
            p,
            json!({"inputs": {"diff": "x"}, "model_metadata": {"name": "base", "provider": "litellm", "endpoint": "http://localhost:4000"}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, d),
        (
            422,
            json!("Endpoint override not allowed when custom models are disabled.")
        )
    );

    // GET is not a route.
    let res = reqwest::Client::new()
        .get(format!("{}{p}", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn the_caller_needs_every_unit_primitive_of_the_prompt() {
    let gw = Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_JWT_SIGNATURE", "true"),
            ("AIGW_MOCK_MODEL_RESPONSES", "true"),
        ],
        &[],
    );
    let body = json!({"inputs": {"diff": "x"}});
    let p = "/v1/prompts/generate_commit_message";
    let (status, d) = detail(post_as(&gw, &token(&["duo_chat"]), p, body.clone()).await).await;
    assert_eq!(
        (status, d),
        (
            403,
            json!("Unauthorized to access 'generate_commit_message'")
        )
    );
    // 404 before 403: an unknown prompt is unknown whoever asks.
    let (status, _) =
        detail(post_as(&gw, &token(&[]), "/v1/prompts/nope", body.clone()).await).await;
    assert_eq!(status, 404);
    // 422 (body) before 403.
    let res = post_as(&gw, &token(&[]), p, json!({})).await;
    assert_eq!(res.status(), 422);

    let res = post_as(&gw, &token(&["generate_commit_message"]), p, body).await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert!(answer.as_str().unwrap().starts_with("echo: "));

    // No token at all: the edge answers first.
    let res = post(&gw, p, json!({"inputs": {"diff": "x"}})).await;
    assert_eq!(res.status(), 401);
}

fn write(dir: &std::path::Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn definition(user: &str) -> String {
    format!(
        "name: t\nmodel:\n  name: claude-3-5-sonnet-20241022\n  params:\n    model_class_provider: anthropic\n    max_tokens: 64\n\
         unit_primitives:\n  - explain_code\nprompt_template:\n  user: {user:?}\n"
    )
}

#[tokio::test]
async fn versions_types_and_default_prompts_resolve_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "demo/base/1.0.0.yml",
        &definition("base 1.0.0 {{ who }}"),
    );
    write(
        d,
        "demo/base/1.2.0.yml",
        &definition("base 1.2.0 {% include 'demo/part.jinja' %}"),
    );
    write(
        d,
        "demo/base/2.0.0.yml",
        &definition("base 2.0.0 {{ who }}"),
    );
    write(d, "demo/part.jinja", "{{ who }} {{ items }}\n");
    write(
        d,
        "demo/mistral/1.0.0.yml",
        &definition("mistral {{ who }}"),
    );
    write(d, "demo/vertex/1.0.0.yml", &definition("vertex {{ who }}"));
    write(d, "other/base/1.0.0.yml", &definition("other {{ who }}"));
    let dir_str = d.to_str().unwrap();
    let gw = dev(&[
        ("AIGW_PROMPTS__DIR", dir_str),
        (
            "AIGW_DEFAULT_PROMPTS",
            r#"{"other": "vertex", "demo": "base"}"#,
        ),
        ("AIGW_CUSTOM_MODELS__ENABLED", "true"),
    ]);
    let user_of = |answer: Value| -> String {
        echoed_messages(answer.as_str().unwrap())[0]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let inputs = json!({"who": "Ann", "items": ["a", "b's"]});
    for (version, expected) in [
        (None, "base 1.2.0 Ann ['a', \"b's\"]"),
        (Some("^1.0.0"), "base 1.2.0 Ann ['a', \"b's\"]"),
        (Some("1.0.0"), "base 1.0.0 Ann"),
        (Some("~1.0"), "base 1.0.0 Ann"),
        (Some(">=1.0.0, <3"), "base 2.0.0 Ann"),
        (Some("^2"), "base 2.0.0 Ann"),
    ] {
        let res = post(
            &gw,
            "/v1/prompts/demo",
            json!({"inputs": inputs, "prompt_version": version}),
        )
        .await;
        assert_eq!(res.status(), 200, "{version:?}");
        assert_eq!(user_of(res.json().await.unwrap()), expected, "{version:?}");
    }
    // model_metadata picks the type.
    let res = post(
        &gw,
        "/v1/prompts/demo",
        json!({"inputs": inputs, "model_metadata": {"name": "mistral", "provider": "litellm", "endpoint": "http://127.0.0.1:1/v1"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(user_of(res.json().await.unwrap()), "mistral Ann");
    // AIGW_DEFAULT_PROMPTS picks it when the request names no model.
    let res = post(&gw, "/v1/prompts/other", json!({"inputs": inputs})).await;
    assert_eq!(
        res.status(),
        404,
        "other/vertex does not exist, so 'other' is unknown"
    );
    write(d, "other/vertex/1.0.0.yml", &definition("other vertex"));
    drop(gw);
    let gw = dev(&[
        ("AIGW_PROMPTS__DIR", dir_str),
        ("AIGW_DEFAULT_PROMPTS", r#"{"other": "vertex"}"#),
    ]);
    let res = post(&gw, "/v1/prompts/other", json!({"inputs": inputs})).await;
    assert_eq!(user_of(res.json().await.unwrap()), "other vertex");
}

#[test]
fn a_broken_definition_stops_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "demo/base/1.0.0.yml",
        "name: t\nsurprise: true\n",
    );
    let (code, out, _) = common::run_to_exit(
        &[("AIGW_PROMPTS__DIR", dir.path().to_str().unwrap())],
        &["--dev"],
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("demo/base/1.0.0.yml"), "{out}");
}

#[tokio::test]
async fn an_upstream_error_status_is_a_421_with_the_status() {
    let gw = dev(&[
        ("AIGW_CHAOS__ENABLED", "true"),
        ("AIGW_CHAOS__TOKEN", CHAOS_TOKEN),
    ]);
    let res = reqwest::Client::new()
        .post(format!("{}/chaos/faults", gw.metrics))
        .bearer_auth(CHAOS_TOKEN)
        .json(&json!({"kind": "fail", "engine": "chat-model-provider-mocked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, d) = detail(
        post(
            &gw,
            "/v1/prompts/generate_commit_message",
            json!({"inputs": {"diff": "x"}}),
        )
        .await,
    )
    .await;
    assert_eq!((status, d), (421, json!("500: Internal Server Error")));
}

/// A one-shot fake Anthropic Messages API: records the request body, answers `text`.
async fn fake_anthropic(
    text: &'static str,
) -> (String, tokio::sync::oneshot::Receiver<(String, Value)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head_end, length) = loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse::<usize>().unwrap())
                    .unwrap_or(0);
                break (i, length);
            }
        };
        while buf.len() < head_end + 4 + length {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let body: Value = serde_json::from_slice(&buf[head_end + 4..]).unwrap();
        let answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": body["model"], "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 3}})
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        sock.write_all(response.as_bytes()).await.unwrap();
        let _ = tx.send((head, body));
    });
    (url, rx)
}

#[tokio::test]
async fn the_rendered_prompt_reaches_anthropic() {
    let (url, seen) = fake_anthropic("Add x\n\n- because").await;
    let gw = Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
            ("ANTHROPIC_API_KEY", "sk-test"),
            ("ANTHROPIC_BASE_URL", url.as_str()),
        ],
        &[],
    );
    let res = post(
        &gw,
        "/v1/prompts/generate_commit_message",
        json!({"inputs": {"diff": "+hello"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("Add x\n\n- because")
    );
    let (head, body) = seen.await.unwrap();
    assert!(head.starts_with("POST /v1/messages"), "{head}");
    assert_eq!(body["model"], "claude-3-5-sonnet-20241022");
    assert!(
        body["system"].to_string().contains("commit messages"),
        "{body}"
    );
    let user = body["messages"][0]["content"].to_string();
    assert!(user.contains("<diff>\\n+hello\\n</diff>"), "{user}");
}

/// The four prompts of the original that complete the inventory: each resolves, renders its
/// inputs, answers in mock mode, and needs its unit primitive.
#[tokio::test]
async fn the_remaining_prompts_of_the_original_resolve_render_and_need_their_unit_primitive() {
    let gw = Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_JWT_SIGNATURE", "true"),
            ("AIGW_MOCK_MODEL_RESPONSES", "true"),
        ],
        &[],
    );
    let cases: [(&str, Value, &str, &[&str]); 4] = [
        (
            "categorize_question",
            json!({"question": "How do I rebase my branch?", "previous_answer": "Use git merge."}),
            "duo_chat",
            &[
                "<question>How do I rebase my branch?</question>",
                "<answer>Use git merge.</answer>",
            ],
        ),
        (
            "glab_ask_git_command",
            json!({"prompt": "undo my last commit"}),
            "glab_ask_git_command",
            &["Which git commands do this: undo my last commit"],
        ),
        (
            "measure_comment_temperature",
            json!({"content": "THIS IS WRONG, AGAIN."}),
            "measure_comment_temperature",
            &["<comment>\nTHIS IS WRONG, AGAIN.\n</comment>"],
        ),
        (
            "model_configuration/check",
            json!({}),
            "complete_code",
            &["Reply with the single word: hello"],
        ),
    ];
    for (id, inputs, up, needles) in cases {
        let path = format!("/v1/prompts/{id}");
        let body = json!({ "inputs": inputs });
        let (status, d) =
            detail(post_as(&gw, &token(&["explain_code"]), &path, body.clone()).await).await;
        assert_eq!(
            (status, d),
            (403, json!(format!("Unauthorized to access '{id}'"))),
            "{id}"
        );
        let res = post_as(&gw, &token(&[up]), &path, body).await;
        assert_eq!(res.status(), 200, "{id}");
        let answer: Value = res.json().await.unwrap();
        let messages = echoed_messages(answer.as_str().unwrap());
        assert_eq!(messages[0]["role"], "system", "{id}");
        let all = messages
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        for needle in needles {
            assert!(all.contains(needle), "{id}: {needle:?} not in {all}");
        }
        let log = gw
            .wait_record(|r| {
                r["logger"] == "api.access" && r["path"] == path.as_str() && r["status_code"] == 200
            })
            .unwrap();
        assert_eq!(log["meta.unit_primitive"], up, "{id}");
        assert_eq!(log["prompt_version"], "1.0.0", "{id}");
    }

    // A missing input is LangChain's 422, as for every prompt.
    let res = post_as(
        &gw,
        &token(&["glab_ask_git_command"]),
        "/v1/prompts/glab_ask_git_command",
        json!({"inputs": {}}),
    )
    .await;
    assert_eq!(res.status(), 422);

    // The self-hosted model types of the configuration check resolve by model name.
    let res = post_as(
        &gw,
        &token(&["complete_code"]),
        "/v1/prompts/model_configuration/check",
        json!({"inputs": {}, "model_metadata": {"name": "mistral", "provider": "litellm"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (status, _) = detail(
        post_as(
            &gw,
            &token(&["complete_code"]),
            "/v1/prompts/model_configuration/check",
            json!({"inputs": {}, "model_metadata": {"name": "no-such-model", "provider": "litellm"}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
}

/// The Duo Chat prompts take the inputs by the original's names (GitLab sends these), and, as
/// there, an input used only in an included template may be left out: it renders empty.
#[tokio::test]
async fn the_chat_prompts_take_the_originals_inputs() {
    let gw = dev(&[]);
    let all_of = |answer: &Value| -> String {
        echoed_messages(answer.as_str().unwrap())
            .iter()
            .map(|m| {
                format!(
                    "{}: {}",
                    m["role"].as_str().unwrap_or_default(),
                    m["content"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cases: [(&str, Value, &[&str]); 9] = [
        (
            "chat/troubleshoot_job",
            json!({"selected_text": "ERROR: rspec failed", "language_info": "The job runs Ruby."}),
            &["ERROR: rspec failed", "The job runs Ruby."],
        ),
        (
            "chat/summarize_comments",
            json!({"notes_content": "<comment>ship it</comment>"}),
            &["<comment>ship it</comment>"],
        ),
        (
            "chat/explain_vulnerability",
            json!({"title": "SQL injection", "identifiers": "CWE-89", "vulnerability_info": "in db.rb",
                   "language_info": "The code is Ruby."}),
            &["SQL injection", "CWE-89", "in db.rb", "The code is Ruby."],
        ),
        (
            "chat/fix_code",
            json!({"file_content": "", "selected_text": "x = 1", "input": "fix it",
                   "file_content_reuse": "Reuse the file.", "language_info": "",
                   "libraries": ["rails (7.1)", "rspec (3.13)"]}),
            &[
                "x = 1",
                "fix it",
                "Reuse the file.",
                "rails (7.1)\nrspec (3.13)",
            ],
        ),
        (
            "chat/write_tests",
            json!({"file_content": "", "selected_text": "def a; end", "input": "test it"}),
            &["def a; end", "test it"],
        ),
        (
            "chat/issue_reader",
            json!({"input": "Summarize #12", "suggestions": "Let me look."}),
            &[
                "user: Question: Summarize #12",
                "assistant: Let me look.\n```json\n  {\n    \"ResourceIdentifierType\": \"",
            ],
        ),
        (
            "chat/merge_request_reader",
            json!({"input": "What does !7 change?", "suggestions": ""}),
            &["user: Question: What does !7 change?"],
        ),
        // Nothing but the question: the original renders the rest empty (no 422).
        (
            "chat/explain_code",
            json!({"input": "what is this?"}),
            &["what is this?"],
        ),
        (
            "chat/build_reader",
            json!({"input": "why did it fail?"}),
            &["Question: why did it fail?"],
        ),
    ];
    for (id, inputs, needles) in cases {
        let res = post(
            &gw,
            &format!("/v1/prompts/{id}"),
            json!({ "inputs": inputs }),
        )
        .await;
        assert_eq!(res.status(), 200, "{id}");
        let answer: Value = res.json().await.unwrap();
        let all = all_of(&answer);
        for needle in needles {
            assert!(all.contains(needle), "{id}: {needle:?} not in {all}");
        }
    }

    // The commit reader asks for `duo_chat`, as the original's does.
    let res = post_as(
        &gw,
        &token(&["duo_chat"]),
        "/v1/prompts/chat/commit_reader",
        json!({"inputs": {"input": "who wrote 1a2b3c?"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
}
