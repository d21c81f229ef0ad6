//! Verification keys: an issuer's JWKS and the gateway's own key pair.
//!
//! A [`KeySet`] is what a `JwksActor` publishes and what the verifier tries a token against. Only
//! RSA signature keys are kept (the gateway accepts RS256 only); anything else in a JWKS (EC keys,
//! encryption keys) is skipped, not an error, so that an issuer adding another key type does not
//! break authentication.
//!
//! The gateway's own keys come from `AIGW_SELF_SIGNED_JWT__SIGNING_KEY` and `__VALIDATION_KEY`
//! (RSA private keys, PEM, PKCS#1 or PKCS#8): their public halves verify the user tokens the
//! gateway issued, with the original's `kid`s `<service>_signing_key` / `<service>_validation_key`.

use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::Value;

/// One key a token may be signed with.
#[derive(Clone)]
pub struct VerificationKey {
    /// `kid`, when the JWKS names it.
    pub kid: Option<String>,
    /// The public key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// The keys of one source (an issuer, or the gateway itself).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// The keys, in the order the source lists them.
    pub keys: Vec<VerificationKey>,
}

impl ai_gateway_actors::jwks::KeySet for KeySet {
    fn key_count(&self) -> usize {
        self.keys.len()
    }
}

impl KeySet {
    /// The RSA signature keys of a JWKS document (`{"keys": [...]}`).
    pub fn from_jwks(doc: &Value) -> Result<Self, String> {
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no \"keys\" array")?;
        let mut keys = Vec::new();
        for entry in entries {
            if entry.get("kty").and_then(Value::as_str) != Some("RSA") {
                continue;
            }
            if entry
                .get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            if entry
                .get("alg")
                .and_then(Value::as_str)
                .is_some_and(|a| a != "RS256")
            {
                continue;
            }
            let (Some(n), Some(e)) = (
                entry.get("n").and_then(Value::as_str),
                entry.get("e").and_then(Value::as_str),
            ) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_rsa_components(n, e) else {
                continue;
            };
            keys.push(VerificationKey {
                kid: entry.get("kid").and_then(Value::as_str).map(str::to_string),
                key,
            });
        }
        Ok(Self { keys })
    }

    /// Keys whose `kid` is `kid`.
    pub fn with_kid<'a>(&'a self, kid: &'a str) -> impl Iterator<Item = &'a VerificationKey> {
        self.keys
            .iter()
            .filter(move |k| k.kid.as_deref() == Some(kid))
    }

    /// Whether a key with `kid` is present.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.with_kid(kid).next().is_some()
    }
}

/// An RSA private key (PEM) and the public half that verifies its signatures.
#[derive(Clone)]
pub struct KeyPair {
    /// Signs.
    pub signing: EncodingKey,
    /// Verifies.
    pub verifying: DecodingKey,
}

impl KeyPair {
    /// Parse an RSA private key in PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    pub fn from_private_pem(pem: &str) -> Result<Self, String> {
        let signing = EncodingKey::from_rsa_pem(pem.trim().as_bytes())
            .map_err(|e| format!("not an RSA private key in PEM: {e}"))?;
        let pair = aws_lc_rs::signature::RsaKeyPair::from_der(signing.as_bytes())
            .map_err(|e| format!("invalid RSA private key: {e}"))?;
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
        let verifying = DecodingKey::from_rsa_der(public.as_ref());
        Ok(Self { signing, verifying })
    }
}

/// The gateway's own keys, from the self-signed JWT settings.
#[derive(Clone, Default)]
pub struct LocalKeys {
    /// Signs new user tokens (`AIGW_SELF_SIGNED_JWT__SIGNING_KEY`).
    pub signing: Option<EncodingKey>,
    /// Verifies tokens signed with either key.
    pub verification: KeySet,
    /// Why a configured key was refused, for the startup log.
    pub problems: Vec<String>,
}

impl LocalKeys {
    /// Load both keys; an empty setting is skipped, an invalid one is reported in `problems`.
    pub fn load(service_name: &str, signing_pem: &str, validation_pem: &str) -> Self {
        let mut keys = Self::default();
        for (which, pem) in [("signing", signing_pem), ("validation", validation_pem)] {
            if pem.trim().is_empty() {
                continue;
            }
            match KeyPair::from_private_pem(pem) {
                Ok(pair) => {
                    if which == "signing" {
                        keys.signing = Some(pair.signing.clone());
                    }
                    keys.verification.keys.push(VerificationKey {
                        kid: Some(format!("{service_name}_{which}_key")),
                        key: pair.verifying,
                    });
                }
                Err(e) => keys.problems.push(format!(
                    "AIGW_SELF_SIGNED_JWT__{}_KEY: {e}",
                    which.to_uppercase()
                )),
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jwks_keeps_rsa_signature_keys_only() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB", "use": "sig", "alg": "RS256"},
            {"kty": "RSA", "kid": "enc", "n": "AQAB", "e": "AQAB", "use": "enc"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "RSA", "kid": "ps", "n": "AQAB", "e": "AQAB", "alg": "PS256"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        ]});
        let set = KeySet::from_jwks(&doc).unwrap();
        assert_eq!(set.keys.len(), 2);
        assert!(set.has_kid("a"));
        assert!(!set.has_kid("enc"));
        assert!(KeySet::from_jwks(&json!({})).is_err());
    }

    #[test]
    fn local_keys_report_bad_pem() {
        let keys = LocalKeys::load("gitlab-ai-gateway", "not a key", "");
        assert!(keys.signing.is_none());
        assert!(keys.verification.keys.is_empty());
        assert_eq!(keys.problems.len(), 1);
    }
}
