//! Abuse detection on the provider proxies (spec 9.2): a sample of proxied requests is shown to
//! Claude 3 Haiku, which scores how far the request strays from what its unit primitive is for.
//!
//! Why it is shaped this way:
//!
//! * **It never touches the proxied request.** The sampling decision is a uniform draw made in
//!   the handler (`AIGW_ABUSE_DETECTION__ENABLED`, `__SAMPLING_RATE`); the check itself starts
//!   only once the proxied response body has been handed to the client in full ([`after_sent`]),
//!   and runs in its own task. A failing, slow or saturated detector is logged and counted, and
//!   the proxied request never learns about it. Nothing is blocked: the score is a signal for
//!   operators, as in the original.
//! * **It outlives the request, and a shutdown waits for it.** Checks run on the main runtime
//!   (the one that starts and stops the servers), not on the HTTP worker that served the
//!   request: a worker's runtime is dropped when the servers stop, which would cancel its checks.
//!   After the servers have drained, shutdown waits (up to the shutdown deadline) for the checks
//!   still running ([`AbuseDetector::drained`]), so a sampled request is not lost to a deploy.
//! * **It is bounded.** At most `AIGW_ABUSE_DETECTION__MAX_CONCURRENT` checks run at once; a
//!   sample that finds every slot taken is dropped and counted
//!   (`abuse_detection_checks_total{result="dropped"}`), so a burst of sampled traffic cannot
//!   pile up tasks or upstream calls. The body is cut to `__MAX_BODY_CHARS` characters, and the
//!   call runs as any model call does (a request actor with the idle and total deadlines, the
//!   model's quota), so a check always ends.
//! * **The prompt is our own wording** of the original's method: a system prompt naming the job,
//!   two scored examples (one aligned, one not), the request URL and body and the unit
//!   primitive's description ([`crate::auth::unit_primitives::description`]), the assistant turn
//!   prefilled with `<score>`, stop `</score>`, at most 8 tokens, so the answer is just the number.
//! * **Bounded labels.** The score is logged (`abuse request score`) with the instance, the user
//!   and the unit primitive, and observed in `abuse_request_scores{instance_id, unit_primitive}`
//!   (buckets 0, 0.3, 0.5, 0.7, 1): the original's per-user label is left out of the metric (the
//!   log line has it).
//!
//! In mock mode the proxies do not call upstream, and no check is made either.

use std::sync::Arc;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use rand::Rng;
use tokio::sync::Semaphore;

use crate::auth::unit_primitives;
use crate::config::AbuseDetection;
use crate::inference::ModelCall;
use crate::models::{Message, ModelRequest, Prompt};
use crate::state::AppState;

/// The model that scores requests.
pub const DETECTOR_MODEL: &str = "claude-3-haiku-20240307";
/// The feature category of the detector's own model calls.
const FEATURE: &str = "abuse_detection";
/// The histogram of scores.
pub const SCORE_METRIC: &str = "abuse_request_scores";
/// Outcomes of sampled requests: `scored`, `unparsable`, `failed`, `dropped`.
pub const CHECKS_METRIC: &str = "abuse_detection_checks_total";
/// The original's buckets for scores.
pub const SCORE_BUCKETS: &[f64] = &[0.0, 0.3, 0.5, 0.7, 1.0];

const SCORE_OPEN: &str = "<score>";
const SCORE_CLOSE: &str = "</score>";

const SYSTEM_PROMPT: &str = "You check requests sent to an AI feature of GitLab. Each feature has \
one intended use; you judge whether a request is that kind of use or something else (for example \
using the feature as a general-purpose chatbot, or for unrelated work).";

const INSTRUCTIONS: &str = "Compare the request below with the intended use of the feature it was \
sent for. Answer with a score from 0.0 (the request is exactly the intended use) to 1.0 (the \
request has nothing to do with it), inside <score></score> tags.";

/// (url, body, intended use, score) of the two worked examples.
const EXAMPLES: [(&str, &str, &str, &str); 2] = [
    (
        "https://gateway.example.com/v1/proxy/anthropic/v1/messages",
        r#"{"model": "claude-3-haiku-20240307", "messages": [{"role": "user", "content": "How do I protect the main branch of my project?"}]}"#,
        "Asking a coding assistant questions about software development or how to use GitLab.",
        "0.1",
    ),
    (
        "https://gateway.example.com/v1/proxy/anthropic/v1/messages",
        r#"{"model": "claude-3-haiku-20240307", "messages": [{"role": "user", "content": "Write a poem about autumn leaves for my newsletter."}]}"#,
        "Explaining a security vulnerability found in the user's code and how it could be exploited.",
        "1.0",
    ),
];

/// What the detector is shown of one proxied request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The request URL as the client sent it.
    pub url: String,
    /// The body, cut to the configured size.
    pub body: String,
    /// The `x-gitlab-unit-primitive` header.
    pub unit_primitive: String,
    /// `x-gitlab-instance-id`, `unknown` when absent.
    pub instance_id: String,
    /// `x-gitlab-global-user-id`, `unknown` when absent.
    pub global_user_id: String,
}

/// The sampling decision and the bound on concurrent checks.
#[derive(Debug)]
pub struct AbuseDetector {
    enabled: bool,
    sampling_rate: f64,
    max_body_chars: usize,
    max_concurrent: usize,
    slots: Arc<Semaphore>,
    /// The runtime checks run on: the one this detector was made on, when there was one.
    runtime: Option<tokio::runtime::Handle>,
}

impl AbuseDetector {
    /// From `AIGW_ABUSE_DETECTION__*`. Checks will run on the runtime this is called on (the
    /// main one, in the gateway), else on the runtime of the request.
    pub fn from_settings(settings: &AbuseDetection) -> Self {
        Self {
            enabled: settings.enabled,
            sampling_rate: settings.sampling_rate,
            max_body_chars: settings.max_body_chars,
            max_concurrent: settings.max_concurrent,
            slots: Arc::new(Semaphore::new(settings.max_concurrent)),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Checks running now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrent
            .saturating_sub(self.slots.available_permits())
    }

    /// Returns once no check is running (every slot is free again).
    pub async fn drained(&self) {
        let all = u32::try_from(self.max_concurrent).unwrap_or(u32::MAX);
        // The semaphore is never closed, so this only waits.
        let _ = self.slots.acquire_many(all).await;
    }

    /// Whether detection is on at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether this request is sampled: a uniform draw below the sampling rate.
    pub fn should_detect(&self) -> bool {
        self.enabled && rand::thread_rng().gen::<f64>() < self.sampling_rate
    }

    /// What the detector will see of `req` and its `body`.
    pub fn sample(&self, req: &HttpRequest, body: &[u8], unit_primitive: &str) -> Sample {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown")
                .to_string()
        };
        let info = req.connection_info();
        Sample {
            url: format!("{}://{}{}", info.scheme(), info.host(), req.uri()),
            body: truncate(&String::from_utf8_lossy(body), self.max_body_chars),
            unit_primitive: unit_primitive.to_string(),
            instance_id: header("x-gitlab-instance-id"),
            global_user_id: header("x-gitlab-global-user-id"),
        }
    }

    /// Check `sample` in the background, unless every slot is taken (then it is dropped and
    /// counted). Returns at once.
    pub fn spawn(&self, state: web::Data<AppState>, sample: Sample) {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            count("dropped");
            tracing::warn!(
                target: "abuse_detection",
                unit_primitive = %sample.unit_primitive,
                "abuse detection saturated: sample dropped"
            );
            return;
        };
        let Some(runtime) = self
            .runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        else {
            count("dropped");
            return;
        };
        runtime.spawn(async move {
            let _permit = permit;
            check(&state, &sample).await;
        });
    }
}

/// `text` cut to `max` characters.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}[truncated]", &text[..at]),
        None => text.to_string(),
    }
}

fn query(url: &str, body: &str, expected: &str) -> String {
    format!(
        "<user_request_url>{url}</user_request_url>\n<user_request_body>{body}</user_request_body>\n<expected_usecase>{expected}</expected_usecase>"
    )
}

/// The detector's messages for `sample`: system, the instructions with the two examples and the
/// request, and the assistant turn prefilled with `<score>`.
pub fn messages(sample: &Sample) -> Vec<Message> {
    let expected = unit_primitives::description(&sample.unit_primitive)
        .unwrap_or("Using a GitLab AI feature for its intended purpose.");
    let mut user = String::from(INSTRUCTIONS);
    for (url, body, use_case, score) in EXAMPLES {
        user.push_str(&format!(
            "\n\n<example>\n{}\n{SCORE_OPEN}{score}{SCORE_CLOSE}\n</example>",
            query(url, body, use_case)
        ));
    }
    user.push_str("\n\n");
    user.push_str(&query(&sample.url, &sample.body, expected));
    vec![
        Message::new("system", SYSTEM_PROMPT),
        Message::new("user", user),
        Message::new("assistant", SCORE_OPEN),
    ]
}

/// The detector's model call.
pub fn request(sample: &Sample) -> ModelRequest {
    let mut request = ModelRequest::new(Prompt::Chat(messages(sample)), false);
    request.params.max_tokens = Some(8);
    request.params.stop = vec![SCORE_CLOSE.to_string()];
    request
}

/// The score in the model's answer (what follows the prefilled `<score>`).
pub fn parse_score(text: &str) -> Option<f64> {
    let text = text.trim();
    let text = text.strip_prefix(SCORE_OPEN).unwrap_or(text);
    let text = text.strip_suffix(SCORE_CLOSE).unwrap_or(text).trim();
    text.parse::<f64>().ok().filter(|s| s.is_finite())
}

fn count(result: &'static str) {
    metrics::counter!(CHECKS_METRIC, "result" => result).increment(1);
}

async fn check(state: &AppState, sample: &Sample) {
    let provider = state.provider(state.providers.anthropic_chat(DETECTOR_MODEL));
    let answer = match ModelCall::start(state, provider, request(sample), FEATURE).await {
        Ok(call) => call.collect().await,
        Err(failure) => Err(failure),
    };
    let text = match answer {
        Ok(answer) => answer.text().to_string(),
        Err(failure) => {
            count("failed");
            tracing::warn!(
                target: "abuse_detection",
                unit_primitive = %sample.unit_primitive,
                error = %failure.describe(),
                "abuse detection failed"
            );
            return;
        }
    };
    let Some(score) = parse_score(&text) else {
        count("unparsable");
        tracing::warn!(
            target: "abuse_detection",
            unit_primitive = %sample.unit_primitive,
            answer = %text,
            "abuse detection answer is not a score"
        );
        return;
    };
    count("scored");
    tracing::info!(
        target: "abuse_detection",
        score,
        instance_id = %sample.instance_id,
        global_user_id = %sample.global_user_id,
        unit_primitive = %sample.unit_primitive,
        "abuse request score"
    );
    metrics::histogram!(
        SCORE_METRIC,
        "instance_id" => sample.instance_id.clone(),
        "unit_primitive" => sample.unit_primitive.clone(),
    )
    .record(score);
}

/// A response body that runs `then` once it has been handed over in full, or dropped (the client
/// went away, the connection ended): the detector starts after the proxied response, never
/// before or during it. Size and bytes are the inner body's, so the response is unchanged.
struct AfterSent {
    inner: BoxBody,
    then: Option<Box<dyn FnOnce()>>,
}

impl AfterSent {
    fn fire(&mut self) {
        if let Some(then) = self.then.take() {
            then();
        }
    }
}

impl MessageBody for AfterSent {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = polled {
            this.fire();
        }
        polled
    }
}

impl Drop for AfterSent {
    fn drop(&mut self) {
        self.fire();
    }
}

/// `response` with `then` run after its body was sent (see [`AfterSent`]).
pub fn after_sent(response: HttpResponse, then: impl FnOnce() + 'static) -> HttpResponse {
    response
        .map_body(|_, inner| AfterSent {
            inner,
            then: Some(Box::new(then)),
        })
        .map_into_boxed_body()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            url: "http://gw/v1/proxy/anthropic/v1/messages".into(),
            body: r#"{"model":"claude-3-haiku-20240307"}"#.into(),
            unit_primitive: "explain_vulnerability".into(),
            instance_id: "1".into(),
            global_user_id: "2".into(),
        }
    }

    #[test]
    fn the_request_prefills_the_score_and_stops_after_it() {
        let r = request(&sample());
        assert_eq!(r.params.max_tokens, Some(8));
        assert_eq!(r.params.stop, vec!["</score>".to_string()]);
        let Prompt::Chat(m) = &r.prompt else {
            panic!("a chat prompt")
        };
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].role, "system");
        assert_eq!(m[2].role, "assistant");
        assert_eq!(m[2].content, "<score>");
        assert_eq!(m[1].content.matches("<example>").count(), 2);
        assert!(m[1].content.ends_with(
            "<user_request_url>http://gw/v1/proxy/anthropic/v1/messages</user_request_url>\n\
             <user_request_body>{\"model\":\"claude-3-haiku-20240307\"}</user_request_body>\n\
             <expected_usecase>Explaining a security vulnerability found in the user's code and how it could be exploited.</expected_usecase>"
        ));
    }

    #[test]
    fn scores_parse_from_the_answer() {
        assert_eq!(parse_score("0.7"), Some(0.7));
        assert_eq!(parse_score(" 1 "), Some(1.0));
        assert_eq!(parse_score("0.2</score>"), Some(0.2));
        assert_eq!(parse_score("<score>0.4"), Some(0.4));
        assert_eq!(parse_score("high"), None);
        assert_eq!(parse_score("NaN"), None);
        assert_eq!(parse_score(""), None);
    }

    #[test]
    fn bodies_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé[truncated]");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn sampling_follows_the_rate() {
        let mut s = AbuseDetection {
            enabled: true,
            sampling_rate: 1.0,
            ..AbuseDetection::default()
        };
        assert!(AbuseDetector::from_settings(&s).should_detect());
        s.sampling_rate = 0.0;
        assert!(!AbuseDetector::from_settings(&s).should_detect());
        s.sampling_rate = 1.0;
        s.enabled = false;
        assert!(!AbuseDetector::from_settings(&s).should_detect());
    }
}
