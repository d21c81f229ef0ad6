//! One [`QuotaActor`] per provider × model: admit what fits, shed what does not, learn from usage.
//!
//! The original gateway only *measures* a model's load (an in-flight gauge against a configured
//! limit), so operators learn that a provider quota ran dry from the provider's 429s. Here the
//! gateway owns each model's quota:
//!
//! * **Limits**: concurrent calls, requests per minute and tokens per minute (input + output), in a
//!   sliding window of one-second buckets ([`WINDOW_S`] of them).
//! * **Reserve, then reconcile**: before a call the request reserves a concurrency slot, one request
//!   and an estimate of its tokens ([`QuotaHandle::reserve`] gives a [`Lease`]); when the call ends
//!   the real usage replaces the estimate ([`Lease::finish`]). A lease dropped without a finish
//!   (a panic, a killed task) keeps its estimate and still frees its slot.
//! * **Backpressure**: a request that does not fit waits in a bounded FIFO queue for at most
//!   `max_wait`, then gets a [`Refusal`] that says which limit refused it and when capacity returns.
//!   Reserve calls in the mailbox are counted by the handle and bounded too: past the bound the
//!   caller is refused at once, without a message.
//! * **Upstream feedback**: a provider 429 parks the model until its `Retry-After` (or a default);
//!   meanwhile calls are refused at once instead of being sent to certain failure.
//! * **Shadow mode**: everything is measured and reported (`quota_shadow_rejections_total`), nothing
//!   is refused, for rolling limits out safely.
//!
//! Where the counts live is a [`QuotaBackend`]: [`LocalBackend`] in this process, or a shared store
//! (the gateway's Redis backend, one atomic script per reserve and per reconcile) so that a fleet
//! enforces one limit together. A failing backend is answered per [`FailMode`]: fail open onto a
//! local fallback (the actor keeps serving its own view, loudly counted in
//! `quota_backend_errors_total`) or fail closed.
//!
//! Everything an actor must keep across a restart (limits, backend, the published address, releases
//! that arrived while it was down) lives in [`QuotaShared`], held by the child spec, so a crashed
//! QuotaActor comes back with its limits and, with a shared backend, its counts.
//!
//! Metrics: `quota_saturation_ratio{engine,model,dimension}`, `quota_rejections_total{engine,model,dimension}`,
//! `quota_shadow_rejections_total{engine,model,dimension}`, `quota_upstream_throttled_total{engine,model}`,
//! `quota_backend_errors_total{engine,model,backend}`, `quota_wait_queue_length{engine,model}` and the
//! original's `model_inferences_max_concurrent{model_engine,model_name}`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, FutureExt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

/// Length of the sliding window of the per-minute limits, in one-second buckets.
pub const WINDOW_S: u64 = 60;

/// The limits of one model; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Calls in flight at once.
    pub max_concurrent: Option<u64>,
    /// Calls started in the last minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens (input + output) of calls started in the last minute.
    pub tokens_per_minute: Option<u64>,
}

impl Limits {
    /// Whether no dimension is limited.
    pub fn is_unlimited(&self) -> bool {
        self.max_concurrent.is_none()
            && self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
    }
}

/// What refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Too many calls in flight.
    Concurrency,
    /// Too many calls in the last minute.
    Requests,
    /// Too many tokens in the last minute.
    Tokens,
    /// The provider answered 429 and the model is parked.
    Upstream,
    /// The shared quota store is unreachable and the mode is fail-closed.
    Backend,
    /// Too many reserve calls waiting for the actor.
    Mailbox,
}

impl Dimension {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Upstream => "upstream",
            Self::Backend => "backend",
            Self::Mailbox => "mailbox",
        }
    }
}

/// Usage as the backend sees it: in flight now, requests and tokens in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// Calls holding a lease.
    pub in_flight: u64,
    /// Calls started in the window.
    pub requests: u64,
    /// Tokens charged in the window.
    pub tokens: u64,
}

/// A backend's answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted. `bucket` is the window second the reservation was charged to (reconcile it there).
    /// With `force`, `would_refuse` says what would have refused it.
    Admitted {
        /// The window second charged.
        bucket: u64,
        /// Usage after the reservation.
        view: View,
        /// In shadow mode: the limit that would have refused the call.
        would_refuse: Option<Dimension>,
    },
    /// Not counted.
    Refused {
        /// The limit that refused.
        dimension: Dimension,
        /// Time until enough capacity returns (zero when unknown, as for concurrency).
        retry_after: Duration,
        /// Usage now.
        view: View,
    },
}

/// A reservation request to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveArgs {
    /// Unique id of the lease (releases the concurrency slot later).
    pub lease: String,
    /// Estimated tokens.
    pub tokens: u64,
    /// The limits to check.
    pub limits: Limits,
    /// Count it even if it does not fit (shadow mode).
    pub force: bool,
    /// A lease never released (a crashed instance) frees its slot after this long.
    pub lease_ttl: Duration,
}

/// A reconciliation: release the slot and correct the tokens charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileArgs {
    /// The lease.
    pub lease: String,
    /// The window second the reservation was charged to.
    pub bucket: u64,
    /// Actual minus estimated tokens.
    pub delta_tokens: i64,
}

/// A backend failure (unreachable, timed out, bad answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quota backend: {0}")]
pub struct BackendError(pub String);

/// Where one model's counts live. Implementations must make each call atomic: a reserve checks
/// and charges in one step, so that concurrent reservations (from this process or others sharing
/// the store) can never both take the last unit.
pub trait QuotaBackend: Send + Sync + 'static {
    /// `local`, `redis`, ... (the `backend` label).
    fn kind(&self) -> &'static str;
    /// Check the limits and, if the call fits (or `force`), charge it.
    fn reserve(&self, args: ReserveArgs) -> BoxFuture<'static, Result<Verdict, BackendError>>;
    /// Release a lease and correct its tokens.
    fn reconcile(&self, args: ReconcileArgs) -> BoxFuture<'static, Result<View, BackendError>>;
    /// Usage now, for the saturation gauges.
    fn peek(&self) -> BoxFuture<'static, Result<View, BackendError>>;
    /// The provider throttles the model: a shared store tells every instance to refuse for
    /// `duration` (reserve answers [`Dimension::Upstream`]). The actor parks itself in any case,
    /// so a process-local backend has nothing to do.
    fn park(&self, duration: Duration) -> BoxFuture<'static, Result<(), BackendError>> {
        let _ = duration;
        futures::future::ready(Ok(())).boxed()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Time until buckets (oldest first) totalling at least `need` have left the window, at `now_ms`.
/// A bucket of second `s` leaves the window at `(s + WINDOW_S) * 1000` ms.
pub fn freed_after(
    buckets: impl IntoIterator<Item = (u64, u64)>,
    need: u64,
    now_ms: u64,
) -> Duration {
    let mut freed = 0u64;
    for (second, amount) in buckets {
        freed = freed.saturating_add(amount);
        if freed >= need {
            let at = (second + WINDOW_S) * 1000;
            return Duration::from_millis(at.saturating_sub(now_ms));
        }
    }
    // Not even an empty window would hold it: one whole window.
    Duration::from_secs(WINDOW_S)
}

/// Counts of one model in this process.
#[derive(Default)]
struct LocalCounts {
    /// Lease id → expiry (ms since the epoch).
    leases: HashMap<String, u64>,
    /// Window second → (requests, tokens).
    buckets: BTreeMap<u64, (u64, u64)>,
}

impl LocalCounts {
    fn prune(&mut self, now_ms: u64) {
        self.leases.retain(|_, expiry| *expiry > now_ms);
        let oldest = (now_ms / 1000 + 1).saturating_sub(WINDOW_S);
        self.buckets = self.buckets.split_off(&oldest);
    }

    fn view(&self) -> View {
        let (requests, tokens) = self
            .buckets
            .values()
            .fold((0u64, 0u64), |(r, t), (br, bt)| (r + br, t + bt));
        View {
            in_flight: self.leases.len() as u64,
            requests,
            tokens,
        }
    }
}

/// Counts in this process (the default backend, and the fallback of a shared one). The same
/// algorithm as the Redis script: a set of leases with expiry, and one-second buckets of requests
/// and tokens over the last [`WINDOW_S`] seconds.
#[derive(Default)]
pub struct LocalBackend {
    counts: Mutex<LocalCounts>,
}

impl LocalBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reservation, computed synchronously at `now_ms`.
    pub fn reserve_at(&self, args: &ReserveArgs, now_ms: u64) -> Verdict {
        let Ok(mut c) = self.counts.lock() else {
            return Verdict::Refused {
                dimension: Dimension::Backend,
                retry_after: Duration::from_secs(1),
                view: View::default(),
            };
        };
        c.prune(now_ms);
        let view = c.view();
        let refused = check(
            &args.limits,
            &view,
            args.tokens,
            || c.buckets.iter().map(|(s, (r, _))| (*s, *r)).collect(),
            || c.buckets.iter().map(|(s, (_, t))| (*s, *t)).collect(),
            now_ms,
        );
        if let Some((dimension, retry_after)) = refused {
            if !args.force {
                return Verdict::Refused {
                    dimension,
                    retry_after,
                    view,
                };
            }
        }
        let bucket = now_ms / 1000;
        c.leases.insert(
            args.lease.clone(),
            now_ms + args.lease_ttl.as_millis() as u64,
        );
        let slot = c.buckets.entry(bucket).or_default();
        slot.0 += 1;
        slot.1 += args.tokens;
        Verdict::Admitted {
            bucket,
            view: c.view(),
            would_refuse: refused.map(|(d, _)| d),
        }
    }

    /// The reconciliation, computed synchronously at `now_ms`.
    pub fn reconcile_at(&self, args: &ReconcileArgs, now_ms: u64) -> View {
        let Ok(mut c) = self.counts.lock() else {
            return View::default();
        };
        c.leases.remove(&args.lease);
        c.prune(now_ms);
        if let Some(slot) = c.buckets.get_mut(&args.bucket) {
            slot.1 = slot.1.saturating_add_signed(args.delta_tokens);
        }
        c.view()
    }

    fn peek_at(&self, now_ms: u64) -> View {
        let Ok(mut c) = self.counts.lock() else {
            return View::default();
        };
        c.prune(now_ms);
        c.view()
    }
}

/// Which limit refuses `tokens` more on top of `view`, and when it would fit.
fn check(
    limits: &Limits,
    view: &View,
    tokens: u64,
    request_buckets: impl FnOnce() -> Vec<(u64, u64)>,
    token_buckets: impl FnOnce() -> Vec<(u64, u64)>,
    now_ms: u64,
) -> Option<(Dimension, Duration)> {
    if limits
        .max_concurrent
        .is_some_and(|max| view.in_flight >= max)
    {
        return Some((Dimension::Concurrency, Duration::ZERO));
    }
    if let Some(max) = limits.requests_per_minute {
        if view.requests + 1 > max {
            let need = view.requests + 1 - max;
            return Some((
                Dimension::Requests,
                freed_after(request_buckets(), need, now_ms),
            ));
        }
    }
    if let Some(max) = limits.tokens_per_minute {
        if view.tokens + tokens > max {
            let need = view.tokens + tokens - max;
            return Some((
                Dimension::Tokens,
                freed_after(token_buckets(), need, now_ms),
            ));
        }
    }
    None
}

impl QuotaBackend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn reserve(&self, args: ReserveArgs) -> BoxFuture<'static, Result<Verdict, BackendError>> {
        futures::future::ready(Ok(self.reserve_at(&args, now_ms()))).boxed()
    }

    fn reconcile(&self, args: ReconcileArgs) -> BoxFuture<'static, Result<View, BackendError>> {
        futures::future::ready(Ok(self.reconcile_at(&args, now_ms()))).boxed()
    }

    fn peek(&self) -> BoxFuture<'static, Result<View, BackendError>> {
        futures::future::ready(Ok(self.peek_at(now_ms()))).boxed()
    }
}

/// What to do when the backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Admit, counting on the local fallback backend (limits hold per instance), loudly.
    Open,
    /// Refuse (503 with `Retry-After`).
    Closed,
}

/// How a QuotaActor behaves.
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// Longest wait in the queue before a refusal.
    pub max_wait: Duration,
    /// Largest number of waiting reservations.
    pub max_queue: usize,
    /// Largest number of reserve calls on their way to the actor.
    pub max_mailbox: usize,
    /// Measure and report, never refuse.
    pub shadow: bool,
    /// Behaviour when the backend fails.
    pub fail_mode: FailMode,
    /// How long an upstream 429 without `Retry-After` parks the model.
    pub park_default: Duration,
    /// How long an unreleased lease holds its slot.
    pub lease_ttl: Duration,
    /// How often the saturation gauges are refreshed from the backend.
    pub refresh: Duration,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(100),
            max_queue: 64,
            max_mailbox: 1024,
            shadow: false,
            fail_mode: FailMode::Open,
            park_default: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(660),
            refresh: Duration::from_secs(1),
        }
    }
}

/// Which backend charged a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The configured backend.
    Primary,
    /// The local fallback (the primary was down and the mode is fail-open).
    Fallback,
    /// Nothing (fail-open without a fallback).
    Nothing,
}

/// A granted reservation, as the actor describes it.
#[derive(Debug, Clone)]
pub struct Grant {
    lease: String,
    bucket: u64,
    tokens: u64,
    via: Via,
}

/// Why a call was refused, and what the caller can tell its client.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The provider engine.
    pub engine: String,
    /// The model.
    pub model: String,
    /// The limit that refused.
    pub dimension: Dimension,
    /// Time until capacity returns (at least one second is advised to clients).
    pub retry_after: Duration,
    /// The limits.
    pub limits: Limits,
    /// Usage when refused.
    pub view: View,
}

impl Refusal {
    /// A one-line description for clients and logs.
    pub fn describe(&self) -> String {
        let limit = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let what = match self.dimension {
            Dimension::Concurrency => format!(
                "concurrent calls limit ({}) reached",
                limit(self.limits.max_concurrent)
            ),
            Dimension::Requests => format!(
                "requests per minute limit ({}) reached",
                limit(self.limits.requests_per_minute)
            ),
            Dimension::Tokens => format!(
                "tokens per minute limit ({}) reached",
                limit(self.limits.tokens_per_minute)
            ),
            Dimension::Upstream => "the provider is rate limiting this model".to_string(),
            Dimension::Backend => "the quota store is unavailable".to_string(),
            Dimension::Mailbox => "too many calls waiting for capacity".to_string(),
        };
        format!(
            "Model capacity exceeded for {}/{}: {what}",
            self.engine, self.model
        )
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self.retry_after.as_millis() as u64;
        ms.div_ceil(1000).max(1)
    }
}

/// A reservation's reconciliation, as sent to the actor.
pub struct Release {
    grant: Grant,
    actual_tokens: Option<u64>,
    duration: Duration,
}

/// Messages of a [`QuotaActor`].
pub enum QuotaMsg {
    /// May a call with this many estimated tokens run?
    Reserve {
        /// Estimated tokens.
        tokens: u64,
        /// The answer.
        reply: RpcReplyPort<Result<Grant, Refusal>>,
    },
    /// Calls ended: their releases wait in the shared store; settle them.
    Settle,
    /// The provider answered 429.
    Throttled(Option<Duration>),
    /// A waiter's time is up.
    Expire(u64),
    /// Refresh the gauges.
    Refresh,
}

/// Everything a QuotaActor keeps across restarts; held by its child spec and every handle.
pub struct QuotaShared {
    engine: String,
    model: String,
    /// Bounded metric labels (unknown model names folded by the caller).
    labels: (String, String),
    limits: Limits,
    settings: QuotaSettings,
    backend: Arc<dyn QuotaBackend>,
    fallback: Option<Arc<dyn QuotaBackend>>,
    current: watch::Sender<Option<ActorRef<QuotaMsg>>>,
    outstanding: AtomicUsize,
    /// Releases not yet settled by the actor (see [`QuotaShared::send_release`]).
    orphans: Mutex<Vec<Release>>,
    lease_seq: AtomicU64,
    lease_prefix: String,
}

impl QuotaShared {
    /// The state of one model's quota.
    ///
    /// `labels` are the `(engine, model)` metric labels; `fallback` is the local backend used
    /// when `backend` fails in fail-open mode.
    pub fn new(
        engine: impl Into<String>,
        model: impl Into<String>,
        labels: (String, String),
        limits: Limits,
        settings: QuotaSettings,
        backend: Arc<dyn QuotaBackend>,
        fallback: Option<Arc<dyn QuotaBackend>>,
    ) -> Arc<Self> {
        let (current, _) = watch::channel(None);
        Arc::new(Self {
            engine: engine.into(),
            model: model.into(),
            labels,
            limits,
            settings,
            backend,
            fallback,
            current,
            outstanding: AtomicUsize::new(0),
            orphans: Mutex::new(Vec::new()),
            lease_seq: AtomicU64::new(0),
            lease_prefix: format!("{:016x}", rand::random::<u64>()),
        })
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn next_lease(&self) -> String {
        let n = self.lease_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.lease_prefix)
    }

    fn refusal(&self, dimension: Dimension, retry_after: Duration, view: View) -> Refusal {
        Refusal {
            engine: self.engine.clone(),
            model: self.model.clone(),
            dimension,
            retry_after,
            limits: self.limits,
            view,
        }
    }

    /// Hand a finished call's release to the actor. The release itself waits in the shared
    /// store, not in the mailbox: a mailbox dies with a killed actor, and a release lost there
    /// would hold its slot until the lease expired. The actor is only woken to settle the store;
    /// if it is down, its successor settles it when it starts.
    fn send_release(&self, release: Release) {
        if let Ok(mut pending) = self.orphans.lock() {
            pending.push(release);
        }
        if let Some(actor) = self.current.borrow().clone() {
            let _ = actor.cast(QuotaMsg::Settle);
        }
    }

    fn take_pending(&self) -> Vec<Release> {
        self.orphans
            .lock()
            .map(|mut pending| std::mem::take(&mut *pending))
            .unwrap_or_default()
    }

    fn count_rejection(&self, dimension: Dimension, shadow: bool) {
        let name = if shadow {
            "quota_shadow_rejections_total"
        } else {
            "quota_rejections_total"
        };
        metrics::counter!(
            name,
            "engine" => self.labels.0.clone(),
            "model" => self.labels.1.clone(),
            "dimension" => dimension.label(),
        )
        .increment(1);
    }
}

/// Reaches one model's QuotaActor, whichever instance is current.
#[derive(Clone)]
pub struct QuotaHandle {
    shared: Arc<QuotaShared>,
}

impl QuotaHandle {
    /// A handle on `shared` (the actor is started by whoever supervises it).
    pub fn new(shared: Arc<QuotaShared>) -> Self {
        Self { shared }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<QuotaShared> {
        &self.shared
    }

    /// Reserve a call of `tokens` estimated tokens: a [`Lease`] to finish when the call ends, or
    /// the reason it may not run. Waits at most the queue wait (plus a restart of the actor).
    pub async fn reserve(&self, tokens: u64) -> Result<Lease, Refusal> {
        let shared = &self.shared;
        let before = shared.outstanding.fetch_add(1, Ordering::AcqRel);
        let _outstanding = Outstanding(&shared.outstanding);
        if before >= shared.settings.max_mailbox {
            shared.count_rejection(Dimension::Mailbox, false);
            return Err(shared.refusal(
                Dimension::Mailbox,
                Duration::from_secs(1),
                View::default(),
            ));
        }
        let mut current = shared.current.subscribe();
        let patience = shared.settings.max_wait + Duration::from_secs(5);
        // At most one retry: the actor was killed while we waited, its successor answers.
        for _ in 0..2 {
            let actor = match tokio::time::timeout(
                Duration::from_secs(2),
                current.wait_for(Option::is_some),
            )
            .await
            {
                Ok(Ok(actor)) => actor.clone(),
                _ => break,
            };
            current.mark_unchanged();
            let Some(actor) = actor else { break };
            let answer = actor
                .call(|reply| QuotaMsg::Reserve { tokens, reply }, Some(patience))
                .await;
            match answer {
                Ok(ractor::rpc::CallResult::Success(Ok(grant))) => {
                    return Ok(Lease {
                        shared: Arc::clone(shared),
                        grant: Some(grant),
                        started: Instant::now(),
                    })
                }
                Ok(ractor::rpc::CallResult::Success(Err(refusal))) => return Err(refusal),
                Ok(ractor::rpc::CallResult::Timeout) => break,
                // The actor stopped before answering; wait for the restarted one.
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), current.changed()).await;
                }
            }
        }
        Err(shared.refusal(Dimension::Backend, Duration::from_secs(1), View::default()))
    }
}

struct Outstanding<'a>(&'a AtomicUsize);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A granted reservation. [`Lease::finish`] it with the real usage when the call ends; dropping
/// it unfinished releases the slot and keeps the estimate.
pub struct Lease {
    shared: Arc<QuotaShared>,
    grant: Option<Grant>,
    started: Instant,
}

impl Lease {
    /// The tokens reserved.
    pub fn reserved_tokens(&self) -> u64 {
        self.grant.as_ref().map(|g| g.tokens).unwrap_or(0)
    }

    /// The provider answered 429: park the model for `retry_after` (or the default).
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let actor = self.shared.current.borrow().clone();
        if let Some(actor) = actor {
            let _ = actor.cast(QuotaMsg::Throttled(retry_after));
        }
    }

    /// The call ended having used `actual_tokens` (None: unknown, keep the estimate).
    pub fn finish(mut self, actual_tokens: Option<u64>) {
        self.settle(actual_tokens);
    }

    fn settle(&mut self, actual_tokens: Option<u64>) {
        if let Some(grant) = self.grant.take() {
            self.shared.send_release(Release {
                grant,
                actual_tokens,
                duration: self.started.elapsed(),
            });
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.settle(None);
    }
}

/// The actor. See the module documentation.
pub struct QuotaActor;

struct Waiter {
    id: u64,
    tokens: u64,
    reply: RpcReplyPort<Result<Grant, Refusal>>,
}

/// The actor's own state (lost on a restart, which is harmless: waiters are retried by their
/// handles, parking is re-learnt from the next 429).
pub struct QuotaState {
    shared: Arc<QuotaShared>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    parked_until: Option<Instant>,
    /// Moving average of call durations, to estimate when a concurrency slot frees.
    avg_call: Option<Duration>,
    /// Start of the calls this instance admitted and that still run.
    running: HashMap<String, Instant>,
    backend_down: bool,
    /// After a backend failure, reservations skip it until then (a hung store must not cost
    /// every call its timeout); the periodic refresh probes it meanwhile.
    skip_backend_until: Option<Instant>,
}

enum Attempt {
    Granted(Grant),
    Refused(Refusal),
}

impl QuotaState {
    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("engine", self.shared.labels.0.clone()),
            ("model", self.shared.labels.1.clone()),
        ]
    }

    fn publish_view(&self, view: &View) {
        let limits = &self.shared.limits;
        for (dimension, used, limit) in [
            ("concurrency", view.in_flight, limits.max_concurrent),
            ("requests", view.requests, limits.requests_per_minute),
            ("tokens", view.tokens, limits.tokens_per_minute),
        ] {
            let Some(limit) = limit else { continue };
            let ratio = if limit == 0 {
                1.0
            } else {
                (used as f64 / limit as f64).min(1.0)
            };
            metrics::gauge!(
                "quota_saturation_ratio",
                "engine" => self.shared.labels.0.clone(),
                "model" => self.shared.labels.1.clone(),
                "dimension" => dimension,
            )
            .set(ratio);
        }
    }

    fn publish_queue(&self) {
        metrics::gauge!("quota_wait_queue_length", &self.labels()).set(self.waiters.len() as f64);
    }

    fn backend_failed(&mut self, backend: &'static str, e: &BackendError) {
        let labels = self.labels();
        metrics::counter!(
            "quota_backend_errors_total",
            "engine" => labels[0].1.clone(),
            "model" => labels[1].1.clone(),
            "backend" => backend,
        )
        .increment(1);
        if !self.backend_down {
            tracing::error!(
                engine = %self.shared.engine,
                model = %self.shared.model,
                backend,
                fail_mode = ?self.shared.settings.fail_mode,
                "quota backend unavailable: {e}"
            );
        }
        self.backend_down = true;
        self.skip_backend_until = Some(Instant::now() + Duration::from_secs(1));
    }

    fn backend_ok(&mut self) {
        if self.backend_down {
            tracing::warn!(engine = %self.shared.engine, model = %self.shared.model, "quota backend is back");
        }
        self.backend_down = false;
        self.skip_backend_until = None;
    }

    /// Estimated time until a concurrency slot frees: the average call duration minus the age of
    /// the oldest running call, at least zero.
    fn concurrency_retry(&self) -> Duration {
        let Some(avg) = self.avg_call else {
            return Duration::ZERO;
        };
        let oldest = self
            .running
            .values()
            .map(|started| started.elapsed())
            .max()
            .unwrap_or_default();
        avg.saturating_sub(oldest)
    }

    async fn attempt(&mut self, tokens: u64) -> Attempt {
        let shared = Arc::clone(&self.shared);
        // A call larger than the whole budget may still run alone in an empty window.
        let tokens = match shared.limits.tokens_per_minute {
            Some(max) => tokens.min(max),
            None => tokens,
        };
        let args = ReserveArgs {
            lease: shared.next_lease(),
            tokens,
            limits: shared.limits,
            force: shared.settings.shadow,
            lease_ttl: shared.settings.lease_ttl,
        };
        let skip = self
            .skip_backend_until
            .is_some_and(|until| Instant::now() < until);
        let primary = if skip {
            Err(BackendError("skipped after a recent failure".into()))
        } else {
            shared.backend.reserve(args.clone()).await
        };
        let (verdict, via) = match primary {
            Ok(verdict) => {
                self.backend_ok();
                (verdict, Via::Primary)
            }
            Err(e) => {
                if !skip {
                    self.backend_failed(shared.backend.kind(), &e);
                }
                match (shared.settings.fail_mode, &shared.fallback) {
                    (FailMode::Closed, _) if !shared.settings.shadow => {
                        return Attempt::Refused(shared.refusal(
                            Dimension::Backend,
                            Duration::from_secs(1),
                            View::default(),
                        ));
                    }
                    (_, Some(fallback)) => match fallback.reserve(args.clone()).await {
                        Ok(verdict) => (verdict, Via::Fallback),
                        Err(_) => (admitted_blind(), Via::Nothing),
                    },
                    (_, None) => (admitted_blind(), Via::Nothing),
                }
            }
        };
        match verdict {
            Verdict::Admitted {
                bucket,
                view,
                would_refuse,
            } => {
                self.publish_view(&view);
                if let Some(dimension) = would_refuse {
                    shared.count_rejection(dimension, true);
                }
                self.running.insert(args.lease.clone(), Instant::now());
                Attempt::Granted(Grant {
                    lease: args.lease,
                    bucket,
                    tokens,
                    via,
                })
            }
            Verdict::Refused {
                dimension,
                retry_after,
                view,
            } => {
                self.publish_view(&view);
                let retry_after = if dimension == Dimension::Concurrency {
                    self.concurrency_retry()
                } else {
                    retry_after
                };
                Attempt::Refused(shared.refusal(dimension, retry_after, view))
            }
        }
    }

    async fn release(&mut self, release: Release) {
        let Release {
            grant,
            actual_tokens,
            duration,
        } = release;
        let avg = match self.avg_call {
            Some(avg) => avg.mul_f64(0.8) + duration.mul_f64(0.2),
            None => duration,
        };
        self.avg_call = Some(avg);
        let delta = actual_tokens
            .map(|actual| actual as i64 - grant.tokens as i64)
            .unwrap_or(0);
        self.settle(grant, delta).await;
    }

    /// Give back a grant that never reached its caller (it gave up while the grant was being
    /// made): the slot is free again and its estimated tokens are returned. No call ran, so the
    /// average call duration learns nothing from it.
    async fn give_back(&mut self, grant: Grant) {
        let unused = -(grant.tokens as i64);
        self.settle(grant, unused).await;
    }

    /// End `grant`'s lease in the store, correcting its tokens by `delta_tokens`.
    async fn settle(&mut self, grant: Grant, delta_tokens: i64) {
        self.running.remove(&grant.lease);
        let args = ReconcileArgs {
            lease: grant.lease,
            bucket: grant.bucket,
            delta_tokens,
        };
        let backend = match grant.via {
            Via::Primary => Arc::clone(&self.shared.backend),
            Via::Fallback => match &self.shared.fallback {
                Some(f) => Arc::clone(f),
                None => return,
            },
            Via::Nothing => return,
        };
        match backend.reconcile(args).await {
            Ok(view) => self.publish_view(&view),
            Err(e) => {
                // The lease expires in the store on its own (lease_ttl).
                self.backend_failed(backend.kind(), &e);
            }
        }
    }

    /// Admit waiters in order while they fit.
    async fn drain(&mut self) {
        while let Some(waiter) = self.waiters.pop_front() {
            if waiter.reply.is_closed() {
                continue;
            }
            match self.attempt(waiter.tokens).await {
                Attempt::Granted(grant) => {
                    if let Err(ractor::MessagingErr::SendErr(Ok(grant))) =
                        waiter.reply.send(Ok(grant))
                    {
                        // The caller gave up meanwhile.
                        self.give_back(grant).await;
                    }
                }
                Attempt::Refused(_) => {
                    self.waiters.push_front(waiter);
                    break;
                }
            }
        }
        self.publish_queue();
    }

    fn parked_for(&self) -> Option<Duration> {
        let until = self.parked_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

fn admitted_blind() -> Verdict {
    Verdict::Admitted {
        bucket: now_ms() / 1000,
        view: View::default(),
        would_refuse: None,
    }
}

impl Actor for QuotaActor {
    type Msg = QuotaMsg;
    type State = QuotaState;
    type Arguments = Arc<QuotaShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<QuotaMsg>,
        shared: Arc<QuotaShared>,
    ) -> Result<QuotaState, ActorProcessingErr> {
        if let Some(max) = shared.limits.max_concurrent {
            metrics::gauge!(
                "model_inferences_max_concurrent",
                "model_engine" => shared.labels.0.clone(),
                "model_name" => shared.labels.1.clone(),
            )
            .set(max as f64);
        }
        // Releases that arrived while no instance was running (or that the last one never
        // settled) are settled first.
        myself
            .send_message(QuotaMsg::Settle)
            .map_err(|_| "quota actor mailbox closed at start")?;
        myself.send_interval(shared.settings.refresh, || QuotaMsg::Refresh);
        shared.current.send_replace(Some(myself.clone()));
        Ok(QuotaState {
            shared,
            waiters: VecDeque::new(),
            next_waiter: 0,
            parked_until: None,
            avg_call: None,
            running: HashMap::new(),
            backend_down: false,
            skip_backend_until: None,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<QuotaMsg>,
        state: &mut QuotaState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.current.send_if_modified(|current| {
            let mine = current
                .as_ref()
                .is_some_and(|a| a.get_id() == myself.get_id());
            if mine {
                *current = None;
            }
            mine
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<QuotaMsg>,
        msg: QuotaMsg,
        state: &mut QuotaState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            QuotaMsg::Reserve { tokens, reply } => {
                if reply.is_closed() {
                    return Ok(());
                }
                let shared = Arc::clone(&state.shared);
                if let Some(left) = state.parked_for() {
                    if !shared.settings.shadow {
                        shared.count_rejection(Dimension::Upstream, false);
                        let _ = reply.send(Err(shared.refusal(
                            Dimension::Upstream,
                            left,
                            View::default(),
                        )));
                        return Ok(());
                    }
                    shared.count_rejection(Dimension::Upstream, true);
                }
                // First come, first served: behind waiters, a newcomer waits too.
                let refusal = if state.waiters.is_empty() {
                    match state.attempt(tokens).await {
                        Attempt::Granted(grant) => {
                            // The caller may have given up while the backend answered: give
                            // the slot back rather than hold it until the lease expires.
                            if let Err(ractor::MessagingErr::SendErr(Ok(grant))) =
                                reply.send(Ok(grant))
                            {
                                state.give_back(grant).await;
                                state.drain().await;
                            }
                            return Ok(());
                        }
                        Attempt::Refused(refusal) => Some(refusal),
                    }
                } else {
                    None
                };
                let settings = &shared.settings;
                let worth_waiting = refusal.as_ref().is_none_or(|r| {
                    r.dimension == Dimension::Concurrency || r.retry_after <= settings.max_wait
                }) && !matches!(
                    refusal.as_ref().map(|r| r.dimension),
                    Some(Dimension::Backend)
                );
                if worth_waiting
                    && !settings.max_wait.is_zero()
                    && state.waiters.len() < settings.max_queue
                {
                    let id = state.next_waiter;
                    state.next_waiter += 1;
                    state.waiters.push_back(Waiter { id, tokens, reply });
                    myself.send_after(settings.max_wait, move || QuotaMsg::Expire(id));
                    state.publish_queue();
                    return Ok(());
                }
                let refusal = match refusal {
                    Some(r) => r,
                    None => shared.refusal(
                        Dimension::Concurrency,
                        state.concurrency_retry(),
                        View::default(),
                    ),
                };
                shared.count_rejection(refusal.dimension, false);
                let _ = reply.send(Err(refusal));
            }
            QuotaMsg::Settle => {
                let pending = state.shared.take_pending();
                if !pending.is_empty() {
                    for release in pending {
                        state.release(release).await;
                    }
                    state.drain().await;
                }
            }
            QuotaMsg::Throttled(retry_after) => {
                let shared = &state.shared;
                let park = retry_after
                    .filter(|d| !d.is_zero())
                    .unwrap_or(shared.settings.park_default);
                let until = Instant::now() + park;
                state.parked_until = Some(state.parked_until.map_or(until, |u| u.max(until)));
                metrics::counter!("quota_upstream_throttled_total", &state.labels()).increment(1);
                let backend = Arc::clone(&shared.backend);
                let shared_park = backend.park(park).await;
                tracing::warn!(
                    engine = %shared.engine,
                    model = %shared.model,
                    park_s = park.as_secs_f64(),
                    "provider rate limited the model; parking it"
                );
                if let Err(e) = shared_park {
                    state.backend_failed(backend.kind(), &e);
                }
            }
            QuotaMsg::Expire(id) => {
                let Some(pos) = state.waiters.iter().position(|w| w.id == id) else {
                    return Ok(());
                };
                // Capacity may have freed elsewhere (another instance): one last try.
                let Some(waiter) = state.waiters.remove(pos) else {
                    return Ok(());
                };
                if !waiter.reply.is_closed() {
                    let answer = match state.attempt(waiter.tokens).await {
                        Attempt::Granted(grant) => Ok(grant),
                        Attempt::Refused(refusal) => {
                            state.shared.count_rejection(refusal.dimension, false);
                            Err(refusal)
                        }
                    };
                    if let Err(ractor::MessagingErr::SendErr(Ok(grant))) = waiter.reply.send(answer)
                    {
                        state.give_back(grant).await;
                    }
                }
                state.publish_queue();
            }
            QuotaMsg::Refresh => {
                let backend = Arc::clone(&state.shared.backend);
                match backend.peek().await {
                    Ok(view) => {
                        state.backend_ok();
                        state.publish_view(&view);
                    }
                    Err(e) => state.backend_failed(backend.kind(), &e),
                }
                if !state.waiters.is_empty() {
                    state.drain().await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(lease: &str, tokens: u64, limits: Limits) -> ReserveArgs {
        ReserveArgs {
            lease: lease.into(),
            tokens,
            limits,
            force: false,
            lease_ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn local_backend_enforces_each_dimension() {
        let b = LocalBackend::new();
        let t0 = 1_000_000_000;
        let limits = Limits {
            max_concurrent: Some(2),
            ..Limits::default()
        };
        assert!(matches!(
            b.reserve_at(&args("a", 1, limits), t0),
            Verdict::Admitted { .. }
        ));
        assert!(matches!(
            b.reserve_at(&args("b", 1, limits), t0),
            Verdict::Admitted { .. }
        ));
        assert!(matches!(
            b.reserve_at(&args("c", 1, limits), t0),
            Verdict::Refused {
                dimension: Dimension::Concurrency,
                ..
            }
        ));
        b.reconcile_at(
            &ReconcileArgs {
                lease: "a".into(),
                bucket: t0 / 1000,
                delta_tokens: 0,
            },
            t0,
        );
        assert!(matches!(
            b.reserve_at(&args("c", 1, limits), t0),
            Verdict::Admitted { .. }
        ));

        let b = LocalBackend::new();
        let limits = Limits {
            requests_per_minute: Some(2),
            ..Limits::default()
        };
        b.reserve_at(&args("a", 0, limits), t0);
        b.reserve_at(&args("b", 0, limits), t0 + 10_500);
        match b.reserve_at(&args("c", 0, limits), t0 + 20_000) {
            Verdict::Refused {
                dimension,
                retry_after,
                ..
            } => {
                assert_eq!(dimension, Dimension::Requests);
                // The first request's second leaves the window 60 s after it started.
                assert_eq!(retry_after, Duration::from_millis(40_000));
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            b.reserve_at(&args("c", 0, limits), t0 + 60_000),
            Verdict::Admitted { .. }
        ));
    }

    #[test]
    fn reconcile_replaces_the_estimate() {
        let b = LocalBackend::new();
        let t0 = 2_000_000_000;
        let limits = Limits {
            tokens_per_minute: Some(1000),
            ..Limits::default()
        };
        let Verdict::Admitted { bucket, .. } = b.reserve_at(&args("a", 900, limits), t0) else {
            panic!()
        };
        assert!(matches!(
            b.reserve_at(&args("b", 200, limits), t0),
            Verdict::Refused {
                dimension: Dimension::Tokens,
                ..
            }
        ));
        let view = b.reconcile_at(
            &ReconcileArgs {
                lease: "a".into(),
                bucket,
                delta_tokens: -600,
            },
            t0,
        );
        assert_eq!(view.tokens, 300);
        assert!(matches!(
            b.reserve_at(&args("b", 200, limits), t0),
            Verdict::Admitted { .. }
        ));
    }

    #[test]
    fn shadow_counts_but_never_refuses() {
        let b = LocalBackend::new();
        let limits = Limits {
            max_concurrent: Some(1),
            ..Limits::default()
        };
        let mut a = args("a", 0, limits);
        a.force = true;
        b.reserve_at(&a, 5_000);
        a.lease = "b".into();
        match b.reserve_at(&a, 5_000) {
            Verdict::Admitted {
                view, would_refuse, ..
            } => {
                assert_eq!(would_refuse, Some(Dimension::Concurrency));
                assert_eq!(view.in_flight, 2);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn leases_expire() {
        let b = LocalBackend::new();
        let limits = Limits {
            max_concurrent: Some(1),
            ..Limits::default()
        };
        let mut a = args("a", 0, limits);
        a.lease_ttl = Duration::from_secs(1);
        b.reserve_at(&a, 10_000);
        assert!(matches!(
            b.reserve_at(&args("b", 0, limits), 10_500),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            b.reserve_at(&args("b", 0, limits), 11_001),
            Verdict::Admitted { .. }
        ));
    }

    async fn actor(limits: Limits, settings: QuotaSettings) -> (QuotaHandle, ActorRef<QuotaMsg>) {
        let shared = QuotaShared::new(
            "e",
            "m",
            ("e".into(), "m".into()),
            limits,
            settings,
            Arc::new(LocalBackend::new()),
            None,
        );
        let (actor, _) = Actor::spawn(None, QuotaActor, Arc::clone(&shared))
            .await
            .unwrap();
        (QuotaHandle::new(shared), actor)
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_a_finished_call_frees() {
        let limits = Limits {
            max_concurrent: Some(1),
            ..Limits::default()
        };
        let settings = QuotaSettings {
            max_wait: Duration::from_secs(30),
            ..QuotaSettings::default()
        };
        let (handle, actor) = actor(limits, settings).await;
        let first = handle.reserve(1).await.unwrap();
        let waiting = tokio::spawn({
            let handle = handle.clone();
            async move { handle.reserve(1).await.map(|_| ()) }
        });
        // The waiter is queued (it cannot have been admitted: the slot is taken).
        while handle.shared.outstanding.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        first.finish(Some(1));
        assert!(waiting.await.unwrap().is_ok());
        actor.stop(None);
    }

    #[tokio::test]
    async fn without_wait_the_extra_call_is_refused_and_a_429_parks() {
        let limits = Limits {
            max_concurrent: Some(1),
            ..Limits::default()
        };
        let settings = QuotaSettings {
            max_wait: Duration::ZERO,
            ..QuotaSettings::default()
        };
        let (handle, actor) = actor(limits, settings).await;
        let first = handle.reserve(1).await.unwrap();
        let refused = handle.reserve(1).await.err().unwrap();
        assert_eq!(refused.dimension, Dimension::Concurrency);
        assert_eq!(refused.retry_after_secs(), 1);
        first.throttled(Some(Duration::from_secs(30)));
        first.finish(None);
        let refused = handle.reserve(1).await.err().unwrap();
        assert_eq!(refused.dimension, Dimension::Upstream);
        assert!(refused.retry_after_secs() > 1 && refused.retry_after_secs() <= 30);
        actor.stop(None);
    }
}
