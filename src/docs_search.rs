//! GitLab documentation search on Vertex AI Search (Discovery Engine), for
//! `POST /v1/search/gitlab-docs` (spec 3.8).
//!
//! The documentation of each GitLab release is a data store named `gitlab-docs-<major>-<minor>`,
//! picked from the caller's version (`17.3.0-ee` → `gitlab-docs-17-3`). A version that has no
//! data store, or that does not start with `<major>.<minor>`, is searched in the store of
//! `AIGW_VERTEX_SEARCH__FALLBACK_DATASTORE_VERSION` instead, as the original does; when that
//! one is missing too the search fails with [`SearchError::DataStoreNotFound`].
//!
//! The call is Discovery Engine's REST `search` on the store's `default_config` serving
//! configuration in location `global`, with query expansion and spell correction `AUTO` (the
//! original's settings; it uses the gRPC client, whose messages are the same), authenticated
//! with the gateway's Google credentials. Each result is `{id, content, metadata}` from the
//! document's `structData`, and the list is cut once the results reach an estimated 8,000
//! tokens (words × 1.4), as the original cuts it. A search that has not answered within
//! `AIGW_MODELS__IDLE_TIMEOUT_S` fails like any other search failure.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Settings;
use crate::models::google_auth::GoogleAuth;
use crate::models::http_client::{base_url, Upstream};
use crate::models::{ModelError, ModelErrorKind};

/// Results are cut at this many estimated tokens.
const MAX_TOKENS: u64 = 8_000;

/// Why a search failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// Neither the caller's version nor the fallback has a data store.
    #[error("data store not found")]
    DataStoreNotFound,
    /// Discovery Engine failed, or its answer could not be read.
    #[error("{0}")]
    Api(String),
}

/// The documentation search client.
#[derive(Debug)]
pub struct DocsSearch {
    upstream: Upstream,
    auth: Arc<GoogleAuth>,
    base_url: String,
    project: String,
    fallback_version: String,
    deadline: Duration,
}

/// The data store of GitLab version `version`: `gitlab-docs-<major>-<minor>`.
pub fn data_store_id(version: &str) -> Option<String> {
    let (major, rest) = leading_digits(version)?;
    let rest = rest.strip_prefix('.')?;
    let (minor, _) = leading_digits(rest)?;
    Some(format!("gitlab-docs-{major}-{minor}"))
}

/// The ASCII digits `text` starts with (at least one), and what follows them.
fn leading_digits(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

/// The estimated tokens of a text, as the original counts them: `int(words × 1.4)`.
fn estimated_tokens(text: &str) -> u64 {
    // The same double product and truncation as Python's `int(len(text.split()) * 1.4)`.
    (text.split_whitespace().count() as f64 * 1.4) as u64
}

/// `{id, content, metadata}` of each result of a Discovery Engine answer, cut at
/// [`MAX_TOKENS`] estimated tokens of content.
pub fn results_of(answer: &Value) -> Result<Vec<Value>, SearchError> {
    let Some(results) = answer.get("results") else {
        // An empty answer carries no `results` at all.
        return Ok(Vec::new());
    };
    let results = results
        .as_array()
        .ok_or_else(|| SearchError::Api("search answer: results is not a list".into()))?;
    let mut kept = Vec::with_capacity(results.len());
    let mut tokens = 0u64;
    for result in results {
        let document = &result["document"];
        let data = &document["structData"];
        let (Some(id), Some(content)) = (document["id"].as_str(), data["content"].as_str()) else {
            return Err(SearchError::Api(
                "search answer: a result without document.id or structData.content".into(),
            ));
        };
        tokens += estimated_tokens(content);
        if tokens > MAX_TOKENS {
            break;
        }
        kept.push(json!({"id": id, "content": content, "metadata": data["metadata"]}));
    }
    Ok(kept)
}

impl DocsSearch {
    /// The client of `AIGW_VERTEX_SEARCH__*`: its endpoint (default
    /// `discoveryengine.googleapis.com`), project and fallback version, with `auth`'s Google
    /// tokens and the model idle timeout as each store's deadline.
    pub fn from_settings(settings: &Settings, auth: Arc<GoogleAuth>) -> Result<Self, String> {
        let search = &settings.vertex_search;
        let endpoint = if search.endpoint.is_empty() {
            "discoveryengine.googleapis.com"
        } else {
            &search.endpoint
        };
        Ok(Self {
            upstream: Upstream::new("vertex-search", &settings.models)?,
            auth,
            base_url: base_url(endpoint),
            project: search.project.clone(),
            fallback_version: search.fallback_datastore_version.clone(),
            deadline: Duration::from_secs_f64(settings.models.idle_timeout_s),
        })
    }

    /// Search the documentation of GitLab `version` for `query`.
    pub async fn search(
        &self,
        query: &str,
        version: &str,
        page_size: i64,
    ) -> Result<Vec<Value>, SearchError> {
        // Without a project every store would be "not found": say what is really missing.
        if self.project.is_empty() {
            return Err(SearchError::Api(
                "no GCP project for the search: set AIGW_VERTEX_SEARCH__PROJECT or AIGW_GOOGLE_CLOUD_PLATFORM__PROJECT".into(),
            ));
        }
        if let Some(store) = data_store_id(version) {
            match self.search_store(&store, query, page_size).await {
                Err(SearchError::DataStoreNotFound) => {}
                other => return other,
            }
        }
        match data_store_id(&self.fallback_version) {
            Some(store) => self.search_store(&store, query, page_size).await,
            None => Err(SearchError::DataStoreNotFound),
        }
    }

    async fn search_store(
        &self,
        store: &str,
        query: &str,
        page_size: i64,
    ) -> Result<Vec<Value>, SearchError> {
        tokio::time::timeout(self.deadline, self.call_store(store, query, page_size))
            .await
            .unwrap_or_else(|_| {
                Err(SearchError::Api(format!(
                    "no answer from the search within {:?}",
                    self.deadline
                )))
            })
    }

    async fn call_store(
        &self,
        store: &str,
        query: &str,
        page_size: i64,
    ) -> Result<Vec<Value>, SearchError> {
        let url = format!(
            "{}/v1/projects/{}/locations/global/collections/default_collection/dataStores/{store}/servingConfigs/default_config:search",
            self.base_url, self.project
        );
        let body = json!({
            "query": query,
            "pageSize": page_size,
            "queryExpansionSpec": {"condition": "AUTO"},
            "spellCorrectionSpec": {"mode": "AUTO"},
        });
        let token = self.auth.token().await.map_err(api_error)?;
        let response = self
            .upstream
            .send(|client| client.post(&url).bearer_auth(&token).json(&body))
            .await
            .map_err(|e| match e.kind {
                ModelErrorKind::Status(404) => SearchError::DataStoreNotFound,
                _ => api_error(e),
            })?;
        let answer: Value = response
            .json()
            .await
            .map_err(|e| SearchError::Api(format!("search answer: {e}")))?;
        results_of(&answer)
    }
}

fn api_error(e: ModelError) -> SearchError {
    SearchError::Api(e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_store_comes_from_the_major_and_minor_version() {
        assert_eq!(
            data_store_id("17.3.0-ee").as_deref(),
            Some("gitlab-docs-17-3")
        );
        assert_eq!(data_store_id("17.10").as_deref(), Some("gitlab-docs-17-10"));
        assert_eq!(
            data_store_id("16.11.2").as_deref(),
            Some("gitlab-docs-16-11")
        );
        for bad in ["", "17", "17.", "v17.3", ".3", "17.x", "unknown"] {
            assert_eq!(data_store_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn results_keep_id_content_and_metadata_up_to_the_token_budget() {
        let doc = |id: &str, words: usize| {
            json!({"id": id, "document": {"id": id, "structData": {
                "content": vec!["word"; words].join(" "),
                "metadata": {"source_url": format!("https://docs.gitlab.com/{id}"), "title": id}}}})
        };
        // 1,400 + 4,200 estimated tokens fit; the third result would pass 8,000.
        let answer = json!({"results": [doc("a", 1_000), doc("b", 3_000), doc("c", 2_000)],
                            "totalSize": 3});
        let results = results_of(&answer).unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0]["id"], "a");
        assert_eq!(
            results[1]["metadata"],
            json!({"source_url": "https://docs.gitlab.com/b", "title": "b"})
        );
        assert_eq!(results[0].as_object().unwrap().len(), 3);
        assert_eq!(
            results_of(&json!({"totalSize": 0})).unwrap(),
            Vec::<Value>::new()
        );
        assert!(results_of(&json!({"results": [{"document": {"id": "x"}}]})).is_err());
    }
}
