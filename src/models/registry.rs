//! The provider registry: one pooled HTTP client per upstream, built once at startup, and the
//! model instances the endpoints ask for.
//!
//! Upstreams: Anthropic (`ANTHROPIC_BASE_URL`, `ANTHROPIC_API_KEY`), Vertex AI
//! (`AIGW_VERTEX_TEXT_MODEL__*` with Google credentials), Claude on Vertex
//! (`AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT`, `AIGW_VERTEX_ANTHROPIC__ENDPOINT`, the same
//! credentials), Fireworks
//! (`AIGW_MODEL_ENDPOINTS__FIREWORKS_REGIONAL_ENDPOINTS`, `AIGW_MODEL_KEYS__FIREWORKS_API_KEY`),
//! Mistral (`AIGW_MODEL_KEYS__MISTRAL_API_KEY`), and self-hosted OpenAI-compatible servers named
//! per request (`model_endpoint`, allowed only with `AIGW_CUSTOM_MODELS__ENABLED`). A model
//! instance is a cheap value pointing at its upstream's client, so asking for one per request
//! costs an allocation, not a connection.

use std::sync::Arc;

use super::anthropic::{self, AnthropicClient, AnthropicModel};
use super::google_auth::GoogleAuth;
use super::http_client::Upstream;
use super::openai_compat::{self, OpenAiCompatModel};
use super::vertex::{VertexClient, VertexModel};
use super::vertex_anthropic::{VertexAnthropicClient, VertexAnthropicModel};
use super::{ModelError, ModelErrorKind, ModelMetadata, ModelProvider};
use crate::config::Settings;

/// Mistral's API (Codestral).
pub const MISTRAL_BASE_URL: &str = "https://codestral.mistral.ai/v1";
/// The model Fireworks serves code completions with.
pub const FIREWORKS_MODEL: &str = "qwen2p5-coder-7b";

/// Which API an OpenAI-compatible model is called through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomApi {
    /// Text completions.
    Text,
    /// Chat completions.
    Chat,
}

/// A LiteLLM-style model as a request names it.
#[derive(Debug, Clone, Default)]
pub struct CustomModel {
    /// `litellm` or `codestral`.
    pub provider: String,
    /// `model_name`.
    pub name: String,
    /// `model_endpoint`.
    pub endpoint: Option<String>,
    /// `model_api_key`.
    pub api_key: Option<String>,
    /// `model_identifier`.
    pub identifier: Option<String>,
}

/// Every upstream client.
#[derive(Debug)]
pub struct Providers {
    anthropic: Arc<AnthropicClient>,
    vertex: Arc<VertexClient>,
    vertex_anthropic: Arc<VertexAnthropicClient>,
    custom: Arc<Upstream>,
    fireworks: Arc<Upstream>,
    mistral: Arc<Upstream>,
    settings: Arc<Settings>,
    google: Arc<GoogleAuth>,
}

fn refused(message: impl Into<String>) -> ModelError {
    ModelError::new(ModelErrorKind::Refused, message)
}

impl Providers {
    /// Build every client. Fails (naming the setting) on unusable credentials.
    pub fn from_settings(settings: &Arc<Settings>) -> Result<Self, String> {
        let models = &settings.models;
        let ext = &settings.external;
        let anthropic = AnthropicClient::new(
            Upstream::new("anthropic", models)?,
            &ext.anthropic_base_url,
            ext.anthropic_api_key.clone(),
        );
        let auth_upstream = Upstream::new("google-auth", models)?;
        let auth = match &ext.google_application_credentials {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("GOOGLE_APPLICATION_CREDENTIALS: cannot read {path}: {e}")
                })?;
                GoogleAuth::from_key_file(&text, auth_upstream)
                    .map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS: {path}: {e}"))?
            }
            None => GoogleAuth::metadata_server(ext.gce_metadata_host.as_deref(), auth_upstream),
        };
        let auth = Arc::new(auth);
        let v = &settings.vertex_text_model;
        let vertex = VertexClient::new(
            Upstream::new("vertex-ai", models)?,
            Arc::clone(&auth),
            &v.endpoint,
            &v.project,
            &v.location,
        );
        let vertex_anthropic = VertexAnthropicClient::new(
            Upstream::new("vertex-ai", models)?,
            Arc::clone(&auth),
            Some(settings.vertex_anthropic.endpoint.as_str()),
            &settings.google_cloud_platform.project,
        );
        let keys = &settings.model_keys;
        Ok(Self {
            anthropic: Arc::new(anthropic),
            vertex: Arc::new(vertex),
            vertex_anthropic: Arc::new(vertex_anthropic),
            custom: Arc::new(Upstream::new("litellm", models)?),
            fireworks: Arc::new(
                Upstream::new("fireworks_ai", models)?
                    .with_secret(keys.fireworks_api_key.as_deref()),
            ),
            mistral: Arc::new(
                Upstream::new("codestral", models)?.with_secret(keys.mistral_api_key.as_deref()),
            ),
            settings: Arc::clone(settings),
            google: auth,
        })
    }

    /// The Google credentials Vertex calls use (shared with the Vertex proxy).
    pub fn google_auth(&self) -> Arc<GoogleAuth> {
        Arc::clone(&self.google)
    }

    /// An Anthropic model through the Messages API.
    pub fn anthropic_chat(&self, model: &str) -> Arc<dyn ModelProvider> {
        Arc::new(AnthropicModel::new(
            Arc::clone(&self.anthropic),
            anthropic::Api::Messages,
            model,
        ))
    }

    /// An Anthropic model through the legacy Text Completions API.
    pub fn anthropic_text(&self, model: &str) -> Arc<dyn ModelProvider> {
        Arc::new(AnthropicModel::new(
            Arc::clone(&self.anthropic),
            anthropic::Api::Legacy,
            model,
        ))
    }

    /// A Vertex AI model.
    pub fn vertex(&self, model: &str) -> Arc<dyn ModelProvider> {
        Arc::new(VertexModel::new(Arc::clone(&self.vertex), model))
    }

    /// A Claude model on Vertex AI in `location` (`None`: `AIGW_GOOGLE_CLOUD_PLATFORM__LOCATION`).
    pub fn vertex_anthropic(&self, model: &str, location: Option<&str>) -> Arc<dyn ModelProvider> {
        let location = location
            .filter(|l| !l.is_empty())
            .unwrap_or(self.settings.google_cloud_platform.location.as_str());
        Arc::new(VertexAnthropicModel::new(
            Arc::clone(&self.vertex_anthropic),
            model,
            location,
        ))
    }

    /// A self-hosted (`litellm`) or Mistral (`codestral`) model.
    pub fn custom(
        &self,
        model: &CustomModel,
        api: CustomApi,
    ) -> Result<Arc<dyn ModelProvider>, ModelError> {
        let custom = &self.settings.custom_models;
        let overrides = model.endpoint.is_some() || model.api_key.is_some();
        if overrides && !custom.enabled {
            return Err(refused("specifying custom models endpoint is disabled"));
        }
        let metadata = ModelMetadata::new(model.provider.clone(), model.name.clone());
        let upstream_model =
            openai_compat::upstream_model(&model.name, model.identifier.as_deref());
        let endpoint = model.endpoint.as_deref().filter(|e| !e.is_empty());
        let built = if model.provider == "codestral" {
            let base = endpoint.unwrap_or(MISTRAL_BASE_URL);
            let oa_api = match api {
                CustomApi::Text => openai_compat::Api::Fim,
                CustomApi::Chat => openai_compat::Api::Chat,
            };
            let key = model
                .api_key
                .clone()
                .or_else(|| self.settings.model_keys.mistral_api_key.clone());
            OpenAiCompatModel::new(
                Arc::clone(&self.mistral),
                metadata,
                base,
                oa_api,
                &upstream_model,
            )
            .with_api_key(key)
        } else {
            let base = endpoint.ok_or_else(|| {
                refused(format!(
                    "model {} needs a model_endpoint (the OpenAI-compatible server's base URL)",
                    model.name
                ))
            })?;
            let oa_api = match api {
                CustomApi::Text => openai_compat::Api::Text,
                CustomApi::Chat => openai_compat::Api::Chat,
            };
            OpenAiCompatModel::new(
                Arc::clone(&self.custom),
                metadata,
                base,
                oa_api,
                &upstream_model,
            )
            .with_api_key(Some(
                model
                    .api_key
                    .clone()
                    .unwrap_or_else(|| "stubbed-api-key".into()),
            ))
        };
        let mut built = match api {
            CustomApi::Text => {
                built.with_default_stop(openai_compat::model_stop_tokens(&model.name))
            }
            CustomApi::Chat if model.name == "mistral" => built.with_default_stop(&["</new_code>"]),
            CustomApi::Chat => built,
        };
        if custom.disable_streaming {
            built = built.whole_only();
        }
        Ok(Arc::new(built))
    }

    /// Fireworks' code-completion model in the region of `AIGW_GOOGLE_CLOUD_PLATFORM__LOCATION`,
    /// with `x-session-affinity` set to the user when known.
    pub fn fireworks(&self, user: Option<&str>) -> Result<Arc<dyn ModelProvider>, ModelError> {
        let key = self
            .settings
            .model_keys
            .fireworks_api_key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| refused("Fireworks API key is missing from configuration."))?;
        let regions = &self.settings.model_endpoints.fireworks_regional_endpoints;
        let location = &self.settings.google_cloud_platform.location;
        let region = regions
            .iter()
            .find(|(name, _)| location.starts_with(name.as_str()))
            .or_else(|| regions.iter().find(|(name, _)| name.as_str() == "us"))
            .map(|(_, r)| r)
            .ok_or_else(|| refused("no Fireworks regional endpoint is configured"))?;
        let mut model = OpenAiCompatModel::new(
            Arc::clone(&self.fireworks),
            ModelMetadata::new("fireworks_ai", FIREWORKS_MODEL),
            &region.endpoint,
            openai_compat::Api::Text,
            &region.identifier,
        )
        .with_api_key(Some(key))
        .with_default_stop(openai_compat::model_stop_tokens(FIREWORKS_MODEL));
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            model = model.with_header("x-session-affinity", user);
        }
        Ok(Arc::new(model))
    }
}
