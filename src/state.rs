//! What every request handler can read: settings, the authenticator, the actor handles.
//!
//! Built once at startup and shared (behind `web::Data`, an `Arc`) by every HTTP worker. Nothing
//! in it is locked on the hot path: it is either immutable or a published snapshot.

use std::sync::Arc;

use ai_gateway_actors::request::RequestSpawner;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::docs_search::DocsSearch;
use crate::faults::Faults;
use crate::models::registry::Providers;
use crate::models::ModelProvider;
use crate::prompts::PromptRegistry;
use crate::proxy::abuse::AbuseDetector;
use crate::proxy::Upstreams;
use crate::quota::Quotas;
use crate::readiness::Readiness;

/// Shared state of the API.
pub struct AppState {
    /// The settings the process started with.
    pub settings: Arc<Settings>,
    /// Authentication of every request.
    pub auth: Arc<Authenticator>,
    /// Starts request actors.
    pub requests: RequestSpawner,
    /// Readiness checks.
    pub readiness: Arc<Readiness>,
    /// The model providers: one pooled client per upstream.
    pub providers: Arc<Providers>,
    /// Provider fault injection, when chaos is active.
    pub faults: Option<Faults>,
    /// Per-model quotas.
    pub quotas: Arc<Quotas>,
    /// The prompt registry.
    pub prompts: Arc<PromptRegistry>,
    /// The provider proxies' upstreams and client.
    pub upstreams: Arc<Upstreams>,
    /// Abuse-detection sampling of proxied requests.
    pub abuse: Arc<AbuseDetector>,
    /// `/v1/search/gitlab-docs`.
    pub docs_search: Arc<DocsSearch>,
}

impl AppState {
    /// `provider` as calls should see it: wrapped with fault injection when chaos is active.
    pub fn provider(&self, provider: Arc<dyn ModelProvider>) -> Arc<dyn ModelProvider> {
        match &self.faults {
            Some(faults) => faults.wrap(provider),
            None => provider,
        }
    }
}
