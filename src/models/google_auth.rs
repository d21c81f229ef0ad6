//! Google access tokens for Vertex AI, as Application Default Credentials find them.
//!
//! * `GOOGLE_APPLICATION_CREDENTIALS` names a key file. A `service_account` key signs an RS256
//!   JWT (`iss` = the account, `scope` = cloud-platform, `aud` = its `token_uri`) and exchanges it
//!   at `token_uri` (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`); an
//!   `authorized_user` file (what `gcloud auth application-default login` writes) exchanges its
//!   refresh token.
//! * Otherwise the metadata server (`GCE_METADATA_HOST`, default `metadata.google.internal`)
//!   hands out the attached service account's token (`Metadata-Flavor: Google`).
//!
//! A token is cached and reused until shortly before it expires (the threshold google-auth
//! uses, 3 min 45 s). Readers take the cached token without a lock; one refresh runs at a time
//! and concurrent callers wait for it instead of stampeding the token endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http_client::{body_error, Upstream};
use super::{ModelError, ModelErrorKind};

/// The OAuth scope of Vertex AI calls.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Tokens are refreshed this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(225);
/// The longest lifetime of an access token that is believed (seconds).
const MAX_LIFETIME_S: u64 = 86_400;
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

enum Source {
    ServiceAccount {
        email: String,
        key: Box<EncodingKey>,
        key_id: Option<String>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    Metadata {
        url: String,
    },
}

struct Token {
    value: String,
    refresh_at: Instant,
}

/// A source of Google access tokens with its cache.
pub struct GoogleAuth {
    source: Source,
    upstream: Upstream,
    cached: ArcSwapOption<Token>,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GoogleAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            Source::ServiceAccount { .. } => "service_account",
            Source::AuthorizedUser { .. } => "authorized_user",
            Source::Metadata { .. } => "metadata",
        };
        f.debug_struct("GoogleAuth").field("source", &kind).finish()
    }
}

impl GoogleAuth {
    /// Credentials from a key file's text.
    pub fn from_key_file(text: &str, upstream: Upstream) -> Result<Self, String> {
        let file: KeyFile =
            serde_json::from_str(text).map_err(|e| format!("not a Google key file: {e}"))?;
        let source = match file.kind.as_str() {
            "service_account" => {
                let email = file
                    .client_email
                    .ok_or("service account without client_email")?;
                let pem = file
                    .private_key
                    .ok_or("service account without private_key")?;
                let key = EncodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("private_key is not an RSA PEM key: {e}"))?;
                Source::ServiceAccount {
                    email,
                    key: Box::new(key),
                    key_id: file.private_key_id,
                    token_uri: file.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
                }
            }
            "authorized_user" => Source::AuthorizedUser {
                client_id: file.client_id.ok_or("authorized_user without client_id")?,
                client_secret: file
                    .client_secret
                    .ok_or("authorized_user without client_secret")?,
                refresh_token: file
                    .refresh_token
                    .ok_or("authorized_user without refresh_token")?,
                token_uri: file.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
            },
            other => return Err(format!("unsupported credential type {other:?}")),
        };
        Ok(Self::with_source(source, upstream))
    }

    /// The metadata server at `host` (`GCE_METADATA_HOST`, may carry a port).
    pub fn metadata_server(host: Option<&str>, upstream: Upstream) -> Self {
        let host = host.unwrap_or(DEFAULT_METADATA_HOST);
        let base = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        let url = format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            base.trim_end_matches('/')
        );
        Self::with_source(Source::Metadata { url }, upstream)
    }

    fn with_source(source: Source, upstream: Upstream) -> Self {
        Self {
            source,
            upstream,
            cached: ArcSwapOption::empty(),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// A valid access token, from the cache or freshly fetched.
    pub async fn token(&self) -> Result<String, ModelError> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let (value, expires_in) = self.fetch().await?;
        let lifetime = Duration::from_secs(expires_in);
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_BEFORE);
        self.cached.store(Some(Arc::new(Token {
            value: value.clone(),
            refresh_at,
        })));
        Ok(value)
    }

    fn fresh(&self) -> Option<String> {
        let guard = self.cached.load();
        let token = guard.as_ref()?;
        (Instant::now() < token.refresh_at).then(|| token.value.clone())
    }

    async fn fetch(&self) -> Result<(String, u64), ModelError> {
        let refused = |m: String| ModelError::new(ModelErrorKind::Refused, m);
        let response = match &self.source {
            Source::ServiceAccount {
                email,
                key,
                key_id,
                token_uri,
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let claims = json!({
                    "iss": email, "scope": SCOPE, "aud": token_uri,
                    "iat": now, "exp": now + 3600,
                });
                let mut header = Header::new(Algorithm::RS256);
                header.kid = key_id.clone();
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| refused(format!("cannot sign the Google JWT: {e}")))?;
                let form = format!(
                    "grant_type={}&assertion={}",
                    urlencode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    urlencode(&assertion)
                );
                self.upstream
                    .send(|http| {
                        http.post(token_uri)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(form.clone())
                    })
                    .await?
            }
            Source::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                let form = format!(
                    "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
                    urlencode(client_id),
                    urlencode(client_secret),
                    urlencode(refresh_token)
                );
                self.upstream
                    .send_redacting(
                        |http| {
                            http.post(token_uri)
                                .header("content-type", "application/x-www-form-urlencoded")
                                .body(form.clone())
                        },
                        &[client_secret.as_str(), refresh_token.as_str()],
                    )
                    .await?
            }
            Source::Metadata { url } => {
                self.upstream
                    .send(|http| http.get(url).header("Metadata-Flavor", "Google"))
                    .await?
            }
        };
        let bytes = response
            .bytes()
            .await
            .map_err(|e| body_error("google-auth", &e))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ModelError::new(
                ModelErrorKind::Protocol,
                format!("google token endpoint sent invalid JSON: {e}"),
            )
        })?;
        let token = v["access_token"].as_str().ok_or_else(|| {
            ModelError::new(
                ModelErrorKind::Protocol,
                "google token endpoint sent no access_token",
            )
        })?;
        // Google's tokens live an hour; a lifetime beyond a day is the endpoint's mistake, and
        // one beyond what an `Instant` can add would panic the caller.
        let expires_in = v["expires_in"].as_u64().unwrap_or(3600).min(MAX_LIFETIME_S);
        Ok((token.to_string(), expires_in))
    }
}

/// `application/x-www-form-urlencoded` value encoding.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Models;

    #[test]
    fn key_files() {
        let up = || Upstream::new("google-auth", &Models::default()).unwrap();
        assert!(GoogleAuth::from_key_file("{}", up()).is_err());
        assert!(GoogleAuth::from_key_file(r#"{"type":"external_account"}"#, up()).is_err());
        let user = GoogleAuth::from_key_file(
            r#"{"type":"authorized_user","client_id":"a","client_secret":"b","refresh_token":"c"}"#,
            up(),
        )
        .unwrap();
        assert_eq!(
            format!("{user:?}"),
            r#"GoogleAuth { source: "authorized_user" }"#
        );
        let bad = GoogleAuth::from_key_file(
            r#"{"type":"service_account","client_email":"x@y","private_key":"nope"}"#,
            up(),
        );
        assert!(bad.is_err());
        let m = GoogleAuth::metadata_server(Some("127.0.0.1:9"), up());
        assert!(
            matches!(&m.source, Source::Metadata { url } if url == "http://127.0.0.1:9/computeMetadata/v1/instance/service-accounts/default/token")
        );
    }
}
