//! The model behind a registry prompt: the definition's own, or the caller's `model_metadata`
//! override, and the model call a rendered prompt becomes. Shared by every endpoint that runs
//! registry prompts (`/v1/prompts`, `/v2/chat/agent`, `/v2/code/generations` with `prompt_id`).

use std::sync::Arc;

use actix_web::http::StatusCode;
use serde_json::Value;

use crate::api::schema::{Errors, Loc, Str};
use crate::http::error::ApiError;
use crate::models::registry::{CustomApi, CustomModel};
use crate::models::{mock, ModelProvider, ModelRequest, Prompt};
use crate::prompts::definition::ModelClass;
use crate::prompts::Entry;
use crate::state::AppState;

/// `model_metadata`: a model other than the definition's (self-hosted models).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    /// The model name; also the prompt type looked up.
    pub name: String,
    /// The provider (`litellm`, ...).
    pub provider: String,
    /// The model's base URL.
    pub endpoint: Option<String>,
    /// Its API key.
    pub api_key: Option<String>,
    /// The model identifier at the endpoint.
    pub identifier: Option<String>,
}

pub(crate) fn parse_model_metadata(
    errors: &mut Errors,
    v: &Value,
    loc: &Loc<'_>,
) -> Option<ModelMetadata> {
    let fields = errors.model(v, loc)?;
    let name = errors.required(fields, "name", loc, |e, v, l| e.string(v, l, Str::max(255)));
    let provider = errors.required(fields, "provider", loc, |e, v, l| {
        e.string(v, l, Str::max(255))
    });
    let endpoint = errors.optional(fields, "endpoint", loc, None, |e, v, l| {
        e.string(v, l, Str::max(255))
    });
    let api_key = errors.optional(fields, "api_key", loc, None, |e, v, l| {
        e.string(v, l, Str::max(2000))
    });
    let identifier = errors.optional(fields, "identifier", loc, None, |e, v, l| {
        e.string(v, l, Str::max(255))
    });
    Some(ModelMetadata {
        name: name?,
        provider: provider?,
        endpoint: endpoint?,
        api_key: api_key?,
        identifier: identifier?,
    })
}

/// The model that answers `entry` (the mock in mock mode), with fault injection when active.
///
/// - A `model_metadata` override is an OpenAI-compatible model (LiteLLM in the original) at its
///   `endpoint` (one trailing `/` stripped, as the original does), with the original's
///   `identifier` rule (`provider/model` sends `model`; no slash sends the identifier), whatever
///   the definition's own model class. An override without an endpoint is a 422 naming it
///   (the original's LiteLLM call fails with a 500).
/// - `anthropic`-class prompts go to Anthropic's Messages API.
/// - `litellm`-class prompts with `custom_llm_provider: vertex_ai` are Claude on Vertex in the
///   prompt's `vertex_location`.
/// - Other `litellm`-class prompts name no endpoint of their own, so they can only be answered
///   through a `model_metadata` override; without one they are a 503 `Inference failed` with a
///   warning in the log (a server configuration problem, such as `AIGW_DEFAULT_PROMPTS` selecting
///   a self-hosted type).
///
/// Mock mode (`AIGW_MOCK_MODEL_RESPONSES`) answers every registry prompt with the chat mock,
/// `litellm`-class ones and overrides included. The original mocks only `anthropic`-class prompts
/// and still calls LiteLLM for the others, which fails on a laptop without Google credentials
/// (the `vertex` types) or reaches for a self-hosted server; mocking them keeps the development
/// default answering every prompt, as it already does for LiteLLM models in code suggestions.
pub(crate) fn provider_for(
    state: &AppState,
    entry: &Entry,
    metadata: Option<&ModelMetadata>,
) -> Result<Arc<dyn ModelProvider>, ApiError> {
    if state.settings.mock_model_responses {
        return Ok(state.provider(Arc::new(mock::chat_model())));
    }
    let model = &entry.definition.model;
    if let Some(meta) = metadata {
        let custom = CustomModel {
            provider: meta.provider.clone(),
            name: meta.name.clone(),
            endpoint: meta
                .endpoint
                .as_deref()
                .map(|e| e.strip_suffix('/').unwrap_or(e).to_string()),
            api_key: meta.api_key.clone(),
            identifier: meta.identifier.clone(),
        };
        return state
            .providers
            .custom(&custom, CustomApi::Chat)
            .map(|p| state.provider(p))
            .map_err(|e| {
                tracing::warn!(target: "api.prompts", model = %meta.name, "model override refused: {}", e.message);
                ApiError::detail(StatusCode::UNPROCESSABLE_ENTITY, e.message)
            });
    }
    match model.params.model_class_provider {
        ModelClass::Anthropic => Ok(state.provider(state.providers.anthropic_chat(&model.name))),
        ModelClass::Litellm if model.params.custom_llm_provider.as_deref() == Some("vertex_ai") => {
            let location = entry
                .definition
                .params
                .as_ref()
                .and_then(|p| p.vertex_location.as_deref());
            Ok(state.provider(state.providers.vertex_anthropic(&model.name, location)))
        }
        ModelClass::Litellm => {
            tracing::warn!(
                target: "api.prompts",
                model = %model.name,
                provider = ?model.params.custom_llm_provider,
                "a litellm-class prompt without model_metadata names no endpoint to call"
            );
            Err(ApiError::inference_failed())
        }
    }
}

/// The model call for a rendered prompt: the definition's sampling parameters and stops.
pub(crate) fn model_request(
    entry: &Entry,
    messages: Vec<crate::models::Message>,
    stream: bool,
) -> ModelRequest {
    let params = &entry.definition.model.params;
    let mut request = ModelRequest::new(Prompt::Chat(messages), stream);
    request.params.max_tokens = params.max_tokens;
    request.params.temperature = params.temperature;
    request.params.top_p = params.top_p;
    request.params.top_k = params.top_k;
    if let Some(stop) = entry
        .definition
        .params
        .as_ref()
        .and_then(|p| p.stop.clone())
    {
        request.params.stop = stop;
    }
    request
}
