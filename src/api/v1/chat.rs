//! `POST /v1/chat/{chat_invokable}` (spec 3.5): one prompt, written by GitLab, sent to Anthropic
//! (or an OpenAI-compatible model) and answered whole or streamed.
//!
//! In the original's order: the body is validated first (422, pydantic's objects; exactly one
//! prompt component), then the invokable must be known (404 `Not found`) and its unit primitive
//! held (403 `Unauthorized to access <up>`). A string `content` goes to Anthropic's legacy text
//! completions, a message list to the Messages API (`max_tokens_to_sample` becomes `max_tokens`,
//! capped at 4096); `provider: litellm` sends messages to the OpenAI-compatible model the payload
//! names (`model_endpoint`, `model_api_key`, `model_identifier`; a string becomes one user
//! message). Parameters apply only when `params` is sent. The answer is
//! `{"response", "metadata": {"provider", "model", "timestamp"}}` or raw text labelled
//! `text/event-stream`; a model failure is 502 `Anthropic API Status Error.` (the upstream
//! answered an error), 504 `Anthropic API Timeout Error.` or 502 `Anthropic API Connection
//! Error.`.

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use crate::api::json_body;
use crate::api::schema::chat::{parse_chat_request, ChatContent, ChatProvider, ChatRequest};
use crate::api::streaming;
use crate::auth::unit_primitives;
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::inference::{CallFailure, ModelCall};
use crate::models::registry::{CustomApi, CustomModel};
use crate::models::{mock, Message, ModelProvider, ModelRequest, Prompt};
use crate::state::AppState;

/// The invokables and the unit primitive each requires.
pub const CHAT_INVOKABLES: &[(&str, &str)] = &[
    ("explain_code", "duo_chat"),
    ("write_tests", "duo_chat"),
    ("refactor_code", "duo_chat"),
    ("explain_vulnerability", "explain_vulnerability"),
    ("summarize_comments", "summarize_comments"),
    ("troubleshoot_job", "troubleshoot_job"),
    // Deprecated in the original (see /v2/chat/agent), kept for compatibility.
    ("agent", "duo_chat"),
];

/// The Messages API's `max_tokens` cap.
const MAX_CHAT_TOKENS: i64 = 4096;
/// LiteLLM chat model defaults (spec 4.4).
const LITELLM_TEMPERATURE: f64 = 0.2;
const LITELLM_MAX_TOKENS: u32 = 2048;
const LITELLM_TOP_P: f64 = 0.95;

/// Register the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::route(
        "/v1/chat/{chat_invokable}",
        Method::POST,
        chat,
    ));
}

fn detail(status: StatusCode, message: &str) -> ApiError {
    ApiError::detail(status, message)
}

/// Which model family answers, and the normalised call.
struct Plan {
    chat_model: bool,
    request: ModelRequest,
}

fn messages_of(content: &ChatContent) -> Vec<Message> {
    match content {
        ChatContent::Text(text) => vec![Message::new("user", text.clone())],
        ChatContent::Messages(messages) => messages
            .iter()
            .map(|m| Message::new(m.role.as_str(), m.content.clone()))
            .collect(),
    }
}

/// The call the original makes for `request` (spec 3.5).
fn plan(request: &ChatRequest) -> Plan {
    let payload = &request.payload;
    let stream = request.stream;
    let litellm = payload.provider == Some(ChatProvider::Litellm);
    let (chat_model, prompt) = match (&payload.content, litellm) {
        (ChatContent::Text(text), false) => (
            false,
            Prompt::Text {
                prefix: text.clone(),
                suffix: Some(String::new()),
            },
        ),
        (content, _) => (true, Prompt::Chat(messages_of(content))),
    };
    let mut model_request = ModelRequest::new(prompt, stream);
    if let Some(params) = &payload.params {
        let mut extra = Map::new();
        extra.insert("stop_sequences".into(), json!(params.stop_sequences));
        extra.insert("temperature".into(), json!(params.temperature));
        let max_tokens = if chat_model {
            extra.insert("max_tokens".into(), json!(params.max_tokens_to_sample));
            params.max_tokens_to_sample.min(MAX_CHAT_TOKENS)
        } else {
            extra.insert(
                "max_tokens_to_sample".into(),
                json!(params.max_tokens_to_sample),
            );
            params.max_tokens_to_sample
        };
        model_request.params.max_tokens = u32::try_from(max_tokens).ok();
        model_request.params.temperature = Some(params.temperature);
        model_request.params.stop = params.stop_sequences.clone();
        model_request.extra = extra;
    }
    Plan {
        chat_model,
        request: model_request,
    }
}

/// The model that answers (the mock in mock mode), with fault injection when active.
///
/// Anthropic's legacy text completions or Messages API; `provider: litellm` is the
/// OpenAI-compatible chat model the payload names (`model_endpoint`, `model_api_key`,
/// `model_identifier` with the original's identifier rule), with LiteLLM's chat defaults
/// (temperature 0.2, `max_tokens` 2048, `top_p` 0.95) where the payload sets none. A litellm
/// model without an endpoint is a 422 naming what is missing (the original's LiteLLM call fails
/// with a 500).
fn provider_for(
    state: &AppState,
    request: &ChatRequest,
    plan: &mut Plan,
) -> Result<Arc<dyn ModelProvider>, ApiError> {
    if state.settings.mock_model_responses {
        let model = if plan.chat_model {
            mock::chat_model()
        } else {
            mock::text_model()
        };
        return Ok(state.provider(Arc::new(model)));
    }
    let payload = &request.payload;
    if payload.provider != Some(ChatProvider::Litellm) {
        let providers = &state.providers;
        let model = if plan.chat_model {
            providers.anthropic_chat(&payload.model)
        } else {
            providers.anthropic_text(&payload.model)
        };
        return Ok(state.provider(model));
    }
    let custom = CustomModel {
        provider: ChatProvider::Litellm.as_str().to_string(),
        name: payload.model.clone(),
        endpoint: payload.model_endpoint.clone(),
        api_key: payload.model_api_key.clone(),
        identifier: payload.model_identifier.clone(),
    };
    let model = state
        .providers
        .custom(&custom, CustomApi::Chat)
        .map_err(|e| {
            tracing::warn!(target: "api.chat", model = %payload.model, "litellm model refused: {}", e.message);
            detail(StatusCode::UNPROCESSABLE_ENTITY, &e.message)
        })?;
    let params = &mut plan.request.params;
    params.temperature.get_or_insert(LITELLM_TEMPERATURE);
    params.max_tokens.get_or_insert(LITELLM_MAX_TOKENS);
    params.top_p.get_or_insert(LITELLM_TOP_P);
    Ok(state.provider(model))
}

/// The original's answers to a failed Anthropic call.
fn failure_response(failure: &CallFailure, log: &RequestLog) -> ApiError {
    if let CallFailure::Quota(refusal) = failure {
        return crate::quota::refused(refusal, log);
    }
    log.set("model_exception_message", failure.describe());
    match failure {
        CallFailure::Model(e) if e.status().is_some() => {
            if let Some(status) = e.status() {
                log.set("model_exception_status_code", status);
            }
            detail(StatusCode::BAD_GATEWAY, "Anthropic API Status Error.")
        }
        CallFailure::Timeout(_) => {
            detail(StatusCode::GATEWAY_TIMEOUT, "Anthropic API Timeout Error.")
        }
        _ => detail(StatusCode::BAD_GATEWAY, "Anthropic API Connection Error."),
    }
}

async fn chat(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let invokable = path.into_inner();
    let value = json_body(&req, &body)?;
    let request = parse_chat_request(&value).map_err(ApiError::Validation)?;

    let Some((_, up)) = CHAT_INVOKABLES.iter().find(|(name, _)| *name == invokable) else {
        return Err(detail(StatusCode::NOT_FOUND, "Not found"));
    };
    let user =
        user_of(&req).ok_or_else(|| ApiError::Unauthorized("Forbidden by auth provider".into()))?;
    if !user.can(up, &[]) {
        return Err(ApiError::forbidden(format!("Unauthorized to access {up}")));
    }
    let category = unit_primitives::proxy_feature_category(up).unwrap_or("duo_chat");
    let log = RequestLog::of(&req);
    log.set("meta.unit_primitive", *up);
    log.set("meta.feature_category", category);
    log.set(
        "tracked_internal_events",
        Value::Array(vec![Value::String(format!("request_{up}"))]),
    );

    let payload = &request.payload;
    if (payload.model_endpoint.is_some() || payload.model_api_key.is_some())
        && !state.settings.custom_models.enabled
    {
        return Err(detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "specifying custom models endpoint is disabled",
        ));
    }
    let mut plan = plan(&request);
    let provider = provider_for(&state, &request, &mut plan)?;
    let meta = provider.metadata().clone();
    log.set("model_engine", meta.engine.as_str());
    log.set("model_name", meta.name.as_str());
    let call = ModelCall::start(&state, provider, plan.request, category)
        .await
        .map_err(|f| failure_response(&f, &log))?;
    if request.stream {
        return Ok(streaming::raw_text(
            HttpResponse::Ok(),
            streaming::client_events(&req, call, &log),
        ));
    }
    let answer = call
        .collect()
        .await
        .map_err(|f| failure_response(&f, &log))?;
    if let Some(usage) = &answer.usage {
        streaming::log_usage(&log, usage);
    }
    let provider_name = payload
        .provider
        .map(ChatProvider::as_str)
        .unwrap_or("anthropic");
    let body = json!({
        "response": answer.text(),
        "metadata": {
            "provider": provider_name,
            "model": payload.model,
            "timestamp": chrono::Utc::now().timestamp(),
        },
    });
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(serde_json::to_string(&body).unwrap_or_default()))
}
