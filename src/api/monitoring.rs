//! `GET /monitoring/healthz` and `GET /monitoring/ready`, unauthenticated, as the original.

use actix_web::http::Method;
use actix_web::{web, HttpResponse, ResponseError};

use crate::http::error::ApiError;
use crate::state::AppState;

/// Register the monitoring routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::route("/monitoring/healthz", Method::GET, healthz))
        .service(super::route("/monitoring/ready", Method::GET, ready));
}

/// Liveness: the process answers.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{}")
}

/// Readiness: the configured providers are reachable.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.readiness.check().await {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/json")
            .body("{}"),
        Err(why) => {
            tracing::warn!(target: "monitoring", "not ready: {why}");
            ApiError::inference_failed().error_response()
        }
    }
}
