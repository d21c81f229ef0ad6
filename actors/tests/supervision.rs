//! The supervision tree under failure: restarts, isolation, the restart budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ai_gateway_actors::ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus};
use ai_gateway_actors::snapshot::Snapshot;
use ai_gateway_actors::supervisor::{
    self, ChildSpec, FnChildSpec, Restart, RestartPolicy, SupervisorArgs, BUDGET_EXHAUSTED,
};
use futures::FutureExt;

/// A counter actor: `Add` adds, `Panic` panics, `Get` replies. It publishes its count in a
/// snapshot owned by its spec, so a restarted instance continues from the published value.
struct Counter;

enum CounterMsg {
    Add(u64),
    Panic,
    Get(ai_gateway_actors::ractor::RpcReplyPort<u64>),
}

struct CounterArgs {
    published: Snapshot<u64>,
    starts: Arc<AtomicUsize>,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = (u64, Snapshot<u64>);
    type Arguments = CounterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<CounterMsg>,
        args: CounterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.starts.fetch_add(1, Ordering::SeqCst);
        let start = *args.published.load();
        Ok((start, args.published))
    }

    async fn handle(
        &self,
        _myself: ActorRef<CounterMsg>,
        msg: CounterMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Add(n) => {
                state.0 += n;
                state.1.publish(state.0);
            }
            CounterMsg::Panic => panic!("deliberate panic in a child"),
            CounterMsg::Get(reply) => {
                let _ = reply.send(state.0);
            }
        }
        Ok(())
    }
}

fn counter_spec(
    id: &str,
    published: Snapshot<u64>,
    starts: Arc<AtomicUsize>,
) -> Arc<dyn ChildSpec> {
    Arc::new(FnChildSpec::new("counter", id, move |parent| {
        let args = CounterArgs {
            published: published.clone(),
            starts: Arc::clone(&starts),
        };
        async move {
            let (actor, _) = Actor::spawn_linked(None, Counter, args, parent).await?;
            Ok(actor.get_cell())
        }
        .boxed()
    }))
}

fn fast_policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window: Duration::from_secs(60),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
    }
}

async fn child_ref(
    root: &ActorRef<supervisor::SupervisorMsg>,
    id: &str,
) -> Option<ActorRef<CounterMsg>> {
    let children = supervisor::children(root).await.ok()?;
    children
        .into_iter()
        .find(|c| c.id == id && c.cell.get_status() == ActorStatus::Running)
        .map(|c| c.cell.into())
}

async fn wait_child(root: &ActorRef<supervisor::SupervisorMsg>, id: &str) -> ActorRef<CounterMsg> {
    for _ in 0..500 {
        if let Some(child) = child_ref(root, id).await {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("child {id} did not come back");
}

#[tokio::test]
async fn a_panicking_child_is_restarted_and_its_sibling_keeps_running() {
    let a_snap = Snapshot::new(0u64);
    let b_snap = Snapshot::new(0u64);
    let a_starts = Arc::new(AtomicUsize::new(0));
    let b_starts = Arc::new(AtomicUsize::new(0));
    let (root, _done) = supervisor::spawn_root(SupervisorArgs {
        name: "test".into(),
        policy: fast_policy(10),
        children: vec![
            counter_spec("a", a_snap.clone(), Arc::clone(&a_starts)),
            counter_spec("b", b_snap.clone(), Arc::clone(&b_starts)),
        ],
    })
    .await
    .expect("root starts");

    let a = wait_child(&root, "a").await;
    let b = wait_child(&root, "b").await;
    a.cast(CounterMsg::Add(5)).expect("send");
    b.cast(CounterMsg::Add(7)).expect("send");
    let b_before: u64 = ai_gateway_actors::ractor::call_t!(b, CounterMsg::Get, 1000).expect("b");
    assert_eq!(b_before, 7);

    a.cast(CounterMsg::Panic).expect("send");
    // The sibling answers while and after `a` is restarted, and keeps its state.
    let b_during: u64 = ai_gateway_actors::ractor::call_t!(b, CounterMsg::Get, 1000).expect("b");
    assert_eq!(b_during, 7);

    let a2 = wait_child(&root, "a").await;
    assert_ne!(a2.get_id(), a.get_id(), "a new instance of a runs");
    assert_eq!(a_starts.load(Ordering::SeqCst), 2, "a started twice");
    assert_eq!(b_starts.load(Ordering::SeqCst), 1, "b was never restarted");
    assert_eq!(b.get_status(), ActorStatus::Running);
    // The restarted child continues from its last published snapshot.
    let a_after: u64 = ai_gateway_actors::ractor::call_t!(a2, CounterMsg::Get, 1000).expect("a");
    assert_eq!(a_after, 5);
    assert_eq!(
        *a_snap.load(),
        5,
        "readers kept the last good value throughout"
    );

    // A killed child (chaos) is restarted too.
    a2.get_cell().kill();
    let a3 = wait_child(&root, "a").await;
    assert_ne!(a3.get_id(), a2.get_id());
    assert_eq!(a_starts.load(Ordering::SeqCst), 3);
    root.stop(None);
}

#[tokio::test]
async fn past_the_budget_the_supervisor_stops_with_a_reason() {
    let (root, done) = supervisor::spawn_root(SupervisorArgs {
        name: "test".into(),
        policy: fast_policy(3),
        children: vec![counter_spec(
            "a",
            Snapshot::new(0),
            Arc::new(AtomicUsize::new(0)),
        )],
    })
    .await
    .expect("root starts");
    for _ in 0..4 {
        let a = wait_child(&root, "a").await;
        a.cast(CounterMsg::Panic).expect("send");
        // Let the failure reach the supervisor before the next lookup.
        for _ in 0..200 {
            if a.get_status() == ActorStatus::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the root stops once the budget is exhausted")
        .expect("join");
    assert_eq!(root.get_status(), ActorStatus::Stopped);
    let _ = BUDGET_EXHAUSTED;
}

#[tokio::test]
async fn transient_children_stay_stopped_after_a_clean_stop() {
    let starts = Arc::new(AtomicUsize::new(0));
    let spec: Arc<dyn ChildSpec> = {
        let starts = Arc::clone(&starts);
        Arc::new(
            FnChildSpec::new("counter", "t", move |parent| {
                let args = CounterArgs {
                    published: Snapshot::new(0),
                    starts: Arc::clone(&starts),
                };
                async move {
                    let (actor, _) = Actor::spawn_linked(None, Counter, args, parent).await?;
                    Ok(actor.get_cell())
                }
                .boxed()
            })
            .with_restart(Restart::Transient),
        )
    };
    let (root, _done) = supervisor::spawn_root(SupervisorArgs {
        name: "test".into(),
        policy: fast_policy(10),
        children: vec![],
    })
    .await
    .expect("root starts");
    let cell = supervisor::start_child_of(&root, spec)
        .await
        .expect("dynamic child starts");
    cell.stop(None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert!(supervisor::children(&root)
        .await
        .expect("children")
        .is_empty());
    root.stop(None);
}
