//! One HTTP client per upstream, and the one place where upstream calls are retried.
//!
//! Every provider holds an [`Upstream`]: a `reqwest` client with its own keep-alive pool,
//! TCP_NODELAY (a streamed frame must not wait for Nagle), a connect timeout, and the retry
//! policy.
//!
//! The client is built once **per thread**. Each HTTP worker runs its own single-threaded
//! runtime, and hyper drives a pooled connection from a task on the runtime that opened it; with
//! one pool shared by all workers, a worker that checks out a connection opened by another
//! worker sends the request to, and gets the answer back from, the other thread: two cross-thread
//! wake-ups per call. With a pool per thread, a call's connection is always served on the
//! thread that made the call. Deadlines on the answer (idle between chunks, total) are not set here: the request
//! actor that polls the provider's stream enforces them, for every provider alike.
//!
//! Retries happen only **before the first byte** of an answer reaches the gateway, and only for
//! failures that cannot have produced output: connection failures, and the statuses the official
//! SDKs retry (408, 409, 429, 5xx). Once a 2xx response has started, nothing is retried, since a
//! retry could duplicate text the client already has. Backoff doubles per attempt with full
//! jitter; a 429's `Retry-After` (or `retry-after-ms`) replaces the backoff when it is short
//! enough, and is otherwise handed back in the [`ModelError`] so the client learns it.
//!
//! Error messages carry the upstream's status and the start of its body, with every credential
//! this upstream knows replaced, so an upstream that echoes the request never leaks a key to logs.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use thread_local::ThreadLocal;

use super::{ModelError, ModelErrorKind};
use crate::config::Models;

/// Bytes of an upstream error body kept in the error message.
const ERROR_BODY_LIMIT: usize = 2048;

/// The base URL of an upstream endpoint setting: a bare host means `https://`, a URL keeps its
/// scheme (private endpoints, fakes in tests); a trailing `/` is dropped.
pub fn base_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("https://{endpoint}")
    }
}

/// The retry policy of an upstream.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
    /// Longest `Retry-After` that is waited out rather than handed back.
    pub retry_after_max: Duration,
}

impl RetryPolicy {
    /// The policy of the `AIGW_MODELS__*` settings.
    pub fn from_settings(models: &Models) -> Self {
        Self {
            max_retries: models.max_retries,
            backoff: Duration::from_millis(models.retry_backoff_ms),
            retry_after_max: Duration::from_millis(models.retry_after_max_ms),
        }
    }

    /// Full-jitter exponential backoff before retry number `retry` (0-based).
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff.saturating_mul(1u32 << retry.min(10));
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(nanos / 2..=nanos.max(1)))
    }
}

/// An upstream: its pooled client, retry policy and the secrets to keep out of messages.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name for logs and errors (`anthropic`, `vertex-ai`, ...).
    pub name: &'static str,
    /// The client of the thread that built the upstream, and the settings for the others.
    client: reqwest::Client,
    settings: ClientSettings,
    per_thread: Arc<ThreadLocal<reqwest::Client>>,
    retry: RetryPolicy,
    secrets: Vec<String>,
}

impl Upstream {
    /// A client for `name` with the `AIGW_MODELS__*` connection settings.
    pub fn new(name: &'static str, models: &Models) -> Result<Self, String> {
        let settings = ClientSettings {
            connect_timeout: Duration::from_secs_f64(models.connect_timeout_s),
            pool_max_idle_per_host: models.pool_max_idle_per_host,
        };
        // Built here so that a client that cannot be built fails startup, not a request.
        let client = settings
            .build()
            .map_err(|e| format!("{name} HTTP client: {e}"))?;
        Ok(Self {
            name,
            client,
            settings,
            per_thread: Arc::new(ThreadLocal::new()),
            retry: RetryPolicy::from_settings(models),
            secrets: Vec::new(),
        })
    }

    /// Also redact `secret` from error messages.
    pub fn with_secret(mut self, secret: Option<&str>) -> Self {
        if let Some(s) = secret.filter(|s| s.len() >= 4) {
            self.secrets.push(s.to_string());
        }
        self
    }

    /// This thread's pooled client.
    pub fn client(&self) -> &reqwest::Client {
        self.per_thread
            .get_or_try(|| self.settings.build())
            // The same settings built a client at startup; should another build fail, the
            // startup client still works (its pool is shared across threads).
            .unwrap_or(&self.client)
    }

    /// Send the request `build` makes, retrying retryable failures before the first byte.
    /// Returns the first 2xx response, headers read and body not yet read.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, ModelError> {
        self.send_redacting(build, &[]).await
    }

    /// [`Upstream::send`], also redacting `extra_secrets` (per-request keys) from errors.
    pub async fn send_redacting(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        extra_secrets: &[&str],
    ) -> Result<Response, ModelError> {
        let mut retry = 0u32;
        loop {
            let outcome = build(self.client()).send().await;
            let (error, wait) = match outcome {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let body = read_error_body(response).await;
                    let mut error = status_error(self.name, status, &body);
                    error.retry_after = retry_after;
                    error.message = self.redact(&error.message, extra_secrets);
                    let wait = if retryable_status(status) {
                        match retry_after {
                            Some(after) if after <= self.retry.retry_after_max => Some(after),
                            Some(_) => None,
                            None => Some(self.retry.backoff(retry)),
                        }
                    } else {
                        None
                    };
                    (error, wait)
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        ModelErrorKind::Timeout
                    } else {
                        ModelErrorKind::Connection
                    };
                    let message = self.redact(
                        &format!("{} request failed: {}", self.name, error_chain(&e)),
                        extra_secrets,
                    );
                    (
                        ModelError::new(kind, message),
                        Some(self.retry.backoff(retry)),
                    )
                }
            };
            match wait {
                Some(wait) if retry < self.retry.max_retries => {
                    tracing::info!(
                        target: "models.http",
                        upstream = self.name,
                        retry = retry + 1,
                        wait_ms = wait.as_millis() as u64,
                        "retrying upstream call: {error}"
                    );
                    metrics::counter!("model_upstream_retries_total", "upstream" => self.name)
                        .increment(1);
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                _ => return Err(error),
            }
        }
    }

    /// `text` with every known secret replaced.
    pub fn redact(&self, text: &str, extra: &[&str]) -> String {
        let mut out = text.to_string();
        for secret in self
            .secrets
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
        {
            if secret.len() >= 4 && out.contains(secret) {
                out = out.replace(secret, "[REDACTED]");
            }
        }
        out
    }
}

/// How every thread's client of an upstream is built.
#[derive(Debug, Clone)]
struct ClientSettings {
    connect_timeout: Duration,
    pool_max_idle_per_host: usize,
}

impl ClientSettings {
    fn build(&self) -> reqwest::Result<reqwest::Client> {
        crate::tls::client_builder()
            .tcp_nodelay(true)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .user_agent(concat!("ai-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// The statuses the official SDKs retry.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// `retry-after-ms` or `Retry-After` (seconds) of a response.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            // Clamped: a huge value would overflow `Duration` (a panic) or `Instant` (parking).
            return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
        }
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

async fn read_error_body(response: Response) -> String {
    let mut response = response;
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_LIMIT);
    String::from_utf8_lossy(&body).into_owned()
}

/// The error for an upstream answering `status` with `body`.
pub fn status_error(upstream: &str, status: StatusCode, body: &str) -> ModelError {
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        ModelErrorKind::RateLimited
    } else {
        ModelErrorKind::Status(status.as_u16())
    };
    ModelError::new(
        kind,
        format!("{upstream} answered {status}: {}", body.trim()),
    )
}

/// An error and its sources, one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The error for a body that broke off or failed to read.
pub fn body_error(upstream: &str, e: &reqwest::Error) -> ModelError {
    let kind = if e.is_timeout() {
        ModelErrorKind::Timeout
    } else {
        ModelErrorKind::Connection
    };
    ModelError::new(
        kind,
        format!("{upstream} response body failed: {}", error_chain(e)),
    )
}

/// Join a base URL and a path with exactly one `/` between them.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn endpoints_get_https_unless_they_carry_a_scheme() {
        assert_eq!(
            base_url("us-central1-aiplatform.googleapis.com"),
            "https://us-central1-aiplatform.googleapis.com"
        );
        assert_eq!(base_url("http://127.0.0.1:9/"), "http://127.0.0.1:9");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut d = HeaderMap::new();
        d.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&d), None);
    }

    #[test]
    fn backoff_is_jittered_and_grows() {
        let p = RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_millis(100),
            retry_after_max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let b0 = p.backoff(0);
            assert!(b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100));
            let b2 = p.backoff(2);
            assert!(b2 >= Duration::from_millis(200) && b2 <= Duration::from_millis(400));
        }
    }

    #[test]
    fn statuses_and_redaction() {
        assert!(retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::BAD_REQUEST));
        assert_eq!(
            status_error("x", StatusCode::TOO_MANY_REQUESTS, "").kind,
            ModelErrorKind::RateLimited
        );
        let models = Models::default();
        let up = Upstream::new("t", &models)
            .unwrap()
            .with_secret(Some("sk-secret-key"));
        assert_eq!(
            up.redact("bad key sk-secret-key and tok-123", &["tok-123"]),
            "bad key [REDACTED] and [REDACTED]"
        );
        assert_eq!(join_url("http://a/v1/", "/chat"), "http://a/v1/chat");
    }
}
