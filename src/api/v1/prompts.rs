//! `POST /v1/prompts/{prompt_id}`: run a registry prompt (spec 3.7, 6, 14.6).
//!
//! In the original's order: the body is validated (422, pydantic's objects); the prompt is looked
//! up by id, the type from `model_metadata.name` / `AIGW_DEFAULT_PROMPTS` / `base`, and the
//! version constraint (`prompt_version`, default `^1.0.0`): an unparsable constraint is a 422
//! `Invalid version constraint`, an unknown prompt a 404 `Prompt '<id>' not found`; the caller
//! must hold **every** unit primitive of the prompt (403 `Unauthorized to access '<id>'`); agent
//! prompts (`chat/react`) are refused with 422 `Prompt '<id>' is not supported`; the templates
//! are rendered strictly (a missing input is LangChain's 422, never an empty string); the model
//! answers whole — the response is the text as a **JSON string** — or streamed as raw text
//! labelled `text/event-stream`.
//!
//! An upstream that answers with an HTTP error status is reported as the original does: 421
//! `{"detail": "<status>: <reason>"}`.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use crate::api::json_body;
use crate::api::prompt_model::{model_request, parse_model_metadata, provider_for, ModelMetadata};
use crate::api::schema::{Errors, Loc, Str};
use crate::api::streaming;
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::inference::{CallFailure, ModelCall};
use crate::prompts::registry::AGENT_PROMPTS;
use crate::prompts::render::RenderError;
use crate::prompts::version::DEFAULT_CONSTRAINT;
use crate::prompts::ResolveError;
use crate::state::AppState;

/// The feature category of registry prompts.
const FEATURE: &str = "ai_abstraction_layer";

/// Register the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::route(
        "/v1/prompts/{prompt_id:.+}",
        Method::POST,
        invoke,
    ));
}

/// A validated request body.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRequest {
    /// Template inputs.
    pub inputs: Map<String, Value>,
    /// The version constraint.
    pub prompt_version: Option<String>,
    /// Stream the answer as raw text.
    pub stream: bool,
    /// A model override.
    pub model_metadata: Option<ModelMetadata>,
}

/// Validate a body as the original's pydantic model does.
pub fn parse_request(body: &Value) -> Result<PromptRequest, Vec<Value>> {
    let mut errors = Errors::new();
    let loc = Loc::root("body");
    let Some(fields) = errors.model(body, &loc) else {
        return Err(errors.into_values());
    };
    let inputs = errors.required(fields, "inputs", &loc, |e, v, l| e.dict(v, l).cloned());
    let prompt_version = errors.optional(fields, "prompt_version", &loc, None, |e, v, l| {
        e.string(v, l, Str::ANY)
    });
    let stream = errors.optional(fields, "stream", &loc, Some(false), |e, v, l| {
        e.boolean(v, l)
    });
    let model_metadata =
        errors.optional(fields, "model_metadata", &loc, None, parse_model_metadata);
    errors.finish(|| PromptRequest {
        inputs: inputs.unwrap_or_default(),
        prompt_version: prompt_version.flatten(),
        stream: stream.flatten().unwrap_or(false),
        model_metadata: model_metadata.flatten(),
    })
}

fn detail(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::detail(status, message)
}

/// The original's answer to a failed model call: 421 with the upstream's status when it gave one.
fn failure_response(failure: &CallFailure, log: &RequestLog) -> ApiError {
    if let CallFailure::Quota(refusal) = failure {
        return crate::quota::refused(refusal, log);
    }
    log.set("model_exception_message", failure.describe());
    if let CallFailure::Model(e) = failure {
        if let Some(status) = e.status() {
            log.set("model_exception_status_code", status);
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            return detail(
                StatusCode::MISDIRECTED_REQUEST,
                format!("{status}: {reason}"),
            );
        }
    }
    ApiError::inference_failed()
}

async fn invoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let prompt_id = path.into_inner();
    let value = json_body(&req, &body)?;
    let request = parse_request(&value).map_err(ApiError::Validation)?;
    let log = RequestLog::of(&req);
    log.set("meta.feature_category", FEATURE);

    let registry = &state.prompts;
    let constraint = request
        .prompt_version
        .as_deref()
        .unwrap_or(DEFAULT_CONSTRAINT);
    let model_name = request.model_metadata.as_ref().map(|m| m.name.as_str());
    let entry = registry
        .resolve(&prompt_id, constraint, model_name)
        .map_err(|e| match e {
            ResolveError::InvalidConstraint => detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid version constraint",
            ),
            ResolveError::NotFound => detail(
                StatusCode::NOT_FOUND,
                format!("Prompt '{prompt_id}' not found"),
            ),
            ResolveError::NoMatchingVersion => detail(
                StatusCode::NOT_FOUND,
                format!("Prompt '{prompt_id}' has no version matching '{constraint}'"),
            ),
        })?;

    let user =
        user_of(&req).ok_or_else(|| ApiError::Unauthorized("Forbidden by auth provider".into()))?;
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
    let events: Vec<Value> = entry
        .definition
        .unit_primitives
        .iter()
        .map(|up| Value::String(format!("request_{up}")))
        .collect();
    if let Some(up) = entry.definition.unit_primitives.first() {
        log.set("meta.unit_primitive", up.as_str());
    }
    log.set("tracked_internal_events", Value::Array(events));
    log.set("prompt_version", entry.version.to_string());

    if AGENT_PROMPTS.contains(&prompt_id.as_str()) {
        return Err(detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Prompt '{prompt_id}' is not supported"),
        ));
    }
    if let Some(meta) = &request.model_metadata {
        let overrides = meta.endpoint.is_some() || meta.api_key.is_some();
        if overrides && !state.settings.custom_models.enabled {
            return Err(detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Endpoint override not allowed when custom models are disabled.",
            ));
        }
    }
    let messages = registry
        .render(&entry, &request.inputs)
        .map_err(|e| match e {
            RenderError::MissingVariables(m) | RenderError::Template(m) => {
                detail(StatusCode::UNPROCESSABLE_ENTITY, m)
            }
        })?;
    let length: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    log.set("prompt_length", length);

    let provider = provider_for(&state, &entry, request.model_metadata.as_ref())?;
    let meta = provider.metadata().clone();
    log.set("model_engine", meta.engine.as_str());
    log.set("model_name", meta.name.as_str());
    let call = ModelCall::start(
        &state,
        provider,
        model_request(&entry, messages, request.stream),
        FEATURE,
    )
    .await
    .map_err(|f| failure_response(&f, &log))?;

    let mut builder = HttpResponse::Ok();
    crate::api::record_overhead(&req, call.waited_for_first);
    if request.stream {
        return Ok(streaming::raw_text(
            builder,
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
    Ok(builder
        .content_type("application/json")
        .body(serde_json::to_string(answer.text()).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_validate_like_pydantic() {
        let ok = parse_request(&json!({"inputs": {"a": 1}, "stream": true})).unwrap();
        assert!(ok.stream);
        assert_eq!(ok.prompt_version, None);
        let err = parse_request(&json!({"stream": "maybe"})).unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(err[0]["type"], "missing");
        assert_eq!(err[0]["loc"], json!(["body", "inputs"]));
        assert_eq!(err[1]["type"], "bool_parsing");
        let err =
            parse_request(&json!({"inputs": [], "model_metadata": {"name": "x"}})).unwrap_err();
        assert_eq!(err[0]["type"], "dict_type");
        assert_eq!(err[1]["loc"], json!(["body", "model_metadata", "provider"]));
    }
}
