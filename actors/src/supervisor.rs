//! A one-for-one supervisor with a restart budget.
//!
//! ractor gives supervision *events* (a child started, stopped or failed) but no restart strategy:
//! its default is to stop the supervisor when any child exits. [`Supervisor`] adds the Erlang/OTP
//! one-for-one strategy on top:
//!
//! * each child is described by a [`ChildSpec`], which knows how to start (and so restart) it;
//! * when a child fails (an error or a panic in a handler) or is killed, only that child is
//!   restarted, after a short exponential backoff, and `actor_restarts_total{actor}` is counted;
//! * a budget caps the restarts within a sliding window. Past it the supervisor stops itself with
//!   [`BUDGET_EXHAUSTED`] as the reason, which escalates the failure to its own supervisor, or, for
//!   the root, ends the process with a non-zero exit so that the platform starts a fresh one.
//!
//! Children can also be added at run time ([`SupervisorMsg::Start`]), for actors started on first
//! use such as one quota actor per model.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};

/// The exit reason of a supervisor that ran out of restarts.
pub const BUDGET_EXHAUSTED: &str = "restart budget exhausted";

/// How often, and how fast, a supervisor restarts its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts ...
    pub max_restarts: u32,
    /// ... within this sliding window; one more and the supervisor gives up.
    pub window: Duration,
    /// Delay before the first restart of a child; doubled for each further restart in the window.
    pub backoff_min: Duration,
    /// Upper bound of the delay.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 20,
            window: Duration::from_secs(60),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_secs(2),
        }
    }
}

impl RestartPolicy {
    /// The delay before restarting a child that has already been restarted `previous` times in
    /// the window: `backoff_min * 2^previous`, capped, with up to 20 % jitter so that many
    /// children failing together do not restart in lockstep.
    pub fn backoff(&self, previous: u32) -> Duration {
        let factor = 1u32.checked_shl(previous.min(20)).unwrap_or(u32::MAX);
        let base = self
            .backoff_min
            .saturating_mul(factor)
            .min(self.backoff_max);
        let jitter = rand::random::<f64>() * 0.2;
        base.mul_f64(1.0 + jitter)
            .min(self.backoff_max.max(self.backoff_min))
    }
}

/// Whether a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Restarted after any exit (failure, panic, kill, or a clean stop) unless the supervisor
    /// itself is stopping. For actors that must always be there.
    Permanent,
    /// Restarted only after a failure or a kill; a clean stop is final.
    Transient,
}

/// How to start one child. The supervisor calls [`ChildSpec::start`] again to restart it, so
/// anything the child must keep across restarts (a published snapshot, its limits) lives in
/// the spec, not in the actor.
pub trait ChildSpec: Send + Sync + 'static {
    /// The kind of actor, used as the `actor` label of `actor_restarts_total` and by chaos
    /// tooling to pick actors to kill (`jwks`, `quota`, `requests`, ...). Keep it low-cardinality.
    fn kind(&self) -> &'static str;

    /// A name that tells this child apart from others of its kind (an issuer, a model).
    fn id(&self) -> String {
        self.kind().to_string()
    }

    /// Whether the child comes back after a clean stop.
    fn restart(&self) -> Restart {
        Restart::Permanent
    }

    /// Start the child, linked to `supervisor`.
    fn start(&self, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>>;
}

/// A [`ChildSpec`] from a kind, an id and a start function.
pub struct FnChildSpec<F> {
    kind: &'static str,
    id: String,
    restart: Restart,
    start: F,
}

impl<F> FnChildSpec<F>
where
    F: Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync + 'static,
{
    /// A permanent child.
    pub fn new(kind: &'static str, id: impl Into<String>, start: F) -> Self {
        Self {
            kind,
            id: id.into(),
            restart: Restart::Permanent,
            start,
        }
    }

    /// The same child with another restart mode.
    pub fn with_restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }
}

impl<F> ChildSpec for FnChildSpec<F>
where
    F: Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync + 'static,
{
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn id(&self) -> String {
        self.id.clone()
    }
    fn restart(&self) -> Restart {
        self.restart
    }
    fn start(&self, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        (self.start)(supervisor)
    }
}

/// A running child as seen from outside: what it is and its cell (to stop or kill it).
#[derive(Clone)]
pub struct ChildInfo {
    /// [`ChildSpec::kind`].
    pub kind: &'static str,
    /// [`ChildSpec::id`].
    pub id: String,
    /// The live actor.
    pub cell: ActorCell,
}

impl fmt::Debug for ChildInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildInfo")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("actor", &self.cell.get_id())
            .finish()
    }
}

/// Messages a [`Supervisor`] understands.
pub enum SupervisorMsg {
    /// Start and supervise another child; replies with its cell, or why it failed to start.
    Start(Arc<dyn ChildSpec>, RpcReplyPort<Result<ActorCell, String>>),
    /// The children now running.
    Children(RpcReplyPort<Vec<ChildInfo>>),
    /// Internal: the backoff of a restart has elapsed.
    Restart(Arc<dyn ChildSpec>),
}

/// Start arguments of a [`Supervisor`].
pub struct SupervisorArgs {
    /// Used in logs.
    pub name: String,
    /// Restart budget and backoff.
    pub policy: RestartPolicy,
    /// Children started, in order, before the supervisor counts as started. If one fails to
    /// start, the supervisor fails to start.
    pub children: Vec<Arc<dyn ChildSpec>>,
}

/// The one-for-one supervisor actor.
pub struct Supervisor;

/// Internal state of a [`Supervisor`].
pub struct SupervisorState {
    name: String,
    policy: RestartPolicy,
    children: HashMap<ActorId, (Arc<dyn ChildSpec>, ActorCell)>,
    /// Restart instants within the window, oldest first.
    restarts: VecDeque<Instant>,
    /// Restarts per child id within the window, for the backoff.
    per_child: HashMap<String, VecDeque<Instant>>,
}

impl SupervisorState {
    fn prune(&mut self, now: Instant) {
        let window = self.policy.window;
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        self.per_child.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
    }
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    spec: Arc<dyn ChildSpec>,
) -> Result<ActorCell, SpawnErr> {
    let cell = spec.start(myself.get_cell()).await?;
    state.children.insert(cell.get_id(), (spec, cell.clone()));
    Ok(cell)
}

/// Count a restart against the budget and schedule it; stop the supervisor past the budget.
fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    spec: Arc<dyn ChildSpec>,
    why: &str,
) {
    let now = Instant::now();
    state.prune(now);
    if state.restarts.len() >= state.policy.max_restarts as usize {
        tracing::error!(
            supervisor = %state.name,
            actor = spec.kind(),
            id = %spec.id(),
            max_restarts = state.policy.max_restarts,
            window_s = state.policy.window.as_secs_f64(),
            "restart budget exhausted; stopping supervisor: {why}"
        );
        myself.stop(Some(BUDGET_EXHAUSTED.to_string()));
        return;
    }
    state.restarts.push_back(now);
    let history = state.per_child.entry(spec.id()).or_default();
    let previous = history.len() as u32;
    history.push_back(now);
    let delay = state.policy.backoff(previous);
    metrics::counter!("actor_restarts_total", "actor" => spec.kind()).increment(1);
    tracing::warn!(
        supervisor = %state.name,
        actor = spec.kind(),
        id = %spec.id(),
        delay_ms = delay.as_millis() as u64,
        "restarting actor: {why}"
    );
    myself.send_after(delay, move || SupervisorMsg::Restart(spec));
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            name: args.name,
            policy: args.policy,
            children: HashMap::new(),
            restarts: VecDeque::new(),
            per_child: HashMap::new(),
        };
        for spec in args.children {
            let kind = spec.kind();
            start_child(&myself, &mut state, spec)
                .await
                .map_err(|e| format!("{}: child {kind} failed to start: {e}", state.name))?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(spec, reply) => {
                let result = start_child(&myself, state, spec)
                    .await
                    .map_err(|e| e.to_string());
                // The asker may have given up waiting; nothing to do then.
                let _ = reply.send(result);
            }
            SupervisorMsg::Children(reply) => {
                let children = state
                    .children
                    .values()
                    .map(|(spec, cell)| ChildInfo {
                        kind: spec.kind(),
                        id: spec.id(),
                        cell: cell.clone(),
                    })
                    .collect();
                let _ = reply.send(children);
            }
            SupervisorMsg::Restart(spec) => {
                if let Err(e) = start_child(&myself, state, Arc::clone(&spec)).await {
                    let why = format!("restart failed: {e}");
                    schedule_restart(&myself, state, spec, &why);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, true, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let killed = reason.as_deref() == Some("killed");
                let why = reason.unwrap_or_else(|| "stopped".to_string());
                (cell, killed, why)
            }
            _ => return Ok(()),
        };
        let Some((spec, _)) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if !failed && spec.restart() == Restart::Transient {
            tracing::info!(supervisor = %state.name, actor = spec.kind(), "child stopped: {why}");
            return Ok(());
        }
        schedule_restart(&myself, state, spec, &why);
        Ok(())
    }
}

/// Start a supervisor that is not itself supervised (the root of a tree).
pub async fn spawn_root(
    args: SupervisorArgs,
) -> Result<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>), SpawnErr> {
    Actor::spawn(None, Supervisor, args).await
}

/// Start a supervisor as the child of another.
pub async fn spawn_linked(
    args: SupervisorArgs,
    parent: ActorCell,
) -> Result<ActorRef<SupervisorMsg>, SpawnErr> {
    let (actor, _) = Actor::spawn_linked(None, Supervisor, args, parent).await?;
    Ok(actor)
}

/// The children a supervisor runs now.
pub async fn children(
    supervisor: &ActorRef<SupervisorMsg>,
) -> Result<Vec<ChildInfo>, ractor::RactorErr<SupervisorMsg>> {
    ractor::call_t!(supervisor, SupervisorMsg::Children, 5_000)
}

/// Ask a supervisor to start and supervise another child.
pub async fn start_child_of(
    supervisor: &ActorRef<SupervisorMsg>,
    spec: Arc<dyn ChildSpec>,
) -> Result<ActorCell, String> {
    match ractor::call_t!(supervisor, SupervisorMsg::Start, 10_000, spec) {
        Ok(result) => result,
        Err(e) => Err(format!("supervisor unavailable: {e}")),
    }
}
