//! `POST /v1/search/gitlab-docs` against a fake Discovery Engine (Vertex AI Search) and a fake
//! metadata server for the Google token, over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::fake_upstream::*;
use common::Gateway;
use serde_json::{json, Value};

const STORES: &str =
    "/v1/projects/docs-project/locations/global/collections/default_collection/dataStores/";

/// An unsigned token with `scopes` (the gateway runs with signature checks bypassed).
fn token(scopes: &[&str]) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(json!({"scopes": scopes}).to_string());
    format!("{header}.{claims}.c2ln")
}

fn gateway(fake: &FakeUpstream, extra: &[(&str, &str)]) -> Gateway {
    fake.route(
        "/computeMetadata/",
        Reply::json(200, &google_token("ya29.search-token")),
    );
    let host = fake.url.trim_start_matches("http://").to_string();
    let mut env = vec![
        ("AIGW_AUTH__BYPASS_JWT_SIGNATURE", "true"),
        ("AIGW_VERTEX_SEARCH__ENDPOINT", fake.url.as_str()),
        ("AIGW_VERTEX_SEARCH__PROJECT", "docs-project"),
        ("AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT", "model-project"),
        ("GCE_METADATA_HOST", host.as_str()),
        ("AIGW_MODELS__MAX_RETRIES", "0"),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env, &[])
}

fn search_body(version: &str, query: &str) -> Value {
    json!({"type": "search-docs", "metadata": {"source": "GitLab EE", "version": version},
           "payload": {"query": query, "page_size": 2}})
}

async fn search(gw: &Gateway, scopes: &[&str], body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/search/gitlab-docs", gw.api))
        .bearer_auth(token(scopes))
        .header("x-gitlab-authentication-type", "oidc")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A Discovery Engine search answer, as the REST API sends it.
fn answer(store: &str, docs: &[(&str, &str)]) -> Value {
    let results: Vec<Value> = docs
        .iter()
        .map(|(id, content)| {
            json!({"id": id, "document": {
                "name": format!("projects/123/locations/global/collections/default_collection/dataStores/{store}/branches/0/documents/{id}"),
                "id": id,
                "structData": {"content": content, "metadata": {
                    "source_url": format!("https://docs.gitlab.com/ee/{id}.html"), "title": id}}}})
        })
        .collect();
    json!({"results": results, "totalSize": docs.len(), "attributionToken": "tok-1",
           "summary": {}})
}

fn google_error(code: u16, status: &str) -> Reply {
    Reply::json(
        code,
        &json!({"error": {"code": code, "message": "upstream says no", "status": status}}),
    )
}

async fn status_and_body(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentation_of_the_callers_version_is_searched() {
    let fake = FakeUpstream::start().await;
    fake.route(
        "gitlab-docs-17-3/",
        Reply::json(
            200,
            &answer(
                "gitlab-docs-17-3",
                &[
                    ("rebase", "Rebase a branch with git rebase."),
                    ("squash", "Squash commits."),
                ],
            ),
        ),
    );
    let gw = gateway(&fake, &[]);
    let res = search(
        &gw,
        &["documentation_search"],
        &search_body("17.3.1-ee", "how do I rebase"),
    )
    .await;
    let (status, body) = status_and_body(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["response"],
        json!({"results": [
            {"id": "rebase", "content": "Rebase a branch with git rebase.",
             "metadata": {"source_url": "https://docs.gitlab.com/ee/rebase.html", "title": "rebase"}},
            {"id": "squash", "content": "Squash commits.",
             "metadata": {"source_url": "https://docs.gitlab.com/ee/squash.html", "title": "squash"}}
        ]})
    );
    assert_eq!(body["metadata"]["provider"], "vertex-ai");
    assert!(body["metadata"]["timestamp"].as_i64().unwrap() > 1_700_000_000);

    let calls = fake.requests_to(":search");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].path,
        format!("{STORES}gitlab-docs-17-3/servingConfigs/default_config:search")
    );
    assert_eq!(calls[0].method, "POST");
    assert_eq!(
        calls[0].header("authorization"),
        Some("Bearer ya29.search-token")
    );
    assert_eq!(
        calls[0].json(),
        json!({"query": "how do I rebase", "pageSize": 2,
               "queryExpansionSpec": {"condition": "AUTO"}, "spellCorrectionSpec": {"mode": "AUTO"}})
    );
    let log = gw.access_log("/v1/search/gitlab-docs");
    assert_eq!(
        log["tracked_internal_events"],
        json!(["request_documentation_search"])
    );
    assert_eq!(log["meta.unit_primitive"], "documentation_search");
    assert_eq!(log["status_code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_without_a_data_store_is_searched_in_the_fallback() {
    let fake = FakeUpstream::start().await;
    fake.route("gitlab-docs-99-1/", google_error(404, "NOT_FOUND"));
    fake.route(
        "gitlab-docs-17-0/",
        Reply::json(
            200,
            &answer("gitlab-docs-17-0", &[("ci", "CI/CD pipelines.")]),
        ),
    );
    let gw = gateway(
        &fake,
        &[("AIGW_VERTEX_SEARCH__FALLBACK_DATASTORE_VERSION", "17.0")],
    );
    let (status, body) = status_and_body(
        search(
            &gw,
            &["documentation_search"],
            &search_body("99.1.0", "pipelines"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["results"][0]["id"], "ci");
    let paths: Vec<String> = fake
        .requests_to(":search")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        paths,
        [
            format!("{STORES}gitlab-docs-99-1/servingConfigs/default_config:search"),
            format!("{STORES}gitlab-docs-17-0/servingConfigs/default_config:search"),
        ]
    );

    // A version that names no store goes straight to the fallback.
    let (status, _) = status_and_body(
        search(
            &gw,
            &["documentation_search"],
            &search_body("unknown", "pipelines"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let last = fake.requests_to(":search").pop().unwrap();
    assert!(last.path.contains("gitlab-docs-17-0/"), "{}", last.path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_failures_are_the_originals_errors() {
    let fake = FakeUpstream::start().await;
    fake.route("gitlab-docs-99-1/", google_error(404, "NOT_FOUND"));
    fake.route("gitlab-docs-17-5/", google_error(500, "INTERNAL"));
    fake.route("gitlab-docs-17-6/", google_error(403, "PERMISSION_DENIED"));
    // A store that never answers (its gate is never opened).
    let mut silent = google_error(200, "OK");
    silent.parts.insert(0, Part::Gate(1));
    fake.route("gitlab-docs-17-7/", silent);
    let gw = gateway(&fake, &[("AIGW_MODELS__IDLE_TIMEOUT_S", "1")]);
    // No store for the version and no fallback configured.
    let res = search(&gw, &["documentation_search"], &search_body("99.1.0", "x")).await;
    assert_eq!(
        status_and_body(res).await,
        (400, json!({"detail": "Data store not found."}))
    );
    for version in ["17.5.0", "17.6.0", "17.7.0"] {
        let res = search(&gw, &["documentation_search"], &search_body(version, "x")).await;
        assert_eq!(
            status_and_body(res).await,
            (500, json!({"detail": "Vertex API Search Error."})),
            "{version}"
        );
    }
    let timed_out = gw
        .wait_record(|r| {
            r["logger"] == "api.access"
                && r["search_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("no answer from the search within"))
        })
        .expect("the silent store's deadline is logged");
    assert_eq!(timed_out["status_code"], 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_project_the_search_fails_saying_so() {
    let fake = FakeUpstream::start().await;
    let gw = gateway(
        &fake,
        &[
            ("AIGW_VERTEX_SEARCH__PROJECT", ""),
            ("AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT", ""),
        ],
    );
    let res = search(&gw, &["documentation_search"], &search_body("17.3.0", "x")).await;
    assert_eq!(
        status_and_body(res).await,
        (500, json!({"detail": "Vertex API Search Error."}))
    );
    let log = gw.access_log("/v1/search/gitlab-docs");
    assert!(
        log["search_error"]
            .as_str()
            .unwrap()
            .contains("AIGW_VERTEX_SEARCH__PROJECT"),
        "{log}"
    );
    assert!(fake.requests_to(":search").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_needs_documentation_search_and_a_valid_body() {
    let fake = FakeUpstream::start().await;
    let gw = gateway(&fake, &[]);
    let res = search(&gw, &["duo_chat"], &search_body("17.3.0", "x")).await;
    assert_eq!(
        status_and_body(res).await,
        (
            403,
            json!({"detail": "Unauthorized to search documentations"})
        )
    );
    let res = search(
        &gw,
        &["documentation_search"],
        &json!({"type": "search-docs", "metadata": {"source": "s", "version": "17.3"},
                "payload": {"query": "x", "page_size": 21}}),
    )
    .await;
    assert_eq!(
        status_and_body(res).await,
        (
            422,
            json!({"detail": [{"type": "less_than_equal", "loc": ["body", "payload", "page_size"],
                               "msg": "Input should be less than or equal to 20", "input": 21,
                               "ctx": {"le": 20}}]})
        )
    );
    assert!(fake.requests_to(":search").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_mode_and_custom_models_search_nothing() {
    let fake = FakeUpstream::start().await;
    let mock = gateway(&fake, &[("AIGW_MOCK_MODEL_RESPONSES", "true")]);
    let (status, body) = status_and_body(
        search(
            &mock,
            &["documentation_search"],
            &search_body("17.3.0", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"], json!({"results": []}));
    // With custom models the original searches a local SQLite index; without one (this gateway
    // ships none) it answers no results from provider `sqlite`.
    let custom = gateway(&fake, &[("AIGW_CUSTOM_MODELS__ENABLED", "true")]);
    let (status, body) = status_and_body(
        search(
            &custom,
            &["documentation_search"],
            &search_body("17.3.0", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], json!({"results": []}));
    assert_eq!(body["metadata"]["provider"], "sqlite");
    assert!(custom
        .wait_record(
            |r| r["message"] == "SqliteSearch: No database found for documentation searches."
        )
        .is_some());
    assert!(fake.requests_to(":search").is_empty());
}
