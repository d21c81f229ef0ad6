//! The OIDC issuers of the gateway and how their keys are fetched.
//!
//! Two issuers, as the original: `Gitlab` (`AIGW_GITLAB_URL`) and `CustomersDot`
//! (`AIGW_CUSTOMER_PORTAL_URL`). For each, the discovery document is fetched from
//! `urljoin(base, "/.well-known/openid-configuration")` (an absolute path, so any path component
//! of the base is dropped, exactly as the original's `urljoin`), then its `jwks_uri`. Each request
//! has `AIGW_AUTH__JWKS_FETCH_TIMEOUT_S` (10 s, as the original). The fetch is handed to the
//! issuer's `JwksActor` as a function, so the actors crate never sees HTTP.

use std::sync::Arc;
use std::time::Duration;

use ai_gateway_actors::jwks::{FetchFn, JwksConfig, JwksHandle};
use ai_gateway_actors::supervisor::ChildSpec;
use serde_json::Value;

use super::keys::KeySet;
use crate::config::Settings;

/// One issuer: its label, base URL and key-set handle.
#[derive(Clone)]
pub struct Issuer {
    /// `Gitlab` or `CustomersDot` (also the `issuer` metric label).
    pub name: &'static str,
    /// The configured base URL.
    pub base_url: String,
    /// Where its `JwksActor` publishes.
    pub handle: JwksHandle<KeySet>,
}

/// The discovery URL of an issuer base URL.
pub fn discovery_url(base: &str) -> Result<url::Url, String> {
    url::Url::parse(base)
        .and_then(|b| b.join("/.well-known/openid-configuration"))
        .map_err(|e| format!("invalid issuer URL {base:?}: {e}"))
}

/// Upper bound of a discovery or key-set document (real ones are a few KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut res = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = res.status();
    if !status.is_success() {
        return Err(format!("GET {url}: status {}", status.as_u16()));
    }
    let too_large = || format!("GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes");
    if res
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice::<Value>(&body).map_err(|e| format!("GET {url}: invalid JSON: {e}"))
}

/// Discovery, then the key set.
pub async fn fetch_key_set(client: &reqwest::Client, base: &str) -> Result<KeySet, String> {
    let discovery = discovery_url(base)?;
    let doc = get_json(client, discovery.as_str()).await?;
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{discovery}: no jwks_uri"))?;
    let jwks = get_json(client, jwks_uri).await?;
    KeySet::from_jwks(&jwks).map_err(|e| format!("{jwks_uri}: {e}"))
}

/// The fetch function of one issuer.
pub fn http_fetcher(base: String, timeout: Duration) -> FetchFn<KeySet> {
    let client = crate::tls::client_builder()
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default();
    Arc::new(move || {
        let client = client.clone();
        let base = base.clone();
        Box::pin(async move { fetch_key_set(&client, &base).await })
    })
}

/// Refresh timing from the settings.
pub fn jwks_config(settings: &Settings) -> JwksConfig {
    let timeout = Duration::from_secs(settings.auth.jwks_fetch_timeout_s.max(1));
    JwksConfig {
        refresh_interval: Duration::from_secs(settings.auth.jwks_refresh_interval_s.max(1)),
        cooldown: Duration::from_secs(settings.auth.jwks_refresh_cooldown_s),
        // Discovery and key set: two requests.
        fetch_timeout: timeout * 2,
        ..JwksConfig::default()
    }
}

/// The issuers of these settings, with the child specs of their actors (kind `jwks`).
///
/// None with `AIGW_AUTH__BYPASS_EXTERNAL`: no token is ever verified then, so the gateway
/// fetches nothing (the original, lazy, would not either), and `--dev` stays off the network.
pub fn issuers(settings: &Settings) -> Vec<(Issuer, Arc<dyn ChildSpec>)> {
    if settings.auth.bypass_external {
        return Vec::new();
    }
    let config = jwks_config(settings);
    let timeout = Duration::from_secs(settings.auth.jwks_fetch_timeout_s.max(1));
    [
        ("Gitlab", settings.gitlab_url.clone()),
        ("CustomersDot", settings.customer_portal_url.clone()),
    ]
    .into_iter()
    .map(|(name, base_url)| {
        let handle = JwksHandle::new(name, config);
        let spec = handle.child_spec(http_fetcher(base_url.clone(), timeout));
        (
            Issuer {
                name,
                base_url,
                handle,
            },
            spec,
        )
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_drops_the_base_path_like_urljoin() {
        assert_eq!(
            discovery_url("https://gitlab.example.com/sub/path")
                .unwrap()
                .as_str(),
            "https://gitlab.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("http://127.0.0.1:9").unwrap().as_str(),
            "http://127.0.0.1:9/.well-known/openid-configuration"
        );
        assert!(discovery_url("not a url").is_err());
    }
}
