//! `POST /v2/chat/agent`: Duo Chat's ReAct agent (spec 3.6, 14.4).
//!
//! In the original's order: the body is validated (422, pydantic's objects); the `chat/react`
//! prompt is resolved (type from `model_metadata.name`, `AIGW_DEFAULT_PROMPTS` or `base`, version
//! `^1.0.0`) and its unit primitives (`duo_chat`) must be held (403 `Unauthorized to access duo
//! chat`); every `additional_context` item needs `include_<category>_context` (403 `Unauthorized
//! to access include_<category>_context`). The tools offered are those the token's scopes,
//! `X-Gitlab-Version` and the feature flags allow (see `chat::tools`).
//!
//! The prompt is the system template (tools, unavailable resources), one message per
//! conversation message (user messages through the user template with their context, current
//! file, additional context and resource content; assistant messages as they are), and the
//! assistant template with the scratchpad (`\_` unescaped in thoughts and tools) as a prefill.
//!
//! The answer is always a 200 NDJSON stream (`application/x-ndjson; charset=utf-8`), one
//! `json.dumps` object per line: `final_answer_delta` pieces as the model's text arrives,
//! `action` (or `error` `tool not available`) or `unknown` once at the end, and `error` with
//! `retryable` when the model call fails before or during the stream. The original's message
//! for Anthropic failures is its SDK's exception text (`Error code: 529 - {...}`, the error
//! event's payload as a Python dict), reproduced here so that `overloaded_error` decides
//! `retryable` the same way.
//! A client that goes away ends the stream at once and cancels the model call.
//!
//! Where the original fails after its 200 was sent (a `system` message, a conversation that does
//! not end with a user message, an unknown prompt type), this endpoint answers a 4xx before the
//! stream starts (docs/compatibility.md).

use std::collections::VecDeque;
use std::pin::Pin;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::{Stream, StreamExt};
use serde_json::{json, Map, Value};

use crate::api::json_body;
use crate::api::prompt_model::{model_request, provider_for};
use crate::api::schema::agent::{parse_agent_request, AgentMessage, AgentRequest};
use crate::api::schema::code::Role;
use crate::api::schema::py_repr;
use crate::api::streaming::StreamAborted;
use crate::chat::react::{AgentEvent, Outcome, ReactStream};
use crate::chat::tools::{self, Tool};
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
use crate::http::disconnect::until_disconnect;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::inference::{CallFailure, Event, ModelCall};
use crate::models::{mock, Message, ModelErrorKind};
use crate::prompts::definition::ModelClass;
use crate::prompts::version::DEFAULT_CONSTRAINT;
use crate::prompts::ResolveError;
use crate::state::AppState;

/// The feature category of Duo Chat.
const FEATURE: &str = "duo_chat";
/// The registry prompt of the agent.
const PROMPT_ID: &str = "chat/react";
/// The unit primitive the endpoint is about.
const UNIT_PRIMITIVE: &str = "duo_chat";
/// Errors whose message says that asking again may work.
const RETRYABLE_ERRORS: &[&str] = &["overloaded_error"];

/// Register the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::route("/v2/chat/agent", Method::POST, agent));
}

fn detail(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::detail(status, message)
}

/// The feature flags the request enables: `X-Gitlab-Enabled-Feature-Flags` split at commas (not
/// trimmed), minus those `AIGW_FEATURE_FLAGS__DISALLOWED_FLAGS` disallows for the request's realm.
fn enabled_feature_flags(req: &HttpRequest, state: &AppState) -> Vec<String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let realm = header("x-gitlab-realm");
    let disallowed = state.settings.feature_flags.disallowed_flags.get(realm);
    let mut flags: Vec<String> = Vec::new();
    for flag in header("x-gitlab-enabled-feature-flags").split(',') {
        if flag.is_empty() || disallowed.is_some_and(|d| d.iter().any(|x| x == flag)) {
            continue;
        }
        if !flags.iter().any(|f| f == flag) {
            flags.push(flag.to_string());
        }
    }
    flags
}

/// A message as the user template sees it.
fn message_input(m: &AgentMessage) -> Value {
    let context = m
        .context
        .as_ref()
        .map(|c| json!({"type": c.kind, "content": c.content}));
    let current_file = m.current_file.as_ref().map(
        |f| json!({"file_path": f.file_path, "data": f.data, "selected_code": f.selected_code}),
    );
    let additional_context = m.additional_context.as_ref().map(|items| {
        items
            .iter()
            .map(|a| {
                json!({"category": a.category, "id": a.id, "content": a.content,
                       "metadata": a.metadata})
            })
            .collect::<Vec<_>>()
    });
    json!({
        "role": m.role.as_str(),
        "content": m.content,
        "context": context,
        "current_file": current_file,
        "additional_context": additional_context,
        "resource_content": m.resource_content,
    })
}

fn tool_input(t: &Tool) -> Value {
    json!({"name": t.name, "description": t.description, "example": t.example,
           "resource": t.resource})
}

fn inputs(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// The conversation as model messages (see the module docs).
fn build_messages(
    state: &AppState,
    entry: &crate::prompts::Entry,
    request: &AgentRequest,
    offered: &[&'static Tool],
) -> Result<Vec<Message>, ApiError> {
    let render = |role: &str, values: Map<String, Value>| -> Result<Option<String>, ApiError> {
        match state.prompts.render_role(entry, role, &values) {
            None => Ok(None),
            Some(Ok(text)) => Ok(Some(text)),
            Some(Err(e)) => {
                tracing::error!(target: "api.chat", prompt = %entry.key, "agent prompt failed to render: {}", e.message());
                Err(ApiError::Internal(e.message().to_string()))
            }
        }
    };
    let mut messages = Vec::with_capacity(request.messages.len() + 2);
    let unavailable = request
        .unavailable_resources
        .as_ref()
        .map(|r| json!(r))
        .unwrap_or(Value::Null);
    let tools: Vec<Value> = offered.iter().map(|t| tool_input(t)).collect();
    if let Some(system) = render(
        "system",
        inputs(&[
            ("tools", json!(tools)),
            ("unavailable_resources", unavailable),
        ]),
    )? {
        messages.push(Message::new("system", system));
    }
    for m in &request.messages {
        match m.role {
            Role::User => {
                let text = render("user", inputs(&[("message", message_input(m))]))?
                    .unwrap_or_else(|| m.content.clone());
                messages.push(Message::new("user", text));
            }
            Role::Assistant => messages.push(Message::new("assistant", m.content.clone())),
            Role::System => {
                return Err(detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Unsupported message",
                ))
            }
        }
    }
    if messages.last().map(|m| m.role.as_str()) != Some("user") {
        return Err(detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Last message must be a human message",
        ));
    }
    let steps: Vec<Value> = request
        .steps
        .iter()
        .flatten()
        .map(|s| {
            json!({"action": {"thought": s.thought.replace("\\_", "_"),
                              "tool": s.tool.replace("\\_", "_"),
                              "tool_input": s.tool_input},
                   "observation": s.observation})
        })
        .collect();
    if let Some(prefill) = render("assistant", inputs(&[("agent_scratchpad", json!(steps))]))? {
        messages.push(Message::new("assistant", prefill));
    }
    Ok(messages)
}

/// The original's text for a failed model call: the Anthropic SDK's exception message.
pub fn error_message(failure: &CallFailure) -> String {
    match failure {
        CallFailure::Model(e) => {
            let anthropic = match &e.kind {
                ModelErrorKind::Stream => anthropic_stream_error(&e.message),
                ModelErrorKind::Status(code) => anthropic_status_error(*code, &e.message),
                ModelErrorKind::RateLimited => anthropic_status_error(429, &e.message),
                ModelErrorKind::Connection => Some("Connection error.".to_string()),
                ModelErrorKind::Timeout => Some("Request timed out.".to_string()),
                _ => None,
            };
            anthropic.unwrap_or_else(|| e.to_string())
        }
        CallFailure::Timeout(_) => "Request timed out.".to_string(),
        other => other.describe(),
    }
}

/// `{'type': 'error', 'error': {'type': ..., 'message': ...}}`: the SDK raises the error
/// event's payload as its message.
fn anthropic_stream_error(message: &str) -> Option<String> {
    let (kind, text) = message
        .strip_prefix("anthropic stream error ")?
        .split_once(": ")?;
    Some(py_repr(
        &json!({"type": "error", "error": {"type": kind, "message": text}}),
    ))
}

/// `Error code: 529 - {...}`: the SDK's message for an error status.
fn anthropic_status_error(code: u16, message: &str) -> Option<String> {
    let (_, body) = message
        .strip_prefix("anthropic answered ")?
        .split_once(": ")?;
    let body = body.trim();
    Some(match serde_json::from_str::<Value>(body) {
        Ok(v) => format!("Error code: {code} - {}", py_repr(&v)),
        Err(_) if !body.is_empty() => body.to_string(),
        Err(_) => format!("Error code: {code}"),
    })
}

/// The `error` event for a failed call.
fn error_event(failure: &CallFailure) -> AgentEvent {
    let message = error_message(failure);
    let retryable = RETRYABLE_ERRORS.iter().any(|e| message.contains(e));
    AgentEvent::Error { message, retryable }
}

fn add_tracked_event(log: &RequestLog, event: String) {
    let mut events = match log.get("tracked_internal_events") {
        Some(Value::Array(events)) => events,
        _ => Vec::new(),
    };
    events.push(Value::String(event));
    log.set("tracked_internal_events", Value::Array(events));
}

/// The events of the end of the output: the held-back answer, or the action, or unknown.
fn final_events(outcome: Outcome, offered: &[&'static Tool], log: &RequestLog) -> Vec<AgentEvent> {
    match outcome {
        Outcome::FinalAnswer { rest } => {
            rest.map(AgentEvent::FinalAnswerDelta).into_iter().collect()
        }
        Outcome::Action {
            tool,
            tool_input,
            thought,
        } => {
            log.set("duo_chat.agent_tool_action", tool.as_str());
            match tools::find(offered, &tool) {
                Some(t) => {
                    add_tracked_event(log, format!("request_{}", t.unit_primitive));
                    vec![AgentEvent::Action {
                        tool: t.name.to_string(),
                        tool_input,
                        thought,
                    }]
                }
                None => vec![AgentEvent::Error {
                    message: "tool not available".to_string(),
                    retryable: false,
                }],
            }
        }
        Outcome::Unknown(text) => vec![AgentEvent::Unknown(text)],
    }
}

/// The NDJSON body: model events read through the ReAct parser.
struct Run {
    events: Pin<Box<dyn Stream<Item = Event>>>,
    parser: Option<ReactStream>,
    queue: VecDeque<AgentEvent>,
    offered: Vec<&'static Tool>,
    log: RequestLog,
}

impl Run {
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Bytes::from(event.to_line()));
            }
            let parser = self.parser.as_mut()?;
            match self.events.next().await {
                Some(Event::Chunk(chunk)) => {
                    if let Some(delta) = parser.push(&chunk.text) {
                        self.queue.push_back(AgentEvent::FinalAnswerDelta(delta));
                    }
                }
                Some(Event::Failed(failure)) => {
                    tracing::warn!(target: "api.chat", "model stream failed mid-response: {}", failure.describe());
                    self.parser = None;
                    let event = error_event(&failure);
                    if let AgentEvent::Error { message, .. } = &event {
                        self.log.set("exception_message", message.as_str());
                    }
                    self.queue.push_back(event);
                }
                None => {
                    let outcome = self.parser.take()?.finish();
                    self.queue
                        .extend(final_events(outcome, &self.offered, &self.log));
                }
            }
        }
    }
}

/// The NDJSON response; it ends (dropping the model call, which cancels it) as soon as the
/// client goes away, even while the model is quiet.
fn ndjson(req: &HttpRequest, run: Run) -> HttpResponse {
    let lines = futures::stream::unfold(run, |mut run| async move {
        let line = run.next_line().await?;
        Some((Ok::<_, StreamAborted>(line), run))
    });
    let body = until_disconnect(req, Box::pin(lines));
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson; charset=utf-8"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header(("x-accel-buffering", HeaderValue::from_static("no")))
        .streaming(body)
}

async fn agent(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let value = json_body(&req, &body)?;
    let request = parse_agent_request(&value).map_err(ApiError::Validation)?;
    let log = RequestLog::of(&req);
    log.set("meta.feature_category", FEATURE);

    let registry = &state.prompts;
    let model_name = request.model_metadata.as_ref().map(|m| m.name.as_str());
    let entry = registry
        .resolve(PROMPT_ID, DEFAULT_CONSTRAINT, model_name)
        .map_err(|e| {
            let key = format!("{PROMPT_ID}/{}", registry.prompt_type(PROMPT_ID, model_name));
            match (e, model_name) {
                (ResolveError::NotFound, Some(_)) => detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("Prompt '{key}' not found"),
                ),
                (e, _) => {
                    tracing::error!(target: "api.chat", prompt = %key, "the agent prompt does not resolve: {e:?}");
                    ApiError::Internal(format!("prompt {key} does not resolve"))
                }
            }
        })?;

    let user =
        user_of(&req).ok_or_else(|| ApiError::Unauthorized("Forbidden by auth provider".into()))?;
    if !entry
        .definition
        .unit_primitives
        .iter()
        .all(|up| user.can(up, &[]))
    {
        return Err(ApiError::forbidden("Unauthorized to access duo chat"));
    }
    let mut events: Vec<Value> = entry
        .definition
        .unit_primitives
        .iter()
        .map(|up| Value::String(format!("request_{up}")))
        .collect();
    for item in request
        .messages
        .iter()
        .flat_map(|m| m.additional_context.iter().flatten())
    {
        let up = format!("include_{}_context", item.category);
        if !user.can(&up, &[]) {
            return Err(ApiError::forbidden(format!("Unauthorized to access {up}")));
        }
        events.push(Value::String(format!("request_{up}")));
    }
    log.set("meta.unit_primitive", UNIT_PRIMITIVE);
    log.set("tracked_internal_events", Value::Array(events));
    log.set("prompt_version", entry.version.to_string());

    if request.model_metadata.is_some() && !state.settings.custom_models.enabled {
        return Err(detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Endpoint override not allowed when custom models are disabled.",
        ));
    }

    let gl_version = req
        .headers()
        .get("x-gitlab-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let flags = enabled_feature_flags(&req, &state);
    log.set("enabled_feature_flags", flags.join(","));
    let offered = tools::offered(
        &user,
        gl_version,
        |f| flags.iter().any(|x| x == f),
        state.settings.custom_models.enabled,
    );
    log.set(
        "duo_chat.agent_available_tools",
        Value::Array(offered.iter().map(|t| Value::from(t.name)).collect()),
    );

    let messages = build_messages(&state, &entry, &request, &offered)?;
    let length: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    log.set("prompt_length", length);

    let class = entry.definition.model.params.model_class_provider;
    let provider = if state.settings.mock_model_responses && class == ModelClass::Anthropic {
        state.provider(std::sync::Arc::new(mock::fake_chat_model()))
    } else {
        provider_for(&state, &entry, request.model_metadata.as_ref())?
    };
    let meta = provider.metadata().clone();
    log.set("model_engine", meta.engine.as_str());
    log.set("model_name", meta.name.as_str());

    let run = |events: Pin<Box<dyn Stream<Item = Event>>>, parser, queue| Run {
        events,
        parser,
        queue,
        offered: offered.clone(),
        log: log.clone(),
    };
    match ModelCall::start(
        &state,
        provider,
        model_request(&entry, messages, true),
        FEATURE,
    )
    .await
    {
        Ok(call) => {
            crate::api::record_overhead(&req, call.waited_for_first);
            Ok(ndjson(
                &req,
                run(
                    Box::pin(call.into_events()),
                    Some(ReactStream::new()),
                    VecDeque::new(),
                ),
            ))
        }
        Err(CallFailure::Quota(refusal)) => Err(crate::quota::refused(&refusal, &log)),
        Err(failure) => {
            tracing::warn!(target: "api.chat", "model call failed: {}", failure.describe());
            log.set("model_exception_message", failure.describe());
            let event = error_event(&failure);
            Ok(ndjson(
                &req,
                run(
                    Box::pin(futures::stream::empty()),
                    None,
                    VecDeque::from([event]),
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::http_client::status_error;
    use crate::models::ModelError;

    #[test]
    fn anthropic_failures_read_as_the_sdks_messages() {
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let status = reqwest::StatusCode::from_u16(529).unwrap();
        let failure = CallFailure::Model(status_error("anthropic", status, body));
        assert_eq!(
            error_message(&failure),
            "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}"
        );
        assert_eq!(
            error_event(&failure),
            AgentEvent::Error {
                message: error_message(&failure),
                retryable: true
            }
        );
        let stream = CallFailure::Model(ModelError::new(
            ModelErrorKind::Stream,
            "anthropic stream error overloaded_error: Overloaded",
        ));
        assert_eq!(
            error_message(&stream),
            "{'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}"
        );
        let bad = CallFailure::Model(status_error(
            "anthropic",
            reqwest::StatusCode::BAD_REQUEST,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
        ));
        assert!(matches!(
            error_event(&bad),
            AgentEvent::Error {
                retryable: false,
                ..
            }
        ));
        let conn = CallFailure::Model(ModelError::new(ModelErrorKind::Connection, "refused"));
        assert_eq!(error_message(&conn), "Connection error.");
    }
}
