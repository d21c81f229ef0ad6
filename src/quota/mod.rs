//! Per-model quotas as the gateway wires them: which models have limits, where the counts live,
//! and what a refused client sees.
//!
//! The limits come from `AIGW_MODEL_QUOTAS` (or `[model_quotas.<engine>.<model>]` in the TOML
//! file) and, for compatibility, `AIGW_MODEL_ENGINE_CONCURRENCY_LIMITS`, which the original only
//! reported as `model_inferences_max_concurrent` and which here also sets `max_concurrent`.
//! Each configured model gets a `QuotaActor` (`ai_gateway_actors::quota`) started under the root
//! supervisor on its first call, with kind `quota`, so it is restarted after a crash and
//! `POST /chaos/kill/quota` reaches it. A model without limits has no actor and costs nothing: it
//! is tracked by the in-flight gauges of every call and never refused.
//!
//! The counts live in this process (`AIGW_QUOTA__BACKEND=local`, the default) or in Redis
//! (`redis`, see [`redis`]), shared by every gateway of a fleet.
//!
//! A refused call is answered 429 `{"detail": "..."}` with `Retry-After` (whole seconds until
//! capacity returns) and `x-ratelimit-*` headers; with the Redis backend down in fail-closed mode,
//! 503 with `Retry-After`.

pub mod redis;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use ai_gateway_actors::quota::{
    Dimension, FailMode, Lease, Limits, LocalBackend, QuotaActor, QuotaBackend, QuotaHandle,
    QuotaSettings, QuotaShared, Refusal,
};
use ai_gateway_actors::ractor::{Actor, ActorRef};
use ai_gateway_actors::supervisor::{self, FnChildSpec, SupervisorMsg};
use futures::FutureExt;
use tokio::sync::OnceCell;

use crate::config::Settings;
use crate::http::access_log::RequestLog;
use crate::http::error::ApiError;
use crate::models::{ModelChunk, ModelRequest, Prompt, Usage};

/// One configured model.
struct Entry {
    handle: QuotaHandle,
    started: OnceCell<()>,
}

/// The quotas of every configured model.
pub struct Quotas {
    root: ActorRef<SupervisorMsg>,
    models: HashMap<String, HashMap<String, Arc<Entry>>>,
    default_output_tokens: u64,
}

/// The limits of every configured model: `model_quotas`, with `max_concurrent` defaulting to
/// `model_engine_concurrency_limits`.
pub fn configured_limits(settings: &Settings) -> Vec<(String, String, Limits)> {
    let mut all: std::collections::BTreeMap<(String, String), Limits> = Default::default();
    for (engine, models) in &settings.model_engine_concurrency_limits {
        for (model, max) in models {
            all.entry((engine.clone(), model.clone()))
                .or_default()
                .max_concurrent = Some(u64::from(*max));
        }
    }
    for (engine, models) in &settings.model_quotas {
        for (model, q) in models {
            let limits = all.entry((engine.clone(), model.clone())).or_default();
            if q.max_concurrent.is_some() {
                limits.max_concurrent = q.max_concurrent;
            }
            limits.requests_per_minute = q.requests_per_minute;
            limits.tokens_per_minute = q.tokens_per_minute;
        }
    }
    all.into_iter()
        .filter(|(_, l)| !l.is_unlimited())
        .map(|((e, m), l)| (e, m, l))
        .collect()
}

/// The actor settings from the gateway settings.
pub fn actor_settings(settings: &Settings) -> QuotaSettings {
    let q = &settings.quota;
    QuotaSettings {
        max_wait: Duration::from_millis(q.max_wait_ms),
        max_queue: q.max_queue,
        max_mailbox: q.max_mailbox,
        shadow: q.shadow,
        fail_mode: if q.fail_mode == "closed" {
            FailMode::Closed
        } else {
            FailMode::Open
        },
        park_default: Duration::from_secs_f64(q.park_default_s),
        // A lease outlives the longest possible call; after that a lost release frees itself.
        lease_ttl: Duration::from_secs_f64(settings.models.total_timeout_s)
            + Duration::from_secs(60),
        refresh: Duration::from_secs(1),
    }
}

impl Quotas {
    /// The quotas of `settings`; actors start under `root` on first use.
    pub fn new(settings: &Settings, root: ActorRef<SupervisorMsg>) -> Result<Self, String> {
        let actor_settings = actor_settings(settings);
        let store = match settings.quota.backend.as_str() {
            "redis" => Some(Arc::new(redis::RedisStore::new(&settings.quota)?)),
            _ => None,
        };
        let mut models: HashMap<String, HashMap<String, Arc<Entry>>> = HashMap::new();
        for (engine, model, limits) in configured_limits(settings) {
            let local: Arc<dyn QuotaBackend> = Arc::new(LocalBackend::new());
            let (backend, fallback) = match &store {
                Some(store) => (
                    Arc::new(redis::RedisBackend::new(Arc::clone(store), &engine, &model))
                        as Arc<dyn QuotaBackend>,
                    Some(local),
                ),
                None => (local, None),
            };
            let labels = (engine.clone(), model.clone());
            for dimension in ["concurrency", "requests", "tokens", "upstream", "backend"] {
                metrics::counter!("quota_rejections_total", "engine" => engine.clone(), "model" => model.clone(), "dimension" => dimension).absolute(0);
            }
            metrics::counter!("quota_upstream_throttled_total", "engine" => engine.clone(), "model" => model.clone()).absolute(0);
            if let Some(max) = limits.max_concurrent {
                metrics::gauge!("model_inferences_max_concurrent", "model_engine" => engine.clone(), "model_name" => model.clone()).set(max as f64);
            }
            let shared = QuotaShared::new(
                engine.clone(),
                model.clone(),
                labels,
                limits,
                actor_settings.clone(),
                backend,
                fallback,
            );
            models.entry(engine).or_default().insert(
                model,
                Arc::new(Entry {
                    handle: QuotaHandle::new(shared),
                    started: OnceCell::new(),
                }),
            );
        }
        Ok(Self {
            root,
            models,
            default_output_tokens: settings.quota.default_output_tokens,
        })
    }

    /// Output tokens assumed for a call that does not say its `max_tokens`.
    pub fn default_output_tokens(&self) -> u64 {
        self.default_output_tokens
    }

    /// Whether `engine`/`model` has limits.
    pub fn is_limited(&self, engine: &str, model: &str) -> bool {
        self.entry(engine, model).is_some()
    }

    fn entry(&self, engine: &str, model: &str) -> Option<&Arc<Entry>> {
        self.models.get(engine)?.get(model)
    }

    /// Reserve a call of `tokens` estimated tokens on `engine`/`model`: `None` for a model without
    /// limits, a lease to finish when the call ends, or the refusal.
    pub async fn reserve(
        &self,
        engine: &str,
        model: &str,
        tokens: u64,
    ) -> Result<Option<Lease>, Refusal> {
        let Some(entry) = self.entry(engine, model) else {
            return Ok(None);
        };
        if !entry.started.initialized() {
            let root = self.root.clone();
            let handle = entry.handle.clone();
            let started = entry
                .started
                .get_or_try_init(|| async move {
                    let shared = Arc::clone(handle.shared());
                    let spec =
                        FnChildSpec::new("quota", format!("{engine}/{model}"), move |parent| {
                            let shared = Arc::clone(&shared);
                            async move {
                                let (actor, _) =
                                    Actor::spawn_linked(None, QuotaActor, shared, parent).await?;
                                Ok(actor.get_cell())
                            }
                            .boxed()
                        });
                    supervisor::start_child_of(&root, Arc::new(spec))
                        .await
                        .map(|_| ())
                })
                .await;
            if let Err(e) = started {
                tracing::error!(engine, model, "quota actor failed to start: {e}");
            }
        }
        entry.handle.reserve(tokens).await.map(Some)
    }
}

/// Prompt tokens of `request`, estimated cheaply (4 bytes a token).
pub fn prompt_tokens(request: &ModelRequest) -> u64 {
    let bytes = match &request.prompt {
        Prompt::Text { prefix, suffix } => prefix.len() + suffix.as_ref().map_or(0, String::len),
        Prompt::Chat(messages) => messages.iter().map(|m| m.content.len() + 4).sum(),
    };
    (bytes as u64).div_ceil(4)
}

/// A running call's lease and what the call has used so far; finished when the call ends, however
/// it ends (a stream cancelled by its client included), with the provider's usage when it
/// reported some and an estimate from the text otherwise.
pub struct Metered {
    lease: Lease,
    prompt_tokens: u64,
    usage: Option<Usage>,
    output_bytes: u64,
}

impl Metered {
    /// Meter a call holding `lease`.
    pub fn new(lease: Lease, prompt_tokens: u64) -> Self {
        Self {
            lease,
            prompt_tokens,
            usage: None,
            output_bytes: 0,
        }
    }

    /// A chunk went by.
    pub fn observe(&mut self, chunk: &ModelChunk) {
        self.output_bytes += chunk.text.len() as u64;
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
    }

    /// The provider answered 429.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        self.lease.throttled(retry_after);
    }

    /// The tokens the call used (or, without reported usage, an estimate). Usage without input
    /// tokens (a self-hosted server that reports none while streaming, see
    /// `models::openai_compat`) keeps the prompt estimate for the input.
    pub fn used_tokens(&self) -> u64 {
        match self.usage {
            Some(u) if u.input_tokens == 0 => self.prompt_tokens + u.output_tokens,
            Some(u) => u.input_tokens + u.output_tokens,
            None => self.prompt_tokens + self.output_bytes.div_ceil(4),
        }
    }

    /// Release the lease with the tokens used.
    pub fn finish(self) {
        let used = self.used_tokens();
        self.lease.finish(Some(used));
    }
}

/// The error response of a refusal: 429 (503 when the quota store is down and the mode is
/// fail-closed) `{"detail": "..."}` with `Retry-After` and `x-ratelimit-*` headers.
pub fn refusal_error(refusal: &Refusal) -> ApiError {
    let status = if refusal.dimension == Dimension::Backend {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    ApiError::DetailWithHeaders(status, refusal.describe(), rate_limit_headers(refusal))
}

/// The answer of every endpoint to a call the quota refused: [`refusal_error`], with the refused
/// dimension in the request's access-log line as `quota_refused`.
pub fn refused(refusal: &Refusal, log: &RequestLog) -> ApiError {
    log.set("quota_refused", refusal.dimension.label());
    refusal_error(refusal)
}

/// `Retry-After` and the `x-ratelimit-*` headers of a refusal, in the names OpenAI-compatible
/// clients read: `limit`/`remaining` per limited dimension (`requests`, `tokens` per minute and
/// `concurrency`), and `reset` for the dimension that refused.
pub fn rate_limit_headers(refusal: &Refusal) -> Vec<(String, String)> {
    let retry = refusal.retry_after_secs();
    let mut headers = vec![("retry-after".to_string(), retry.to_string())];
    let view = &refusal.view;
    for (name, limit, used) in [
        (
            "requests",
            refusal.limits.requests_per_minute,
            view.requests,
        ),
        ("tokens", refusal.limits.tokens_per_minute, view.tokens),
        ("concurrency", refusal.limits.max_concurrent, view.in_flight),
    ] {
        let Some(limit) = limit else { continue };
        headers.push((format!("x-ratelimit-limit-{name}"), limit.to_string()));
        headers.push((
            format!("x-ratelimit-remaining-{name}"),
            limit.saturating_sub(used).to_string(),
        ));
    }
    let reset = match refusal.dimension {
        Dimension::Requests => Some("requests"),
        Dimension::Tokens => Some("tokens"),
        Dimension::Concurrency => Some("concurrency"),
        _ => None,
    };
    if let Some(name) = reset {
        headers.push((format!("x-ratelimit-reset-{name}"), format!("{retry}s")));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sources;

    #[test]
    fn limits_merge_concurrency_limits_and_quotas() {
        let s = Settings::from_vars(
            &Sources::default(),
            [
                (
                    "AIGW_MODEL_ENGINE_CONCURRENCY_LIMITS".to_string(),
                    r#"{"anthropic":{"claude-2.1":15,"claude-3":4}}"#.to_string(),
                ),
                (
                    "AIGW_MODEL_QUOTAS".to_string(),
                    r#"{"anthropic":{"claude-3":{"requests_per_minute":60}},"vertex-ai":{"code-gecko@002":{"max_concurrent":2,"tokens_per_minute":1000}}}"#.to_string(),
                ),
            ],
        )
        .unwrap();
        let limits = configured_limits(&s);
        assert_eq!(limits.len(), 3);
        let find = |e: &str, m: &str| {
            limits
                .iter()
                .find(|(a, b, _)| a == e && b == m)
                .map(|(_, _, l)| *l)
                .unwrap()
        };
        assert_eq!(find("anthropic", "claude-2.1").max_concurrent, Some(15));
        let c3 = find("anthropic", "claude-3");
        assert_eq!(
            (c3.max_concurrent, c3.requests_per_minute),
            (Some(4), Some(60))
        );
        let g = find("vertex-ai", "code-gecko@002");
        assert_eq!(
            (g.max_concurrent, g.tokens_per_minute),
            (Some(2), Some(1000))
        );
    }

    #[test]
    fn quotas_from_toml_and_bad_quota_settings() {
        let toml = "[model_quotas.anthropic.\"claude-3-5-sonnet-20240620\"]\nmax_concurrent = 3\ntokens_per_minute = 1000\n[quota]\nshadow = true\n";
        let s = Settings::from_vars(
            &Sources {
                development: false,
                toml: Some(("q.toml", toml)),
            },
            std::iter::empty(),
        )
        .unwrap();
        let limits = configured_limits(&s);
        assert_eq!(limits[0].2.max_concurrent, Some(3));
        assert!(actor_settings(&s).shadow);

        let load = |vars: &[(&str, &str)]| {
            Settings::from_vars(
                &Sources::default(),
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let e = load(&[("AIGW_QUOTA__BACKEND", "redis")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_QUOTA__REDIS_URL");
        let e = load(&[("AIGW_QUOTA__BACKEND", "memcached")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_QUOTA__BACKEND");
        let e = load(&[("AIGW_QUOTA__FAIL_MODE", "maybe")]).unwrap_err();
        assert_eq!(e.setting, "AIGW_QUOTA__FAIL_MODE");
        let e = load(&[("AIGW_MODEL_QUOTAS", r#"{"a":{"b":{"max_concurent":1}}}"#)]).unwrap_err();
        assert!(e.to_string().contains("max_concurent"), "{e}");
        assert!(load(&[
            ("AIGW_QUOTA__BACKEND", "redis"),
            ("AIGW_QUOTA__REDIS_URL", "redis://127.0.0.1:6379/0"),
        ])
        .is_ok());
    }

    #[test]
    fn refusal_headers() {
        let r = Refusal {
            engine: "e".into(),
            model: "m".into(),
            dimension: Dimension::Requests,
            retry_after: Duration::from_millis(12_300),
            limits: Limits {
                max_concurrent: Some(4),
                requests_per_minute: Some(10),
                tokens_per_minute: None,
            },
            view: ai_gateway_actors::quota::View {
                in_flight: 1,
                requests: 10,
                tokens: 5,
            },
        };
        let h = rate_limit_headers(&r);
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("retry-after"), Some("13"));
        assert_eq!(get("x-ratelimit-limit-requests"), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(get("x-ratelimit-remaining-concurrency"), Some("3"));
        assert_eq!(get("x-ratelimit-reset-requests"), Some("13s"));
        assert_eq!(get("x-ratelimit-limit-tokens"), None);
        let e = refusal_error(&r);
        assert!(
            matches!(e, ApiError::DetailWithHeaders(s, _, _) if s == StatusCode::TOO_MANY_REQUESTS)
        );
    }
}
