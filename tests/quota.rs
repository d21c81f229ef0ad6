//! Per-model quotas (issue 6) over real sockets against the real binary: the mock models with
//! chaos faults stand in for a slow, rate-limiting or usage-reporting provider, and a real
//! `redis-server`, started here on a free port, is the fleet's shared store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{metric_value, Gateway};
use serde_json::{json, Value};

const CHAOS_TOKEN: &str = "test-chaos-token-0123456789";
const CHAT_ENGINE: &str = "chat-model-provider-mocked";
const CHAT_MODEL: &str = "chat-model-mocked";
const TEXT_ENGINE: &str = "llm-provider-mocked";
const TEXT_MODEL: &str = "llm-mocked";

fn quotas(engine: &str, model: &str, limits: Value) -> String {
    json!({ engine: { model: limits } }).to_string()
}

fn gateway(extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![
        ("AIGW_CHAOS__ENABLED", "true"),
        ("AIGW_CHAOS__TOKEN", CHAOS_TOKEN),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env, &["--dev"])
}

async fn chaos(gw: &Gateway, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", gw.metrics))
        .bearer_auth(CHAOS_TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn add_fault(gw: &Gateway, fault: Value) {
    chaos(gw, reqwest::Method::POST, "/chaos/faults", Some(fault)).await;
}

fn v4_stream() -> Value {
    json!({"prompt_components": [{"type": "code_editor_completion", "payload": {
        "file_name": "main.py", "content_above_cursor": "def f():", "content_below_cursor": "",
        "model_provider": "anthropic", "model_name": "claude-3-5-sonnet-20240620", "stream": true}}]})
}

fn v2_completion() -> Value {
    json!({
        "prompt_version": 1,
        "current_file": {"file_name": "main.py", "content_above_cursor": "def is_even(n: int) ->", "content_below_cursor": "\n"},
    })
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_u64(res: &reqwest::Response, name: &str) -> u64 {
    header(res, name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", res.headers()))
        .parse()
        .unwrap()
}

/// A 429 in the original's error shape, with an integer `Retry-After` of at least one second.
async fn assert_refused(res: reqwest::Response) -> (u64, reqwest::header::HeaderMap) {
    assert_eq!(res.status(), 429);
    let retry = header_u64(&res, "retry-after");
    assert!(retry >= 1, "Retry-After {retry}");
    let headers = res.headers().clone();
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Model capacity exceeded"),
        "{body}"
    );
    (retry, headers)
}

async fn metric(gw: &Gateway, name: &str, parts: &[&str]) -> Option<f64> {
    metric_value(&gw.metrics_text().await, name, parts)
}

/// Poll `check` until it holds, up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn max_concurrent_admits_n_and_answers_the_next_with_429() {
    let limits = quotas(CHAT_ENGINE, CHAT_MODEL, json!({"max_concurrent": 2}));
    // Pings make the server notice a client that went away while the model is silent.
    let gw = gateway(&[
        ("AIGW_MODEL_QUOTAS", &limits),
        ("AIGW_QUOTA__MAX_WAIT_MS", "50"),
        ("AIGW_MODELS__SSE_PING_INTERVAL_S", "0.05"),
    ]);
    // Every stream sends one chunk, then hangs: the slow upstream.
    add_fault(
        &gw,
        json!({"kind": "stall", "engine": CHAT_ENGINE, "after_chunks": 1}),
    )
    .await;
    let first = post(&gw, "/v4/code/suggestions", &v4_stream()).await;
    let second = post(&gw, "/v4/code/suggestions", &v4_stream()).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );

    let third = post(&gw, "/v4/code/suggestions", &v4_stream()).await;
    let (_, headers) = assert_refused(third).await;
    assert_eq!(headers["x-ratelimit-limit-concurrency"], "2");
    assert_eq!(headers["x-ratelimit-remaining-concurrency"], "0");
    assert_eq!(headers["x-ratelimit-reset-concurrency"], "1s");
    let labels = [
        "engine=\"chat-model-provider-mocked\"",
        "dimension=\"concurrency\"",
    ];
    assert_eq!(
        metric(&gw, "quota_rejections_total", &labels).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&gw, "quota_saturation_ratio", &labels).await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &gw,
            "model_inferences_max_concurrent",
            &["model_engine=\"chat-model-provider-mocked\""]
        )
        .await,
        Some(2.0)
    );

    // A client that goes away frees its slot: the cancelled stream releases its lease.
    drop(first);
    eventually("a freed slot", || async {
        metric(&gw, "quota_saturation_ratio", &labels).await == Some(0.5)
    })
    .await;
    let fourth = post(&gw, "/v4/code/suggestions", &v4_stream()).await;
    assert_eq!(fourth.status(), 200);
    let fifth = post(&gw, "/v4/code/suggestions", &v4_stream()).await;
    assert_eq!(fifth.status(), 429);
    // Another model is not affected.
    let other = post(&gw, "/v2/code/completions", &v2_completion()).await;
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn a_queued_call_gets_the_slot_a_finished_call_frees() {
    let limits = quotas(CHAT_ENGINE, CHAT_MODEL, json!({"max_concurrent": 1}));
    let gw = gateway(&[
        ("AIGW_MODEL_QUOTAS", &limits),
        ("AIGW_QUOTA__MAX_WAIT_MS", "30000"),
        ("AIGW_MODELS__SSE_PING_INTERVAL_S", "0.05"),
    ]);
    add_fault(
        &gw,
        json!({"kind": "stall", "engine": CHAT_ENGINE, "after_chunks": 1}),
    )
    .await;
    let holder = post(&gw, "/v4/code/suggestions", &v4_stream()).await;
    assert_eq!(holder.status(), 200);
    let waiting = {
        let api = gw.api.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{api}/v4/code/suggestions"))
                .json(&v4_stream())
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    eventually("a queued call", || async {
        metric(
            &gw,
            "quota_wait_queue_length",
            &["engine=\"chat-model-provider-mocked\""],
        )
        .await
            == Some(1.0)
    })
    .await;
    drop(holder);
    assert_eq!(waiting.await.unwrap(), 200);
}

#[tokio::test]
async fn tokens_are_reconciled_from_streamed_usage() {
    const LIMIT: u64 = 12_000;
    const USED: u64 = 1_500;
    let limits = quotas(CHAT_ENGINE, CHAT_MODEL, json!({"tokens_per_minute": LIMIT}));
    let gw = gateway(&[
        ("AIGW_MODEL_QUOTAS", &limits),
        ("AIGW_QUOTA__MAX_WAIT_MS", "0"),
    ]);
    // The provider reports 1000 + 500 tokens per call; each call reserves its prompt plus
    // max_tokens (4096) first.
    add_fault(
        &gw,
        json!({"kind": "usage", "engine": CHAT_ENGINE, "input_tokens": 1000, "output_tokens": 500}),
    )
    .await;
    let mut admitted = 0u64;
    let refused = loop {
        let res = post(&gw, "/v4/code/suggestions", &v4_stream()).await;
        if res.status() != 200 {
            break res;
        }
        let body = res.text().await.unwrap();
        assert!(
            body.ends_with("event: stream_end\r\ndata: null\r\n\r\n"),
            "{body}"
        );
        admitted += 1;
        assert!(admitted < 20, "never refused");
    };
    // Keeping the 4096-token estimates would have admitted at most 2 calls.
    assert!(admitted >= 3, "admitted {admitted}");
    let (retry, headers) = assert_refused(refused).await;
    assert!(retry <= 60);
    assert_eq!(
        headers["x-ratelimit-limit-tokens"],
        LIMIT.to_string().as_str()
    );
    assert_eq!(
        headers["x-ratelimit-remaining-tokens"],
        (LIMIT - admitted * USED).to_string().as_str(),
        "the window holds exactly the reported usage"
    );
    let ratio = metric(&gw, "quota_saturation_ratio", &["dimension=\"tokens\""])
        .await
        .unwrap();
    assert!(
        (ratio - (admitted * USED) as f64 / LIMIT as f64).abs() < 1e-9,
        "{ratio}"
    );
}

#[tokio::test]
async fn an_upstream_429_parks_the_model() {
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"max_concurrent": 10}));
    let gw = gateway(&[("AIGW_MODEL_QUOTAS", &limits)]);
    add_fault(
        &gw,
        json!({"kind": "rate_limit", "engine": TEXT_ENGINE, "retry_after_s": 30}),
    )
    .await;
    let started = Instant::now();
    // The provider's 429 itself is answered as the original does.
    let res = post(&gw, "/v2/code/completions", &v2_completion()).await;
    assert_eq!(res.status(), 503);
    chaos(&gw, reqwest::Method::DELETE, "/chaos/faults", None).await;
    // The provider would answer now, but the model is parked: refused at once, not sent.
    let res = post(&gw, "/v2/code/completions", &v2_completion()).await;
    let (retry, _) = assert_refused(res).await;
    let elapsed = started.elapsed().as_secs();
    assert!(
        retry <= 30 && retry + elapsed + 1 >= 30,
        "Retry-After {retry}"
    );
    let labels = ["engine=\"llm-provider-mocked\""];
    assert_eq!(
        metric(&gw, "quota_upstream_throttled_total", &labels).await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &gw,
            "quota_rejections_total",
            &["engine=\"llm-provider-mocked\"", "dimension=\"upstream\""]
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &gw,
            "model_inferences_total",
            &["model_engine=\"llm-provider-mocked\""]
        )
        .await,
        Some(1.0),
        "the parked call never reached the provider"
    );
}

#[tokio::test]
async fn shadow_mode_measures_but_never_refuses() {
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"requests_per_minute": 1}));
    let gw = gateway(&[
        ("AIGW_MODEL_QUOTAS", &limits),
        ("AIGW_QUOTA__SHADOW", "true"),
    ]);
    for _ in 0..3 {
        let res = post(&gw, "/v2/code/completions", &v2_completion()).await;
        assert_eq!(res.status(), 200);
    }
    let labels = ["engine=\"llm-provider-mocked\"", "dimension=\"requests\""];
    assert_eq!(
        metric(&gw, "quota_shadow_rejections_total", &labels).await,
        Some(2.0)
    );
    assert_eq!(
        metric(&gw, "quota_rejections_total", &labels).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&gw, "quota_saturation_ratio", &labels).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn requests_per_minute_refusal_says_when_the_window_frees() {
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"requests_per_minute": 2}));
    let gw = gateway(&[("AIGW_MODEL_QUOTAS", &limits)]);
    let started = Instant::now();
    for _ in 0..2 {
        assert_eq!(
            post(&gw, "/v2/code/completions", &v2_completion())
                .await
                .status(),
            200
        );
    }
    let res = post(&gw, "/v2/code/completions", &v2_completion()).await;
    let (retry, headers) = assert_refused(res).await;
    // The first call leaves the 60 s window 60 s after it started (whole seconds, rounded up).
    let elapsed = started.elapsed().as_secs();
    assert!(
        retry <= 60 && retry + elapsed + 1 >= 60,
        "Retry-After {retry}"
    );
    assert_eq!(headers["x-ratelimit-limit-requests"], "2");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
}

// ---- Fleet mode: a real redis-server ----

struct Redis {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fleet_env<'a>(redis_url: &'a str, limits: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AIGW_MODEL_QUOTAS", limits),
        ("AIGW_QUOTA__BACKEND", "redis"),
        ("AIGW_QUOTA__REDIS_URL", redis_url),
    ]
}

#[tokio::test]
async fn two_gateways_sharing_redis_admit_exactly_the_limit_between_them() {
    let redis = Redis::start();
    let url = redis.url();
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"requests_per_minute": 5}));
    let a = gateway(&fleet_env(&url, &limits));
    let b = gateway(&fleet_env(&url, &limits));
    let body = v2_completion();
    let calls = (0..16).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        post(gw, "/v2/code/completions", &body)
    });
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        11,
        "{statuses:?}"
    );

    // The keys expire on their own.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("aigw:quota:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The set of leases is gone with the last release; the window of counts stays, expiring.
    assert!(keys.iter().any(|k| k.ends_with(":window")), "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        // -2: the key went between KEYS and PTTL (the last lease is released after its
        // response is sent, so the set of leases can still be there when KEYS runs). Only -1,
        // a key without an expiry, is a leak.
        assert!(ttl > 0 || ttl == -2, "{key} has no expiry ({ttl})");
    }
}

#[tokio::test]
async fn a_killed_quota_actor_comes_back_without_forgetting_redis_counts() {
    let redis = Redis::start();
    let url = redis.url();
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"requests_per_minute": 3}));
    let gw = gateway(&fleet_env(&url, &limits));
    for _ in 0..2 {
        assert_eq!(
            post(&gw, "/v2/code/completions", &v2_completion())
                .await
                .status(),
            200
        );
    }
    let killed = chaos(&gw, reqwest::Method::POST, "/chaos/kill/quota", None).await;
    assert_eq!(killed["killed"], 1);
    eventually("the quota actor's restart", || async {
        metric(&gw, "actor_restarts_total", &["actor=\"quota\""]).await == Some(1.0)
    })
    .await;
    assert_eq!(
        post(&gw, "/v2/code/completions", &v2_completion())
            .await
            .status(),
        200
    );
    let res = post(&gw, "/v2/code/completions", &v2_completion()).await;
    let (_, headers) = assert_refused(res).await;
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
}

#[tokio::test]
async fn an_upstream_429_seen_by_one_gateway_parks_the_model_for_the_fleet() {
    let redis = Redis::start();
    let url = redis.url();
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"max_concurrent": 10}));
    let a = gateway(&fleet_env(&url, &limits));
    let b = gateway(&fleet_env(&url, &limits));
    add_fault(
        &a,
        json!({"kind": "rate_limit", "engine": TEXT_ENGINE, "retry_after_s": 30}),
    )
    .await;
    assert_eq!(
        post(&a, "/v2/code/completions", &v2_completion())
            .await
            .status(),
        503
    );
    // A records the parking in Redis after answering its client: wait until the shared state
    // holds it (any `:parked` key with a time to live).
    let mut conn = redis.conn().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*:parked")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never parked the model in Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B never saw a 429 itself, and its provider is healthy: it refuses from the shared state.
    let res = post(&b, "/v2/code/completions", &v2_completion()).await;
    let (retry, _) = assert_refused(res).await;
    assert!((25..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        metric(
            &b,
            "model_inferences_total",
            &["model_engine=\"llm-provider-mocked\""]
        )
        .await,
        None,
        "B sent nothing to the provider"
    );
}

#[tokio::test]
async fn with_redis_down_fail_open_admits_and_fail_closed_refuses() {
    // Nothing listens on this port.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"requests_per_minute": 2}));

    let mut env = fleet_env(&url, &limits);
    env.push(("AIGW_QUOTA__FAIL_MODE", "open"));
    let open = gateway(&env);
    // Admitted, against the instance's own view of the limit.
    for _ in 0..2 {
        assert_eq!(
            post(&open, "/v2/code/completions", &v2_completion())
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        post(&open, "/v2/code/completions", &v2_completion())
            .await
            .status(),
        429
    );
    let errors = metric(&open, "quota_backend_errors_total", &["backend=\"redis\""]).await;
    assert!(errors.unwrap_or(0.0) >= 1.0, "{errors:?}");

    let mut env = fleet_env(&url, &limits);
    env.push(("AIGW_QUOTA__FAIL_MODE", "closed"));
    let closed = gateway(&env);
    let res = post(&closed, "/v2/code/completions", &v2_completion()).await;
    assert_eq!(res.status(), 503);
    assert!(header_u64(&res, "retry-after") >= 1);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("quota store is unavailable"),
        "{body}"
    );
}

#[tokio::test]
async fn counts_live_in_redis() {
    let redis = Redis::start();
    let url = redis.url();
    let limits = quotas(TEXT_ENGINE, TEXT_MODEL, json!({"requests_per_minute": 100}));
    let mut env = fleet_env(&url, &limits);
    env.push(("AIGW_QUOTA__FAIL_MODE", "closed"));
    let gw = gateway(&env);
    assert_eq!(
        post(&gw, "/v2/code/completions", &v2_completion())
            .await
            .status(),
        200
    );
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("aigw:quota:*window")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields: Vec<(String, i64)> = redis::cmd("HGETALL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        fields
            .iter()
            .filter(|(f, _)| f.starts_with('r'))
            .map(|(_, v)| v)
            .sum::<i64>(),
        1,
        "one request counted in Redis: {fields:?}"
    );
}

/// A refusal is a 429 with `Retry-After` on the chat invokables and the prompt registry too, and
/// the access log names the refused dimension (they answered 502 "Anthropic API Connection
/// Error." and 503 "Inference failed").
#[tokio::test]
async fn chat_invokables_and_registry_prompts_are_refused_with_a_429() {
    let one_a_minute = json!({"requests_per_minute": 1});
    let limits = json!({
        TEXT_ENGINE: {TEXT_MODEL: one_a_minute},
        CHAT_ENGINE: {CHAT_MODEL: one_a_minute},
    })
    .to_string();
    let gw = gateway(&[("AIGW_MODEL_QUOTAS", &limits)]);
    let calls = [
        (
            "/v1/chat/explain_code",
            json!({"prompt_components": [{"type": "prompt",
                "metadata": {"source": "gitlab-rails-sm", "version": "16.5.0-ee"},
                "payload": {"content": "\n\nHuman: hi\n\nAssistant:", "provider": "anthropic", "model": "claude-2.1"}}]}),
        ),
        (
            "/v1/prompts/generate_commit_message",
            json!({"inputs": {"diff": "diff --git a/x b/x\n+hello"}}),
        ),
    ];
    for (path, body) in &calls {
        assert_eq!(post(&gw, path, body).await.status(), 200, "{path}");
    }
    for (path, body) in &calls {
        assert_refused(post(&gw, path, body).await).await;
        let refused = gw.wait_record(|r| {
            r["logger"] == "api.access" && r["path"] == *path && r["status_code"] == 429
        });
        let refused = refused.unwrap_or_else(|| panic!("no 429 line for {path}"));
        assert_eq!(refused["quota_refused"], "requests", "{refused}");
    }
}
