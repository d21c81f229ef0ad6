//! Google access tokens for the Vertex proxy.
//!
//! [`AccessTokenSource`] is the seam: anything that can produce a bearer token for
//! `aiplatform.googleapis.com` (a service-account key signer, workload identity, a static token)
//! plugs in behind it. The one here asks the GCE metadata server, which is what Google's
//! application-default credentials do on Cloud Run and GKE (where the gateway runs):
//! `GET http://{GCE_METADATA_HOST}/computeMetadata/v1/instance/service-accounts/default/token`
//! with `Metadata-Flavor: Google`. A token is reused until a minute before it expires, and
//! concurrent requests that find it stale share one refresh.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::Mutex;

/// The metadata server's host name inside Google Cloud.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// Refresh this long before the token expires.
const EARLY: Duration = Duration::from_secs(60);

/// Produces Google access tokens.
pub trait AccessTokenSource: Send + Sync + 'static {
    /// A fresh-enough token, or why none could be had.
    fn token(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// Tokens from the GCE metadata server.
pub struct MetadataServerToken {
    http: reqwest::Client,
    url: String,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl MetadataServerToken {
    /// A source asking the metadata server at `host` (`host[:port]`, optionally with a scheme).
    pub fn new(http: reqwest::Client, host: &str) -> Self {
        let host = host.trim_end_matches('/');
        let base = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        Self {
            http,
            url: format!("{base}/computeMetadata/v1/instance/service-accounts/default/token"),
            cached: Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<(String, Instant), String> {
        let response = self
            .http
            .get(&self.url)
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("metadata server unreachable: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("metadata server answered {}", response.status()));
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| format!("metadata server answer unreadable: {e}"))?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        Ok((
            token.access_token,
            Instant::now() + lifetime.saturating_sub(EARLY),
        ))
    }
}

impl AccessTokenSource for MetadataServerToken {
    fn token(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            if let Some((token, fresh_until)) = cached.as_ref() {
                if Instant::now() < *fresh_until {
                    return Ok(token.clone());
                }
            }
            let (token, fresh_until) = self.fetch().await?;
            *cached = Some((token.clone(), fresh_until));
            Ok(token)
        })
    }
}

/// A fixed token (tests, or a token minted outside the gateway).
pub struct StaticToken(pub String);

impl AccessTokenSource for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<String, String>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}
