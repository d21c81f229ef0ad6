//! Self-signed user tokens: what `POST /v1/code/user_access_token` hands an IDE.
//!
//! As the original's token authority: RS256 with `AIGW_SELF_SIGNED_JWT__SIGNING_KEY`, no `kid`
//! in the header (the verifier tries every key for such tokens), `iss` = `aud` = the service
//! name, `sub` = the global user id, one hour of life, `scopes: ["complete_code"]`, and
//! `duo_seat_count` copied from the caller's token when it is not blank. The verifier accepts
//! tokens signed with either the signing or the validation key, so rotating the signing key
//! (old key moved to `__VALIDATION_KEY`) keeps issued tokens valid until they expire.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// Lifetime of a user token, seconds.
pub const LIFETIME_S: i64 = 3600;

/// What a user token says about its user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserTokenRequest {
    /// `X-Gitlab-Global-User-Id`.
    pub global_user_id: String,
    /// `X-Gitlab-Instance-Id`.
    pub instance_id: String,
    /// `X-Gitlab-Realm`.
    pub realm: String,
    /// The caller's `duo_seat_count` claim.
    pub duo_seat_count: Option<String>,
}

/// Issues user tokens.
#[derive(Clone)]
pub struct TokenAuthority {
    service_name: String,
    key: Option<EncodingKey>,
}

impl TokenAuthority {
    /// An authority signing with `key` (`None`: every issue fails, as the original without a key).
    pub fn new(service_name: impl Into<String>, key: Option<EncodingKey>) -> Self {
        Self {
            service_name: service_name.into(),
            key,
        }
    }

    /// The claims of a new token issued at `now` (seconds since the epoch).
    pub fn claims(&self, req: &UserTokenRequest, now: i64) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.service_name));
        claims.insert("sub".into(), json!(req.global_user_id));
        claims.insert("aud".into(), json!(self.service_name));
        claims.insert("exp".into(), json!(now + LIFETIME_S));
        claims.insert("nbf".into(), json!(now));
        claims.insert("iat".into(), json!(now));
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        claims.insert("gitlab_realm".into(), json!(req.realm));
        claims.insert("gitlab_instance_id".into(), json!(req.instance_id));
        claims.insert("scopes".into(), json!(["complete_code"]));
        if let Some(seats) = req
            .duo_seat_count
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            claims.insert("duo_seat_count".into(), json!(seats));
        }
        claims
    }

    /// Sign a token; `(token, exp)`.
    pub fn issue(&self, req: &UserTokenRequest) -> Result<(String, i64), String> {
        let key = self.key.as_ref().ok_or("no signing key configured")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs() as i64;
        let claims = self.claims(req, now);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok((token, now + LIFETIME_S))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_match_the_original() {
        let authority = TokenAuthority::new("gitlab-ai-gateway", None);
        let req = UserTokenRequest {
            global_user_id: "777".into(),
            instance_id: "1234".into(),
            realm: "saas".into(),
            duo_seat_count: Some(" ".into()),
        };
        let c = authority.claims(&req, 100);
        assert_eq!(c["iss"], "gitlab-ai-gateway");
        assert_eq!(c["aud"], "gitlab-ai-gateway");
        assert_eq!(c["sub"], "777");
        assert_eq!(c["exp"], 3700);
        assert_eq!(c["nbf"], 100);
        assert_eq!(c["scopes"], json!(["complete_code"]));
        assert!(
            !c.contains_key("duo_seat_count"),
            "blank seat count left out"
        );
        assert!(authority.issue(&req).is_err(), "no key, no token");
    }
}
