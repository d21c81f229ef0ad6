//! The model behind a registry prompt: the definition's own, or the caller's `model_metadata`
//! override, and the model call a rendered prompt becomes. Shared by every endpoint that runs
//! registry prompts (`/v1/prompts`, `/v2/chat/agent`, `/v2/code/generations` with `prompt_id`).

use std::sync::Arc;

use serde_json::Value;

use crate::api::schema::{Errors, Loc, Str};
use crate::http::error::ApiError;
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
/// Anthropic-class prompts go to Anthropic's Messages API; `litellm`-class prompts and
/// `model_metadata` overrides (OpenAI-compatible models) are not served yet (503).
pub(crate) fn provider_for(
    state: &AppState,
    entry: &Entry,
    metadata: Option<&ModelMetadata>,
) -> Result<Arc<dyn ModelProvider>, ApiError> {
    if state.settings.mock_model_responses {
        return Ok(state.provider(Arc::new(mock::chat_model())));
    }
    let class = entry.definition.model.params.model_class_provider;
    if class == ModelClass::Anthropic && metadata.is_none() {
        return Ok(state.provider(state.providers.anthropic_chat(&entry.definition.model.name)));
    }
    tracing::warn!(
        target: "api.prompts",
        model = %metadata.map(|m| m.name.as_str()).unwrap_or(entry.definition.model.name.as_str()),
        class = ?class,
        "no provider is configured for this prompt's model"
    );
    Err(ApiError::inference_failed())
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
