//! Error responses in the original's shapes.
//!
//! | situation | status | body |
//! |---|---|---|
//! | authentication failed | 401 | `{"error": "<message>"}` |
//! | a handler refused the request | as raised | `{"detail": "<message>"}` |
//! | request validation | 422 | `{"detail": [{"type","loc","msg","input"}...]}` |
//! | in-handler validation of v2 code endpoints | 422 | `{"detail": "<python repr of errors>"}` |
//! | unexpected failure | 500 | `Internal Server Error` (plain text) |

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

/// Every error an endpoint returns.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 401 `{"error": message}`.
    Unauthorized(String),
    /// `{"detail": message}` with the given status.
    Detail(StatusCode, String),
    /// `{"detail": message}` with a status and extra headers (`Retry-After`, ...).
    DetailWithHeaders(StatusCode, String, Vec<(String, String)>),
    /// 422 `{"detail": [ ...pydantic error objects... ]}`.
    Validation(Vec<Value>),
    /// 500 plain text `Internal Server Error`.
    Internal(String),
}

impl ApiError {
    /// `{"detail": message}` with `status`.
    pub fn detail(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Detail(status, message.into())
    }

    /// 404 `{"detail": "Not Found"}`, FastAPI's answer for an unknown route.
    pub fn not_found() -> Self {
        Self::detail(StatusCode::NOT_FOUND, "Not Found")
    }

    /// 403 `{"detail": message}`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::detail(StatusCode::FORBIDDEN, message)
    }

    /// 503 `{"detail": "Inference failed"}`, the original's answer to a failed model call.
    pub fn inference_failed() -> Self {
        Self::detail(StatusCode::SERVICE_UNAVAILABLE, "Inference failed")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthorized(m) => write!(f, "401: {m}"),
            Self::Detail(s, m) | Self::DetailWithHeaders(s, m, _) => {
                write!(f, "{}: {m}", s.as_u16())
            }
            Self::Validation(errors) => write!(f, "422: {} validation errors", errors.len()),
            Self::Internal(m) => write!(f, "500: {m}"),
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(serde_json::to_string(body).unwrap_or_default())
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Detail(s, _) | Self::DetailWithHeaders(s, _, _) => *s,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unauthorized(m) => json_response(self.status_code(), &json!({ "error": m })),
            Self::Detail(s, m) => json_response(*s, &json!({ "detail": m })),
            Self::DetailWithHeaders(s, m, headers) => {
                let mut res = json_response(*s, &json!({ "detail": m }));
                for (k, v) in headers {
                    if let (Ok(name), Ok(value)) = (
                        header::HeaderName::try_from(k.as_str()),
                        HeaderValue::from_str(v),
                    ) {
                        res.headers_mut().insert(name, value);
                    }
                }
                res
            }
            Self::Validation(errors) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "detail": errors }),
            ),
            Self::Internal(_) => HttpResponse::InternalServerError()
                .insert_header((
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ))
                .body("Internal Server Error"),
        }
    }
}
