//! `POST /v2/chat/agent` (Duo Chat's ReAct agent) over the real binary: request validation,
//! authorization with tokens from an in-test OIDC issuer, the tools offered per scope, version
//! and feature flag (read from the prompt the fake Anthropic upstream received), and the NDJSON
//! stream: final answers forwarded while the model still writes, actions, unknown output,
//! unavailable tools and Anthropic errors before and during the stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::{
    anthropic_delta, anthropic_error_body, anthropic_error_event, anthropic_head, anthropic_stream,
    anthropic_tail, FakeUpstream, Part, Reply,
};
use common::issuer::{instance_claims, instance_headers, sign, TestIssuer};
use common::{providers, Gateway};
use futures::StreamExt;
use serde_json::{json, Value};

const PATH: &str = "/v2/chat/agent";
const ALL_TOOL_SCOPES: &[&str] = &[
    "duo_chat",
    "ask_build",
    "ask_epic",
    "ask_issue",
    "ask_merge_request",
    "documentation_search",
    "ask_commit",
];

/// A gateway with real authentication (tokens from `issuer`) and Anthropic at `fake`.
struct Setup {
    issuer: TestIssuer,
    fake: FakeUpstream,
    gw: Gateway,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    let issuer = TestIssuer::start(&[("issuer_a", Some("kid-a"))]);
    let fake = FakeUpstream::start().await;
    let mut env: Vec<(String, String)> = providers::base_env(&fake);
    env.push(("AIGW_AUTH__BYPASS_EXTERNAL".into(), "false".into()));
    env.push(("AIGW_GITLAB_URL".into(), issuer.url.clone()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gw = Gateway::start(&refs, &["--dev"]);
    Setup { issuer, fake, gw }
}

impl Setup {
    fn token(&self, scopes: &[&str]) -> String {
        sign(
            "issuer_a",
            Some("kid-a"),
            &instance_claims(&self.issuer.url, scopes),
        )
    }

    async fn post(
        &self,
        scopes: &[&str],
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        post_to(&self.gw, Some(self.token(scopes)), headers, body).await
    }

    /// The Messages API body of the `n`th model call.
    fn upstream_body(&self, n: usize) -> Value {
        self.fake.requests_to("/v1/messages")[n].json()
    }
}

async fn post_to(
    gw: &Gateway,
    token: Option<String>,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(format!("{}{PATH}", gw.api));
    if let Some(token) = token {
        req = req.bearer_auth(token);
        for (k, v) in instance_headers() {
            req = req.header(k, v);
        }
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.json(body).send().await.unwrap()
}

fn question(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

/// The model answers `texts` as one Anthropic stream, for every call.
fn answer(fake: &FakeUpstream, texts: &[&str]) {
    fake.route("/v1/messages", Reply::sse(anthropic_stream(texts, 10, 5)));
}

/// Read a whole NDJSON response: its lines, each checked to be one JSON object.
async fn lines(res: reqwest::Response) -> Vec<String> {
    let status = res.status();
    if status != 200 {
        panic!("status {status}: {}", res.text().await.unwrap_or_default());
    }
    assert_eq!(
        res.headers()["content-type"],
        "application/x-ndjson; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["type"].is_string(), "{l}");
            l.to_string()
        })
        .collect()
}

fn delta(text: &str) -> String {
    format!(r#"{{"type": "final_answer_delta", "data": {{"text": "{text}"}}}}"#)
}

fn system_prompt(body: &Value) -> String {
    body["system"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn mock_mode_answers_the_originals_fake_model() {
    let gw = Gateway::start(&[], &["--dev"]);
    let res = post_to(&gw, None, &[], &question("hi")).await;
    assert_eq!(
        lines(res).await,
        vec![r#"{"type": "unknown", "data": {"text": "mock"}}"#]
    );
    let log = gw.access_log(PATH);
    assert_eq!(log["meta.unit_primitive"], "duo_chat");
    assert_eq!(log["meta.feature_category"], "duo_chat");
    assert_eq!(log["tracked_internal_events"], json!(["request_duo_chat"]));
    assert_eq!(log["model_engine"], "fake-provider");
    assert_eq!(
        log["duo_chat.agent_available_tools"],
        json!([
            "build_reader",
            "epic_reader",
            "issue_reader",
            "merge_request_reader",
            "gitlab_documentation"
        ]),
        "a debug user gets every tool but the flagged one"
    );
    let metrics = gw.metrics_text().await;
    assert_eq!(
        common::metric_value(
            &metrics,
            "model_inferences_total",
            &[
                "feature_category=\"duo_chat\"",
                "model_engine=\"fake-provider\"",
                "streaming=\"yes\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn bodies_are_validated_like_pydantic() {
    let gw = Gateway::start(&[], &["--dev"]);
    let res = post_to(
        &gw,
        None,
        &[],
        &json!({"messages": [{"role": "robot", "content": "x"}]}),
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": [{"type": "enum", "loc": ["body", "messages", 0, "role"],
            "msg": "Input should be 'system', 'user' or 'assistant'", "input": "robot",
            "ctx": {"expected": "'system', 'user' or 'assistant'"}}]})
    );
    let res = post_to(
        &gw,
        None,
        &[],
        &json!({"messages": [], "options": {"agent_scratchpad": {"agent_type": "react"}},
                "model_metadata": {"name": "mistral", "provider": "litellm"},
                "unavailable_resources": "all"}),
    )
    .await;
    assert_eq!(res.status(), 422);
    let detail = res.json::<Value>().await.unwrap()["detail"].clone();
    let locs: Vec<Value> = detail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loc"].clone())
        .collect();
    assert_eq!(
        locs,
        vec![
            json!(["body", "options", "agent_scratchpad", "react", "steps"]),
            json!(["body", "model_metadata", "endpoint"]),
            json!(["body", "unavailable_resources"]),
        ]
    );
    // What the original only notices after its 200: refused before the stream.
    for (body, message) in [
        (
            json!({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}),
            "Unsupported message",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
            "Last message must be a human message",
        ),
        (
            json!({"messages": []}),
            "Last message must be a human message",
        ),
    ] {
        let res = post_to(&gw, None, &[], &body).await;
        assert_eq!(res.status(), 422, "{body}");
        assert_eq!(
            res.json::<Value>().await.unwrap(),
            json!({"detail": message})
        );
    }
}

#[tokio::test]
async fn duo_chat_and_each_context_category_need_their_unit_primitive() {
    let s = setup(&[]).await;
    answer(&s.fake, &["Final Answer: ok"]);
    // 422 comes before 403.
    let res = s.post(&["ask_issue"], &[], &json!({"messages": "x"})).await;
    assert_eq!(res.status(), 422);
    let res = s.post(&["ask_issue"], &[], &question("hi")).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"detail":"Unauthorized to access duo chat"}"#
    );
    let with_context = json!({"messages": [{"role": "user", "content": "explain",
        "additional_context": [
            {"category": "file", "id": "main.py", "content": "print(1)"},
            {"category": "local_git", "id": "log", "content": "abc"}]}]});
    let res = s
        .post(&["duo_chat", "include_file_context"], &[], &with_context)
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"detail":"Unauthorized to access include_local_git_context"}"#
    );
    assert!(
        s.fake.requests_to("/v1/messages").is_empty(),
        "no model call"
    );
    let res = s
        .post(
            &[
                "duo_chat",
                "include_file_context",
                "include_local_git_context",
            ],
            &[],
            &with_context,
        )
        .await;
    assert_eq!(lines(res).await, vec![delta("ok")]);
    let user = s.upstream_body(0)["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(user.contains("<id> main.py </id>"), "{user}");
    assert!(user.contains("<category> local_git </category>"), "{user}");
    assert!(user.ends_with("\nexplain"), "{user}");
    let log =
        s.gw.wait_record(|r| r["logger"] == "api.access" && r["status_code"] == 200)
            .unwrap();
    assert_eq!(
        log["tracked_internal_events"],
        json!([
            "request_duo_chat",
            "request_include_file_context",
            "request_include_local_git_context"
        ])
    );
}

#[tokio::test]
async fn tools_follow_scopes_gitlab_version_and_feature_flags() {
    let s = setup(&[]).await;
    answer(&s.fake, &["Final Answer: ok"]);
    let tools_of = |n: usize| {
        let system = system_prompt(&s.upstream_body(n));
        let start = system.find("one of [").unwrap() + "one of [".len();
        let end = system[start..].find(']').unwrap() + start;
        system[start..end].to_string()
    };
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            &["duo_chat", "ask_issue", "ask_merge_request", "documentation_search"],
            vec![("X-Gitlab-Version", "17.4.2")],
            "issue_reader, gitlab_documentation",
        ),
        (
            &["duo_chat", "ask_issue", "ask_merge_request", "documentation_search"],
            vec![("X-Gitlab-Version", "17.5.0-pre")],
            "issue_reader, merge_request_reader, gitlab_documentation",
        ),
        (
            ALL_TOOL_SCOPES,
            vec![],
            "epic_reader, issue_reader, gitlab_documentation",
        ),
        (
            ALL_TOOL_SCOPES,
            vec![("X-Gitlab-Version", "17.6.0")],
            "build_reader, epic_reader, issue_reader, merge_request_reader, gitlab_documentation",
        ),
        (
            ALL_TOOL_SCOPES,
            vec![
                ("X-Gitlab-Version", "17.6.0"),
                ("X-Gitlab-Enabled-Feature-Flags", "other,ai_commit_reader_for_chat"),
            ],
            "build_reader, epic_reader, issue_reader, merge_request_reader, gitlab_documentation, commit_reader",
        ),
        (&["duo_chat"], vec![("X-Gitlab-Version", "17.6.0")], ""),
    ];
    for (n, (scopes, headers, expected)) in cases.iter().enumerate() {
        let res = s.post(scopes, headers, &question("hi")).await;
        assert_eq!(lines(res).await, vec![delta("ok")]);
        assert_eq!(tools_of(n), *expected, "case {n}");
    }
    let system = system_prompt(&s.upstream_body(1));
    assert!(system.contains("<name>merge_request_reader</name>"));
    assert!(
        system.contains("Action: merge_request_reader\nAction Input:"),
        "examples are shown"
    );
    assert!(!system.contains("<name>build_reader</name>"));
    assert!(
        system.contains("resources: ['Merge Requests, Pipelines, Vulnerabilities']"),
        "unavailable resources as a Python list: {system}"
    );
}

#[tokio::test]
async fn the_final_answer_streams_while_the_model_still_writes() {
    let s = setup(&[]).await;
    let mut parts: Vec<Part> = anthropic_head(12).into_iter().map(Part::Data).collect();
    parts.push(Part::Data(anthropic_delta(" I know.\nFinal Ans")));
    parts.push(Part::Data(anthropic_delta("wer: Hel")));
    // Held until the test has read the first NDJSON line.
    parts.push(Part::Gate(1));
    parts.push(Part::Data(anthropic_delta("lo, ")));
    parts.push(Part::Data(anthropic_delta("world!")));
    parts.extend(anthropic_tail(7).into_iter().map(Part::Data));
    s.fake
        .route("/v1/messages", Reply::stream("text/event-stream", parts));

    let res = s.post(ALL_TOOL_SCOPES, &[], &question("hi")).await;
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut buf = Vec::new();
    while !buf.contains(&b'\n') {
        buf.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    assert_eq!(
        String::from_utf8(buf.clone()).unwrap(),
        format!("{}\n", delta("Hel")),
        "the first piece arrives while the model waits"
    );
    s.fake.release(1);
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        format!("{}\n{}\n{}\n", delta("Hel"), delta("lo,"), delta(" world!")),
        "trailing spaces wait for what follows, as the original's strip does"
    );

    let sent = s.upstream_body(0);
    assert_eq!(sent["model"], "claude-3-5-sonnet-20240620");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stop_sequences"], json!(["Observation:"]));
    assert_eq!(sent["max_tokens"], 8192);
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Thought:"}])
    );
}

#[tokio::test]
async fn a_chosen_tool_is_an_action_at_the_end() {
    let s = setup(&[]).await;
    answer(
        &s.fake,
        &[
            " I need the issue\nAction: issue",
            "_reader\nAction Input: Summarize #123",
        ],
    );
    let res = s
        .post(ALL_TOOL_SCOPES, &[], &question("Summarize #123"))
        .await;
    assert_eq!(
        lines(res).await,
        vec![
            r#"{"type": "action", "data": {"tool": "issue_reader", "tool_input": "Summarize #123", "thought": "I need the issue"}}"#
        ]
    );
    let log = s
        .gw
        .wait_record(|r| r["logger"] == "api.access" && r["duo_chat.agent_tool_action"].is_string())
        .unwrap();
    assert_eq!(log["duo_chat.agent_tool_action"], "issue_reader");
    assert_eq!(
        log["tracked_internal_events"],
        json!(["request_duo_chat", "request_ask_issue"])
    );
}

#[tokio::test]
async fn camel_case_tools_map_and_unoffered_tools_are_errors() {
    let s = setup(&[]).await;
    answer(
        &s.fake,
        &["Reading it.\nAction: MergeRequestReader\nAction Input: !1"],
    );
    let headers = [("X-Gitlab-Version", "17.5.0")];
    let res = s.post(ALL_TOOL_SCOPES, &headers, &question("!1")).await;
    assert_eq!(
        lines(res).await,
        vec![
            r#"{"type": "action", "data": {"tool": "merge_request_reader", "tool_input": "!1", "thought": "Reading it."}}"#
        ]
    );
    // Without ask_merge_request the tool is not offered.
    let res = s
        .post(&["duo_chat", "ask_issue"], &headers, &question("!1"))
        .await;
    assert_eq!(
        lines(res).await,
        vec![r#"{"type": "error", "data": {"message": "tool not available", "retryable": false}}"#]
    );
}

#[tokio::test]
async fn output_that_is_neither_answer_nor_action_is_unknown() {
    let s = setup(&[]).await;
    answer(&s.fake, &[" I am ", "not sure.\n"]);
    let res = s.post(ALL_TOOL_SCOPES, &[], &question("hmm")).await;
    assert_eq!(
        lines(res).await,
        vec![r#"{"type": "unknown", "data": {"text": "I am not sure."}}"#]
    );
}

#[tokio::test]
async fn overloaded_anthropic_is_a_retryable_error_event() {
    let s = setup(&[]).await;
    let mut frames = anthropic_head(3);
    frames.push(anthropic_delta("Final Answer: Par"));
    frames.push(anthropic_delta("tial"));
    frames.push(anthropic_error_event());
    s.fake.route("/v1/messages", Reply::sse(frames));
    let res = s.post(ALL_TOOL_SCOPES, &[], &question("hi")).await;
    assert_eq!(
        lines(res).await,
        vec![
            delta("Par"),
            delta("tial"),
            r#"{"type": "error", "data": {"message": "{'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}", "retryable": true}}"#.to_string(),
        ],
        "the error ends the stream cleanly"
    );

    // Before the stream (after the gateway's one retry): still a 200 with the error event.
    let s = setup(&[]).await;
    s.fake.route(
        "/v1/messages",
        Reply::json(529, &anthropic_error_body("overloaded_error", "Overloaded")),
    );
    let res = s.post(ALL_TOOL_SCOPES, &[], &question("hi")).await;
    assert_eq!(
        lines(res).await,
        vec![
            r#"{"type": "error", "data": {"message": "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}", "retryable": true}}"#
        ]
    );
    let s = setup(&[]).await;
    s.fake.route(
        "/v1/messages",
        Reply::json(
            400,
            &anthropic_error_body("invalid_request_error", "prompt is too long"),
        ),
    );
    let res = s.post(ALL_TOOL_SCOPES, &[], &question("hi")).await;
    let got = lines(res).await;
    let v: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(v["data"]["retryable"], false, "{v}");
}

#[tokio::test]
async fn history_context_and_scratchpad_are_rendered() {
    let s = setup(&[]).await;
    answer(&s.fake, &["Final Answer: done"]);
    let body = json!({
        "messages": [
            {"role": "user", "content": "What is #1?"},
            {"role": "assistant", "content": "An issue."},
            {"role": "user", "content": "Summarize it",
             "context": {"type": "issue", "content": "Bug in login"},
             "current_file": {"file_path": "app/login.rb", "data": "def login; end", "selected_code": true},
             "resource_content": "The issue body"}
        ],
        "options": {"agent_scratchpad": {"agent_type": "react", "steps": [
            {"thought": "I need to read\\_it", "tool": "issue\\_reader", "tool_input": "#1",
             "observation": "Login fails"}]}},
        "unavailable_resources": ["Pipelines", "Vulnerabilities"]
    });
    let res = s.post(ALL_TOOL_SCOPES, &[], &body).await;
    assert_eq!(lines(res).await, vec![delta("done")]);
    let sent = s.upstream_body(0);
    let messages = sent["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["user", "assistant", "user", "assistant"]);
    assert_eq!(messages[0]["content"], "What is #1?");
    assert_eq!(messages[1]["content"], "An issue.");
    let user = messages[2]["content"].as_str().unwrap();
    assert!(
        user.contains(
            "<context>\n    <type>issue</type>\n    <content>Bug in login</content>\n</context>"
        ),
        "{user}"
    );
    assert!(
        user.contains("in the file app/login.rb:\n\n<code>\ndef login; end\n</code>"),
        "{user}"
    );
    assert!(
        user.contains("<resource_content>\nThe issue body\n</resource_content>"),
        "{user}"
    );
    assert!(user.ends_with("\nSummarize it"), "{user}");
    assert_eq!(
        messages[3]["content"],
        "Thought: I need to read_it\nAction: issue_reader\nAction Input: #1\nObservation: Login fails\nThought:"
    );
    assert!(system_prompt(&sent).contains("resources: ['Pipelines', 'Vulnerabilities']"));
}

#[tokio::test]
async fn a_client_going_away_closes_the_model_call() {
    let s = setup(&[]).await;
    let mut parts: Vec<Part> = anthropic_head(12).into_iter().map(Part::Data).collect();
    parts.push(Part::Data(anthropic_delta("Final Answer: Hel")));
    parts.push(Part::Gate(1));
    parts.push(Part::Data(anthropic_delta("lo")));
    parts.extend(anthropic_tail(7).into_iter().map(Part::Data));
    s.fake
        .route("/v1/messages", Reply::stream("text/event-stream", parts));
    let res = s.post(ALL_TOOL_SCOPES, &[], &question("hi")).await;
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(first, format!("{}\n", delta("Hel")).into_bytes());
    drop(body);
    assert!(
        s.fake.wait_closed_by_peer().await,
        "the upstream connection is closed when the client leaves"
    );
}

#[tokio::test]
async fn realm_disallowed_flags_and_self_hosted_documentation() {
    let s = setup(&[
        (
            "AIGW_FEATURE_FLAGS__DISALLOWED_FLAGS",
            r#"{"saas": ["ai_commit_reader_for_chat"]}"#,
        ),
        ("AIGW_CUSTOM_MODELS__ENABLED", "true"),
    ])
    .await;
    answer(&s.fake, &["Final Answer: ok"]);
    let headers = [
        ("X-Gitlab-Version", "17.6.0"),
        (
            "X-Gitlab-Enabled-Feature-Flags",
            "ai_commit_reader_for_chat",
        ),
    ];
    let res = s.post(ALL_TOOL_SCOPES, &headers, &question("hi")).await;
    assert_eq!(lines(res).await, vec![delta("ok")]);
    let system = system_prompt(&s.upstream_body(0));
    assert!(
        !system.contains("commit_reader"),
        "the flag is disallowed for the realm: {system}"
    );
    assert!(system.contains("Action Input: set up project"), "{system}");
}
