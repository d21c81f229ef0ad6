//! The edge middleware: everything every request goes through, in the original's order.
//!
//! ```text
//! correlation id ─▶ CORS ─▶ access log + X-Process-Time + metrics ─▶ authentication ─▶ route
//! ```
//!
//! * `X-Request-ID` is echoed when the client sends one (any value, as the original) or generated
//!   as 32 hex characters, and becomes the `correlation_id` of every log line of the request.
//! * CORS as Starlette's `CORSMiddleware(allow_origins=["*"], allow_methods=["POST"],
//!   allow_headers=["*"])`: preflights are answered here, before authentication.
//! * Authentication runs before routing, so an unauthenticated request to an unknown path is a
//!   401, not a 404. The authenticated [`User`] is put in the request's extensions.
//! * `http_request_duration_seconds{handler,method,status}` is observed when the response
//!   starts (streaming time excluded, as the original), for matched routes only.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::headers;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use serde_json::Value;
use tracing::Instrument;

use super::access_log::{process_cpu_seconds, LoggedBody, PendingLine, RequestLog};
use super::error::ApiError;
use crate::auth::{User, SKIP_PATHS};
use crate::logging::Fields;
use crate::state::AppState;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_PROCESS_TIME: HeaderName = HeaderName::from_static("x-process-time");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_GITLAB_RAILS_SEND_START: HeaderName = HeaderName::from_static("x-gitlab-rails-send-start");

/// The `gitlab_*` access-log fields and the headers they come from, in the original's order.
static GITLAB_HEADERS: [(&str, HeaderName); 9] = [
    (
        "gitlab_language_server_version",
        HeaderName::from_static("x-gitlab-language-server-version"),
    ),
    ("gitlab_instance_id", headers::X_GITLAB_INSTANCE_ID),
    ("gitlab_global_user_id", headers::X_GITLAB_GLOBAL_USER_ID),
    (
        "gitlab_host_name",
        HeaderName::from_static("x-gitlab-host-name"),
    ),
    (
        "gitlab_version",
        HeaderName::from_static("x-gitlab-version"),
    ),
    (
        "gitlab_saas_duo_pro_namespace_ids",
        HeaderName::from_static("x-gitlab-saas-duo-pro-namespace-ids"),
    ),
    (
        "gitlab_feature_enabled_by_namespace_ids",
        HeaderName::from_static("x-gitlab-feature-enabled-by-namespace-ids"),
    ),
    ("gitlab_realm", headers::X_GITLAB_REALM),
    ("gitlab_duo_seat_count", headers::X_GITLAB_DUO_SEAT_COUNT),
];

/// A new correlation id: 32 lower-case hex characters, like `uuid4().hex`.
pub fn new_correlation_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn correlation_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(new_correlation_id)
}

/// Starlette's preflight answer.
fn preflight(req: &ServiceRequest) -> HttpResponse {
    let requested_method = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut res = if requested_method == "POST" {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("OK")
    } else {
        HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body("Disallowed CORS method")
    };
    let headers = res.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    res
}

fn header_str(req: &ServiceRequest, name: &HeaderName) -> Value {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| Value::String(v.to_string()))
        .unwrap_or(Value::Null)
}

/// The route template as the original names it (`/v1/prompts/{prompt_id:path}`).
pub fn handler_label(pattern: &str) -> String {
    pattern.replace(":.*}", ":path}").replace(":.+}", ":path}")
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The edge middleware (see the module docs).
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<LoggedBody<BoxBody>>, actix_web::Error> {
    let arrived = Instant::now();
    let arrived_at = chrono::Utc::now();
    let cpu_at_arrival = process_cpu_seconds();
    let cid = correlation_id(&req);
    let cid_header = HeaderValue::from_str(&cid).unwrap_or(HeaderValue::from_static("invalid"));
    let has_origin = req.headers().contains_key(header::ORIGIN);

    // CORS preflight: answered before the access log and authentication, as Starlette does.
    if req.method() == Method::OPTIONS
        && has_origin
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let answer = preflight(&req);
        let mut res = req.into_response(answer);
        res.headers_mut().insert(X_REQUEST_ID.clone(), cid_header);
        return Ok(res.map_body(|_, b| LoggedBody::detached(b)));
    }

    let state = req.app_data::<web::Data<AppState>>().cloned();
    let log = RequestLog::default();
    req.extensions_mut().insert(log.clone());
    req.extensions_mut().insert(Arrival(arrived));
    let span = tracing::info_span!("request", correlation_id = %cid);

    let method = req.method().clone();
    // Until the response starts, the line is written by this guard should the request be
    // dropped (a client that went away: the server drops its handler).
    let mut unanswered = Unanswered {
        head: Some(request_head(&req, &cid, arrived_at)),
        method: method.clone(),
        arrived,
        cpu_at_arrival,
        log: log.clone(),
    };

    // Authentication, before routing.
    let outcome = match &state {
        Some(state) => {
            state
                .auth
                .authenticate(req.path(), req.headers())
                .instrument(span.clone())
                .await
        }
        None => None,
    };
    let mut refused = None;
    if let Some(outcome) = outcome {
        log.set("auth_duration_s", outcome.duration_s);
        if let Some(issuer) = &outcome.token_issuer {
            log.set("token_issuer", issuer.as_str());
        }
        if let Some(realm) = &outcome.gitlab_realm {
            log.set("gitlab_realm", realm.as_str());
        }
        match outcome.result {
            Ok(user) => {
                req.extensions_mut().insert(Arc::new(user));
            }
            Err(message) => {
                log.set(
                    "auth_error_details",
                    outcome.error_details.unwrap_or_else(|| message.clone()),
                );
                log.set("http_exception_details", message.as_str());
                refused = Some(message);
            }
        }
    }

    let mut res: ServiceResponse<BoxBody> = match refused {
        Some(message) => req.into_response(ApiError::Unauthorized(message).error_response()),
        // Routing needs sole ownership of the request, so no clone of it may be held here;
        // an error from the inner service (none of ours returns one) goes up to actix.
        None => match next.call(req).instrument(span).await {
            Ok(res) => res.map_into_boxed_body(),
            Err(e) => {
                unanswered.head = None;
                return Err(e);
            }
        },
    };
    // Answered: the line is this function's to write now. (The head is always there: only the
    // error return above clears it.)
    let Some(head) = unanswered.head.take() else {
        return Ok(res.map_body(|_, b| LoggedBody::detached(b)));
    };

    let response_start = arrived.elapsed().as_secs_f64();
    let headers = res.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), cid_header);
    if let Ok(v) = HeaderValue::from_str(&response_start.to_string()) {
        headers.insert(X_PROCESS_TIME.clone(), v);
    }
    if has_origin {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    let status = res.status();
    if let Some(error) = res.response().error() {
        if status.is_server_error() {
            log.set("exception_message", error.to_string());
        }
    }

    // Metrics: matched routes only, health checks excluded, as the original.
    if let Some(pattern) = res.request().match_pattern() {
        if !SKIP_PATHS.contains(&pattern.as_str()) {
            let handler = if pattern.contains(':') {
                Cow::Owned(handler_label(&pattern))
            } else {
                Cow::Borrowed(pattern.as_str())
            };
            crate::telemetry::histogram(
                "http_request_duration_seconds",
                &[
                    ("handler", &handler),
                    ("method", method.as_str()),
                    ("status", status_class(status)),
                ],
            )
            .record(response_start);
        }
    }

    let pending = head.into_line(
        &method,
        status.as_u16(),
        arrived,
        response_start,
        cpu_at_arrival,
        log,
    );
    Ok(res.map_body(move |_, body| LoggedBody::new(body, pending)))
}

/// The standard access-log fields known when the request arrives, in the original's order.
/// `<ip>:<port> - "<METHOD> <path> HTTP/<ver>" <status>`, appended piece by piece (no
/// formatting machinery on the hot path).
fn access_message(
    client_ip: &str,
    client_port: u16,
    method: &str,
    path_query: &str,
    http_version: &str,
    status: u16,
) -> String {
    let mut numbers = itoa::Buffer::new();
    let mut out = String::with_capacity(
        client_ip.len() + method.len() + path_query.len() + http_version.len() + 32,
    );
    out.push_str(client_ip);
    out.push(':');
    out.push_str(numbers.format(client_port));
    out.push_str(" - \"");
    out.push_str(method);
    out.push(' ');
    out.push_str(path_query);
    out.push_str(" HTTP/");
    out.push_str(http_version);
    out.push_str("\" ");
    out.push_str(numbers.format(status));
    out
}

fn request_head(
    req: &ServiceRequest,
    cid: &str,
    arrived_at: chrono::DateTime<chrono::Utc>,
) -> RequestHead {
    let conn = req.connection_info();
    let uri = req.uri();
    let path_query = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let host = conn.host().to_string();
    let scheme = conn.scheme().to_string();
    // With a proxy in front (forwarded_allow_ips="*" in the original), the client is the first
    // X-Forwarded-For address and the port is unknown.
    let forwarded = req
        .headers()
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string());
    let peer = req.peer_addr();
    let (client_ip, client_port) = match forwarded {
        Some(ip) => (ip, 0u16),
        None => (
            peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            peer.map(|p| p.port()).unwrap_or(0),
        ),
    };
    let http_version = match req.version() {
        actix_web::http::Version::HTTP_09 => "0.9",
        actix_web::http::Version::HTTP_10 => "1.0",
        actix_web::http::Version::HTTP_2 => "2",
        actix_web::http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let duration_request = req
        .headers()
        .get(&X_GITLAB_RAILS_SEND_START)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|sent| arrived_at.timestamp_micros() as f64 / 1e6 - sent)
        .unwrap_or(-1.0);

    let mut m = Fields::with_capacity(48);
    let mut url = String::with_capacity(scheme.len() + 3 + host.len() + path_query.len());
    url.push_str(&scheme);
    url.push_str("://");
    url.push_str(&host);
    url.push_str(&path_query);
    m.push_new("url", Value::String(url));
    m.push_new("path", Value::String(uri.path().to_string()));
    m.push_new("status_code", Value::Null);
    m.push_new("method", Value::String(req.method().as_str().to_owned()));
    m.push_new("correlation_id", Value::String(cid.to_string()));
    m.push_new("http_version", Value::String(http_version.into()));
    m.push_new("client_ip", Value::String(client_ip.clone()));
    m.push_new("client_port", Value::from(client_port));
    // Filled in when the body ends; inserted now to keep the original's field order.
    m.push_new("duration_s", Value::Null);
    m.push_new("duration_request", Value::from(duration_request));
    m.push_new(
        "request_arrived_at",
        Value::String(crate::logging::rfc3339_micros(&arrived_at)),
    );
    for timing in [
        "response_start_duration_s",
        "first_chunk_duration_s",
        "cpu_s",
    ] {
        m.push_new(timing, Value::Null);
    }
    m.push_new("content_type", header_str(req, &header::CONTENT_TYPE));
    m.push_new("user_agent", header_str(req, &header::USER_AGENT));
    for (field, name) in &GITLAB_HEADERS {
        m.push_new(field, header_str(req, name));
    }
    RequestHead {
        fields: m,
        path_query,
        client_ip,
        client_port,
        http_version,
    }
}

/// Writes the access-log line (status 499, `client_disconnected`) of a request dropped before
/// its response started.
struct Unanswered {
    head: Option<RequestHead>,
    method: Method,
    arrived: Instant,
    cpu_at_arrival: f64,
    log: RequestLog,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(head) = self.head.take() else {
            return;
        };
        head.into_line(
            &self.method,
            499,
            self.arrived,
            self.arrived.elapsed().as_secs_f64(),
            self.cpu_at_arrival,
            self.log.clone(),
        )
        .write_unanswered();
    }
}

/// What [`request_head`] learns: the fields, and what the access-log message needs.
struct RequestHead {
    fields: Fields,
    path_query: String,
    client_ip: String,
    client_port: u16,
    http_version: &'static str,
}

impl RequestHead {
    /// The access-log line of this request, answered with `status`.
    fn into_line(
        self,
        method: &Method,
        status: u16,
        arrived: Instant,
        response_start_s: f64,
        cpu_at_arrival: f64,
        log: RequestLog,
    ) -> PendingLine {
        let RequestHead {
            mut fields,
            path_query,
            client_ip,
            client_port,
            http_version,
        } = self;
        let message = access_message(
            &client_ip,
            client_port,
            method.as_str(),
            &path_query,
            http_version,
            status,
        );
        fields.set("status_code", Value::from(status));
        PendingLine {
            head: fields,
            message,
            arrived,
            response_start_s,
            cpu_at_arrival,
            log,
        }
    }
}

/// When the request arrived, put in its extensions by [`edge`].
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// When `req` arrived, if it went through [`edge`].
pub fn arrival_of(req: &impl HttpMessage) -> Option<Instant> {
    req.extensions().get::<Arrival>().map(|a| a.0)
}

/// The authenticated user of a request, put there by [`edge`].
pub fn user_of(req: &impl HttpMessage) -> Option<Arc<User>> {
    req.extensions().get::<Arc<User>>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_32_lower_case_hex_digits() {
        for _ in 0..1000 {
            let id = new_correlation_id();
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
    }

    #[test]
    fn the_access_message_reads_as_the_format_did() {
        for (ip, port, method, path, version, status) in [
            (
                "127.0.0.1",
                45770,
                "POST",
                "/v2/code/completions?a=b",
                "1.1",
                200,
            ),
            ("10.0.0.1", 0, "GET", "/", "2", 503),
            ("::1", 65535, "OPTIONS", "/x y", "1.0", 99),
        ] {
            assert_eq!(
                access_message(ip, port, method, path, version, status),
                format!("{ip}:{port} - \"{method} {path} HTTP/{version}\" {status}")
            );
        }
    }
}
