//! Settings: one typed [`Settings`] struct, filled from defaults < TOML file < `.env` < environment.
//!
//! The environment is read exactly as the original (pydantic-settings) reads it: prefix `AIGW_`,
//! nested fields joined with `__`, booleans as true/false/yes/no/on/off/1/0 (any case), dicts and
//! lists as JSON, unknown variables ignored. A `.env` file in the working directory (or a parent)
//! is loaded first without overriding the real environment. Settings the original never had
//! (HTTP limits, deadlines, supervision, quotas, chaos) live in the same tree, so they can be set
//! from the optional TOML file (`--config PATH`) or with the same `AIGW_*` naming.
//!
//! Every bad value stops startup with one line that names the variable (or the TOML key) and what
//! is wrong with it; `main` turns that into exit code 2.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The embedded development default (`--dev`): loopback, mock models, auth bypass, readable logs.
pub const DEVELOPMENT_TOML: &str = include_str!("../config/development.toml");

/// A configuration error: which setting, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The variable (`AIGW_FASTAPI__API_PORT`) or TOML key (`fastapi.api_port`).
    pub setting: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// Every setting of the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `AIGW_ENVIRONMENT`: `production`, `staging`, `development`, ...
    pub environment: String,
    /// `AIGW_GITLAB_URL`: OIDC issuer "Gitlab".
    pub gitlab_url: String,
    /// `AIGW_GITLAB_API_URL`: unused, kept for compatibility.
    pub gitlab_api_url: String,
    /// `AIGW_CUSTOMER_PORTAL_URL`: OIDC issuer "CustomersDot".
    pub customer_portal_url: String,
    /// `AIGW_GLGO_BASE_URL`.
    pub glgo_base_url: String,
    /// `AIGW_MOCK_MODEL_RESPONSES`: every model call answered by the echo mock.
    pub mock_model_responses: bool,
    /// `AIGW_LOGGING__*`.
    pub logging: Logging,
    /// `AIGW_SELF_SIGNED_JWT__*`.
    pub self_signed_jwt: SelfSignedJwt,
    /// `AIGW_FASTAPI__*`: listeners.
    pub fastapi: FastApi,
    /// `AIGW_AUTH__*`.
    pub auth: Auth,
    /// `AIGW_GOOGLE_CLOUD_PROFILER__*` (accepted, not used).
    pub google_cloud_profiler: GoogleCloudProfiler,
    /// `AIGW_INSTRUMENTATOR__*` (accepted, not used).
    pub instrumentator: Instrumentator,
    /// `AIGW_F__*`: feature settings.
    pub f: FeatureSettings,
    /// `AIGW_SNOWPLOW__*`.
    pub snowplow: Tracking,
    /// `AIGW_INTERNAL_EVENT__*`.
    pub internal_event: Tracking,
    /// `AIGW_GOOGLE_CLOUD_PLATFORM__*`.
    pub google_cloud_platform: GoogleCloudPlatform,
    /// `AIGW_VERTEX_TEXT_MODEL__*`.
    pub vertex_text_model: VertexTextModel,
    /// `AIGW_VERTEX_ANTHROPIC__*` (not in the original): where Claude on Vertex is called.
    pub vertex_anthropic: VertexAnthropic,
    /// `AIGW_VERTEX_SEARCH__*`.
    pub vertex_search: VertexSearch,
    /// `AIGW_AMAZON_Q__*`.
    pub amazon_q: AmazonQ,
    /// `AIGW_CUSTOM_MODELS__*`.
    pub custom_models: CustomModels,
    /// `AIGW_MODEL_KEYS__*`.
    pub model_keys: ModelKeys,
    /// `AIGW_MODEL_ENDPOINTS__*`.
    pub model_endpoints: ModelEndpoints,
    /// `AIGW_MODEL_ENGINE_CONCURRENCY_LIMITS`: `{"anthropic": {"claude-2.1": 15}}`.
    pub model_engine_concurrency_limits: BTreeMap<String, BTreeMap<String, u32>>,
    /// `AIGW_MODEL_QUOTAS` (new): `{"anthropic": {"claude-3-5-sonnet-20240620": {"max_concurrent": 20,
    /// "requests_per_minute": 600, "tokens_per_minute": 400000}}}`, enforced per model.
    pub model_quotas: BTreeMap<String, BTreeMap<String, ModelQuota>>,
    /// `AIGW_DEFAULT_PROMPTS`: `{"chat/react": "vertex"}`.
    pub default_prompts: BTreeMap<String, String>,
    /// `AIGW_ABUSE_DETECTION__*`.
    pub abuse_detection: AbuseDetection,
    /// `AIGW_FEATURE_FLAGS__*`.
    pub feature_flags: FeatureFlags,

    // ---- Settings the original never had ----
    /// `AIGW_HTTP__*`: server limits.
    pub http: Http,
    /// `AIGW_MODELS__*`: deadlines and stream buffering of model calls.
    pub models: Models,
    /// `AIGW_SUPERVISOR__*`: restart budget of the actor tree.
    pub supervisor: Supervision,
    /// `AIGW_CHAOS__*`: fault injection (off by default).
    pub chaos: Chaos,
    /// `AIGW_QUOTA__*`: how per-model quotas are enforced.
    pub quota: QuotaConfig,
    /// `AIGW_PROMPTS__*`: where the prompt definitions are read from.
    pub prompts: Prompts,

    /// Variables outside the `AIGW_` prefix that the original also reads.
    #[serde(skip)]
    pub external: External,
}

/// `AIGW_LOGGING__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`.
    pub level: String,
    /// One JSON object per line (true) or human-readable lines (false).
    pub format_json: bool,
    /// Append logs to this file instead of stdout.
    pub to_file: Option<String>,
    /// Log request and response contents.
    pub enable_request_logging: bool,
}

/// `AIGW_SELF_SIGNED_JWT__*`: RSA private keys (PEM) for the gateway's own user tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SelfSignedJwt {
    /// Signs new tokens; its public half verifies them.
    pub signing_key: String,
    /// The previous signing key during a rotation: its public half still verifies.
    pub validation_key: String,
}

/// `AIGW_FASTAPI__*`: where the API and the metrics listen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FastApi {
    /// API address.
    pub api_host: String,
    /// API port (0 picks a free port; the bound address is logged).
    pub api_port: u16,
    /// Metrics address.
    pub metrics_host: String,
    /// Metrics port.
    pub metrics_port: u16,
    /// Accepted for compatibility; not used.
    pub uvicorn_logger: Value,
    /// Accepted for compatibility; not served.
    pub docs_url: Option<String>,
    /// Accepted for compatibility; not served.
    pub openapi_url: Option<String>,
    /// Accepted for compatibility; not served.
    pub redoc_url: Option<String>,
    /// Accepted for compatibility; not used.
    pub reload: bool,
}

/// `AIGW_AUTH__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// Every request is a debug user (logged loudly).
    pub bypass_external: bool,
    /// A request with `Bypass-Auth: true` is a debug user.
    pub bypass_external_with_header: bool,
    /// Decode tokens without checking their signature.
    pub bypass_jwt_signature: bool,
    /// New: refuse tokens without `exp`.
    pub require_exp: bool,
    /// New: refuse tokens without `aud`.
    pub require_aud: bool,
    /// New: when non-empty, `iss` must be one of these.
    pub allowed_issuers: Vec<String>,
    /// New: verified tokens remembered (by hash, never past `exp`).
    pub token_cache_size: u64,
    /// New: key-set refresh period, seconds (original: 24 h).
    pub jwks_refresh_interval_s: u64,
    /// New: at most one refresh per issuer per this many seconds on unknown `kid`s.
    pub jwks_refresh_cooldown_s: u64,
    /// New: timeout of discovery and key-set fetches, seconds.
    pub jwks_fetch_timeout_s: u64,
}

/// `AIGW_GOOGLE_CLOUD_PROFILER__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GoogleCloudProfiler {
    /// Accepted; the Rust gateway has no Cloud Profiler agent.
    pub enabled: bool,
    /// Accepted.
    pub verbose: i64,
    /// Accepted.
    pub period_ms: i64,
}

/// `AIGW_INSTRUMENTATOR__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Instrumentator {
    /// Accepted.
    pub thread_monitoring_enabled: bool,
    /// Accepted.
    pub thread_monitoring_interval: i64,
}

/// `AIGW_F__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureSettings {
    /// `AIGW_F__CODE_SUGGESTIONS__*`.
    pub code_suggestions: CodeSuggestionsFeature,
}

/// `AIGW_F__CODE_SUGGESTIONS__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CodeSuggestionsFeature {
    /// Post-processor names to skip.
    pub excl_post_proc: Vec<String>,
}

/// `AIGW_SNOWPLOW__*` and `AIGW_INTERNAL_EVENT__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tracking {
    /// Accepted; events are not sent by this gateway.
    pub enabled: bool,
    /// Collector URL.
    pub endpoint: Option<String>,
    /// Batch size.
    pub batch_size: i64,
    /// Sender threads.
    pub thread_count: i64,
    /// App id.
    pub app_id: String,
    /// Namespace.
    pub namespace: String,
}

/// `AIGW_GOOGLE_CLOUD_PLATFORM__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GoogleCloudPlatform {
    /// GCP project, inherited by Vertex settings left empty.
    pub project: String,
    /// Service-account key JSON (CI only in the original).
    pub service_account_json_key: String,
    /// Region; default `$RUNWAY_REGION` or `us-central1`. Also picks the Fireworks region.
    pub location: String,
}

/// `AIGW_VERTEX_TEXT_MODEL__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VertexTextModel {
    /// Default: the GCP project.
    pub project: String,
    /// Default: `$RUNWAY_REGION` or `us-central1`.
    pub location: String,
    /// Default: `<location>-aiplatform.googleapis.com`. May carry a scheme (`http://...`).
    pub endpoint: String,
}

/// `AIGW_VERTEX_ANTHROPIC__*`: Claude on Vertex (registry prompts with
/// `custom_llm_provider: vertex_ai`). The original leaves the host to LiteLLM, which always
/// calls `<location>-aiplatform.googleapis.com` for the prompt's `vertex_location`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VertexAnthropic {
    /// Empty (default): `https://<location>-aiplatform.googleapis.com`. Otherwise a host, or a
    /// URL with a scheme (a private endpoint, or `http://127.0.0.1:PORT` in tests), used for
    /// every location.
    pub endpoint: String,
}

/// `AIGW_VERTEX_SEARCH__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VertexSearch {
    /// Default: the GCP project.
    pub project: String,
    /// Data store version used when the requested one does not exist.
    pub fallback_datastore_version: String,
    /// Discovery Engine host or URL. Empty (default): `discoveryengine.googleapis.com`.
    pub endpoint: String,
}

/// `AIGW_AMAZON_Q__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmazonQ {
    /// AWS region.
    pub region: String,
    /// Q endpoint.
    pub endpoint_url: String,
}

/// `AIGW_CUSTOM_MODELS__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CustomModels {
    /// Allow request-supplied model endpoints and keys (self-hosted models).
    pub enabled: bool,
    /// Call custom models without streaming.
    pub disable_streaming: bool,
}

/// `AIGW_MODEL_KEYS__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelKeys {
    /// Mistral (Codestral) API key.
    pub mistral_api_key: Option<String>,
    /// Fireworks API key.
    pub fireworks_api_key: Option<String>,
}

/// `AIGW_MODEL_ENDPOINTS__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelEndpoints {
    /// `{"us": {"endpoint": ..., "identifier": ...}, "europe": ..., "asia": ...}`.
    pub fireworks_regional_endpoints: BTreeMap<String, FireworksEndpoint>,
    /// Accepted, unused (as the original).
    pub fireworks_completion_endpoint: Option<String>,
    /// Accepted, unused (as the original).
    pub fireworks_completion_identifier: Option<String>,
}

/// One Fireworks region.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FireworksEndpoint {
    /// Base URL.
    pub endpoint: String,
    /// Model identifier.
    pub identifier: String,
}

/// `AIGW_ABUSE_DETECTION__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AbuseDetection {
    /// Sample proxy requests for the abuse detector (spec 9.2).
    pub enabled: bool,
    /// Fraction of proxy requests sampled, 0..=1.
    pub sampling_rate: f64,
    /// Detector calls in flight at most; a sample beyond it is dropped and counted (ours).
    pub max_concurrent: usize,
    /// The request body is cut to this many characters before it is sent to the detector (ours).
    pub max_body_chars: usize,
}

/// `AIGW_FEATURE_FLAGS__*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureFlags {
    /// Flags ignored per realm: `{"self-managed": ["expanded_ai_logging"]}`.
    pub disallowed_flags: BTreeMap<String, Vec<String>>,
}

/// `AIGW_HTTP__*` (new).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Largest request body accepted; larger ones get 413.
    pub max_request_body_bytes: usize,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub shutdown_timeout_s: u64,
    /// HTTP worker threads; 0 = one per CPU.
    pub workers: usize,
    /// Keep-alive of idle client connections, seconds.
    pub keep_alive_s: u64,
    /// Largest number of concurrent client connections per worker.
    pub max_connections_per_worker: usize,
}

/// `AIGW_MODELS__*` (new).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Models {
    /// Longest wait for the next chunk of a model response (the first one included), seconds.
    pub idle_timeout_s: f64,
    /// Longest time for a whole model call, seconds.
    pub total_timeout_s: f64,
    /// Chunks buffered between a request actor and the client; a slow client slows the model.
    pub stream_buffer_chunks: usize,
    /// Keep-alive comment interval of SSE streams, seconds (the original: 15).
    pub sse_ping_interval_s: f64,
    /// Retries of an upstream call that failed before its first byte with a retryable error
    /// (connection refused, 408, 409, 429, 5xx); the original's SDK clients retry once.
    pub max_retries: u32,
    /// First retry delay, milliseconds; doubles per retry, with full jitter.
    pub retry_backoff_ms: u64,
    /// An upstream 429 is retried only when its `Retry-After` is at most this long, milliseconds;
    /// a longer one is handed back to the client (503 with `Retry-After`).
    pub retry_after_max_ms: u64,
    /// TCP connect timeout of upstream connections, seconds (the original: 5).
    pub connect_timeout_s: f64,
    /// Idle keep-alive connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

/// `AIGW_SUPERVISOR__*` (new): the restart budget of the actor tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Supervision {
    /// Restarts allowed within the window; one more exits the process non-zero.
    pub max_restarts: u32,
    /// The window, seconds.
    pub window_s: u64,
    /// First restart delay, milliseconds (doubles per restart of the same actor in the window).
    pub backoff_min_ms: u64,
    /// Largest restart delay, milliseconds.
    pub backoff_max_ms: u64,
}

/// `AIGW_CHAOS__*` (new): the fault-injection admin API on the metrics listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Chaos {
    /// Serve the chaos API and wrap providers with fault injection.
    pub enabled: bool,
    /// Bearer token the chaos API requires.
    pub token: String,
    /// Allow chaos when `AIGW_ENVIRONMENT=production`.
    pub allow_in_production: bool,
}

/// The limits of one model (`AIGW_MODEL_QUOTAS`); an absent limit is no limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelQuota {
    /// Calls in flight at once (overrides `AIGW_MODEL_ENGINE_CONCURRENCY_LIMITS`).
    pub max_concurrent: Option<u64>,
    /// Calls started per minute (sliding window).
    pub requests_per_minute: Option<u64>,
    /// Input + output tokens per minute (sliding window; reserved before, reconciled after).
    pub tokens_per_minute: Option<u64>,
}

/// `AIGW_QUOTA__*` (new): how quotas are enforced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// `local` (counts in this process) or `redis` (shared by a fleet).
    pub backend: String,
    /// `redis://host:port/db` when the backend is `redis`.
    pub redis_url: String,
    /// Longest wait for one Redis script, milliseconds.
    pub redis_timeout_ms: u64,
    /// Prefix of the Redis keys.
    pub key_prefix: String,
    /// When Redis is unreachable: `open` (admit, limits held per instance, loudly counted) or
    /// `closed` (refuse with 503).
    pub fail_mode: String,
    /// Measure and report, never refuse.
    pub shadow: bool,
    /// Longest wait for capacity before a 429, milliseconds (0: refuse at once).
    pub max_wait_ms: u64,
    /// Largest number of calls waiting per model.
    pub max_queue: usize,
    /// Largest number of reservations on their way to one model's actor.
    pub max_mailbox: usize,
    /// How long a provider 429 without `Retry-After` parks the model, seconds.
    pub park_default_s: f64,
    /// Output tokens reserved for a call that does not set `max_tokens`.
    pub default_output_tokens: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            redis_url: String::new(),
            redis_timeout_ms: 250,
            key_prefix: "aigw:quota".into(),
            fail_mode: "open".into(),
            shadow: false,
            max_wait_ms: 100,
            max_queue: 64,
            max_mailbox: 1024,
            park_default_s: 5.0,
            default_output_tokens: 1024,
        }
    }
}

/// `AIGW_PROMPTS__*` (new).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Prompts {
    /// The definitions directory; empty: `config/prompts` in the working directory, then
    /// `/etc/ai-gateway/prompts`, then the source tree's copy.
    pub dir: String,
}

/// Variables without the `AIGW_` prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct External {
    /// `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<String>,
    /// `ANTHROPIC_BASE_URL` (as the official SDKs), default `https://api.anthropic.com`.
    pub anthropic_base_url: String,
    /// `CLOUD_CONNECTOR_SERVICE_NAME`, default `gitlab-ai-gateway`: the JWT audience and the
    /// issuer of self-signed tokens.
    pub service_name: String,
    /// `RUNWAY_REGION`.
    pub runway_region: Option<String>,
    /// `GOOGLE_APPLICATION_CREDENTIALS`: service-account key file.
    pub google_application_credentials: Option<String>,
    /// `GCE_METADATA_HOST`: the metadata server (default `metadata.google.internal`), as the
    /// Google client libraries read it.
    pub gce_metadata_host: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: "production".into(),
            gitlab_url: "https://gitlab.com".into(),
            gitlab_api_url: "https://gitlab.com/api/v4/".into(),
            customer_portal_url: "https://customers.gitlab.com".into(),
            glgo_base_url: "http://auth.token.gitlab.com".into(),
            mock_model_responses: false,
            logging: Logging::default(),
            self_signed_jwt: SelfSignedJwt::default(),
            fastapi: FastApi::default(),
            auth: Auth::default(),
            google_cloud_profiler: GoogleCloudProfiler::default(),
            instrumentator: Instrumentator::default(),
            f: FeatureSettings::default(),
            snowplow: Tracking::default(),
            internal_event: Tracking::default(),
            google_cloud_platform: GoogleCloudPlatform::default(),
            vertex_text_model: VertexTextModel::default(),
            vertex_anthropic: VertexAnthropic::default(),
            vertex_search: VertexSearch::default(),
            amazon_q: AmazonQ::default(),
            custom_models: CustomModels::default(),
            model_keys: ModelKeys::default(),
            model_endpoints: ModelEndpoints::default(),
            model_engine_concurrency_limits: BTreeMap::new(),
            model_quotas: BTreeMap::new(),
            default_prompts: BTreeMap::new(),
            abuse_detection: AbuseDetection::default(),
            feature_flags: FeatureFlags::default(),
            http: Http::default(),
            models: Models::default(),
            supervisor: Supervision::default(),
            chaos: Chaos::default(),
            quota: QuotaConfig::default(),
            prompts: Prompts::default(),
            external: External::default(),
        }
    }
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            level: "INFO".into(),
            format_json: true,
            to_file: None,
            enable_request_logging: false,
        }
    }
}

impl Default for FastApi {
    fn default() -> Self {
        Self {
            api_host: "0.0.0.0".into(),
            api_port: 5000,
            metrics_host: "0.0.0.0".into(),
            metrics_port: 8082,
            uvicorn_logger: serde_json::json!({"version": 1, "disable_existing_loggers": false}),
            docs_url: None,
            openapi_url: None,
            redoc_url: None,
            reload: false,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            bypass_external: false,
            bypass_external_with_header: false,
            bypass_jwt_signature: false,
            require_exp: false,
            require_aud: false,
            allowed_issuers: Vec::new(),
            token_cache_size: 10_000,
            jwks_refresh_interval_s: 86_400,
            jwks_refresh_cooldown_s: 30,
            jwks_fetch_timeout_s: 10,
        }
    }
}

impl Default for GoogleCloudProfiler {
    fn default() -> Self {
        Self {
            enabled: false,
            verbose: 2,
            period_ms: 10,
        }
    }
}

impl Default for Instrumentator {
    fn default() -> Self {
        Self {
            thread_monitoring_enabled: false,
            thread_monitoring_interval: 60,
        }
    }
}

impl Default for Tracking {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            batch_size: 1,
            thread_count: 1,
            app_id: "gitlab_ai_gateway".into(),
            namespace: "gl".into(),
        }
    }
}

impl Default for AbuseDetection {
    fn default() -> Self {
        Self {
            enabled: false,
            sampling_rate: 0.1,
            max_concurrent: 4,
            max_body_chars: 20_000,
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 32 * 1024 * 1024,
            shutdown_timeout_s: 30,
            workers: 0,
            keep_alive_s: 75,
            max_connections_per_worker: 25_000,
        }
    }
}

impl Default for Models {
    fn default() -> Self {
        Self {
            idle_timeout_s: 30.0,
            total_timeout_s: 600.0,
            stream_buffer_chunks: 16,
            sse_ping_interval_s: 15.0,
            max_retries: 1,
            retry_backoff_ms: 500,
            retry_after_max_ms: 5_000,
            connect_timeout_s: 5.0,
            pool_max_idle_per_host: 100,
        }
    }
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            max_restarts: 100,
            window_s: 60,
            backoff_min_ms: 5,
            backoff_max_ms: 2_000,
        }
    }
}

/// Where the settings come from.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// Start from the embedded development default instead of the production one.
    pub development: bool,
    /// TOML text of the `--config` file, with its path for messages.
    pub toml: Option<(&'a str, &'a str)>,
}

impl Settings {
    /// Load from the process environment (after loading `.env`, if any).
    pub fn load(sources: &Sources<'_>) -> Result<Self, ConfigError> {
        // A missing .env is normal; a broken one is an error that names the file.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::new(".env", e.to_string())),
        }
        Self::from_vars(sources, std::env::vars())
    }

    /// Load from the given variables (the environment, in tests any list).
    pub fn from_vars(
        sources: &Sources<'_>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree = serde_json::to_value(Settings::default())
            .map_err(|e| ConfigError::new("defaults", e.to_string()))?;
        if sources.development {
            overlay_toml(&mut tree, DEVELOPMENT_TOML, "development.toml")?;
        }
        if let Some((path, text)) = sources.toml {
            overlay_toml(&mut tree, text, path)?;
        }
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let defaults = serde_json::to_value(Settings::default())
            .map_err(|e| ConfigError::new("defaults", e.to_string()))?;
        for (name, raw) in &vars {
            let Some(rest) = name.strip_prefix("AIGW_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let Some(expected) = lookup(&defaults, &path) else {
                // Unknown AIGW_ variables are ignored, as the original does.
                continue;
            };
            let value = parse_env_value(raw, expected).map_err(|p| ConfigError::new(name, p))?;
            set(&mut tree, &path, value);
        }
        let mut settings: Settings =
            serde_path_to_error::deserialize(tree).map_err(|e| type_error(&e))?;
        settings.external = External::from_vars(&vars);
        settings.derive_inherited();
        settings.validate()?;
        Ok(settings)
    }

    /// Fill the defaults that depend on other settings, as the original does.
    fn derive_inherited(&mut self) {
        let region = self
            .external
            .runway_region
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-central1".to_string());
        if self.google_cloud_platform.location.is_empty() {
            self.google_cloud_platform.location = region.clone();
        }
        if self.vertex_text_model.location.is_empty() {
            self.vertex_text_model.location = region;
        }
        if self.vertex_text_model.endpoint.is_empty() {
            self.vertex_text_model.endpoint = format!(
                "{}-aiplatform.googleapis.com",
                self.vertex_text_model.location
            );
        }
        if self.vertex_text_model.project.is_empty() {
            self.vertex_text_model.project = self.google_cloud_platform.project.clone();
        }
        if self.vertex_search.project.is_empty() {
            self.vertex_search.project = self.google_cloud_platform.project.clone();
        }
    }

    /// Checks that types alone cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        for (name, host) in [
            ("AIGW_FASTAPI__API_HOST", &self.fastapi.api_host),
            ("AIGW_FASTAPI__METRICS_HOST", &self.fastapi.metrics_host),
        ] {
            if host.parse::<IpAddr>().is_err() && !is_hostname(host) {
                return Err(ConfigError::new(
                    name,
                    format!("invalid value {host:?}: expected an IP address or a host name"),
                ));
            }
        }
        let level = self.logging.level.to_ascii_uppercase();
        if ![
            "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL",
        ]
        .contains(&level.as_str())
        {
            return Err(ConfigError::new(
                "AIGW_LOGGING__LEVEL",
                format!(
                    "invalid value {:?}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL",
                    self.logging.level
                ),
            ));
        }
        for (name, url) in [
            ("AIGW_GITLAB_URL", &self.gitlab_url),
            ("AIGW_CUSTOMER_PORTAL_URL", &self.customer_portal_url),
            ("ANTHROPIC_BASE_URL", &self.external.anthropic_base_url),
        ] {
            if url::Url::parse(url).is_err() {
                return Err(ConfigError::new(
                    name,
                    format!("invalid value {url:?}: expected an absolute URL"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.abuse_detection.sampling_rate) {
            return Err(ConfigError::new(
                "AIGW_ABUSE_DETECTION__SAMPLING_RATE",
                "must be between 0 and 1",
            ));
        }
        if self.http.max_request_body_bytes == 0 {
            return Err(ConfigError::new(
                "AIGW_HTTP__MAX_REQUEST_BODY_BYTES",
                "must be greater than 0",
            ));
        }
        for (name, secs) in [
            ("AIGW_MODELS__IDLE_TIMEOUT_S", self.models.idle_timeout_s),
            ("AIGW_MODELS__TOTAL_TIMEOUT_S", self.models.total_timeout_s),
            (
                "AIGW_MODELS__SSE_PING_INTERVAL_S",
                self.models.sse_ping_interval_s,
            ),
            (
                "AIGW_MODELS__CONNECT_TIMEOUT_S",
                self.models.connect_timeout_s,
            ),
        ] {
            // At least a millisecond: a smaller value is a zero `Duration`, and a zero ping
            // interval panics tokio's interval on every stream.
            if !(secs.is_finite() && (0.001..86_400.0).contains(&secs)) {
                return Err(ConfigError::new(
                    name,
                    "must be a number of seconds of at least 0.001 and less than 86400",
                ));
            }
        }
        if self.chaos.enabled && self.chaos.token.len() < 16 {
            return Err(ConfigError::new(
                "AIGW_CHAOS__TOKEN",
                "must be set to at least 16 characters when AIGW_CHAOS__ENABLED is true",
            ));
        }
        if self.models.stream_buffer_chunks == 0 {
            return Err(ConfigError::new(
                "AIGW_MODELS__STREAM_BUFFER_CHUNKS",
                "must be greater than 0",
            ));
        }
        if self.supervisor.window_s == 0 || self.supervisor.max_restarts == 0 {
            return Err(ConfigError::new(
                "AIGW_SUPERVISOR__MAX_RESTARTS",
                "max_restarts and window_s must be greater than 0",
            ));
        }
        self.validate_quota()?;
        Ok(())
    }

    fn validate_quota(&self) -> Result<(), ConfigError> {
        let q = &self.quota;
        match q.backend.as_str() {
            "local" => {}
            "redis" => {
                if url::Url::parse(&q.redis_url)
                    .map(|u| !matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix"))
                    .unwrap_or(true)
                {
                    return Err(ConfigError::new(
                        "AIGW_QUOTA__REDIS_URL",
                        format!(
                            "invalid value {:?}: expected redis://host:port when AIGW_QUOTA__BACKEND is redis",
                            q.redis_url
                        ),
                    ));
                }
            }
            other => {
                return Err(ConfigError::new(
                    "AIGW_QUOTA__BACKEND",
                    format!("invalid value {other:?}: expected local or redis"),
                ))
            }
        }
        if !matches!(q.fail_mode.as_str(), "open" | "closed") {
            return Err(ConfigError::new(
                "AIGW_QUOTA__FAIL_MODE",
                format!("invalid value {:?}: expected open or closed", q.fail_mode),
            ));
        }
        if !(q.park_default_s.is_finite() && q.park_default_s > 0.0 && q.park_default_s < 86_400.0)
        {
            return Err(ConfigError::new(
                "AIGW_QUOTA__PARK_DEFAULT_S",
                "must be a number of seconds greater than 0 and less than 86400",
            ));
        }
        if q.redis_timeout_ms == 0 {
            return Err(ConfigError::new(
                "AIGW_QUOTA__REDIS_TIMEOUT_MS",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The log level as a `tracing` filter directive.
    pub fn log_filter(&self) -> &'static str {
        match self.logging.level.to_ascii_uppercase().as_str() {
            "DEBUG" => "debug",
            "WARNING" | "WARN" => "warn",
            "ERROR" | "CRITICAL" | "FATAL" => "error",
            _ => "info",
        }
    }
}

impl External {
    fn from_vars(vars: &[(String, String)]) -> Self {
        let get = |name: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Self {
            anthropic_api_key: get("ANTHROPIC_API_KEY").filter(|v| !v.is_empty()),
            anthropic_base_url: get("ANTHROPIC_BASE_URL")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "https://api.anthropic.com".into()),
            service_name: get("CLOUD_CONNECTOR_SERVICE_NAME")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "gitlab-ai-gateway".into()),
            runway_region: get("RUNWAY_REGION"),
            google_application_credentials: get("GOOGLE_APPLICATION_CREDENTIALS")
                .filter(|v| !v.is_empty()),
            gce_metadata_host: get("GCE_METADATA_HOST").filter(|v| !v.is_empty()),
        }
    }
}

fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
}

/// Merge a TOML document into the settings tree; unknown keys are caught by deserialization.
fn overlay_toml(tree: &mut Value, text: &str, origin: &str) -> Result<(), ConfigError> {
    let parsed: toml::Value = toml::from_str(text)
        .map_err(|e| ConfigError::new(origin, format!("invalid TOML: {}", e.message().trim())))?;
    let json = serde_json::to_value(parsed).map_err(|e| ConfigError::new(origin, e.to_string()))?;
    merge(tree, json);
    Ok(())
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    // Maps of user data (limits per model, prompts per id) are replaced whole
                    // only when the default is empty; nested settings structs merge key by key.
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn lookup<'a>(tree: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = tree;
    for key in path {
        node = node.as_object()?.get(key)?;
    }
    Some(node)
}

fn set(tree: &mut Value, path: &[String], value: Value) {
    let mut node = tree;
    for key in &path[..path.len().saturating_sub(1)] {
        let Value::Object(map) = node else { return };
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let (Value::Object(map), Some(last)) = (node, path.last()) {
        map.insert(last.clone(), value);
    }
}

/// Parse one variable by the type of its default, the way pydantic-settings does.
fn parse_env_value(raw: &str, expected: &Value) -> Result<Value, String> {
    match expected {
        Value::Bool(_) => parse_bool(raw).map(Value::Bool).ok_or_else(|| {
            format!("invalid value {raw:?}: expected a boolean (true/false, yes/no, on/off, 1/0)")
        }),
        Value::Number(n) if n.is_f64() => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("invalid value {raw:?}: expected a number")),
        Value::Number(_) => raw
            .trim()
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| format!("invalid value {raw:?}: expected an integer")),
        Value::Object(_) | Value::Array(_) => {
            serde_json::from_str(raw).map_err(|e| format!("invalid value: expected JSON ({e})"))
        }
        // Strings, and optional values that default to none.
        Value::String(_) | Value::Null => Ok(Value::String(raw.to_string())),
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Turn a deserialization error at `fastapi.api_port` into one that names `AIGW_FASTAPI__API_PORT`.
fn type_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = e.path().to_string();
    let var = format!("AIGW_{}", path.replace('.', "__").to_ascii_uppercase());
    let inner = e.inner().to_string();
    let inner = inner
        .split(" at line ")
        .next()
        .unwrap_or(inner.as_str())
        .to_string();
    ConfigError::new(format!("{var} (or TOML key {path})"), inner)
}

/// Read a TOML file given with `--config`.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))
}

/// The Fireworks region for this deployment: the first configured region whose name is a prefix
/// of `AIGW_GOOGLE_CLOUD_PLATFORM__LOCATION` (so `us-east4` picks `us`), else `us`, as the original.
pub fn fireworks_region(settings: &Settings) -> Option<&FireworksEndpoint> {
    let location = &settings.google_cloud_platform.location;
    settings
        .model_endpoints
        .fireworks_regional_endpoints
        .iter()
        .find(|(region, _)| location.starts_with(region.as_str()))
        .map(|(_, endpoint)| endpoint)
        .or_else(|| {
            settings
                .model_endpoints
                .fireworks_regional_endpoints
                .get("us")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(
            &Sources::default(),
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = load(&[]).unwrap();
        assert_eq!(s.environment, "production");
        assert_eq!(s.fastapi.api_host, "0.0.0.0");
        assert_eq!(s.fastapi.api_port, 5000);
        assert_eq!(s.fastapi.metrics_port, 8082);
        assert_eq!(s.gitlab_url, "https://gitlab.com");
        assert_eq!(s.customer_portal_url, "https://customers.gitlab.com");
        assert_eq!(s.logging.level, "INFO");
        assert!(s.logging.format_json);
        assert_eq!(s.snowplow.app_id, "gitlab_ai_gateway");
        assert_eq!(s.google_cloud_platform.location, "us-central1");
        assert_eq!(
            s.vertex_text_model.endpoint,
            "us-central1-aiplatform.googleapis.com"
        );
        assert_eq!(s.external.service_name, "gitlab-ai-gateway");
        assert_eq!(s.abuse_detection.sampling_rate, 0.1);
    }

    #[test]
    fn nested_booleans_json_and_ints() {
        let s = load(&[
            ("AIGW_FASTAPI__API_PORT", "8080"),
            ("AIGW_AUTH__BYPASS_EXTERNAL", "yes"),
            ("AIGW_MOCK_MODEL_RESPONSES", "1"),
            ("AIGW_LOGGING__FORMAT_JSON", "Off"),
            (
                "AIGW_MODEL_ENGINE_CONCURRENCY_LIMITS",
                r#"{"anthropic":{"claude-2.1":15}}"#,
            ),
            ("AIGW_DEFAULT_PROMPTS", r#"{"chat/react":"vertex"}"#),
            (
                "AIGW_F__CODE_SUGGESTIONS__EXCL_POST_PROC",
                r#"["strip_whitespaces"]"#,
            ),
            (
                "AIGW_MODEL_ENDPOINTS__FIREWORKS_REGIONAL_ENDPOINTS",
                r#"{"us":{"endpoint":"http://x","identifier":"m"}}"#,
            ),
            ("AIGW_ABUSE_DETECTION__SAMPLING_RATE", "0.5"),
            ("AIGW_SOMETHING_UNKNOWN", "whatever"),
        ])
        .unwrap();
        assert_eq!(s.fastapi.api_port, 8080);
        assert!(s.auth.bypass_external);
        assert!(s.mock_model_responses);
        assert!(!s.logging.format_json);
        assert_eq!(
            s.model_engine_concurrency_limits["anthropic"]["claude-2.1"],
            15
        );
        assert_eq!(s.default_prompts["chat/react"], "vertex");
        assert_eq!(
            s.f.code_suggestions.excl_post_proc,
            vec!["strip_whitespaces"]
        );
        assert_eq!(
            s.model_endpoints.fireworks_regional_endpoints["us"].identifier,
            "m"
        );
        assert_eq!(s.abuse_detection.sampling_rate, 0.5);
    }

    #[test]
    fn inheritance_from_runway_region_and_project() {
        let s = load(&[
            ("RUNWAY_REGION", "europe-west2"),
            ("AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT", "proj"),
        ])
        .unwrap();
        assert_eq!(s.google_cloud_platform.location, "europe-west2");
        assert_eq!(s.vertex_text_model.location, "europe-west2");
        assert_eq!(s.vertex_text_model.project, "proj");
        assert_eq!(s.vertex_search.project, "proj");
        assert_eq!(
            s.vertex_text_model.endpoint,
            "europe-west2-aiplatform.googleapis.com"
        );
        // Claude on Vertex keeps the prompt's own location's host unless told otherwise.
        assert_eq!(s.vertex_anthropic.endpoint, "");
        let s = load(&[("AIGW_VERTEX_ANTHROPIC__ENDPOINT", "http://127.0.0.1:9")]).unwrap();
        assert_eq!(s.vertex_anthropic.endpoint, "http://127.0.0.1:9");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = load(&[("AIGW_FASTAPI__API_PORT", "eighty")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_FASTAPI__API_PORT");
        assert!(e.problem.contains("integer"), "{e}");

        let e = load(&[("AIGW_FASTAPI__API_PORT", "70000")]).unwrap_err();
        assert!(e.setting.starts_with("AIGW_FASTAPI__API_PORT"), "{e}");

        let e = load(&[("AIGW_AUTH__BYPASS_EXTERNAL", "maybe")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_AUTH__BYPASS_EXTERNAL");

        let e = load(&[("AIGW_DEFAULT_PROMPTS", "{not json")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_DEFAULT_PROMPTS");

        let e = load(&[("AIGW_LOGGING__LEVEL", "LOUD")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_LOGGING__LEVEL");

        let e = load(&[("AIGW_FASTAPI__API_HOST", "not a host!")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_FASTAPI__API_HOST");

        // Below a millisecond a duration is zero, and a zero ping interval panics every stream.
        let e = load(&[("AIGW_MODELS__SSE_PING_INTERVAL_S", "1e-10")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_MODELS__SSE_PING_INTERVAL_S");
        assert!(load(&[("AIGW_MODELS__SSE_PING_INTERVAL_S", "0.001")]).is_ok());

        let e =
            load(&[("AIGW_MODEL_ENGINE_CONCURRENCY_LIMITS", r#"{"a":{"b":"x"}}"#)]).unwrap_err();
        assert!(
            e.setting
                .starts_with("AIGW_MODEL_ENGINE_CONCURRENCY_LIMITS"),
            "{e}"
        );
    }

    #[test]
    fn development_default_and_toml_layering() {
        let toml = "[http]\nmax_request_body_bytes = 1024\n[fastapi]\napi_port = 6000\n";
        let s = Settings::from_vars(
            &Sources {
                development: true,
                toml: Some(("test.toml", toml)),
            },
            [("AIGW_FASTAPI__API_PORT".to_string(), "7000".to_string())],
        )
        .unwrap();
        assert_eq!(s.fastapi.api_host, "127.0.0.1", "dev listens on loopback");
        assert!(s.mock_model_responses, "dev uses the mock models");
        assert!(s.auth.bypass_external, "dev bypasses auth");
        assert!(!s.logging.format_json, "dev logs for humans");
        assert_eq!(s.http.max_request_body_bytes, 1024, "TOML over defaults");
        assert_eq!(s.fastapi.api_port, 7000, "environment over TOML");
    }

    #[test]
    fn unknown_toml_keys_are_refused_with_their_path() {
        let e = Settings::from_vars(
            &Sources {
                development: false,
                toml: Some(("x.toml", "[fastapi]\napi_prot = 1\n")),
            },
            std::iter::empty(),
        )
        .unwrap_err();
        assert!(e.problem.contains("api_prot"), "{e}");
        let e = Settings::from_vars(
            &Sources {
                development: false,
                toml: Some(("x.toml", "[fastapi\n")),
            },
            std::iter::empty(),
        )
        .unwrap_err();
        assert_eq!(e.setting, "x.toml");
    }
}
