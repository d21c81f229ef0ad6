//! `POST /v1/proxy/anthropic/{path}` and `POST /v1/proxy/vertex-ai/{path}` (spec 3.9): GitLab
//! speaks the provider's own API through the gateway, which authorizes, filters and adds our
//! credentials.
//!
//! Checks, in the original's order, first failure wins:
//!
//! 1. `x-gitlab-unit-primitive` present (400 `Missing x-gitlab-unit-primitive header`), a known
//!    unit primitive (400 `Unknown unit primitive header <v>`), held by the caller (403
//!    `Unauthorized to access <v>`), usable through a proxy (400 `This endpoint cannot be used
//!    for <v> purpose`);
//! 2. the upstream path is allowed (Anthropic: exactly `/v1/complete` or `/v1/messages`; Vertex:
//!    `.../publishers/google/models/<model>:predict|serverStreamingPredict`, rewritten to our
//!    project and location), else 404 `Not found`;
//! 3. the body is JSON (400 `Invalid JSON`) naming an allowed model (400 `Failed to extract model
//!    name` / `Unsupported model`);
//! 4. our credentials exist (Anthropic: 400 `API key not found`).
//!
//! Then the request goes upstream with **only** the allowed headers (Anthropic: `accept`,
//! `content-type`, `anthropic-version`; Vertex: `content-type`) plus our credential (`x-api-key`
//! or `Authorization: Bearer <Google token>`); the client's own `Authorization` never leaves. The
//! body is sent as the client's bytes, not re-encoded. The answer keeps the upstream's status and
//! `content-type` (nothing else); a streamed answer is relayed chunk by chunk as it arrives, a
//! whole one as the upstream's bytes. Failing to reach the upstream is a 502 `Bad Gateway`.
//!
//! After step 1 a request may be drawn for abuse detection (spec 9.2, `crate::proxy::abuse`);
//! the check starts only once a proxied answer has been sent, and an error answer of ours
//! (400, 404, 502, ...) starts none, as the original's background task only runs after a
//! response.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde_json::Value;

use crate::auth::unit_primitives;
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
use crate::http::edge::user_of;
use crate::http::error::ApiError;
use crate::inference::InferenceGuard;
use crate::models::ModelMetadata;
use crate::proxy::abuse::{self, Sample};
use crate::state::AppState;

/// The header naming the unit primitive a proxied call serves.
pub const UNIT_PRIMITIVE_HEADER: &str = "x-gitlab-unit-primitive";

/// Models the proxies forward: the original's `KindAnthropicModel` and `KindVertexTextModel`,
/// the same enums the code-suggestion schemas validate against.
pub use crate::api::schema::code::{ANTHROPIC_MODELS, VERTEX_MODELS};

const ANTHROPIC_PATHS: &[&str] = &["/v1/complete", "/v1/messages"];
const ANTHROPIC_HEADERS: &[&str] = &["accept", "content-type", "anthropic-version"];
const VERTEX_HEADERS: &[&str] = &["content-type"];

/// Register the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::route(
        "/v1/proxy/anthropic/{path:.*}",
        Method::POST,
        anthropic,
    ))
    .service(crate::api::route(
        "/v1/proxy/vertex-ai/{path:.*}",
        Method::POST,
        vertex_ai,
    ));
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::detail(StatusCode::BAD_REQUEST, message)
}

fn not_found() -> ApiError {
    ApiError::detail(StatusCode::NOT_FOUND, "Not found")
}

fn bad_gateway() -> ApiError {
    ApiError::detail(StatusCode::BAD_GATEWAY, "Bad Gateway")
}

/// Step 1 of the module docs; the unit primitive and its feature category.
pub fn authorize(req: &HttpRequest) -> Result<(String, &'static str), ApiError> {
    let Some(value) = req.headers().get(UNIT_PRIMITIVE_HEADER) else {
        return Err(bad_request(format!(
            "Missing {UNIT_PRIMITIVE_HEADER} header"
        )));
    };
    let up = String::from_utf8_lossy(value.as_bytes()).into_owned();
    if !unit_primitives::is_known(&up) {
        return Err(bad_request(format!("Unknown unit primitive header {up}")));
    }
    let user =
        user_of(req).ok_or_else(|| ApiError::Unauthorized("Forbidden by auth provider".into()))?;
    if !user.can(&up, &[]) {
        return Err(ApiError::forbidden(format!("Unauthorized to access {up}")));
    }
    let Some(category) = unit_primitives::proxy_feature_category(&up) else {
        return Err(bad_request(format!(
            "This endpoint cannot be used for {up} purpose"
        )));
    };
    let log = RequestLog::of(req);
    log.set("meta.unit_primitive", up.as_str());
    log.set("meta.feature_category", category);
    log.set(
        "tracked_internal_events",
        Value::Array(vec![Value::String(format!("request_{up}"))]),
    );
    Ok((up, category))
}

/// The path after `/anthropic/` (or `/vertex-ai/`), with its leading slash, as the original's
/// `re.sub("^(.*?)/<service>/", "/", path)` computes it.
fn upstream_path(request_path: &str, service: &str) -> String {
    let marker = format!("/{service}/");
    match request_path.find(&marker) {
        Some(i) => format!("/{}", &request_path[i + marker.len()..]),
        None => request_path.to_string(),
    }
}

fn json_body(body: &Body) -> Result<Value, ApiError> {
    serde_json::from_slice(&body.0).map_err(|_| bad_request("Invalid JSON"))
}

/// The client's headers that may go upstream. The body is JSON (it was checked), so it is
/// labelled `application/json` when the client did not say, as the original's `httpx` does.
fn forwarded_headers(req: &HttpRequest, allowed: &[&str]) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for name in allowed {
        if let Some(value) = req.headers().get(*name) {
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.insert(n, v);
            }
        }
    }
    if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
    }
    headers
}

fn is_truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// The original's mock-mode answer.
fn mocked() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"response": "mocked"}"#)
}

/// A call to send upstream.
struct Outgoing {
    url: String,
    headers: reqwest::header::HeaderMap,
    stream: bool,
    engine: &'static str,
    model: String,
}

async fn forward(
    state: &AppState,
    outgoing: Outgoing,
    body: Body,
    category: &'static str,
    log: &RequestLog,
) -> Result<HttpResponse, ApiError> {
    log.set("model_engine", outgoing.engine);
    log.set("model_name", outgoing.model.as_str());
    let meta = ModelMetadata::new(outgoing.engine, outgoing.model.clone());
    let mut guard = InferenceGuard::new(&meta, category, outgoing.stream);
    let sent = state
        .upstreams
        .http
        .post(&outgoing.url)
        .headers(outgoing.headers)
        .body(body.0)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            guard.fail();
            log.set("model_exception_message", e.to_string());
            tracing::warn!(target: "api.proxy", engine = outgoing.engine, error = %e, "upstream unreachable");
            return Err(bad_gateway());
        }
    };
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        guard.fail();
        log.set("model_exception_status_code", status.as_u16());
    }
    let mut builder = HttpResponse::build(status);
    if let Some(ct) = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
    {
        builder.insert_header((header::CONTENT_TYPE, ct));
    }
    if !outgoing.stream {
        let bytes = response.bytes().await.map_err(|e| {
            guard.fail();
            log.set("model_exception_message", e.to_string());
            bad_gateway()
        })?;
        return Ok(builder.body(bytes));
    }
    builder
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header(("x-accel-buffering", HeaderValue::from_static("no")));
    // Each upstream read becomes one body chunk, written at once; the guard lives as long as
    // the stream and records the call when it ends (or when the client goes away).
    let body = response.bytes_stream().map(move |chunk| {
        if chunk.is_err() {
            guard.fail();
        }
        chunk.map_err(|e| {
            tracing::warn!(target: "api.proxy", error = %e, "upstream stream failed mid-response");
            crate::api::streaming::StreamAborted(e.to_string())
        })
    });
    Ok(builder.streaming(body))
}

/// The abuse-detection sample of this request, when it is drawn (spec 9.2; never in mock mode,
/// where nothing goes upstream). Whether it was is in the access log.
fn abuse_sample(
    req: &HttpRequest,
    state: &AppState,
    body: &Body,
    unit_primitive: &str,
) -> Option<Sample> {
    let detector = &state.abuse;
    if !detector.enabled() || state.settings.mock_model_responses {
        return None;
    }
    let sampled = detector.should_detect();
    RequestLog::of(req).set("abuse_detection_sampled", sampled);
    sampled.then(|| detector.sample(req, &body.0, unit_primitive))
}

/// `response`, with the sampled request's abuse check started once it has been sent.
fn with_abuse_check(
    state: &web::Data<AppState>,
    sample: Option<Sample>,
    response: HttpResponse,
) -> HttpResponse {
    match sample {
        None => response,
        Some(sample) => {
            let state = web::Data::clone(state);
            abuse::after_sent(response, move || {
                let detector = std::sync::Arc::clone(&state.abuse);
                detector.spawn(state, sample);
            })
        }
    }
}

async fn anthropic(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let (up, category) = authorize(&req)?;
    let sample = abuse_sample(&req, &state, &body, &up);
    let path = upstream_path(req.path(), "anthropic");
    if !ANTHROPIC_PATHS.contains(&path.as_str()) {
        return Err(not_found());
    }
    let json = json_body(&body)?;
    let model = match json.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(bad_request("Unsupported model")),
        None => return Err(bad_request("Failed to extract model name")),
    };
    if !ANTHROPIC_MODELS.contains(&model.as_str()) {
        return Err(bad_request("Unsupported model"));
    }
    let stream = is_truthy(json.get("stream"));
    let mut headers = forwarded_headers(&req, ANTHROPIC_HEADERS);
    let Some(key) = state.upstreams.anthropic_api_key.as_deref() else {
        return Err(bad_request("API key not found"));
    };
    let key = reqwest::header::HeaderValue::from_str(key)
        .map_err(|_| bad_request("API key not found"))?;
    headers.insert("x-api-key", key);
    if state.settings.mock_model_responses {
        return Ok(mocked());
    }
    let outgoing = Outgoing {
        url: format!("{}{path}", state.upstreams.anthropic_base),
        headers,
        stream,
        engine: "anthropic",
        model,
    };
    let response = forward(&state, outgoing, body, category, &RequestLog::of(&req)).await?;
    Ok(with_abuse_check(&state, sample, response))
}

fn vertex_path_pattern() -> Option<&'static regex::Regex> {
    static PATTERN: OnceLock<Option<regex::Regex>> = OnceLock::new();
    PATTERN
        .get_or_init(|| {
            regex::Regex::new(
                r"/v1/projects/.*/locations/.*/publishers/google/models/(.*):(predict|serverStreamingPredict)(\?alt=sse)?",
            )
            .ok()
        })
        .as_ref()
}

/// Model, action and SSE flag of a Vertex path, as the original's regex reads them.
pub fn vertex_target(path: &str) -> Option<(String, String, String)> {
    let caps = vertex_path_pattern()?.captures(path)?;
    Some((
        caps.get(1)?.as_str().to_string(),
        caps.get(2)?.as_str().to_string(),
        caps.get(3)
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
    ))
}

async fn vertex_ai(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let (up, category) = authorize(&req)?;
    let sample = abuse_sample(&req, &state, &body, &up);
    let (model, action, sse) = vertex_target(req.path()).ok_or_else(not_found)?;
    let upstreams = &state.upstreams;
    let path = format!(
        "/v1/projects/{}/locations/{}/publishers/google/models/{model}:{action}{sse}",
        upstreams.vertex_project, upstreams.vertex_location
    );
    let _json = json_body(&body)?;
    if !VERTEX_MODELS.contains(&model.as_str()) {
        return Err(bad_request("Unsupported model"));
    }
    let stream = action == "serverStreamingPredict";
    if state.settings.mock_model_responses {
        return Ok(mocked());
    }
    let mut headers = forwarded_headers(&req, VERTEX_HEADERS);
    let log = RequestLog::of(&req);
    let token = upstreams.google_token.token().await.map_err(|e| {
        log.set("model_exception_message", e.as_str());
        tracing::warn!(target: "api.proxy", error = %e, "no Google access token");
        bad_gateway()
    })?;
    let bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| bad_gateway())?;
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let outgoing = Outgoing {
        url: format!("{}{path}", upstreams.vertex_base),
        headers,
        stream,
        engine: "vertex-ai",
        model,
    };
    let response = forward(&state, outgoing, body, category, &log).await?;
    Ok(with_abuse_check(&state, sample, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_paths_as_the_original_computes_them() {
        assert_eq!(
            upstream_path("/v1/proxy/anthropic/v1/messages", "anthropic"),
            "/v1/messages"
        );
        assert_eq!(
            upstream_path("/v1/proxy/anthropic/v1/anthropic/v1/x", "anthropic"),
            "/v1/anthropic/v1/x"
        );
    }

    #[test]
    fn vertex_paths() {
        let (m, a, s) = vertex_target(
            "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/code-gecko@002:predict",
        )
        .unwrap();
        assert_eq!(
            (m.as_str(), a.as_str(), s.as_str()),
            ("code-gecko@002", "predict", "")
        );
        let (_, a, _) = vertex_target(
            "/v1/proxy/vertex-ai/v1/projects/p/locations/l/publishers/google/models/x:serverStreamingPredict",
        )
        .unwrap();
        assert_eq!(a, "serverStreamingPredict");
        assert!(vertex_target("/v1/proxy/vertex-ai/v1/models/x:predict").is_none());
    }
}
