//! Provider fault injection, for chaos tests (off unless `AIGW_CHAOS__ENABLED=true`).
//!
//! A fault makes calls to a provider/model fail, stall, slow down, close their stream early,
//! answer 429, or panic inside the request actor, at a given rate. Faults are published as a
//! snapshot that every call reads once (one atomic load); with chaos disabled providers are not
//! wrapped at all. Every injected fault is logged and counted in
//! `chaos_faults_injected_total{kind}`.

use std::sync::Arc;
use std::time::Duration;

use ai_gateway_actors::snapshot::Snapshot;
use futures::{stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::models::{
    ChunkStream, ModelChunk, ModelError, ModelErrorKind, ModelMetadata, ModelProvider,
    ModelRequest, Usage,
};

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The call fails with an upstream 500.
    Fail,
    /// The call stops producing (the idle timeout ends it).
    Stall,
    /// Every chunk is delayed by `delay_ms`.
    Slow,
    /// The stream ends early without the provider's end marker.
    CloseEarly,
    /// The provider answers 429 with `Retry-After: retry_after_s`.
    RateLimit,
    /// The request actor panics.
    Panic,
    /// The provider reports `input_tokens` + `output_tokens` as the call's usage (replacing what
    /// it reported, or added as a last chunk), to exercise token quotas.
    Usage,
}

impl FaultKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Stall => "stall",
            Self::Slow => "slow",
            Self::CloseEarly => "close_early",
            Self::RateLimit => "rate_limit",
            Self::Panic => "panic",
            Self::Usage => "usage",
        }
    }
}

fn one() -> f64 {
    1.0
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// Only calls to this engine (`anthropic`, `vertex-ai`, `llm-provider-mocked`, ...); any when absent.
    #[serde(default)]
    pub engine: Option<String>,
    /// Only calls to this model; any when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Fraction of matching calls affected, 0..=1.
    #[serde(default = "one")]
    pub rate: f64,
    /// Chunks let through before the fault strikes (0: before the first byte).
    #[serde(default)]
    pub after_chunks: usize,
    /// Delay per chunk for `slow`, milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// `Retry-After` for `rate_limit`, seconds.
    #[serde(default)]
    pub retry_after_s: u64,
    /// Input tokens reported by a `usage` fault.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens reported by a `usage` fault.
    #[serde(default)]
    pub output_tokens: u64,
}

impl Fault {
    /// Refuse rules that cannot be applied.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err("rate must be between 0 and 1".into());
        }
        if self.kind == FaultKind::Slow && self.delay_ms == 0 {
            return Err("a slow fault needs delay_ms > 0".into());
        }
        Ok(())
    }

    fn matches(&self, meta: &ModelMetadata) -> bool {
        self.engine.as_deref().is_none_or(|e| e == meta.engine)
            && self.model.as_deref().is_none_or(|m| m == meta.name)
    }
}

/// The active faults.
#[derive(Clone, Default)]
pub struct Faults {
    active: Snapshot<Vec<Fault>>,
}

impl Faults {
    /// Add a rule.
    pub fn add(&self, fault: Fault) {
        tracing::warn!(target: "chaos", kind = fault.kind.label(), engine = ?fault.engine, model = ?fault.model, rate = fault.rate, "fault injection rule added");
        self.active.update(|current| {
            let mut next = current.clone();
            next.push(fault.clone());
            next
        });
    }

    /// Remove every rule.
    pub fn clear(&self) {
        tracing::warn!(target: "chaos", "all fault injection rules cleared");
        self.active.publish(Vec::new());
    }

    /// The rules now active.
    pub fn list(&self) -> Vec<Fault> {
        self.active.load().as_ref().clone()
    }

    /// `provider` with these faults applied to its calls.
    pub fn wrap(&self, provider: Arc<dyn ModelProvider>) -> Arc<dyn ModelProvider> {
        Arc::new(Faulty {
            inner: provider,
            faults: self.clone(),
        })
    }
}

struct Faulty {
    inner: Arc<dyn ModelProvider>,
    faults: Faults,
}

impl ModelProvider for Faulty {
    fn metadata(&self) -> &ModelMetadata {
        self.inner.metadata()
    }

    fn call(&self, request: ModelRequest) -> ChunkStream {
        let meta = self.inner.metadata();
        let active = self.faults.active.load();
        let fault = active
            .iter()
            .find(|f| f.matches(meta) && (f.rate >= 1.0 || fastrand::f64() < f.rate))
            .cloned();
        let inner = self.inner.call(request);
        let Some(fault) = fault else {
            return inner;
        };
        metrics::counter!("chaos_faults_injected_total", "kind" => fault.kind.label()).increment(1);
        tracing::warn!(target: "chaos", kind = fault.kind.label(), engine = %meta.engine, model = %meta.name, "injecting fault");
        apply(fault, inner)
    }
}

fn apply(fault: Fault, inner: ChunkStream) -> ChunkStream {
    if fault.kind == FaultKind::Slow {
        let delay = Duration::from_millis(fault.delay_ms);
        return inner
            .then(move |item| async move {
                tokio::time::sleep(delay).await;
                item
            })
            .boxed();
    }
    if fault.kind == FaultKind::Usage {
        let usage = Usage {
            input_tokens: fault.input_tokens,
            output_tokens: fault.output_tokens,
        };
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let marks = Arc::clone(&seen);
        let chunks = inner.map(move |item| {
            item.map(|mut chunk| {
                if chunk.usage.is_some() {
                    chunk.usage = Some(usage);
                    marks.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                chunk
            })
        });
        // Providers that report no usage get it in a last chunk.
        let tail = stream::once(async move {
            (!seen.load(std::sync::atomic::Ordering::Relaxed)).then(|| {
                Ok(ModelChunk {
                    usage: Some(usage),
                    ..ModelChunk::default()
                })
            })
        })
        .filter_map(futures::future::ready);
        return chunks.chain(tail).boxed();
    }
    // The first `after_chunks` chunks pass; then the fault strikes. With 0 the upstream is never
    // called at all.
    let head = inner.take(fault.after_chunks);
    let tail: ChunkStream = match fault.kind {
        FaultKind::Fail => stream::iter([Err(ModelError::new(
            ModelErrorKind::Status(500),
            "injected failure",
        ))])
        .boxed(),
        FaultKind::Stall => stream::pending().boxed(),
        FaultKind::CloseEarly => stream::iter([Err(ModelError::new(
            ModelErrorKind::Protocol,
            "upstream closed the stream before its end (injected)",
        ))])
        .boxed(),
        FaultKind::RateLimit => {
            let mut e = ModelError::new(ModelErrorKind::RateLimited, "rate limited (injected)");
            e.retry_after = Some(Duration::from_secs(fault.retry_after_s));
            stream::iter([Err(e)]).boxed()
        }
        FaultKind::Panic => stream::once(async { panic_now() }).boxed(),
        FaultKind::Slow | FaultKind::Usage => stream::empty().boxed(),
    };
    head.chain(tail).boxed()
}

/// A deliberate panic: the fault that proves a crashing request actor fails alone.
#[allow(clippy::panic)]
fn panic_now() -> Result<crate::models::ModelChunk, ModelError> {
    panic!("injected panic in a model call (chaos)")
}

/// The chaos admin API's fault routes, mounted on the metrics listener when chaos is enabled:
/// `POST /chaos/faults` adds a rule (JSON [`Fault`]), `GET /chaos/faults` lists them,
/// `DELETE /chaos/faults` clears them. Authorization is checked by the caller's guard.
pub mod admin {
    use actix_web::{web, HttpResponse};

    use super::{Fault, Faults};

    /// `POST /chaos/faults`.
    pub async fn add(faults: web::Data<Faults>, body: web::Bytes) -> HttpResponse {
        let fault: Fault = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => {
                return HttpResponse::UnprocessableEntity()
                    .json(serde_json::json!({"detail": format!("invalid fault: {e}")}))
            }
        };
        if let Err(e) = fault.validate() {
            return HttpResponse::UnprocessableEntity()
                .json(serde_json::json!({"detail": format!("invalid fault: {e}")}));
        }
        faults.add(fault);
        HttpResponse::Ok().json(faults.list())
    }

    /// `GET /chaos/faults`.
    pub async fn list(faults: web::Data<Faults>) -> HttpResponse {
        HttpResponse::Ok().json(faults.list())
    }

    /// `DELETE /chaos/faults`.
    pub async fn clear(faults: web::Data<Faults>) -> HttpResponse {
        faults.clear();
        HttpResponse::Ok().json(Vec::<Fault>::new())
    }
}
