//! One actor per OIDC issuer that owns the issuer's signing keys.
//!
//! Why an actor: the key set is read on every authenticated request but changes about once a
//! day. The [`JwksActor`] is its only writer; it publishes each key set as an immutable snapshot
//! in a [`JwksHandle`], which request handlers read with one atomic load, never a message. The
//! handle lives outside the actor (in its child spec), so a crashed or killed actor is restarted
//! by its supervisor and verification goes on from the last snapshot meanwhile.
//!
//! What the actor does:
//!
//! * on start, fetch the key set (discovery → `jwks_uri` → keys; how is the gateway's business:
//!   this crate only sees a [`FetchFn`]), unless a snapshot from a previous incarnation is still
//!   fresh;
//! * refresh every `refresh_interval` (24 h, as the original's cache);
//! * refresh at once when asked because a token names a key it does not hold
//!   ([`JwksHandle::refresh_on_demand`]), at most once per `cooldown`: askers that arrive while
//!   a fetch is in flight wait for that fetch (their messages queue behind it and are answered
//!   from its result), askers that arrive after it within the cooldown are answered at once from
//!   the snapshot without a message, so a client spraying random `kid`s costs the issuer at most
//!   one fetch per cooldown;
//! * a failed fetch keeps the last good keys and is retried with exponential backoff;
//! * metrics per issuer: `jwks_key_set_age_seconds`, `jwks_keys`, `jwks_refreshes_total{trigger}`,
//!   `jwks_refresh_failures_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::snapshot::Snapshot;
use crate::supervisor::{ChildSpec, FnChildSpec};

/// What a key set must tell the actor (for metrics).
pub trait KeySet: Send + Sync + 'static {
    /// How many keys it holds.
    fn key_count(&self) -> usize;
}

/// Fetches an issuer's current key set. Errors are messages for the log.
pub type FetchFn<K> = Arc<dyn Fn() -> BoxFuture<'static, Result<K, String>> + Send + Sync>;

/// Timing of one issuer's refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksConfig {
    /// Periodic refresh (the original caches 24 h).
    pub refresh_interval: Duration,
    /// At most one on-demand refresh per this period.
    pub cooldown: Duration,
    /// First retry delay after a failed fetch; doubled per further failure.
    pub retry_min: Duration,
    /// Upper bound of the retry delay.
    pub retry_max: Duration,
    /// Upper bound of one fetch (discovery and key set together).
    pub fetch_timeout: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(86_400),
            cooldown: Duration::from_secs(30),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(20),
        }
    }
}

/// What the actor publishes.
pub struct KeySetState<K> {
    /// The last good key set, if any fetch ever succeeded.
    pub keys: Option<Arc<K>>,
    /// When `keys` were fetched.
    pub fetched_at: Option<Instant>,
    /// Fetch attempts completed so far (successful or not).
    pub attempts: u64,
    /// Whether a fetch is in flight now.
    pub in_flight: bool,
    /// When the last on-demand refresh started.
    pub last_on_demand: Option<Instant>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

impl<K> Default for KeySetState<K> {
    fn default() -> Self {
        Self {
            keys: None,
            fetched_at: None,
            attempts: 0,
            in_flight: false,
            last_on_demand: None,
            last_error: None,
        }
    }
}

impl<K> Clone for KeySetState<K> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            fetched_at: self.fetched_at,
            attempts: self.attempts,
            in_flight: self.in_flight,
            last_on_demand: self.last_on_demand,
            last_error: self.last_error.clone(),
        }
    }
}

/// Why a fetch runs (the `trigger` label of `jwks_refreshes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// First fetch of an actor without a fresh snapshot.
    Startup,
    /// The periodic refresh.
    Periodic,
    /// A retry after a failed fetch.
    Retry,
    /// A token named a key the set does not hold.
    OnDemand,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Periodic => "periodic",
            Self::Retry => "retry",
            Self::OnDemand => "unknown_kid",
        }
    }
}

/// Messages of a [`JwksActor`].
pub enum JwksMsg {
    /// A scheduled fetch; ignored unless `timer` is the actor's current timer.
    Refresh {
        /// Which schedule this is.
        timer: u64,
        /// Why.
        trigger: Trigger,
    },
    /// Refresh unless a fetch completed after the asker's snapshot (`seen` attempts) or the
    /// cooldown forbids; replies whether a fetch completed after `seen`.
    OnDemand(u64, RpcReplyPort<bool>),
    /// Update the age gauge.
    Tick,
}

/// The shared side of one issuer: the snapshot readers use and the current actor's address.
pub struct JwksHandle<K> {
    issuer: Arc<str>,
    config: JwksConfig,
    state: Snapshot<KeySetState<K>>,
    actor: Snapshot<Option<ActorRef<JwksMsg>>>,
    created: Instant,
}

impl<K> Clone for JwksHandle<K> {
    fn clone(&self) -> Self {
        Self {
            issuer: Arc::clone(&self.issuer),
            config: self.config,
            state: self.state.clone(),
            actor: self.actor.clone(),
            created: self.created,
        }
    }
}

impl<K: KeySet> JwksHandle<K> {
    /// A handle for `issuer` (a short, fixed label such as `Gitlab`) with no keys yet.
    pub fn new(issuer: impl Into<Arc<str>>, config: JwksConfig) -> Self {
        Self {
            issuer: issuer.into(),
            config,
            state: Snapshot::default(),
            actor: Snapshot::new(None),
            created: Instant::now(),
        }
    }

    /// The issuer label.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The current key set, if one was ever fetched.
    pub fn keys(&self) -> Option<Arc<K>> {
        self.state.load().keys.clone()
    }

    /// The whole published state.
    pub fn state(&self) -> Arc<KeySetState<K>> {
        self.state.load()
    }

    /// Ask for a refresh because a token names a key the current set lacks. Returns whether a
    /// fetch completed since the caller's snapshot (so the caller should look again). Answers
    /// `false` at once, without a message, when the cooldown forbids a fetch and none is in
    /// flight; waits for the in-flight fetch otherwise. A dead actor answers `false`.
    pub async fn refresh_on_demand(&self) -> bool {
        let state = self.state.load();
        let cooling = state
            .last_on_demand
            .is_some_and(|t| t.elapsed() < self.config.cooldown);
        if cooling && !state.in_flight {
            return false;
        }
        let Some(actor) = self.actor.load().as_ref().clone() else {
            return false;
        };
        let timeout = self.config.fetch_timeout + Duration::from_secs(1);
        let seen = state.attempts;
        matches!(
            actor
                .call(|reply| JwksMsg::OnDemand(seen, reply), Some(timeout))
                .await,
            Ok(ractor::rpc::CallResult::Success(true))
        )
    }

    /// The child spec that starts (and restarts) this issuer's actor, kind `jwks`.
    pub fn child_spec(&self, fetch: FetchFn<K>) -> Arc<dyn ChildSpec> {
        let handle = self.clone();
        Arc::new(FnChildSpec::new(
            "jwks",
            format!("jwks:{}", self.issuer),
            move |parent: ActorCell| {
                let args = JwksArgs {
                    handle: handle.clone(),
                    fetch: Arc::clone(&fetch),
                };
                async move {
                    let (actor, _) =
                        Actor::spawn_linked(None, JwksActor::<K>::new(), args, parent).await?;
                    Ok(actor.get_cell())
                }
                .boxed()
            },
        ))
    }
}

/// Start arguments of a [`JwksActor`].
pub struct JwksArgs<K> {
    /// Where to publish.
    pub handle: JwksHandle<K>,
    /// How to fetch.
    pub fetch: FetchFn<K>,
}

/// The actor (see the module docs).
pub struct JwksActor<K>(std::marker::PhantomData<fn() -> K>);

impl<K> JwksActor<K> {
    /// The actor.
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<K> Default for JwksActor<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Internal state of a [`JwksActor`].
pub struct JwksState<K> {
    handle: JwksHandle<K>,
    fetch: FetchFn<K>,
    /// The schedule that counts; older timers are ignored.
    timer: u64,
    /// Consecutive failed attempts.
    failures: u32,
}

impl<K: KeySet> JwksState<K> {
    fn schedule(&mut self, myself: &ActorRef<JwksMsg>, after: Duration, trigger: Trigger) {
        self.timer += 1;
        let timer = self.timer;
        myself.send_after(after, move || JwksMsg::Refresh { timer, trigger });
    }

    fn retry_delay(&self) -> Duration {
        let cfg = &self.handle.config;
        let factor = 1u32
            .checked_shl(self.failures.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        cfg.retry_min.saturating_mul(factor).min(cfg.retry_max)
    }

    fn record_age(&self) {
        let state = self.handle.state.load();
        let since = state.fetched_at.unwrap_or(self.handle.created);
        metrics::gauge!("jwks_key_set_age_seconds", "issuer" => self.handle.issuer.to_string())
            .set(since.elapsed().as_secs_f64());
    }

    /// Fetch now, publish the outcome, and schedule what follows.
    async fn fetch(&mut self, myself: &ActorRef<JwksMsg>, trigger: Trigger) {
        let issuer = self.handle.issuer.to_string();
        self.handle.state.update(|s| KeySetState {
            in_flight: true,
            last_on_demand: if trigger == Trigger::OnDemand {
                Some(Instant::now())
            } else {
                s.last_on_demand
            },
            ..s.clone()
        });
        metrics::counter!("jwks_refreshes_total", "issuer" => issuer.clone(), "trigger" => trigger.label())
            .increment(1);
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.handle.config.fetch_timeout, (self.fetch)())
            .await
            .unwrap_or_else(|_| Err("key set fetch timed out".to_string()));
        match outcome {
            Ok(keys) => {
                let count = keys.key_count();
                let keys = Arc::new(keys);
                self.handle.state.update(|s| KeySetState {
                    keys: Some(Arc::clone(&keys)),
                    fetched_at: Some(Instant::now()),
                    attempts: s.attempts + 1,
                    in_flight: false,
                    last_error: None,
                    ..s.clone()
                });
                self.failures = 0;
                metrics::gauge!("jwks_keys", "issuer" => issuer.clone()).set(count as f64);
                tracing::info!(
                    target: "auth",
                    issuer = %issuer,
                    keys = count,
                    trigger = trigger.label(),
                    duration_s = started.elapsed().as_secs_f64(),
                    "key set refreshed"
                );
                let interval = self.handle.config.refresh_interval;
                self.schedule(myself, interval, Trigger::Periodic);
            }
            Err(error) => {
                self.handle.state.update(|s| KeySetState {
                    attempts: s.attempts + 1,
                    in_flight: false,
                    last_error: Some(error.clone()),
                    ..s.clone()
                });
                self.failures = self.failures.saturating_add(1);
                metrics::counter!("jwks_refresh_failures_total", "issuer" => issuer.clone())
                    .increment(1);
                let delay = self.retry_delay();
                tracing::error!(
                    target: "auth",
                    issuer = %issuer,
                    trigger = trigger.label(),
                    retry_in_s = delay.as_secs_f64(),
                    has_keys = self.handle.state.load().keys.is_some(),
                    "key set refresh failed, keeping the last good keys: {error}"
                );
                self.schedule(myself, delay, Trigger::Retry);
            }
        }
        self.record_age();
    }
}

impl<K: KeySet> Actor for JwksActor<K> {
    type Msg = JwksMsg;
    type State = JwksState<K>;
    type Arguments = JwksArgs<K>;

    async fn pre_start(
        &self,
        myself: ActorRef<JwksMsg>,
        args: JwksArgs<K>,
    ) -> Result<JwksState<K>, ActorProcessingErr> {
        let handle = args.handle;
        // A previous incarnation may have died mid-fetch.
        handle.state.update(|s| KeySetState {
            in_flight: false,
            ..s.clone()
        });
        handle.actor.publish(Some(myself.clone()));
        let mut state = JwksState {
            handle,
            fetch: args.fetch,
            timer: 0,
            failures: 0,
        };
        let published = state.handle.state.load();
        match (published.keys.is_some(), published.fetched_at) {
            (true, Some(at)) => {
                let interval = state.handle.config.refresh_interval;
                let left = interval.saturating_sub(at.elapsed());
                state.schedule(&myself, left, Trigger::Periodic);
            }
            _ => {
                state.timer += 1;
                let timer = state.timer;
                // Cannot fail: the mailbox is ours and open.
                let _ = myself.send_message(JwksMsg::Refresh {
                    timer,
                    trigger: Trigger::Startup,
                });
            }
        }
        myself.send_interval(Duration::from_secs(10), || JwksMsg::Tick);
        state.record_age();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<JwksMsg>,
        msg: JwksMsg,
        state: &mut JwksState<K>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JwksMsg::Refresh { timer, trigger } => {
                if timer == state.timer {
                    state.fetch(&myself, trigger).await;
                }
            }
            JwksMsg::OnDemand(seen, reply) => {
                let published = state.handle.state.load();
                let answer = if published.attempts > seen {
                    true
                } else if published
                    .last_on_demand
                    .is_some_and(|t| t.elapsed() < state.handle.config.cooldown)
                {
                    false
                } else {
                    state.fetch(&myself, Trigger::OnDemand).await;
                    true
                };
                // The asker may have given up waiting.
                let _ = reply.send(answer);
            }
            JwksMsg::Tick => state.record_age(),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Keys(usize);
    impl KeySet for Keys {
        fn key_count(&self) -> usize {
            self.0
        }
    }

    fn counting_fetch(
        count: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    ) -> FetchFn<Keys> {
        Arc::new(move || {
            let count = Arc::clone(&count);
            let fail = Arc::clone(&fail);
            Box::pin(async move {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if fail.load(Ordering::SeqCst) {
                    Err("issuer down".to_string())
                } else {
                    Ok(Keys(n))
                }
            })
        })
    }

    async fn wait_attempts(handle: &JwksHandle<Keys>, n: u64) {
        for _ in 0..500 {
            if handle.state().attempts >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no attempt {n}");
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_fetch_and_cooldown_holds() {
        let count = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let config = JwksConfig {
            cooldown: Duration::from_secs(3600),
            ..JwksConfig::default()
        };
        let handle = JwksHandle::<Keys>::new("test", config);
        let args = JwksArgs {
            handle: handle.clone(),
            fetch: counting_fetch(Arc::clone(&count), Arc::clone(&fail)),
        };
        let (actor, _) = Actor::spawn(None, JwksActor::<Keys>::new(), args)
            .await
            .unwrap();
        wait_attempts(&handle, 1).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);

        let askers: Vec<_> = (0..50)
            .map(|_| {
                let h = handle.clone();
                tokio::spawn(async move { h.refresh_on_demand().await })
            })
            .collect();
        let mut refreshed = 0;
        for a in askers {
            if a.await.unwrap() {
                refreshed += 1;
            }
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "one fetch for 50 askers");
        assert_eq!(refreshed, 50, "every asker saw the shared fetch");
        assert!(!handle.refresh_on_demand().await, "cooldown");
        assert_eq!(count.load(Ordering::SeqCst), 2);
        actor.stop(None);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_keys_and_retries() {
        let count = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let config = JwksConfig {
            cooldown: Duration::ZERO,
            retry_min: Duration::from_millis(10),
            ..JwksConfig::default()
        };
        let handle = JwksHandle::<Keys>::new("test", config);
        let args = JwksArgs {
            handle: handle.clone(),
            fetch: counting_fetch(Arc::clone(&count), Arc::clone(&fail)),
        };
        let (actor, _) = Actor::spawn(None, JwksActor::<Keys>::new(), args)
            .await
            .unwrap();
        wait_attempts(&handle, 1).await;
        fail.store(true, Ordering::SeqCst);
        assert!(handle.refresh_on_demand().await);
        let state = handle.state();
        assert_eq!(
            state.keys.as_ref().map(|k| k.0),
            Some(1),
            "last good keys kept"
        );
        assert!(state.last_error.is_some());
        // The retry schedule fetches again on its own once the issuer is back.
        fail.store(false, Ordering::SeqCst);
        for _ in 0..500 {
            if handle.keys().is_some_and(|k| k.0 > 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(handle.keys().is_some_and(|k| k.0 > 1), "retried");
        actor.stop(None);
    }
}
