//! One actor per model call in flight.
//!
//! A [`RequestActor`] owns one upstream call, given to it as a stream of items (the provider
//! module turns an HTTP response into that stream; this crate never sees HTTP). It forwards each
//! item into a **bounded** channel that the HTTP response body reads, so a slow client slows the
//! upstream read instead of growing memory. It stops the upstream call as soon as the client goes
//! away (the receiving end of the channel is dropped), and enforces two deadlines: an idle timeout
//! between items (long streams may run as long as they keep producing) and a total deadline.
//!
//! Every request actor is a child of the [`RequestSupervisor`], which never restarts them (a
//! failed request stays failed) but keeps the failure from reaching anything else: a panic in one
//! request actor ends that request and nothing more. The receiving side tells a clean end
//! ([`StreamEvent::Done`]) from an aborted one (the channel closes with no terminal event), which
//! is what a crash or a kill looks like.
//!
//! The supervisor's current address is published in a [`watch`] channel, so that after the
//! supervisor itself has been restarted new requests find the new one without a message.
//!
//! Between the two sits one [`RequestShard`] per thread that starts calls (in the gateway: per
//! HTTP worker), spawned on that thread the first time it starts a call:
//!
//! ```text
//! RequestSupervisor ── RequestShard × threads ── RequestActor × calls in flight
//! ```
//!
//! Why: every actor tells its parent when it starts and when it ends. With the request actors
//! linked straight to the supervisor (which runs on the main thread), each call woke the main
//! thread twice, from another thread — about a tenth of the gateway's CPU per request in the
//! profile. A shard lives on the same thread as its request actors, so those notices are a
//! local queue push. Killing the supervisor still ends every call in flight: ractor terminates
//! an actor's children, and theirs, when it dies.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the response body receives from a request actor.
#[derive(Debug)]
pub enum StreamEvent<T, E> {
    /// One item of the upstream stream (a chunk of text, a usage block, ...).
    Item(T),
    /// The upstream call failed; no further events follow.
    Failed(E),
    /// A deadline fired; the upstream call was dropped. No further events follow.
    TimedOut(Deadline),
    /// The upstream stream ended normally. No further events follow.
    Done,
}

/// Which deadline fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No item arrived within the idle timeout.
    Idle,
    /// The whole call took longer than the total deadline.
    Total,
}

/// The two deadlines of a call.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Longest wait for the next item (the first one included).
    pub idle: Duration,
    /// Longest time for the whole call.
    pub total: Duration,
}

/// How a request actor's call ended, as recorded by the actor itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// The stream ended normally.
    Completed,
    /// The upstream call failed.
    Failed,
    /// A deadline fired.
    TimedOut(Deadline),
    /// The client went away; the upstream call was dropped.
    Cancelled,
}

/// Start arguments of a [`RequestActor`].
pub struct RequestArgs<T, E> {
    /// The upstream call. Polling it the first time sends the request.
    pub stream: BoxStream<'static, Result<T, E>>,
    /// Where the items go. Bounded: its capacity is the backpressure window.
    pub events: mpsc::Sender<StreamEvent<T, E>>,
    /// Idle and total deadlines.
    pub deadlines: Deadlines,
}

/// The request actor. See the module documentation.
pub struct RequestActor<T, E> {
    _marker: std::marker::PhantomData<fn() -> (T, E)>,
}

impl<T, E> Default for RequestActor<T, E> {
    fn default() -> Self {
        Self {
            _marker: std::marker::PhantomData,
        }
    }
}

/// The only message: drive the call to its end.
pub struct Run;

/// Drive `stream` into `events` until it ends, fails, times out or the receiver is dropped.
///
/// Per item this costs a clock read and a channel push. One timer serves the idle deadline for
/// the whole call and is re-armed lazily: an item only moves `idle_at` forward, and a timer that
/// fires before `idle_at` is reset to it. (A fresh timer per item, as this loop once had, put two
/// timer-wheel insertions and removals on every streamed frame.) The close watch is one future
/// for the whole call too, polled only while waiting for the upstream.
async fn drive<T: Send + 'static, E: Send + 'static>(
    mut stream: BoxStream<'static, Result<T, E>>,
    events: mpsc::Sender<StreamEvent<T, E>>,
    deadlines: Deadlines,
) -> CallEnd {
    let total = Instant::now() + deadlines.total;
    let mut idle_at = (Instant::now() + deadlines.idle).min(total);
    let timer = tokio::time::sleep_until(idle_at);
    tokio::pin!(timer);
    let closed = events.closed();
    tokio::pin!(closed);
    loop {
        let now = Instant::now();
        idle_at = (now + deadlines.idle).min(total);
        // An upstream that is always ready never lets the timer be polled; the total deadline
        // is checked here for it.
        let next = if now >= total {
            None
        } else {
            loop {
                tokio::select! {
                    biased;
                    next = stream.next() => break Some(next),
                    _ = &mut closed => return CallEnd::Cancelled,
                    _ = &mut timer => {
                        if Instant::now() >= idle_at {
                            break None;
                        }
                        timer.as_mut().reset(idle_at);
                    }
                }
            }
        };
        let (event, end) = match next {
            None => {
                let which = if idle_at >= total {
                    Deadline::Total
                } else {
                    Deadline::Idle
                };
                (StreamEvent::TimedOut(which), Some(CallEnd::TimedOut(which)))
            }
            Some(None) => (StreamEvent::Done, Some(CallEnd::Completed)),
            Some(Some(Ok(item))) => (StreamEvent::Item(item), None),
            Some(Some(Err(err))) => (StreamEvent::Failed(err), Some(CallEnd::Failed)),
        };
        // Dropping the upstream stream before waiting on a slow reader releases the upstream
        // connection as soon as the call is over.
        if end.is_some() {
            drop(std::mem::replace(
                &mut stream,
                futures::stream::empty().boxed(),
            ));
        }
        let event = match events.try_send(event) {
            Ok(()) => match end {
                Some(end) => return end,
                None => continue,
            },
            Err(mpsc::error::TrySendError::Closed(_)) => return CallEnd::Cancelled,
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        // Waiting for room in the channel is the backpressure; the total deadline still holds.
        let sent = tokio::select! {
            biased;
            sent = events.send(event) => Some(sent.is_ok()),
            _ = tokio::time::sleep_until(total) => None,
        };
        let Some(sent) = sent else {
            // Release the upstream now, then tell the reader why the stream ends once it has
            // room (for at most one idle period): a channel closed without a terminal event
            // reads as a crashed or killed actor.
            drop(stream);
            let _ = tokio::time::timeout(
                deadlines.idle,
                events.send(StreamEvent::TimedOut(Deadline::Total)),
            )
            .await;
            return CallEnd::TimedOut(Deadline::Total);
        };
        if !sent {
            return CallEnd::Cancelled;
        }
        if let Some(end) = end {
            return end;
        }
    }
}

impl<T, E> Actor for RequestActor<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    type Msg = Run;
    type State = Option<RequestArgs<T, E>>;
    type Arguments = RequestArgs<T, E>;

    async fn pre_start(
        &self,
        myself: ActorRef<Run>,
        args: RequestArgs<T, E>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(Run)?;
        Ok(Some(args))
    }

    async fn handle(
        &self,
        myself: ActorRef<Run>,
        _msg: Run,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(args) = state.take() {
            let end = drive(args.stream, args.events, args.deadlines).await;
            let outcome = match end {
                CallEnd::Completed => "completed",
                CallEnd::Failed => "failed",
                CallEnd::TimedOut(Deadline::Idle) => "idle_timeout",
                CallEnd::TimedOut(Deadline::Total) => "total_timeout",
                CallEnd::Cancelled => "cancelled",
            };
            metrics::counter!("request_actor_calls_total", "outcome" => outcome).increment(1);
        }
        myself.stop(None);
        Ok(())
    }
}

/// Messages of the [`RequestSupervisor`].
pub enum RequestSupervisorMsg {
    /// The request actors in flight.
    Children(RpcReplyPort<Vec<ActorCell>>),
}

/// Start arguments of the [`RequestSupervisor`].
pub struct RequestSupervisorArgs {
    /// Where the supervisor publishes its own address when it starts.
    pub publish: watch::Sender<Option<ActorCell>>,
}

/// The root of the request subtree: parent of the [`RequestShard`]s. It never restarts them
/// (a shard that is gone is replaced by the next call on its thread).
pub struct RequestSupervisor;

impl Actor for RequestSupervisor {
    type Msg = RequestSupervisorMsg;
    type State = ();
    type Arguments = RequestSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RequestSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // send_replace never fails, even when nobody listens yet.
        args.publish.send_replace(Some(myself.get_cell()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: RequestSupervisorMsg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RequestSupervisorMsg::Children(reply) => {
                let _ = reply.send(request_actors(&myself.get_cell()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            tracing::error!(actor = %cell.get_id(), "request shard failed: {err}");
        }
        Ok(())
    }
}

/// The request actors under a request supervisor (through its shards).
fn request_actors(supervisor: &ActorCell) -> Vec<ActorCell> {
    supervisor
        .get_children()
        .iter()
        .flat_map(ActorCell::get_children)
        .collect()
}

/// Parent of the [`RequestActor`]s started on one thread; never restarts them, never stops
/// because of them. It only counts how they failed.
pub struct RequestShard;

impl Actor for RequestShard {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(_, _, reason)
                if reason.as_deref() == Some("killed") =>
            {
                metrics::counter!("request_actor_failures_total", "reason" => "killed")
                    .increment(1);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                metrics::counter!("request_actor_failures_total", "reason" => "panic").increment(1);
                tracing::error!(actor = %cell.get_id(), "request actor failed: {err}");
            }
            _ => {}
        }
        Ok(())
    }
}

thread_local! {
    /// This thread's shard per request supervisor (tests run several gateways in one process).
    static SHARDS: std::cell::RefCell<Vec<(ActorId, ActorCell)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn is_down(cell: &ActorCell) -> bool {
    matches!(
        cell.get_status(),
        ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
    )
}

/// This thread's shard under `supervisor`, spawned on this thread if there is none yet.
async fn shard_of(supervisor: &ActorCell) -> Result<ActorCell, String> {
    let id = supervisor.get_id();
    let known = SHARDS.with(|shards| {
        let mut shards = shards.borrow_mut();
        shards.retain(|(_, shard)| !is_down(shard));
        shards
            .iter()
            .find(|(sup, _)| *sup == id)
            .map(|(_, shard)| shard.clone())
    });
    if let Some(shard) = known {
        return Ok(shard);
    }
    let (shard, _) = Actor::spawn_linked(None, RequestShard, (), supervisor.clone())
        .await
        .map_err(|e| e.to_string())?;
    let cell = shard.get_cell();
    SHARDS.with(|shards| shards.borrow_mut().push((id, cell.clone())));
    Ok(cell)
}

/// Why a call could not be handed to a request actor.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No request supervisor came up within the wait.
    #[error("no request supervisor is running")]
    NoSupervisor,
    /// The actor failed to start.
    #[error("request actor failed to start: {0}")]
    Spawn(String),
}

/// Handle through which request handlers start request actors: it reads the supervisor's
/// published address, and waits briefly for a new one while the supervisor is being restarted.
#[derive(Clone)]
pub struct RequestSpawner {
    current: watch::Receiver<Option<ActorCell>>,
    wait: Duration,
}

impl RequestSpawner {
    /// A spawner that follows the address published in `current`, waiting at most `wait` for
    /// a supervisor to be (re)started.
    pub fn new(current: watch::Receiver<Option<ActorCell>>, wait: Duration) -> Self {
        Self { current, wait }
    }

    /// The supervisor now running, if any.
    pub fn supervisor(&self) -> Option<ActorCell> {
        self.current.borrow().clone()
    }

    /// Start a request actor for the call that `make_call` builds; its events arrive on the
    /// returned receiver. `make_call` must not send anything before the stream is first polled:
    /// if the supervisor goes down between the lookup and the spawn, the spawner waits for its
    /// successor and builds the call again.
    pub async fn start<T, E>(
        &self,
        mut make_call: impl FnMut() -> BoxStream<'static, Result<T, E>>,
        capacity: usize,
        deadlines: Deadlines,
    ) -> Result<mpsc::Receiver<StreamEvent<T, E>>, StartError>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let give_up = Instant::now() + self.wait;
        let mut current = self.current.clone();
        let mut last_error = None;
        loop {
            let supervisor = current.borrow_and_update().clone();
            if let Some(supervisor) = supervisor {
                // A supervisor that is starting can already take children; linking to one that
                // is stopping fails, and then we wait for its successor.
                let shard = if is_down(&supervisor) {
                    None
                } else {
                    match shard_of(&supervisor).await {
                        Ok(shard) => Some(shard),
                        Err(e) => {
                            last_error = Some(e);
                            None
                        }
                    }
                };
                if let Some(shard) = shard {
                    let (tx, rx) = mpsc::channel(capacity.max(1));
                    let args = RequestArgs {
                        stream: make_call(),
                        events: tx,
                        deadlines,
                    };
                    match RequestActor::<T, E>::spawn_linked(
                        None,
                        RequestActor::default(),
                        args,
                        shard,
                    )
                    .await
                    {
                        Ok(_) => return Ok(rx),
                        // The supervisor (and so the shard) went down between the read and
                        // the spawn: wait for its successor below.
                        Err(e) => last_error = Some(e.to_string()),
                    }
                }
            }
            if Instant::now() >= give_up {
                return Err(match last_error {
                    Some(e) => StartError::Spawn(e),
                    None => StartError::NoSupervisor,
                });
            }
            // Wake on a new publication, or re-check the status shortly (a killed supervisor
            // changes status without publishing).
            let recheck = (Instant::now() + Duration::from_millis(5)).min(give_up);
            let _ = tokio::time::timeout_at(recheck, current.changed()).await;
        }
    }

    /// The request actors in flight (for chaos tooling).
    pub async fn in_flight(&self) -> Vec<ActorCell> {
        self.supervisor()
            .map(|cell| request_actors(&cell))
            .unwrap_or_default()
    }
}
