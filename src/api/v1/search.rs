//! `POST /v1/search/gitlab-docs` (spec 3.8): search the GitLab documentation for Duo Chat's
//! documentation tool.
//!
//! In the original's order: the body is validated (422, pydantic's objects), the caller must
//! hold `documentation_search` (403 `Unauthorized to search documentations`), then the
//! documentation of the caller's GitLab version is searched on Vertex AI Search
//! ([`crate::docs_search`]). The answer is
//! `{"response": {"results": [{"id", "content", "metadata"}]}, "metadata": {"provider":
//! "vertex-ai", "timestamp"}}`; no data store for the version nor the fallback is a 400
//! `Data store not found.`, any other failure of the search a 500 `Vertex API Search Error.`.
//!
//! With custom models enabled the original searches a local SQLite index (`tmp/docs.db`) and,
//! when there is none, answers no results with provider `sqlite`; this gateway ships no index,
//! so that is its answer there too (with the original's warning in the log). In mock mode
//! (`AIGW_MOCK_MODEL_RESPONSES`) nothing is searched and the results are empty
//! (`docs/compatibility.md`).

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::schema::search::parse_search_request;
use crate::api::{authorize, json_body, record_purpose};
use crate::auth::authz;
use crate::docs_search::SearchError;
use crate::http::access_log::RequestLog;
use crate::http::body::Body;
use crate::http::error::ApiError;
use crate::state::AppState;

/// Register the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::route(
        "/v1/search/gitlab-docs",
        Method::POST,
        gitlab_docs,
    ));
}

async fn gitlab_docs(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let value = json_body(&req, &body)?;
    let request = parse_search_request(&value).map_err(ApiError::Validation)?;
    authorize(&req, &state, &authz::DOCS_SEARCH)?;
    let log = RequestLog::of(&req);
    record_purpose(&log, authz::DOCS_SEARCH.unit_primitive, "duo_chat");

    let (provider, results) = if state.settings.custom_models.enabled {
        tracing::warn!(
            target: "search",
            "SqliteSearch: No database found for documentation searches."
        );
        ("sqlite", Vec::new())
    } else if state.settings.mock_model_responses {
        ("vertex-ai", Vec::new())
    } else {
        let results = state
            .docs_search
            .search(&request.query, &request.version, request.page_size)
            .await
            .map_err(|e| {
                log.set("search_error", e.to_string());
                match e {
                    SearchError::DataStoreNotFound => {
                        ApiError::detail(StatusCode::BAD_REQUEST, "Data store not found.")
                    }
                    SearchError::Api(_) => ApiError::detail(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Vertex API Search Error.",
                    ),
                }
            })?;
        ("vertex-ai", results)
    };
    Ok(HttpResponse::Ok().json(json!({
        "response": {"results": results},
        "metadata": {"provider": provider, "timestamp": chrono::Utc::now().timestamp()},
    })))
}
