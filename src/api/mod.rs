//! The HTTP API: one module per API family and version.
//!
//! Every route of the original is POST except the two monitoring checks. A known path called
//! with another method answers 405 `{"detail":"Method Not Allowed"}` and an unknown path 404
//! `{"detail":"Not Found"}`, as FastAPI does (after authentication: see `http::edge`).

pub mod code;
pub mod monitoring;
pub mod schema;
pub mod streaming;
pub mod v1;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};

use crate::http::error::ApiError;

/// Register every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    monitoring::configure(cfg);
    code::configure(cfg);
    v1::configure(cfg);
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
