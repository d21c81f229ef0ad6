//! JWT verification: the original's composite provider, plus `kid` refresh and a token cache.
//!
//! A token is accepted when:
//!
//! 1. its header says `alg: RS256` (nothing else is accepted);
//! 2. its signature verifies with a key of the gateway's own pair or of an OIDC issuer. A token
//!    that names a `kid` is tried against the keys with that `kid`; when no key has it, each
//!    issuer's `JwksActor` is asked for an on-demand refresh (cooldown-limited, shared) and the
//!    keys are looked at again. A token without `kid` (the original's own tokens have none) is
//!    tried against every key, as python-jose does;
//! 3. its claims pass python-jose's default checks: `exp` and `nbf` enforced when present (no
//!    leeway), `iat` numeric when present, `sub` a string when present, and `aud`, when present,
//!    containing the service name. `iss` is not checked, unless the strict options
//!    (`AIGW_AUTH__REQUIRE_EXP`, `..._REQUIRE_AUD`, `..._ALLOWED_ISSUERS`, all off by default for
//!    compatibility) ask for it.
//!
//! `AIGW_AUTH__BYPASS_JWT_SIGNATURE` skips step 2 (and the `alg` check), logged on every use.
//! Accepted tokens are remembered by hash ([`super::cache`]), so a repeated token costs no
//! signature check.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ai_gateway_actors::jwks::JwksHandle;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::cache::{token_hash, TokenCache};
use super::keys::{KeySet, VerificationKey};
use super::user::Claims;
use super::TokenVerifier;

/// How strictly claims are checked.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The audience the gateway answers to, and the issuer of its own tokens.
    pub service_name: String,
    /// Decode without checking the signature (`AIGW_AUTH__BYPASS_JWT_SIGNATURE`).
    pub bypass_signature: bool,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// Refuse tokens without `aud`.
    pub require_aud: bool,
    /// When non-empty, `iss` must be one of these.
    pub allowed_issuers: Vec<String>,
}

/// Where keys come from: the gateway's own and each issuer's published set.
pub trait KeySource: Send + Sync + 'static {
    /// The gateway's own keys.
    fn local(&self) -> &KeySet;
    /// The current key sets of the issuers.
    fn issuer_keys(&self) -> Vec<Arc<KeySet>>;
    /// Ask every issuer for an on-demand refresh. Returns when every ask is answered, or as soon
    /// as `enough()` holds after a fetch, so that a slow or unreachable issuer does not delay a
    /// token whose key another issuer just published.
    fn refresh<'a>(&'a self, enough: &'a (dyn Fn() -> bool + Send + Sync)) -> BoxFuture<'a, ()>;
}

/// Keys published by `JwksActor`s.
pub struct ActorKeys {
    /// The gateway's own keys.
    pub local: KeySet,
    /// One handle per issuer.
    pub issuers: Vec<JwksHandle<KeySet>>,
}

impl KeySource for ActorKeys {
    fn local(&self) -> &KeySet {
        &self.local
    }

    fn issuer_keys(&self) -> Vec<Arc<KeySet>> {
        self.issuers.iter().filter_map(|h| h.keys()).collect()
    }

    fn refresh<'a>(&'a self, enough: &'a (dyn Fn() -> bool + Send + Sync)) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut asks: FuturesUnordered<_> =
                self.issuers.iter().map(|h| h.refresh_on_demand()).collect();
            while let Some(anew) = asks.next().await {
                if anew && enough() {
                    break;
                }
            }
        })
    }
}

/// Fixed keys (tests, benchmarks).
pub struct StaticKeys {
    /// The gateway's own keys.
    pub local: KeySet,
    /// Issuer keys.
    pub issuers: Vec<Arc<KeySet>>,
}

impl KeySource for StaticKeys {
    fn local(&self) -> &KeySet {
        &self.local
    }
    fn issuer_keys(&self) -> Vec<Arc<KeySet>> {
        self.issuers.clone()
    }
    fn refresh<'a>(&'a self, _enough: &'a (dyn Fn() -> bool + Send + Sync)) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// The gateway's [`TokenVerifier`].
pub struct JwtVerifier {
    keys: Box<dyn KeySource>,
    options: VerifyOptions,
    cache: TokenCache,
    validation: Validation,
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Signature only; claims are checked by [`check_claims`], python-jose's way.
fn signature_only() -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{name} claim must be a number")),
    }
}

/// python-jose's claim checks (plus the strict options); `Ok(exp)`.
pub fn check_claims(
    claims: &Map<String, Value>,
    options: &VerifyOptions,
    now: f64,
) -> Result<Option<f64>, String> {
    let exp = numeric(claims, "exp")?;
    if let Some(exp) = exp {
        if exp < now.floor() {
            return Err("Signature has expired.".into());
        }
    } else if options.require_exp {
        return Err("exp claim required".into());
    }
    if let Some(nbf) = numeric(claims, "nbf")? {
        if nbf > now.floor() {
            return Err("The token is not yet valid (nbf)".into());
        }
    }
    numeric(claims, "iat")?;
    match claims.get("aud") {
        None => {
            if options.require_aud {
                return Err("aud claim required".into());
            }
        }
        Some(Value::String(aud)) => {
            if aud != &options.service_name {
                return Err("Invalid audience".into());
            }
        }
        Some(Value::Array(auds)) => {
            if auds.iter().any(|a| !a.is_string()) {
                return Err("Invalid claim format in token".into());
            }
            if !auds
                .iter()
                .any(|a| a.as_str() == Some(options.service_name.as_str()))
            {
                return Err("Invalid audience".into());
            }
        }
        Some(_) => return Err("Invalid claim format in token".into()),
    }
    match claims.get("sub") {
        None | Some(Value::String(_)) => {}
        Some(_) => return Err("Subject must be a string.".into()),
    }
    match claims.get("jti") {
        None | Some(Value::String(_)) => {}
        Some(_) => return Err("JWT ID must be a string.".into()),
    }
    if !options.allowed_issuers.is_empty() {
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if !options.allowed_issuers.iter().any(|a| a == iss) {
            return Err(format!("issuer {iss:?} is not allowed"));
        }
    }
    Ok(exp)
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// The claims the gateway reads.
pub fn claims_of(claims: &Map<String, Value>) -> Claims {
    Claims {
        gitlab_realm: string_claim(claims, "gitlab_realm"),
        scopes: claims
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        subject: string_claim(claims, "sub"),
        issuer: string_claim(claims, "iss"),
        duo_seat_count: string_claim(claims, "duo_seat_count"),
        gitlab_instance_id: string_claim(claims, "gitlab_instance_id"),
        expires_at: claims.get("exp").and_then(Value::as_f64).map(|e| e as i64),
    }
}

impl JwtVerifier {
    /// A verifier over `keys`; `cache_size` 0 disables the token cache.
    pub fn new(keys: Box<dyn KeySource>, options: VerifyOptions, cache_size: usize) -> Self {
        Self {
            keys,
            options,
            cache: TokenCache::new(cache_size),
            validation: signature_only(),
        }
    }

    /// The token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    fn try_keys<'a>(
        &self,
        token: &str,
        keys: impl Iterator<Item = &'a VerificationKey>,
    ) -> Option<Map<String, Value>> {
        keys.filter_map(|k| {
            jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &self.validation).ok()
        })
        .map(|data| data.claims)
        .next()
    }

    /// Find a key that verifies `token`: the gateway's own, or one of `issuers` (a snapshot of
    /// the published sets).
    fn verify_with(
        &self,
        token: &str,
        kid: Option<&str>,
        issuers: &[Arc<KeySet>],
    ) -> Option<Map<String, Value>> {
        let local = self.keys.local();
        let every_key = || {
            local
                .keys
                .iter()
                .chain(issuers.iter().flat_map(|s| s.keys.iter()))
        };
        // The keys named by the token's `kid` first; then, as python-jose (which ignores `kid`),
        // every other key: a JWKS entry may omit its `kid` (RFC 7517 4.5).
        let named = |k: &&VerificationKey| kid.is_some() && k.kid.as_deref() == kid;
        self.try_keys(
            token,
            every_key()
                .filter(named)
                .chain(every_key().filter(|k| !named(k))),
        )
    }

    /// Whether the gateway or one of `issuers` holds a key named `kid`.
    fn kid_in(&self, kid: &str, issuers: &[Arc<KeySet>]) -> bool {
        self.keys.local().has_kid(kid) || issuers.iter().any(|s| s.has_kid(kid))
    }

    async fn verify_uncached(&self, token: &str) -> Result<Map<String, Value>, String> {
        if self.options.bypass_signature {
            tracing::error!(
                target: "auth",
                "JWT signature not verified: AIGW_AUTH__BYPASS_JWT_SIGNATURE is on"
            );
            return jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
                .map(|d| d.claims)
                .map_err(|e| format!("invalid token: {e}"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("invalid token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!(
                "algorithm {:?} is not allowed (RS256 only)",
                header.alg
            ));
        }
        let kid = header.kid.as_deref();
        // The check and the decision to refresh read one snapshot: an issuer that publishes its
        // keys between the two (its startup fetch finishing) must not make the kid look known
        // to a check that never tried it.
        let issuers = self.keys.issuer_keys();
        if let Some(claims) = self.verify_with(token, kid, &issuers) {
            return Ok(claims);
        }
        // A kid nobody holds may be a key the issuer just rotated in; a token without kid that
        // no key verifies may be too. Either way: one refresh, cooldown permitting.
        let worth_refresh = match kid {
            Some(kid) => !self.kid_in(kid, &issuers),
            None => true,
        };
        if worth_refresh {
            let enough = || kid.is_some_and(|kid| self.kid_in(kid, &self.keys.issuer_keys()));
            // Look again whatever the asks answered: keys that another request's refresh or a
            // startup fetch published meanwhile count as well.
            self.keys.refresh(&enough).await;
            if let Some(claims) = self.verify_with(token, kid, &self.keys.issuer_keys()) {
                return Ok(claims);
            }
        }
        Err(match kid {
            Some(kid) if !self.kid_in(kid, &self.keys.issuer_keys()) => {
                format!("no key with kid {kid:?}")
            }
            _ => "signature verification failed".to_string(),
        })
    }

    /// Verify and check claims (no cache).
    pub async fn verify_claims(&self, token: &str) -> Result<(Claims, Option<f64>), String> {
        let raw = self.verify_uncached(token).await?;
        let exp = check_claims(&raw, &self.options, now_epoch())?;
        Ok((claims_of(&raw), exp))
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Claims, String>> {
        Box::pin(async move {
            let hash = self.cache.enabled().then(|| token_hash(token));
            if let Some(hash) = &hash {
                if let Some(claims) = self.cache.get(hash) {
                    return Ok(claims.as_ref().clone());
                }
            }
            let (claims, exp) = self.verify_claims(token).await?;
            if let Some(hash) = hash {
                if !self.options.bypass_signature {
                    self.cache.insert(hash, Arc::new(claims.clone()), exp);
                }
            }
            Ok(claims)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> VerifyOptions {
        VerifyOptions {
            service_name: "gitlab-ai-gateway".into(),
            ..VerifyOptions::default()
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    /// Keys that an issuer publishes after the first look at them, as when its startup fetch
    /// finishes while a token is being checked; its refresh asks fetch nothing (cooldown).
    struct PublishedLate {
        local: KeySet,
        keys: Arc<KeySet>,
        looks: std::sync::atomic::AtomicUsize,
    }

    impl KeySource for PublishedLate {
        fn local(&self) -> &KeySet {
            &self.local
        }
        fn issuer_keys(&self) -> Vec<Arc<KeySet>> {
            let first = self.looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            if first {
                Vec::new()
            } else {
                vec![Arc::clone(&self.keys)]
            }
        }
        fn refresh<'a>(
            &'a self,
            _enough: &'a (dyn Fn() -> bool + Send + Sync),
        ) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    #[tokio::test]
    async fn keys_published_during_the_check_are_tried() {
        let mut jwk: Value = serde_json::from_str(&fixture("issuer_a.pub.json")).unwrap();
        jwk["kid"] = json!("kid-a");
        let keys = KeySet::from_jwks(&json!({"keys": [jwk]})).unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("kid-a".into());
        let signing =
            jsonwebtoken::EncodingKey::from_rsa_pem(fixture("issuer_a.pem").as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&header, &json!({"sub": "1"}), &signing).unwrap();
        let source = PublishedLate {
            local: KeySet::default(),
            keys: Arc::new(keys),
            looks: Default::default(),
        };
        let verifier = JwtVerifier::new(Box::new(source), opts(), 0);
        let claims = verifier.verify_claims(&token).await.unwrap().0;
        assert_eq!(claims.subject.as_deref(), Some("1"));
    }

    /// A token signed with `key`, naming `kid` in its header.
    fn token_with_kid(key: &str, kid: &str) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        let signing = jsonwebtoken::EncodingKey::from_rsa_pem(fixture(key).as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &json!({"sub": "1"}), &signing).unwrap()
    }

    /// A JWKS entry's `kid` is optional (RFC 7517 4.5), and python-jose ignores `kid`: a token
    /// naming one verifies with a key published without one, or under another `kid`.
    #[tokio::test]
    async fn a_kid_that_no_key_carries_falls_back_to_every_key() {
        let unnamed: Value = serde_json::from_str(&fixture("issuer_a.pub.json")).unwrap();
        assert!(unnamed.get("kid").is_none());
        let mut renamed = unnamed.clone();
        renamed["kid"] = json!("kid-b");
        for jwk in [unnamed, renamed] {
            let keys = KeySet::from_jwks(&json!({"keys": [jwk]})).unwrap();
            let source = StaticKeys {
                local: KeySet::default(),
                issuers: vec![Arc::new(keys)],
            };
            let verifier = JwtVerifier::new(Box::new(source), opts(), 0);
            let token = token_with_kid("issuer_a.pem", "kid-a");
            let claims = verifier.verify_claims(&token).await.unwrap().0;
            assert_eq!(claims.subject.as_deref(), Some("1"));
            // A token no key verifies is still refused, and says which kid nobody holds.
            let forged = token_with_kid("issuer_b.pem", "kid-a");
            assert_eq!(
                verifier.verify_claims(&forged).await.map(|c| c.0.subject),
                Err("no key with kid \"kid-a\"".to_string())
            );
        }
    }

    #[test]
    fn claim_checks_follow_python_jose() {
        let now = 1_000_000.0;
        assert!(check_claims(&map(json!({})), &opts(), now).is_ok());
        assert!(check_claims(&map(json!({"exp": now - 1.0})), &opts(), now).is_err());
        assert!(check_claims(&map(json!({"exp": now})), &opts(), now).is_ok());
        assert!(check_claims(&map(json!({"nbf": now + 5.0})), &opts(), now).is_err());
        assert!(check_claims(&map(json!({"aud": "other"})), &opts(), now).is_err());
        assert!(check_claims(
            &map(json!({"aud": ["x", "gitlab-ai-gateway"]})),
            &opts(),
            now
        )
        .is_ok());
        assert!(check_claims(&map(json!({"sub": 5})), &opts(), now).is_err());
        // Present but of the wrong type: python-jose refuses these, and so do we.
        for (claims, error) in [
            (json!({"aud": null}), "Invalid claim format in token"),
            (
                json!({"aud": ["gitlab-ai-gateway", 5]}),
                "Invalid claim format in token",
            ),
            (json!({"sub": null}), "Subject must be a string."),
            (json!({"jti": 5}), "JWT ID must be a string."),
        ] {
            assert_eq!(
                check_claims(&map(claims.clone()), &opts(), now),
                Err(error.to_string()),
                "{claims}"
            );
        }
        assert!(check_claims(&map(json!({"jti": "j"})), &opts(), now).is_ok());
        assert!(check_claims(&map(json!({"iat": "x"})), &opts(), now).is_err());
        let strict = VerifyOptions {
            require_exp: true,
            require_aud: true,
            allowed_issuers: vec!["https://gitlab.com".into()],
            ..opts()
        };
        assert!(check_claims(&map(json!({"aud": "gitlab-ai-gateway"})), &strict, now).is_err());
        assert!(check_claims(
            &map(json!({"aud": "gitlab-ai-gateway", "exp": now + 1.0, "iss": "https://x"})),
            &strict,
            now
        )
        .is_err());
        assert!(check_claims(
            &map(
                json!({"aud": "gitlab-ai-gateway", "exp": now + 1.0, "iss": "https://gitlab.com"})
            ),
            &strict,
            now
        )
        .is_ok());
    }

    #[test]
    fn claims_are_read_as_the_original() {
        let c = claims_of(&map(json!({
            "gitlab_realm": "saas", "scopes": ["complete_code", 5], "sub": "1",
            "iss": "gitlab-ai-gateway", "duo_seat_count": 33, "gitlab_instance_id": "i",
            "exp": 10
        })));
        assert_eq!(c.scopes, vec!["complete_code"]);
        assert_eq!(c.duo_seat_count.as_deref(), Some("33"));
        assert_eq!(c.expires_at, Some(10));
    }
}
