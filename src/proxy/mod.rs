//! The upstreams of the provider proxies (`/v1/proxy/anthropic/*`, `/v1/proxy/vertex-ai/*`):
//! where they are, how we authenticate to them, and the shared HTTP client.
//!
//! One pooled client serves both: keep-alive connections are reused across requests (a proxied
//! call pays no TLS handshake after the first), TCP_NODELAY is on so each relayed stream frame
//! leaves as soon as it arrives, and there is no automatic decompression, so bodies pass through
//! byte for byte. Timeouts follow the original's 60 s, as a connect timeout and a per-read idle
//! timeout (a long stream that keeps sending is never cut).

pub mod abuse;
pub mod google_token;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::models::http_client::base_url;
use google_token::AccessTokenSource;

/// The original's proxy timeout.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the proxy endpoints need to reach their upstreams.
pub struct Upstreams {
    /// The shared client.
    pub http: reqwest::Client,
    /// `ANTHROPIC_BASE_URL` without a trailing slash.
    pub anthropic_base: String,
    /// `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<String>,
    /// `https://{AIGW_VERTEX_TEXT_MODEL__ENDPOINT}` (or the endpoint itself when it has a scheme).
    pub vertex_base: String,
    /// `AIGW_VERTEX_TEXT_MODEL__PROJECT`.
    pub vertex_project: String,
    /// `AIGW_VERTEX_TEXT_MODEL__LOCATION`.
    pub vertex_location: String,
    /// Google access tokens for Vertex.
    pub google_token: Arc<dyn AccessTokenSource>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("anthropic_base", &self.anthropic_base)
            .field("vertex_base", &self.vertex_base)
            .finish_non_exhaustive()
    }
}

/// The proxies' HTTP client.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    crate::tls::client_builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .connect_timeout(TIMEOUT)
        .read_timeout(TIMEOUT)
        .build()
}

impl Upstreams {
    /// Upstreams from the settings; Vertex tokens come from `google_token` (the Vertex
    /// provider's credentials).
    pub fn from_settings(
        settings: &Settings,
        google_token: Arc<dyn AccessTokenSource>,
    ) -> Result<Upstreams, reqwest::Error> {
        let http = client()?;
        Ok(Upstreams {
            anthropic_base: base_url(&settings.external.anthropic_base_url),
            anthropic_api_key: settings.external.anthropic_api_key.clone(),
            vertex_base: base_url(&settings.vertex_text_model.endpoint),
            vertex_project: settings.vertex_text_model.project.clone(),
            vertex_location: settings.vertex_text_model.location.clone(),
            google_token,
            http,
        })
    }
}
