//! Request actors: streaming through a bounded channel, cancellation, deadlines, isolation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ai_gateway_actors::ractor::Actor;
use ai_gateway_actors::request::{
    Deadlines, RequestSpawner, RequestSupervisor, RequestSupervisorArgs, StreamEvent,
};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::{mpsc, watch};

type Item = u32;
type Error = String;

async fn spawner() -> RequestSpawner {
    let (publish, current) = watch::channel(None);
    Actor::spawn(None, RequestSupervisor, RequestSupervisorArgs { publish })
        .await
        .expect("supervisor starts");
    RequestSpawner::new(current, Duration::from_secs(1))
}

fn deadlines() -> Deadlines {
    Deadlines {
        idle: Duration::from_secs(5),
        total: Duration::from_secs(10),
    }
}

/// A stream that counts how many items were pulled and notes when it is dropped.
struct Probe {
    pulled: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Probe {
    fn new() -> Self {
        Self {
            pulled: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// An endless stream of items, one every `every`.
    fn endless(&self, every: Duration) -> BoxStream<'static, Result<Item, Error>> {
        let pulled = Arc::clone(&self.pulled);
        let flag = DropFlag(Arc::clone(&self.dropped));
        stream::unfold((0u32, flag), move |(i, flag)| {
            let pulled = Arc::clone(&pulled);
            async move {
                tokio::time::sleep(every).await;
                pulled.fetch_add(1, Ordering::SeqCst);
                Some((Ok(i), (i + 1, flag)))
            }
        })
        .boxed()
    }
}

async fn collect(mut rx: mpsc::Receiver<StreamEvent<Item, Error>>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(ev) = rx.recv().await {
        out.push(match ev {
            StreamEvent::Item(i) => format!("item {i}"),
            StreamEvent::Failed(e) => format!("failed {e}"),
            StreamEvent::TimedOut(d) => format!("timeout {d:?}"),
            StreamEvent::Done => "done".into(),
        });
    }
    out
}

#[tokio::test]
async fn items_then_done() {
    let spawner = spawner().await;
    let rx = spawner
        .start(
            || stream::iter([Ok(1), Ok(2), Ok(3)]).boxed(),
            4,
            deadlines(),
        )
        .await
        .expect("starts");
    assert_eq!(collect(rx).await, ["item 1", "item 2", "item 3", "done"]);
}

#[tokio::test]
async fn an_upstream_error_ends_the_stream_with_failed() {
    let spawner = spawner().await;
    let rx = spawner
        .start(
            || stream::iter([Ok(1), Err("overloaded".to_string()), Ok(3)]).boxed(),
            4,
            deadlines(),
        )
        .await
        .expect("starts");
    assert_eq!(collect(rx).await, ["item 1", "failed overloaded"]);
}

#[tokio::test]
async fn a_slow_reader_slows_the_upstream_instead_of_buffering() {
    let spawner = spawner().await;
    let probe = Probe::new();
    let capacity = 4;
    let mut rx = spawner
        .start(
            || probe.endless(Duration::from_millis(0)),
            capacity,
            deadlines(),
        )
        .await
        .expect("starts");
    // Read nothing for a while: the actor can only have pulled what fits in the channel,
    // plus the one item it is waiting to send.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pulled = probe.pulled.load(Ordering::SeqCst);
    assert!(
        pulled <= capacity + 1,
        "pulled {pulled} items with a channel of {capacity}"
    );
    // Reading lets it continue.
    for _ in 0..20 {
        assert!(matches!(rx.recv().await, Some(StreamEvent::Item(_))));
    }
    assert!(probe.pulled.load(Ordering::SeqCst) >= 20);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let spawner = spawner().await;
    let probe = Probe::new();
    let mut rx = spawner
        .start(|| probe.endless(Duration::from_millis(5)), 2, deadlines())
        .await
        .expect("starts");
    assert!(matches!(rx.recv().await, Some(StreamEvent::Item(0))));
    drop(rx);
    for _ in 0..200 {
        if probe.dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        probe.dropped.load(Ordering::SeqCst),
        "the upstream stream was dropped"
    );
}

#[tokio::test]
async fn the_idle_deadline_fires_on_a_stalled_upstream() {
    let spawner = spawner().await;
    let probe = Probe::new();
    let rx = spawner
        .start(
            || stream::iter([Ok(1)]).chain(stream::pending()).boxed(),
            2,
            Deadlines {
                idle: Duration::from_millis(50),
                total: Duration::from_secs(10),
            },
        )
        .await
        .expect("starts");
    assert_eq!(collect(rx).await, ["item 1", "timeout Idle"]);
    drop(probe);
}

#[tokio::test]
async fn the_total_deadline_fires_on_a_stream_that_keeps_producing() {
    let spawner = spawner().await;
    let probe = Probe::new();
    let rx = spawner
        .start(
            || probe.endless(Duration::from_millis(5)),
            2,
            Deadlines {
                idle: Duration::from_secs(5),
                total: Duration::from_millis(100),
            },
        )
        .await
        .expect("starts");
    let events = collect(rx).await;
    assert_eq!(events.last().map(String::as_str), Some("timeout Total"));
    assert!(events.len() > 2, "{events:?}");
    assert!(probe.dropped.load(Ordering::SeqCst), "upstream released");
}

/// The idle deadline counts from the last item, not from the start: items every 30 ms under a
/// 50 ms idle deadline run until the total deadline. (Paused clock: deterministic.)
#[tokio::test(start_paused = true)]
async fn the_idle_deadline_restarts_with_every_item() {
    let spawner = spawner().await;
    let probe = Probe::new();
    let rx = spawner
        .start(
            || probe.endless(Duration::from_millis(30)),
            2,
            Deadlines {
                idle: Duration::from_millis(50),
                total: Duration::from_millis(400),
            },
        )
        .await
        .expect("starts");
    let events = collect(rx).await;
    assert_eq!(events.last().map(String::as_str), Some("timeout Total"));
    assert!(!events.iter().any(|e| e == "timeout Idle"), "{events:?}");
    // 400 ms / 30 ms: the 13th item would arrive at 390 ms.
    assert_eq!(events.len(), 13 + 1, "{events:?}");
}

/// An upstream that is always ready (it never lets a timer be polled) still ends at the
/// total deadline.
#[tokio::test]
async fn an_always_ready_upstream_still_meets_the_total_deadline() {
    let spawner = spawner().await;
    let rx = spawner
        .start(
            || stream::iter(0u32..).map(Ok).boxed(),
            4,
            Deadlines {
                idle: Duration::from_secs(5),
                total: Duration::from_millis(50),
            },
        )
        .await
        .expect("starts");
    let events = collect(rx).await;
    assert_eq!(events.last().map(String::as_str), Some("timeout Total"));
    assert!(events.len() > 4, "{}", events.len());
}

#[tokio::test]
async fn a_panicking_call_fails_alone() {
    let spawner = spawner().await;
    let probe = Probe::new();
    let mut healthy = spawner
        .start(|| probe.endless(Duration::from_millis(2)), 2, deadlines())
        .await
        .expect("starts");
    let crashing = spawner
        .start(
            || {
                stream::iter([Ok(1)])
                    .chain(stream::once(async {
                        panic!("deliberate panic in a model call")
                    }))
                    .boxed()
            },
            2,
            deadlines(),
        )
        .await
        .expect("starts");
    // The crashing call's channel closes with no terminal event: that is how the HTTP side
    // tells a crash from a clean end.
    assert_eq!(collect(crashing).await, ["item 1"]);
    // The other call is untouched and the supervisor still starts new ones.
    for _ in 0..10 {
        assert!(matches!(healthy.recv().await, Some(StreamEvent::Item(_))));
    }
    let rx = spawner
        .start(|| stream::iter([Ok(9)]).boxed(), 2, deadlines())
        .await
        .expect("still starts calls");
    assert_eq!(collect(rx).await, ["item 9", "done"]);
}

#[tokio::test]
async fn killed_calls_are_visible_and_new_calls_wait_for_a_restarted_supervisor() {
    let (publish, current) = watch::channel(None);
    let (sup, _) = Actor::spawn(
        None,
        RequestSupervisor,
        RequestSupervisorArgs {
            publish: publish.clone(),
        },
    )
    .await
    .expect("supervisor starts");
    let spawner = RequestSpawner::new(current, Duration::from_secs(2));
    let probe = Probe::new();
    let rx = spawner
        .start(|| probe.endless(Duration::from_millis(5)), 2, deadlines())
        .await
        .expect("starts");
    // The supervisor learns of its new child through a supervision event: wait for it.
    let mut seen = 0;
    for _ in 0..200 {
        seen = spawner.in_flight().await.len();
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(seen, 1, "one call in flight");
    // Kill the whole subtree, as chaos tooling does; a new supervisor comes up a bit later.
    sup.kill();
    let restarter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Actor::spawn(None, RequestSupervisor, RequestSupervisorArgs { publish })
            .await
            .expect("restart")
    });
    let events = collect(rx).await;
    assert!(
        !events.iter().any(|e| e == "done"),
        "a killed call never looks complete: {events:?}"
    );
    let rx = spawner
        .start(|| stream::iter([Ok(1)]).boxed(), 2, deadlines())
        .await
        .expect("waits for the new supervisor");
    assert_eq!(collect(rx).await, ["item 1", "done"]);
    let _ = restarter.await;
}

#[tokio::test]
async fn calls_from_one_thread_share_one_shard_under_the_supervisor() {
    let (publish, current) = watch::channel(None);
    let (sup, _) = Actor::spawn(None, RequestSupervisor, RequestSupervisorArgs { publish })
        .await
        .expect("supervisor starts");
    let spawner = RequestSpawner::new(current, Duration::from_secs(1));
    let probes: Vec<Probe> = (0..3).map(|_| Probe::new()).collect();
    let mut receivers = Vec::new();
    for probe in &probes {
        let rx = spawner
            .start(|| probe.endless(Duration::from_millis(5)), 2, deadlines())
            .await
            .expect("starts");
        receivers.push(rx);
    }
    let shards = sup.get_cell().get_children();
    assert_eq!(shards.len(), 1, "one shard for this thread");
    assert_eq!(
        shards[0].get_children().len(),
        3,
        "the three calls are its children"
    );
    assert_eq!(spawner.in_flight().await.len(), 3);
    // Killing the supervisor ends the calls through their shard.
    sup.kill();
    for rx in receivers {
        let events = collect(rx).await;
        assert!(
            !events.iter().any(|e| e == "done"),
            "killed, not complete: {events:?}"
        );
    }
    for probe in &probes {
        for _ in 0..200 {
            if probe.dropped.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            probe.dropped.load(Ordering::SeqCst),
            "the upstream call is dropped"
        );
    }
}

/// The total deadline firing while the actor waits for room behind a slow reader still ends the
/// stream with `TimedOut`: a channel closed without a terminal event reads as a crashed actor
/// ("Inference failed" instead of "Inference timed out"). On the paused clock: the reader's
/// sleep lets time run to the deadline only once the actor is blocked on the full channel.
#[tokio::test(start_paused = true)]
async fn the_total_deadline_behind_a_slow_reader_still_says_timed_out() {
    let spawner = spawner().await;
    let deadlines = Deadlines {
        idle: Duration::from_secs(5),
        total: Duration::from_millis(200),
    };
    // An endless upstream, always ready, and a channel of one that nobody reads yet.
    let rx = spawner
        .start(
            || stream::iter((0..).map(Ok::<Item, Error>)).boxed(),
            1,
            deadlines,
        )
        .await
        .expect("starts");
    // The reader comes back after the deadline; whatever it finds ends with the timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let events = collect(rx).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("timeout Total"),
        "{events:?}"
    );
}
