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
use serde_json::json;

use crate::api::code::failure_response;
use crate::api::schema::x_ray::parse_x_ray_request;
use crate::api::{authorize, json_body, record_purpose};
use crate::auth::authz;
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
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
    authorize(&req, &state, &authz::X_RAY)?;
    let log = RequestLog::of(&req);
    record_purpose(&log, authz::X_RAY.unit_primitive, "code_suggestions");

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
    let meta = provider.metadata();
    log.set("model_engine", meta.engine.as_str());
    log.set("model_name", meta.name.as_str());

    let call = ModelCall::start(&state, provider, model_request, "code_suggestions")
        .await
        .map_err(|failure| failure_response(&failure, &log))?;
    let answer = call
        .collect()
        .await
        .map_err(|failure| failure_response(&failure, &log))?;
    let text = answer.text();
    Ok(HttpResponse::Ok().json(json!({ "response": text })))
}
