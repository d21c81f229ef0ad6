//! `POST /v1/code/user_access_token`: a short-lived token for an IDE's direct connection.
//!
//! Checks in the original's order: authorization (`complete_code`, the gateway's own tokens
//! refused: a user token cannot mint another) → 403; then the headers the token is made from,
//! each required and non-empty → 400 `Missing <header> header`; then signing → 500
//! `Failed to generate JWT` (no signing key configured, or a key that cannot sign). The request
//! body is ignored. The answer is `{"token": "<jwt>", "expires_at": <epoch seconds>}`.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::auth::authz::{self, Denied};
use crate::auth::token::UserTokenRequest;
use crate::http::access_log::RequestLog;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::state::AppState;

/// Register the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::route(
        "/v1/code/user_access_token",
        Method::POST,
        user_access_token,
    ));
}

fn required<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::detail(StatusCode::BAD_REQUEST, format!("Missing {name} header")))
}

async fn user_access_token(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = user_of(&req);
    authz::check(
        user.as_deref(),
        &authz::USER_ACCESS_TOKEN,
        state.auth.service_name(),
    )
    .map_err(|denied| match denied {
        Denied::Unauthenticated => ApiError::Unauthorized("Forbidden by auth provider".into()),
        Denied::Forbidden(detail) => ApiError::forbidden(detail),
    })?;
    RequestLog::of(&req).set("meta.unit_primitive", "complete_code");
    let request = UserTokenRequest {
        global_user_id: required(&req, "X-Gitlab-Global-User-Id")?.to_string(),
        instance_id: required(&req, "X-Gitlab-Instance-Id")?.to_string(),
        realm: required(&req, "X-Gitlab-Realm")?.to_string(),
        duo_seat_count: user
            .as_deref()
            .and_then(|u| u.claims.as_ref())
            .and_then(|c| c.duo_seat_count.clone()),
    };
    match state.auth.tokens().issue(&request) {
        Ok((token, expires_at)) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json!({"token": token, "expires_at": expires_at}).to_string())),
        Err(e) => {
            tracing::error!(target: "auth", "user access token not issued: {e}");
            Err(ApiError::detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed to generate JWT",
            ))
        }
    }
}
