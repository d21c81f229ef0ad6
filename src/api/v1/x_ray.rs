//! `POST /v1/x-ray/libraries` (spec 3.10, deprecated in the original but still called by
//! GitLab's Repository X-Ray): the libraries a package file names, extracted by Claude.
//!
//! In the original's order: the body is validated (422, pydantic's objects; exactly one
//! `x_ray_package_file_prompt` component naming `anthropic` and `claude-2.1`), the caller must
//! hold `generate_code` with a token that is not the gateway's own (403 `Unauthorized to access
//! X Ray`), and the component's prompt goes to Anthropic's legacy text completions with
//! **`claude-2.0`** (the original's override of the requested model), `max_tokens_to_sample`
//! 2048, temperature 0.2. The answer is `{"response": "<text>"}`; a failed model call is the
//! original's 503 `Inference failed` (a quota refusal its 429), as for code suggestions.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::api::code::failure_response;
use crate::api::json_body;
use crate::api::schema::x_ray::parse_x_ray_request;
use crate::auth::authz::{self, Denied};
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::inference::ModelCall;
use crate::models::{mock, ModelProvider, ModelRequest, Prompt};
use crate::state::AppState;

/// The model the original calls, whatever the request names.
const MODEL: &str = "claude-2.0";

/// Register the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::route(
        "/v1/x-ray/libraries",
        Method::POST,
        libraries,
    ));
}

async fn libraries(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let value = json_body(&req, &body)?;
    let request = parse_x_ray_request(&value).map_err(ApiError::Validation)?;
    let user = user_of(&req);
    authz::check(
        user.as_deref(),
        &authz::X_RAY,
        &state.settings.external.service_name,
    )
    .map_err(|denied| match denied {
        Denied::Unauthenticated => ApiError::Unauthorized("Forbidden by auth provider".into()),
        Denied::Forbidden(detail) => ApiError::forbidden(detail),
    })?;
    let log = RequestLog::of(&req);
    log.set("meta.unit_primitive", authz::X_RAY.unit_primitive);
    log.set("meta.feature_category", "code_suggestions");
    log.set(
        "tracked_internal_events",
        Value::Array(vec![Value::String("request_generate_code".into())]),
    );

    let provider: std::sync::Arc<dyn ModelProvider> = if state.settings.mock_model_responses {
        std::sync::Arc::new(mock::text_model())
    } else {
        state.providers.anthropic_text(MODEL)
    };
    let provider = state.provider(provider);
    let mut model_request = ModelRequest::new(
        Prompt::Text {
            prefix: request.prompt,
            suffix: None,
        },
        false,
    );
    model_request.params.max_tokens = Some(2048);
    model_request.params.temperature = Some(0.2);
    log.set("model_engine", "anthropic");
    log.set("model_name", MODEL);

    let call = ModelCall::start(&state, provider, model_request, "code_suggestions").await;
    let answer = match call {
        Ok(call) => call.collect().await,
        Err(failure) => Err(failure),
    }
    .map_err(|failure| failure_response(&failure, &log))?;
    let text = answer.text();
    Ok(HttpResponse::Ok().json(json!({ "response": text })))
}
