//! The authenticated caller and what it may do.

use serde::{Deserialize, Serialize};

/// The claims the gateway reads from a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `gitlab_realm` (`saas`, `self-managed`).
    pub gitlab_realm: Option<String>,
    /// `scopes`: the unit primitives the caller may use.
    pub scopes: Vec<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
    /// `duo_seat_count`, as a string.
    pub duo_seat_count: Option<String>,
    /// `gitlab_instance_id`.
    pub gitlab_instance_id: Option<String>,
    /// `exp`, seconds since the epoch, when present.
    pub expires_at: Option<i64>,
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// A debug user (authentication bypassed) may do everything.
    pub is_debug: bool,
    /// Claims of the verified token; `None` for debug users.
    pub claims: Option<Claims>,
    /// `X-Gitlab-Global-User-Id`.
    pub global_user_id: Option<String>,
}

impl User {
    /// A debug user.
    pub fn debug(global_user_id: Option<String>) -> Self {
        Self {
            is_debug: true,
            claims: None,
            global_user_id,
        }
    }

    /// A user authenticated by a token.
    pub fn authenticated(claims: Claims, global_user_id: Option<String>) -> Self {
        Self {
            is_debug: false,
            claims: Some(claims),
            global_user_id,
        }
    }

    /// Whether the user may use `unit_primitive`, refusing tokens from `disallowed_issuers`.
    pub fn can(&self, unit_primitive: &str, disallowed_issuers: &[&str]) -> bool {
        if self.is_debug {
            return true;
        }
        let Some(claims) = &self.claims else {
            return false;
        };
        if let Some(issuer) = claims.issuer.as_deref() {
            if disallowed_issuers.contains(&issuer) {
                return false;
            }
        }
        claims.scopes.iter().any(|s| s == unit_primitive)
    }

    /// The token's issuer, if any.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.as_ref().and_then(|c| c.issuer.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn can_checks_scopes_and_issuers() {
        let user = User::authenticated(
            Claims {
                scopes: vec!["complete_code".into()],
                issuer: Some("gitlab-ai-gateway".into()),
                ..Claims::default()
            },
            None,
        );
        assert!(user.can("complete_code", &[]));
        assert!(!user.can("generate_code", &[]));
        assert!(!user.can("complete_code", &["gitlab-ai-gateway"]));
        assert!(User::debug(None).can("anything", &["gitlab-ai-gateway"]));
    }
}
