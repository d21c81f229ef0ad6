//! `AIGW_AUTH__BYPASS_JWT_SIGNATURE=true`: tokens are decoded without checking their signature,
//! as the original does with python-jose's `verify_signature=False` (spec 2.2). The algorithm
//! must still be RS256 and the other claim checks still apply: `aud` must name the service when
//! present, `exp` and `nbf` are enforced when present, without leeway.
//!
//! For development and tests only: anyone can mint a token with any scopes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Claims, TokenVerifier};

/// Decodes tokens without verifying their signature.
pub struct UnverifiedSignature {
    service_name: String,
}

impl UnverifiedSignature {
    /// A verifier for tokens whose audience, when present, is `service_name`.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
        }
    }
}

fn segment(part: Option<&str>) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.ok_or("malformed token")?.trim_end_matches('='))
        .map_err(|e| format!("malformed token: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("malformed token: {e}"))
}

fn string_claim(payload: &Value, name: &str) -> Option<String> {
    match payload.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The claims of `token`, checked as the module docs say.
pub fn decode(token: &str, service_name: &str, now: i64) -> Result<Claims, String> {
    let mut parts = token.split('.');
    let header = segment(parts.next())?;
    let payload = segment(parts.next())?;
    if parts.next().is_none() {
        return Err("malformed token: no signature segment".into());
    }
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("The specified alg value is not allowed".into());
    }
    match payload.get("aud") {
        None => {}
        Some(Value::String(aud)) if aud == service_name => {}
        Some(Value::Array(auds)) if auds.iter().any(|a| a.as_str() == Some(service_name)) => {}
        Some(_) => return Err("Invalid audience".into()),
    }
    let time = |name: &str| {
        payload
            .get(name)
            .map(|v| v.as_i64().ok_or(name.to_string()))
    };
    if let Some(exp) = time("exp") {
        if exp.map_err(|c| format!("{c} must be an integer"))? <= now {
            return Err("Signature has expired.".into());
        }
    }
    if let Some(nbf) = time("nbf") {
        if nbf.map_err(|c| format!("{c} must be an integer"))? > now {
            return Err("The token is not yet valid (nbf)".into());
        }
    }
    let scopes = match payload.get("scopes") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Claims {
        gitlab_realm: string_claim(&payload, "gitlab_realm"),
        scopes,
        subject: string_claim(&payload, "sub"),
        issuer: string_claim(&payload, "iss"),
        duo_seat_count: string_claim(&payload, "duo_seat_count"),
        gitlab_instance_id: string_claim(&payload, "gitlab_instance_id"),
        expires_at: payload.get("exp").and_then(Value::as_i64),
    })
}

impl TokenVerifier for UnverifiedSignature {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Claims, String>> {
        Box::pin(async move { decode(token, &self.service_name, chrono::Utc::now().timestamp()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(header: Value, payload: Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        )
    }

    #[test]
    fn claims_are_read_without_the_signature() {
        let t = token(
            json!({"alg": "RS256"}),
            json!({"scopes": ["duo_chat"], "aud": "gitlab-ai-gateway", "exp": 2000, "iss": "gitlab"}),
        );
        let c = decode(&t, "gitlab-ai-gateway", 1000).unwrap();
        assert_eq!(c.scopes, vec!["duo_chat".to_string()]);
        assert_eq!(c.issuer.as_deref(), Some("gitlab"));
    }

    #[test]
    fn algorithm_audience_and_times_are_checked() {
        let hs = token(json!({"alg": "HS256"}), json!({}));
        assert!(decode(&hs, "svc", 0).is_err());
        let aud = token(json!({"alg": "RS256"}), json!({"aud": "other"}));
        assert!(decode(&aud, "svc", 0).is_err());
        let exp = token(json!({"alg": "RS256"}), json!({"exp": 10}));
        assert!(decode(&exp, "svc", 10).is_err());
        let nbf = token(json!({"alg": "RS256"}), json!({"nbf": 11}));
        assert!(decode(&nbf, "svc", 10).is_err());
        assert!(decode("garbage", "svc", 0).is_err());
    }
}
