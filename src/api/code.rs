//! Code Suggestions: `/v2/code/completions` (and the legacy `/v2/completions`),
//! `/v2/code/generations`, `/v3/code/completions` and `/v4/code/suggestions`.
//!
//! Each handler follows the original's order: parse and validate the body (422, with pydantic's
//! error objects), authorize the unit primitive (403), pick the model by `model_provider`
//! (spec 3.1–3.3), build the prompt (spec 5), run the call in a request actor, post-process a
//! whole answer (spec 5.5; streams are never post-processed), and answer in the endpoint's
//! shape: the v2 JSON, the v3/v4 JSON, raw text streams, or v4's SSE.
//!
//! A `/v2/code/generations` body or a v3/v4 generation component with `prompt_id` runs a
//! registry prompt instead (spec 3.2 rule 1, 3.3): the same planning, with the model resolved
//! from the prompt definition (or, on v2, the client's self-hosted model) by
//! `prompt_model::provider_for`, reported as engine `agent`.
//!
//! Where the original crashes with a 500 on a bad combination of fields (a `code_context` as the
//! first v3 component, an Anthropic completion without a message list), this gateway answers a
//! 422 that says what is wrong; `docs/compatibility.md` lists them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};

use super::prompt_model::{self, ModelMetadata};
use super::schema::code::{
    parse_code_completions, parse_code_generations, CodeSuggestionsRequest,
    ModelProvider as Provider, Prompt as ReqPrompt,
};
use super::schema::components::{parse_completion_request, PromptComponent};
use super::streaming;
use super::{authorize, json_body};
use crate::auth::authz;
use crate::code_suggestions::language::{file_extension, Language};
use crate::code_suggestions::language_server::supports_advanced_context;
use crate::code_suggestions::{post, prompt as builder, tokens};
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::inference::{CallFailure, ModelCall};
use crate::models::registry::{CustomApi, CustomModel};
use crate::models::{mock, Message, ModelProvider, ModelRequest, Prompt, Usage};
use crate::prompts::registry::AGENT_PROMPTS;
use crate::prompts::version::DEFAULT_CONSTRAINT;
use crate::prompts::ResolveError;
use crate::state::AppState;
use crate::telemetry;

/// Register the code-suggestion routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::route(
        "/v2/code/completions",
        Method::POST,
        v2_completions,
    ))
    .service(super::route(
        "/v2/completions",
        Method::POST,
        v2_completions,
    ))
    .service(super::route(
        "/v2/code/generations",
        Method::POST,
        v2_generations,
    ))
    .service(super::route(
        "/v3/code/completions",
        Method::POST,
        v3_completions,
    ))
    .service(super::route(
        "/v4/code/suggestions",
        Method::POST,
        v4_suggestions,
    ));
}

const FEATURE: &str = "code_suggestions";
/// code-gecko's input limit, tokens.
const GECKO_INPUT_LIMIT: usize = 2048;
/// code-bison's input limit, tokens.
const BISON_INPUT_LIMIT: usize = 4096;
/// Vertex returns at most this many candidates.
const MAX_CANDIDATES: i64 = 4;
/// Vertex candidates scored at or below this are discarded.
const MIN_SCORE: f64 = -10.0;

/// Which model serves a request, before credentials and endpoints are resolved.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// Vertex `code-gecko@002` legacy completions.
    VertexGecko,
    /// Vertex `code-bison@002` generations.
    VertexBison,
    /// Anthropic Messages API.
    AnthropicChat(String),
    /// Anthropic legacy text completions.
    AnthropicText(String),
    /// A registry prompt (`prompt_id`); the name is the prompt definition's, as the original's
    /// `AgentModel` reports it. Its model is resolved with the prompt ([`Plan::model`]).
    Agent(String),
    /// An OpenAI-compatible (LiteLLM-style) model.
    Custom {
        kind: CustomKind,
        provider: Provider,
        name: String,
        endpoint: Option<String>,
        api_key: Option<String>,
        identifier: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CustomKind {
    Text,
    Chat,
}

impl Target {
    /// The engine and model name as the original reports them for a real call.
    fn labels(&self) -> (&'static str, String) {
        match self {
            Target::VertexGecko => ("vertex-ai", "code-gecko@002".into()),
            Target::VertexBison => ("vertex-ai", "code-bison@002".into()),
            Target::AnthropicChat(m) | Target::AnthropicText(m) => ("anthropic", m.clone()),
            Target::Custom { provider, name, .. } => (provider.as_str(), name.clone()),
            Target::Agent(name) => ("agent", name.clone()),
        }
    }

    fn is_chat(&self) -> bool {
        matches!(
            self,
            Target::AnthropicChat(_)
                | Target::Agent(_)
                | Target::Custom {
                    kind: CustomKind::Chat,
                    ..
                }
        ) || matches!(self, Target::Custom { .. })
    }
}

/// The model that answers `target` (the mock in mock mode), with fault injection when active.
/// `user` is the global user id, for upstreams that pin a user's calls to one replica.
fn provider_for(
    state: &AppState,
    target: &Target,
    user: Option<&str>,
) -> Result<Arc<dyn ModelProvider>, ApiError> {
    let settings = &state.settings;
    if let Target::Custom {
        endpoint, api_key, ..
    } = target
    {
        if (endpoint.is_some() || api_key.is_some()) && !settings.custom_models.enabled {
            return Err(ApiError::detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "specifying custom models endpoint is disabled",
            ));
        }
    }
    if settings.mock_model_responses {
        let model: Arc<dyn ModelProvider> = if target.is_chat() {
            Arc::new(mock::chat_model())
        } else {
            Arc::new(mock::text_model())
        };
        return Ok(state.provider(model));
    }
    let providers = &state.providers;
    let model = match target {
        Target::Agent(name) => Err(crate::models::ModelError::new(
            crate::models::ModelErrorKind::Refused,
            format!("registry prompt {name} planned without its model"),
        )),
        Target::VertexGecko => Ok(providers.vertex("code-gecko@002")),
        Target::VertexBison => Ok(providers.vertex("code-bison@002")),
        Target::AnthropicChat(name) => Ok(providers.anthropic_chat(name)),
        Target::AnthropicText(name) => Ok(providers.anthropic_text(name)),
        Target::Custom {
            provider: Provider::FireworksAi,
            ..
        } => providers.fireworks(user),
        Target::Custom {
            kind,
            provider,
            name,
            endpoint,
            api_key,
            identifier,
        } => providers.custom(
            &CustomModel {
                provider: provider.as_str().to_string(),
                name: name.clone(),
                endpoint: endpoint.clone(),
                api_key: api_key.clone(),
                identifier: identifier.clone(),
            },
            match kind {
                CustomKind::Text => CustomApi::Text,
                CustomKind::Chat => CustomApi::Chat,
            },
        ),
    };
    match model {
        Ok(model) => Ok(state.provider(model)),
        Err(e) => {
            let (engine, name) = target.labels();
            tracing::warn!(target: "api.code", engine, model = %name, "model is not usable: {e}");
            Err(ApiError::inference_failed())
        }
    }
}

/// What to do with a whole answer's text.
#[derive(Debug, Clone)]
enum Post {
    /// Nothing (Anthropic and custom completions).
    None,
    /// The legacy Vertex completion chain; the client's content above the cursor.
    VertexCompletion(String),
    /// The generations chain; the client's content above the cursor.
    Generation(String),
    /// Anthropic generations: whitespace-only becomes empty.
    AnthropicGeneration,
}

/// A planned model call.
struct Plan {
    target: Target,
    request: ModelRequest,
    lang: &'static str,
    post: Post,
    tokens: Option<builder::PromptTokens>,
    experiments: Vec<Value>,
    /// The original answers an empty prefix to code-gecko with an empty result, without a call.
    skip_call: bool,
    /// Whether the client asked for a stream and the model path streams.
    stream: bool,
    /// The model, when it was resolved with the plan (registry prompts); else from `target`.
    model: Option<Arc<dyn ModelProvider>>,
}

fn validation(errors: Vec<Value>) -> ApiError {
    ApiError::Validation(errors)
}

/// The body as FastAPI reads it: JSON when the content type says so (or says nothing), the text
/// otherwise; malformed JSON is a 422, bytes that cannot be read at all a 400.
fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::detail(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// A request header's value, when it is text.
fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn record_language(file_name: &str, editor: Option<&str>, language: Option<Language>) {
    const KNOWN_EXT: &[&str] = &[
        "c", "h", "cpp", "hpp", "c++", "h++", "cc", "hh", "C", "H", "cs", "go", "java", "js",
        "jsx", "php", "php3", "php4", "php5", "phps", "phpt", "py", "rb", "rs", "scala", "ts",
        "tsx", "kts", "kt",
    ];
    let ext = file_extension(file_name);
    let ext = if KNOWN_EXT.contains(&ext) {
        ext
    } else {
        "other"
    };
    let editor = editor
        .and_then(Language::from_editor_language)
        .map(|_| editor.unwrap_or(""))
        .unwrap_or("other");
    telemetry::counter(
        "code_suggestions_prompt_language_total",
        &[
            ("lang", language.map(|l| l.lang_label()).unwrap_or("")),
            ("extension", ext),
            ("editor_lang", editor),
        ],
    )
    .increment(1);
}

fn record_prompt_size(engine: &str, name: &str, component: &'static str, text: &str) {
    let labels = [
        ("model_engine", engine),
        ("model_name", telemetry::model_label(name)),
        ("component", component),
    ];
    telemetry::histogram("code_suggestions_inference_prompt_size_bytes", &labels)
        .record(text.chars().count() as f64);
    telemetry::histogram("code_suggestions_inference_prompt_size_tokens", &labels)
        .record(tokens::count(text) as f64);
}

/// Request telemetry only feeds counters (labels bounded: unknown values fold into `other`).
fn record_telemetry(request: &CodeSuggestionsRequest, engine: &str, name: &str) {
    const LANGS: &[&str] = &[
        "c", "cpp", "csharp", "go", "java", "js", "php", "python", "ruby", "rust", "scala", "ts",
        "kotlin", "",
    ];
    const ENGINES: &[&str] = &[
        "vertex-ai",
        "anthropic",
        "litellm",
        "agent",
        "fireworks_ai",
        "codestral",
    ];
    for t in &request.telemetry {
        let engine = t.model_engine.as_deref().unwrap_or(engine);
        let engine = if ENGINES.contains(&engine) {
            engine
        } else {
            "other"
        };
        let model = telemetry::model_label(t.model_name.as_deref().unwrap_or(name));
        let lang = t.lang.as_deref().unwrap_or("");
        let lang = if LANGS.contains(&lang) { lang } else { "other" };
        let experiments = t.experiments.clone().unwrap_or_default();
        let names = experiments
            .iter()
            .map(|e| {
                if e.name == "exp_truncate_suffix" {
                    e.name.as_str()
                } else {
                    "other"
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let variants = experiments
            .iter()
            .map(|e| e.variant.clamp(0, 9).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let labels = [
            ("model_engine", engine),
            ("model_name", model),
            ("lang", lang),
            ("exp_names", names.as_str()),
            ("exp_variants", variants.as_str()),
        ];
        telemetry::counter("code_suggestions_requests_total", &labels)
            .increment(t.requests.max(0) as u64);
        telemetry::counter("code_suggestions_accepts_total", &labels)
            .increment(t.accepts.max(0) as u64);
        telemetry::counter("code_suggestions_errors_total", &labels)
            .increment(t.errors.max(0) as u64);
    }
}

fn messages_of(prompt: &[super::schema::code::Message]) -> Vec<Message> {
    prompt
        .iter()
        .map(|m| Message::new(m.role.as_str(), m.content.clone()))
        .collect()
}

fn message_tokens(messages: &[Message]) -> usize {
    messages.iter().map(|m| tokens::count(&m.content)).sum()
}

fn code_context_of(req: &HttpRequest, items: &[String]) -> Vec<String> {
    if supports_advanced_context(header(req, "x-gitlab-language-server-version")) {
        items.to_vec()
    } else {
        Vec::new()
    }
}

/// The legacy Vertex code-gecko completion (spec 5.3).
fn plan_vertex_completion(
    file_name: &str,
    language: Option<Language>,
    above: &str,
    below: &str,
    choices_count: i64,
    context: &[String],
) -> Plan {
    let built = builder::build_legacy_completion_prompt(
        above,
        below,
        file_name,
        language,
        context,
        GECKO_INPUT_LIMIT,
    );
    let mut request = ModelRequest::new(
        Prompt::Text {
            prefix: built.prefix.clone(),
            suffix: Some(built.suffix.clone()),
        },
        false,
    );
    if choices_count > 0 {
        let n = choices_count.min(MAX_CANDIDATES);
        request.params.candidate_count = Some(n as u32);
        request.extra.insert("candidate_count".into(), json!(n));
    }
    request.params.max_tokens = Some(64);
    request.params.temperature = Some(0.2);
    request.params.top_p = Some(0.95);
    request.params.top_k = Some(40);
    request.params.stop = vec!["\n\n".into()];
    Plan {
        target: Target::VertexGecko,
        request,
        lang: language.map(|l| l.lang_label()).unwrap_or(""),
        post: Post::VertexCompletion(above.to_string()),
        tokens: Some(built.tokens),
        experiments: built
            .experiments
            .iter()
            .map(|e| json!({"name": e.name, "variant": e.variant}))
            .collect(),
        skip_call: above.is_empty(),
        stream: false,
        model: None,
    }
}

fn anthropic_model_name(name: Option<&str>) -> Result<String, ApiError> {
    name.filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| unprocessable("model_name is required when model_provider is anthropic"))
}

/// `/v2/code/completions` routing (spec 3.1).
fn plan_v2_completion(req: &HttpRequest, body: &CodeSuggestionsRequest) -> Result<Plan, ApiError> {
    let file = &body.current_file;
    let language = Language::detect(&file.file_name, file.language_identifier.as_deref());
    let lang = language.map(|l| l.lang_label()).unwrap_or("");
    let stream = body.stream.unwrap_or(false);
    let context: Vec<String> = body.context.iter().map(|c| c.content.clone()).collect();
    match body.model_provider {
        None | Some(Provider::VertexAi) => Ok(plan_vertex_completion(
            &file.file_name,
            language,
            &file.content_above_cursor,
            &file.content_below_cursor,
            body.choices_count.unwrap_or(0),
            &code_context_of(req, &context),
        )),
        Some(Provider::Anthropic) => {
            let model = anthropic_model_name(body.model_name.as_deref())?;
            let Some(ReqPrompt::Messages(messages)) = &body.prompt else {
                return Err(unprocessable(
                    "anthropic code completions need prompt_version 3 with a list of messages in prompt",
                ));
            };
            let messages = messages_of(messages);
            let input_tokens = message_tokens(&messages);
            let mut request = ModelRequest::new(Prompt::Chat(messages), stream);
            request.params.max_tokens = Some(4096);
            request.params.temperature = Some(0.2);
            Ok(Plan {
                target: Target::AnthropicChat(model),
                request,
                lang,
                post: Post::None,
                tokens: Some(builder::PromptTokens {
                    input_tokens,
                    ..Default::default()
                }),
                experiments: Vec::new(),
                skip_call: false,
                stream,
                model: None,
            })
        }
        Some(provider @ (Provider::Litellm | Provider::Codestral | Provider::FireworksAi)) => {
            let fireworks = provider == Provider::FireworksAi;
            let name = if fireworks {
                "qwen2p5-coder-7b".to_string()
            } else {
                body.model_name.clone().unwrap_or_default()
            };
            let limit = match name.as_str() {
                "codegemma" => 8_192,
                "codellama" => 16_384,
                _ => 32_768,
            };
            let percent = if fireworks {
                builder::FIREWORKS_CONTEXT_MAX_PERCENT
            } else {
                builder::DEFAULT_CONTEXT_MAX_PERCENT
            };
            let (prompt, prompt_tokens) = match &body.prompt {
                Some(ReqPrompt::Text(text)) => {
                    let n = builder::check_raw_prompt(text, limit)
                        .map_err(|e| unprocessable(e.to_string()))?;
                    (
                        Prompt::Text {
                            prefix: text.clone(),
                            suffix: None,
                        },
                        builder::PromptTokens {
                            input_tokens: n,
                            ..Default::default()
                        },
                    )
                }
                _ => {
                    let built = builder::build_prefix_based_prompt(
                        &file.content_above_cursor,
                        &file.content_below_cursor,
                        &context,
                        limit,
                        percent,
                    );
                    let prompt = if fireworks {
                        Prompt::Chat(vec![Message::new(
                            "user",
                            format!(
                                "<|fim_prefix|>{}<|fim_suffix|>{}<|fim_middle|>",
                                built.prefix, built.suffix
                            ),
                        )])
                    } else {
                        Prompt::Text {
                            prefix: built.prefix,
                            suffix: Some(built.suffix),
                        }
                    };
                    (prompt, built.tokens)
                }
            };
            let mut request = ModelRequest::new(prompt, stream);
            request.params.max_tokens = Some(if fireworks { 64 } else { 16 });
            request.params.temperature = Some(0.95);
            request.params.top_p = Some(0.95);
            Ok(Plan {
                target: Target::Custom {
                    kind: CustomKind::Text,
                    provider,
                    name,
                    endpoint: body.model_endpoint.clone(),
                    api_key: body.model_api_key.clone(),
                    identifier: body.model_identifier.clone(),
                },
                request,
                lang,
                post: Post::None,
                tokens: Some(prompt_tokens),
                experiments: Vec::new(),
                skip_call: false,
                stream,
                model: None,
            })
        }
    }
}

/// `/v2/code/generations` routing (spec 3.2).
fn plan_v2_generation(body: &CodeSuggestionsRequest) -> Result<Plan, ApiError> {
    let file = &body.current_file;
    let language = Language::detect(&file.file_name, file.language_identifier.as_deref());
    let lang = language.map(|l| l.lang_label()).unwrap_or("");
    let stream = body.stream.unwrap_or(false);
    // The prompt: the client's (v2 text, v3 messages) or the built v1 prompt.
    let built_text = |limit: usize| -> Result<String, ApiError> {
        match &body.prompt {
            Some(ReqPrompt::Text(text)) => {
                builder::check_raw_prompt(text, limit).map_err(|e| unprocessable(e.to_string()))?;
                Ok(text.clone())
            }
            _ => builder::build_generations_prompt(
                &file.content_above_cursor,
                &file.file_name,
                language,
                limit,
            )
            .map(|p| p.prompt)
            .map_err(|e| unprocessable(e.to_string())),
        }
    };
    let (target, prompt, post) = match body.model_provider {
        Some(Provider::Anthropic) => match &body.prompt {
            Some(ReqPrompt::Messages(messages)) if body.prompt_version == 3 => (
                Target::AnthropicChat(anthropic_model_name(body.model_name.as_deref())?),
                Prompt::Chat(messages_of(messages)),
                Post::AnthropicGeneration,
            ),
            _ => (
                Target::AnthropicText(
                    body.model_name
                        .clone()
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| "claude-2.0".into()),
                ),
                Prompt::Text {
                    prefix: built_text(100_000)?,
                    suffix: None,
                },
                Post::AnthropicGeneration,
            ),
        },
        Some(Provider::Litellm) => {
            let content = match &body.prompt {
                Some(ReqPrompt::Messages(messages)) => Prompt::Chat(messages_of(messages)),
                _ => Prompt::Chat(vec![Message::new("user", built_text(32_768)?)]),
            };
            (
                Target::Custom {
                    kind: CustomKind::Chat,
                    provider: Provider::Litellm,
                    name: body.model_name.clone().unwrap_or_default(),
                    endpoint: body.model_endpoint.clone(),
                    api_key: body.model_api_key.clone(),
                    identifier: body.model_identifier.clone(),
                },
                content,
                Post::Generation(file.content_above_cursor.clone()),
            )
        }
        // Everything else, codestral and fireworks included, falls back to code-bison (as the
        // original does).
        _ => (
            Target::VertexBison,
            Prompt::Text {
                prefix: built_text(BISON_INPUT_LIMIT)?,
                suffix: None,
            },
            Post::Generation(file.content_above_cursor.clone()),
        ),
    };
    let mut request = ModelRequest::new(prompt, stream);
    match &target {
        Target::AnthropicChat(_) => {
            request.params.stop = vec!["</new_code>".into()];
            request.params.max_tokens = Some(4096);
        }
        Target::AnthropicText(_) => {
            request.params.stop = vec!["</new_code>".into(), "\n\nHuman:".into()];
            request.params.max_tokens = Some(2048);
        }
        _ => request.params.max_tokens = Some(2048),
    }
    request.params.temperature = Some(0.2);
    Ok(Plan {
        target,
        request,
        lang,
        post,
        tokens: None,
        experiments: Vec::new(),
        skip_call: false,
        stream,
        model: None,
    })
}

/// The pydantic text of a `ModelMetadata` that does not validate, as the original's
/// `ValidationError` prints it (the original answers it as a 422 string detail).
fn model_metadata_error(problems: &[(&str, &str, &str, Option<&str>)]) -> ApiError {
    let mut text = format!(
        "{} validation error{} for ModelMetadata",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for (field, kind, message, input) in problems {
        let (value, input_type) = match input {
            Some(v) => (crate::prompts::render::py_repr_str(v), "str"),
            None => ("None".to_string(), "NoneType"),
        };
        text.push_str(&format!(
            "\n{field}\n  {message} [type={kind}, input_value={value}, input_type={input_type}]\n    For further information visit https://errors.pydantic.dev/2.10/v/{kind}"
        ));
    }
    unprocessable(text)
}

/// The `ModelMetadata` of a `prompt_id` generation (spec 3.2 rule 1): built from `model_name`,
/// `model_endpoint` (a required URL), `model_api_key` and `model_identifier`, provider
/// `custom_openai`. Without a model name and an endpoint there is none: the prompt's own model
/// answers.
fn agent_model_metadata(body: &CodeSuggestionsRequest) -> Result<Option<ModelMetadata>, ApiError> {
    if body.model_name.is_none() && body.model_endpoint.is_none() {
        return Ok(None);
    }
    let mut problems = Vec::new();
    if body.model_name.is_none() {
        problems.push((
            "name",
            "string_type",
            "Input should be a valid string",
            None,
        ));
    }
    match body.model_endpoint.as_deref() {
        None => problems.push((
            "endpoint",
            "url_type",
            "URL input should be a string or URL",
            None,
        )),
        Some(endpoint) => match url::Url::parse(endpoint) {
            Ok(_) => {}
            Err(url::ParseError::RelativeUrlWithoutBase) => problems.push((
                "endpoint",
                "url_parsing",
                "Input should be a valid URL, relative URL without a base",
                Some(endpoint),
            )),
            Err(_) => problems.push((
                "endpoint",
                "url_parsing",
                "Input should be a valid URL",
                Some(endpoint),
            )),
        },
    }
    if !problems.is_empty() {
        return Err(model_metadata_error(&problems));
    }
    Ok(Some(ModelMetadata {
        name: body.model_name.clone().unwrap_or_default(),
        provider: "custom_openai".into(),
        endpoint: body.model_endpoint.clone(),
        api_key: body.model_api_key.clone(),
        identifier: body.model_identifier.clone(),
    }))
}

/// `/v2/code/generations` with `prompt_id` (spec 3.2 rule 1): the registry prompt, its type from
/// `model_name` / `AIGW_DEFAULT_PROMPTS` / `base`, answered by the prompt's model or the
/// `model_metadata` one. The user instruction is the client's `prompt` text, or empty.
fn plan_agent_generation(
    req: &HttpRequest,
    state: &AppState,
    body: &CodeSuggestionsRequest,
    prompt_id: &str,
) -> Result<Plan, ApiError> {
    let file = &body.current_file;
    let metadata = agent_model_metadata(body)?;
    plan_registry_generation(
        req,
        state,
        RegistryGeneration {
            prompt_id,
            file_name: &file.file_name,
            content_above_cursor: &file.content_above_cursor,
            content_below_cursor: &file.content_below_cursor,
            language_identifier: file.language_identifier.as_deref(),
            language: Language::detect(&file.file_name, file.language_identifier.as_deref()),
            stream: body.stream.unwrap_or(false),
            metadata,
            user_instruction: match &body.prompt {
                Some(ReqPrompt::Text(text)) => text,
                _ => "",
            },
            enhancer: None,
        },
    )
}

/// A code generation by a registry prompt, from `/v2/code/generations` or from a v3/v4
/// `code_editor_generation` component.
struct RegistryGeneration<'a> {
    prompt_id: &'a str,
    file_name: &'a str,
    content_above_cursor: &'a str,
    content_below_cursor: &'a str,
    language_identifier: Option<&'a str>,
    /// What `Language::detect` made of the file name and identifier.
    language: Option<Language>,
    stream: bool,
    /// The client's model (v2 only); `None`: the prompt's own.
    metadata: Option<ModelMetadata>,
    user_instruction: &'a str,
    /// v3/v4 `prompt_enhancer`: further template variables, which win over the standard ones.
    enhancer: Option<&'a serde_json::Map<String, Value>>,
}

/// Resolve, authorize and render the registry prompt of `g`. Where the original answers a 500
/// (unknown prompt, missing unit primitives, an agent prompt), this answers 404, 403 and 422.
fn plan_registry_generation(
    req: &HttpRequest,
    state: &AppState,
    g: RegistryGeneration<'_>,
) -> Result<Plan, ApiError> {
    let prompt_id = g.prompt_id;
    let language = g.language;
    let entry = state
        .prompts
        .resolve(
            prompt_id,
            DEFAULT_CONSTRAINT,
            g.metadata.as_ref().map(|m| m.name.as_str()),
        )
        .map_err(|e| match e {
            ResolveError::NotFound | ResolveError::InvalidConstraint => ApiError::detail(
                StatusCode::NOT_FOUND,
                format!("Prompt '{prompt_id}' not found"),
            ),
            ResolveError::NoMatchingVersion => ApiError::detail(
                StatusCode::NOT_FOUND,
                format!("Prompt '{prompt_id}' has no version matching '{DEFAULT_CONSTRAINT}'"),
            ),
        })?;
    let user =
        user_of(req).ok_or_else(|| ApiError::Unauthorized("Forbidden by auth provider".into()))?;
    if !entry
        .definition
        .unit_primitives
        .iter()
        .all(|up| user.can(up, &[]))
    {
        return Err(ApiError::forbidden(format!(
            "Unauthorized to access '{prompt_id}'"
        )));
    }
    if AGENT_PROMPTS.contains(&prompt_id) {
        return Err(unprocessable(format!(
            "Prompt '{prompt_id}' is not supported"
        )));
    }
    if g.metadata.is_some() && !state.settings.custom_models.enabled {
        return Err(unprocessable(
            "Endpoint override not allowed when custom models are disabled.",
        ));
    }
    let editor_language = g
        .language_identifier
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .or_else(|| language.map(|l| l.display_name().to_string()))
        .unwrap_or_default()
        .to_lowercase();
    let mut inputs = serde_json::Map::new();
    inputs.insert("prefix".into(), json!(g.content_above_cursor));
    inputs.insert("suffix".into(), json!(g.content_below_cursor));
    inputs.insert("file_name".into(), json!(g.file_name));
    inputs.insert("language".into(), json!(editor_language));
    inputs.insert("user_instruction".into(), json!(g.user_instruction));
    if let Some(enhancer) = g.enhancer {
        for (key, value) in enhancer {
            inputs.insert(key.clone(), value.clone());
        }
    }
    let messages = state
        .prompts
        .render(&entry, &inputs)
        .map_err(|e| unprocessable(e.message()))?;
    let log = RequestLog::of(req);
    log.set("prompt_id", prompt_id);
    log.set("prompt_version", entry.version.to_string());
    let model = prompt_model::provider_for(state, &entry, g.metadata.as_ref())?;
    Ok(Plan {
        target: Target::Agent(entry.definition.name.clone()),
        request: prompt_model::model_request(&entry, messages, g.stream),
        lang: language.map(|l| l.lang_label()).unwrap_or(""),
        post: Post::AnthropicGeneration,
        tokens: None,
        experiments: Vec::new(),
        skip_call: false,
        stream: g.stream,
        model: Some(model),
    })
}

/// The outcome of a planned call, ready to be rendered.
// One per request, moved once: boxing the call would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Whole {
        engine: String,
        name: String,
        texts: Vec<String>,
        usage: Option<Usage>,
        waited: Duration,
    },
    Stream {
        engine: String,
        name: String,
        call: Box<ModelCall>,
    },
}

/// The answer to a model call that failed before its response started: the quota's 429, or the
/// original's 503 `Inference failed` (with the upstream's `Retry-After` when it gave one).
pub(crate) fn failure_response(failure: &CallFailure, log: &RequestLog) -> ApiError {
    if let CallFailure::Quota(refusal) = failure {
        return crate::quota::refused(refusal, log);
    }
    log.set("model_exception_message", failure.describe());
    if let CallFailure::Model(e) = failure {
        if let Some(status) = e.status() {
            log.set("model_exception_status_code", status);
        }
    }
    match failure.retry_after() {
        Some(after) => ApiError::DetailWithHeaders(
            StatusCode::SERVICE_UNAVAILABLE,
            "Inference failed".into(),
            vec![("retry-after".into(), after.as_secs().max(1).to_string())],
        ),
        None => ApiError::inference_failed(),
    }
}

async fn execute(
    state: &AppState,
    plan: &mut Plan,
    log: &RequestLog,
    user: Option<&str>,
) -> Result<Outcome, ApiError> {
    let provider = match plan.model.take() {
        Some(model) => model,
        None => provider_for(state, &plan.target, user)?,
    };
    let mut meta = provider.metadata().clone();
    if let Target::Agent(name) = &plan.target {
        // The original reports registry prompts as its `AgentModel`: engine `agent`, the
        // prompt's name.
        meta.engine = "agent".into();
        meta.name = name.clone();
    }
    log.set("model_engine", meta.engine.as_str());
    log.set("model_name", meta.name.as_str());
    log.set("lang", plan.lang);
    telemetry::counter(
        "code_suggestions_inference_requests_total",
        &[
            ("model_engine", &meta.engine),
            ("model_name", telemetry::model_label(&meta.name)),
        ],
    )
    .increment(1);
    match &plan.request.prompt {
        Prompt::Text { prefix, suffix } => {
            log.set("prompt_length", prefix.chars().count());
            log.set("prompt_length_stripped", prefix.trim().chars().count());
            record_prompt_size(&meta.engine, &meta.name, "prefix", prefix);
            if let Some(suffix) = suffix {
                log.set("suffix_length", suffix.chars().count());
                record_prompt_size(&meta.engine, &meta.name, "suffix", suffix);
            }
        }
        Prompt::Chat(messages) => {
            let length: usize = messages.iter().map(|m| m.content.chars().count()).sum();
            log.set("prompt_length", length);
        }
    }
    if plan.skip_call {
        return Ok(Outcome::Whole {
            engine: meta.engine,
            name: meta.name,
            texts: Vec::new(),
            usage: None,
            waited: Duration::ZERO,
        });
    }
    plan.request.stream = plan.stream;
    let started = Instant::now();
    // The plan's request is not read again: moved into the call rather than copied.
    let request = std::mem::replace(
        &mut plan.request,
        ModelRequest::new(Prompt::Chat(Vec::new()), plan.stream),
    );
    let call = ModelCall::start(state, provider, request, FEATURE)
        .await
        .map_err(|f| failure_response(&f, log))?;
    if plan.stream {
        return Ok(Outcome::Stream {
            engine: meta.engine,
            name: meta.name,
            call: Box::new(call),
        });
    }
    let answer = call
        .collect()
        .await
        .map_err(|f| failure_response(&f, log))?;
    log.set("inference_duration_s", started.elapsed().as_secs_f64());
    let excluded = &state.settings.f.code_suggestions.excl_post_proc;
    let texts = answer
        .texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let score = answer.scores.get(i).copied().flatten();
            if matches!(plan.post, Post::VertexCompletion(_))
                && score.is_some_and(|s| s <= MIN_SCORE)
            {
                log.set("discarded", true);
                return String::new();
            }
            match &plan.post {
                Post::None => text.clone(),
                Post::VertexCompletion(prefix) => {
                    post::post_process_vertex_completion(prefix, text, excluded)
                }
                Post::Generation(prefix) => post::post_process_generation(prefix, text),
                Post::AnthropicGeneration => post::post_process_anthropic_generation(text),
            }
        })
        .collect::<Vec<_>>();
    if let Some(usage) = &answer.usage {
        streaming::log_usage(log, usage);
    }
    if let Some(first) = texts.first() {
        log.set("model_output_length", first.chars().count());
        log.set("model_output_length_stripped", first.trim().chars().count());
    }
    Ok(Outcome::Whole {
        engine: meta.engine,
        name: meta.name,
        texts,
        usage: answer.usage,
        waited: answer.waited,
    })
}

fn choices(texts: &[String], at_most: usize) -> Vec<Value> {
    texts
        .iter()
        .filter(|t| !t.is_empty())
        .take(at_most)
        .map(|t| json!({"text": t, "index": 0, "finish_reason": "length"}))
        .collect()
}

fn now_epoch() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Record `gateway_overhead_seconds` and build a response carrying `x-gateway-overhead-ms`.
fn response_with_overhead(req: &HttpRequest, waited: Duration) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    if let Some(overhead) = crate::api::record_overhead(req, waited) {
        builder.insert_header((
            "x-gateway-overhead-ms",
            format!("{:.3}", overhead.as_secs_f64() * 1000.0),
        ));
    }
    builder
}

fn json_response(
    mut builder: actix_web::HttpResponseBuilder,
    body: &impl Serialize,
) -> HttpResponse {
    builder
        .content_type("application/json")
        .body(serde_json::to_string(body).unwrap_or_default())
}

/// The v2 JSON body (spec 3.1), in the original's field order. Serialised from borrowed fields:
/// no `Value` tree, no map inserts with their key hashing.
#[derive(Serialize)]
struct V2Body<'a> {
    id: &'static str,
    model: V2Model<'a>,
    experiments: &'a [Value],
    object: &'static str,
    created: i64,
    choices: Vec<Choice<'a>>,
}

#[derive(Serialize)]
struct V2Model<'a> {
    engine: &'a str,
    name: &'a str,
    lang: &'a str,
    /// `null` for generations.
    tokens_consumption_metadata: Option<V2Tokens>,
}

#[derive(Serialize)]
struct V2Tokens {
    input_tokens: usize,
    output_tokens: u64,
    context_tokens_sent: usize,
    context_tokens_used: usize,
}

/// A choice of the v2 body.
#[derive(Serialize)]
struct Choice<'a> {
    text: &'a str,
    index: u32,
    finish_reason: &'static str,
}

/// The v2 JSON (spec 3.1): `id, model{engine,name,lang,tokens_consumption_metadata}, experiments,
/// object, created, choices`.
async fn v2_respond(
    req: &HttpRequest,
    state: &AppState,
    mut plan: Plan,
    generations: bool,
) -> Result<HttpResponse, ApiError> {
    let log = RequestLog::of(req);
    match execute(
        state,
        &mut plan,
        &log,
        header(req, "x-gitlab-global-user-id"),
    )
    .await?
    {
        Outcome::Stream { call, .. } => {
            let builder = response_with_overhead(req, call.waited_for_first);
            Ok(streaming::raw_text(
                builder,
                streaming::client_events(req, *call, &log),
            ))
        }
        Outcome::Whole {
            engine,
            name,
            texts,
            usage,
            waited,
        } => {
            let tokens_consumption_metadata = (!generations).then(|| {
                let t = plan.tokens.unwrap_or_default();
                V2Tokens {
                    input_tokens: t.input_tokens,
                    output_tokens: usage.map(|u| u.output_tokens).unwrap_or(0),
                    context_tokens_sent: t.context_tokens_sent,
                    context_tokens_used: t.context_tokens_used,
                }
            });
            let body = V2Body {
                id: "id",
                model: V2Model {
                    engine: &engine,
                    name: &name,
                    lang: plan.lang,
                    tokens_consumption_metadata,
                },
                experiments: &plan.experiments,
                object: "text_completion",
                created: now_epoch(),
                choices: texts
                    .iter()
                    .filter(|t| !t.is_empty())
                    .take(if generations { 1 } else { usize::MAX })
                    .map(|text| Choice {
                        text,
                        index: 0,
                        finish_reason: "length",
                    })
                    .collect(),
            };
            Ok(json_response(response_with_overhead(req, waited), &body))
        }
    }
}

async fn v2_completions(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let value = json_body(&req, &body)?;
    let request = parse_code_completions(&value).map_err(validation)?;
    authorize(&req, &state, &authz::CODE_COMPLETIONS)?;
    let file = &request.current_file;
    let language = Language::detect(&file.file_name, file.language_identifier.as_deref());
    record_language(
        &file.file_name,
        file.language_identifier.as_deref(),
        language,
    );
    RequestLog::of(&req).set(
        "editor_lang",
        file.language_identifier.clone().unwrap_or_default(),
    );
    let plan = plan_v2_completion(&req, &request)?;
    let (engine, name) = plan.target.labels();
    record_telemetry(&request, engine, &name);
    v2_respond(&req, &state, plan, false).await
}

async fn v2_generations(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let value = json_body(&req, &body)?;
    let request = parse_code_generations(&value).map_err(validation)?;
    authorize(&req, &state, &authz::CODE_GENERATIONS)?;
    let plan = match &request.prompt_id {
        Some(prompt_id) => plan_agent_generation(&req, &state, &request, prompt_id)?,
        None => plan_v2_generation(&request)?,
    };
    let (engine, name) = plan.target.labels();
    record_telemetry(&request, engine, &name);
    v2_respond(&req, &state, plan, true).await
}

/// Plan the action of a v3/v4 body: its first component decides (spec 3.3).
fn plan_components(
    req: &HttpRequest,
    state: &AppState,
    components: &[PromptComponent],
) -> Result<Plan, ApiError> {
    let context: Vec<String> =
        if supports_advanced_context(header(req, "x-gitlab-language-server-version")) {
            components
                .iter()
                .filter_map(|c| match c {
                    PromptComponent::CodeContext(c) => Some(c.payload.content.clone()),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
    match components.first() {
        Some(PromptComponent::CodeEditorCompletion(c)) => {
            let p = &c.payload;
            let language = Language::detect(&p.file_name, p.language_identifier.as_deref());
            record_language(&p.file_name, p.language_identifier.as_deref(), language);
            let stream = p.stream.unwrap_or(false);
            match p.model_provider {
                Some(Provider::Anthropic) => {
                    let model = anthropic_model_name(p.model_name.as_deref())?;
                    let messages = match &p.prompt {
                        Some(ReqPrompt::Messages(messages)) => messages_of(messages),
                        Some(ReqPrompt::Text(text)) => vec![Message::new("user", text.clone())],
                        None => vec![Message::new(
                            "user",
                            format!("{}<cursor>{}", p.content_above_cursor, p.content_below_cursor),
                        )],
                    };
                    let mut request = ModelRequest::new(Prompt::Chat(messages), stream);
                    request.params.max_tokens = Some(4096);
                    request.params.temperature = Some(0.2);
                    Ok(Plan {
                        target: Target::AnthropicChat(model),
                        request,
                        lang: language.map(|l| l.lang_label()).unwrap_or(""),
                        post: Post::None,
                        tokens: None,
                        experiments: Vec::new(),
                        skip_call: false,
                        stream,
                        model: None,
                    })
                }
                _ => {
                    let mut plan = plan_vertex_completion(
                        &p.file_name,
                        language,
                        &p.content_above_cursor,
                        &p.content_below_cursor,
                        p.choices_count.unwrap_or(0),
                        &context,
                    );
                    // Vertex legacy completions do not stream; the answer comes whole.
                    plan.stream = false;
                    Ok(plan)
                }
            }
        }
        Some(PromptComponent::CodeEditorGeneration(g)) => {
            let p = &g.payload;
            let language = Language::detect(&p.file_name, p.language_identifier.as_deref());
            record_language(&p.file_name, p.language_identifier.as_deref(), language);
            if let Some(prompt_id) = &p.prompt_id {
                // The prompt's default type and model: v3/v4 carry no model metadata.
                return plan_registry_generation(
                    req,
                    state,
                    RegistryGeneration {
                        prompt_id,
                        file_name: &p.file_name,
                        content_above_cursor: &p.content_above_cursor,
                        content_below_cursor: &p.content_below_cursor,
                        language_identifier: p.language_identifier.as_deref(),
                        language,
                        stream: p.stream.unwrap_or(false),
                        metadata: None,
                        user_instruction: p.prompt.as_deref().unwrap_or(""),
                        enhancer: p.prompt_enhancer.as_ref(),
                    },
                );
            }
            let stream = p.stream.unwrap_or(false);
            let (limit, target, post) = match p.model_provider {
                Some(Provider::Anthropic) => (
                    100_000,
                    Target::AnthropicText("claude-2.0".into()),
                    Post::AnthropicGeneration,
                ),
                _ => (
                    BISON_INPUT_LIMIT,
                    Target::VertexBison,
                    Post::Generation(p.content_above_cursor.clone()),
                ),
            };
            let text = match &p.prompt {
                Some(text) => {
                    builder::check_raw_prompt(text, limit).map_err(|e| unprocessable(e.to_string()))?;
                    text.clone()
                }
                None => builder::build_generations_prompt(&p.content_above_cursor, &p.file_name, language, limit)
                    .map(|b| b.prompt)
                    .map_err(|e| unprocessable(e.to_string()))?,
            };
            let mut request = ModelRequest::new(
                Prompt::Text {
                    prefix: text,
                    suffix: None,
                },
                stream,
            );
            request.params.max_tokens = Some(2048);
            request.params.temperature = Some(0.2);
            if matches!(target, Target::AnthropicText(_)) {
                request.params.stop = vec!["</new_code>".into(), "\n\nHuman:".into()];
            }
            Ok(Plan {
                target,
                request,
                lang: language.map(|l| l.lang_label()).unwrap_or(""),
                post,
                tokens: None,
                experiments: Vec::new(),
                skip_call: false,
                stream,
                model: None,
            })
        }
        _ => Err(unprocessable(
            "the first prompt component must be of type code_editor_completion or code_editor_generation",
        )),
    }
}

/// v3 and v4 share everything but the streaming framing.
async fn components_endpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
    sse: bool,
) -> Result<HttpResponse, ApiError> {
    let value = json_body(&req, &body)?;
    let request = parse_completion_request(&value).map_err(validation)?;
    authorize(&req, &state, &authz::CODE_SUGGESTIONS)?;
    let mut plan = plan_components(&req, &state, &request.prompt_components)?;
    let log = RequestLog::of(&req);
    let lang = plan.lang;
    match execute(
        &state,
        &mut plan,
        &log,
        header(&req, "x-gitlab-global-user-id"),
    )
    .await?
    {
        Outcome::Stream { engine, name, call } => {
            let builder = response_with_overhead(&req, call.waited_for_first);
            if sse {
                let start = json!({"metadata": {"model": {"engine": engine, "name": name}, "timestamp": now_epoch()}});
                let ping = Duration::from_secs_f64(state.settings.models.sse_ping_interval_s);
                Ok(streaming::sse(
                    builder,
                    start,
                    Box::pin(streaming::client_events(&req, *call, &log)),
                    ping,
                ))
            } else {
                Ok(streaming::raw_text(
                    builder,
                    streaming::client_events(&req, *call, &log),
                ))
            }
        }
        Outcome::Whole {
            engine,
            name,
            texts,
            waited,
            ..
        } => {
            let at_most = if matches!(plan.post, Post::VertexCompletion(_)) {
                usize::MAX
            } else {
                1
            };
            let body = json!({
                "choices": choices(&texts, at_most),
                "metadata": {"model": {"engine": engine, "name": name, "lang": lang}, "timestamp": now_epoch()},
            });
            Ok(json_response(response_with_overhead(&req, waited), &body))
        }
    }
}

async fn v3_completions(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    components_endpoint(req, state, body, false).await
}

async fn v4_suggestions(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    components_endpoint(req, state, body, true).await
}

/// Keep the request's extensions type in scope for handlers that read them.
#[allow(dead_code)]
fn _extensions(req: &HttpRequest) -> bool {
    req.extensions().contains::<RequestLog>()
}
