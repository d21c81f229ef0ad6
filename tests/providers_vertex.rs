//! Vertex AI (code-gecko `predict`, code-bison `serverStreamingPredict`) through the gateway
//! against a fake Vertex endpoint and a fake Google metadata server / token endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use common::fake_upstream::*;
use common::providers::{self as scenarios, base_env, post, Framing, Kit, StreamReader};
use serde_json::{json, Value};

const MODEL_PATH: &str =
    "/v1/projects/test-project/locations/us-central1/publishers/google/models/";

fn vertex_delta(text: &str) -> Vec<u8> {
    let mut out = serde_json::to_vec(&vertex_stream_element(text)).unwrap();
    out.extend_from_slice(b"\r\n,");
    out
}

fn vertex_error(status: u16) -> Reply {
    let name = match status {
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    Reply::json(
        status,
        &json!({"error": {"code": status, "message": "upstream says no", "status": name}}),
    )
}

fn kit(fake: &FakeUpstream) -> Kit {
    fake.route(
        "/computeMetadata/",
        Reply::json(200, &google_token("ya29.metadata-token")),
    );
    Kit {
        env: base_env(fake),
        stream_path: "/v4/code/suggestions",
        stream_body: json!({"prompt_components": [{"type": "code_editor_generation", "payload": {
            "file_name": "main.py", "content_above_cursor": "# add two numbers\n", "content_below_cursor": "",
            "stream": true}}]}),
        framing: Framing::Sse,
        whole_path: "/v2/code/generations",
        whole_body: json!({"prompt_version": 1,
            "current_file": {"file_name": "main.py", "content_above_cursor": "# add two numbers\n", "content_below_cursor": ""}}),
        upstream_path: "/publishers/google/models/code-",
        head: vec![b"[".to_vec()],
        delta: vertex_delta,
        tail: vec![format!("{}]", serde_json::to_string(&vertex_stream_element("")).unwrap()).into_bytes()],
        error_frame: br#"{"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}]"#.to_vec(),
        content_type: "application/json; charset=UTF-8",
        whole: |text| Reply::json(200, &vertex_predict(&[(text, -1.0)], 10, 4)),
        error: vertex_error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_frames_arrive_unbatched() {
    let fake = FakeUpstream::start().await;
    scenarios::paced_frames_arrive_unbatched(&fake, &kit(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_error_element() {
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
async fn gecko_predict_with_candidates_and_metadata_token() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.push(Reply::json(
        200,
        &vertex_predict(
            &[(" bool:\n    return n % 2 == 0", -2.5), (" int:", -30.0)],
            17,
            8,
        ),
    ));
    fake.push(Reply::json(200, &vertex_predict(&[(" bool:", -1.0)], 5, 2)));
    let gw = kit.gateway(&[]);
    let body = json!({"prompt_version": 1, "choices_count": 2,
        "current_file": {"file_name": "main.py", "content_above_cursor": "def is_even(n: int) ->", "content_below_cursor": ""}});
    let res = post(&gw, "/v2/code/completions", &body).await;
    assert_eq!(res.status(), 200);
    let res: Value = res.json().await.unwrap();
    assert_eq!(res["model"]["engine"], "vertex-ai");
    assert_eq!(res["model"]["name"], "code-gecko@002");
    assert_eq!(
        res["model"]["tokens_consumption_metadata"]["output_tokens"],
        8
    );
    // The second candidate scored below -10 and is discarded.
    let choices = res["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1, "{res}");
    assert!(choices[0]["text"]
        .as_str()
        .unwrap()
        .contains("return n % 2 == 0"));

    let sent = &fake.requests_to(":predict")[0];
    assert_eq!(sent.path, format!("{MODEL_PATH}code-gecko@002:predict"));
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer ya29.metadata-token")
    );
    let b = sent.json();
    assert_eq!(
        b["parameters"],
        json!({"temperature": 0.2, "maxOutputTokens": 64, "topP": 0.95, "topK": 40,
               "candidateCount": 2, "stopSequences": ["\n\n"]})
    );
    assert!(b["instances"][0]["prefix"]
        .as_str()
        .unwrap()
        .ends_with("def is_even(n: int) ->"));
    assert_eq!(b["instances"][0]["suffix"], "");

    // The token is cached: a second call does not ask the metadata server again.
    let res = post(&gw, "/v2/code/completions", &body).await;
    assert_eq!(res.status(), 200);
    let token_calls = fake.requests_to("/computeMetadata/");
    assert_eq!(token_calls.len(), 1);
    assert_eq!(token_calls[0].header("metadata-flavor"), Some("Google"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bison_streaming_request_is_tensor_shaped() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    let mut parts = vec![b"[".to_vec()];
    parts.push(vertex_delta("def add(a, b):"));
    parts.push(
        format!(
            "{}]",
            serde_json::to_string(&vertex_stream_element("\n    return a + b")).unwrap()
        )
        .into_bytes(),
    );
    fake.push(Reply::stream(
        "application/json; charset=UTF-8",
        parts.into_iter().map(Part::Data).collect(),
    ));
    let gw = kit.gateway(&[]);
    let res = post(
        &gw,
        "/v2/code/generations",
        &json!({"prompt_version": 1, "stream": true,
                "current_file": {"file_name": "main.py", "content_above_cursor": "# add\n", "content_below_cursor": ""}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut reader = StreamReader::new(Framing::Raw, res);
    reader.read_to_end().await;
    assert_eq!(reader.content, "def add(a, b):\n    return a + b");
    let sent = &fake.requests_to(":serverStreamingPredict")[0];
    assert_eq!(
        sent.path,
        format!("{MODEL_PATH}code-bison@002:serverStreamingPredict")
    );
    let b = sent.json();
    assert!(b["inputs"][0]["structVal"]["prefix"]["stringVal"][0]
        .as_str()
        .unwrap()
        .contains("# add"));
    assert_eq!(
        b["parameters"]["structVal"]["maxOutputTokens"],
        json!({"intVal": [2048]})
    );
    assert_eq!(
        b["parameters"]["structVal"]["temperature"],
        json!({"floatVal": [0.2]})
    );
}

fn b64url_json(part: &str) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_key_file_signs_and_exchanges_a_jwt() {
    let fake = FakeUpstream::start().await;
    let kit = kit(&fake);
    fake.route(
        "/token",
        Reply::json(200, &google_token("ya29.service-account")),
    );
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let creds = dir.path().join("sa.json");
    std::fs::write(
        &creds,
        serde_json::to_vec(
            &json!({"type": "service_account", "project_id": "test-project",
            "private_key_id": "kid-1", "private_key": pem,
            "client_email": "aigw@test-project.iam.gserviceaccount.com",
            "token_uri": format!("{}/token", fake.url)}),
        )
        .unwrap(),
    )
    .unwrap();
    fake.push(Reply::json(
        200,
        &vertex_predict(&[("\nreturn 1", -1.0)], 5, 2),
    ));
    let creds = creds.to_str().unwrap().to_string();
    let gw = kit.gateway(&[("GOOGLE_APPLICATION_CREDENTIALS", creds.as_str())]);
    let res = post(&gw, kit.whole_path, &kit.whole_body).await;
    assert_eq!(res.status(), 200);
    let sent = &fake.requests_to(":predict")[0];
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer ya29.service-account")
    );
    assert!(fake.requests_to("/computeMetadata/").is_empty());
    let exchange = &fake.requests_to("/token")[0];
    let form = String::from_utf8(exchange.body.clone()).unwrap();
    let fields: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        fields["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let parts: Vec<&str> = fields["assertion"].split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = b64url_json(parts[0]);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "kid-1");
    let claims = b64url_json(parts[1]);
    assert_eq!(claims["iss"], "aigw@test-project.iam.gserviceaccount.com");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(claims["aud"], format!("{}/token", fake.url));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_file_stops_startup_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("sa.json");
    std::fs::write(&creds, "{\"type\": \"service_account\"}").unwrap();
    let err = common::Gateway::try_start(
        &[
            ("AIGW_MOCK_MODEL_RESPONSES", "false"),
            ("GOOGLE_APPLICATION_CREDENTIALS", creds.to_str().unwrap()),
        ],
        &["--dev"],
    )
    .err()
    .expect("startup fails");
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
}

/// A token endpoint announcing an absurd lifetime (`expires_in` of 2^64 − 1 seconds, more than
/// an `Instant` can add) is believed for a day at most; the addition panicked every Vertex call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_token_lifetime_is_capped() {
    let fake = FakeUpstream::start().await;
    // Routed before the kit's own metadata answer, which it therefore shadows.
    let mut token = google_token("ya29.forever");
    token["expires_in"] = json!(u64::MAX);
    fake.route("/computeMetadata/", Reply::json(200, &token));
    let kit = kit(&fake);
    let gw = kit.gateway(&[]);
    for _ in 0..2 {
        fake.push(Reply::json(200, &vertex_predict(&[(" bool:", -1.0)], 5, 2)));
        let res = post(&gw, kit.whole_path, &kit.whole_body).await;
        let status = res.status().as_u16();
        assert_eq!(
            status,
            200,
            "{}\n{}",
            res.text().await.unwrap(),
            gw.stderr()
        );
    }
    // Cached like any token: one ask for two calls.
    assert_eq!(fake.requests_to("/computeMetadata/").len(), 1);
    let sent = &fake.requests_to(":predict")[0];
    assert_eq!(sent.header("authorization"), Some("Bearer ya29.forever"));
}
