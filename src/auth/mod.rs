//! Authentication and authorization of requests.
//!
//! [`Authenticator::authenticate`] runs the original's algorithm, first failure wins, before any
//! routing (so an unauthenticated request to an unknown path is a 401, not a 404):
//!
//! 1. health-check paths skip authentication;
//! 2. `AIGW_AUTH__BYPASS_EXTERNAL`, or `..._WITH_HEADER` plus `Bypass-Auth: true`, make a debug
//!    user (logged loudly on every request);
//! 3. `Authorization` must be present and a bearer token, `X-Gitlab-Authentication-Type` must be
//!    `oidc`;
//! 4. the token must verify ([`TokenVerifier`]);
//! 5. claims are cross-checked with headers (realm, instance id, subject; seat count only logged).
//!
//! Authorization is [`User::can`]: a unit primitive among the token's scopes, and the token's
//! issuer not among those the endpoint refuses ([`authz`] holds the endpoint table).
//!
//! Modules: [`keys`] (key sets), [`jwks`] (issuers and how their keys are fetched; the
//! `JwksActor` that owns them lives in the actors crate), [`verify`] (signature and claims),
//! [`cache`] (verified tokens), [`token`] (the gateway's own user tokens), [`authz`].
//!
//! Every attempt is counted in `auth_attempts_total{result}` with a fixed set of labels
//! ([`RESULTS`]).

pub mod authz;
pub mod cache;
pub mod jwks;
pub mod keys;
pub mod token;
pub mod unit_primitives;
pub mod user;
pub mod verify;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use ai_gateway_actors::jwks::JwksHandle;

use crate::http::headers::{
    X_GITLAB_DUO_SEAT_COUNT, X_GITLAB_GLOBAL_USER_ID, X_GITLAB_INSTANCE_ID, X_GITLAB_REALM,
};
use futures::future::BoxFuture;

pub use user::{Claims, User};

use crate::config::Settings;
use keys::{KeySet, LocalKeys};
use token::TokenAuthority;
use verify::{ActorKeys, JwtVerifier, VerifyOptions};

/// The `result` labels of `auth_attempts_total`.
pub const RESULTS: &[&str] = &[
    "success",
    "bypass",
    "missing_authorization",
    "invalid_authorization",
    "invalid_token_type",
    "invalid_token",
    "header_mismatch",
];

fn result_label(result: &Result<User, String>) -> &'static str {
    match result {
        Ok(user) if user.is_debug => "bypass",
        Ok(_) => "success",
        Err(m) if m == "No authorization header presented" => "missing_authorization",
        Err(m) if m == "Invalid authorization header" => "invalid_authorization",
        Err(m) if m.starts_with("Invalid authentication token type") => "invalid_token_type",
        Err(m) if m.starts_with("Header mismatch") => "header_mismatch",
        Err(_) => "invalid_token",
    }
}

/// Paths that are never authenticated.
pub const SKIP_PATHS: &[&str] = &["/monitoring/healthz", "/monitoring/ready", "/metrics"];

/// Verifies a bearer token and returns its claims.
pub trait TokenVerifier: Send + Sync + 'static {
    /// `Ok(claims)` for a valid token; `Err(details)` otherwise (details go to the access log,
    /// never to the client).
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Claims, String>>;
}

/// A verifier that knows no keys: every token fails (used until issuers are configured).
pub struct NoKeys;

impl TokenVerifier for NoKeys {
    fn verify<'a>(&'a self, _token: &'a str) -> BoxFuture<'a, Result<Claims, String>> {
        Box::pin(async { Err("no keys available".to_string()) })
    }
}

/// The outcome of authenticating one request, with what the access log records about it.
#[derive(Debug, Clone)]
pub struct AuthOutcome {
    /// The user, or the 401 message.
    pub result: Result<User, String>,
    /// `iss` of the token, when one was decoded (set on failure too).
    pub token_issuer: Option<String>,
    /// `gitlab_realm` claim.
    pub gitlab_realm: Option<String>,
    /// Seconds spent authenticating.
    pub duration_s: f64,
    /// Why it failed, for the log.
    pub error_details: Option<String>,
}

/// Bypass switches of the original.
#[derive(Debug, Clone, Default)]
pub struct BypassSettings {
    /// Every request is a debug user.
    pub external: bool,
    /// A request with `Bypass-Auth: true` is a debug user.
    pub external_with_header: bool,
}

/// Runs the authentication algorithm (see the module docs).
pub struct Authenticator {
    bypass: BypassSettings,
    service_name: String,
    verifier: Arc<dyn TokenVerifier>,
    tokens: TokenAuthority,
}

const BYPASS_AUTH: HeaderName = HeaderName::from_static("bypass-auth");
const X_GITLAB_AUTHENTICATION_TYPE: HeaderName =
    HeaderName::from_static("x-gitlab-authentication-type");

/// A header's value as text, if it is visible ASCII. Names are constants, not strings parsed on
/// every lookup.
fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Authenticator {
    /// An authenticator; `service_name` is the issuer of the gateway's own tokens.
    pub fn new(
        bypass: BypassSettings,
        service_name: impl Into<String>,
        verifier: Arc<dyn TokenVerifier>,
    ) -> Self {
        let service_name = service_name.into();
        Self {
            tokens: TokenAuthority::new(service_name.clone(), None),
            bypass,
            service_name,
            verifier,
        }
    }

    /// The gateway's authenticator: its own keys from `AIGW_SELF_SIGNED_JWT__*`, the issuers'
    /// keys from their `JwksActor`s' snapshots, the verified-token cache.
    pub fn from_settings(settings: &Settings, issuers: Vec<JwksHandle<KeySet>>) -> Self {
        let service_name = settings.external.service_name.clone();
        let local = LocalKeys::load(
            &service_name,
            &settings.self_signed_jwt.signing_key,
            &settings.self_signed_jwt.validation_key,
        );
        for problem in &local.problems {
            tracing::error!(target: "auth", "self-signed token key refused: {problem}");
        }
        let options = VerifyOptions {
            service_name: service_name.clone(),
            bypass_signature: settings.auth.bypass_jwt_signature,
            require_exp: settings.auth.require_exp,
            require_aud: settings.auth.require_aud,
            allowed_issuers: settings.auth.allowed_issuers.clone(),
        };
        let verifier = JwtVerifier::new(
            Box::new(ActorKeys {
                local: local.verification,
                issuers,
            }),
            options,
            usize::try_from(settings.auth.token_cache_size).unwrap_or(usize::MAX),
        );
        for result in RESULTS {
            metrics::counter!("auth_attempts_total", "result" => *result).absolute(0);
        }
        Self {
            bypass: BypassSettings {
                external: settings.auth.bypass_external,
                external_with_header: settings.auth.bypass_external_with_header,
            },
            tokens: TokenAuthority::new(service_name.clone(), local.signing),
            service_name,
            verifier: Arc::new(verifier),
        }
    }

    /// Issues the gateway's own user tokens.
    pub fn tokens(&self) -> &TokenAuthority {
        &self.tokens
    }

    /// The gateway's service name (audience and self-signed issuer).
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Authenticate a request to `path` with `headers`. `None` for paths that skip auth.
    pub async fn authenticate(&self, path: &str, headers: &HeaderMap) -> Option<AuthOutcome> {
        if SKIP_PATHS.contains(&path) {
            return None;
        }
        let started = Instant::now();
        let mut outcome = AuthOutcome {
            result: Err(String::new()),
            token_issuer: None,
            gitlab_realm: None,
            duration_s: 0.0,
            error_details: None,
        };
        outcome.result = self
            .run(
                headers,
                &mut outcome.token_issuer,
                &mut outcome.gitlab_realm,
                &mut outcome.error_details,
            )
            .await;
        outcome.duration_s = started.elapsed().as_secs_f64();
        crate::telemetry::counter(
            "auth_attempts_total",
            &[("result", result_label(&outcome.result))],
        )
        .increment(1);
        Some(outcome)
    }

    async fn run(
        &self,
        headers: &HeaderMap,
        issuer: &mut Option<String>,
        realm: &mut Option<String>,
        details: &mut Option<String>,
    ) -> Result<User, String> {
        let bypass_header = self.bypass.external_with_header
            && header(headers, &BYPASS_AUTH).is_some_and(|v| v == "true");
        if self.bypass.external || bypass_header {
            tracing::error!(
                target: "auth",
                "authentication bypassed: the request is served as a debug user (AIGW_AUTH__BYPASS_EXTERNAL{})",
                if bypass_header { "_WITH_HEADER" } else { "" }
            );
            return Ok(User::debug(
                header(headers, &X_GITLAB_GLOBAL_USER_ID).map(str::to_string),
            ));
        }
        let Some(authorization) = header(headers, &AUTHORIZATION) else {
            return Err("No authorization header presented".into());
        };
        let (scheme, token) = authorization.split_once(' ').unwrap_or((authorization, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("Invalid authorization header".into());
        }
        if header(headers, &X_GITLAB_AUTHENTICATION_TYPE) != Some("oidc") {
            return Err("Invalid authentication token type - only OIDC is supported".into());
        }
        let claims = match self.verifier.verify(token).await {
            Ok(claims) => claims,
            Err(e) => {
                // The original sets the issuer field even when verification fails (empty).
                *issuer = Some(String::new());
                *details = Some(e);
                return Err("Forbidden by auth provider".into());
            }
        };
        *issuer = Some(claims.issuer.clone().unwrap_or_default());
        *realm = claims.gitlab_realm.clone();

        let mismatch = |claim: &Option<String>, name: &HeaderName| -> bool {
            match claim.as_deref() {
                Some(value) if !value.is_empty() => header(headers, name) != Some(value),
                _ => false,
            }
        };
        if mismatch(&claims.gitlab_realm, &X_GITLAB_REALM) {
            return Err("Header mismatch 'X-Gitlab-Realm'".into());
        }
        if mismatch(&claims.gitlab_instance_id, &X_GITLAB_INSTANCE_ID) {
            return Err("Header mismatch 'X-Gitlab-Instance-Id'".into());
        }
        if claims.issuer.as_deref() == Some(self.service_name.as_str()) {
            if mismatch(&claims.subject, &X_GITLAB_GLOBAL_USER_ID) {
                return Err("Header mismatch 'X-Gitlab-Global-User-Id'".into());
            }
        } else if mismatch(&claims.subject, &X_GITLAB_INSTANCE_ID) {
            return Err("Header mismatch 'X-Gitlab-Instance-Id'".into());
        }
        if let Some(seats) = claims.duo_seat_count.as_deref().filter(|s| !s.is_empty()) {
            match header(headers, &X_GITLAB_DUO_SEAT_COUNT) {
                None => {
                    tracing::warn!(target: "auth", "Header is missing: 'X-Gitlab-Duo-Seat-Count'")
                }
                Some(v) if v != seats => {
                    tracing::warn!(target: "auth", "Header mismatch 'X-Gitlab-Duo-Seat-Count'")
                }
                Some(_) => {}
            }
        }
        Ok(User::authenticated(
            claims,
            header(headers, &X_GITLAB_GLOBAL_USER_ID).map(str::to_string),
        ))
    }
}
