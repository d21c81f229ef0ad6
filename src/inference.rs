//! One model call as an endpoint sees it: started in a request actor, read whole or streamed.
//!
//! [`ModelCall::start`] hands the provider's lazy stream to a request actor and waits for the
//! **first** event before the endpoint answers, so that an upstream failure before any content is
//! a proper error status (503 `Inference failed` for code suggestions) and not a 200 with an empty
//! body. After that the endpoint either reads the whole answer ([`ModelCall::collect`]) or streams
//! it ([`ModelCall::into_events`]) in its own framing (raw text, SSE, NDJSON).
//!
//! Metrics of the original (`model_inferences_total`, `inference_request_duration_seconds`,
//! `model_inferences_in_flight`) and new ones (`model_time_to_first_chunk_seconds`,
//! `gateway_overhead_seconds`) are kept by an [`InferenceGuard`] whose drop records the end of the
//! call, so the in-flight gauge returns to zero however the call ends: completed, failed, timed
//! out, cancelled by a client that went away, or killed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ai_gateway_actors::request::{Deadline, Deadlines, StreamEvent};
use futures::stream::{self, Stream};
use tokio::sync::mpsc;

use crate::models::{
    ModelChunk, ModelError, ModelErrorKind, ModelMetadata, ModelProvider, ModelRequest, Usage,
};
use crate::state::AppState;
use crate::telemetry;

/// How a call ended, when it did not end normally.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    /// The provider failed.
    Model(ModelError),
    /// A deadline fired.
    Timeout(Deadline),
    /// The request actor ended without a terminal event: it crashed or was killed.
    Aborted,
    /// No request actor could be started.
    Unavailable(String),
    /// The model's quota refused the call.
    Quota(ai_gateway_actors::quota::Refusal),
}

impl CallFailure {
    /// A short description for logs and error events.
    pub fn describe(&self) -> String {
        match self {
            Self::Model(e) => e.to_string(),
            Self::Timeout(Deadline::Idle) => "model stream idle timeout".into(),
            Self::Timeout(Deadline::Total) => "model call deadline exceeded".into(),
            Self::Aborted => "model call aborted".into(),
            Self::Unavailable(why) => format!("no capacity to run the call: {why}"),
            Self::Quota(refusal) => refusal.describe(),
        }
    }

    /// The upstream's `Retry-After`, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Model(e) => e.retry_after,
            _ => None,
        }
    }
}

/// Labels and timings of one call, recorded when it ends.
pub struct InferenceGuard {
    engine: String,
    name: String,
    feature_category: &'static str,
    streaming: bool,
    started: Instant,
    failed: bool,
    finished: bool,
    /// The last usage the provider reported (streams report it in their last chunk; a stream
    /// cut short still counts what was reported before the cut).
    usage: Option<Usage>,
    quota: Option<Box<crate::quota::Metered>>,
}

impl InferenceGuard {
    /// Start recording a call to `meta`'s model (in-flight gauge up until the guard drops).
    pub fn new(meta: &ModelMetadata, feature_category: &'static str, streaming: bool) -> Self {
        let engine = meta.engine.clone();
        let name = telemetry::model_label(&meta.name).to_string();
        telemetry::gauge(
            "model_inferences_in_flight",
            &[("model_engine", &engine), ("model_name", &name)],
        )
        .increment(1.0);
        Self {
            engine,
            name,
            feature_category,
            streaming,
            started: Instant::now(),
            failed: false,
            finished: false,
            usage: None,
            quota: None,
        }
    }

    /// Mark the call failed by the provider; a 429 parks the model in its quota.
    fn model_failed(&mut self, e: &ModelError) {
        self.fail();
        if let (ModelErrorKind::RateLimited, Some(quota)) = (&e.kind, &self.quota) {
            quota.throttled(e.retry_after);
        }
    }

    fn first_chunk(&self) {
        telemetry::histogram(
            "model_time_to_first_chunk_seconds",
            &[("model_engine", &self.engine), ("model_name", &self.name)],
        )
        .record(self.started.elapsed().as_secs_f64());
    }

    /// Note the usage a chunk reports.
    fn saw(&mut self, chunk: &ModelChunk) {
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        if let Some(quota) = &mut self.quota {
            quota.observe(chunk);
        }
    }

    /// Mark the call failed (counted with `error="yes"`).
    pub fn fail(&mut self) {
        self.failed = true;
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(quota) = self.quota.take() {
            quota.finish();
        }
        let labels = [
            ("model_engine", self.engine.as_str()),
            ("model_name", self.name.as_str()),
            ("error", if self.failed { "yes" } else { "no" }),
            ("streaming", if self.streaming { "yes" } else { "no" }),
            ("feature_category", self.feature_category),
        ];
        telemetry::counter("model_inferences_total", &labels).increment(1);
        if let Some(usage) = self.usage {
            for (direction, n) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ] {
                telemetry::counter(
                    "model_tokens_total",
                    &[
                        ("model_engine", &self.engine),
                        ("model_name", &self.name),
                        ("direction", direction),
                    ],
                )
                .increment(n);
            }
        }
        telemetry::histogram("inference_request_duration_seconds", &labels)
            .record(self.started.elapsed().as_secs_f64());
        telemetry::gauge(
            "model_inferences_in_flight",
            &[("model_engine", &self.engine), ("model_name", &self.name)],
        )
        .decrement(1.0);
    }
}

impl Drop for InferenceGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A call in flight whose first event has arrived.
pub struct ModelCall {
    /// Who answers.
    pub metadata: ModelMetadata,
    first: Option<ModelChunk>,
    /// The stream had already ended when the first event arrived (an empty answer).
    ended: bool,
    rx: mpsc::Receiver<StreamEvent<ModelChunk, ModelError>>,
    guard: InferenceGuard,
    /// Time spent waiting for the first event.
    pub waited_for_first: Duration,
}

/// Most candidates a whole answer keeps (Vertex gives at most 4).
const MAX_CANDIDATES: usize = 16;

/// The whole answer of a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Text per candidate, in candidate order.
    pub texts: Vec<String>,
    /// Score per candidate, when the provider gives one.
    pub scores: Vec<Option<f64>>,
    /// The last usage reported.
    pub usage: Option<Usage>,
    /// Time spent waiting on the model.
    pub waited: Duration,
}

impl Answer {
    fn add(&mut self, chunk: ModelChunk) {
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let i = chunk.candidate as usize;
        // The index comes from the upstream: no provider answers more than a handful of
        // candidates, and an absurd index must not size an allocation.
        if i >= MAX_CANDIDATES {
            return;
        }
        if self.texts.len() <= i {
            self.texts.resize(i + 1, String::new());
            self.scores.resize(i + 1, None);
        }
        if let Some(text) = self.texts.get_mut(i) {
            text.push_str(&chunk.text);
        }
        if chunk.score.is_some() {
            if let Some(score) = self.scores.get_mut(i) {
                *score = chunk.score;
            }
        }
    }

    /// The text of candidate 0.
    pub fn text(&self) -> &str {
        self.texts.first().map(String::as_str).unwrap_or("")
    }
}

/// What a streaming endpoint receives after the first chunk.
#[derive(Debug)]
pub enum Event {
    /// A chunk of the answer.
    Chunk(ModelChunk),
    /// The call failed after the response started.
    Failed(CallFailure),
}

impl ModelCall {
    /// Start `request` on `provider` in a request actor and wait for its first event.
    pub async fn start(
        state: &AppState,
        provider: Arc<dyn ModelProvider>,
        request: ModelRequest,
        feature_category: &'static str,
    ) -> Result<ModelCall, CallFailure> {
        let metadata = provider.metadata().clone();
        let prompt_tokens = crate::quota::prompt_tokens(&request);
        let output_tokens = request
            .params
            .max_tokens
            .map(u64::from)
            .unwrap_or(state.quotas.default_output_tokens());
        let lease = state
            .quotas
            .reserve(
                &metadata.engine,
                &metadata.name,
                prompt_tokens + output_tokens,
            )
            .await
            .map_err(CallFailure::Quota)?;
        let mut guard = InferenceGuard::new(&metadata, feature_category, request.stream);
        guard.quota = lease.map(|lease| Box::new(crate::quota::Metered::new(lease, prompt_tokens)));
        let models = &state.settings.models;
        let deadlines = Deadlines {
            idle: Duration::from_secs_f64(models.idle_timeout_s),
            total: Duration::from_secs_f64(models.total_timeout_s),
        };
        let started = Instant::now();
        let make_call = {
            let provider = Arc::clone(&provider);
            move || provider.call(request.clone())
        };
        let mut rx = match state
            .requests
            .start(make_call, models.stream_buffer_chunks, deadlines)
            .await
        {
            Ok(rx) => rx,
            Err(e) => {
                guard.fail();
                return Err(CallFailure::Unavailable(e.to_string()));
            }
        };
        let first = rx.recv().await;
        let waited_for_first = started.elapsed();
        let (first, ended) = match first {
            Some(StreamEvent::Item(chunk)) => {
                guard.first_chunk();
                guard.saw(&chunk);
                (Some(chunk), false)
            }
            Some(StreamEvent::Done) => (None, true),
            Some(StreamEvent::Failed(e)) => {
                guard.model_failed(&e);
                return Err(CallFailure::Model(e));
            }
            Some(StreamEvent::TimedOut(d)) => {
                guard.fail();
                return Err(CallFailure::Timeout(d));
            }
            None => {
                guard.fail();
                return Err(CallFailure::Aborted);
            }
        };
        Ok(ModelCall {
            metadata,
            first,
            ended,
            rx,
            guard,
            waited_for_first,
        })
    }

    /// Read the whole answer.
    pub async fn collect(mut self) -> Result<Answer, CallFailure> {
        let started = Instant::now();
        let mut answer = Answer::default();
        if let Some(first) = self.first.take() {
            answer.add(first);
        }
        if !self.ended {
            loop {
                match self.rx.recv().await {
                    Some(StreamEvent::Item(chunk)) => {
                        self.guard.saw(&chunk);
                        answer.add(chunk)
                    }
                    Some(StreamEvent::Done) => break,
                    Some(StreamEvent::Failed(e)) => {
                        self.guard.model_failed(&e);
                        return Err(CallFailure::Model(e));
                    }
                    Some(StreamEvent::TimedOut(d)) => {
                        self.guard.fail();
                        return Err(CallFailure::Timeout(d));
                    }
                    None => {
                        self.guard.fail();
                        return Err(CallFailure::Aborted);
                    }
                }
            }
        }
        answer.waited = self.waited_for_first + started.elapsed();
        Ok(answer)
    }

    /// The rest of the answer as events, starting with the first chunk. The stream ends after
    /// the last chunk, or with one [`Event::Failed`]. Dropping it cancels the upstream call.
    pub fn into_events(self) -> impl Stream<Item = Event> {
        let ModelCall {
            first,
            ended,
            rx,
            guard,
            ..
        } = self;
        let state = (first, ended, rx, guard, false);
        stream::unfold(
            state,
            |(mut first, ended, mut rx, mut guard, done)| async move {
                if done {
                    return None;
                }
                if let Some(chunk) = first.take() {
                    return Some((Event::Chunk(chunk), (None, ended, rx, guard, false)));
                }
                if ended {
                    return None;
                }
                let event = match rx.recv().await {
                    Some(StreamEvent::Item(chunk)) => {
                        guard.saw(&chunk);
                        Event::Chunk(chunk)
                    }
                    Some(StreamEvent::Done) => return None,
                    Some(StreamEvent::Failed(e)) => {
                        guard.model_failed(&e);
                        Event::Failed(CallFailure::Model(e))
                    }
                    Some(StreamEvent::TimedOut(d)) => Event::Failed(CallFailure::Timeout(d)),
                    None => Event::Failed(CallFailure::Aborted),
                };
                let failed = matches!(event, Event::Failed(_));
                if failed {
                    guard.fail();
                }
                Some((event, (None, false, rx, guard, failed)))
            },
        )
    }
}

/// Whether a model error is the provider rate limiting us.
pub fn is_rate_limited(failure: &CallFailure) -> bool {
    matches!(failure, CallFailure::Model(e) if e.kind == ModelErrorKind::RateLimited)
}
