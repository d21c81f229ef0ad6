//! The HTTP API: one module per API family and version.
//!
//! Every route of the original is POST except the two monitoring checks. A known path called
//! with another method answers 405 `{"detail":"Method Not Allowed"}` and an unknown path 404
//! `{"detail":"Not Found"}`, as FastAPI does (after authentication: see `http::edge`).

pub mod code;
pub mod monitoring;
pub mod prompt_model;
pub mod schema;
pub mod streaming;
pub mod v1;
pub mod v2;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::Value;

use crate::auth::authz::{self, Denied, Requirement};
use crate::http::access_log::RequestLog;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::state::AppState;

/// Register every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    monitoring::configure(cfg);
    code::configure(cfg);
    v1::configure(cfg);
    v2::configure(cfg);
}

/// Check the caller of `req` against an endpoint's `requirement`: 403 with the requirement's
/// text when the unit primitive is missing (or the token is the gateway's own where those are
/// refused).
pub(crate) fn authorize(
    req: &HttpRequest,
    state: &AppState,
    requirement: &Requirement,
) -> Result<(), ApiError> {
    let user = user_of(req);
    authz::check(
        user.as_deref(),
        requirement,
        &state.settings.external.service_name,
    )
    .map_err(|denied| match denied {
        Denied::Unauthenticated => ApiError::Unauthorized("Forbidden by auth provider".into()),
        Denied::Forbidden(detail) => ApiError::forbidden(detail),
    })
}

/// Record in the access log what a request is for: its unit primitive, its feature category and
/// the internal event the original tracks for it (`request_<unit primitive>`).
pub(crate) fn record_purpose(
    log: &RequestLog,
    unit_primitive: &'static str,
    category: &'static str,
) {
    log.set("meta.unit_primitive", unit_primitive);
    log.set("meta.feature_category", category);
    log.set(
        "tracked_internal_events",
        Value::Array(vec![Value::String(format!("request_{unit_primitive}"))]),
    );
}

/// A resource that answers `method` at `path` with `handler` and 405 to other methods.
pub fn route<F, Args>(
    path: &str,
    method: actix_web::http::Method,
    handler: F,
) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::method(method).to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").error_response()
}

/// The answer to an unknown route.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found().error_response()
}

/// Record `gateway_overhead_seconds` for a request whose model call has started: the time since
/// it arrived less `waited`, the time spent waiting on the model. Returns the overhead.
pub(crate) fn record_overhead(
    req: &actix_web::HttpRequest,
    waited: std::time::Duration,
) -> Option<std::time::Duration> {
    let arrived = crate::http::edge::arrival_of(req)?;
    let overhead = arrived.elapsed().saturating_sub(waited);
    crate::telemetry::histogram("gateway_overhead_seconds", &[]).record(overhead.as_secs_f64());
    Some(overhead)
}

/// The request body as JSON, read as the original reads it: the content type decides, an
/// unparsable body is the original's 400, anything else invalid its 422.
pub(crate) fn json_body(
    req: &actix_web::HttpRequest,
    body: &crate::http::body::Body,
) -> Result<serde_json::Value, ApiError> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    schema::read_body_with_content_type(&body.0, content_type).map_err(|e| match e {
        schema::BodyError::Invalid(errors) => ApiError::Validation(errors),
        schema::BodyError::Unparsable => ApiError::detail(
            StatusCode::BAD_REQUEST,
            schema::BodyError::UNPARSABLE_DETAIL,
        ),
    })
}
