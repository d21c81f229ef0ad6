//! Authorization by unit primitive: the endpoint table of the original (spec 2.6).
//!
//! Each endpoint needs one unit primitive among the token's `scopes`, and some refuse the
//! gateway's own user tokens outright (`iss` = the service name): the IDE's direct connection is
//! meant for code completions only. A refusal is a 403 with the endpoint's own `detail`. Debug
//! users (authentication bypassed) pass every check. The check runs after body validation, as
//! FastAPI does (a bad body on an unauthorized scope is a 422).

use super::user::User;

/// What an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The unit primitive that must be among the token's scopes.
    pub unit_primitive: &'static str,
    /// Whether the gateway's own (self-signed) tokens are refused.
    pub self_signed_refused: bool,
    /// The 403 `detail`.
    pub forbidden: &'static str,
}

/// `/v2/code/completions` and `/v2/completions`: the one place self-signed tokens are accepted.
pub const CODE_COMPLETIONS: Requirement = Requirement {
    unit_primitive: "complete_code",
    self_signed_refused: false,
    forbidden: "Unauthorized to access code completions",
};

/// `/v2/code/generations`.
pub const CODE_GENERATIONS: Requirement = Requirement {
    unit_primitive: "generate_code",
    self_signed_refused: true,
    forbidden: "Unauthorized to access code generations",
};

/// `/v3/code/completions` and `/v4/code/suggestions` (completion and generation alike).
pub const CODE_SUGGESTIONS: Requirement = Requirement {
    unit_primitive: "complete_code",
    self_signed_refused: true,
    forbidden: "Unauthorized to access code suggestions",
};

/// `/v1/code/user_access_token`.
pub const USER_ACCESS_TOKEN: Requirement = Requirement {
    unit_primitive: "complete_code",
    self_signed_refused: true,
    forbidden: "Unauthorized to create user access token for code suggestions",
};

/// `/v1/x-ray/libraries`.
pub const X_RAY: Requirement = Requirement {
    unit_primitive: "generate_code",
    self_signed_refused: true,
    forbidden: "Unauthorized to access X Ray",
};

/// `/v1/search/gitlab-docs`.
pub const DOCS_SEARCH: Requirement = Requirement {
    unit_primitive: "documentation_search",
    self_signed_refused: false,
    forbidden: "Unauthorized to search documentations",
};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No authenticated user on the request (cannot happen behind the edge middleware).
    Unauthenticated,
    /// 403 with this detail.
    Forbidden(String),
}

/// Check `requirement` for `user`; `service_name` is the issuer of self-signed tokens.
pub fn check(
    user: Option<&User>,
    requirement: &Requirement,
    service_name: &str,
) -> Result<(), Denied> {
    let Some(user) = user else {
        return Err(Denied::Unauthenticated);
    };
    if allows(
        user,
        requirement.unit_primitive,
        requirement.self_signed_refused,
        service_name,
    ) {
        Ok(())
    } else {
        Err(Denied::Forbidden(requirement.forbidden.to_string()))
    }
}

/// Whether `user` may use one unit primitive (for endpoints whose detail depends on the
/// request, such as the proxies' `Unauthorized to access <up>`).
pub fn allows(
    user: &User,
    unit_primitive: &str,
    self_signed_refused: bool,
    service_name: &str,
) -> bool {
    let disallowed: &[&str] = if self_signed_refused {
        &[service_name]
    } else {
        &[]
    };
    user.can(unit_primitive, disallowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Claims;

    fn user(iss: &str, scopes: &[&str]) -> User {
        User::authenticated(
            Claims {
                issuer: Some(iss.into()),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..Claims::default()
            },
            None,
        )
    }

    #[test]
    fn self_signed_tokens_only_where_allowed() {
        let own = user("gitlab-ai-gateway", &["complete_code"]);
        assert_eq!(
            check(Some(&own), &CODE_COMPLETIONS, "gitlab-ai-gateway"),
            Ok(())
        );
        assert_eq!(
            check(Some(&own), &CODE_SUGGESTIONS, "gitlab-ai-gateway"),
            Err(Denied::Forbidden(
                "Unauthorized to access code suggestions".into()
            ))
        );
        let instance = user("https://gitlab.com", &["complete_code"]);
        assert!(check(Some(&instance), &CODE_SUGGESTIONS, "gitlab-ai-gateway").is_ok());
        assert!(check(Some(&instance), &CODE_GENERATIONS, "gitlab-ai-gateway").is_err());
        assert_eq!(
            check(None, &CODE_GENERATIONS, "gitlab-ai-gateway"),
            Err(Denied::Unauthenticated)
        );
        assert!(check(Some(&User::debug(None)), &X_RAY, "gitlab-ai-gateway").is_ok());
    }
}
