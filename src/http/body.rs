//! Reading request bodies with a size cap.
//!
//! The original has no body limit (uvicorn imposes none). A gateway facing the internet needs
//! one: bodies larger than `AIGW_HTTP__MAX_REQUEST_BODY_BYTES` are refused with a clean 413
//! `{"detail":"Request Entity Too Large"}`, checked against `Content-Length` before reading when
//! the client declares it, and while reading otherwise.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures::StreamExt;

use super::error::ApiError;
use crate::state::AppState;

/// The raw request body, at most the configured size.
#[derive(Debug, Clone)]
pub struct Body(pub Bytes);

fn too_large() -> ApiError {
    ApiError::detail(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
}

impl FromRequest for Body {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Body, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<actix_web::web::Data<AppState>>()
            .map(|s| s.settings.http.max_request_body_bytes)
            .unwrap_or(32 * 1024 * 1024);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(too_large());
            }
            let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::detail(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid request body: {e}"),
                    )
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Body(body.freeze()))
        })
    }
}
