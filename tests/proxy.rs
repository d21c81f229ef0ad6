//! The provider proxies over the real binary, against fake Anthropic and Vertex upstreams that
//! record what reaches them: authorization and allow-lists, forwarded headers (ours in, the
//! client's credentials out), bodies byte for byte, statuses preserved, streams relayed frame by
//! frame, 502 when the upstream is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::fake_upstream::{read_request, Recorded as Received};
use common::Gateway;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the fake upstream answers.
#[derive(Clone)]
enum Reply {
    /// A whole response.
    Whole {
        status: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A chunked stream that repeats `frame` until the connection breaks.
    Endless {
        content_type: &'static str,
        frame: &'static str,
    },
    /// A chunked stream of frames; frame N+1 is written only after the test says so.
    Lockstep {
        content_type: &'static str,
        frames: Vec<&'static str>,
    },
}

struct Upstream {
    addr: String,
    received: Arc<Mutex<Vec<Received>>>,
    /// Set when the gateway closed a lockstep stream's connection before its end.
    closed_early: Arc<std::sync::atomic::AtomicBool>,
    /// Permits for the next frame of a lockstep stream.
    next_frame: mpsc::UnboundedSender<()>,
}

/// A fake upstream: answers the metadata server's token path with a token, everything else
/// with `reply`.
async fn upstream(reply: Reply) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let (next_frame, permits) = mpsc::unbounded_channel::<()>();
    let permits = Arc::new(tokio::sync::Mutex::new(permits));
    let log = Arc::clone(&received);
    let closed_early = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = Arc::clone(&closed_early);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            let reply = reply.clone();
            let permits = Arc::clone(&permits);
            let closed = Arc::clone(&closed);
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock, &mut Vec::new()).await else {
                    return;
                };
                let token_path = req.path.starts_with("/computeMetadata/");
                log.lock().unwrap().push(req);
                if token_path {
                    let body = r#"{"access_token":"ya29.gateway-token","expires_in":3599,"token_type":"Bearer"}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    return;
                }
                match reply {
                    Reply::Whole {
                        status,
                        content_type,
                        body,
                    } => {
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-upstream-internal: secret\r\nset-cookie: upstream=1\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&body).await;
                    }
                    Reply::Endless {
                        content_type,
                        frame,
                    } => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let chunk = format!("{:x}\r\n{frame}\r\n", frame.len());
                        loop {
                            if sock.write_all(chunk.as_bytes()).await.is_err() {
                                closed.store(true, std::sync::atomic::Ordering::SeqCst);
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    Reply::Lockstep {
                        content_type,
                        frames,
                    } => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let mut permits = permits.lock().await;
                        for (i, frame) in frames.iter().enumerate() {
                            if i > 0 {
                                // Wait for the test's permit, or notice the gateway hanging up.
                                let mut probe = [0u8; 1];
                                tokio::select! {
                                    permit = permits.recv() => {
                                        if permit.is_none() {
                                            return;
                                        }
                                    }
                                    n = sock.read(&mut probe) => {
                                        if matches!(n, Ok(0) | Err(_)) {
                                            closed.store(true, std::sync::atomic::Ordering::SeqCst);
                                        }
                                        return;
                                    }
                                }
                            }
                            let chunk = format!("{:x}\r\n{frame}\r\n", frame.len());
                            if sock.write_all(chunk.as_bytes()).await.is_err() {
                                return;
                            }
                            let _ = sock.flush().await;
                        }
                        let _ = sock.write_all(b"0\r\n\r\n").await;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        received,
        closed_early,
        next_frame,
    }
}

impl Upstream {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Requests other than token fetches.
    fn calls(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/computeMetadata/"))
            .collect()
    }
}

fn anthropic_gateway(up: &Upstream, extra: &[(&str, &str)]) -> Gateway {
    let url = up.url();
    let mut env = vec![
        ("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
        ("ANTHROPIC_API_KEY", "sk-ant-gateway-key"),
        ("ANTHROPIC_BASE_URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env, &[])
}

fn vertex_gateway(up: &Upstream) -> Gateway {
    let url = up.url();
    Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
            ("AIGW_VERTEX_TEXT_MODEL__ENDPOINT", url.as_str()),
            ("AIGW_VERTEX_TEXT_MODEL__PROJECT", "our-project"),
            ("AIGW_VERTEX_TEXT_MODEL__LOCATION", "us-east5"),
            ("GCE_METADATA_HOST", up.addr.as_str()),
        ],
        &[],
    )
}

/// A body with the client's own spacing and key order, which must arrive unchanged.
const MESSAGES_BODY: &str = "{ \"model\":\"claude-3-haiku-20240307\",\n  \"max_tokens\" : 5, \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}] }";

fn client_request(gw: &Gateway, path: &str, up: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .header("x-gitlab-unit-primitive", up)
        .header("content-type", "application/json")
}

#[tokio::test]
async fn anthropic_forwards_allowed_headers_our_key_and_the_bytes() {
    let answer = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
    let up = upstream(Reply::Whole {
        status: "429 Too Many Requests",
        content_type: "application/json",
        body: answer.to_vec(),
    })
    .await;
    let gw = anthropic_gateway(&up, &[]);
    let res = client_request(&gw, "/v1/proxy/anthropic/v1/messages", "duo_chat")
        .header("authorization", "Bearer client-jwt")
        .header("x-api-key", "client-key")
        .header("anthropic-version", "2023-06-01")
        .header("accept", "application/json")
        .header("cookie", "session=1")
        .header("x-gitlab-instance-id", "1234")
        .header("anthropic-beta", "tools-2024-04-04")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "the upstream status is preserved");
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(res.headers().get("x-upstream-internal").is_none());
    assert!(res.headers().get("set-cookie").is_none());
    assert_eq!(res.bytes().await.unwrap().as_ref(), answer);

    let calls = up.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/v1/messages");
    assert_eq!(call.body, MESSAGES_BODY.as_bytes(), "bytes unchanged");
    assert_eq!(call.header("x-api-key"), Some("sk-ant-gateway-key"));
    assert_eq!(call.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(call.header("accept"), Some("application/json"));
    assert_eq!(call.header("content-type"), Some("application/json"));
    for refused in [
        "authorization",
        "cookie",
        "x-gitlab-instance-id",
        "x-gitlab-unit-primitive",
        "anthropic-beta",
    ] {
        assert_eq!(
            call.header(refused),
            None,
            "{refused} must not be forwarded"
        );
    }
    let log = gw.access_log("/v1/proxy/anthropic/v1/messages");
    assert_eq!(log["status_code"], 429);
    assert_eq!(log["meta.unit_primitive"], "duo_chat");
    assert_eq!(log["meta.feature_category"], "duo_chat");
    assert_eq!(log["model_name"], "claude-3-haiku-20240307");
}

/// Read from `res` until `want` bytes more have arrived.
async fn read_frame(res: &mut reqwest::Response, pending: &mut Vec<u8>, want: usize) -> Vec<u8> {
    while pending.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(20), res.chunk())
            .await
            .expect("a frame held back by the gateway: the upstream waits for us to read it")
            .unwrap()
            .expect("the stream ended early");
        pending.extend_from_slice(&chunk);
    }
    pending.drain(..want).collect()
}

const SSE_FRAMES: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-3-haiku-20240307\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo \\u00e9\"}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

/// The response head of a lockstep stream: a gateway that waited for the whole upstream body
/// before answering would never send it.
async fn first_bytes(
    send: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> reqwest::Response {
    tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .expect("the response head is held back until the stream ends")
        .unwrap()
}

/// The upstream sends frame N+1 only after the client has read frame N: if the gateway held any
/// frame back (buffering, batching, waiting for the end), the client would never see it and the
/// upstream would never send the next.
async fn assert_lockstep(mut res: reqwest::Response, up: &Upstream, frames: &[&str]) {
    let mut pending = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let got = read_frame(&mut res, &mut pending, frame.len()).await;
        assert_eq!(String::from_utf8(got).unwrap(), *frame, "frame {i}");
        assert!(
            pending.is_empty(),
            "nothing beyond frame {i} can have been sent yet"
        );
        up.next_frame.send(()).unwrap();
    }
    assert!(res.chunk().await.unwrap().is_none(), "the stream ends");
}

#[tokio::test]
async fn anthropic_streams_are_relayed_frame_by_frame() {
    let up = upstream(Reply::Lockstep {
        content_type: "text/event-stream; charset=utf-8",
        frames: SSE_FRAMES.to_vec(),
    })
    .await;
    let gw = anthropic_gateway(&up, &[]);
    let body = r#"{"model":"claude-3-haiku-20240307","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let res = first_bytes(
        client_request(&gw, "/v1/proxy/anthropic/v1/messages", "explain_code")
            .header("anthropic-version", "2023-06-01")
            .body(body)
            .send(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_lockstep(res, &up, SSE_FRAMES).await;
    assert_eq!(up.calls()[0].body, body.as_bytes());
}

async fn status_and_detail(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["detail"].clone())
}

#[tokio::test]
async fn anthropic_refusals_in_the_originals_order() {
    let up = upstream(Reply::Whole {
        status: "200 OK",
        content_type: "application/json",
        body: b"{}".to_vec(),
    })
    .await;
    let gw = anthropic_gateway(&up, &[]);
    let send = |path: &'static str, up_header: Option<&'static str>, body: &'static str| {
        let mut r = reqwest::Client::new()
            .post(format!("{}{path}", gw.api))
            .header("content-type", "application/json");
        if let Some(v) = up_header {
            r = r.header("x-gitlab-unit-primitive", v);
        }
        r.body(body).send()
    };
    let messages = "/v1/proxy/anthropic/v1/messages";
    let cases: Vec<(&str, Option<&str>, &str, u16, &str)> = vec![
        (
            messages,
            None,
            MESSAGES_BODY,
            400,
            "Missing x-gitlab-unit-primitive header",
        ),
        (
            messages,
            Some("make_coffee"),
            MESSAGES_BODY,
            400,
            "Unknown unit primitive header make_coffee",
        ),
        (
            messages,
            Some("complete_code"),
            MESSAGES_BODY,
            400,
            "This endpoint cannot be used for complete_code purpose",
        ),
        (
            "/v1/proxy/anthropic/v1/models",
            Some("duo_chat"),
            MESSAGES_BODY,
            404,
            "Not found",
        ),
        (
            "/v1/proxy/anthropic/v1/messages/batches",
            Some("duo_chat"),
            MESSAGES_BODY,
            404,
            "Not found",
        ),
        (messages, Some("duo_chat"), "{not json", 400, "Invalid JSON"),
        (
            messages,
            Some("duo_chat"),
            r#"{"max_tokens":5}"#,
            400,
            "Failed to extract model name",
        ),
        (
            messages,
            Some("duo_chat"),
            r#"{"model":"claude-9"}"#,
            400,
            "Unsupported model",
        ),
    ];
    for (path, header, body, status, expected) in cases {
        let res = send(path, header, body).await.unwrap();
        assert_eq!(
            status_and_detail(res).await,
            (status, json!(expected)),
            "{path} {header:?} {body}"
        );
    }
    assert!(
        up.calls().is_empty(),
        "nothing refused reaches the upstream"
    );

    // Without our key.
    let keyless = Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
            ("ANTHROPIC_BASE_URL", up.url().as_str()),
        ],
        &[],
    );
    let res = client_request(&keyless, messages, "duo_chat")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_detail(res).await,
        (400, json!("API key not found"))
    );
}

fn token(scopes: &[&str]) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(json!({"scopes": scopes}).to_string());
    format!("{header}.{claims}.c2ln")
}

#[tokio::test]
async fn the_unit_primitive_must_be_among_the_callers_scopes() {
    let up = upstream(Reply::Whole {
        status: "200 OK",
        content_type: "application/json",
        body: br#"{"ok":true}"#.to_vec(),
    })
    .await;
    let url = up.url();
    let gw = Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_JWT_SIGNATURE", "true"),
            ("ANTHROPIC_API_KEY", "sk-ant-gateway-key"),
            ("ANTHROPIC_BASE_URL", url.as_str()),
        ],
        &[],
    );
    let call = |scopes: &[&str]| {
        reqwest::Client::new()
            .post(format!("{}/v1/proxy/anthropic/v1/complete", gw.api))
            .header("x-gitlab-unit-primitive", "explain_vulnerability")
            .bearer_auth(token(scopes))
            .header("x-gitlab-authentication-type", "oidc")
            .body(r#"{"model":"claude-2.1","prompt":"\n\nHuman: hi\n\nAssistant:","max_tokens_to_sample":5}"#)
            .send()
    };
    let res = call(&["duo_chat"]).await.unwrap();
    assert_eq!(
        status_and_detail(res).await,
        (403, json!("Unauthorized to access explain_vulnerability"))
    );
    assert!(up.calls().is_empty());
    let res = call(&["explain_vulnerability"]).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), r#"{"ok":true}"#);
    let calls = up.calls();
    assert_eq!(calls[0].path, "/v1/complete");
    assert_eq!(
        calls[0].header("content-type"),
        Some("application/json"),
        "a JSON body is labelled as such upstream"
    );
    assert_eq!(
        calls[0].header("authorization"),
        None,
        "the client's token stays here"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", url.as_str()),
            ("AIGW_VERTEX_TEXT_MODEL__ENDPOINT", url.as_str()),
            ("GCE_METADATA_HOST", format!("127.0.0.1:{port}").as_str()),
        ],
        &[],
    );
    let res = client_request(&gw, "/v1/proxy/anthropic/v1/messages", "duo_chat")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_detail(res).await, (502, json!("Bad Gateway")));
    let res = client_request(
        &gw,
        "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/code-gecko@002:predict",
        "duo_chat",
    )
    .body(r#"{"instances":[]}"#)
    .send()
    .await
    .unwrap();
    assert_eq!(status_and_detail(res).await, (502, json!("Bad Gateway")));
}

#[tokio::test]
async fn vertex_rewrites_the_path_and_adds_our_google_token() {
    let answer = br#"{"predictions":[{"content":"x = 1"}]}"#;
    let up = upstream(Reply::Whole {
        status: "200 OK",
        content_type: "application/json; charset=UTF-8",
        body: answer.to_vec(),
    })
    .await;
    let gw = vertex_gateway(&up);
    let body = r#"{"instances": [{"prefix": "def f(", "suffix": ""}], "parameters": {"maxOutputTokens": 8}}"#;
    let res = client_request(
        &gw,
        "/v1/proxy/vertex-ai/v1/projects/their-project/locations/europe-west1/publishers/google/models/code-gecko@002:predict",
        "explain_code",
    )
    .header("authorization", "Bearer client-jwt")
    .header("x-goog-user-project", "theirs")
    .body(body)
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/json; charset=UTF-8"
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), answer);

    let requests = up.requests();
    let token_fetch = requests
        .iter()
        .find(|r| r.path.starts_with("/computeMetadata/"))
        .expect("a token from the metadata server");
    assert_eq!(
        token_fetch.path,
        "/computeMetadata/v1/instance/service-accounts/default/token"
    );
    assert_eq!(token_fetch.header("metadata-flavor"), Some("Google"));
    let calls = up.calls();
    let call = &calls[0];
    assert_eq!(
        call.path,
        "/v1/projects/our-project/locations/us-east5/publishers/google/models/code-gecko@002:predict"
    );
    assert_eq!(
        call.header("authorization"),
        Some("Bearer ya29.gateway-token")
    );
    assert_eq!(call.header("x-goog-user-project"), None);
    assert_eq!(call.header("x-gitlab-unit-primitive"), None);
    assert_eq!(call.body, body.as_bytes());

    // The token is reused while fresh.
    let res = client_request(
        &gw,
        "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/code-bison@002:predict",
        "explain_code",
    )
    .body(body)
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let fetches = up
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/computeMetadata/"))
        .count();
    assert_eq!(fetches, 1);

    // Allow-lists.
    for (path, status, expected) in [
        (
            "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/gemini-pro:predict",
            400,
            "Unsupported model",
        ),
        (
            "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/code-gecko@002:generateContent",
            404,
            "Not found",
        ),
        ("/v1/proxy/vertex-ai/v1/models", 404, "Not found"),
    ] {
        let res = client_request(&gw, path, "explain_code")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(status_and_detail(res).await, (status, json!(expected)), "{path}");
    }
}

#[tokio::test]
async fn vertex_streams_are_relayed_frame_by_frame() {
    const FRAMES: &[&str] = &[
        "[{\"outputs\":[{\"structVal\":{\"content\":{\"stringVal\":[\"def \"]}}}]}\r\n",
        ",{\"outputs\":[{\"structVal\":{\"content\":{\"stringVal\":[\"f():\"]}}}]}\r\n",
        "]",
    ];
    let up = upstream(Reply::Lockstep {
        content_type: "application/json; charset=UTF-8",
        frames: FRAMES.to_vec(),
    })
    .await;
    let gw = vertex_gateway(&up);
    let res = first_bytes(
        client_request(
            &gw,
            "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/code-bison@002:serverStreamingPredict",
            "explain_code",
        )
        .body(r#"{"inputs":[]}"#)
        .send(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_lockstep(res, &up, FRAMES).await;
    assert!(up.calls()[0]
        .path
        .ends_with("code-bison@002:serverStreamingPredict"));
}

#[tokio::test]
async fn mock_mode_answers_without_an_upstream() {
    let gw = Gateway::start(&[("ANTHROPIC_API_KEY", "k")], &["--dev"]);
    for (path, body) in [
        ("/v1/proxy/anthropic/v1/messages", MESSAGES_BODY),
        (
            "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/code-gecko@002:predict",
            "{}",
        ),
    ] {
        let res = client_request(&gw, path, "duo_chat")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), r#"{"response": "mocked"}"#);
    }
}

#[tokio::test]
async fn a_client_that_goes_away_closes_the_upstream_stream() {
    let up = upstream(Reply::Endless {
        content_type: "text/event-stream",
        frame: SSE_FRAMES[1],
    })
    .await;
    let gw = anthropic_gateway(&up, &[]);
    let body = r#"{"model":"claude-3-haiku-20240307","max_tokens":5,"stream":true,"messages":[]}"#;
    let mut res = first_bytes(
        client_request(&gw, "/v1/proxy/anthropic/v1/messages", "duo_chat")
            .body(body)
            .send(),
    )
    .await;
    let mut pending = Vec::new();
    let first = read_frame(&mut res, &mut pending, SSE_FRAMES[1].len()).await;
    assert_eq!(first, SSE_FRAMES[1].as_bytes());
    // The client hangs up in the middle of an endless stream: the gateway must hang up upstream
    // too, or the upstream writes forever.
    drop(res);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !up.closed_early.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream connection stayed open after the client left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- abuse detection (spec 9.2) ---------------------------------------------------------------

use common::fake_upstream::{
    anthropic_error_body, anthropic_message, FakeUpstream, Part, Reply as FakeReply,
};
use common::metric_value;

fn abuse_gateway(fake: &FakeUpstream, rate: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![
        ("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
        ("ANTHROPIC_API_KEY", "sk-ant-gateway-key"),
        ("ANTHROPIC_BASE_URL", fake.url.as_str()),
        ("AIGW_ABUSE_DETECTION__ENABLED", "true"),
        ("AIGW_ABUSE_DETECTION__SAMPLING_RATE", rate),
        ("AIGW_MODELS__MAX_RETRIES", "0"),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env, &[])
}

/// A whole reply that waits for gate `gate` before its body: the test decides when it arrives.
fn gated(gate: usize, reply: FakeReply) -> FakeReply {
    let mut reply = reply;
    reply.parts.insert(0, Part::Gate(gate));
    reply
}

async fn proxied(gw: &Gateway, up: &str) -> reqwest::Response {
    client_request(gw, "/v1/proxy/anthropic/v1/messages", up)
        .header("anthropic-version", "2023-06-01")
        .header("x-gitlab-instance-id", "instance-1")
        .header("x-gitlab-global-user-id", "user-9")
        .body(MESSAGES_BODY)
        .send()
        .await
        .unwrap()
}

// The gateway-log waits block their thread: the fake upstream runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_request_is_scored_after_its_answer() {
    let fake = FakeUpstream::start().await;
    let answer = anthropic_message("Use a protected branch.", 12, 6);
    fake.push(FakeReply::json(200, &answer));
    // The detector's answer is held until the test has the proxied answer in full: if the proxy
    // waited for the check, this test would deadlock.
    fake.push(gated(
        1,
        FakeReply::json(200, &anthropic_message("0.8", 900, 2)),
    ));
    let gw = abuse_gateway(&fake, "1.0", &[]);

    let res = proxied(&gw, "explain_vulnerability").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        serde_json::to_vec(&answer).unwrap().as_slice(),
        "the proxied answer is unchanged"
    );
    assert!(fake.wait_requests(2).await, "the detector was called");
    let calls = fake.requests_to("/v1/messages");
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].body,
        MESSAGES_BODY.as_bytes(),
        "the proxied call came first"
    );
    let check = calls[1].json();
    assert_eq!(calls[1].header("x-api-key"), Some("sk-ant-gateway-key"));
    assert_eq!(check["model"], "claude-3-haiku-20240307");
    assert_eq!(check["max_tokens"], 8);
    assert_eq!(check["stop_sequences"], json!(["</score>"]));
    assert!(check["system"].as_str().unwrap().contains("GitLab"));
    let messages = check["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["role"], "assistant");
    assert!(
        messages[1]["content"].to_string().contains("<score>"),
        "the answer is prefilled: {check}"
    );
    let user = messages[0]["content"].to_string();
    assert_eq!(user.matches("<example>").count(), 2, "{user}");
    assert!(
        user.contains("/v1/proxy/anthropic/v1/messages</user_request_url>"),
        "{user}"
    );
    assert!(user.contains("claude-3-haiku-20240307"), "{user}");
    assert!(
        user.contains("Explaining a security vulnerability"),
        "{user}"
    );
    let log = gw.access_log("/v1/proxy/anthropic/v1/messages");
    assert_eq!(log["abuse_detection_sampled"], true);

    fake.release(1);
    let scored = gw
        .wait_record(|r| r["message"] == "abuse request score")
        .expect("the score is logged");
    assert_eq!(scored["score"], 0.8);
    assert_eq!(scored["unit_primitive"], "explain_vulnerability");
    assert_eq!(scored["instance_id"], "instance-1");
    assert_eq!(scored["global_user_id"], "user-9");
    let metrics = gw.metrics_text().await;
    let labels = [
        "instance_id=\"instance-1\"",
        "unit_primitive=\"explain_vulnerability\"",
    ];
    assert_eq!(
        metric_value(&metrics, "abuse_request_scores_count", &labels),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "abuse_request_scores_sum", &labels),
        Some(0.8)
    );
    assert_eq!(
        metric_value(&metrics, "abuse_request_scores_bucket", &["le=\"0.7\""]),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "abuse_detection_checks_total",
            &["result=\"scored\""]
        ),
        Some(1.0)
    );
}

// The gateway-log waits block their thread: the fake upstream runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_waits_for_the_abuse_checks_in_flight() {
    let fake = FakeUpstream::start().await;
    let answer = anthropic_message("Use a protected branch.", 12, 6);
    fake.push(FakeReply::json(200, &answer));
    fake.push(gated(
        1,
        FakeReply::json(200, &anthropic_message("0.4", 900, 2)),
    ));
    let mut gw = abuse_gateway(&fake, "1.0", &[]);
    let res = proxied(&gw, "explain_vulnerability").await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    assert!(fake.wait_requests(2).await, "the detector was called");

    // SIGTERM with the check held by the detector: the servers drain and stop (the request was
    // answered), and shutdown waits for the check, which only then gets its answer.
    gw.sigterm();
    let waiting = gw
        .wait_record(|r| r["message"] == "shutting down: waiting for abuse checks")
        .expect("shutdown waits for the check");
    assert_eq!(waiting["in_flight"], 1);
    fake.release(1);
    let scored = gw
        .wait_record(|r| r["message"] == "abuse request score")
        .expect("the check finished during shutdown");
    assert_eq!(scored["score"], 0.4);
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        gw.records()
            .last()
            .is_some_and(|r| r["message"] == "stopped"),
        "{:?}",
        gw.lines()
    );
}

// The gateway-log waits block their thread: the fake upstream runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_sampling_rate_never_calls_the_detector() {
    let fake = FakeUpstream::start().await;
    let answer = anthropic_message("ok", 1, 1);
    fake.route("/v1/messages", FakeReply::json(200, &answer));
    let gw = abuse_gateway(&fake, "0", &[]);
    for _ in 0..3 {
        let res = proxied(&gw, "duo_chat").await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.bytes().await.unwrap().as_ref(),
            serde_json::to_vec(&answer).unwrap().as_slice()
        );
    }
    // The draw is made (and logged) before the answer: nothing was sampled, so nothing can come.
    let access = |gw: &Gateway| -> Vec<Value> {
        gw.records()
            .into_iter()
            .filter(|r| r["logger"] == "api.access")
            .map(|r| r["abuse_detection_sampled"].clone())
            .collect()
    };
    // Each access-log line is written as its response completes; wait for the third.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while access(&gw).len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(access(&gw), vec![json!(false); 3]);
    let calls = fake.requests_to("/v1/messages");
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.body == MESSAGES_BODY.as_bytes()));
}

// The gateway-log waits block their thread: the fake upstream runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_detector_leaves_the_proxied_request_alone() {
    let fake = FakeUpstream::start().await;
    let answer = anthropic_message("fine", 1, 1);
    fake.push(FakeReply::json(200, &answer));
    fake.push(FakeReply::json(
        500,
        &anthropic_error_body("api_error", "detector is down"),
    ));
    let gw = abuse_gateway(&fake, "1.0", &[]);
    let res = proxied(&gw, "duo_chat").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        serde_json::to_vec(&answer).unwrap().as_slice()
    );
    let failed = gw
        .wait_record(|r| r["message"] == "abuse detection failed")
        .expect("the failure is logged");
    assert_eq!(failed["unit_primitive"], "duo_chat");
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "abuse_detection_checks_total",
            &["result=\"failed\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "abuse_request_scores_count", &[]),
        None
    );

    // An upstream error status on the proxied call itself is still passed through as is.
    let error = anthropic_error_body("overloaded_error", "busy");
    fake.push(FakeReply::json(529, &error));
    fake.push(FakeReply::json(200, &anthropic_message("0.1", 1, 1)));
    let res = proxied(&gw, "duo_chat").await;
    assert_eq!(res.status(), 529);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        serde_json::to_vec(&error).unwrap().as_slice()
    );
}

// The gateway-log waits block their thread: the fake upstream runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_beyond_the_concurrency_bound_are_dropped_and_counted() {
    let fake = FakeUpstream::start().await;
    let answer = anthropic_message("ok", 1, 1);
    fake.push(FakeReply::json(200, &answer));
    fake.push(gated(
        1,
        FakeReply::json(200, &anthropic_message("0.2", 1, 1)),
    ));
    fake.push(FakeReply::json(200, &answer));
    let gw = abuse_gateway(
        &fake,
        "1.0",
        &[("AIGW_ABUSE_DETECTION__MAX_CONCURRENT", "1")],
    );
    let res = proxied(&gw, "duo_chat").await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    // The first check holds the only slot until gate 1 opens.
    assert!(fake.wait_requests(2).await);
    let res = proxied(&gw, "duo_chat").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        serde_json::to_vec(&answer).unwrap().as_slice()
    );
    gw.wait_record(|r| r["message"] == "abuse detection saturated: sample dropped")
        .expect("the dropped sample is logged");
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "abuse_detection_checks_total",
            &["result=\"dropped\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    fake.release(1);
    gw.wait_record(|r| r["message"] == "abuse request score")
        .expect("the held check completes");
    assert_eq!(fake.requests_to("/v1/messages").len(), 3);
}
